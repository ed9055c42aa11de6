//! Specs that are valid but risky: applied as written, and said out loud as the `SpecWarning`
//! condition (and a Warning event when it changes) instead of passing in silence. Pure, like
//! the checks in [`super::admit`] that run first.

use std::path::{Component, Path, PathBuf};

use crate::api::{ConditionStatus, ConditionType, Reason, ServiceStackSpec, Verdict};
use crate::compose::{MountSpec, Project};

/// Where Docker's API socket lives on common hosts (`/var/run` is a symlink to `/run`).
const DOCKER_SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];

/// One risky thing a spec asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Warning {
    pub reason: Reason,
    /// Where it is, what it risks and what to do instead; names no variable value (the
    /// paths and counts it quotes come from the compose file's structure or the spec).
    pub message: String,
}

/// Every warning of a valid spec, in a stable order (services by name, then targets in order),
/// so the condition's message, and with it the event, changes only when the spec does.
pub fn of(spec: &ServiceStackSpec, project: &Project) -> Vec<Warning> {
    let mut out = Vec::new();
    for svc in &project.services {
        for m in &svc.mounts {
            let MountSpec::Bind { source, target, .. } = m else {
                continue;
            };
            if let Some(w) = bind_warning(&svc.name, source, target) {
                out.push(w);
            }
        }
    }
    backup_warnings(spec, &mut out);
    // A bind source can come from a variable: its value stays out of status like any other.
    for w in &mut out {
        w.message = crate::api::mask(&w.message, &spec.variables, &[]);
    }
    out
}

fn backup_warnings(spec: &ServiceStackSpec, out: &mut Vec<Warning>) {
    for (i, t) in spec.backups.iter().enumerate() {
        let here = format!("spec.backups[{i}] ({})", t.name);
        if let Some(path) = &t.destination.path {
            if normalize(path) == Path::new("/") {
                out.push(Warning {
                    reason: Reason::BackupToRoot,
                    message: format!("{here}: destination.path is `/`: backups land among the host's system directories; give a directory of their own, e.g. /var/lib/stackwarden/backups"),
                });
            }
        }
        let r = &t.retention;
        if r.daily.max(r.weekly).max(r.monthly) <= 1 {
            out.push(Warning {
                reason: Reason::SingleBackupKept,
                message: format!("{here}: retention {{daily: {}, weekly: {}, monthly: {}}} keeps only the newest backup, so a backup of damaged data replaces the last good one; keep more, e.g. daily: 7", r.daily, r.weekly, r.monthly),
            });
        }
    }
}

fn bind_warning(service: &str, source: &str, target: &str) -> Option<Warning> {
    let source = normalize(source);
    let here = format!(
        "service `{service}` binds `{}` to `{target}`",
        source.display()
    );
    if source == Path::new("/") {
        return Some(Warning {
            reason: Reason::HostRootMounted,
            message: format!("{here}: the container can read (and unless read-only, change) every file of the host; bind only the directories it needs"),
        });
    }
    // The socket itself, or a directory that holds it.
    let socket = DOCKER_SOCKETS
        .iter()
        .any(|s| Path::new(s).starts_with(&source));
    socket.then(|| Warning {
        reason: Reason::DockerSocketMounted,
        message: format!("{here}: whoever controls the container controls the Docker engine, and with it the host (read-only does not prevent that); remove the bind unless the service must drive Docker"),
    })
}

