//! The operator's hands on what runs: the Docker engine lives behind [`crate::docker::Engine`];
//! here are the one PostgreSQL and the one Redis client that probes, backups (and next, key
//! rotation) log in with. Both mask the password out of every message they make. And the
//! scraper of a service's metrics page, for the rollout analysis (`metrics`).

pub mod metrics;
pub mod postgres;
pub mod reading;
pub mod redis;

/// An error and its causes on one line: the outer messages of these clients are often only
/// "db error" or "error sending request", with the reason in the source.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// A failure of one of these clients: its kind, and its message (with its causes) without the
/// password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ClientError<K> {
    pub kind: K,
    pub message: String,
}

impl<K> ClientError<K> {
    /// `error`'s chain of causes as the message, `password` masked out of it.
    fn of(kind: K, error: &dyn std::error::Error, password: Option<&str>) -> Self {
        Self {
            kind,
            message: masked(&chain(error), password),
        }
    }
}

/// `text` with `password` (if any) replaced, whatever its length.
fn masked(text: &str, password: Option<&str>) -> String {
    match password {
        Some(p) => crate::api::mask(text, &std::collections::BTreeMap::new(), &[p]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_names_each_cause_once() {
        let e = Outer(std::io::Error::other("inner reason"));
        assert_eq!(chain(&e), "outer: inner reason");
    }

    #[test]
    fn a_password_is_masked_whatever_its_length() {
        assert_eq!(
            masked("auth pw failed", Some("pw")),
            "auth <redacted> failed"
        );
        assert_eq!(masked("auth failed", None), "auth failed");
    }
}
