//! `stackwarden backup`, `verify`, `restore` and `backups`: requests to the running local operator, the
//! way `kubectl annotate` asks the controller in a cluster, then watching status for the answer.
//! The operator does the work, so a backup from the command line follows the same path (and
//! the same one-job-per-target rule) as a scheduled one.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::Utc;

use crate::api::{condition, BackupTargetStatus, ConditionStatus, ConditionType, Job};
use crate::backup::destination::DestinationError;
use crate::backup::runner::{catalog, DestinationConfig};
use crate::backup::Manifest;
use crate::decide::backup::plan::{BACKUP_REQUEST, RESTORE_REQUEST, VERIFY_REQUEST};
use crate::store::local::{LocalStore, Record};

const POLL: Duration = Duration::from_millis(500);

/// The stack named `name` or `namespace/name`.
pub fn find(store: &LocalStore, name: &str) -> anyhow::Result<Record> {
    let records = store.list()?;
    let mut found = records
        .into_iter()
        .filter(|r| r.name == name || format!("{}/{}", r.namespace, r.name) == name);
    let first = found
        .next()
        .with_context(|| format!("no stack named {name}; `stackwarden status` lists them"))?;
    if found.next().is_some() {
        bail!("several stacks are named {name}; give it as namespace/name");
    }
    Ok(first)
}

fn require_operator(store: &LocalStore) -> anyhow::Result<()> {
    if !store.operator_running() {
        bail!("no `stackwarden local` runs on this state directory; start it (it does the work), then ask again");
    }
    Ok(())
}

fn target_status(
    store: &LocalStore,
    r: &Record,
    target: &str,
) -> anyhow::Result<BackupTargetStatus> {
    let now = store
        .load(&r.namespace, &r.name)?
        .with_context(|| format!("stack {}/{} was deleted", r.namespace, r.name))?;
    Ok(now.status.backups.get(target).cloned().unwrap_or_default())
}

fn progress(line: &str) {
    eprint!("\r{line:<78}");
    let _ = std::io::stderr().flush();
}

/// Clears the progress line.
fn progress_done() {
    eprint!("\r{:<78}\r", "");
    let _ = std::io::stderr().flush();
}

/// Refuses a backup id the target's destination does not hold, before asking the operator:
/// a typo should not end as a failed job and a `BackupFailed` condition.
async fn ensure_backup_exists(r: &Record, target: &str, id: &str) -> anyhow::Result<()> {
    let stack = r.to_stack();
    let t = r
        .spec
        .backups
        .iter()
        .find(|t| t.name == target)
        .context("the target is declared")?;
    let dest = DestinationConfig::for_target(&stack, t)
        .context("the target has no destination")?
        .open()?;
    // One read of its manifest, which exists exactly when the backup does.
    match dest.get_small(&Manifest::object_name(id)).await {
        Ok(_) => Ok(()),
        Err(DestinationError::NotFound(_)) => bail!(
            "there is no backup {id} in {}; `stackwarden backups {}` lists them",
            dest.location(""),
            r.name
        ),
        Err(e) => Err(e.into()),
    }
}

