//! PostgreSQL backups, restore tests and restores, run with the server's own `pg_dump` and
//! `pg_restore` inside its container (the exec needs no network and always matches the
//! server's version), their bytes streamed through [`pipeline`](super::pipeline).
//!
//! The operator also logs in over TCP ([`crate::act::postgres`], as the probe does) for what
//! is not a dump: the snapshot the dump is taken from, the row counts in that snapshot, and
//! creating, dropping and renaming databases.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::destination::Upload;
use super::pipeline::{self, Sealed};
use super::Manifest;
use crate::act::chain;
use crate::act::reading::{FirstError, Tally};
use crate::api::{Failure, Reason};
use crate::docker::{short_id, Engine, EngineError};

/// Scratch databases of restore tests are named `stackwarden_verify_PID_MICROS`.
const SCRATCH_PREFIX: &str = "stackwarden_verify_";
/// A restore loads into `DB_restore` before it swaps the names.
const RESTORE_SUFFIX: &str = "_restore";
/// PostgreSQL truncates longer identifiers; names made here must stay within it.
const MAX_IDENT: usize = 63;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// The database of one backup target and how to reach it.
pub struct Postgres<'a> {
    pub engine: &'a dyn Engine,
    /// Container id of the database service.
    pub container: String,
    /// Where the operator reaches the server over TCP.
    pub addr: std::net::SocketAddr,
    pub database: String,
    pub user: String,
    pub password: Option<String>,
}

/// What a backup produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dumped {
    pub sealed: Sealed,
    /// Rows per table (`schema.table`) in the snapshot the dump was taken from.
    pub row_counts: BTreeMap<String, u64>,
    pub server_version: String,
}

/// Takes a backup into `upload`: commits it on success, aborts it on any failure, so nothing
/// partial is ever visible.
pub async fn backup(
    pg: &Postgres<'_>,
    mut upload: Box<dyn Upload>,
    level: i32,
    progress: &AtomicU64,
) -> Result<Dumped, Failure> {
    let dumped = dump(pg, &mut *upload, level, progress).await;
    pipeline::settle(upload, dumped)
        .await
        .map_err(|e| pg.masked(e))
}

/// Restore test: restores `stored` (a compressed backup as stored) into a scratch database,
/// checks its sha256 against the manifest, compares the row counts of every table with the
/// manifest's and drops the scratch database in every case. Returns a summary.
pub async fn verify(
    pg: &Postgres<'_>,
    stored: Reader,
    manifest: &Manifest,
    progress: &AtomicU64,
) -> Result<String, Failure> {
    verify_inner(pg, stored, manifest, progress)
        .await
        .map_err(|e| pg.masked(e))
}

/// Restores into the live database without ever losing it: loads `DB_restore` (dropping a
/// leftover of an interrupted attempt first), checks it as [`verify`] does, and only then swaps
/// the names in one transaction: `DB` becomes `DB_before_restore_YYYYMMDDTHHMMSS` (kept; the
/// message names it) and `DB_restore` becomes `DB`. Until the swap the live database is
/// untouched; on any failure before it the scratch one is dropped. The caller has stopped the
/// services using the database; any other connection to it is terminated.
pub async fn restore(
    pg: &Postgres<'_>,
    stored: Reader,
    manifest: &Manifest,
    progress: &AtomicU64,
) -> Result<String, Failure> {
    restore_inner(pg, stored, manifest, progress)
        .await
        .map_err(|e| pg.masked(e))
}

/// Drops the scratch databases (`stackwarden_verify_*`) and the `DB_restore` database an
/// operator killed mid-verify or mid-restore left behind. Idempotent. Not to be called while a
/// verify or restore of the same server is running.
pub async fn clean_scratch(pg: &Postgres<'_>) -> Result<(), Failure> {
    async {
        let admin = pg.maintenance(None).await?;
        let rows = admin
            .query(
                "SELECT datname::text FROM pg_database WHERE datname LIKE $1 OR datname = $2",
                &[
                    &format!("{}%", SCRATCH_PREFIX.replace('_', "\\_")),
                    &restore_name(&pg.database),
                ],
            )
            .await
            .map_err(|e| pg.unreachable_or("listing scratch databases", e))?;
        for row in rows {
            let name: String = row.get(0);
            drop_db(&admin, &name).await.map_err(|e| {
                Failure::new(
                    Reason::DatabaseUnreachable,
                    format!(
                        "dropping the leftover scratch database {name}: {}",
                        chain(&e)
                    ),
                )
            })?;
            tracing::info!(database = %name, "dropped a leftover scratch database");
        }
        Ok(())
    }
    .await
    .map_err(|e| pg.masked(e))
}

