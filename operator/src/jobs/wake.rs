//! Wakes: how background work (a prober's verdict that flipped, a job that ended, a Docker
//! event) asks the driver to look at one stack now.

use std::collections::HashMap;
use std::sync::Arc;

/// What the driver should look at now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    /// One stack, by key (`namespace/name`).
    Stack(String),
    /// Every stack on the engine at this address (its events stream broke: events may have
    /// been missed).
    Engine(String),
}

/// Sends wakes to the driver. A channel rather than a `Notify`: a wake sent while the driver
/// is busy is kept, not lost, and it names what to look at, so nothing else is woken.
///
/// It also counts the wakes per stack, so that what was observed of a stack can be reused
/// until something (a Docker event above all) says it may have changed: see [`Waker::seen`].
#[derive(Clone)]
pub struct Waker {
    tx: tokio::sync::mpsc::UnboundedSender<Wake>,
    counts: Arc<std::sync::Mutex<WakeCounts>>,
}

#[derive(Default)]
struct WakeCounts {
    stacks: HashMap<String, u64>,
    /// Bumped by every engine-wide wake: it concerns every stack.
    engines: u64,
}

impl Waker {
    pub fn new(tx: tokio::sync::mpsc::UnboundedSender<Wake>) -> Self {
        Self {
            tx,
            counts: Arc::default(),
        }
    }

    pub fn wake(&self, stack: &str) {
        self.send(Wake::Stack(stack.to_owned()));
    }

    /// Counts that change whenever the stack is woken (by its own wake or an engine-wide
    /// one); equal answers mean no wake between.
    pub fn seen(&self, stack: &str) -> (u64, u64) {
        let counts = self.counts.lock().expect("wake counts lock");
        (
            counts.stacks.get(stack).copied().unwrap_or(0),
            counts.engines,
        )
    }

    pub fn forget(&self, stack: &str) {
        self.counts
            .lock()
            .expect("wake counts lock")
            .stacks
            .remove(stack);
    }

    pub fn send(&self, wake: Wake) {
        {
            let mut counts = self.counts.lock().expect("wake counts lock");
            match &wake {
                Wake::Stack(key) => *counts.stacks.entry(key.clone()).or_default() += 1,
                Wake::Engine(_) => counts.engines += 1,
            }
        }
        // The driver is gone when this fails: nothing is left to wake.
        let _ = self.tx.send(wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_seen_of_a_stack_changes_with_its_own_wakes_and_every_engine_wake_only() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let waker = Waker::new(tx);
        let before = waker.seen("ops/shop");
        waker.wake("ops/other");
        assert_eq!(waker.seen("ops/shop"), before, "another stack's wake");
        waker.wake("ops/shop");
        let woken = waker.seen("ops/shop");
        assert_ne!(woken, before);
        waker.send(Wake::Engine("unix:///var/run/docker.sock".into()));
        assert_ne!(waker.seen("ops/shop"), woken, "an engine's events broke");
        // The driver still gets every wake.
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 3);
    }
}
