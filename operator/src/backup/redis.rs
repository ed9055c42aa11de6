//! Redis backups: a fresh `BGSAVE`, its RDB file streamed out of the container over the
//! archive API; restore tests in a throwaway server with no network; restores into the live
//! server. Nothing is held whole in memory, and no message ever holds the password.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::io::AsyncRead;

use super::destination::Upload;
use super::pipeline::{self, Sealed};
use super::Manifest;
use crate::act::reading::Tally;
use crate::api::{Failure, Reason};
use crate::docker::{short_id, Engine, EngineError, FileStat};

/// How long a `BGSAVE` (and, after a restore or in a restore test, loading the dump) may take.
const SAVE_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a save or a load in progress is polled.
const POLL: Duration = Duration::from_millis(150);
/// Grace period for Redis to shut down (it may write its own dump first).
const STOP_GRACE_S: i64 = 60;
/// Where the scratch server of a restore test keeps the dump.
const VERIFY_DIR: &str = "/tmp";
const VERIFY_FILE: &str = "stackwarden-verify.rdb";

/// One Redis service to back up or restore.
pub struct Redis<'a> {
    pub engine: &'a dyn Engine,
    /// Container id of the Redis service.
    pub container: String,
    /// Where the operator reaches Redis over TCP.
    pub addr: SocketAddr,
    pub password: Option<String>,
    /// The service's image, for the scratch server of restore tests.
    pub image: String,
}

/// A finished backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshotted {
    pub sealed: Sealed,
    /// Keys per database (`INFO keyspace`) right after the save completed.
    pub key_counts: BTreeMap<u32, u64>,
    /// `redis_version`.
    pub server_version: String,
}

/// `BGSAVE`, waits for it, then streams the RDB file out of the container through
/// [`pipeline::store`] into `upload`: committed on success, aborted on any failure. A save
/// already in progress is waited for first, so the snapshot always starts after the request.
pub async fn backup(
    r: &Redis<'_>,
    mut upload: Box<dyn Upload>,
    level: i32,
    progress: &AtomicU64,
) -> Result<Snapshotted, Failure> {
    let snapshotted = snapshot(r, upload.as_mut(), level, progress).await;
    pipeline::settle(upload, snapshotted).await
}

async fn snapshot(
    r: &Redis<'_>,
    upload: &mut dyn Upload,
    level: i32,
    progress: &AtomicU64,
) -> Result<Snapshotted, Failure> {
    let mut conn = connect(r).await?;
    bgsave(r, &mut conn).await?;
    let key_counts = keyspace(&info(r, &mut conn, "keyspace").await?);
    let server_version = info_field(&info(r, &mut conn, "server").await?, "redis_version")
        .unwrap_or_default()
        .to_owned();
    let path = dump_path(r, &mut conn).await?;
    let source = r
        .engine
        .open_file(&r.container, &path)
        .await
        .map(|(_, bytes)| bytes)
        .map_err(|e| {
            Failure::new(
                Reason::DumpFailed,
                format!("the save completed but its file could not be read: {e}"),
            )
        })?;
    let sealed = pipeline::store(source, level, upload, progress).await?;
    Ok(Snapshotted {
        sealed,
        key_counts,
        server_version,
    })
}