async fn dump(
    pg: &Postgres<'_>,
    upload: &mut dyn Upload,
    level: i32,
    progress: &AtomicU64,
) -> Result<Dumped, Failure> {
    let db = &pg.database;
    let client = pg.connect(db).await?;
    let failed = |what: &str, e: tokio_postgres::Error| {
        Failure::new(
            Reason::DumpFailed,
            format!("backup of database {db}: {what} failed: {}", chain(&e)),
        )
    };
    let snapshot = Snapshot::take(&client)
        .await
        .map_err(|(what, e)| failed(what, e))?;
    // -Fc: the custom format pg_restore reads from a pipe. -Z0: uncompressed, because the
    // pipeline compresses with zstd; compressing twice costs CPU and gains nothing (zstd cannot
    // shrink what gzip already packed).
    let command: Vec<String> = [
        "pg_dump",
        "-Fc",
        "-Z0",
        "--no-password",
        "--snapshot",
        &snapshot.id,
        "-U",
        &pg.user,
        "-d",
        db,
    ]
    .map(String::from)
    .to_vec();
    let exec = pg
        .engine
        .exec_stream(&pg.container, &command, &pg.env(), None)
        .await
        .map_err(|e| pg.exec_unreachable(e))?;
    let (stored, counts) = tokio::join!(
        pipeline::store(exec.stdout, level, upload, progress),
        count_rows(&client, &snapshot.tables),
    );
    // Dropping `exec.done` on the way out closes the connection, which ends pg_dump.
    let sealed = stored?;
    dump_ended(pg, exec.done.wait().await, &sealed)?;
    let row_counts = counts.map_err(|e| failed("counting rows", e))?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| failed("ending the snapshot transaction", e))?;
    Ok(Dumped {
        sealed,
        row_counts,
        server_version: snapshot.server_version,
    })
}

/// The snapshot a dump is taken from, exported by a transaction left open until the dump ends.
struct Snapshot {
    server_version: String,
    id: String,
    tables: Vec<(String, String)>,
}

impl Snapshot {
    /// The dump and the row counts see the same snapshot: this transaction exports it, pg_dump
    /// imports it. The error names the step that failed.
    async fn take(client: &Client) -> Result<Self, (&'static str, tokio_postgres::Error)> {
        let server_version: String = client
            .query_one("SHOW server_version", &[])
            .await
            .map_err(|e| ("SHOW server_version", e))?
            .get(0);
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(|e| ("starting the snapshot transaction", e))?;
        let id: String = client
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(|e| ("exporting the snapshot", e))?
            .get(0);
        let tables = list_tables(client)
            .await
            .map_err(|e| ("listing the tables", e))?;
        Ok(Self {
            server_version,
            id,
            tables,
        })
    }
}

/// Whether pg_dump's exit (and what it wrote) makes the dump good.
fn dump_ended(
    pg: &Postgres<'_>,
    exited: crate::docker::Exited,
    sealed: &pipeline::Sealed,
) -> Result<(), Failure> {
    let db = &pg.database;
    let (code, stderr) = exited.map_err(|e| {
        Failure::new(
            Reason::DumpFailed,
            format!("backup of database {db}: {e}; check that the database service is running"),
        )
    })?;
    if code != 0 {
        let hint = if code == 137 || code == 143 || code < 0 {
            " (it was killed: was the container stopped or restarted during the backup?)"
        } else {
            ""
        };
        return Err(Failure::new(
            Reason::DumpFailed,
            format!(
                "pg_dump of database {db} in container {} exited with code {code}{hint}: {}",
                short_id(&pg.container),
                tail(&stderr)
            ),
        ));
    }
    if sealed.raw_size == 0 {
        return Err(Failure::new(
            Reason::DumpFailed,
            format!(
                "pg_dump of database {db} exited cleanly but wrote nothing: {}",
                tail(&stderr)
            ),
        ));
    }
    Ok(())
}

