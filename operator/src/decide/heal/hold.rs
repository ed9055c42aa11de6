//! Holding a service: a person (the runbook's "stop the backend, then recover the database") or
//! a restore keeps it stopped, and the operator neither starts nor repairs it until the hold
//! ends. Pure: which holds are in force, and which ended, from the annotations, the running
//! restore, the previous status and `now`; `reconcile::hold` acts on the answer.
//!
//! A hold is asked for with the annotation `hold.stackwarden.dev/<service>` (`kubectl
//! annotate` in a cluster; `stackwarden hold` writes the same annotation into the state
//! directory in local mode). Its value is empty (held until the annotation goes) or holds
//! `until=<RFC 3339 time>` and `by=<who>`, separated by spaces. A restore holds the services it
//! stops for as long as its job runs.
//!
//! The hold is in the service's status before its container is stopped, and stays there until
//! the pass after it ended: a hold that ends (annotation withdrawn, `until` passed, restore
//! over) starts the service again as a resume, never counted as a crash, even if the operator
//! was killed in between.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::api::{HoldStatus, ServiceStatus};
use crate::compose::Project;

/// The annotation prefix; the service's name follows.
pub const HOLD_ANNOTATION: &str = "hold.stackwarden.dev/";

/// What a hold annotation asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRequest {
    pub by: Option<String>,
    pub until: Option<DateTime<Utc>>,
}

impl HoldRequest {
    /// The annotation value that asks for this hold.
    pub fn to_value(&self) -> String {
        let by = self.by.as_ref().map(|b| format!("by={b}"));
        let until = self.until.map(|u| format!("until={}", u.to_rfc3339()));
        by.into_iter().chain(until).collect::<Vec<_>>().join(" ")
    }

    /// Reads an annotation value; the error says what is wrong with it.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut req = HoldRequest {
            by: None,
            until: None,
        };
        for word in value.split_whitespace() {
            match word.split_once('=') {
                Some(("by", who)) if !who.is_empty() => req.by = Some(who.to_owned()),
                Some(("until", t)) => {
                    let t = DateTime::parse_from_rfc3339(t).map_err(|e| {
                        format!("until={t} is not an RFC 3339 time ({e}); write e.g. until=2026-12-03T12:00:00Z")
                    })?;
                    req.until = Some(t.with_timezone(&Utc));
                }
                _ => {
                    return Err(format!(
                        "{word:?} is neither by=WHO nor until=TIME; write e.g. \"by=alice until=2026-12-03T12:00:00Z\", or leave the value empty"
                    ))
                }
            }
        }
        Ok(req)
    }
}

/// The holds of one pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Holds {
    /// Services held now, as their status shows them.
    pub active: BTreeMap<String, HoldStatus>,
    /// Services the restore holds (its job stops and starts them itself).
    pub by_restore: BTreeSet<String>,
    /// Services whose hold ended since the last status: to be started again as a resume.
    pub ended: BTreeSet<String>,
    /// Hold annotations that cannot be honoured, with why (told, never fatal).
    pub problems: Vec<String>,
}

impl Holds {
    pub fn held(&self) -> BTreeSet<String> {
        self.active.keys().cloned().collect()
    }
}

/// The holds in force at `now`. `restore` names the services a running restore stops and the
/// backup it restores; `previous` is the last status, whose holds give `since` and tell which
/// holds ended.
pub fn holds(
    project: &Project,
    annotations: &BTreeMap<String, String>,
    restore: &BTreeMap<String, String>,
    previous: &BTreeMap<String, ServiceStatus>,
    now: DateTime<Utc>,
) -> Holds {
    let mut out = Holds::default();
    for (key, value) in annotations {
        let Some(service) = key.strip_prefix(HOLD_ANNOTATION) else {
            continue;
        };
        if project.service(service).is_none() {
            out.problems.push(format!(
                "annotation {key}: {service:?} is not a service of the compose file; nothing is held"
            ));
            continue;
        }
        // An unreadable value still holds: the person wanted the service stopped, and
        // starting it because of a typo would be the surprise.
        let req = HoldRequest::parse(value).unwrap_or_else(|e| {
            out.problems.push(format!(
                "annotation {key}: {e}; held until the annotation is removed"
            ));
            HoldRequest {
                by: None,
                until: None,
            }
        });
        if req.until.is_some_and(|u| u <= now) {
            continue;
        }
        let by = req.by.unwrap_or_else(|| format!("annotation {key}"));
        out.active.insert(
            service.to_owned(),
            status(previous, service, by, req.until, now),
        );
    }
    for (service, backup) in restore {
        out.by_restore.insert(service.clone());
        out.active.entry(service.clone()).or_insert_with(|| {
            status(previous, service, format!("restore of {backup}"), None, now)
        });
    }
    out.ended = previous
        .iter()
        .filter(|(name, s)| s.hold.is_some() && !out.active.contains_key(*name))
        .map(|(name, _)| name.clone())
        .collect();
    out
}

