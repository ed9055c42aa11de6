//! `spec.keyRotation`: the stack's keys (the variables that hold its passwords and secrets),
//! how old each may get, and which of them the operator rotates itself; and the PEM
//! certificates whose expiry it watches. `status.keys` and `status.certificates` report ages
//! and dates, never a value.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The runbook's key-rotation policy: every key at most `maxAgeDays` old.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRotationSpec {
    /// How old a key may get before it is due for rotation. Default 90.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_age_days: Option<u32>,

    /// How many days before a key is due a Warning event says so. Default 14.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_before_days: Option<u32>,

    /// When automatic rotations may run: a cron expression (5 fields); a due key waits for the
    /// next time it matches. Unset: as soon as a key is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,

    /// Time zone of `window` (IANA name); UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,

    /// The keys, each the variable that holds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeySpec>,

    /// PEM certificates whose expiry is watched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateSpec>,
}

impl KeyRotationSpec {
    pub const DEFAULT_MAX_AGE_DAYS: u32 = 90;
    pub const DEFAULT_WARN_BEFORE_DAYS: u32 = 14;

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One key: the variable it feeds, and whether and how the operator rotates it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySpec {
    /// The variable holding the key (from `variables` or `variablesFrom`).
    pub variable: String,

    /// `manual` (default): the operator reports the key's age and when it is due, and a person
    /// rotates it (an external API key). `auto`: the operator rotates it, as the key's kind
    /// (`postgres`, `redis` or `random`) says.
    #[serde(default)]
    pub rotate: RotateMode,

    /// Overrides `maxAgeDays` for this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_age_days: Option<u32>,

    /// A PostgreSQL role's password, set with `ALTER ROLE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresKey>,

    /// A Redis password: an ACL user's, or `requirepass`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisKey>,

    /// An application secret (a signing key): random bytes, no server to tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<RandomKey>,

    /// Also give the services the previous value under this variable during the rotation
    /// and until the next one (for apps that verify tokens signed with the previous key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_previous: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RotateMode {
    #[default]
    Manual,
    Auto,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresKey {
    /// The compose service running PostgreSQL.
    pub service: String,
    /// The role whose password the key is.
    pub user: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisKey {
    /// The compose service running Redis.
    pub service: String,
    /// The ACL user; unset: the default user (`requirepass`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RandomKey {
    /// How many random bytes. Default 32 (`openssl rand -hex 32`).
    #[serde(default = "RandomKey::default_bytes")]
    #[schemars(range(min = 16, max = 512))]
    pub bytes: u32,
    #[serde(default)]
    pub encoding: Encoding,
}

impl RandomKey {
    fn default_bytes() -> u32 {
        32
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
}

/// A PEM certificate to watch: exactly one of `file` or `secretRef`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateSpec {
    /// A name for it in status, conditions and metrics.
    pub name: String,

    /// A PEM file (the first certificate in it is the one judged); relative to the manifest's
    /// directory. Local mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,

    /// A Secret's key holding the PEM (`tls.crt` of a `kubernetes.io/tls` Secret by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<CertificateSecret>,

    /// `CertificateExpiring` turns True this many days before `notAfter`. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_before_days: Option<u32>,
}

impl CertificateSpec {
    pub const DEFAULT_WARN_BEFORE_DAYS: u32 = 30;
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateSecret {
    pub name: String,
    #[serde(default = "CertificateSecret::default_key")]
    pub key: String,
}

impl CertificateSecret {
    fn default_key() -> String {
        "tls.crt".into()
    }
}

/// One key as `status.keys` reports it: dates and outcomes, never the value.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    /// What its age counts from: its last rotation, or when the operator first saw it.
    #[schemars(with = "String")]
    pub since: DateTime<Utc>,
    /// Its last rotation, when the operator knows of one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_rotation: Option<DateTime<Utc>>,
    /// When it is due for rotation (`since` + its maximum age).
    #[schemars(with = "String")]
    pub next_due: DateTime<Utc>,
    pub rotate: RotateMode,
    /// How its last rotation ended, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<String>,
    /// The last Warning event given for this due date: each is given once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warned: Option<Warned>,
}

/// Which Warning a key was given for its due date.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Warned {
    /// It falls due within `warnBeforeDays`.
    DueSoon,
    Due,
}

/// One certificate as `status.certificates` reports it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    pub subject: String,
    #[schemars(with = "String")]
    pub not_after: DateTime<Utc>,
}

/// `status.keys`, by variable.
pub type KeyStatuses = BTreeMap<String, KeyStatus>;