async fn verify_inner(
    pg: &Postgres<'_>,
    stored: Reader,
    manifest: &Manifest,
    progress: &AtomicU64,
) -> Result<String, Failure> {
    let admin = pg.maintenance(None).await?;
    let scratch = format!(
        "{SCRATCH_PREFIX}{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    let result = async {
        create_db(&admin, &scratch, &pg.database)
            .await
            .map_err(|e| {
                Failure::new(Reason::VerificationFailed, format!(
                    "creating the scratch database {scratch} failed: {}; the user {} needs the CREATEDB privilege",
                    chain(&e),
                    pg.user
                ))
            })?;
        load(
            pg,
            &scratch,
            stored,
            manifest,
            progress,
            Reason::VerificationFailed,
        )
        .await
    }
    .await;
    let dropped = drop_db(&admin, &scratch).await;
    let summary = result?;
    Ok(match dropped {
        Ok(()) => summary,
        Err(e) => format!(
            "{summary} (dropping the scratch database {scratch} failed: {}; it is dropped at the next start)",
            chain(&e)
        ),
    })
}

async fn restore_inner(
    pg: &Postgres<'_>,
    stored: Reader,
    manifest: &Manifest,
    progress: &AtomicU64,
) -> Result<String, Failure> {
    let db = &pg.database;
    let loading = restore_name(db);
    let admin = pg.maintenance(Some(db)).await?;
    let failed = |what: String, e: tokio_postgres::Error| {
        Failure::new(
            Reason::RestoreFailed,
            format!(
                "restore of database {db}: {what} failed: {}; the database {db} is unchanged",
                chain(&e)
            ),
        )
    };
    drop_db(&admin, &loading)
        .await
        .map_err(|e| failed(format!("dropping the leftover database {loading}"), e))?;
    let result = async {
        create_db(&admin, &loading, db)
            .await
            .map_err(|e| failed(format!("creating the database {loading}"), e))?;
        let summary = load(
            pg,
            &loading,
            stored,
            manifest,
            progress,
            Reason::RestoreFailed,
        )
        .await?;
        let kept = swap(&admin, db, &loading)
            .await
            .map_err(|e| failed(format!("renaming {loading} to {db}"), e))?;
        Ok((summary, kept))
    }
    .await;
    let (summary, kept) = match result {
        Ok(done) => done,
        Err(e) => {
            if let Err(d) = drop_db(&admin, &loading).await {
                tracing::warn!(database = %loading, "dropping the database of a failed restore failed: {}", chain(&d));
            }
            return Err(e);
        }
    };
    Ok(match kept {
        Some(old) => format!(
            "restored backup {} into database {db} ({summary}); the previous database was kept as {old}: drop it (DROP DATABASE \"{old}\") once the restore is confirmed",
            manifest.id
        ),
        None => format!(
            "restored backup {} into database {db} ({summary}); there was no database {db} before",
            manifest.id
        ),
    })
}

