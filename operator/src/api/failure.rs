//! The one shape of "what went wrong": a stable [`Reason`] (alerts and scripts match on it) and
//! a message saying what to do. Spec errors, probe failures and backup failures all travel as
//! a `Failure`, and all of them pass through [`mask`] before anyone can read them.

use std::collections::BTreeMap;

use super::Reason;

/// Why something failed and what a person should do about it. The message never holds a
/// secret: build it with [`Failure::masked`] where it may quote a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// A failure whose message may quote variable values or passwords: every one of them is
    /// replaced before the failure exists.
    pub fn masked(
        reason: Reason,
        message: &str,
        variables: &BTreeMap<String, String>,
        always: &[&str],
    ) -> Self {
        Self::new(reason, mask(message, variables, always))
    }
}

/// Replaces every variable value (of three characters or more: shorter ones are words like
/// `on`) and every value in `always` (passwords, whatever their length) with `<redacted>`,
/// longest first so that a value containing another is hidden whole.
pub fn mask(message: &str, variables: &BTreeMap<String, String>, always: &[&str]) -> String {
    let mut values: Vec<&str> = variables
        .values()
        .map(String::as_str)
        .filter(|v| v.len() >= 3)
        .chain(always.iter().copied().filter(|v| !v.is_empty()))
        .collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values.dedup();
    values
        .iter()
        .fold(message.to_owned(), |m, v| m.replace(v, "<redacted>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_hides_every_value_longest_first_and_short_values_only_when_always() {
        let vars: BTreeMap<String, String> = [
            ("A".to_owned(), "secret".to_owned()),
            ("B".to_owned(), "secret-longer".to_owned()),
            ("C".to_owned(), "on".to_owned()),
            ("D".to_owned(), "pw".to_owned()),
        ]
        .into();
        let m = mask("x secret-longer y secret z on pw", &vars, &["pw"]);
        assert_eq!(m, "x <redacted> y <redacted> z on <redacted>");
    }

    #[test]
    fn a_masked_failure_keeps_its_reason_and_loses_the_value() {
        let vars: BTreeMap<String, String> = [("P".to_owned(), "hunter22".to_owned())].into();
        let f = Failure::masked(Reason::MalformedCompose, "bad: hunter22", &vars, &[]);
        assert_eq!(f.reason, Reason::MalformedCompose);
        assert_eq!(f.to_string(), "bad: <redacted>");
    }
}
