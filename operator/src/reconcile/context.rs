//! What the reconcilers share: the store, the engines, the background work, and the wakes that
//! tell a driver which stack to look at.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::requeue::backoff_delay;
use super::{prober, watch};
use crate::docker::Engines;
use crate::jobs::{Wake, Waker};
use crate::store::Store;

/// Shared state of the reconcilers.
pub struct Context {
    pub store: Arc<dyn Store>,
    pub engines: Engines,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Probe verdicts per stack and service, kept current by the probers.
    pub probes: prober::Board,
    /// Background work: probers (and backups, through `backups`).
    pub jobs: Arc<crate::jobs::Registry>,
    /// Backups, restore tests and restores running in the background.
    pub backups: crate::backup::runner::Jobs,
    /// Rollouts' analysis verdicts (the jobs run in `jobs`).
    pub analyses: Arc<super::analyses::Analyses>,
    /// Asks the driver to look at one stack now (a probe verdict flipped, a job ended, one of
    /// its containers changed).
    pub wake: Waker,
    /// The other end of `wake`, taken once by the driver.
    wakes: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Wake>>>,
    /// Docker events subscriptions, one per engine in use.
    pub(super) watches: watch::EngineWatches,
    /// Containers stopped on request, as the events told.
    pub(super) stops: watch::Stops,
    /// Set on shutdown: passes still observe, report and fold finished jobs, but start nothing.
    draining: std::sync::atomic::AtomicBool,
    /// Consecutive failed passes per stack, for backoff. Memory only: after a restart the
    /// operator simply retries at once, which is what one wants after a restart anyway.
    failures: Mutex<HashMap<String, u32>>,
    /// Hold warnings already logged, per stack, so each is logged once per change.
    told: std::sync::Mutex<HashMap<String, Vec<String>>>,
}

impl Context {
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let jobs: Arc<crate::jobs::Registry> = Arc::default();
        Arc::new(Self {
            store,
            engines: Engines::default(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            probes: prober::Board::default(),
            backups: crate::backup::runner::Jobs::new(jobs.clone()),
            analyses: Arc::default(),
            jobs,
            wake: Waker::new(tx),
            wakes: std::sync::Mutex::new(Some(rx)),
            watches: Default::default(),
            stops: Default::default(),
            draining: Default::default(),
            failures: Mutex::default(),
            told: Default::default(),
        })
    }

    /// Whether `messages` differ from what was last told for this stack (and remembers them):
    /// warnings a pass finds again and again are logged once per change.
    pub fn first_telling(&self, stack: &str, messages: &[String]) -> bool {
        let mut told = self.told.lock().expect("told lock");
        if told.get(stack).map(Vec::as_slice) == Some(messages) {
            return false;
        }
        told.insert(stack.to_owned(), messages.to_vec());
        true
    }

    /// What to look at now; for the driver, which takes it once.
    pub fn take_wakes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Wake>> {
        self.wakes.lock().expect("wakes lock").take()
    }

    /// Stops starting work (restarts, deploys, backup jobs) for a shutdown; passes go on
    /// observing, reporting and folding the jobs that finish.
    pub fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub(super) fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stops everything running in the background: probers, Docker subscriptions and jobs (a
    /// job cut off here is in status as running, and the next operator recovers it).
    pub fn stop_all(&self) {
        for job in self.jobs.cancel_all() {
            self.probes.clear(&job.stack);
        }
        self.watches.stop_all();
        self.backups.stop_all();
    }

    pub(super) fn prober_shared(&self) -> prober::Shared {
        prober::Shared {
            board: self.probes.clone(),
            metrics: self.metrics.clone(),
            wake: self.wake.clone(),
        }
    }

    /// Forgets a deleted stack: its prober, verdicts and metric series.
    pub fn forget(&self, stack: &str) {
        self.wake.forget(stack);
        prober::stop(&self.jobs, stack, &self.probes);
        self.backups.stop(stack, &Default::default());
        self.metrics.forget_stack(stack);
    }

    pub(super) async fn backoff(&self, key: &str, failed: bool) -> Option<Duration> {
        let mut f = self.failures.lock().await;
        if !failed {
            f.remove(key);
            return None;
        }
        let n = f.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        Some(backoff_delay(*n))
    }
}
