//! Drives the real reconcile against the real Docker engine, one stack per test, with the
//! local store (the same one `stackwarden local` uses) in a temporary state directory.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stackwarden::api::{
    condition, Condition, ConditionStatus, ConditionType, ServiceStack, ServiceStackSpec,
    ServiceStackStatus,
};
use stackwarden::reconcile::{self, Context, Requeue};
use stackwarden::store::local::LocalStore;
use stackwarden::store::StackEvent;

/// The demo example's manifest, as shipped.
pub fn demo_manifest() -> ServiceStack {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo/stack.yaml");
    let text = std::fs::read_to_string(path).expect("examples/demo/stack.yaml");
    stackwarden::api::from_yaml_value(yaml_serde::from_str(&text).expect("YAML"))
        .expect("the demo manifest parses")
}

/// The demo stack under another project name, with its backend on a free host port so tests
/// can run beside a running demo, and without the demo's backup targets (which write to
/// /var/lib/stackwarden; the backup tests declare their own).
pub fn demo_spec(project: &str) -> ServiceStackSpec {
    let mut spec = demo_manifest().spec;
    spec.backups.clear();
    spec.compose.project_name = Some(project.to_owned());
    spec.compose.file = any_backend_port(&spec.compose.file);
    spec
}

/// The demo's compose file with its backend published on a port Docker picks, so that any
/// number of demo stacks can run beside each other and beside a running demo.
pub fn any_backend_port(file: &str) -> String {
    let fixed = "\"127.0.0.1:${BACKEND_PORT:-8000}:8000\"";
    assert!(file.contains(fixed), "the demo no longer publishes {fixed}");
    file.replace(fixed, "\"127.0.0.1::8000\"")
}

/// The demo stack as `namespace/name`, under the project `name` (see [`demo_spec`]).
pub fn demo_stack(namespace: &str, name: &str) -> ServiceStack {
    let mut stack = demo_manifest();
    stack.metadata.name = Some(name.to_owned());
    stack.metadata.namespace = Some(namespace.to_owned());
    stack.spec = demo_spec(name);
    stack
}

/// Writes `stack` as a manifest file, as a person would for `stackwarden local`.
pub fn write_manifest(path: &std::path::Path, stack: &ServiceStack) -> anyhow::Result<()> {
    let yaml = yaml_serde::to_string(&serde_json::to_value(stack)?)?;
    std::fs::write(path, yaml)?;
    Ok(())
}

/// A one-service stack: quick to start, for tests that are about the loop, not the app.
pub fn redis_spec(project: &str, extra_env: &str) -> ServiceStackSpec {
    yaml_serde::from_value(
        serde_json::from_value::<yaml_serde::Value>(serde_json::json!({
            "compose": {"projectName": project, "file": redis_compose(extra_env)},
            "variables": {"REDIS_PASSWORD": "test-redis-password"},
        }))
        .unwrap(),
    )
    .unwrap()
}

/// The compose file of [`redis_spec`]: one Redis service `cache`, its password from the
/// variable `REDIS_PASSWORD`, and `extra_env` (YAML map lines) added to its environment.
pub fn redis_compose(extra_env: &str) -> String {
    format!(
        r#"
services:
  cache:
    image: stackwarden-test/redis:7
    pull_policy: never
    environment:
      REDIS_PASSWORD: ${{REDIS_PASSWORD}}
      {extra_env}
    volumes: ["cachedata:/data"]
volumes:
  cachedata: {{}}
"#
    )
}

/// One stack under test, removed from Docker when dropped (even when the test fails).
pub struct Harness {
    pub project: String,
    pub name: String,
    pub store: LocalStore,
    pub ctx: Arc<Context>,
    _state: tempfile::TempDir,
    source: std::path::PathBuf,
}

impl Harness {
    /// `tag` makes the project name unique to the test.
    pub fn new(tag: &str) -> Self {
        crate::images::ensure_images().expect("test images build");
        let project = format!("swt-{tag}-{}", std::process::id());
        let state = tempfile::tempdir().unwrap();
        let store = LocalStore::new(state.path());
        let ctx = Context::new(Arc::new(store.clone()));
        let source = state.path().join("stack.yaml");
        let h = Harness {
            name: tag.to_owned(),
            project,
            store,
            ctx,
            _state: state,
            source,
        };
        h.remove_from_docker();
        h
    }