/// Renames `db` out of the way and `loading` to `db` in one transaction; returns the name the
/// old database was kept under (none when there was no `db`).
async fn swap(
    admin: &Client,
    db: &str,
    loading: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    let exists = |name: String| async move {
        admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .map(|r| r.is_some())
    };
    let live = exists(db.to_owned()).await?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S").to_string();
    let mut kept = None;
    if live {
        for n in 0.. {
            let suffix = match n {
                0 => format!("_before_restore_{stamp}"),
                n => format!("_before_restore_{stamp}_{n}"),
            };
            let name = format!("{}{suffix}", truncate(db, MAX_IDENT - suffix.len()));
            if !exists(name.clone()).await? {
                kept = Some(name);
                break;
            }
        }
    }
    let statement = match &kept {
        Some(old) => format!(
            "BEGIN; ALTER DATABASE {} RENAME TO {}; ALTER DATABASE {} RENAME TO {}; COMMIT",
            ident(db),
            ident(old),
            ident(loading),
            ident(db)
        ),
        None => format!("ALTER DATABASE {} RENAME TO {}", ident(loading), ident(db)),
    };
    // A client reconnecting between the termination and the rename makes it fail with
    // "being accessed by other users"; the caller stopped the services, so a retry settles it.
    let mut attempt = 0;
    loop {
        terminate(admin, db).await?;
        terminate(admin, loading).await?;
        match admin.batch_execute(&statement).await {
            Ok(()) => return Ok(kept),
            Err(e) => {
                let _ = admin.batch_execute("ROLLBACK").await;
                attempt += 1;
                if attempt < 5 && e.code() == Some(&SqlState::OBJECT_IN_USE) {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
                return Err(e);
            }
        }
    }
}

/// Feeds the stored backup to `pg_restore` into `database` and checks the result: checksum
/// first (damage wins over every other failure), then pg_restore's exit, then the row counts.
async fn load(
    pg: &Postgres<'_>,
    database: &str,
    stored: Reader,
    manifest: &Manifest,
    progress: &AtomicU64,
    fail: Reason,
) -> Result<String, Failure> {
    let fed = feed(pg, database, stored, progress).await?;
    fed.intact(manifest, database, fail)?;
    let client = pg.connect(database).await?;
    let counted = async {
        let tables = list_tables(&client).await?;
        count_rows(&client, &tables).await
    }
    .await
    .map_err(|e| {
        Failure::new(
            fail,
            format!("counting the rows restored into {database}: {}", chain(&e)),
        )
    })?;
    drop(client);
    let differences = compare(&manifest.row_counts, &counted);
    if !differences.is_empty() {
        return Err(Failure::new(
            fail,
            format!(
            "backup {} restored, but its row counts differ from those recorded at backup time: {}",
            manifest.id,
            differences.join("; ")
        ),
        ));
    }
    let rows: u64 = counted.values().sum();
    Ok(format!(
        "restored {} tables, {rows} rows; counts match",
        counted.len()
    ))
}

/// What feeding a stored backup to pg_restore came to.
struct Fed {
    exited: crate::docker::Exited,
    digest: pipeline::Digest256,
    /// Reading the stored object failed.
    source_error: FirstError,
    /// Decompressing it failed.
    decode_error: FirstError,
}

/// Runs pg_restore into `database` with the decompressed backup on its stdin, and reads what
/// it left of the stream so the checksum is known.
async fn feed(
    pg: &Postgres<'_>,
    database: &str,
    stored: Reader,
    progress: &AtomicU64,
) -> Result<Fed, Failure> {
    let source = Tally::new(stored);
    let source_error = source.error();
    let (decoded, digest) = pipeline::restored(Box::new(source));
    let decoded = Tally::new(decoded);
    let (fed, decode_error) = (decoded.count(), decoded.error());
    let feed = Handoff(Arc::new(Mutex::new(Some(Box::new(decoded)))));
    let command: Vec<String> = [
        "pg_restore",
        "--no-owner",
        "--exit-on-error",
        "--no-password",
        "-U",
        &pg.user,
        "-d",
        database,
    ]
    .map(String::from)
    .to_vec();
    let exec = pg
        .engine
        .exec_stream(
            &pg.container,
            &command,
            &pg.env(),
            Some(Box::new(feed.clone())),
        )
        .await
        .map_err(|e| pg.exec_unreachable(e))?;
    drop(exec.stdout);
    let wait = exec.done.wait();
    tokio::pin!(wait);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let exited = loop {
        tokio::select! {
            r = &mut wait => break r,
            _ = tick.tick() => progress.store(fed.load(Ordering::Relaxed), Ordering::Relaxed),
        }
    };
    progress.store(fed.load(Ordering::Relaxed), Ordering::Relaxed);
    // pg_restore may have stopped reading early (it failed, or needed no more): read the rest
    // so the checksum is known, and damage is reported as damage.
    if digest.get().is_none() {
        if let Some(mut rest) = feed.take() {
            let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
        }
    }
    Ok(Fed {
        exited,
        digest,
        source_error,
        decode_error,
    })
}

impl Fed {
    /// Whether the backup went in whole and undamaged: a failed read, a wrong checksum or a
    /// stream that does not decompress come before pg_restore's own exit.
    fn intact(self, manifest: &Manifest, database: &str, fail: Reason) -> Result<(), Failure> {
        if let Some(e) = self.source_error.get() {
            return Err(Failure::new(
                Reason::DestinationUnreachable,
                format!(
                    "reading backup {} from the destination failed: {e}",
                    manifest.id
                ),
            ));
        }
        if self.digest.get().is_some_and(|d| d != manifest.sha256) {
            return self.digest.check(&manifest.sha256, &manifest.id);
        }
        if let Some(e) = self.decode_error.get() {
            return Err(Failure::new(Reason::ChecksumMismatch, format!(
                "backup {}: the stored object does not decompress ({e}); the backup is damaged, use an older one",
                manifest.id
            )));
        }
        let (code, stderr) = self.exited.map_err(|e| {
            Failure::new(fail, format!("pg_restore of backup {}: {e}", manifest.id))
        })?;
        if code != 0 {
            return Err(Failure::new(
                fail,
                format!(
                    "pg_restore of backup {} into database {database} exited with code {code}: {}",
                    manifest.id,
                    tail(&stderr)
                ),
            ));
        }
        self.digest.check(&manifest.sha256, &manifest.id)
    }
}

/// Tables whose counts differ, as `schema.table: backup N, restored M`.
fn compare(expected: &BTreeMap<String, u64>, actual: &BTreeMap<String, u64>) -> Vec<String> {
    let mut out = Vec::new();
    for (table, want) in expected {
        match actual.get(table) {
            Some(got) if got == want => {}
            Some(got) => out.push(format!("{table}: backup {want}, restored {got}")),
            None => out.push(format!("{table}: backup {want}, missing after restore")),
        }
    }
    for (table, got) in actual {
        if !expected.contains_key(table) {
            out.push(format!("{table}: not in the backup, restored {got}"));
        }
    }
    out
}

/// Ordinary tables outside the system schemas, except those of extensions (which pg_dump does
/// not dump): `(schema.table, quoted name)`.
async fn list_tables(client: &Client) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, format('%I.%I', n.nspname, c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r'
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname !~ '^pg_(toast|temp_)'
               AND NOT EXISTS (SELECT 1 FROM pg_depend d
                               WHERE d.classid = 'pg_class'::regclass
                                 AND d.objid = c.oid AND d.deptype = 'e')
             ORDER BY 1, 2",
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let schema: String = r.get(0);
            let table: String = r.get(1);
            (format!("{schema}.{table}"), r.get(2))
        })
        .collect())
}