/// Starts a save and waits until it has ended well.
async fn bgsave(r: &Redis<'_>, conn: &mut MultiplexedConnection) -> Result<(), Failure> {
    let deadline = Instant::now() + SAVE_TIMEOUT;
    let before: i64;
    loop {
        wait_no_save(r, conn, deadline).await?;
        let last: i64 = query(r, conn, redis::cmd("LASTSAVE")).await?;
        match redis::cmd("BGSAVE").query_async::<String>(conn).await {
            Ok(_) => {
                before = last;
                break;
            }
            // Another save (or an AOF rewrite) started between our check and our request.
            Err(e) if busy(&e) => {
                if Instant::now() > deadline {
                    return Err(Failure::new(Reason::DumpFailed, r.masked(&format!(
                        "{}: BGSAVE was refused for {} s because another save or rewrite kept running ({e})",
                        r.what(),
                        SAVE_TIMEOUT.as_secs()
                    ))));
                }
                tokio::time::sleep(POLL).await;
            }
            Err(e) => {
                return Err(Failure::new(
                    Reason::DumpFailed,
                    r.masked(&format!(
                "{}: BGSAVE failed: {e}; check the server's log and that it may write to its dir",
                r.what()
            )),
                ))
            }
        }
    }
    // BGSAVE answers after the fork, so from here on the save shows as in progress until it ends.
    wait_no_save(r, conn, deadline).await?;
    let persistence = info(r, conn, "persistence").await?;
    let status = info_field(&persistence, "rdb_last_bgsave_status").unwrap_or("");
    if status != "ok" {
        return Err(Failure::new(Reason::DumpFailed, format!(
            "{}: the background save failed (rdb_last_bgsave_status:{status}); check the server's log (docker logs) for the reason, often a full disk or a dir it may not write",
            r.what()
        )));
    }
    let after: i64 = query(r, conn, redis::cmd("LASTSAVE")).await?;
    if after < before {
        return Err(Failure::new(Reason::DumpFailed, format!(
            "{}: LASTSAVE went back from {before} to {after} during the save; was the server restarted?",
            r.what()
        )));
    }
    Ok(())
}

fn busy(e: &redis::RedisError) -> bool {
    let text = e.to_string();
    text.contains("in progress") || text.contains("child process")
}

