//! Checks `spec.keyRotation` and gives its keys typed: a key names a variable the stack has
//! (once), an auto key says exactly what it is (`postgres`, `redis` or `random`) and names a
//! service of the compose file, the window parses, and each certificate has exactly one
//! source, the one its mode can read.

use std::time::Duration;

use crate::api::keys::{CertificateSpec, Encoding, KeyRotationSpec, KeySpec, RotateMode};
use crate::api::{Failure, Reason, ServiceStackSpec};
use crate::compose::{Origin, Project};
use crate::decide::backup::schedule::SlotSchedule;
use crate::decide::keys::Key;

const HERE: &str = "spec.keyRotation";

/// `spec.keyRotation` as admitted.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    pub keys: Vec<AdmittedKey>,
    pub warn_before: Duration,
    /// When automatic rotations may run; any time when unset.
    pub window: Option<SlotSchedule>,
    pub certificates: Vec<Certificate>,
}

/// One key, typed.
#[derive(Clone, Debug)]
pub struct AdmittedKey {
    pub key: Key,
    /// What it is, for a rotation (none: a key only a person rotates, such as an external
    /// API key).
    pub kind: Option<KeyKind>,
    pub keep_previous: Option<String>,
}

/// What a key is, and so how it is rotated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Postgres {
        service: String,
        user: String,
    },
    Redis {
        service: String,
        user: Option<String>,
    },
    Random {
        bytes: u32,
        encoding: Encoding,
    },
}

/// One certificate to watch, with where its PEM is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    pub name: String,
    pub source: CertificateSource,
    pub warn_before: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateSource {
    /// A path relative to the manifest's directory (local mode).
    File(String),
    /// A Secret's key in the stack's namespace (cluster mode).
    Secret { name: String, key: String },
}

pub fn validate(
    spec: &ServiceStackSpec,
    project: &Project,
    origin: Origin<'_>,
) -> Result<Keys, Failure> {
    let rotation = &spec.key_rotation;
    let max_age = days(
        rotation
            .max_age_days
            .unwrap_or(KeyRotationSpec::DEFAULT_MAX_AGE_DAYS),
    );
    let mut keys: Vec<AdmittedKey> = Vec::with_capacity(rotation.keys.len());
    for (i, k) in rotation.keys.iter().enumerate() {
        let here = format!("{HERE}.keys[{i}]");
        if keys.iter().any(|a| a.key.variable == k.variable) {
            return Err(invalid(format!(
                "{here}: {} is declared twice; declare each key once",
                k.variable
            )));
        }
        keys.push(key(&here, k, spec, project, max_age)?);
    }
    let window = rotation
        .window
        .as_deref()
        .map(|w| SlotSchedule::parse(w, rotation.time_zone.as_deref()))
        .transpose()
        .map_err(|e| invalid(format!("{HERE}.window: {e}")))?;
    let certificates = rotation
        .certificates
        .iter()
        .enumerate()
        .map(|(i, c)| certificate(&format!("{HERE}.certificates[{i}]"), c, origin))
        .collect::<Result<_, _>>()?;
    Ok(Keys {
        keys,
        warn_before: days(
            rotation
                .warn_before_days
                .unwrap_or(KeyRotationSpec::DEFAULT_WARN_BEFORE_DAYS),
        ),
        window,
        certificates,
    })
}

fn key(
    here: &str,
    k: &KeySpec,
    spec: &ServiceStackSpec,
    project: &Project,
    max_age: Duration,
) -> Result<AdmittedKey, Failure> {
    if !spec.variables.contains_key(&k.variable) {
        return Err(Failure::new(
            Reason::MissingVariable,
            format!(
                "{here}.variable {} is not a variable of the stack; define it in variables or variablesFrom (its Secret or env file)",
                k.variable
            ),
        ));
    }
    let kinds = [k.postgres.is_some(), k.redis.is_some(), k.random.is_some()];
    let kind = match kinds.iter().filter(|x| **x).count() {
        0 => None,
        1 => Some(kind_of(here, k, project)?),
        _ => {
            return Err(invalid(format!(
            "{here} ({}) gives more than one of postgres, redis and random; a key is one of them",
            k.variable
        )))
        }
    };
    if k.rotate == RotateMode::Auto && kind.is_none() {
        return Err(invalid(format!(
            "{here} ({}) is rotate: auto but says not what it is; add postgres: {{service, user}}, redis: {{service}} or random: {{bytes: 32}}, or make it rotate: manual",
            k.variable
        )));
    }
    if let Some(previous) = k.keep_previous.as_ref().filter(|p| **p == k.variable) {
        return Err(invalid(format!(
            "{here}.keepPrevious {previous} is the key's own variable; name another one for the previous value"
        )));
    }
    Ok(AdmittedKey {
        key: Key {
            variable: k.variable.clone(),
            rotate: k.rotate,
            max_age: k.max_age_days.map_or(max_age, days),
        },
        kind,
        keep_previous: k.keep_previous.clone(),
    })
}

fn kind_of(here: &str, k: &KeySpec, project: &Project) -> Result<KeyKind, Failure> {
    let service = |field: &str, service: &str| {
        if project.service(service).is_some() {
            Ok(service.to_owned())
        } else {
            Err(Failure::new(
                Reason::UnknownService,
                format!("{here}.{field}.service {service:?} is not a service of the compose file; fix the name"),
            ))
        }
    };
    if let Some(p) = &k.postgres {
        return Ok(KeyKind::Postgres {
            service: service("postgres", &p.service)?,
            user: p.user.clone(),
        });
    }
    if let Some(r) = &k.redis {
        return Ok(KeyKind::Redis {
            service: service("redis", &r.service)?,
            user: r.user.clone(),
        });
    }
    let random = k.random.as_ref().expect("one kind is set");
    if !(16..=512).contains(&random.bytes) {
        return Err(invalid(format!(
            "{here}.random.bytes is {}; use 16 to 512 (32 is `openssl rand -hex 32`)",
            random.bytes
        )));
    }
    Ok(KeyKind::Random {
        bytes: random.bytes,
        encoding: random.encoding,
    })
}

