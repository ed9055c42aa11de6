//! Docker events to wakes: one task per engine the stacks use, turning each decisive change of
//! a managed container into a wake of the one stack whose label it carries. Both drivers read
//! the wakes; neither subscribes to Docker itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use tracing::{debug, warn};

use super::{Wake, Waker};
use crate::docker::Engines;

/// Longest wait before subscribing again to an engine that keeps failing.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Containers stopped on request (`docker stop`, `docker-compose stop`: Docker's `stop`
/// event, which a crash never has), with when. Memory only: after an operator restart a stop
/// it did not see is reported as an exit, as before.
#[derive(Clone, Default)]
pub struct Stops(std::sync::Arc<Mutex<HashMap<String, chrono::DateTime<chrono::Utc>>>>);

impl Stops {
    fn record(&self, container: &str, at: chrono::DateTime<chrono::Utc>) {
        let mut stops = self.0.lock().expect("stops lock");
        // Bounded: a stop older than an hour no longer explains anything.
        let hour_ago = at - chrono::Duration::hours(1);
        stops.retain(|_, t| *t > hour_ago);
        stops.insert(container.to_owned(), at);
    }

    /// Whether the container was stopped on request after it last started.
    pub fn stopped_since(
        &self,
        container: &str,
        started: Option<chrono::DateTime<chrono::Utc>>,
    ) -> bool {
        self.0
            .lock()
            .expect("stops lock")
            .get(container)
            .is_some_and(|t| started.is_none_or(|s| *t >= s))
    }
}

/// The running subscriptions, by engine address. Aborted when dropped.
#[derive(Default)]
pub struct EngineWatches {
    tasks: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

impl EngineWatches {
    /// Makes sure the events of `host` are watched (once per engine, however many stacks).
    pub fn ensure(&self, host: &str, engines: &Engines, waker: &Waker, stops: &Stops) {
        // An engine standing in for Docker (the unit tests' fake) has no events stream.
        if engines.stand_in_for(host).is_some() {
            return;
        }
        let mut tasks = self.tasks.lock().expect("watches lock");
        if tasks.get(host).is_some_and(|t| !t.is_finished()) {
            return;
        }
        let task = tokio::spawn(watch(
            host.to_owned(),
            engines.clone(),
            waker.clone(),
            stops.clone(),
        ));
        tasks.insert(host.to_owned(), task);
    }

    pub fn stop_all(&self) {
        for (_, task) in self.tasks.lock().expect("watches lock").drain() {
            task.abort();
        }
    }
}

impl Drop for EngineWatches {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Subscribes, forwards, and subscribes again after a break. After a break the engine's
/// stacks are all woken: events may have been missed meanwhile.
async fn watch(host: String, engines: Engines, waker: Waker, stops: Stops) {
    let mut retry = Duration::from_secs(1);
    let mut broken = false;
    loop {
        match engines.get(&host).await {
            Ok(engine) => {
                if broken {
                    waker.send(Wake::Engine(host.clone()));
                }
                let mut changes = engine.container_changes();
                while let Some(change) = changes.next().await {
                    match change {
                        Ok(change) => {
                            retry = Duration::from_secs(1);
                            debug!(stack = %change.stack, action = %change.action, "Docker event");
                            if change.action == "stop" {
                                let at = change.time.unwrap_or_else(chrono::Utc::now);
                                stops.record(&change.container, at);
                            }
                            waker.wake(&change.stack);
                        }
                        Err(e) => {
                            warn!(%host, "Docker events: {e}; subscribing again");
                            break;
                        }
                    }
                }
            }
            // The stacks on it report the engine as unreachable; this only waits for it.
            Err(e) => debug!(%host, "Docker events: {e}"),
        }
        broken = true;
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}
