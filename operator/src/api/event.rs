//! Event reasons. Events share the condition reasons ([`Reason`]) and the restart reasons
//! ([`RestartReason`]) and add their own. They are a type of their own rather than more
//! [`Reason`] variants because `Reason` is the CRD's schema for condition reasons: a condition
//! must not be able to say `Created`.
//!
//! Serialized as the bare CamelCase word (the local events file, the Kubernetes Event's
//! reason): alerts and scripts match on it, so the words must stay stable.

use std::fmt;

use serde::de::{self, IntoDeserializer};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Reason, RestartReason};

/// Why an event was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventReason {
    /// A condition turned bad (its reason), or a job failed for a reason conditions share.
    Reason(Reason),
    /// A service was restarted, by the operator or by Docker.
    Restart(RestartReason),
    /// A container was created and started.
    Created,
    /// A container whose config drifted was replaced.
    Recreated,
    /// A created but never started container was started.
    Started,
    /// A container the spec no longer asks for was removed.
    Removed,
    NetworkCreated,
    VolumeCreated,
    ImagePulled,
    ImageBuilt,
    /// A service was stopped and is held stopped on purpose.
    Held,
    /// A hold ended and the service was started again.
    Resumed,
    /// A scheduled backup slot passed while the operator could not run it.
    BackupSlotMissed,
    /// A failed backup is tried again.
    BackupRetried,
    BackupSucceeded,
    /// Retention removed old backups.
    BackupsPruned,
    /// Retention could not remove old backups.
    PruneFailed,
    /// A restore test passed.
    BackupVerified,
    /// A restore succeeded.
    Restored,
    BackupFailed,
    /// A new revision's rollout began.
    RolloutStarted,
    /// A key (`spec.keyRotation`) falls due for rotation soon, or is due.
    KeyRotationDue,
}

/// The reasons of an event's own, by their word; the others are [`Reason`]'s and
/// [`RestartReason`]'s.
const OWN: [(EventReason, &str); 20] = [
    (EventReason::Created, "Created"),
    (EventReason::Recreated, "Recreated"),
    (EventReason::Started, "Started"),
    (EventReason::Removed, "Removed"),
    (EventReason::NetworkCreated, "NetworkCreated"),
    (EventReason::VolumeCreated, "VolumeCreated"),
    (EventReason::ImagePulled, "ImagePulled"),
    (EventReason::ImageBuilt, "ImageBuilt"),
    (EventReason::Held, "Held"),
    (EventReason::Resumed, "Resumed"),
    (EventReason::BackupSlotMissed, "BackupSlotMissed"),
    (EventReason::BackupRetried, "BackupRetried"),
    (EventReason::BackupSucceeded, "BackupSucceeded"),
    (EventReason::BackupsPruned, "BackupsPruned"),
    (EventReason::PruneFailed, "PruneFailed"),
    (EventReason::BackupVerified, "BackupVerified"),
    (EventReason::Restored, "Restored"),
    (EventReason::BackupFailed, "BackupFailed"),
    (EventReason::RolloutStarted, "RolloutStarted"),
    (EventReason::KeyRotationDue, "KeyRotationDue"),
];

impl EventReason {
    /// The reason a word names, if any.
    pub fn parse(word: &str) -> Option<Self> {
        if let Some((r, _)) = OWN.iter().find(|(_, w)| *w == word) {
            return Some(*r);
        }
        let word = || IntoDeserializer::<de::value::Error>::into_deserializer(word);
        Reason::deserialize(word())
            .map(Self::Reason)
            .or_else(|_| RestartReason::deserialize(word()).map(Self::Restart))
            .ok()
    }
}

impl From<Reason> for EventReason {
    fn from(r: Reason) -> Self {
        Self::Reason(r)
    }
}

impl From<RestartReason> for EventReason {
    fn from(r: RestartReason) -> Self {
        Self::Restart(r)
    }
}

impl fmt::Display for EventReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reason(r) => fmt::Display::fmt(r, f),
            Self::Restart(r) => fmt::Display::fmt(r, f),
            own => {
                let word = OWN
                    .iter()
                    .find(|(r, _)| r == own)
                    .map(|(_, w)| *w)
                    .expect("every own reason has its word in OWN");
                f.write_str(word)
            }
        }
    }
}

impl PartialEq<str> for EventReason {
    fn eq(&self, other: &str) -> bool {
        Self::parse(other) == Some(*self)
    }
}

impl PartialEq<&str> for EventReason {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

impl Serialize for EventReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let word = String::deserialize(d)?;
        Self::parse(&word)
            .ok_or_else(|| de::Error::custom(format!("unknown event reason {word:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_own_reason_is_written_as_its_variant_name_and_read_back() {
        for (r, word) in OWN {
            assert_eq!(
                format!("{r:?}"),
                word,
                "OWN pairs each reason with its own name"
            );
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{word}\""));
            assert_eq!(serde_json::from_str::<EventReason>(&json).unwrap(), r);
        }
    }

    #[test]
    fn condition_and_restart_reasons_keep_their_words() {
        let cases = [
            (EventReason::from(Reason::ApplyFailed), "ApplyFailed"),
            (Reason::VerificationFailed.into(), "VerificationFailed"),
            (Reason::RestoreFailed.into(), "RestoreFailed"),
            (RestartReason::OOMKilled.into(), "OOMKilled"),
            (RestartReason::Crashed.into(), "Crashed"),
        ];
        for (r, word) in cases {
            assert_eq!(r.to_string(), word);
            assert!(r == word);
            assert_eq!(EventReason::parse(word), Some(r));
        }
    }

    #[test]
    fn no_word_names_two_reasons() {
        for (_, word) in OWN {
            let as_reason = IntoDeserializer::<de::value::Error>::into_deserializer(word);
            let as_restart = IntoDeserializer::<de::value::Error>::into_deserializer(word);
            assert!(Reason::deserialize(as_reason).is_err(), "{word}");
            assert!(RestartReason::deserialize(as_restart).is_err(), "{word}");
        }
    }

    #[test]
    fn an_unknown_word_is_no_reason() {
        assert_eq!(EventReason::parse("Exploded"), None);
        assert!(serde_json::from_str::<EventReason>("\"Exploded\"").is_err());
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// An event about a stack, as `kubectl describe` shows them: reason, action, note.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StackEvent {
    #[serde(rename = "type")]
    pub type_: EventType,
    /// CamelCase, stable.
    pub reason: crate::api::EventReason,
    pub action: String,
    pub note: String,
}

impl StackEvent {
    pub fn new(
        type_: EventType,
        reason: impl Into<crate::api::EventReason>,
        action: &str,
        note: String,
    ) -> Self {
        Self {
            type_,
            reason: reason.into(),
            action: action.to_owned(),
            note,
        }
    }
}