fn certificate(
    here: &str,
    c: &CertificateSpec,
    origin: Origin<'_>,
) -> Result<Certificate, Failure> {
    let local = matches!(origin, Origin::Local(_));
    let source = match (&c.file, &c.secret_ref) {
        (Some(f), None) if local => CertificateSource::File(f.clone()),
        (None, Some(s)) if !local => CertificateSource::Secret {
            name: s.name.clone(),
            key: s.key.clone(),
        },
        (Some(_), None) => {
            return Err(invalid(format!(
                "{here} ({}): file is read in local mode only; in a cluster use secretRef",
                c.name
            )))
        }
        (None, Some(_)) => {
            return Err(invalid(format!(
                "{here} ({}): secretRef is read in a cluster only; in local mode use file",
                c.name
            )))
        }
        _ => {
            return Err(invalid(format!(
                "{here} ({}) gives exactly one of file or secretRef",
                c.name
            )))
        }
    };
    Ok(Certificate {
        name: c.name.clone(),
        source,
        warn_before: days(
            c.warn_before_days
                .unwrap_or(CertificateSpec::DEFAULT_WARN_BEFORE_DAYS),
        ),
    })
}

fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 86_400)
}

fn invalid(message: String) -> Failure {
    Failure::new(Reason::InvalidField, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ServiceStack;
    use crate::compose::tests::{stack, DEMO};

    fn with_keys(rotation: serde_json::Value) -> ServiceStack {
        let mut s = stack(DEMO, &[("DB_PASSWORD", "x"), ("API_KEY", "y")]);
        s.spec.key_rotation = serde_json::from_value(rotation).unwrap();
        s
    }

    fn admitted(s: &ServiceStack) -> Result<Keys, Failure> {
        crate::admit::admit(s, Origin::Cluster).map(|a| a.keys)
    }

    fn refusal(rotation: serde_json::Value) -> Failure {
        admitted(&with_keys(rotation)).unwrap_err()
    }

    #[test]
    fn keys_are_typed_with_their_own_or_the_stacks_maximum_age() {
        let keys = admitted(&with_keys(serde_json::json!({
            "maxAgeDays": 60,
            "keys": [
                {"variable": "DB_PASSWORD", "rotate": "auto", "postgres": {"service": "postgres", "user": "demo"}},
                {"variable": "API_KEY", "maxAgeDays": 30},
            ],
        })))
        .unwrap();
        assert_eq!(keys.keys[0].key.max_age, days(60));
        assert_eq!(
            keys.keys[0].kind,
            Some(KeyKind::Postgres {
                service: "postgres".into(),
                user: "demo".into()
            })
        );
        assert_eq!(keys.keys[1].key.rotate, RotateMode::Manual);
        assert_eq!(keys.keys[1].key.max_age, days(30));
        assert_eq!(keys.warn_before, days(14));
    }

    #[test]
    fn an_auto_key_must_say_what_it_is_and_only_one_thing() {
        let e = refusal(serde_json::json!({"keys": [{"variable": "API_KEY", "rotate": "auto"}]}));
        assert!(
            e.message
                .contains("is rotate: auto but says not what it is"),
            "{}",
            e.message
        );
        let e = refusal(
            serde_json::json!({"keys": [{"variable": "API_KEY", "rotate": "auto",
            "random": {}, "redis": {"service": "redis"}}]}),
        );
        assert!(
            e.message
                .contains("more than one of postgres, redis and random"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_key_names_a_variable_and_a_service_the_stack_has_once() {
        let e = refusal(serde_json::json!({"keys": [{"variable": "NOPE"}]}));
        assert_eq!(e.reason, Reason::MissingVariable);
        let e = refusal(
            serde_json::json!({"keys": [{"variable": "DB_PASSWORD", "rotate": "auto",
            "postgres": {"service": "db", "user": "demo"}}]}),
        );
        assert_eq!(e.reason, Reason::UnknownService);
        assert!(
            e.message.contains("postgres.service \"db\""),
            "{}",
            e.message
        );
        let e = refusal(
            serde_json::json!({"keys": [{"variable": "API_KEY"}, {"variable": "API_KEY"}]}),
        );
        assert!(e.message.contains("declared twice"), "{}", e.message);
    }

    #[test]
    fn a_certificate_comes_from_the_source_its_mode_can_read() {
        let e = refusal(serde_json::json!({"certificates": [{"name": "web", "file": "tls.pem"}]}));
        assert!(
            e.message.contains("in a cluster use secretRef"),
            "{}",
            e.message
        );
        let keys = admitted(&with_keys(serde_json::json!({
            "certificates": [{"name": "web", "secretRef": {"name": "web-tls"}}],
        })))
        .unwrap();
        assert_eq!(
            keys.certificates[0].source,
            CertificateSource::Secret {
                name: "web-tls".into(),
                key: "tls.crt".into()
            }
        );
        assert_eq!(keys.certificates[0].warn_before, days(30));
    }

    #[test]
    fn a_window_that_does_not_parse_is_refused() {
        let e = refusal(serde_json::json!({"window": "every sunday"}));
        assert!(
            e.message.starts_with("spec.keyRotation.window: "),
            "{}",
            e.message
        );
    }
}
