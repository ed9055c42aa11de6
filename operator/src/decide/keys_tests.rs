//! Key ages: since, due dates, the condition and the warnings, told once.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;

const DAY: u64 = 86_400;

fn t(day: i64) -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::Duration::days(day)
}

fn key(variable: &str, rotate: RotateMode) -> Key {
    Key {
        variable: variable.into(),
        rotate,
        max_age: Duration::from_secs(90 * DAY),
    }
}

const WARN: Duration = Duration::from_secs(14 * DAY);

fn never(_: &str) -> Option<DateTime<Utc>> {
    None
}

#[test]
fn a_key_never_rotated_counts_from_when_the_operator_first_saw_it() {
    let keys = [key("DB_PASSWORD", RotateMode::Auto)];
    let first = report(&keys, &never, &KeyStatuses::new(), WARN, t(0));
    let s = &first.statuses["DB_PASSWORD"];
    assert_eq!((s.since, s.next_due, s.last_rotation), (t(0), t(90), None));
    assert_eq!(first.verdict.status, ConditionStatus::False);
    assert!(first.warnings.is_empty());
    // Later passes keep the first sighting.
    let later = report(&keys, &never, &first.statuses, WARN, t(30));
    assert_eq!(later.statuses, first.statuses);
}

#[test]
fn a_rotation_the_store_recorded_restarts_the_age() {
    let keys = [key("DB_PASSWORD", RotateMode::Auto)];
    let first = report(&keys, &never, &KeyStatuses::new(), WARN, t(0));
    let rotated = |_: &str| Some(t(100));
    let after = report(&keys, &rotated, &first.statuses, WARN, t(101));
    let s = &after.statuses["DB_PASSWORD"];
    assert_eq!(
        (s.since, s.next_due, s.last_rotation),
        (t(100), t(190), Some(t(100)))
    );
    assert_eq!(after.verdict.status, ConditionStatus::False);
}

#[test]
fn a_key_is_warned_of_once_ahead_and_once_when_due_and_the_condition_lists_it_with_dates() {
    let keys = [
        key("OPENAI_API_KEY", RotateMode::Manual),
        key("REDIS_PASSWORD", RotateMode::Auto),
    ];
    let mut statuses = report(&keys, &never, &KeyStatuses::new(), WARN, t(0)).statuses;
    let mut told = Vec::new();
    let mut verdicts = Vec::new();
    for day in 1..=120 {
        let r = report(&keys, &never, &statuses, WARN, t(day));
        told.extend(r.warnings.iter().map(|(k, n)| (day, k.clone(), n.clone())));
        verdicts.push((day, r.verdict.clone()));
        statuses = r.statuses;
    }
    let when: Vec<(i64, &str)> = told.iter().map(|(d, k, _)| (*d, k.as_str())).collect();
    assert_eq!(
        when,
        [
            (76, "OPENAI_API_KEY"),
            (76, "REDIS_PASSWORD"),
            (90, "OPENAI_API_KEY"),
            (90, "REDIS_PASSWORD")
        ]
    );
    assert_eq!(
        told[0].2,
        "OPENAI_API_KEY (manual) is due for rotation on 2026-04-01 (max age 90 days)"
    );
    let (_, due) = verdicts.iter().find(|(d, _)| *d == 95).unwrap();
    assert_eq!(due.status, ConditionStatus::True);
    assert_eq!(due.reason, Reason::KeyTooOld);
    assert!(
        due.message.starts_with("OPENAI_API_KEY (manual): first seen 2026-01-01, due since 2026-04-01 (max age 90 days); REDIS_PASSWORD (auto)"),
        "{}",
        due.message
    );
    // Dates, not ages: the message is the same every day it stays due.
    let (_, later) = verdicts.iter().find(|(d, _)| *d == 120).unwrap();
    assert_eq!(later.message, due.message);
}

#[test]
fn the_age_against_a_brute_force_reference() {
    let status = status_of(&key("K", RotateMode::Auto), Some(t(10)), None, t(10));
    for hour in 0..(120 * 24) {
        let now = t(0) + chrono::Duration::hours(hour);
        let days_left = (t(100) - now).num_seconds() as f64 / DAY as f64;
        let expected = if days_left <= 0.0 {
            Age::Due
        } else if days_left <= 14.0 {
            Age::DueSoon
        } else {
            Age::Fresh
        };
        assert_eq!(age(&status, WARN, now), expected, "at {now}");
    }
}

#[test]
fn only_auto_keys_are_rotated_and_a_request_comes_first() {
    let auto = key("DB_PASSWORD", RotateMode::Auto);
    let status = status_of(&auto, Some(t(0)), None, t(0));
    assert_eq!(rotation_due(&auto, &status, false, t(10)), None);
    let (reason, message) = rotation_due(&auto, &status, true, t(10)).unwrap();
    assert_eq!(
        (reason, message.as_str()),
        ("Requested", "DB_PASSWORD: rotation requested")
    );
    let (reason, _) = rotation_due(&auto, &status, true, t(95)).unwrap();
    assert_eq!(reason, "Requested");
    let (reason, message) = rotation_due(&auto, &status, false, t(95)).unwrap();
    assert_eq!(
        (reason, message.as_str()),
        (
            "MaxAgeExceeded",
            "DB_PASSWORD: older than its maximum age of 90 days"
        )
    );
    let manual = key("OPENAI_API_KEY", RotateMode::Manual);
    assert_eq!(rotation_due(&manual, &status, true, t(95)), None);
}

#[test]
fn without_keys_the_condition_says_none_are_declared() {
    let r = report(&[], &never, &KeyStatuses::new(), WARN, t(0));
    assert_eq!(r.verdict.status, ConditionStatus::False);
    assert_eq!(
        r.verdict.message,
        "no keys are declared in spec.keyRotation"
    );
}
