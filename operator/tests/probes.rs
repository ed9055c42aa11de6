//! Probes against real servers: the test images' PostgreSQL, Redis and demo app, started with
//! the docker CLI on a throwaway network, observed through the real engine adapter, probed
//! through both access modes. Nothing is mocked.
//!
//! Builds the test images first when they are missing or stale (`tests/images/build.sh`, which
//! skips up-to-date images), and needs the host's route to bridge networks (true on a Docker
//! host, which is what `probeAccess: Network` assumes).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use stackwarden::api::{
    ExecProbe, HttpProbe, JsonFieldMatch, PostgresProbe, Probe, ProbeAccess, RedisProbe,
    ServiceStack, TcpProbe,
};
use stackwarden::docker::{labels, BollardEngine, Engine, Engines};
use stackwarden::probe::{self, ProbeError, ProbeErrorKind, Targets};

const POSTGRES: &str = "stackwarden-test/postgres:15";
const REDIS: &str = "stackwarden-test/redis:7";
const DEMO: &str = "stackwarden-test/demo-app:latest";

const DB_PASSWORD: &str = "pg-Right-Password-4711";
const WRONG_DB_PASSWORD: &str = "pg-Wrong-Password-0815";
const REDIS_PASSWORD: &str = "redis-Right-Password-1234";
const WRONG_REDIS_PASSWORD: &str = "redis-Wrong-Password-5678";

/// Long enough for a loaded 2-core machine, short enough to keep the suite quick.
const TIMEOUT: Duration = Duration::from_secs(3);
/// How long a server may take to start (PostgreSQL runs initdb first).
const STARTUP: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

/// Runs the image build script once per process. `cargo test --workspace` runs this crate's
/// tests before those of `stackwarden-tests` (which build the images too), so on a fresh
/// machine this is where they are built; the script serialises concurrent callers itself.
fn build_images() {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/images/build.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        Err(format!(
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    });
    if let Err(e) = result {
        panic!("building the test images failed: {e}");
    }
    for image in [POSTGRES, REDIS, DEMO] {
        let ok = Command::new("docker")
            .args(["image", "inspect", image])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "image {image} is still missing after tests/images/build.sh"
        );
    }
}

/// One service to start: its container gets the compose and stackwarden labels, so the engine
/// adapter's `observe` finds it exactly as it finds the containers the operator creates.
struct Service<'a> {
    name: &'a str,
    image: &'a str,
    env: &'a [(&'a str, &'a str)],
    /// Container ports published on 127.0.0.1 at a port Docker picks.
    publish: &'a [u16],
    command: &'a [&'a str],
    /// `stackwarden.dev/uid` label; the stack's own uid unless a test says otherwise.
    uid: Option<&'a str>,
}

impl<'a> Service<'a> {
    fn new(name: &'a str, image: &'a str) -> Self {
        Self {
            name,
            image,
            env: &[],
            publish: &[],
            command: &[],
            uid: None,
        }
    }
}

/// A throwaway "stack": a network and labelled containers, all removed when dropped, also when
/// the test fails.
struct Stack {
    project: String,
    uid: String,
    network: String,
    containers: Vec<String>,
    compose: String,
    variables: BTreeMap<String, String>,
    engine: BollardEngine,
}