async fn count_rows(
    client: &Client,
    tables: &[(String, String)],
) -> Result<BTreeMap<String, u64>, tokio_postgres::Error> {
    let mut counts = BTreeMap::new();
    for (name, quoted) in tables {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {quoted}"), &[])
            .await?
            .get(0);
        counts.insert(name.clone(), n as u64);
    }
    Ok(counts)
}

/// Creates `name` empty (from template0), with the encoding, locale and owner of `like` when
/// that database exists.
async fn create_db(admin: &Client, name: &str, like: &str) -> Result<(), tokio_postgres::Error> {
    let props = admin
        .query_opt(
            "SELECT pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text,
                    pg_get_userbyid(datdba)::text
             FROM pg_database WHERE datname = $1",
            &[&like],
        )
        .await?;
    let mut statement = format!("CREATE DATABASE {} TEMPLATE template0", ident(name));
    if let Some(r) = props {
        let (encoding, collate, ctype, owner): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        statement.push_str(&format!(
            " ENCODING {} LC_COLLATE {} LC_CTYPE {} OWNER {}",
            literal(&encoding),
            literal(&collate),
            literal(&ctype),
            ident(&owner)
        ));
    }
    admin.batch_execute(&statement).await
}

async fn drop_db(admin: &Client, name: &str) -> Result<(), tokio_postgres::Error> {
    terminate(admin, name).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {}", ident(name)))
        .await
}

/// Ends every other session connected to `database`.
async fn terminate(admin: &Client, database: &str) -> Result<(), tokio_postgres::Error> {
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&database],
        )
        .await
        .map(drop)
}