/// `path` with `.`, `..` and repeated or trailing slashes resolved lexically: `/var//run/./`
/// and `/var/run` name the same directory in a bind.
fn normalize(path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The `SpecWarning` condition: True with the first warning's reason and every message, or
/// False when there is nothing to say.
pub fn verdict(warnings: &[Warning]) -> Verdict {
    match warnings.first() {
        None => Verdict::new(
            ConditionType::SpecWarning,
            ConditionStatus::False,
            Reason::NoSpecWarnings,
            "nothing risky in the spec",
        ),
        Some(first) => Verdict::new(
            ConditionType::SpecWarning,
            ConditionStatus::True,
            first.reason,
            format!(
                "applied as written, but: {}",
                warnings
                    .iter()
                    .map(|w| w.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ServiceStack;

    fn stack(services: &str, backups: serde_json::Value) -> (ServiceStackSpec, Project) {
        let spec: ServiceStackSpec = serde_json::from_value(serde_json::json!({
            "compose": {"projectName": "p", "file": format!("services:\n{services}")},
            "variables": {"PW": "secret-value"},
            "backups": backups,
        }))
        .unwrap();
        let project = crate::compose::load(&ServiceStack::new("s", spec.clone())).unwrap();
        (spec, project)
    }

    fn reasons(w: &[Warning]) -> Vec<Reason> {
        w.iter().map(|w| w.reason).collect()
    }

    /// A target; a null `retention` is left out (the default).
    fn pg_target(retention: serde_json::Value, path: &str) -> serde_json::Value {
        let mut t = serde_json::json!({
            "name": "pg",
            "postgres": {"service": "db", "database": "d", "user": "u", "passwordVariable": "PW"},
            "destination": {"path": path},
        });
        if !retention.is_null() {
            t["retention"] = retention;
        }
        serde_json::json!([t])
    }

    const DB: &str = "  db:\n    image: postgres\n";

    #[test]
    fn an_ordinary_spec_has_no_warnings_and_a_false_condition() {
        let (spec, project) = stack(
            &format!("{DB}    volumes: ['/srv/data:/data', 'vol:/v']\nvolumes:\n  vol: {{}}\n"),
            pg_target(serde_json::json!({"daily": 7}), "/var/backups"),
        );
        let w = of(&spec, &project);
        assert_eq!(w, vec![]);
        let v = verdict(&w);
        assert_eq!(
            (v.type_, v.status, v.reason),
            (
                ConditionType::SpecWarning,
                ConditionStatus::False,
                Reason::NoSpecWarnings
            )
        );
    }

    #[test]
    fn binding_the_host_root_or_the_docker_socket_in_any_spelling_warns() {
        for (bind, reason) in [
            ("/:/host", Reason::HostRootMounted),
            ("/:/host:ro", Reason::HostRootMounted),
            (
                "/var/run/docker.sock:/var/run/docker.sock",
                Reason::DockerSocketMounted,
            ),
            ("/run/docker.sock:/s:ro", Reason::DockerSocketMounted),
            ("/var//run/./docker.sock:/s", Reason::DockerSocketMounted),
            ("/var/run:/host-run", Reason::DockerSocketMounted),
            ("/run/:/host-run", Reason::DockerSocketMounted),
        ] {
            let (spec, project) = stack(
                &format!("{DB}    volumes: ['{bind}']\n"),
                serde_json::json!([]),
            );
            let w = of(&spec, &project);
            assert_eq!(reasons(&w), vec![reason], "{bind}");
            assert!(w[0].message.contains("service `db`"), "{}", w[0].message);
        }
        for harmless in [
            "/run/user/1000:/x",
            "/srv/run:/x",
            "/var/lib/docker.sock.d:/x",
        ] {
            let (spec, project) = stack(
                &format!("{DB}    volumes: ['{harmless}']\n"),
                serde_json::json!([]),
            );
            assert_eq!(of(&spec, &project), vec![], "{harmless}");
        }
    }

    #[test]
    fn a_retention_that_keeps_only_the_newest_backup_warns_and_one_that_keeps_two_does_not() {
        for (retention, warns) in [
            (serde_json::json!({"daily": 0}), true),
            (serde_json::json!({"daily": 1}), true),
            (
                serde_json::json!({"daily": 1, "weekly": 1, "monthly": 1}),
                true,
            ),
            (serde_json::json!({"daily": 0, "monthly": 2}), false),
            (serde_json::json!({"daily": 2}), false),
            // An empty map sets every count to 0; only a missing one means the default.
            (serde_json::json!({}), true),
            (serde_json::Value::Null, false),
        ] {
            let (spec, project) = stack(DB, pg_target(retention.clone(), "/var/backups"));
            let w = of(&spec, &project);
            assert_eq!(
                reasons(&w) == vec![Reason::SingleBackupKept],
                warns,
                "{retention}: {w:?}"
            );
        }
    }

    #[test]
    fn a_backup_destination_of_root_warns() {
        for path in ["/", "//", "/./"] {
            let (spec, project) = stack(DB, pg_target(serde_json::json!({"daily": 7}), path));
            let w = of(&spec, &project);
            assert_eq!(reasons(&w), vec![Reason::BackupToRoot], "{path}");
            assert!(w[0].message.contains("spec.backups[0] (pg)"));
        }
    }

    #[test]
    fn several_warnings_make_one_true_condition_naming_all_and_no_secret() {
        let (spec, project) = stack(
            &format!("{DB}    environment: {{PW: $PW}}\n    volumes: ['/:/host', '/var/run/docker.sock:/d.sock']\n"),
            pg_target(serde_json::json!({"daily": 0}), "/"),
        );
        let w = of(&spec, &project);
        assert_eq!(
            reasons(&w),
            vec![
                Reason::HostRootMounted,
                Reason::DockerSocketMounted,
                Reason::BackupToRoot,
                Reason::SingleBackupKept
            ]
        );
        let v = verdict(&w);
        assert_eq!(
            (v.status, v.reason),
            (ConditionStatus::True, Reason::HostRootMounted)
        );
        for m in &w {
            assert!(v.message.contains(&m.message));
        }
        assert!(!v.message.contains("secret-value"));
        // The same spec gives the same message: the event is not repeated on every pass.
        assert_eq!(verdict(&of(&spec, &project)), v);
    }
}
