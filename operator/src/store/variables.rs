//! The variables `spec.variablesFrom` brings in, where each one lives, and the record of when
//! each was last rotated: what the reconcile reads ([`Variables`]) and what key rotation
//! (issue 12) writes back through [`super::Store::write_variable`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Each variable `spec.variablesFrom` brings in, by name.
pub type Variables = BTreeMap<String, Variable>;

/// One variable's value and where it lives. `Debug` leaves the value out.
#[derive(Clone, PartialEq, Eq)]
pub struct Variable {
    pub value: String,
    pub location: Location,
}

impl std::fmt::Debug for Variable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variable")
            .field("value", &"<redacted>")
            .field("location", &self.location)
            .finish()
    }
}

/// Where a variable's value is kept, so that a new one can be put exactly there.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Location {
    /// Key `key` of the Secret `name`, in the stack's namespace.
    Secret { name: String, key: String },
    /// Variable `key` of the env file at `path` (resolved against the manifest's directory).
    File { path: PathBuf, key: String },
}

impl Location {
    /// The variable's name.
    pub fn key(&self) -> &str {
        match self {
            Location::Secret { key, .. } | Location::File { key, .. } => key,
        }
    }
}

/// The values alone, which is all the reconcile needs.
pub fn values(variables: Variables) -> BTreeMap<String, String> {
    variables.into_iter().map(|(k, v)| (k, v.value)).collect()
}

/// When a variable was last rotated. Never holds the value (nor a digest of it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Stamp {
    pub rotated_at: DateTime<Utc>,
    /// Goes up by one with each rotation of the key.
    pub version: u64,
    /// Why it was rotated (schedule, a person's request); never a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A new value for one variable, where it lives, with the stamp recording it.
///
/// A compare-and-swap: `expected` is what the writer read there. Another value there now means
/// another writer (a person, a second operator) changed it since: [`super::StoreError::Conflict`],
/// nothing written. The new value already there is success: the write is done (a retry after a
/// crash), and only the stamp is brought up to date if it is not.
#[derive(Clone)]
pub struct Rewrite<'a> {
    pub location: &'a Location,
    /// The value read there; `None` for a key that is not there yet.
    pub expected: Option<&'a str>,
    pub value: &'a str,
    pub stamp: Stamp,
}

/// What a [`Rewrite`] finds where the variable lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// The new value is there already: write at most the stamp.
    Done,
    /// The value the writer read is there: replace it.
    Expected,
    /// Someone else's value is there: refuse.
    Changed,
}

impl Rewrite<'_> {
    /// Decides on what is there now (`None`: the key is absent).
    pub fn found(&self, current: Option<&str>) -> Found {
        if current == Some(self.value) {
            Found::Done
        } else if current == self.expected {
            Found::Expected
        } else {
            Found::Changed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite<'a>(location: &'a Location, expected: Option<&'a str>) -> Rewrite<'a> {
        Rewrite {
            location,
            expected,
            value: "new-s3cret",
            stamp: Stamp {
                rotated_at: DateTime::UNIX_EPOCH,
                version: 1,
                reason: None,
            },
        }
    }

    #[test]
    fn a_rewrite_replaces_only_the_value_it_read_and_accepts_its_own() {
        let loc = Location::Secret {
            name: "db".into(),
            key: "PW".into(),
        };
        let r = rewrite(&loc, Some("old"));
        assert_eq!(r.found(Some("new-s3cret")), Found::Done);
        assert_eq!(r.found(Some("old")), Found::Expected);
        assert_eq!(r.found(Some("someone else's")), Found::Changed);
        assert_eq!(r.found(None), Found::Changed);
        let fresh = rewrite(&loc, None);
        assert_eq!(fresh.found(None), Found::Expected);
        assert_eq!(fresh.found(Some("old")), Found::Changed);
    }

    #[test]
    fn a_variable_never_shows_its_value_when_debugged() {
        let v = Variable {
            value: "s3cret-value".into(),
            location: Location::File {
                path: "/m/stack.env".into(),
                key: "PW".into(),
            },
        };
        let shown = format!("{v:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("stack.env"),
            "{shown}"
        );
    }
}
