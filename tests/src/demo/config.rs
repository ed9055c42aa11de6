//! Configuration of the demo app, read from the environment the way the runbooks' backend
//! reads it, so that the same compose files drive both.

use std::fmt;

use anyhow::{bail, Context};

/// A value that must never reach a log line or an HTTP answer: `Debug` prints a placeholder,
/// and the only way to the text is the explicit [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub port: u16,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub faults: FaultSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub user: String,
    pub password: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub host: String,
    pub port: u16,
    pub password: Option<Secret>,
}

/// The faults switched on at start; each can also be flipped at runtime over HTTP.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultSettings {
    pub fail_health: bool,
    pub crash_at_start: bool,
    pub leak_mb_per_sec: u64,
    pub error_rate: f64,
    /// How long `/` takes to answer (`DEMO_LATENCY_MS`): a slower release, for the rollout
    /// analysis's latency gates.
    pub latency_ms: u64,
}

pub const DEFAULT_PORT: u16 = 8000;

/// Above this the leak would exhaust any test machine within seconds, which is never what a
/// test means; it is far beyond any realistic memory-limit experiment.
pub const MAX_LEAK_MB_PER_SEC: u64 = 4096;

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// `lookup` stands in for the environment, so parsing is testable without touching the
    /// process's real one. Empty values count as unset, because compose writes `FOO=` for a
    /// variable that is declared but not given.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let get = |key: &str| lookup(key).filter(|value| !value.is_empty());
        let port_of = |key: &str, default: u16| -> anyhow::Result<u16> {
            get(key).map_or(Ok(default), |value| parse_port(key, &value))
        };

        let db_user = get("DB_USER").unwrap_or_else(|| "postgres".to_owned());
        let database = DatabaseConfig {
            host: get("DB_HOST").unwrap_or_else(|| "postgres".to_owned()),
            port: port_of("DB_PORT", 5432)?,
            name: get("DB_NAME").unwrap_or_else(|| db_user.clone()),
            user: db_user,
            password: Secret::new(get("DB_PASSWORD").unwrap_or_default()),
        };
        let redis = RedisConfig {
            host: get("REDIS_HOST").unwrap_or_else(|| "redis".to_owned()),
            port: port_of("REDIS_PORT", 6379)?,
            password: get("REDIS_PASSWORD").map(Secret::new),
        };
        let faults = FaultSettings {
            fail_health: get("DEMO_FAIL_HEALTH").map_or(Ok(false), |v| parse_switch(&v))?,
            crash_at_start: get("DEMO_CRASH_AT_START").map_or(Ok(false), |v| parse_switch(&v))?,
            leak_mb_per_sec: get("DEMO_LEAK_MB_PER_SEC").map_or(Ok(0), |v| parse_leak_rate(&v))?,
            error_rate: get("DEMO_ERROR_RATE").map_or(Ok(0.0), |v| parse_error_rate(&v))?,
            latency_ms: get("DEMO_LATENCY_MS").map_or(Ok(0), |v| parse_latency(&v))?,
        };
        Ok(Self {
            port: port_of("PORT", DEFAULT_PORT)?,
            database,
            redis,
            faults,
        })
    }
}

/// The port only, for the `healthcheck` subcommand: it must work even when some unrelated
/// variable would make the full configuration invalid.
pub fn port_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<u16> {
    match lookup("PORT").filter(|value| !value.is_empty()) {
        Some(value) => parse_port("PORT", &value),
        None => Ok(DEFAULT_PORT),
    }
}

fn parse_port(key: &str, value: &str) -> anyhow::Result<u16> {
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
        .with_context(|| format!("{key} must be a port number between 1 and 65535, got {value:?}"))
}

pub fn parse_switch(value: &str) -> anyhow::Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => bail!("expected true/false (or 1/0), got {value:?}"),
    }
}

pub fn parse_error_rate(value: &str) -> anyhow::Result<f64> {
    let rate: f64 = value
        .trim()
        .parse()
        .with_context(|| format!("error rate must be a number, got {value:?}"))?;
    if !(0.0..=1.0).contains(&rate) {
        bail!("error rate must be between 0 and 1, got {value:?}");
    }
    Ok(rate)
}

fn parse_latency(value: &str) -> anyhow::Result<u64> {
    let ms: u64 = value.trim().parse().with_context(|| {
        format!("latency must be a whole number of milliseconds, got {value:?}")
    })?;
    if ms > 60_000 {
        bail!("latency must be at most 60000 ms, got {value:?}");
    }
    Ok(ms)
}

