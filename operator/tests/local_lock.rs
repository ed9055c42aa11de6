//! One `stackwarden local` per state directory: a second one on the same directory refuses at
//! once with a message naming it (two would both run every backup job), and the first stops
//! cleanly on SIGTERM, the signal a service manager sends. The real binary, no Docker needed:
//! the manifest directory is empty.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stackwarden::store::local::LocalStore;

const BIN: &str = env!("CARGO_BIN_EXE_stackwarden");
const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn a_second_local_operator_on_one_state_directory_refuses_and_the_first_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (manifests, state) = (dir.path().join("manifests"), dir.path().join("state"));
    std::fs::create_dir(&manifests).unwrap();
    let local = |stderr: Stdio| {
        Command::new(BIN)
            .args([
                "local",
                manifests.to_str().unwrap(),
                "--metrics-addr",
                "off",
            ])
            .arg("--state-dir")
            .arg(&state)
            .env("RUST_LOG", "info")
            .stderr(stderr)
            .spawn()
            .expect("the binary starts")
    };
    let mut first = local(Stdio::piped());
    let store = LocalStore::new(&state);
    let started = Instant::now();
    while !store.operator_running() {
        assert!(
            started.elapsed() < TIMEOUT,
            "the first operator never took the lock"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first operator exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let second = local(Stdio::piped()).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second must refuse: {stderr}");
    assert!(
        stderr.contains("another `stackwarden local` already runs on the state directory")
            && stderr.contains(state.to_str().unwrap()),
        "{stderr}"
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first keeps running"
    );

    let pid = first.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = first.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "SIGTERM is a clean stop: {stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    assert!(!store.operator_running(), "the lock is released");
}