fn status(
    previous: &BTreeMap<String, ServiceStatus>,
    service: &str,
    by: String,
    until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> HoldStatus {
    let since = previous
        .get(service)
        .and_then(|s| s.hold.as_ref())
        .map_or(now, |h| h.since);
    HoldStatus { by, since, until }
}

/// The sentence status and events use for a hold.
pub fn describe(service: &str, hold: &HoldStatus) -> String {
    let until = hold.until.map_or_else(
        || "until resumed".to_owned(),
        |u| format!("until {}", u.format("%Y-%m-%d %H:%M:%SZ")),
    );
    format!("{service} is held by {} {until}", hold.by)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn project() -> Project {
        let stack = crate::api::ServiceStack::new(
            "s",
            serde_json::from_value(serde_json::json!({"compose": {"file":
                "services:\n  backend: {image: app}\n  postgres: {image: pg}\n"}}))
            .unwrap(),
        );
        crate::compose::load(&stack).unwrap()
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{HOLD_ANNOTATION}{k}"), v.to_string()))
            .collect()
    }

    fn held_since(since: DateTime<Utc>) -> ServiceStatus {
        ServiceStatus {
            hold: Some(HoldStatus {
                by: "alice".into(),
                since,
                until: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_hold_value_round_trips_and_a_bad_one_says_how_to_write_it() {
        let req = HoldRequest {
            by: Some("alice".into()),
            until: Some(t(60)),
        };
        assert_eq!(HoldRequest::parse(&req.to_value()), Ok(req));
        assert_eq!(
            HoldRequest::parse(""),
            Ok(HoldRequest {
                by: None,
                until: None
            })
        );
        let e = HoldRequest::parse("until=tomorrow").unwrap_err();
        assert!(e.contains("RFC 3339"), "{e}");
        let e = HoldRequest::parse("for=1h").unwrap_err();
        assert!(e.contains("by=WHO"), "{e}");
    }

    #[test]
    fn a_hold_is_in_force_until_its_time_and_keeps_when_it_began() {
        let a = annotations(&[("backend", &format!("by=alice until={}", t(60).to_rfc3339()))]);
        let previous = BTreeMap::from([("backend".to_owned(), held_since(t(-30)))]);
        let h = holds(&project(), &a, &BTreeMap::new(), &previous, t(0));
        let hold = &h.active["backend"];
        assert_eq!(
            (hold.by.as_str(), hold.since, hold.until),
            ("alice", t(-30), Some(t(60)))
        );
        assert!(h.ended.is_empty());
        // Past its time it has ended, though the annotation is still there.
        let h = holds(&project(), &a, &BTreeMap::new(), &previous, t(60));
        assert!(h.active.is_empty());
        assert_eq!(h.ended, BTreeSet::from(["backend".to_owned()]));
    }

    #[test]
    fn a_withdrawn_hold_ends_once_and_a_new_one_begins_now() {
        let previous = BTreeMap::from([("backend".to_owned(), held_since(t(-30)))]);
        let h = holds(
            &project(),
            &BTreeMap::new(),
            &BTreeMap::new(),
            &previous,
            t(0),
        );
        assert_eq!(h.ended, BTreeSet::from(["backend".to_owned()]));
        // The pass after: the status no longer holds it, nothing ends again.
        let h = holds(
            &project(),
            &BTreeMap::new(),
            &BTreeMap::new(),
            &BTreeMap::new(),
            t(1),
        );
        assert!(h.ended.is_empty());
        let h = holds(
            &project(),
            &annotations(&[("postgres", "")]),
            &BTreeMap::new(),
            &BTreeMap::new(),
            t(2),
        );
        let hold = &h.active["postgres"];
        assert_eq!((hold.since, hold.until), (t(2), None));
        assert_eq!(hold.by, "annotation hold.stackwarden.dev/postgres");
    }

    #[test]
    fn a_restore_holds_the_services_it_stops_and_their_hold_ends_with_it() {
        let restore = BTreeMap::from([("backend".to_owned(), "pg-20261203T000000Z".to_owned())]);
        let h = holds(
            &project(),
            &BTreeMap::new(),
            &restore,
            &BTreeMap::new(),
            t(0),
        );
        assert_eq!(h.active["backend"].by, "restore of pg-20261203T000000Z");
        assert_eq!(h.by_restore, BTreeSet::from(["backend".to_owned()]));
        let previous = BTreeMap::from([(
            "backend".to_owned(),
            ServiceStatus {
                hold: Some(h.active["backend"].clone()),
                ..Default::default()
            },
        )]);
        let h = holds(
            &project(),
            &BTreeMap::new(),
            &BTreeMap::new(),
            &previous,
            t(5),
        );
        assert_eq!(h.ended, BTreeSet::from(["backend".to_owned()]));
    }

    #[test]
    fn a_hold_on_an_unknown_service_or_with_a_bad_value_is_told_and_a_bad_value_still_holds() {
        let a = annotations(&[("frontend", ""), ("backend", "until=soon")]);
        let h = holds(&project(), &a, &BTreeMap::new(), &BTreeMap::new(), t(0));
        assert_eq!(h.held(), BTreeSet::from(["backend".to_owned()]));
        assert_eq!(h.problems.len(), 2, "{:?}", h.problems);
        assert!(h
            .problems
            .iter()
            .any(|p| p.contains("\"frontend\" is not a service")));
    }
}
