//! `stackwarden rollback`: the rollback annotation (`stackwarden.dev/rollback`, see
//! `decide::rollback`) written into the state directory, as `kubectl annotate` would in a
//! cluster, then the status watched until the rolled-back revision runs (and, with
//! `--restore-backup`, its backups are restored). The operator decides the request again;
//! the CLI decides it first only to refuse before anything is asked, and to say what a
//! restore will lose before it acts.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::{NaiveDateTime, Utc};

use super::backup_cli::find;
use crate::api::condition;
use crate::api::{ConditionStatus, ConditionType, ServiceStackStatus};
use crate::decide::rollback::{self, Request, ROLLBACK_ANNOTATION};
use crate::store::local::{LocalStore, Record};

const POLL: Duration = Duration::from_millis(500);

/// The annotation value for a request (see `decide::rollback` for the grammar).
pub fn request_value(to: Option<u64>, restore_backup: bool, nonce: i64) -> String {
    let to = to.map_or_else(|| "previous".to_owned(), |n| n.to_string());
    let flag = if restore_backup {
        ",restore-backup"
    } else {
        ""
    };
    format!("{to}{flag}#{nonce}")
}

/// When backup `id` (`TARGET-YYYYMMDDTHHMMSSZ`) was taken, as its name says.
fn taken_at(id: &str) -> Option<String> {
    let stamp = id.get(id.len().checked_sub(16)?..)?;
    let t = NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").ok()?;
    Some(t.and_utc().to_rfc3339())
}

pub async fn rollback(
    store: &LocalStore,
    stack: &str,
    to: Option<u64>,
    restore_backup: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let r = find(store, stack)?;
    let revisions = store.read_revisions(&r.to_stack())?;
    let request = Request { to, restore_backup };
    let current = r.status.revision;
    let taken = rollback::take(&request, &revisions, current).map_err(anyhow::Error::msg)?;
    let number = taken.to.revision.number;
    for (target, id) in &taken.restores {
        let when = taken_at(id).unwrap_or_else(|| "at a time its name does not tell".into());
        println!(
            "--restore-backup: once revision {number} runs, backup {id} of {target} (taken {when}) is restored; every write made to it since then is lost"
        );
    }
    if !store.operator_running() {
        bail!("no `stackwarden local` runs on this state directory; start it (it does the work), then ask again");
    }
    let t0 = Utc::now();
    let value = request_value(Some(number), restore_backup, t0.timestamp_millis());
    store.request(&r.namespace, &r.name, ROLLBACK_ANNOTATION, &value)?;
    println!(
        "rollback of {}/{} to revision {number} requested",
        r.namespace, r.name
    );
    let started = Instant::now();
    loop {
        let st = load(store, &r)?;
        if let Some(done) = finished(&st, &value, t0)? {
            println!("{done}");
            return Ok(());
        }
        if started.elapsed() > timeout {
            let ready = condition::find(&st.conditions, ConditionType::Ready);
            bail!(
                "the rollback was asked for, but did not finish within {timeout:?}: {}",
                ready.map_or("no Ready condition yet".to_owned(), |c| c.message.clone())
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn load(store: &LocalStore, r: &Record) -> anyhow::Result<ServiceStackStatus> {
    Ok(store
        .load(&r.namespace, &r.name)?
        .with_context(|| format!("stack {}/{} was deleted", r.namespace, r.name))?
        .status)
}

/// Whether the rollback asked with `value` is done: Some(what to print) when it is, an error
/// when it was refused or rolled back itself, None while it goes on.
fn finished(
    st: &ServiceStackStatus,
    value: &str,
    t0: chrono::DateTime<Utc>,
) -> anyhow::Result<Option<String>> {
    let Some(rb) = st.rollback.as_ref().filter(|rb| rb.request == value) else {
        return Ok(None);
    };
    if let Some(why) = &rb.refused {
        bail!("rollback not done: {why}");
    }
    let since = |c: &&condition::Condition| c.last_transition_time >= t0;
    if let Some(c) = condition::find(&st.conditions, ConditionType::RolledBack)
        .filter(|c| c.status == ConditionStatus::True)
        .filter(since)
    {
        bail!("the rollback's own rollout failed: {}", c.message);
    }
    let rolled_out =
        st.revision != rb.from && st.rollout.as_ref().is_none_or(|r| !r.phase.active());
    let ready = condition::find(&st.conditions, ConditionType::Ready)
        .is_some_and(|c| c.status == ConditionStatus::True);
    let restored = rb.restores.iter().all(|(target, id)| {
        let b = st.backups.get(target);
        let handled = b.and_then(|b| b.handled_rollback_restore.as_deref());
        let busy = b.is_some_and(|b| b.running.is_some());
        handled == Some(rb.restore_request(id).as_str()) && !busy
    });
    if !(rolled_out && ready && restored) {
        return Ok(None);
    }
    for target in rb.restores.keys() {
        match st.backups.get(target).and_then(|b| b.last_restore.as_ref()) {
            Some(x) if x.time >= t0 && x.succeeded => {}
            Some(x) if x.time >= t0 => bail!("restore of {} failed: {}", x.id, x.message),
            _ => return Ok(None),
        }
    }
    let to = rb.to.unwrap_or_default();
    let restored = if rb.restores.is_empty() {
        String::new()
    } else {
        format!(
            ", backups restored: {}",
            rb.restores.values().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    Ok(Some(format!(
        "rolled back to revision {to} (now running as revision {}){restored}; it stays until the spec changes",
        st.revision.unwrap_or_default()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_value_names_the_revision_the_flag_and_a_nonce() {
        assert_eq!(request_value(Some(3), false, 17), "3#17");
        assert_eq!(request_value(None, true, 17), "previous,restore-backup#17");
        let parsed = rollback::parse(&request_value(Some(3), true, 17)).unwrap();
        assert_eq!(
            parsed,
            Request {
                to: Some(3),
                restore_backup: true
            }
        );
    }

    #[test]
    fn a_backups_time_is_read_from_its_name() {
        assert_eq!(
            taken_at("pg-20261205T010203Z").as_deref(),
            Some("2026-12-05T01:02:03+00:00")
        );
        assert_eq!(taken_at("x"), None);
    }
}
