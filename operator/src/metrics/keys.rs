//! The key series: how old each key of `spec.keyRotation` is, for a dashboard of last
//! rotations and an alert ahead of the `KeyRotationDue` condition; and how long each watched
//! certificate has left.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::labels::{CertificateLabels, KeyLabels, StackLabels};
use super::{Metrics, StackSeries};

pub(super) struct KeyFamilies {
    age: Family<KeyLabels, Gauge>,
    expiry: Family<CertificateLabels, Gauge>,
}

impl KeyFamilies {
    pub fn new() -> Self {
        Self {
            age: Family::default(),
            expiry: Family::default(),
        }
    }

    pub fn register(&self, r: &mut Registry) {
        r.register_with_unit(
            "key_age",
            "Seconds since a key was last rotated (or first seen by the operator); compare with its maximum age",
            Unit::Seconds,
            self.age.clone(),
        );
        r.register_with_unit(
            "certificate_expiry",
            "Seconds until a watched certificate's notAfter (negative once expired)",
            Unit::Seconds,
            self.expiry.clone(),
        );
    }

    pub fn forget(&self, stack: &StackLabels, series: &StackSeries) {
        for certificate in &series.certificates {
            self.expiry.remove(&CertificateLabels {
                stack: stack.clone(),
                certificate: certificate.clone(),
            });
        }
        for key in &series.keys {
            self.age.remove(&KeyLabels {
                stack: stack.clone(),
                key: key.clone(),
            });
        }
    }
}

impl Metrics {
    /// `key` of `stack` (its variable's name) is `age` old.
    pub fn key_age(&self, stack: &str, key: &str, age: std::time::Duration) {
        let mut seen = self.seen();
        seen.entry(stack.to_owned())
            .or_default()
            .keys
            .insert(key.to_owned());
        let labels = KeyLabels {
            stack: StackLabels::of(stack),
            key: key.to_owned(),
        };
        let seconds = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
        self.keys.age.get_or_create(&labels).set(seconds);
    }
}

impl Metrics {
    /// `certificate` of `stack` expires in `seconds` (negative: it has).
    pub fn certificate_expiry(&self, stack: &str, certificate: &str, seconds: i64) {
        let mut seen = self.seen();
        seen.entry(stack.to_owned())
            .or_default()
            .certificates
            .insert(certificate.to_owned());
        let labels = CertificateLabels {
            stack: StackLabels::of(stack),
            certificate: certificate.to_owned(),
        };
        self.keys.expiry.get_or_create(&labels).set(seconds);
    }
}
