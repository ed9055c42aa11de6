//! `spec.backups` and `status.backups`: what to back up, when, where, for how long; and what
//! happened. Split from the rest of the API because it is a world of its own.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Reason;

/// One thing to back up (a database of a Postgres service, or a Redis service), on a schedule,
/// to one destination.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupTarget {
    /// Name of the target, unique in the stack: a DNS label (lowercase letters, digits, `-`),
    /// at most 40 characters. It names the backups (`NAME-20260102T020000Z`).
    pub name: String,

    /// Back up a PostgreSQL database with `pg_dump -Fc`, run inside the service's container.
    /// Exactly one of `postgres` and `redis` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSource>,

    /// Back up a Redis server: `BGSAVE`, then copy its `dump.rdb` out of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSource>,

    /// Cron expression (5 fields, or 6 with seconds first), e.g. `0 2 * * *`. Without one the
    /// target is backed up only on request and before deploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,

    /// IANA time zone of `schedule`, `verify.schedule` and of the days, weeks and months of
    /// `retention`; UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,

    /// A slot missed while the operator was down runs once when it comes back, if it is at most
    /// this many seconds late; older slots are skipped (and reported).
    #[serde(default = "default_starting_deadline")]
    pub starting_deadline_seconds: u32,

    /// How many backups to keep, grandfather-father-son.
    #[serde(default)]
    pub retention: Retention,

    /// Restore tests: each restores the newest backup into a scratch database and compares
    /// row (or key) counts with the backup's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,

    /// Where backups go.
    pub destination: BackupDestination,

    /// `BackupStale` turns True when the last successful backup is older than this many hours.
    #[serde(default = "default_stale_after_hours")]
    pub stale_after_hours: u32,

    /// Take a backup of this target before each deploy (a changed compose file); the deploy
    /// waits for it and does not happen if it fails.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub before_deploy: bool,

    /// zstd level, 1 (fastest) to 19 (smallest).
    #[serde(default = "default_compression_level")]
    pub compression_level: i32,
}

fn default_starting_deadline() -> u32 {
    3600
}
fn default_stale_after_hours() -> u32 {
    24
}
fn default_compression_level() -> i32 {
    3
}

/// A PostgreSQL database to dump.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresSource {
    /// The compose service running PostgreSQL.
    pub service: String,
    /// The database to dump.
    pub database: String,
    /// The user to dump as; it also creates and drops the scratch databases of restore tests,
    /// so it needs CREATEDB (the image's `POSTGRES_USER` has it).
    pub user: String,
    /// Name of the entry of `spec.variables` that holds the user's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_variable: Option<String>,
    /// Container port; 5432 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// A Redis server to snapshot.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisSource {
    /// The compose service running Redis.
    pub service: String,
    /// Name of the entry of `spec.variables` that holds the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_variable: Option<String>,
    /// Container port; 6379 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Grandfather-father-son retention: the newest backup of each of the last `daily` days, of
/// each of the last `weekly` ISO weeks and of each of the last `monthly` months that have a
/// backup, in the target's time zone. A backup any rule keeps is kept; the newest verified
/// backup is always kept. Applied only after a new backup succeeded.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retention {
    /// Days to keep one backup of.
    #[serde(default)]
    pub daily: u32,
    /// ISO weeks to keep one backup of.
    #[serde(default)]
    pub weekly: u32,
    /// Months to keep one backup of.
    #[serde(default)]
    pub monthly: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            daily: 7,
            weekly: 0,
            monthly: 0,
        }
    }
}

/// When to test that the backups restore.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifySpec {
    /// Cron expression, in the target's time zone, e.g. `0 4 1 * *` (monthly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Also verify every backup right after it is taken.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_backup: bool,
}

/// Where backups go. Exactly one of `path` and `s3` is set.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupDestination {
    /// A directory on the operator's host (in a cluster, a volume mounted into the operator).
    /// Backups go to `PATH/NAMESPACE/STACK/TARGET/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// S3-compatible object storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
}

/// An S3 bucket. Backups go to `PREFIX/NAMESPACE/STACK/TARGET/`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Destination {
    /// The bucket; it must exist.
    pub bucket: String,
    /// Key prefix inside the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Endpoint of an S3-compatible server (MinIO, Ceph, ...), e.g. `http://minio:9000`;
    /// AWS when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region; `us-east-1` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Name of the entry of `spec.variables` holding the access key id.
    pub access_key_id_variable: String,
    /// Name of the entry of `spec.variables` holding the secret access key.
    pub secret_access_key_variable: String,
}