impl Stack {
    async fn new(tag: &str) -> Self {
        build_images();
        let project = format!("swprobe-{tag}-{}", std::process::id());
        let network = format!("{project}_default");
        let engine = Engines::default()
            .get("unix:///var/run/docker.sock")
            .await
            .expect("the local Docker engine answers");
        let stack = Self {
            uid: format!("uid-{project}"),
            compose: "services:\n".to_owned(),
            variables: [
                ("DB_PASSWORD", DB_PASSWORD),
                ("WRONG_DB_PASSWORD", WRONG_DB_PASSWORD),
                ("REDIS_PASSWORD", REDIS_PASSWORD),
                ("WRONG_REDIS_PASSWORD", WRONG_REDIS_PASSWORD),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            containers: Vec::new(),
            project,
            network,
            engine,
        };
        stack.remove_from_docker();
        docker(&[
            "network",
            "create",
            "--label",
            &format!("{}={}", labels::PROJECT, stack.project),
            &stack.network,
        ]);
        stack
    }

    fn container_name(&self, service: &str) -> String {
        format!("{}-{service}-1", self.project)
    }

    /// Starts a service's container and adds the service to the compose file.
    fn start(&mut self, s: Service) {
        let name = self.container_name(s.name);
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &self.network,
            "--network-alias",
            s.name,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        for (k, v) in [
            (labels::PROJECT, self.project.as_str()),
            (labels::SERVICE, s.name),
            (labels::UID, s.uid.unwrap_or(&self.uid)),
        ] {
            args.extend(["--label".into(), format!("{k}={v}")]);
        }
        for (k, v) in s.env {
            args.extend(["-e".into(), format!("{k}={v}")]);
        }
        for port in s.publish {
            args.extend(["-p".into(), format!("127.0.0.1::{port}")]);
        }
        args.push(s.image.into());
        args.extend(s.command.iter().map(|c| c.to_string()));
        self.containers.push(name);
        docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let ports: Vec<String> = s
            .publish
            .iter()
            .map(|p| format!("\"127.0.0.1::{p}\""))
            .collect();
        self.compose.push_str(&format!(
            "  {}: {{image: {}, ports: [{}]}}\n",
            s.name,
            s.image,
            ports.join(", ")
        ));
    }

    /// The project as `compose::load` builds it from the equivalent compose file.
    fn project(&self) -> stackwarden::compose::Project {
        let spec = serde_json::from_value(serde_json::json!({
            "compose": {"projectName": self.project, "file": self.compose},
            "variables": self.variables,
        }))
        .unwrap();
        stackwarden::compose::load(&ServiceStack::new("probes", spec)).expect("compose file loads")
    }

    /// Observes the project through the engine adapter, as the operator does.
    async fn targets(&self, access: ProbeAccess) -> Targets {
        let observed = self
            .engine
            .observe(&self.project, &[], &[], &[])
            .await
            .expect("observe");
        Targets::new(
            &self.project(),
            &observed.containers,
            access,
            &stackwarden::docker::Claim::labelled(&self.uid),
        )
    }

    async fn check(
        &self,
        probe: &Probe,
        service: &str,
        targets: &Targets,
    ) -> Result<(), ProbeError> {
        self.check_within(probe, service, targets, TIMEOUT).await
    }

    async fn check_within(
        &self,
        probe: &Probe,
        service: &str,
        targets: &Targets,
        timeout: Duration,
    ) -> Result<(), ProbeError> {
        let result = probe::check(
            probe,
            service,
            targets,
            &self.variables,
            &self.engine,
            timeout,
        )
        .await;
        if let Err(e) = &result {
            for value in self.variables.values() {
                assert!(
                    !e.message.contains(value.as_str()),
                    "a variable value in: {}",
                    e.message
                );
            }
        }
        result
    }

    /// Waits until `probe` passes (the server has started); panics with the last error if not.
    async fn until_passes(&self, probe: &Probe, service: &str, access: ProbeAccess) {
        let start = Instant::now();
        loop {
            let targets = self.targets(access).await;
            match self.check(probe, service, &targets).await {
                Ok(()) => return,
                Err(e) if start.elapsed() > STARTUP => {
                    panic!(
                        "{service} did not come up within {STARTUP:?}: {e:?}\n{}",
                        self.logs(service)
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Waits for the container's own Docker healthcheck, independent of the code under test.
    async fn until_healthy(&self, service: &str) {
        let start = Instant::now();
        let name = self.container_name(service);
        while docker(&["inspect", "-f", "{{.State.Health.Status}}", &name]).trim() != "healthy" {
            assert!(
                start.elapsed() < STARTUP,
                "{service} not healthy within {STARTUP:?}\n{}",
                self.logs(service)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn logs(&self, service: &str) -> String {
        let out = Command::new("docker")
            .args(["logs", "--tail", "30", &self.container_name(service)])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn remove_from_docker(&self) {
        let filter = format!("label={}={}", labels::PROJECT, self.project);
        let ids = docker_lossy(&["ps", "-aq", "--filter", &filter]);
        for id in ids.split_whitespace() {
            // A paused container is unpaused first: not every engine removes it otherwise.
            let _ = docker_lossy(&["unpause", id]);
            let _ = docker_lossy(&["rm", "-f", "-v", id]);
        }
        let _ = docker_lossy(&["network", "rm", &self.network]);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.remove_from_docker();
    }
}

/// Runs the docker CLI and returns stdout; panics with stderr on failure.
fn docker(args: &[&str]) -> String {
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

/// The docker CLI for cleanup: failures do not matter.
fn docker_lossy(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn http(url: &str, expect_status: Option<u16>, json: Option<(&str, &str)>) -> Probe {
    Probe::Http(HttpProbe {
        url: url.to_owned(),
        expect_status,
        json_field: json.map(|(path, equals)| JsonFieldMatch {
            path: path.into(),
            equals: equals.into(),
        }),
    })
}

fn tcp(port: u16) -> Probe {
    Probe::Tcp(TcpProbe { port })
}

fn pg(database: &str, password_variable: Option<&str>) -> Probe {
    Probe::Postgres(PostgresProbe {
        port: None,
        database: database.into(),
        user: "app".into(),
        password_variable: password_variable.map(str::to_owned),
    })
}

fn redis(password_variable: Option<&str>) -> Probe {
    Probe::Redis(RedisProbe {
        port: None,
        password_variable: password_variable.map(str::to_owned),
    })
}

fn exec(command: &[&str]) -> Probe {
    Probe::Exec(ExecProbe {
        command: command.iter().map(|c| c.to_string()).collect(),
    })
}

#[track_caller]
fn assert_fails(result: Result<(), ProbeError>, kind: ProbeErrorKind, needles: &[&str]) -> String {
    let e = result.expect_err("the probe must fail");
    println!("{}: {}", e.kind, e.message);
    assert_eq!(e.kind, kind, "{}", e.message);
    for needle in needles {
        assert!(
            e.message.contains(needle),
            "{needle:?} not in: {}",
            e.message
        );
    }
    e.message
}

fn postgres_service() -> Service<'static> {
    Service {
        env: &[
            ("POSTGRES_USER", "app"),
            ("POSTGRES_DB", "appdb"),
            ("POSTGRES_PASSWORD", DB_PASSWORD),
        ],
        ..Service::new("postgres", POSTGRES)
    }
}

fn redis_service(password: bool) -> Service<'static> {
    Service {
        env: if password {
            &[("REDIS_PASSWORD", REDIS_PASSWORD)]
        } else {
            &[]
        },
        ..Service::new("redis", REDIS)
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn http_probe_checks_status_and_json_field_of_the_demo_app() {
    let mut s = Stack::new("http").await;
    s.start(postgres_service());
    s.start(redis_service(true));
    s.start(Service {
        env: &[
            ("DB_USER", "app"),
            ("DB_NAME", "appdb"),
            ("DB_PASSWORD", DB_PASSWORD),
            ("REDIS_PASSWORD", REDIS_PASSWORD),
        ],
        publish: &[8000],
        ..Service::new("backend", DEMO)
    });
    s.until_healthy("postgres").await;
    s.until_healthy("redis").await;
    s.until_healthy("backend").await;
    let t = s.targets(ProbeAccess::Network).await;
    let health = "http://backend:8000/health";

    // Any 2xx; the expected status; a JSON field, as a string and as a non-string.
    s.check(&http(health, None, None), "backend", &t)
        .await
        .unwrap();
    s.check(&http(health, Some(200), None), "backend", &t)
        .await
        .unwrap();
    s.check(
        &http(health, None, Some(("status", "healthy"))),
        "backend",
        &t,
    )
    .await
    .unwrap();
    s.check(
        &http(
            "http://backend:8000/readiness",
            Some(200),
            Some(("ready", "true")),
        ),
        "backend",
        &t,
    )
    .await
    .unwrap();

    // A field with another value, a missing field, another status.
    assert_fails(
        s.check(&http(health, None, Some(("status", "ok"))), "backend", &t)
            .await,
        ProbeErrorKind::BadBody,
        &[
            "GET http://backend:8000/health",
            "`status` is \"healthy\"",
            "expected \"ok\"",
        ],
    );
    assert_fails(
        s.check(
            &http(health, None, Some(("checks.db", "ok"))),
            "backend",
            &t,
        )
        .await,
        ProbeErrorKind::BadBody,
        &["no field `checks.db`"],
    );
    assert_fails(
        s.check(&http(health, Some(204), None), "backend", &t).await,
        ProbeErrorKind::BadStatus,
        &["answered status 200, expected status 204"],
    );
    assert_fails(
        s.check(&http("http://backend:8000/nope", None, None), "backend", &t)
            .await,
        ProbeErrorKind::BadStatus,
        &["answered status 404, expected a 2xx status"],
    );

    // The health switch: /health answers 503, and the message quotes the body's reason.
    let published = t.address("backend", 8000).unwrap();
    stackwarden::install_crypto_provider();
    let admin = reqwest::Client::builder().no_proxy().build().unwrap();
    let switch = |on: bool| {
        admin
            .post(format!("http://{published}/admin/fail-health?on={on}"))
            .send()
    };
    assert!(switch(true).await.unwrap().status().is_success());
    assert_fails(
        s.check(&http(health, None, None), "backend", &t).await,
        ProbeErrorKind::BadStatus,
        &["answered status 503", "fail-health fault is on"],
    );
    assert!(switch(false).await.unwrap().status().is_success());
    s.check(&http(health, None, None), "backend", &t)
        .await
        .unwrap();

    // A port nothing listens on.
    assert_fails(
        s.check(
            &http("http://backend:8001/health", None, None),
            "backend",
            &t,
        )
        .await,
        ProbeErrorKind::Unreachable,
        &[
            "Connection refused",
            "nothing listens on port 8001 of `backend`",
        ],
    );
}

#[tokio::test]
async fn both_probe_access_modes_reach_the_service() {
    let mut s = Stack::new("access").await;
    s.start(Service {
        publish: &[8000],
        ..Service::new("backend", DEMO)
    });
    s.start(redis_service(false));
    let root = http("http://backend:8000/", Some(200), None);
    s.until_passes(&root, "backend", ProbeAccess::Network).await;
    s.until_healthy("redis").await;
    let backend = s.container_name("backend");

    // Network: the container's address on the project network.
    let t = s.targets(ProbeAccess::Network).await;
    let ip = docker(&[
        "inspect",
        "-f",
        &format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            s.network
        ),
        &backend,
    ]);
    let on_network: SocketAddr = format!("{}:8000", ip.trim()).parse().unwrap();
    assert_eq!(t.address("backend", 8000).unwrap(), on_network);
    s.check(&root, "backend", &t).await.unwrap();
    s.check(&tcp(8000), "backend", &t).await.unwrap();
    s.check(&tcp(6379), "redis", &t).await.unwrap();

    // PublishedPorts: where `docker port` says the port is published.
    let t = s.targets(ProbeAccess::PublishedPorts).await;
    let published: SocketAddr = docker(&["port", &backend, "8000/tcp"])
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(t.address("backend", 8000).unwrap(), published);
    assert_ne!(published, on_network);
    s.check(&root, "backend", &t).await.unwrap();
    s.check(&tcp(8000), "backend", &t).await.unwrap();
    // Redis publishes nothing: the message says what to do.
    assert_fails(
        s.check(&tcp(6379), "redis", &t).await,
        ProbeErrorKind::NotPublished,
        &[
            "port 6379 of service `redis` is not published",
            "probeAccess Network",
        ],
    );
    assert_fails(
        s.check(&redis(None), "redis", &t).await,
        ProbeErrorKind::NotPublished,
        &["port 6379"],
    );

    // A URL naming a service the compose file does not have.
    assert_fails(
        s.check(&http("http://frontend:3000/", None, None), "backend", &t)
            .await,
        ProbeErrorKind::UnknownService,
        &["`frontend`", "backend, redis"],
    );
}

#[tokio::test]
async fn tcp_probe_passes_on_an_open_port_and_fails_on_a_closed_one() {
    let mut s = Stack::new("tcp").await;
    s.start(redis_service(false));
    // The same project and service name under another stack's uid: never probed.
    s.start(Service {
        uid: Some("someone-else"),
        ..Service::new("intruder", REDIS)
    });
    s.until_healthy("redis").await;
    s.until_healthy("intruder").await;
    let t = s.targets(ProbeAccess::Network).await;
    s.check(&tcp(6379), "redis", &t).await.unwrap();
    assert_fails(
        s.check(&tcp(6380), "redis", &t).await,
        ProbeErrorKind::Unreachable,
        &["TCP connect to redis:6380", "nothing listens on port 6380"],
    );
    assert_fails(
        s.check(&tcp(6379), "intruder", &t).await,
        ProbeErrorKind::NotRunning,
        &["service `intruder` has no container"],
    );
}

#[tokio::test]
async fn postgres_probe_logs_in_and_a_wrong_password_is_auth_failed() {
    let mut s = Stack::new("pg").await;
    s.start(Service {
        publish: &[5432],
        ..postgres_service()
    });
    s.until_healthy("postgres").await;
    let t = s.targets(ProbeAccess::Network).await;
    s.check(&pg("appdb", Some("DB_PASSWORD")), "postgres", &t)
        .await
        .unwrap();

    let message = assert_fails(
        s.check(&pg("appdb", Some("WRONG_DB_PASSWORD")), "postgres", &t)
            .await,
        ProbeErrorKind::AuthFailed,
        &[
            "login as app to database appdb",
            "spec.variables.WRONG_DB_PASSWORD",
        ],
    );
    // `check_within` already refuses every variable value; the two passwords, explicitly:
    assert!(!message.contains(DB_PASSWORD) && !message.contains(WRONG_DB_PASSWORD));
    assert_fails(
        s.check(&pg("appdb", None), "postgres", &t).await,
        ProbeErrorKind::AuthFailed,
        &["set passwordVariable"],
    );
    assert_fails(
        s.check(&pg("nosuchdb", Some("DB_PASSWORD")), "postgres", &t)
            .await,
        ProbeErrorKind::QueryFailed,
        &["database nosuchdb does not exist"],
    );
    assert_fails(
        s.check(&pg("appdb", Some("NO_SUCH_VARIABLE")), "postgres", &t)
            .await,
        ProbeErrorKind::Misconfigured,
        &["`NO_SUCH_VARIABLE`"],
    );

    // Through the published port as well.
    let t = s.targets(ProbeAccess::PublishedPorts).await;
    assert!(t.address("postgres", 5432).unwrap().ip().is_loopback());
    s.check(&pg("appdb", Some("DB_PASSWORD")), "postgres", &t)
        .await
        .unwrap();
    assert_fails(
        s.check(&pg("appdb", Some("WRONG_DB_PASSWORD")), "postgres", &t)
            .await,
        ProbeErrorKind::AuthFailed,
        &[],
    );
}

#[tokio::test]
async fn every_variable_value_is_masked_out_of_probe_messages() {
    let mut s = Stack::new("mask").await;
    s.start(postgres_service());
    s.until_healthy("postgres").await;
    let t = s.targets(ProbeAccess::Network).await;
    // The database name happens to be a variable's value: the server's answer quotes it.
    s.variables
        .insert("TENANT".into(), "tenant-db-secret-name".into());
    let e = s
        .check(
            &pg("tenant-db-secret-name", Some("DB_PASSWORD")),
            "postgres",
            &t,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ProbeErrorKind::QueryFailed, "{}", e.message);
    assert!(e.message.contains("<redacted>"), "{}", e.message);
    // An exec probe whose output prints the password it was given.
    let e = s
        .check(
            &exec(&[
                "sh",
                "-c",
                "echo \"password is $POSTGRES_PASSWORD\"; exit 2",
            ]),
            "postgres",
            &t,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ProbeErrorKind::CommandFailed, "{}", e.message);
    assert!(
        e.message.contains("password is <redacted>"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn redis_probe_authenticates_and_pings() {
    let mut s = Stack::new("redis").await;
    s.start(redis_service(true));
    s.start(Service {
        publish: &[6379],
        ..Service::new("open", REDIS)
    });
    s.until_healthy("redis").await;
    s.until_healthy("open").await;
    let t = s.targets(ProbeAccess::Network).await;
    s.check(&redis(Some("REDIS_PASSWORD")), "redis", &t)
        .await
        .unwrap();
    let message = assert_fails(
        s.check(&redis(Some("WRONG_REDIS_PASSWORD")), "redis", &t)
            .await,
        ProbeErrorKind::AuthFailed,
        &[
            "Redis PING on redis:6379",
            "password was refused",
            "spec.variables.WRONG_REDIS_PASSWORD",
        ],
    );
    assert!(!message.contains(REDIS_PASSWORD) && !message.contains(WRONG_REDIS_PASSWORD));
    assert_fails(
        s.check(&redis(None), "redis", &t).await,
        ProbeErrorKind::AuthFailed,
        &["authentication required", "set passwordVariable"],
    );

    // A server without a password: PING alone passes; a password it does not expect is refused.
    s.check(&redis(None), "open", &t).await.unwrap();
    assert_fails(
        s.check(&redis(Some("REDIS_PASSWORD")), "open", &t).await,
        ProbeErrorKind::AuthFailed,
        &["server has none configured"],
    );
    let t = s.targets(ProbeAccess::PublishedPorts).await;
    s.check(&redis(None), "open", &t).await.unwrap();
}

#[tokio::test]
async fn exec_probe_passes_on_exit_zero_and_reports_the_exit_code() {
    let mut s = Stack::new("exec").await;
    s.start(redis_service(false));
    s.until_healthy("redis").await;
    let t = s.targets(ProbeAccess::Network).await;
    s.check(&exec(&["redis-cli", "ping"]), "redis", &t)
        .await
        .unwrap();
    s.check(&exec(&["true"]), "redis", &t).await.unwrap();
    assert_fails(
        s.check(
            &exec(&["sh", "-c", "echo first line; echo second >&2; exit 3"]),
            "redis",
            &t,
        )
        .await,
        ProbeErrorKind::CommandFailed,
        &["exited with code 3", "first line", "second"],
    );
    assert_fails(
        s.check(&exec(&["/no/such/binary"]), "redis", &t).await,
        ProbeErrorKind::CommandFailed,
        &["/no/such/binary"],
    );
}

#[tokio::test]
async fn probes_of_a_stopped_container_are_not_running() {
    let mut s = Stack::new("stopped").await;
    s.start(redis_service(false));
    s.until_healthy("redis").await;
    docker(&["stop", "-t", "1", &s.container_name("redis")]);
    for access in [ProbeAccess::Network, ProbeAccess::PublishedPorts] {
        let t = s.targets(access).await;
        for probe in [tcp(6379), redis(None), exec(&["true"])] {
            assert_fails(
                s.check(&probe, "redis", &t).await,
                ProbeErrorKind::NotRunning,
                &["service `redis` is not running", "is exited", "docker logs"],
            );
        }
    }
}

#[tokio::test]
async fn a_hung_service_fails_with_timeout_within_the_timeout() {
    let mut s = Stack::new("hung").await;
    s.start(redis_service(false));
    s.start(Service {
        publish: &[8000],
        ..Service::new("backend", DEMO)
    });
    s.until_healthy("redis").await;
    let root = http("http://backend:8000/", None, None);
    s.until_passes(&root, "backend", ProbeAccess::Network).await;
    // Observed while running, then frozen: the address is right, nothing answers.
    let network = s.targets(ProbeAccess::Network).await;
    let published = s.targets(ProbeAccess::PublishedPorts).await;
    docker(&["pause", &s.container_name("redis")]);
    docker(&["pause", &s.container_name("backend")]);
    let timeout = Duration::from_millis(800);
    // Not a TCP connect: the kernel completes the handshake of a frozen process, so a tcp probe
    // passes on a hung server. Only probes that wait for an answer see the hang.
    for (probe, service, targets) in [
        (redis(None), "redis", &network),
        (root.clone(), "backend", &network),
        (root.clone(), "backend", &published),
    ] {
        let start = Instant::now();
        // A guard of our own, so a probe that ignores its timeout fails the test, not hangs it.
        let result = tokio::time::timeout(
            timeout * 4,
            s.check_within(&probe, service, targets, timeout),
        )
        .await
        .expect("the probe outlived its timeout");
        let took = start.elapsed();
        let message = assert_fails(result, ProbeErrorKind::Timeout, &["no answer"]);
        assert!(
            took >= timeout && took < timeout + Duration::from_millis(700),
            "{} took {took:?} with a timeout of {timeout:?}: {message}",
            probe::kind_name(&probe)
        );
    }
}