/// Waits until the operator took the request (`handled`) and finished the job it started.
async fn wait_for_job(
    store: &LocalStore,
    r: &Record,
    target: &str,
    handled: impl Fn(&BackupTargetStatus) -> bool,
    job: Job,
    timeout: Duration,
) -> anyhow::Result<BackupTargetStatus> {
    let started = Instant::now();
    loop {
        let st = target_status(store, r, target)?;
        match &st.running {
            _ if !handled(&st) => progress("waiting for the operator to take the request..."),
            Some(run) if run.job == job => progress(&format!(
                "{:?} {}: {} bytes so far (attempt {})",
                job,
                if run.id.is_empty() {
                    "of the newest backup"
                } else {
                    &run.id
                },
                run.bytes,
                run.attempt
            )),
            _ => {
                progress_done();
                return Ok(st);
            }
        }
        if started.elapsed() > timeout {
            progress_done();
            bail!("gave up waiting after {timeout:?}; the operator goes on, `stackwarden status` shows how it ends");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The stack, when it declares `target`.
fn find_target(store: &LocalStore, stack: &str, target: &str) -> anyhow::Result<Record> {
    let r = find(store, stack)?;
    if !r.spec.backups.iter().any(|t| t.name == target) {
        bail!(
            "stack {}/{} has no backup target {target} (it has: {})",
            r.namespace,
            r.name,
            names(&r)
        );
    }
    Ok(r)
}

pub async fn backup(
    store: &LocalStore,
    stack: &str,
    target: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let r = find_target(store, stack, target)?;
    require_operator(store)?;
    let token = Utc::now().to_rfc3339();
    store.request(
        &r.namespace,
        &r.name,
        &format!("{BACKUP_REQUEST}{target}"),
        &token,
    )?;
    let st = wait_for_job(
        store,
        &r,
        target,
        |st| st.handled_backup_request.as_deref() == Some(token.as_str()),
        Job::Backup,
        timeout,
    )
    .await?;
    let asked: chrono::DateTime<Utc> = token.parse().expect("rfc3339 round trip");
    match (&st.last_success, &st.last_failure) {
        (Some(s), f) if s.time >= asked && f.as_ref().is_none_or(|f| f.time <= s.time) => {
            println!(
                "backup {} done: {} bytes, sha256 {}\n  {}",
                s.id, s.size, s.sha256, s.location
            );
            Ok(())
        }
        (_, Some(f)) if f.time >= asked => bail!("backup failed ({}): {}", f.reason, f.message),
        _ => {
            bail!("the operator took the request but recorded no outcome; see `stackwarden status`")
        }
    }
}

pub async fn verify(
    store: &LocalStore,
    stack: &str,
    target: &str,
    backup: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let r = find_target(store, stack, target)?;
    if let Some(id) = backup {
        ensure_backup_exists(&r, target, id).await?;
    }
    require_operator(store)?;
    let t0 = Utc::now();
    // An empty id asks for the newest backup; the nonce makes a repeat a new request.
    let request = format!("{}#{}", backup.unwrap_or(""), t0.timestamp_millis());
    store.request(
        &r.namespace,
        &r.name,
        &format!("{VERIFY_REQUEST}{target}"),
        &request,
    )?;
    let st = wait_for_job(
        store,
        &r,
        target,
        |st| st.handled_verify_request.as_deref() == Some(request.as_str()),
        Job::Verify,
        timeout,
    )
    .await?;
    match (&st.last_verification, &st.last_failure) {
        (Some(v), _) if v.time >= t0 && v.passed => {
            println!("restore test of {} passed: {}", v.id, v.message);
            Ok(())
        }
        (Some(v), _) if v.time >= t0 => bail!("restore test of {} failed: {}", v.id, v.message),
        (_, Some(f)) if f.time >= t0 => {
            bail!("restore test failed ({}): {}", f.reason, f.message)
        }
        _ => {
            bail!("the operator took the request but recorded no outcome; see `stackwarden status`")
        }
    }
}

pub async fn restore(
    store: &LocalStore,
    stack: &str,
    backup: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let r = find(store, stack)?;
    // Backup names are TARGET-YYYYMMDDTHHMMSSZ.
    let target = backup
        .len()
        .checked_sub(17)
        .map(|i| &backup[..i])
        .filter(|t| r.spec.backups.iter().any(|b| &b.name == t))
        .with_context(|| {
            format!(
                "{backup} is not a backup of stack {}/{} (its targets: {}); `stackwarden backups {}` lists them",
                r.namespace,
                r.name,
                names(&r),
                r.name
            )
        })?
        .to_owned();
    ensure_backup_exists(&r, &target, backup).await?;
    require_operator(store)?;
    let t0 = Utc::now();
    // The nonce makes a second restore of the same backup a new request.
    let request = format!("{backup}#{}", t0.timestamp_millis());
    store.request(
        &r.namespace,
        &r.name,
        &format!("{RESTORE_REQUEST}{target}"),
        &request,
    )?;
    let st = wait_for_job(
        store,
        &r,
        &target,
        |st| st.handled_restore_request.as_deref() == Some(request.as_str()),
        Job::Restore,
        timeout,
    )
    .await?;
    match &st.last_restore {
        Some(x) if x.time >= t0 && x.succeeded => println!("restored {}: {}", x.id, x.message),
        Some(x) if x.time >= t0 => bail!("restore of {} failed: {}", x.id, x.message),
        _ => {
            bail!("the operator took the request but recorded no outcome; see `stackwarden status`")
        }
    }
    // The stopped services come back with the next pass; the restore is done when they are Ready.
    let started = Instant::now();
    loop {
        let now = store
            .load(&r.namespace, &r.name)?
            .context("the stack was deleted")?;
        let ready = condition::find(&now.status.conditions, ConditionType::Ready);
        let paused = now.status.backups.values().any(|b| b.running.is_some());
        if !paused
            && ready
                .is_some_and(|c| c.status == ConditionStatus::True && c.last_transition_time >= t0)
        {
            println!("stack {}/{} is Ready", r.namespace, r.name);
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!(
                "restored, but the stack was not Ready within {timeout:?}: {}",
                ready.map_or("no Ready condition yet".to_owned(), |c| c.message.clone())
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn names(r: &Record) -> String {
    let n: Vec<&str> = r.spec.backups.iter().map(|t| t.name.as_str()).collect();
    if n.is_empty() {
        "none".to_owned()
    } else {
        n.join(", ")
    }
}

pub async fn list(store: &LocalStore, stack: &str) -> anyhow::Result<()> {
    let r = find(store, stack)?;
    let s = r.to_stack();
    let mut rows = vec![[
        "BACKUP", "TRIGGER", "FINISHED", "SIZE", "VERIFIED", "LOCATION",
    ]
    .map(str::to_owned)
    .to_vec()];
    for t in &r.spec.backups {
        let dest = DestinationConfig::for_target(&s, t)
            .context("the target has no destination")?
            .open()?;
        for (m, v) in catalog(dest.as_ref()).await? {
            rows.push(vec![
                m.id.clone(),
                m.trigger.as_str().to_owned(),
                m.finished.format("%Y-%m-%d %H:%M:%SZ").to_string(),
                m.size.to_string(),
                v.map_or("-".to_owned(), |v| {
                    if v.passed { "yes" } else { "FAILED" }.to_owned()
                }),
                m.object.clone(),
            ]);
        }
    }
    print!("{}", super::table(&rows));
    Ok(())
}
