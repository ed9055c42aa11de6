//! Secrets at every log level and at rest (issue 9): the real `stackwarden local` binary at
//! `RUST_LOG=trace` through a deploy, backups, a verify and a heal, its whole log grepped for
//! every variable value; the state directory private to its owner. And a password kept in an
//! env file beside the manifest (`variablesFrom: [{file: ...}]`), rotated through the store.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use stackwarden::api::{condition, ConditionType};
use stackwarden::store::{Location, Rewrite, Stamp, Store as _};
use stackwarden_tests::harness::{
    demo_stack, docker, local_ready, operator_binary, ps, remove_project, wait_for, Harness,
    LocalDriver, OperatorProcess,
};
use stackwarden_tests::images::BASE_IMAGE;

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

/// Every file under `dir`, concatenated.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.push_str(&all_text(&e.path()));
        } else {
            out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    out
}

/// Waits until `docker exec NAME printenv VAR` prints `want`.
fn printenv_until(name: &str, var: &str, want: &str) {
    wait_for(
        &format!("{var} to be the expected value in {name}"),
        TIMEOUT,
        || {
            let out = Command::new("docker")
                .args(["exec", name, "printenv", var])
                .output()
                .map_err(|e| e.to_string())?;
            let got = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            // Said without the value: the panic message is a test log line like any other.
            (got == want)
                .then_some(())
                .ok_or_else(|| format!("another value ({} bytes)", got.len()))
        },
    );
}

fn ready_in(driver: &LocalDriver, name: &str) {
    wait_for("Ready", TIMEOUT, || {
        local_ready(&driver.store, "vars", name)
            .then_some(())
            .ok_or_else(|| format!("{:?}", driver.status("vars", name).conditions))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_from_an_env_file_reaches_the_container_and_neither_status_events_nor_state() {
    let h = Harness::new("varfile");
    let container = format!("swt-varfile-{}", std::process::id());
    let pw = |n: &str| format!("pw-{}-{n}-Qx8", std::process::id());
    let compose = format!(
        "services:\n  box:\n    image: {BASE_IMAGE}\n    pull_policy: never\n    container_name: {container}\n    command: [sleep, infinity]\n    environment: {{DB_PASSWORD: \"${{DB_PASSWORD}}\"}}\n"
    );
    let manifest = serde_json::json!({
        "apiVersion": "stackwarden.dev/v1alpha1", "kind": "ServiceStack",
        "metadata": {"name": "varfile", "namespace": "vars"},
        "spec": {"compose": {"projectName": h.project, "file": compose},
                 "variablesFrom": [{"file": "stack.env"}]},
    });
    let driver = LocalDriver::start(&manifest);
    let env = driver.manifest.parent().unwrap().join("stack.env");

    // No env file yet: InvalidSpec naming it, nothing created.
    let message = wait_for("InvalidSpec naming stack.env", TIMEOUT, || {
        let status = driver.status("vars", "varfile");
        match condition::find(&status.conditions, ConditionType::InvalidSpec) {
            Some(c) if c.message.contains("stack.env") => Ok(c.message.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(message.contains("create it"), "{message}");
    assert!(h.containers().is_empty());

    // The file appears: the stack comes up with its value.
    std::fs::write(
        &env,
        format!("# the database\nDB_PASSWORD='{}'\n", pw("one")),
    )
    .unwrap();
    ready_in(&driver, "varfile");
    printenv_until(&container, "DB_PASSWORD", &pw("one"));
    let first = docker(&["inspect", "-f", "{{.Id}}", &container]);

    // Rotated through the store as key rotation will: the file rewritten in place, the edit
    // noticed, the container recreated with the new value.
    let stack = driver
        .store
        .load("vars", "varfile")
        .unwrap()
        .unwrap()
        .to_stack();
    let vars = driver.store.referenced_variables(&stack).await.unwrap();
    let location: &Location = &vars["DB_PASSWORD"].location;
    let rewrite = Rewrite {
        location,
        expected: Some(&pw("one")),
        value: &pw("two"),
        stamp: Stamp {
            rotated_at: chrono::Utc::now(),
            version: 1,
            reason: Some("test".into()),
        },
    };
    driver.store.write_variable(&stack, rewrite).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        format!("# the database\nDB_PASSWORD={}\n", pw("two"))
    );
    printenv_until(&container, "DB_PASSWORD", &pw("two"));
    let second = docker(&["inspect", "-f", "{{.Id}}", &container]);
    assert_ne!(second, first);
    ready_in(&driver, "varfile");

    // The file gone: InvalidSpec again, and what runs is left as it is.
    std::fs::remove_file(&env).unwrap();
    wait_for("InvalidSpec after the file is removed", TIMEOUT, || {
        let status = driver.status("vars", "varfile");
        match condition::find(&status.conditions, ConditionType::InvalidSpec) {
            Some(c) if c.message.contains("does not exist") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(docker(&["inspect", "-f", "{{.Id}}", &container]), second);
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &container]).trim(),
        "true"
    );

    // Nowhere else: status, events and stamps (the state directory), labels.
    let state = all_text(&driver.state);
    assert!(
        state.contains("\"rotatedAt\""),
        "no stamp in the state directory"
    );
    let labels = docker(&["inspect", "-f", "{{json .Config.Labels}}", &container]);
    for value in [pw("one"), pw("two")] {
        assert!(
            !state.contains(&value),
            "the state directory holds a password"
        );
        assert!(!labels.contains(&value), "a label holds a password");
    }
    for (path, is_dir, mode) in modes(&driver.state) {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{path} is {mode:o}, not {want:o}");
    }
}
