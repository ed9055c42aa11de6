//! `status.rollback`: the manual rollback a person asked for (`stackwarden rollback`, the
//! `stackwarden.dev/rollback` annotation), recorded before anything of it is done.
//!
//! A rollback is a pin, not an edit: the spec stays as the person (or GitOps) wrote it, and
//! while its spec hash is still [`RollbackStatus::from_spec_hash`] the operator applies the
//! revision rolled back to instead. A changed spec drops the pin and is rolled out as usual.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The last rollback request acted on, and what became of it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackStatus {
    /// The `stackwarden.dev/rollback` value acted on: the same value is acted on once (a new
    /// `#NONCE` asks again).
    pub request: String,
    #[schemars(with = "String")]
    pub requested: DateTime<Utc>,
    /// The revision brought back (none when the request was refused before one was chosen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// The revision that ran when the rollback was asked for: the one it undoes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// The spec hash of the spec as it was when asked: the pin holds while the spec hashes so.
    pub from_spec_hash: String,
    /// Whether the `beforeDeploy` backups taken before `from` are restored once revision `to`
    /// runs again (writes made since those backups are lost).
    #[serde(default)]
    pub restore_backup: bool,
    /// Those backups, by target.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub restores: BTreeMap<String, String>,
    /// Why the request was refused. Nothing was changed because of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl RollbackStatus {
    /// Whether revision `to` is applied instead of the spec: the request was taken and the
    /// spec has not changed since.
    pub fn pins(&self, spec_hash: &str) -> Option<u64> {
        self.to
            .filter(|_| self.refused.is_none() && self.from_spec_hash == spec_hash)
    }

    /// The restore request value the rollback hands a target's restore machinery for
    /// `backup`: the backup id, and this request's time as its nonce.
    pub fn restore_request(&self, backup: &str) -> String {
        format!("{backup}#rollback-{}", self.requested.timestamp_millis())
    }
}
