//! The fault switches: what the operator has to notice and repair. They live in atomics so
//! that an HTTP request can flip them while other requests read them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::config::FaultSettings;

const MIB: usize = 1024 * 1024;

#[derive(Debug)]
pub struct Faults {
    fail_health: AtomicBool,
    /// An `f64` stored as its bits: there is no atomic float in std.
    error_rate_bits: AtomicU64,
    leak_mb_per_sec: AtomicU64,
    leaked_bytes: AtomicU64,
    /// Added to every answer of `/`.
    pub latency: Duration,
}

impl Faults {
    pub fn new(settings: &FaultSettings) -> Self {
        Self {
            fail_health: AtomicBool::new(settings.fail_health),
            error_rate_bits: AtomicU64::new(settings.error_rate.to_bits()),
            leak_mb_per_sec: AtomicU64::new(settings.leak_mb_per_sec),
            leaked_bytes: AtomicU64::new(0),
            latency: Duration::from_millis(settings.latency_ms),
        }
    }

    pub fn fail_health(&self) -> bool {
        self.fail_health.load(Ordering::Relaxed)
    }

    pub fn set_fail_health(&self, on: bool) {
        self.fail_health.store(on, Ordering::Relaxed);
    }

    pub fn error_rate(&self) -> f64 {
        f64::from_bits(self.error_rate_bits.load(Ordering::Relaxed))
    }

    pub fn set_error_rate(&self, rate: f64) {
        self.error_rate_bits
            .store(rate.to_bits(), Ordering::Relaxed);
    }

    pub fn leak_mb_per_sec(&self) -> u64 {
        self.leak_mb_per_sec.load(Ordering::Relaxed)
    }

    pub fn set_leak_mb_per_sec(&self, mb_per_sec: u64) {
        self.leak_mb_per_sec.store(mb_per_sec, Ordering::Relaxed);
    }

    pub fn leaked_bytes(&self) -> u64 {
        self.leaked_bytes.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Value {
        json!({
            "fail_health": self.fail_health(),
            "error_rate": self.error_rate(),
            "leak_mb_per_sec": self.leak_mb_per_sec(),
            "leaked_bytes": self.leaked_bytes(),
        })
    }
}

/// Whether this request should fail, given the configured rate and a uniform `roll` in
/// [0, 1). Kept pure so the decision is testable without randomness.
pub fn should_inject_error(rate: f64, roll: f64) -> bool {
    roll < rate
}

/// Memory that is allocated on purpose and never given back. A global keeps the compiler
/// from proving the allocations unused and removing them.
static LEAKED: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

/// Every second, allocates the currently configured number of MiB and writes to every byte,
/// so the memory is resident (an untouched allocation would only be reserved address space
/// and never show up in the container's memory usage). A plain thread, because the work is
/// blocking and must not stall the async runtime.
pub fn spawn_leaker(faults: Arc<Faults>) {
    std::thread::Builder::new()
        .name("leaker".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let mb = faults.leak_mb_per_sec();
            if mb == 0 {
                continue;
            }
            // `mb` is capped by config::MAX_LEAK_MB_PER_SEC, so this cannot overflow.
            let bytes = mb as usize * MIB;
            let chunk = vec![0xA5u8; bytes].into_boxed_slice();
            LEAKED
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(chunk);
            faults
                .leaked_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
        })
        .expect("spawning the leaker thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_rate_never_fails_and_full_rate_always_fails() {
        for roll in [0.0, 0.2, 0.5, 0.999_999] {
            assert!(!should_inject_error(0.0, roll));
            assert!(should_inject_error(1.0, roll));
        }
    }

    #[test]
    fn partial_rate_fails_the_matching_fraction_of_rolls() {
        assert!(should_inject_error(0.2, 0.0));
        assert!(should_inject_error(0.2, 0.199));
        assert!(!should_inject_error(0.2, 0.2));
        assert!(!should_inject_error(0.2, 0.9));
        let failures = (0..1000)
            .map(|i| f64::from(i) / 1000.0)
            .filter(|roll| should_inject_error(0.2, *roll))
            .count();
        assert_eq!(failures, 200);
    }

    #[test]
    fn switches_start_from_the_settings_and_can_be_flipped() {
        let faults = Faults::new(&FaultSettings {
            fail_health: true,
            crash_at_start: false,
            leak_mb_per_sec: 3,
            error_rate: 0.25,
            latency_ms: 0,
        });
        assert!(faults.fail_health());
        assert_eq!(faults.error_rate(), 0.25);
        assert_eq!(faults.leak_mb_per_sec(), 3);
        faults.set_fail_health(false);
        faults.set_error_rate(0.5);
        faults.set_leak_mb_per_sec(0);
        assert_eq!(
            faults.snapshot(),
            json!({"fail_health": false, "error_rate": 0.5, "leak_mb_per_sec": 0, "leaked_bytes": 0})
        );
    }
}
