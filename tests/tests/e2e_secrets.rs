//! Secrets at every log level and at rest (issue 9): the real `stackwarden local` binary at
//! `RUST_LOG=trace` through a deploy, backups, a verify and a heal, its whole log grepped for
//! every variable value; the state directory private to its owner.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use stackwarden_tests::harness::{
    demo_stack, docker, local_ready, operator_binary, ps, remove_project, wait_for, OperatorProcess,
};

const TIMEOUT: Duration = Duration::from_secs(240);

/// A compose project removed from Docker when dropped (even when the test fails).
struct Project(String);

impl Drop for Project {
    fn drop(&mut self) {
        remove_project(&self.0);
    }
}

/// Runs `stackwarden ARGS` to its end: (success, stdout and stderr).
fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(operator_binary())
        .args(args)
        .output()
        .expect("the operator binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every directory and file under `root` (itself included), with its permission bits.
fn modes(root: &Path) -> Vec<(String, bool, u32)> {
    let mut out = Vec::new();
    let meta = std::fs::symlink_metadata(root).unwrap();
    out.push((
        root.display().to_string(),
        meta.is_dir(),
        meta.permissions().mode() & 0o7777,
    ));
    if meta.is_dir() {
        for e in std::fs::read_dir(root).unwrap().flatten() {
            out.extend(modes(&e.path()));
        }
    }
    out
}

#[tokio::test]
async fn no_secret_reaches_the_trace_log_or_other_users_through_deploy_backup_and_heal() {
    let name = format!("sec-{}", std::process::id());
    let _project = Project(name.clone());
    remove_project(&name);
    let dir = tempfile::tempdir().unwrap();
    let (manifests, state, backups) = (
        dir.path().join("manifests"),
        dir.path().join("state"),
        dir.path().join("backups"),
    );
    std::fs::create_dir(&manifests).unwrap();

    // Values nothing else in the log could contain by chance.
    let secrets = [
        ("DB_PASSWORD", format!("pgPw-{name}-Xq7")),
        ("REDIS_PASSWORD", format!("rdPw-{name}-Zk3")),
        ("APP_SECRET", format!("appS-{name}-Wm9")),
    ];
    let mut stack = demo_stack("default", &name);
    stack.spec.compose.file = stack.spec.compose.file.replace(
        "REDIS_HOST: redis\n",
        "REDIS_HOST: redis\n      APP_SECRET: ${APP_SECRET}\n",
    );
    assert!(stack.spec.compose.file.contains("${APP_SECRET}"));
    for (k, v) in &secrets {
        stack.spec.variables.insert((*k).to_owned(), v.clone());
    }
    stack.spec.backups = serde_json::from_value(serde_json::json!([
        {"name": "pg", "postgres": {"service": "postgres", "database": "demo", "user": "demo", "passwordVariable": "DB_PASSWORD"},
         "destination": {"path": backups}},
        {"name": "cache", "redis": {"service": "redis", "passwordVariable": "REDIS_PASSWORD"},
         "destination": {"path": backups}},
    ]))
    .unwrap();
    stackwarden_tests::harness::write_manifest(&manifests.join("stack.yaml"), &stack).unwrap();

    let state_arg = state.to_str().unwrap();
    let op = OperatorProcess::start(
        "local",
        &[
            "local",
            manifests.to_str().unwrap(),
            "--state-dir",
            state_arg,
            "--metrics-addr",
            "off",
        ],
        "trace",
        &[],
    );
    let store = stackwarden::store::local::LocalStore::new(&state);
    wait_for("the stack to be Ready", TIMEOUT, || {
        local_ready(&store, "default", &name)
            .then_some(())
            .ok_or_else(|| format!("{:?}", store.load("default", &name)))
    });

    // Backups and a restore test, through the command line as a person takes them.
    for target in ["pg", "cache"] {
        let (ok, out) = cli(&["backup", &name, target, "--state-dir", state_arg]);
        assert!(ok, "stackwarden backup {target}: {out}");
    }
    let (ok, out) = cli(&["verify", &name, "pg", "--state-dir", state_arg]);
    assert!(ok, "stackwarden verify: {out}");
    // A blank backup id is a clear error, not `Error:  is not a backup of stack…`.
    let (ok, out) = cli(&["restore", &name, "", "--state-dir", state_arg]);
    assert!(
        !ok && out.contains("the backup id is empty"),
        "restore with a blank id: {out}"
    );

    // A heal: the backend killed, restarted by the operator.
    let backend = ps(&name, "{{.ID}}")["backend"].clone();
    docker(&["kill", &backend]);
    wait_for("the backend to be restarted", TIMEOUT, || {
        let restarts = store
            .load("default", &name)
            .ok()
            .flatten()
            .and_then(|r| r.status.services.get("backend").map(|s| s.restarts))
            .unwrap_or(0);
        (restarts >= 1 && local_ready(&store, "default", &name))
            .then_some(())
            .ok_or_else(|| format!("restarts {restarts}"))
    });
    let (ok, status) = cli(&["status", "--state-dir", state_arg]);
    assert!(ok, "{status}");

    // The capture really was at trace: lines below INFO are there.
    let log = op.log();
    assert!(
        !op.lines_at("TRACE").is_empty() || !op.lines_at("DEBUG").is_empty(),
        "no debug or trace line: the log was not captured at trace"
    );
    for (key, value) in &secrets {
        for (what, text) in [
            ("the operator's log", &log),
            ("stackwarden status", &status),
        ] {
            if let Some(line) = text.lines().find(|l| l.contains(value.as_str())) {
                panic!(
                    "the value of {key} is in {what}:\n{}",
                    line.replace(value.as_str(), "<HERE>")
                );
            }
        }
    }

    // At rest: nothing in the state directory is open to other users.
    for (path, is_dir, mode) in modes(&state) {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{path} is {mode:o}, not {want:o}");
    }
}
