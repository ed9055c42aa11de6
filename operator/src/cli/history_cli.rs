//! `stackwarden history`: a stack's revisions, as `kubectl rollout history` shows a
//! Deployment's. In a cluster: `kubectl get controllerrevisions -l stackwarden.dev/stack-uid=UID`.

use std::fmt::Write as _;

use anyhow::Context as _;

use super::backup_cli::find;
use crate::api::revision::Recorded;
use crate::store::local::LocalStore;

/// Prints the table, or with `revision` that revision in full.
pub fn history(store: &LocalStore, stack: &str, revision: Option<u64>) -> anyhow::Result<()> {
    let record = find(store, stack)?;
    let s = record.to_stack();
    let revisions = store.read_revisions(&s)?;
    let text = match revision {
        None => table(
            &revisions,
            record.status.revision,
            record.status.last_good_revision,
        ),
        Some(n) => {
            let r = revisions
                .iter()
                .find(|r| r.revision.number == n)
                .with_context(|| {
                    format!("{stack} has no revision {n}; `stackwarden history {stack}` lists them")
                })?;
            detail(r)
        }
    };
    print!("{text}");
    Ok(())
}

/// One line a revision, oldest first; CHANGED names the services whose container config
/// differs from the revision before (all of them for the first one kept).
pub fn table(revisions: &[Recorded], running: Option<u64>, last_good: Option<u64>) -> String {
    let mut out = format!(
        "{:<9} {:<20} {:<12} {:<30} CHANGED\n",
        "REVISION", "CREATED", "PHASE", "CAUSE"
    );
    let mut before: Option<&Recorded> = None;
    for r in revisions {
        let mark = match r.revision.number {
            n if Some(n) == running => " (running)",
            n if Some(n) == last_good => " (last good)",
            _ => "",
        };
        let _ = writeln!(
            out,
            "{:<9} {:<20} {:<12} {:<30} {}{mark}",
            r.revision.number,
            r.revision.created.format("%Y-%m-%d %H:%M:%S"),
            r.outcome.phase.to_string(),
            r.revision.cause.to_string(),
            changed(before, r),
        );
        before = Some(r);
    }
    if revisions.is_empty() {
        out.push_str("(no revisions recorded yet)\n");
    }
    out
}

fn changed(before: Option<&Recorded>, r: &Recorded) -> String {
    let services = &r.revision.services;
    let names: Vec<&str> = match before {
        None => services.keys().map(String::as_str).collect(),
        Some(b) => {
            let old = &b.revision.services;
            let mut names: Vec<&str> = services
                .iter()
                .filter(|(k, s)| old.get(*k).is_none_or(|o| o.config_hash != s.config_hash))
                .map(|(k, _)| k.as_str())
                .collect();
            names.extend(
                old.keys()
                    .filter(|k| !services.contains_key(*k))
                    .map(|k| k.as_str()),
            );
            names
        }
    };
    if names.is_empty() {
        "-".into()
    } else {
        names.join(", ")
    }
}

/// A revision in full: services with their images, then the compose file (values masked).
fn detail(r: &Recorded) -> String {
    let rev = &r.revision;
    let mut out = format!(
        "revision {}  {}  {}  created {}  spec hash {}\n\n",
        rev.number,
        r.outcome.phase,
        rev.cause,
        rev.created.format("%Y-%m-%d %H:%M:%S"),
        rev.spec_hash
    );
    let _ = writeln!(out, "{:<20} {:<45} IMAGE ID", "SERVICE", "IMAGE");
    for (name, s) in &rev.services {
        let id = s.image_id.as_deref().map_or("-", short_image_id);
        let _ = writeln!(out, "{name:<20} {:<45} {id}", s.image);
    }
    for (target, id) in &rev.backups {
        let _ = writeln!(out, "backup taken before it: {id} ({target})");
    }
    let _ = write!(out, "\n{}", rev.compose);
    if !rev.compose.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// `sha256:0123456789ab…` as `docker images` shows it.
fn short_image_id(id: &str) -> &str {
    crate::observe::short_id(id.strip_prefix("sha256:").unwrap_or(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::revision::{Cause, Outcome, Phase, Revision, ServiceRevision};

    fn recorded(number: u64, phase: Phase, services: &[(&str, &str)]) -> Recorded {
        Recorded {
            revision: Revision {
                number,
                spec_hash: format!("h{number}"),
                created: "2026-12-05T00:00:00Z".parse().unwrap(),
                cause: Cause::SpecChange {
                    generation: Some(number as i64),
                },
                compose: "services: {}".into(),
                services: services
                    .iter()
                    .map(|(name, hash)| {
                        let s = ServiceRevision {
                            image: "app:1".into(),
                            image_id: None,
                            config_hash: (*hash).into(),
                        };
                        ((*name).to_owned(), s)
                    })
                    .collect(),
                backups: Default::default(),
            },
            outcome: Outcome { phase, since: None },
        }
    }

    #[test]
    fn the_table_names_the_services_each_revision_changed_and_marks_running_and_last_good() {
        let revisions = [
            recorded(1, Phase::Complete, &[("db", "a"), ("web", "b")]),
            recorded(2, Phase::Superseded, &[("db", "a"), ("web", "c")]),
            recorded(3, Phase::Progressing, &[("web", "c"), ("cache", "d")]),
        ];
        let text = table(&revisions, Some(3), Some(1));
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("1 ") && lines[1].ends_with("db, web (last good)"),
            "{text}"
        );
        assert!(
            lines[2].contains("Superseded") && lines[2].ends_with(" web"),
            "{text}"
        );
        assert!(lines[3].ends_with("cache, db (running)"), "{text}");
        assert!(lines[3].contains("spec change (generation 3)"), "{text}");
    }
}