impl Postgres<'_> {
    fn env(&self) -> Vec<String> {
        self.password
            .iter()
            .map(|p| format!("PGPASSWORD={p}"))
            .collect()
    }

    /// The failure with the password masked, whatever produced it.
    fn masked(&self, e: Failure) -> Failure {
        match self.password.as_deref() {
            Some(secret) => Failure::masked(e.reason, &e.message, &BTreeMap::new(), &[secret]),
            None => e,
        }
    }

    fn hint(&self) -> String {
        format!(
            "check that the database service is running and that the password variable holds the password of user {}",
            self.user
        )
    }

    /// A session on `database`, its connection driven by a task that ends with the client.
    async fn connect(&self, database: &str) -> Result<Client, Failure> {
        let login = crate::act::postgres::Login {
            addr: self.addr,
            user: &self.user,
            password: self.password.as_deref(),
            database,
            application: "stackwarden-backup",
            timeout: Some(CONNECT_TIMEOUT),
        };
        crate::act::postgres::connect(&login).await.map_err(|e| {
            Failure::new(
                Reason::DatabaseUnreachable,
                format!(
                    "cannot log in to PostgreSQL as {} to database {database} at {}: {e}; {}",
                    self.user,
                    self.addr,
                    self.hint()
                ),
            )
        })
    }

    /// A session for CREATE/DROP/ALTER DATABASE: on `postgres`, else `template1`, else the
    /// target database itself unless it is `avoid` (a database cannot be renamed from inside).
    async fn maintenance(&self, avoid: Option<&str>) -> Result<Client, Failure> {
        let mut first = None;
        for db in ["postgres", "template1", self.database.as_str()] {
            if Some(db) == avoid {
                continue;
            }
            match self.connect(db).await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.expect("at least one database was tried"))
    }

    fn unreachable_or(&self, what: &str, e: tokio_postgres::Error) -> Failure {
        Failure::new(
            Reason::DatabaseUnreachable,
            format!("{what}: {}; {}", chain(&e), self.hint()),
        )
    }

    /// The exec could not start: the container is not running, or the engine is unreachable.
    fn exec_unreachable(&self, e: EngineError) -> Failure {
        Failure::new(Reason::DatabaseUnreachable, format!("{e}; {}", self.hint()))
    }
}

/// `DB_restore`, shortened so it stays one identifier.
fn restore_name(db: &str) -> String {
    format!(
        "{}{RESTORE_SUFFIX}",
        truncate(db, MAX_IDENT - RESTORE_SUFFIX.len())
    )
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The last lines of a command's stderr, trimmed for a message.
fn tail(stderr: &str) -> String {
    let t = stderr.trim();
    if t.is_empty() {
        return "(no error output)".into();
    }
    let start = t.len().saturating_sub(1000);
    let start = (start..t.len())
        .find(|&i| t.is_char_boundary(i))
        .unwrap_or(0);
    t[start..].replace('\n', " | ")
}

/// A reader lent to the stdin copy and taken back afterwards, to read what it left.
#[derive(Clone)]
struct Handoff(Arc<Mutex<Option<Reader>>>);

impl Handoff {
    fn take(&self) -> Option<Reader> {
        self.0.lock().expect("handoff lock").take()
    }
}

impl AsyncRead for Handoff {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.0.lock().expect("handoff lock").as_mut() {
            Some(r) => Pin::new(r).poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_identifiers() {
        let long = "d".repeat(70);
        assert_eq!(restore_name("app"), "app_restore");
        assert_eq!(restore_name(&long).len(), MAX_IDENT);
        assert_eq!(ident("Mixed \"q\""), "\"Mixed \"\"q\"\"\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(truncate("ééé", 3), "é");
    }

    #[test]
    fn compare_names_each_difference() {
        let want = BTreeMap::from([("public.a".to_owned(), 3), ("public.b".to_owned(), 0)]);
        let got = BTreeMap::from([("public.a".to_owned(), 2), ("public.c".to_owned(), 1)]);
        let d = compare(&want, &got);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(compare(&want, &want).is_empty());
    }
}