    /// Applies a spec, as editing the manifest would; returns the generation.
    pub fn apply(&self, spec: ServiceStackSpec) -> i64 {
        self.store
            .admit("e2e", &self.name, spec, &self.source)
            .unwrap()
            .generation
    }

    pub fn stack(&self) -> ServiceStack {
        self.store
            .load("e2e", &self.name)
            .unwrap()
            .expect("applied")
            .to_stack()
    }

    pub fn uid(&self) -> String {
        self.store.load("e2e", &self.name).unwrap().unwrap().uid
    }

    pub fn status(&self) -> ServiceStackStatus {
        self.stack().status.unwrap_or_default()
    }

    pub fn condition(&self, t: ConditionType) -> Option<Condition> {
        condition::find(&self.status().conditions, t).cloned()
    }

    pub fn events(&self) -> Vec<StackEvent> {
        self.store
            .events("e2e", &self.name)
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    /// A new operator on the same state directory, as after a kill: the old one's background
    /// work (probers, jobs) stops with it and its memory is gone.
    pub fn restart_operator(&mut self) {
        self.ctx.stop_all();
        self.ctx = Context::new(Arc::new(self.store.clone()));
    }

    /// One reconcile pass.
    pub async fn pass(&self) -> Requeue {
        reconcile::reconcile(&self.stack(), &self.uid(), &self.ctx)
            .await
            .expect("reconcile")
    }

    /// Reconciles, honouring the requeue delays, until Ready is True.
    pub async fn until_ready(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            let r = self.pass().await;
            if self
                .condition(ConditionType::Ready)
                .is_some_and(|c| c.status == ConditionStatus::True)
            {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "not Ready within {timeout:?}: {:#?}",
                self.status()
            );
            tokio::time::sleep(r.0.min(Duration::from_millis(500))).await;
        }
    }

