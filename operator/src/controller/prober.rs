//! The board where probers post their verdicts and reconciles read them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::heal::ProbeVerdict;

/// Probe verdicts per stack key and service. In memory: after an operator restart the probes
/// start afresh, as a kubelet's do.
#[derive(Clone, Default)]
pub struct Board {
    verdicts: Arc<Mutex<HashMap<String, BTreeMap<String, ProbeVerdict>>>>,
}

impl Board {
    /// The verdicts of one stack.
    pub fn snapshot(&self, stack: &str) -> BTreeMap<String, ProbeVerdict> {
        self.verdicts
            .lock()
            .expect("probe board lock")
            .get(stack)
            .cloned()
            .unwrap_or_default()
    }

    /// Posts a verdict; returns whether the service's health flipped.
    pub fn post(&self, stack: &str, service: &str, verdict: ProbeVerdict) -> bool {
        let mut all = self.verdicts.lock().expect("probe board lock");
        let services = all.entry(stack.to_owned()).or_default();
        let flipped = services.get(service).map(|v| v.healthy) != Some(verdict.healthy);
        services.insert(service.to_owned(), verdict);
        flipped
    }

    /// Drops a stack's verdicts (stack deleted, or its probes changed).
    pub fn clear(&self, stack: &str) {
        self.verdicts
            .lock()
            .expect("probe board lock")
            .remove(stack);
    }
}
