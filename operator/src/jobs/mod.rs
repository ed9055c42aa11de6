//! One registry for the operator's background work: probers, and backups, restore tests and
//! restores (and next, rollout analyses and key rotations).
//!
//! Every job has an owner (the stack it belongs to), a key saying what it is, and a
//! cancellation token. The reconcile records a job's intent in status before it asks the
//! registry to start it, so a job cut off here (a deleted stack, a spec change, an operator that
//! stopped leading or shuts down) is found in status by the next pass or the next operator
//! and recovered there; the registry itself keeps nothing that must survive.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

pub mod analysis;
mod wake;
pub use wake::{Wake, Waker};

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The probes of one stack (one prober per stack).
    Prober,
    /// A backup, restore test or restore of one backup target.
    Backup,
    /// The rollout analysis of one service (`analysis::analyse`), named by the service.
    Analysis,
}

/// Which job: its stack (the owner), its kind, and a name within the two (the backup target;
/// empty for a stack's prober).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    pub stack: String,
    pub kind: Kind,
    pub name: String,
}

impl JobKey {
    pub fn new(stack: &str, kind: Kind, name: &str) -> Self {
        Self {
            stack: stack.to_owned(),
            kind,
            name: name.to_owned(),
        }
    }
}

struct Entry {
    /// What the job was started for: the same key with another fingerprint is other work.
    fingerprint: String,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The jobs running in this process.
#[derive(Default)]
pub struct Registry {
    running: Mutex<HashMap<JobKey, Entry>>,
}

impl Registry {
    /// Starts `work` under `key`, cancelling the job that ran there before. The work gets the
    /// job's cancellation token: it is dropped at its next await once the token is cancelled,
    /// and may watch the token to stop at a step of its choosing instead.
    pub fn spawn<F, W>(&self, key: JobKey, fingerprint: &str, work: W)
    where
        W: FnOnce(CancellationToken) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let token = CancellationToken::new();
        let job = work(token.clone());
        let guard = token.clone();
        let task = tokio::spawn(async move {
            // Cancelled: the future is dropped where it waits, as an abort would.
            guard.run_until_cancelled(job).await;
        });
        let entry = Entry {
            fingerprint: fingerprint.to_owned(),
            token,
            task,
        };
        if let Some(old) = self.lock().insert(key, entry) {
            old.token.cancel();
        }
    }

    /// Starts `work` unless a job with this key and fingerprint still runs; whether it started.
    pub fn ensure<F, W>(&self, key: JobKey, fingerprint: &str, work: W) -> bool
    where
        W: FnOnce(CancellationToken) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let same = self
            .lock()
            .get(&key)
            .is_some_and(|e| e.fingerprint == fingerprint && !e.task.is_finished());
        if !same {
            self.spawn(key, fingerprint, work);
        }
        !same
    }

    /// Whether a job runs under `key` (and has not ended).
    pub fn running(&self, key: &JobKey) -> bool {
        self.lock().get(key).is_some_and(|e| !e.task.is_finished())
    }

    /// Cancels one job; whether there was one.
    pub fn cancel(&self, key: &JobKey) -> bool {
        let entry = self.lock().remove(key);
        entry.map(|e| e.token.cancel()).is_some()
    }

    /// Cancels the jobs `doomed` picks, and says which.
    pub fn cancel_where(&self, doomed: impl Fn(&JobKey) -> bool) -> Vec<JobKey> {
        let mut running = self.lock();
        let keys: Vec<JobKey> = running.keys().filter(|k| doomed(k)).cloned().collect();
        for k in &keys {
            if let Some(e) = running.remove(k) {
                e.token.cancel();
            }
        }
        keys
    }

    /// Cancels everything: the operator shuts down, or stopped leading. The work is in status
    /// and the next leader (or this one, leading again) takes it up from there.
    pub fn cancel_all(&self) -> Vec<JobKey> {
        self.cancel_where(|_| true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobKey, Entry>> {
        self.running.lock().expect("job registry lock")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn key(stack: &str, kind: Kind, name: &str) -> JobKey {
        JobKey::new(stack, kind, name)
    }

    /// A job that runs until cancelled, and says when its future was dropped.
    fn endless(
        dropped: Arc<AtomicBool>,
    ) -> impl FnOnce(CancellationToken) -> futures::future::BoxFuture<'static, ()> {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        move |_token| {
            // Made before the future is first polled: a job cancelled before it ever ran is
            // dropped all the same.
            let flag = Flag(dropped);
            Box::pin(async move {
                let _flag = flag;
                std::future::pending::<()>().await;
            })
        }
    }

    async fn until(what: impl Fn() -> bool) {
        while !what() {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn ensure_leaves_the_same_work_running_and_replaces_other_work() {
        let jobs = Registry::default();
        let first = Arc::new(AtomicBool::new(false));
        let k = key("ops/shop", Kind::Prober, "");
        assert!(jobs.ensure(k.clone(), "a", endless(first.clone())));
        assert!(!jobs.ensure(k.clone(), "a", endless(Arc::default())));
        assert!(!first.load(Ordering::SeqCst));
        assert!(jobs.ensure(k.clone(), "b", endless(Arc::default())));
        until(|| first.load(Ordering::SeqCst)).await;
        assert!(jobs.running(&k));
    }

    #[tokio::test]
    async fn cancelling_a_stack_stops_its_jobs_and_no_others() {
        let jobs = Registry::default();
        let (mine, other) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        jobs.spawn(
            key("ops/shop", Kind::Backup, "pg"),
            "",
            endless(mine.clone()),
        );
        jobs.spawn(
            key("ops/other", Kind::Backup, "pg"),
            "",
            endless(other.clone()),
        );
        let gone = jobs.cancel_where(|k| k.stack == "ops/shop");
        assert_eq!(gone, vec![key("ops/shop", Kind::Backup, "pg")]);
        until(|| mine.load(Ordering::SeqCst)).await;
        assert!(!other.load(Ordering::SeqCst));
        assert!(jobs.running(&key("ops/other", Kind::Backup, "pg")));
    }

    #[tokio::test]
    async fn cancel_all_stops_everything_for_a_driver_that_stopped_leading() {
        let jobs = Registry::default();
        let flags: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::default()).collect();
        for (i, f) in flags.iter().enumerate() {
            jobs.spawn(
                key(&format!("ns/s{i}"), Kind::Prober, ""),
                "",
                endless(f.clone()),
            );
        }
        assert_eq!(jobs.cancel_all().len(), 3);
        until(|| flags.iter().all(|f| f.load(Ordering::SeqCst))).await;
    }

    #[tokio::test]
    async fn a_job_that_ended_is_not_running_and_ensure_starts_it_again() {
        let jobs = Registry::default();
        let k = key("ops/shop", Kind::Prober, "");
        jobs.spawn(k.clone(), "a", |_| async {});
        until(|| !jobs.running(&k)).await;
        assert!(jobs.ensure(k, "a", |_| async {}));
    }
}