/// Polls until no background save runs.
async fn wait_no_save(
    r: &Redis<'_>,
    conn: &mut MultiplexedConnection,
    deadline: Instant,
) -> Result<(), Failure> {
    loop {
        let p = info(r, conn, "persistence").await?;
        if info_field(&p, "rdb_bgsave_in_progress") != Some("1") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Failure::new(
                Reason::DumpFailed,
                format!(
                    "{}: the background save did not finish within {} s",
                    r.what(),
                    SAVE_TIMEOUT.as_secs()
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Restore test: loads the backup into a throwaway server of the service's image (no network)
/// and compares its keys per database with the manifest. The digest is checked before anything
/// else counts; the scratch container is removed in every case.
pub async fn verify(
    r: &Redis<'_>,
    stored: Box<dyn AsyncRead + Send + Unpin>,
    manifest: &Manifest,
    progress: &AtomicU64,
) -> Result<String, Failure> {
    let name = format!(
        "{}{}",
        scratch_prefix(r),
        chrono::Utc::now().format("%Y%m%dT%H%M%S%3f")
    );
    let cmd: Vec<String> = [
        "redis-server",
        "--dir",
        VERIFY_DIR,
        "--dbfilename",
        VERIFY_FILE,
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .map(str::to_owned)
    .to_vec();
    let id = r
        .engine
        .create_scratch(&r.image, &name, &cmd, None)
        .await
        .map_err(|e| {
            Failure::new(
                Reason::VerificationFailed,
                format!(
                    "restore test of {}: could not create a scratch Redis from {}: {e}",
                    manifest.id, r.image
                ),
            )
        })?;
    let result = verify_in(r, &id, stored, manifest, progress).await;
    let removed = r.engine.remove_container(&id, Some(0)).await;
    match (result, removed) {
        (Ok(_), Err(e)) => Err(Failure::new(
            Reason::VerificationFailed,
            format!(
            "restore test of {} passed, but its scratch container {name} could not be removed: {e}",
            manifest.id
        ),
        )),
        (result, _) => result,
    }
}

async fn verify_in(
    r: &Redis<'_>,
    scratch: &str,
    stored: Box<dyn AsyncRead + Send + Unpin>,
    manifest: &Manifest,
    progress: &AtomicU64,
) -> Result<String, Failure> {
    let what = format!("restore test of {}", manifest.id);
    let failed = |m: String| Failure::new(Reason::VerificationFailed, format!("{what}: {m}"));
    let path = format!("{VERIFY_DIR}/{VERIFY_FILE}");
    let to = Put {
        container: scratch,
        path: &path,
        owner: (0, 0),
        what: &what,
    };
    put_backup(r, &to, stored, manifest, progress)
        .await
        .map_err(|e| e.into_error(failed))?;
    r.engine
        .start_container(scratch)
        .await
        .map_err(|e| failed(format!("the scratch Redis did not start: {e}")))?;
    let deadline = Instant::now() + SAVE_TIMEOUT;
    let cli = |args: &[&str]| {
        std::iter::once("redis-cli")
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    loop {
        let answer = r.engine.exec_capture(scratch, &cli(&["PING"]), 4096).await;
        match answer {
            Ok(o) if o.output.trim() == "PONG" => break,
            _ => {}
        }
        let brief = r
            .engine
            .brief(scratch)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !brief.running {
            let logs = r.engine.logs_tail(scratch, 20).await.unwrap_or_default();
            return Err(failed(format!(
                "the scratch Redis exited ({}) instead of loading the backup; its last output: {}",
                brief.status,
                logs.trim()
            )));
        }
        if Instant::now() > deadline {
            return Err(failed(format!(
                "the scratch Redis did not answer PING within {} s",
                SAVE_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    let keys = r
        .engine
        .exec_capture(scratch, &cli(&["INFO", "keyspace"]), 64 * 1024)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let found = keyspace(&keys.output);
    if found != manifest.key_counts {
        return Err(failed(format!(
            "the backup loads, but holds {} where the manifest records {}",
            counts(&found),
            counts(&manifest.key_counts)
        )));
    }
    Ok(format!(
        "restore test passed: the backup loads into a scratch Redis from {} and holds {}, as recorded",
        r.image,
        counts(&found)
    ))
}

/// Restores a backup into the live server: refuses when `appendonly` is on (Redis would load
/// the AOF, not the dump). Stops the container (Redis may write its own dump on the way down),
/// keeps the current dump as `DBFILENAME.before-restore-YYYYMMDDTHHMMSS` beside it, puts the
/// backup in its place, starts the container, waits for PING and compares key counts. The
/// backup is copied into the container (and its digest checked) before the container is
/// stopped, so a damaged backup never costs the live data. The caller keeps anything else from
/// restarting the container meanwhile. Returns a message naming the kept file.
pub async fn restore(
    r: &Redis<'_>,
    stored: Box<dyn AsyncRead + Send + Unpin>,
    manifest: &Manifest,
    progress: &AtomicU64,
) -> Result<String, Failure> {
    let what = format!(
        "restore of {} into container {}",
        manifest.id,
        short_id(&r.container)
    );
    let failed = |m: String| Failure::new(Reason::RestoreFailed, format!("{what}: {m}"));
    let Files {
        dir,
        dump,
        staged,
        kept,
    } = Files::of(r, &failed).await?;
    // Owner of what is written: that of the current dump, else of the directory.
    let (uid, gid) = match r.engine.open_file(&r.container, &dump).await {
        Ok((stat, _)) => (stat.uid, stat.gid),
        Err(_) => dir_owner(r, &dir).await,
    };

    // 1. The backup goes in beside the dump while Redis runs; a damaged one stops here.
    let to = Put {
        container: &r.container,
        path: &staged,
        owner: (uid, gid),
        what: &what,
    };
    if let Err(e) = put_backup(r, &to, stored, manifest, progress).await {
        remove_staged(r, &staged).await;
        return Err(e.into_error(failed));
    }

    // 2. Stop, keep the current dump, put the backup in its place.
    r.engine
        .stop_container(&r.container, Some(STOP_GRACE_S))
        .await
        .map_err(|e| failed(format!("stopping Redis failed: {e}")))?;
    let had_dump = swap_in(r, &dump, &staged, &kept).await.map_err(failed)?;

    // 3. Start and check.
    r.engine
        .start_container(&r.container)
        .await
        .map_err(|e| failed(format!("starting Redis again failed: {e}")))?;
    let keep_note = if had_dump {
        format!("the previous dump is kept as {kept}")
    } else {
        format!("there was no previous dump at {dump} to keep")
    };
    let found = match wait_ready(r).await {
        Ok(found) => found,
        Err(m) => return Err(failed(format!("{m}; {keep_note}"))),
    };
    remove_staged(r, &staged).await;
    if found != manifest.key_counts {
        return Err(failed(format!(
            "Redis runs with the restored dump but holds {} where the manifest records {}; {keep_note}",
            counts(&found),
            counts(&manifest.key_counts)
        )));
    }
    Ok(format!(
        "restored {} into {dump} of container {} ({}); {keep_note}",
        manifest.id,
        short_id(&r.container),
        counts(&found)
    ))
}

/// The files a restore touches in the server's data directory.
struct Files {
    dir: String,
    /// The dump Redis loads at startup.
    dump: String,
    /// The backup, put in beside it while Redis still runs.
    staged: String,
    /// Where the current dump is kept.
    kept: String,
}

impl Files {
    /// Reads where the dump lives; refuses when `appendonly` is on (Redis would load the AOF,
    /// not the dump).
    async fn of(
        r: &Redis<'_>,
        failed: &(dyn Fn(String) -> Failure + Sync),
    ) -> Result<Self, Failure> {
        let mut conn = connect(r).await?;
        let aof = config_get(r, &mut conn, "appendonly").await?;
        if aof == "yes" {
            return Err(failed(
                "appendonly is on, so at startup Redis would load its AOF and ignore the restored dump; turn appendonly off in the service's configuration (and with CONFIG SET appendonly no) and restore again".into(),
            ));
        }
        let dir = config_get(r, &mut conn, "dir").await?;
        let file = config_get(r, &mut conn, "dbfilename").await?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
        Ok(Self {
            dump: format!("{dir}/{file}"),
            staged: format!("{dir}/.{file}.stackwarden-restore"),
            kept: format!("{dir}/{file}.before-restore-{stamp}"),
            dir,
        })
    }
}

/// With Redis stopped: keeps the current dump as `kept` and puts `staged` in its place; on a
/// failure puts the previous dump back and starts Redis again. Whether there was a dump.
async fn swap_in(r: &Redis<'_>, dump: &str, staged: &str, kept: &str) -> Result<bool, String> {
    let had_dump = match copy_within(r, dump, kept).await {
        Ok(had) => had,
        Err(e) => {
            let started = restart_note(r).await;
            return Err(format!(
                "keeping the current dump as {kept} failed ({e}); nothing was replaced, {started}"
            ));
        }
    };
    if let Err(e) = copy_within(r, staged, dump).await {
        let back = if had_dump {
            match copy_within(r, kept, dump).await {
                Ok(_) => "the previous dump was put back".to_owned(),
                Err(e2) => format!(
                    "putting the previous dump back failed too ({e2}): copy {kept} to {dump} by hand"
                ),
            }
        } else {
            "there was no previous dump".to_owned()
        };
        let started = restart_note(r).await;
        return Err(format!(
            "writing the backup as {dump} failed ({e}); {back}, {started}"
        ));
    }
    Ok(had_dump)
}

/// Removes the scratch containers of this service's restore tests left by an operator that was
/// stopped mid-test. Idempotent; call it when no restore test of this service runs.
pub async fn clean_scratch(r: &Redis<'_>) -> Result<(), Failure> {
    let ids = r
        .engine
        .scratch_containers(&scratch_prefix(r))
        .await
        .map_err(|e| Failure::new(Reason::VerificationFailed, e.to_string()))?;
    for id in ids {
        r.engine
            .remove_container(&id, Some(0))
            .await
            .map_err(|e| Failure::new(Reason::VerificationFailed, e.to_string()))?;
    }
    Ok(())
}

/// Name prefix of this service's scratch containers.
fn scratch_prefix(r: &Redis<'_>) -> String {
    format!("stackwarden-scratch-redis-{}-", short_id(&r.container))
}

impl Redis<'_> {
    fn what(&self) -> String {
        format!(
            "Redis at {} (container {})",
            self.addr,
            short_id(&self.container)
        )
    }

    /// The message with the password masked, whatever produced it.
    fn masked(&self, message: &str) -> String {
        match &self.password {
            Some(p) => crate::api::mask(message, &BTreeMap::new(), &[p.as_str()]),
            None => message.to_owned(),
        }
    }

    fn unreachable(&self, what: &str, detail: &dyn std::fmt::Display) -> Failure {
        Failure::new(Reason::DatabaseUnreachable, self.masked(&format!(
            "{}: {what} ({detail}); check that the service runs and that its password variable holds the server's password (requirepass)",
            self.what()
        )))
    }
}

/// Connects (and authenticates) to the service, after checking its container runs.
async fn connect(r: &Redis<'_>) -> Result<MultiplexedConnection, Failure> {
    let brief = r
        .engine
        .brief(&r.container)
        .await
        .map_err(|e| r.unreachable("its container could not be inspected", &e))?;
    if !brief.running {
        return Err(r.unreachable(
            "the container is not running",
            &format!("state {}", brief.status),
        ));
    }
    connect_at(r.addr, r.password.as_deref())
        .await
        .map_err(|e| r.unreachable("connecting or authenticating failed", &e))
}

async fn connect_at(
    addr: SocketAddr,
    password: Option<&str>,
) -> Result<MultiplexedConnection, crate::act::redis::Error> {
    crate::act::redis::connect(&crate::act::redis::Login {
        addr,
        password,
        connect_timeout: Some(Duration::from_secs(10)),
        response_timeout: Some(Duration::from_secs(60)),
    })
    .await
}

async fn query<T: redis::FromRedisValue>(
    r: &Redis<'_>,
    conn: &mut MultiplexedConnection,
    cmd: redis::Cmd,
) -> Result<T, Failure> {
    cmd.query_async(conn)
        .await
        .map_err(|e| r.unreachable("a command failed", &e))
}

async fn info(
    r: &Redis<'_>,
    conn: &mut MultiplexedConnection,
    section: &str,
) -> Result<String, Failure> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg(section);
    query(r, conn, cmd).await
}

async fn config_get(
    r: &Redis<'_>,
    conn: &mut MultiplexedConnection,
    name: &str,
) -> Result<String, Failure> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg(name);
    let pair: Vec<String> = cmd.query_async(conn).await.map_err(|e| {
        Failure::new(Reason::DumpFailed, r.masked(&format!(
            "{}: CONFIG GET {name} failed ({e}); the backup needs CONFIG (is it renamed or forbidden by an ACL?)",
            r.what()
        )))
    })?;
    pair.into_iter().nth(1).ok_or_else(|| {
        Failure::new(
            Reason::DumpFailed,
            format!("{}: CONFIG GET {name} answered nothing", r.what()),
        )
    })
}

async fn dump_path(r: &Redis<'_>, conn: &mut MultiplexedConnection) -> Result<String, Failure> {
    let dir = config_get(r, conn, "dir").await?;
    let file = config_get(r, conn, "dbfilename").await?;
    Ok(format!("{}/{file}", dir.trim_end_matches('/')))
}

/// `field:value` of an INFO answer.
fn info_field<'t>(info: &'t str, field: &str) -> Option<&'t str> {
    info.lines().find_map(|l| {
        l.trim_end()
            .strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
    })
}

/// Keys per database from `INFO keyspace` (`db3:keys=50,expires=0,avg_ttl=0`).
fn keyspace(info: &str) -> BTreeMap<u32, u64> {
    info.lines()
        .filter_map(|l| {
            let (db, rest) = l.trim().strip_prefix("db")?.split_once(':')?;
            let keys = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("keys="))?
                .parse()
                .ok()?;
            Some((db.parse().ok()?, keys))
        })
        .collect()
}

fn counts(c: &BTreeMap<u32, u64>) -> String {
    if c.is_empty() {
        return "no keys".into();
    }
    c.iter()
        .map(|(db, n)| format!("db{db}: {n} keys"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why putting a backup into a container failed, before it is worded for the caller.
enum PutError {
    /// Checksum, decompression or size: the backup itself is bad.
    Damaged(Failure),
    /// Reading the stored object failed.
    Destination(Failure),
    /// Docker refused or failed.
    Engine(String),
}

impl PutError {
    fn into_error(self, other: impl FnOnce(String) -> Failure) -> Failure {
        match self {
            PutError::Damaged(e) | PutError::Destination(e) => e,
            PutError::Engine(m) => other(m),
        }
    }
}

/// Where [`put_backup`] writes, and what its messages call the job.
struct Put<'a> {
    container: &'a str,
    path: &'a str,
    /// uid and gid of the file written.
    owner: (u64, u64),
    what: &'a str,
}

/// Decompresses `stored` into the file `to` names (mode 0644), then checks the digest. The
/// length written is the manifest's `raw_size`.
async fn put_backup(
    r: &Redis<'_>,
    to: &Put<'_>,
    stored: Box<dyn AsyncRead + Send + Unpin>,
    manifest: &Manifest,
    progress: &AtomicU64,
) -> Result<(), PutError> {
    let what = to.what;
    let source = Tally::new(stored);
    let (source_read, source_err) = (source.count(), source.error());
    let (decoded, digest) = pipeline::restored(Box::new(source));
    let decoded = Tally::new(decoded);
    let (decoded_count, decoded_err) = (decoded.count(), decoded.error());
    let stat = FileStat {
        size: manifest.raw_size,
        uid: to.owner.0,
        gid: to.owner.1,
        mode: 0o644,
    };
    let upload = r
        .engine
        .upload_file(to.container, to.path, Box::new(decoded), stat);
    tokio::pin!(upload);
    let result = loop {
        tokio::select! {
            res = &mut upload => break res,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                progress.store(source_read.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    };
    progress.store(source_read.load(Ordering::Relaxed), Ordering::Relaxed);
    if let Some(e) = source_err.get() {
        return Err(PutError::Destination(Failure::new(
            Reason::DestinationUnreachable,
            format!("{what}: reading the stored backup failed: {e}"),
        )));
    }
    // The digest decides first: whatever else went wrong, damaged bytes are the reason.
    if digest.get().is_some() {
        digest
            .check(&manifest.sha256, what)
            .map_err(PutError::Damaged)?;
    }
    if let Some(e) = decoded_err.get() {
        return Err(PutError::Damaged(Failure::new(
            Reason::ChecksumMismatch,
            format!(
            "{what}: the stored backup does not decompress ({e}); it is damaged, use an older one"
        ),
        )));
    }
    let written = decoded_count.load(Ordering::Relaxed);
    if written != manifest.raw_size && (result.is_err() || written > manifest.raw_size) {
        let damage = format!(
            "{what}: the backup decompresses to {} {written} bytes but the manifest records {}",
            if written > manifest.raw_size {
                "more than"
            } else {
                "only"
            },
            manifest.raw_size
        );
        return Err(PutError::Damaged(if digest.get().is_none() {
            Failure::new(
                Reason::ChecksumMismatch,
                format!("{damage}; it is damaged, use an older one"),
            )
        } else {
            Failure::new(
                Reason::ChecksumMismatch,
                format!("{damage}, although its checksum matches: the manifest is wrong"),
            )
        }));
    }
    result.map_err(|e: EngineError| PutError::Engine(e.to_string()))?;
    // Everything was written: now the digest must be known and right.
    digest
        .check(&manifest.sha256, what)
        .map_err(PutError::Damaged)
}

/// Copies a file within the container (which may be stopped). `Ok(false)`: there was none.
async fn copy_within(r: &Redis<'_>, from: &str, to: &str) -> Result<bool, EngineError> {
    let (stat, data) = match r.engine.open_file(&r.container, from).await {
        Ok(x) => x,
        Err(e) if e.is_missing() => return Ok(false),
        Err(e) => return Err(e),
    };
    r.engine.upload_file(&r.container, to, data, stat).await?;
    Ok(true)
}

/// Owner of the data directory, for a restore into a server that never saved.
async fn dir_owner(r: &Redis<'_>, dir: &str) -> (u64, u64) {
    let cmd = ["stat", "-c", "%u %g", dir].map(str::to_owned);
    if let Ok(o) = r.engine.exec_capture(&r.container, &cmd, 256).await {
        let mut parts = o.output.split_whitespace().map(str::parse::<u64>);
        if let (Some(Ok(u)), Some(Ok(g))) = (parts.next(), parts.next()) {
            if o.exit_code == 0 {
                return (u, g);
            }
        }
    }
    (0, 0)
}

/// Best effort: the staged copy is only a leftover once the restore ended either way.
async fn remove_staged(r: &Redis<'_>, staged: &str) {
    let cmd = ["rm", "-f", staged].map(str::to_owned);
    let _ = r.engine.exec_capture(&r.container, &cmd, 256).await;
}

/// Starts the container again after a failed restore; says how that went.
async fn restart_note(r: &Redis<'_>) -> String {
    match r.engine.start_container(&r.container).await {
        Ok(()) => "and Redis was started again".into(),
        Err(e) => format!("and starting Redis again failed too ({e})"),
    }
}

/// Waits until the restarted server answers PING (its address may have changed), then reads
/// its key counts.
async fn wait_ready(r: &Redis<'_>) -> Result<BTreeMap<u32, u64>, String> {
    let deadline = Instant::now() + SAVE_TIMEOUT;
    loop {
        let brief = r
            .engine
            .brief(&r.container)
            .await
            .map_err(|e| e.to_string())?;
        if !brief.running {
            let logs = r
                .engine
                .logs_tail(&r.container, 20)
                .await
                .unwrap_or_default();
            return Err(r.masked(&format!(
                "Redis exited ({}) after the restore instead of loading the dump; its last output: {}",
                brief.status,
                logs.trim()
            )));
        }
        let addr = if brief.addresses.contains(&r.addr.ip()) || brief.addresses.is_empty() {
            r.addr
        } else {
            SocketAddr::new(brief.addresses[0], r.addr.port())
        };
        let last = match connect_at(addr, r.password.as_deref()).await {
            Ok(mut conn) => {
                let pong = redis::cmd("PING").query_async::<String>(&mut conn).await;
                match pong {
                    Ok(p) if p == "PONG" => {
                        let info: String = redis::cmd("INFO")
                            .arg("keyspace")
                            .query_async(&mut conn)
                            .await
                            .map_err(|e| r.masked(&format!("INFO keyspace failed: {e}")))?;
                        return Ok(keyspace(&info));
                    }
                    Ok(p) => format!("PING answered {p}"),
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(r.masked(&format!(
                "Redis did not answer PING within {} s after the restore ({last})",
                SAVE_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_parses_every_database() {
        let info = "# Keyspace\r\ndb0:keys=10000,expires=0,avg_ttl=0\r\ndb3:keys=50,expires=2,avg_ttl=100\r\n";
        assert_eq!(keyspace(info), BTreeMap::from([(0, 10000), (3, 50)]));
        assert!(keyspace("# Keyspace\r\n").is_empty());
    }

    #[test]
    fn info_fields_are_found_by_exact_name() {
        let info = "# Persistence\r\nrdb_bgsave_in_progress:0\r\nrdb_last_bgsave_status:ok\r\n";
        assert_eq!(info_field(info, "rdb_bgsave_in_progress"), Some("0"));
        assert_eq!(info_field(info, "rdb_last_bgsave_status"), Some("ok"));
        assert_eq!(info_field(info, "rdb_last_bgsave"), None);
    }
}