/// What happened to one backup target.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupTargetStatus {
    /// When the operator first saw this target: slots before it are not run, and it is
    /// stale when it has had no backup for `staleAfterHours` since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub since: Option<DateTime<Utc>>,
    /// The newest successful backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<BackupRecord>,
    /// The newest failed attempt (backup, restore test or restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<FailureRecord>,
    /// When the schedule runs next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub next_run: Option<DateTime<Utc>>,
    /// The last scheduled slot taken (run, or skipped past its starting deadline): a slot is
    /// never run twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_slot: Option<DateTime<Utc>>,
    /// The last restore-test slot taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_verify_slot: Option<DateTime<Utc>>,
    /// The newest restore test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verification: Option<VerificationRecord>,
    /// The newest restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restore: Option<RestoreRecord>,
    /// The work in progress, written before it starts so that an operator restarted meanwhile
    /// finishes or retries it instead of forgetting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<RunningJob>,
    /// The value of the `backup.stackwarden.dev/TARGET` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_backup_request: Option<String>,
    /// The value of the `restore.stackwarden.dev/TARGET` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_restore_request: Option<String>,
    /// The value of the `verify.stackwarden.dev/TARGET` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_verify_request: Option<String>,
    /// The restore a manual rollback with `restore-backup` asked of this target, last acted
    /// on (kept apart from the annotation's, so neither is taken for a new request of the
    /// other).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_rollback_restore: Option<String>,
    /// The backup the newest deploy waits for (`beforeDeploy`), written before it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_backup: Option<DeployBackup>,
}

/// A backup taken because a deploy of a changed compose file waits for it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployBackup {
    /// The `status.specHash` the deploy is about to apply.
    pub spec_hash: String,
    /// When the deploy asked for it. A successful backup of the target that starts after this
    /// (a manual one, say, after fixing what made this one fail) lets the deploy go on too.
    #[schemars(with = "String")]
    pub requested: DateTime<Utc>,
    /// The backup taken for it.
    pub id: String,
    pub state: DeployBackupState,
    /// Why it failed, and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How the backup a deploy waits for went.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DeployBackupState {
    Running,
    Succeeded,
    Failed,
}

/// A successful backup.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// Backup name, e.g. `pg-nightly-20260102T020000Z`; `stackwarden restore` takes it.
    pub id: String,
    /// When it finished.
    #[schemars(with = "String")]
    pub time: DateTime<Utc>,
    /// Compressed size in bytes.
    pub size: u64,
    /// sha256 of the stored (compressed) bytes.
    pub sha256: String,
    /// Where it is: a file path or an `s3://` URL.
    pub location: String,
    /// Whether a restore test passed on it: absent until one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// What started it.
    pub trigger: Trigger,
}

/// A failure.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureRecord {
    #[schemars(with = "String")]
    pub time: DateTime<Utc>,
    /// CamelCase and stable, as in the `BackupFailed` condition.
    pub reason: Reason,
    /// What went wrong and what to do.
    pub message: String,
}

/// A restore test.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationRecord {
    /// The backup tested.
    pub id: String,
    #[schemars(with = "String")]
    pub time: DateTime<Utc>,
    /// Whether it restored and its counts matched the manifest.
    pub passed: bool,
    pub message: String,
}

/// A restore.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRecord {
    /// The backup restored.
    pub id: String,
    #[schemars(with = "String")]
    pub time: DateTime<Utc>,
    pub succeeded: bool,
    pub message: String,
}

/// Work in progress on a target.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunningJob {
    pub job: Job,
    /// The backup taken, tested or restored.
    pub id: String,
    pub trigger: Trigger,
    /// The scheduled slot it is for (scheduled backups and restore tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub slot: Option<DateTime<Utc>>,
    #[schemars(with = "String")]
    pub started: DateTime<Utc>,
    /// 1 for the first try; an attempt cut off by an operator restart is retried once.
    pub attempt: u32,
    /// Compressed bytes written (or read) so far.
    #[serde(default)]
    pub bytes: u64,
    /// Services stopped for a restore; started again when it ends, even after a crash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paused_services: Vec<String>,
}

/// A kind of work on a backup target.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Job {
    Backup,
    Verify,
    Restore,
}

impl Job {
    pub fn as_str(self) -> &'static str {
        match self {
            Job::Backup => "Backup",
            Job::Verify => "Verify",
            Job::Restore => "Restore",
        }
    }
}

/// What started a backup or restore test.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Trigger {
    /// Its schedule.
    Scheduled,
    /// A person (`stackwarden backup`, or the annotation).
    Manual,
    /// A deploy (`beforeDeploy`).
    PreDeploy,
    /// `verify.afterBackup`.
    AfterBackup,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Scheduled => "Scheduled",
            Trigger::Manual => "Manual",
            Trigger::PreDeploy => "PreDeploy",
            Trigger::AfterBackup => "AfterBackup",
        }
    }
}

/// Status of every target, by name.
pub type BackupStatuses = BTreeMap<String, BackupTargetStatus>;
