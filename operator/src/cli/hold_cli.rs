//! `stackwarden hold` and `stackwarden resume`: the hold annotation (`hold.stackwarden.dev/
//! SERVICE`, see `heal::hold`) written into the state directory, as `kubectl annotate` would in
//! a cluster, then the status watched until the running operator has acted on it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::Utc;

use super::backup_cli::find;
use crate::api::{ContainerState, ServiceStatus};
use crate::decide::heal::hold::{describe, HoldRequest, HOLD_ANNOTATION};
use crate::store::local::{LocalStore, Record};

const POLL: Duration = Duration::from_millis(500);

/// Holds `service` of `stack`: stopped, and neither started nor repaired, until resumed or
/// until `for_` has passed.
pub async fn hold(
    store: &LocalStore,
    stack: &str,
    service: &str,
    for_: Option<Duration>,
    by: Option<String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let r = find(store, stack)?;
    require_service(&r, service)?;
    let until = for_
        .map(|d| chrono::Duration::from_std(d).map(|d| Utc::now() + d))
        .transpose()
        .context("--for is too long")?;
    let by = by
        .or_else(|| std::env::var("USER").ok())
        .filter(|b| !b.trim().is_empty() && !b.contains(char::is_whitespace))
        .unwrap_or_else(|| "stackwarden-hold".to_owned());
    let request = HoldRequest {
        by: Some(by),
        until,
    };
    let key = format!("{HOLD_ANNOTATION}{service}");
    store.request(&r.namespace, &r.name, &key, &request.to_value())?;
    if !store.operator_running() {
        println!("hold recorded; `stackwarden local` stops {service} when it runs");
        return Ok(());
    }
    let st = wait(store, &r, service, timeout, |s| {
        s.hold.is_some()
            && !matches!(
                s.state,
                ContainerState::Running | ContainerState::Restarting
            )
    })
    .await
    .with_context(|| format!("{service} is held, but was not seen stopped"))?;
    let hold = st.hold.expect("waited for it");
    println!("{}: stopped", describe(service, &hold));
    Ok(())
}

/// Ends a hold made by `hold` or the annotation, and waits until the service runs again.
pub async fn resume(
    store: &LocalStore,
    stack: &str,
    service: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let r = find(store, stack)?;
    require_service(&r, service)?;
    let key = format!("{HOLD_ANNOTATION}{service}");
    if !store.withdraw(&r.namespace, &r.name, &key)? {
        match r.status.services.get(service).and_then(|s| s.hold.as_ref()) {
            Some(h) => bail!(
                "{}: not a hold `stackwarden resume` can end",
                describe(service, h)
            ),
            None => bail!("{service} is not held"),
        }
    }
    if !store.operator_running() {
        println!("hold withdrawn; `stackwarden local` starts {service} when it runs");
        return Ok(());
    }
    wait(store, &r, service, timeout, |s| {
        s.hold.is_none() && s.state == ContainerState::Running
    })
    .await
    .with_context(|| format!("the hold of {service} was withdrawn, but it was not seen running"))?;
    println!("{service} resumed: running");
    Ok(())
}

fn require_service(r: &Record, service: &str) -> anyhow::Result<()> {
    // The compose file as the operator reads it; a stack it cannot read has no services to
    // check against, and the operator reports that itself.
    if let Ok(project) = crate::compose::load(&r.to_stack()) {
        if project.service(service).is_none() {
            let names: Vec<_> = project.services.iter().map(|s| s.name.as_str()).collect();
            bail!(
                "{service} is not a service of stack {}/{} (its services: {})",
                r.namespace,
                r.name,
                names.join(", ")
            );
        }
    }
    Ok(())
}

async fn wait(
    store: &LocalStore,
    r: &Record,
    service: &str,
    timeout: Duration,
    done: impl Fn(&ServiceStatus) -> bool,
) -> anyhow::Result<ServiceStatus> {
    let started = Instant::now();
    loop {
        let now = store
            .load(&r.namespace, &r.name)?
            .context("the stack was deleted")?;
        if let Some(s) = now.status.services.get(service).filter(|s| done(s)) {
            return Ok(s.clone());
        }
        if started.elapsed() > timeout {
            bail!(
                "timed out after {timeout:?}; see `stackwarden status {}`",
                r.name
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