pub fn parse_leak_rate(value: &str) -> anyhow::Result<u64> {
    let rate: u64 = value.trim().parse().with_context(|| {
        format!("leak rate must be a whole number of MiB per second, got {value:?}")
    })?;
    if rate > MAX_LEAK_MB_PER_SEC {
        bail!("leak rate must be at most {MAX_LEAK_MB_PER_SEC} MiB per second, got {rate}");
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config_from(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|key| vars.get(key).cloned())
    }

    #[test]
    fn defaults_match_the_runbook_compose_service_names() {
        let config = config_from(&[]).unwrap();
        assert_eq!(config.port, 8000);
        assert_eq!(config.database.host, "postgres");
        assert_eq!(config.database.port, 5432);
        assert_eq!(config.database.user, "postgres");
        assert_eq!(config.database.name, "postgres");
        assert!(config.database.password.is_empty());
        assert_eq!(config.redis.host, "redis");
        assert_eq!(config.redis.port, 6379);
        assert_eq!(config.redis.password, None);
        assert_eq!(config.faults, FaultSettings::default());
    }

    #[test]
    fn reads_every_variable() {
        let config = config_from(&[
            ("PORT", "9000"),
            ("DB_HOST", "db"),
            ("DB_PORT", "6543"),
            ("DB_NAME", "erni_agents"),
            ("DB_USER", "erni_user"),
            ("DB_PASSWORD", "pg-secret"),
            ("REDIS_HOST", "cache"),
            ("REDIS_PORT", "6380"),
            ("REDIS_PASSWORD", "redis-secret"),
            ("DEMO_FAIL_HEALTH", "1"),
            ("DEMO_CRASH_AT_START", "true"),
            ("DEMO_LEAK_MB_PER_SEC", "16"),
            ("DEMO_ERROR_RATE", "0.2"),
            ("DEMO_LATENCY_MS", "150"),
        ])
        .unwrap();
        assert_eq!(config.port, 9000);
        assert_eq!(
            config.database,
            DatabaseConfig {
                host: "db".into(),
                port: 6543,
                name: "erni_agents".into(),
                user: "erni_user".into(),
                password: Secret::new("pg-secret"),
            }
        );
        assert_eq!(config.redis.host, "cache");
        assert_eq!(config.redis.port, 6380);
        assert_eq!(config.redis.password, Some(Secret::new("redis-secret")));
        assert_eq!(
            config.faults,
            FaultSettings {
                fail_health: true,
                crash_at_start: true,
                leak_mb_per_sec: 16,
                error_rate: 0.2,
                latency_ms: 150,
            }
        );
    }

    #[test]
    fn database_name_defaults_to_the_user_like_postgres_does() {
        let config = config_from(&[("DB_USER", "erni_user")]).unwrap();
        assert_eq!(config.database.name, "erni_user");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let config = config_from(&[
            ("PORT", ""),
            ("REDIS_PASSWORD", ""),
            ("DEMO_ERROR_RATE", ""),
        ])
        .unwrap();
        assert_eq!(config.port, 8000);
        assert_eq!(config.redis.password, None);
        assert_eq!(config.faults.error_rate, 0.0);
    }

    #[test]
    fn rejects_invalid_values_naming_the_variable() {
        let err = config_from(&[("DB_PORT", "five")]).unwrap_err().to_string();
        assert!(err.contains("DB_PORT"), "{err}");
        assert!(config_from(&[("PORT", "0")]).is_err());
        assert!(config_from(&[("PORT", "70000")]).is_err());
        assert!(config_from(&[("DEMO_ERROR_RATE", "1.5")]).is_err());
        assert!(config_from(&[("DEMO_ERROR_RATE", "NaN")]).is_err());
        assert!(config_from(&[("DEMO_LEAK_MB_PER_SEC", "-1")]).is_err());
        assert!(config_from(&[("DEMO_LEAK_MB_PER_SEC", "100000")]).is_err());
        assert!(config_from(&[("DEMO_FAIL_HEALTH", "maybe")]).is_err());
    }

    #[test]
    fn debug_output_never_shows_passwords() {
        let config = config_from(&[
            ("DB_PASSWORD", "pg-secret"),
            ("REDIS_PASSWORD", "redis-secret"),
        ])
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("pg-secret"), "{debug}");
        assert!(!debug.contains("redis-secret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn switches_accept_the_usual_spellings() {
        for on in ["1", "true", "TRUE", "yes", "on"] {
            assert!(parse_switch(on).unwrap(), "{on}");
        }
        for off in ["0", "false", "no", "off", ""] {
            assert!(!parse_switch(off).unwrap(), "{off}");
        }
    }

    #[test]
    fn healthcheck_port_ignores_unrelated_invalid_variables() {
        let lookup = |key: &str| match key {
            "PORT" => Some("8123".to_owned()),
            "DB_PORT" => Some("nonsense".to_owned()),
            _ => None,
        };
        assert_eq!(port_from_lookup(lookup).unwrap(), 8123);
        assert_eq!(port_from_lookup(|_| None).unwrap(), DEFAULT_PORT);
    }
}