    /// Reconciles, honouring the requeue delays (at most 250 ms apart), until `done` holds.
    pub async fn until(&self, what: &str, timeout: Duration, done: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        loop {
            let r = self.pass().await;
            if done(self) {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {what}: {:#?}\nevents: {:#?}",
                self.status(),
                self.events()
            );
            tokio::time::sleep(r.0.min(Duration::from_millis(250))).await;
        }
    }

    /// A stack from a compose file alone.
    pub fn spec(&self, file: &str) -> ServiceStackSpec {
        serde_json::from_value(
            serde_json::json!({"compose": {"projectName": self.project, "file": file}}),
        )
        .unwrap()
    }

    /// Deletes the stack the way the drivers do.
    pub async fn delete(&self) {
        reconcile::cleanup(&self.stack(), &self.uid(), &self.ctx)
            .await
            .expect("cleanup");
    }

    /// service name -> container id, from Docker itself.
    pub fn containers(&self) -> BTreeMap<String, String> {
        self.ps("{{.ID}}")
    }

    /// service name -> state (`running`, `exited`, ...).
    pub fn states(&self) -> BTreeMap<String, String> {
        self.ps("{{.State}}")
    }

    /// service name -> one `docker ps` field of its container.
    fn ps(&self, field: &str) -> BTreeMap<String, String> {
        ps(&self.project, field)
    }

    pub fn volume_exists(&self, key: &str) -> bool {
        Command::new("docker")
            .args(["volume", "inspect", &format!("{}_{key}", self.project)])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn remove_from_docker(&self) {
        remove_project(&self.project);
    }
}

/// Service name -> one `docker ps` field (`{{.ID}}`, `{{.State}}`...) of its container, for
/// every container of a compose project.
pub fn ps(project: &str, field: &str) -> BTreeMap<String, String> {
    let filter = format!("label=com.docker.compose.project={project}");
    let format = format!("{{{{.Label \"com.docker.compose.service\"}}}} {field}");
    docker(&["ps", "-a", "--filter", &filter, "--format", &format])
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect()
}

/// Removes a compose project's containers, networks and volumes from Docker.
pub fn remove_project(project: &str) {
    let filter = format!("label=com.docker.compose.project={project}");
    for id in docker(&["ps", "-aq", "--filter", &filter]).lines() {
        let _ = Command::new("docker").args(["rm", "-f", "-v", id]).output();
    }
    for net in docker(&["network", "ls", "-q", "--filter", &filter]).lines() {
        let _ = Command::new("docker").args(["network", "rm", net]).output();
    }
    for vol in docker(&["volume", "ls", "-q", "--filter", &filter]).lines() {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", vol])
            .output();
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.remove_from_docker();
    }
}

/// Runs the docker CLI and returns stdout; panics with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sum of a family over all its series, from an operator's /metrics text (for a
/// histogram, give `NAME_count` or `NAME_sum`).
pub fn metric_sum(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Containers a test or benchmark created by name, removed when dropped (even on failure).
pub struct Containers(pub Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
        }
    }
}

/// Starts a container that keeps the engine busy with `exec_*` events: a healthcheck every
/// second, as many real services have. Put its name in a [`Containers`] first.
pub fn run_busy(name: &str, labels: &[(&str, &str)]) {
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--name",
        name,
        "--health-cmd",
        "true",
        "--health-interval",
        "1s",
    ]
    .map(str::to_owned)
    .to_vec();
    for (k, v) in labels {
        args.extend(["--label".to_owned(), format!("{k}={v}")]);
    }
    args.extend([
        crate::images::BASE_IMAGE.to_owned(),
        "sleep".to_owned(),
        "infinity".to_owned(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&args);
}

/// Whether `namespace/name` is Ready in the status a local driver last wrote to `store`.
pub fn local_ready(store: &LocalStore, namespace: &str, name: &str) -> bool {
    let status = store
        .load(namespace, name)
        .ok()
        .flatten()
        .map(|r| r.status)
        .unwrap_or_default();
    condition::find(&status.conditions, ConditionType::Ready)
        .is_some_and(|c| c.status == ConditionStatus::True)
}

/// A Unix-socket proxy in front of the Docker socket whose connections can be cut, to break the
/// operator's events stream the way a dropped connection would.
pub struct SocketProxy {
    pub path: std::path::PathBuf,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl SocketProxy {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let registry = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut engine) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
                registry.lock().unwrap().push(task.abort_handle());
            }
        });
        SocketProxy {
            path,
            conns,
            accept,
            _dir: dir,
        }
    }

    /// `unix://...` address for `spec.docker.host`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Drops every open connection; new ones are still accepted.
    pub fn cut(&self) -> usize {
        let conns = std::mem::take(&mut *self.conns.lock().unwrap());
        conns.iter().for_each(|c| c.abort());
        conns.len()
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The local driver running in this process on one manifest, as `stackwarden local DIR` runs it;
/// stopped when dropped.
pub struct LocalDriver {
    pub store: LocalStore,
    /// The state directory (`--state-dir` of the command line's requests).
    pub state: std::path::PathBuf,
    /// The manifest file; rewrite or remove it to drive the stack.
    pub manifest: std::path::PathBuf,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl LocalDriver {
    /// Writes `stack` (a ServiceStack as JSON) as the only manifest and starts the driver.
    pub fn start(stack: &serde_json::Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        let manifest = manifests.join("stack.yaml");
        std::fs::write(&manifest, yaml_serde::to_string(stack).unwrap()).unwrap();
        let state = dir.path().join("state");
        let task = tokio::spawn(stackwarden::driver::local::run(
            stackwarden::driver::local::LocalOptions {
                manifests,
                state_dir: state.clone(),
                exit_when_ready: false,
                timeout: None,
                metrics_addr: None,
            },
        ));
        LocalDriver {
            store: LocalStore::new(&state),
            state,
            manifest,
            task,
            _dir: dir,
        }
    }

    /// The status the driver last wrote for `namespace/name`.
    pub fn status(&self, namespace: &str, name: &str) -> ServiceStackStatus {
        self.store
            .load(namespace, name)
            .ok()
            .flatten()
            .map(|r| r.status)
            .unwrap_or_default()
    }

    /// Whether `namespace/name` is Ready.
    pub fn ready(&self, namespace: &str, name: &str) -> bool {
        local_ready(&self.store, namespace, name)
    }
}

impl Drop for LocalDriver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `probe` until it answers `Ok`, first every 100 ms, then less often (up to every
/// second), for at most `timeout`; panics naming `what` and what the last probe saw.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    let mut every = Duration::from_millis(100);
    loop {
        match probe() {
            Ok(v) => return v,
            Err(seen) if start.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => {
                std::thread::sleep(every);
                every = (every * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The real `stackwarden` binary of the profile and target directory these tests were built
/// with, built or brought up to date once per test process. The tests crate links the
/// operator's library, not its binary, so cargo neither builds the binary for it nor sets
/// `CARGO_BIN_EXE_stackwarden`. Always asking cargo (rather than comparing file times) leaves
/// staleness to the one that knows; when nothing changed it takes a second or two.
pub fn operator_binary() -> std::path::PathBuf {
    // Another build to measure or test, as is.
    if let Some(bin) = std::env::var_os("STACKWARDEN_BIN") {
        return bin.into();
    }
    static BIN: std::sync::OnceLock<Result<std::path::PathBuf, String>> =
        std::sync::OnceLock::new();
    BIN.get_or_init(build_operator_binary)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// How long the build of the operator binary may take: a clean one is minutes on a loaded
/// machine; past this, something is stuck (cargo waiting on a lock, say).
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);

/// Variables cargo sets for the crates and tests it builds and runs, besides `CARGO_PKG_*`.
const CARGO_SET: [&str; 9] = [
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

fn build_operator_binary() -> Result<std::path::PathBuf, String> {
    use std::path::Path;
    // A test executable is TARGET_DIR/PROFILE_DIR/deps/NAME-HASH, a binary (the bench)
    // TARGET_DIR/PROFILE_DIR/NAME.
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(|d| match d.file_name() {
            Some(n) if n == "deps" => d.parent(),
            _ => Some(d),
        })
        .ok_or_else(|| format!("{} is not in TARGET/PROFILE", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .expect("a profile directory has a parent");
    // Cargo names the dev profile's directory `debug`; every other profile's by its name.
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(p) => p,
        None => return Err(format!("no profile in {}", exe.display())),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let log = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let mut command = Command::new(&cargo);
    // What cargo set for this test (CARGO_MANIFEST_DIR, CARGO_PKG_NAME...) goes: build scripts
    // watch some of these (ring's does), so they would rerun, and the next `cargo test`, seeing
    // the variables gone again, would rebuild ring and everything on it once more.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if CARGO_SET.contains(&&*key) || key.starts_with("CARGO_PKG_") {
            command.env_remove(&*key);
        }
    }
    // Both packages, so that dependency features are unified as for `cargo test -p
    // stackwarden-tests`, and the build reuses what that one compiled.
    let mut child = command
        .args(["build", "-p", "stackwarden", "-p", "stackwarden-tests"])
        .args(["--bin", "stackwarden", "--profile", profile])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .stdout(std::process::Stdio::null())
        // A file, not a pipe: nobody reads while waiting, and a full pipe would block cargo.
        .stderr(log.reopen().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("{cargo:?} build: {e}"))?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if start.elapsed() > BUILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
    let bin = profile_dir.join("stackwarden");
    match status {
        Some(s) if s.success() && bin.is_file() => Ok(bin),
        Some(s) => Err(format!(
            "building the operator binary {} failed ({s}); cargo said:\n{output}",
            bin.display()
        )),
        None => Err(format!(
            "building the operator binary {} took over {BUILD_TIMEOUT:?}; cargo said:\n{output}",
            bin.display()
        )),
    }
}

/// A real `stackwarden` process (`controller` or `local`) writing JSON log lines to a file;
/// killed when dropped, and the tail of its log printed when that happens in a failing test.
pub struct OperatorProcess {
    pub name: String,
    child: std::process::Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl OperatorProcess {
    /// Starts `stackwarden ARGS` with `RUST_LOG=rust_log` and the environment given.
    pub fn start(name: &str, args: &[&str], rust_log: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operator.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(operator_binary())
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", rust_log)
            .env("STACKWARDEN_LOG_FORMAT", "json")
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("the operator binary starts");
        OperatorProcess {
            name: name.to_owned(),
            child,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines at `level` (`ERROR`, `WARN`...), and every line that is not a JSON log line
    /// (a panic's message, the error the process exited with).
    pub fn lines_at(&self, level: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| match serde_json::from_str::<serde_json::Value>(l) {
                Ok(v) => v["level"] == level,
                Err(_) => true,
            })
            .map(str::to_owned)
            .collect()
    }

    /// Whether a log line's message contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log().lines().any(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v["fields"]["message"].as_str().unwrap_or("").contains(text))
        })
    }

    /// Where it serves /metrics: it is started with `--metrics-addr 127.0.0.1:0` (no port to
    /// collide on) and logs the address it bound.
    pub fn metrics_addr(&mut self, timeout: Duration) -> String {
        wait_for(&format!("{} to serve /metrics", self.name), timeout, || {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited ({status}):\n{}", self.name, self.log());
            }
            self.log()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find_map(|v| v["fields"]["bound"].as_str().map(str::to_owned))
                .ok_or_else(|| format!("no address logged yet:\n{}", self.log()))
        })
    }

    /// The /metrics text.
    pub fn metrics(&mut self) -> String {
        let url = format!(
            "http://{}/metrics",
            self.metrics_addr(Duration::from_secs(60))
        );
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        agent
            .get(&url)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Sends SIGTERM, as the kubelet or a service manager does, and waits for it to exit.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let pid = self.pid().to_string();
        let out = Command::new("kill").args(["-TERM", &pid]).output().unwrap();
        assert!(out.status.success(), "kill -TERM {pid}: {out:?}");
        let name = self.name.clone();
        wait_for(&format!("{name} to exit after SIGTERM"), timeout, || {
            self.exited()
                .ok_or_else(|| format!("still running; log:\n{}", self.log()))
        })
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "--- last {} lines of {}'s log ---\n{}",
                tail.len(),
                self.name,
                tail.join("\n")
            );
        }
    }
}

/// The demo with its backend reached on the project network only: a service publishing a
/// port cannot have two containers at once, so this one can be surged.
/// The same demo spec with one more environment variable on the backend: a new revision of
/// it (the backend is recreated or rolled out, the rest untouched).
pub fn with_backend_env(spec: &ServiceStackSpec, key: &str, value: &str) -> ServiceStackSpec {
    let mut next = spec.clone();
    let line = spec
        .compose
        .file
        .lines()
        .find(|l| l.trim_start().starts_with("REDIS_HOST:"))
        .expect("the demo backend sets REDIS_HOST")
        .to_owned();
    let indent = &line[..line.len() - line.trim_start().len()];
    next.compose.file = spec
        .compose
        .file
        .replace(&line, &format!("{line}\n{indent}{key}: \"{value}\""));
    next
}

pub fn unpublished_demo(project: &str) -> ServiceStackSpec {
    let mut spec = demo_spec(project);
    let file: Vec<&str> = spec
        .compose
        .file
        .lines()
        .filter(|l| !l.trim_start().starts_with("ports:"))
        .collect();
    spec.compose.file = file.join("\n");
    spec
}

/// Starts `demo-app poll` (a GET of `url` every 20 ms over fresh connections) on `network`,
/// with `env` (`DEMO_POLL_VERBOSE=1` tells every request in its log). Put `name` in a
/// [`Containers`] first.
pub fn start_poller(name: &str, env: &[(&str, &str)], network: &str, url: &str) {
    let mut args: Vec<String> = ["run", "-d", "--name", name, "--network", network]
        .map(str::to_owned)
        .to_vec();
    for (k, v) in env {
        args.extend(["--env".to_owned(), format!("{k}={v}")]);
    }
    args.extend(
        [
            "--entrypoint",
            "demo-app",
            crate::images::DEMO_APP_IMAGE,
            "poll",
            url,
            "--every-ms",
            "20",
        ]
        .map(str::to_owned),
    );
    docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Stops the poller (SIGTERM) and reads its summary: requests, failed, longest_gap_s.
pub fn poller_summary(name: &str) -> serde_json::Value {
    docker(&["stop", name]);
    let logs = docker(&["logs", name]);
    let line = logs
        .lines()
        .rfind(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no summary from the poller: {logs}"));
    serde_json::from_str(line).unwrap()
}
