//! Admission (issue 9): what is wrong in the manifest files shows in `stackwarden status`, and
//! a valid but risky spec deploys with a `SpecWarning` condition and one Warning event per
//! change, on the real Docker engine.

use std::process::Command;
use std::time::Duration;

use stackwarden::api::{ConditionStatus, ConditionType, Reason};
use stackwarden_tests::harness::{
    local_ready, operator_binary, ps, redis_compose, redis_spec, remove_project, wait_for,
    write_manifest, Harness, OperatorProcess,
};

const TIMEOUT: Duration = Duration::from_secs(180);

/// A compose project removed from Docker when dropped (even when the test fails).
struct Project(String);

impl Drop for Project {
    fn drop(&mut self) {
        remove_project(&self.0);
    }
}

/// `stackwarden status` on a state directory: its output, whether or not it succeeded.
fn status(state: &std::path::Path) -> String {
    let out = Command::new(operator_binary())
        .args(["status", "--state-dir", state.to_str().unwrap()])
        .output()
        .expect("the operator binary runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_broken_file_and_a_foreign_kind_show_in_status_logged_once_and_clear_when_fixed() {
    let name = format!("adm-{}", std::process::id());
    let _project = Project(name.clone());
    remove_project(&name);
    let dir = tempfile::tempdir().unwrap();
    let (manifests, state) = (dir.path().join("manifests"), dir.path().join("state"));
    std::fs::create_dir(&manifests).unwrap();
    let mut stack = stackwarden::api::ServiceStack::new(&name, redis_spec(&name, ""));
    stack.metadata.namespace = Some("default".into());
    write_manifest(&manifests.join("good.yaml"), &stack).unwrap();
    let broken = manifests.join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: stackwarden.dev/v1alpha1\nkind: ServiceStack\nmetadata: {name: [\n",
    )
    .unwrap();
    let deployment = manifests.join("web.yaml");
    std::fs::write(
        &deployment,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
    )
    .unwrap();

    // A stack that does not parse because a variable is a number: the error quotes it.
    let pin = manifests.join("pin.yaml");
    std::fs::write(
        &pin,
        "apiVersion: stackwarden.dev/v1alpha1\nkind: ServiceStack\nmetadata: {name: pin}\nspec: {compose: {file: x}, variables: {PIN: 90417733}}\n",
    )
    .unwrap();

    let op = OperatorProcess::start(
        "local",
        &[
            "local",
            manifests.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--metrics-addr",
            "off",
        ],
        "info",
        &[],
    );
    let store = stackwarden::store::local::LocalStore::new(&state);
    // The good stack deploys whatever its neighbours hold.
    wait_for("the good stack to be Ready", TIMEOUT, || {
        local_ready(&store, "default", &name)
            .then_some(())
            .ok_or_else(|| format!("{:?}", store.load("default", &name)))
    });
    let text = status(&state);
    for needle in [
        "Manifest problems",
        &broken.display().to_string(),
        "is not valid YAML",
        &deployment.display().to_string(),
        "kind `Deployment` (`apps/v1`)",
        &pin.display().to_string(),
        "default/pin is not a valid ServiceStack",
        "<redacted>",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert!(!text.contains("90417733") && !op.log().contains("90417733"));

    // The Deployment moved away: it drops out of status; the broken file, re-read on every
    // poll meanwhile, was logged once.
    std::fs::remove_file(&deployment).unwrap();
    wait_for("the Deployment to leave status", TIMEOUT, || {
        let text = status(&state);
        (!text.contains("Deployment")).then_some(()).ok_or(text)
    });
    let told = |what: &str| op.log().lines().filter(|l| l.contains(what)).count();
    assert_eq!(told("is not valid YAML"), 1, "{}", op.log());
    assert_eq!(told("kind `Deployment`"), 1, "{}", op.log());

    // Fixed, and the other one removed: no problems left, and the log says so.
    std::fs::write(&broken, "# nothing here yet\n").unwrap();
    std::fs::remove_file(&pin).unwrap();
    wait_for("the manifest problems to clear", TIMEOUT, || {
        let text = status(&state);
        (!text.contains("Manifest problems"))
            .then_some(())
            .ok_or(text)
    });
    assert!(op.logged("has no problems now"), "{}", op.log());
    assert!(local_ready(&store, "default", &name));
    assert_eq!(ps(&name, "{{.State}}")["cache"], "running");
}

/// Risky but legal: the host's `/` and the Docker socket bound into a service, backups to `/`,
/// a retention that keeps one backup.
fn risky_spec(h: &Harness) -> stackwarden::api::ServiceStackSpec {
    let mut spec = redis_spec(&h.project, "");
    spec.compose.file = redis_compose("").replace(
        "volumes: [\"cachedata:/data\"]",
        "volumes: [\"cachedata:/data\", \"/:/host:ro\", \"/var/run/docker.sock:/var/run/docker.sock:ro\"]",
    );
    assert!(spec.compose.file.contains("docker.sock"));
    spec.backups = serde_json::from_value(serde_json::json!([{
        "name": "cache",
        "redis": {"service": "cache", "passwordVariable": "REDIS_PASSWORD"},
        "destination": {"path": "/"},
        "retention": {"daily": 0},
    }]))
    .unwrap();
    spec
}

#[tokio::test]
async fn a_risky_spec_deploys_with_a_spec_warning_and_one_event_per_change() {
    let h = Harness::new("risky");
    let spec = risky_spec(&h);
    h.apply(spec.clone());
    h.until_ready(TIMEOUT).await;

    let c = h
        .condition(ConditionType::SpecWarning)
        .expect("SpecWarning");
    assert_eq!(
        (c.status, c.reason),
        (ConditionStatus::True, Reason::HostRootMounted),
        "{}",
        c.message
    );
    for needle in [
        "binds `/` to `/host`",
        "binds `/var/run/docker.sock`",
        "destination.path is `/`",
        "keeps only the newest backup",
    ] {
        assert!(c.message.contains(needle), "{needle:?}: {}", c.message);
    }
    assert!(!c.message.contains("test-redis-password"));
    assert_eq!(
        h.condition(ConditionType::InvalidSpec).unwrap().status,
        ConditionStatus::False
    );
    // Applied as written: the container has both binds.
    let id = h.containers()["cache"].clone();
    let binds = stackwarden_tests::harness::docker(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Source}} {{end}}",
        &id,
    ]);
    assert!(
        binds.contains("/var/run/docker.sock") && binds.split(' ').any(|s| s == "/"),
        "{binds}"
    );

    // Told once: more passes on the same spec add no event.
    let warnings = |h: &Harness| {
        h.events()
            .into_iter()
            .filter(|e| matches!(e.type_, stackwarden::store::EventType::Warning))
            .collect::<Vec<_>>()
    };
    h.pass().await;
    h.pass().await;
    let w = warnings(&h);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert_eq!(w[0].reason, "HostRootMounted");

    // A change of what is risky is told again; the binds gone, retention alone is left.
    let mut only_retention = spec.clone();
    only_retention.compose.file = redis_compose("");
    h.apply(only_retention.clone());
    h.until("the warning to change", TIMEOUT, |h| {
        h.condition(ConditionType::SpecWarning)
            .is_some_and(|c| c.reason == Reason::BackupToRoot)
    })
    .await;
    let w = warnings(&h);
    assert_eq!(w.len(), 2, "{w:#?}");
    assert_eq!(w[1].reason, "BackupToRoot");

    // Nothing risky: False, and no further event.
    let backups = tempfile::tempdir().unwrap();
    let mut safe = only_retention;
    safe.backups[0].destination.path = Some(backups.path().display().to_string());
    safe.backups[0].retention.daily = 7;
    h.apply(safe);
    h.until("the warning to clear", TIMEOUT, |h| {
        h.condition(ConditionType::SpecWarning).is_some_and(|c| {
            (c.status, c.reason) == (ConditionStatus::False, Reason::NoSpecWarnings)
        })
    })
    .await;
    h.until_ready(TIMEOUT).await;
    assert_eq!(warnings(&h).len(), 2);
}
