//! Key ages: when each key of `spec.keyRotation` is due, what `status.keys` says of it, the
//! `KeyRotationDue` condition and the Warning events ahead of it. Pure: the caller gives the
//! keys as admitted, the rotation times the store keeps beside the values (never the values),
//! the status found, and `now`.
//!
//! - A key's age counts from its last rotation the store recorded; a key never rotated counts
//!   from when the operator first saw it (kept in `status.keys[KEY].since`).
//! - Due once `since + maxAge` has passed: `KeyRotationDue` True, listing every due key with the
//!   date it was last rotated (or first seen) and the date it fell due. The message names dates,
//!   not ages, so it does not change every day (calm status writes); the age is the
//!   `stackwarden_key_age_seconds` metric.
//! - `warnBeforeDays` ahead of the due date, one Warning event per key and due date; one when
//!   it falls due too (`status.keys[KEY].warned` remembers which was given). Manual keys get only these; auto keys are rotated by the rotation step.
//! - Whether a rotation is due now is a chain of `(reason, message)` checks in the manner of
//!   cert-manager's trigger policies ([`rotation_due`]): asked for by a person, past its
//!   maximum age, or not due.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::keys::{KeyStatus, KeyStatuses, RotateMode, Warned};
use crate::api::{ConditionStatus, ConditionType, Reason, Verdict};

/// A key as admitted.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub variable: String,
    pub rotate: RotateMode,
    pub max_age: Duration,
}

/// Where a key stands against its due date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Age {
    Fresh,
    /// Due within the warning window.
    DueSoon,
    Due,
}

/// What the pass writes and says about the keys.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub statuses: KeyStatuses,
    pub verdict: Verdict,
    /// Warning events: `(variable, note)`, each once per key and due date.
    pub warnings: Vec<(String, String)>,
}

/// The status, condition and warnings of `keys`. `rotated`: the last rotation time the store
/// recorded for each variable (none for a key never rotated by the operator).
pub fn report(
    keys: &[Key],
    rotated: &dyn Fn(&str) -> Option<DateTime<Utc>>,
    previous: &KeyStatuses,
    warn_before: Duration,
    now: DateTime<Utc>,
) -> Report {
    let mut statuses = KeyStatuses::new();
    let mut warnings = Vec::new();
    let mut due = Vec::new();
    for key in keys {
        let before = previous.get(&key.variable);
        let mut status = status_of(key, rotated(&key.variable), before, now);
        let now_age = age(&status, warn_before, now);
        let warning = match now_age {
            Age::Fresh => None,
            Age::DueSoon => Some((Warned::DueSoon, soon(key, &status))),
            Age::Due => Some((Warned::Due, overdue(key, &status))),
        };
        if let Some((level, note)) = warning.filter(|(level, _)| status.warned != Some(*level)) {
            status.warned = Some(level);
            warnings.push((key.variable.clone(), note));
        }
        if now_age == Age::Due {
            due.push(describe(key, &status));
        }
        statuses.insert(key.variable.clone(), status);
    }
    Report {
        statuses,
        verdict: verdict(keys.len(), &due),
        warnings,
    }
}

/// The key's status: `since` from the store's rotation time, else as first seen.
pub fn status_of(
    key: &Key,
    rotated: Option<DateTime<Utc>>,
    before: Option<&KeyStatus>,
    now: DateTime<Utc>,
) -> KeyStatus {
    let since = rotated.or_else(|| before.map(|b| b.since)).unwrap_or(now);
    let max_age = chrono::Duration::from_std(key.max_age).unwrap_or(chrono::Duration::MAX);
    KeyStatus {
        since,
        last_rotation: rotated,
        next_due: since
            .checked_add_signed(max_age)
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
        rotate: key.rotate,
        last_outcome: before.and_then(|b| b.last_outcome.clone()),
        // Told again for a new due date only.
        warned: before.filter(|b| b.since == since).and_then(|b| b.warned),
    }
}

/// Where the key stands on `now`.
pub fn age(status: &KeyStatus, warn_before: Duration, now: DateTime<Utc>) -> Age {
    let warn = chrono::Duration::from_std(warn_before).unwrap_or(chrono::Duration::MAX);
    if now >= status.next_due {
        Age::Due
    } else if status
        .next_due
        .checked_sub_signed(warn)
        .is_none_or(|from| now >= from)
    {
        Age::DueSoon
    } else {
        Age::Fresh
    }
}

/// Why a rotation of an auto key should run now, if it should: a person asked (`requested`),
/// or the key is past its maximum age. The first check that holds wins.
pub fn rotation_due(
    key: &Key,
    status: &KeyStatus,
    requested: bool,
    now: DateTime<Utc>,
) -> Option<(&'static str, String)> {
    type Check<'a> = &'a dyn Fn() -> Option<(&'static str, String)>;
    let checks: [Check; 2] = [
        &|| requested.then(|| ("Requested", format!("{}: rotation requested", key.variable))),
        &|| {
            (now >= status.next_due).then(|| {
                (
                    "MaxAgeExceeded",
                    format!(
                        "{}: older than its maximum age of {} days",
                        key.variable,
                        days(key.max_age)
                    ),
                )
            })
        },
    ];
    if key.rotate != RotateMode::Auto {
        return None;
    }
    checks.iter().find_map(|check| check())
}

fn verdict(count: usize, due: &[String]) -> Verdict {
    if due.is_empty() {
        let message = if count == 0 {
            "no keys are declared in spec.keyRotation".to_owned()
        } else {
            format!("each of the {count} key(s) is younger than its maximum age")
        };
        return Verdict::new(
            ConditionType::KeyRotationDue,
            ConditionStatus::False,
            Reason::KeysFresh,
            message,
        );
    }
    Verdict::new(
        ConditionType::KeyRotationDue,
        ConditionStatus::True,
        Reason::KeyTooOld,
        format!(
            "{}; rotate them (`stackwarden rotate STACK KEY`, the annotation rotate.stackwarden.dev/KEY, or by hand for manual keys, then record it)",
            due.join("; ")
        ),
    )
}

/// `DB_PASSWORD (auto): last rotated 2026-08-03, due since 2026-11-01 (max age 90 days)`.
fn describe(key: &Key, status: &KeyStatus) -> String {
    format!(
        "{} ({}): {} {}, due since {} (max age {} days)",
        key.variable,
        mode(key.rotate),
        if status.last_rotation.is_some() {
            "last rotated"
        } else {
            "first seen"
        },
        status.since.format("%Y-%m-%d"),
        status.next_due.format("%Y-%m-%d"),
        days(key.max_age)
    )
}

fn soon(key: &Key, status: &KeyStatus) -> String {
    format!(
        "{} ({}) is due for rotation on {} (max age {} days)",
        key.variable,
        mode(key.rotate),
        status.next_due.format("%Y-%m-%d"),
        days(key.max_age)
    )
}

fn overdue(key: &Key, status: &KeyStatus) -> String {
    format!(
        "{} is due for rotation: {}",
        key.variable,
        describe(key, status)
    )
}

fn mode(rotate: RotateMode) -> &'static str {
    match rotate {
        RotateMode::Manual => "manual",
        RotateMode::Auto => "auto",
    }
}

fn days(d: Duration) -> u64 {
    d.as_secs() / 86_400
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
