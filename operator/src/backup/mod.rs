//! Backups, restore tests and restores of the stack's databases (`spec.backups`).
//!
//! The pure core decides: [`schedule`] (which slot is due), [`retention`] (which backups to
//! keep). The edges act: [`postgres`] and [`redis`] produce and restore the bytes over the
//! Docker API, [`pipeline`] compresses and hashes them on the way, [`destination`] stores them
//! atomically. The destination is the truth about which backups exist: every backup has a
//! [`Manifest`] next to it, written after the backup itself, so a backup without a manifest was
//! never finished and is never reported as done.

pub mod destination;
pub mod pipeline;
pub mod postgres;
pub mod redis;
pub mod runner;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::Trigger;

/// What is backed up.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `pg_dump -Fc` output, zstd-compressed.
    Postgres,
    /// A Redis `dump.rdb`, zstd-compressed.
    Redis,
}

impl Kind {
    /// File name suffix of the backup's data object.
    pub fn suffix(self) -> &'static str {
        match self {
            Kind::Postgres => "pgdump.zst",
            Kind::Redis => "rdb.zst",
        }
    }
}

/// Written next to each backup once it is complete. The backup exists (for status, restore,
/// retention) exactly when its manifest does.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// `namespace/name` of the stack.
    pub stack: String,
    /// Backup target (`spec.backups[].name`).
    pub target: String,
    /// Backup name: `TARGET-YYYYMMDDTHHMMSSZ` of its start.
    pub id: String,
    pub kind: Kind,
    pub trigger: Trigger,
    /// The scheduled slot it was taken for (scheduled backups only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<DateTime<Utc>>,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// Name of the data object, next to the manifest.
    pub object: String,
    /// Compressed size in bytes.
    pub size: u64,
    /// sha256 (hex) of the compressed bytes as stored.
    pub sha256: String,
    /// Size before compression.
    pub raw_size: u64,
    pub compression: String,
    /// `server_version` of PostgreSQL, or `redis_version`.
    pub server_version: String,
    /// Postgres: the database dumped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Postgres: rows per table (`schema.table`), counted in the snapshot the dump was taken
    /// from, so a restore must reproduce them exactly.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub row_counts: BTreeMap<String, u64>,
    /// Redis: keys per database number, at the snapshot.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub key_counts: BTreeMap<u32, u64>,
}

impl Manifest {
    /// Object name of a backup's manifest.
    pub fn object_name(id: &str) -> String {
        format!("{id}.manifest.json")
    }
}

/// The outcome of a restore test, stored next to the backup as `ID.verify.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub id: String,
    pub time: DateTime<Utc>,
    pub passed: bool,
    pub message: String,
}

impl Verification {
    pub fn object_name(id: &str) -> String {
        format!("{id}.verify.json")
    }
}

/// The name of a backup of `target` started at `started`.
pub fn backup_id(target: &str, started: DateTime<Utc>) -> String {
    format!("{target}-{}", started.format("%Y%m%dT%H%M%SZ"))
}
