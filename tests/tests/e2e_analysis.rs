//! The rollout analysis gate on the real demo app (issue 11): its `/metrics` page scraped
//! over a window while the test sends it traffic. With its error-rate fault at 50 % the
//! ErrorRate gate fails; switched off, the same container passes, although its counters still
//! hold every error of before (only the window counts).
//!
//! The container is reached at its address on a throwaway bridge network, as the operator
//! does with `probeAccess: Network` on the Docker host.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stackwarden::api::rollout::AnalysisSpec;
use stackwarden::decide::analysis::{Gate, Verdict};
use stackwarden::jobs::analysis::{analyse, baseline_latency};
use stackwarden_tests::harness::docker;
use stackwarden_tests::images::{ensure_images, DEMO_APP_IMAGE};
use tokio_util::sync::CancellationToken;

/// How long the demo app may take to answer after `docker run` on a loaded machine.
const STARTUP: Duration = Duration::from_secs(60);

/// The demo app's container and its network, removed when dropped (also when the test fails).
struct Demo {
    name: String,
    network: String,
    addr: SocketAddr,
}

impl Demo {
    fn start(error_rate: &str) -> Self {
        ensure_images().expect("test images");
        let name = format!("swt-analysis-{}", std::process::id());
        let network = format!("{name}-net");
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        let _ = Command::new("docker")
            .args(["network", "rm", &network])
            .output();
        docker(&["network", "create", &network]);
        let mut demo = Demo {
            name,
            network,
            addr: SocketAddr::from(([0, 0, 0, 0], 8000)),
        };
        let rate = format!("DEMO_ERROR_RATE={error_rate}");
        docker(&[
            "run",
            "-d",
            "--name",
            &demo.name,
            "--network",
            &demo.network,
            // Its HEALTHCHECK asks /health, which answers 503 here (no database): that would
            // count as 5xx answers of the window the test means to keep clean.
            "--no-healthcheck",
            "-e",
            &rate,
            DEMO_APP_IMAGE,
        ]);
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            demo.network
        );
        let ip = docker(&["inspect", "-f", &format, &demo.name]);
        demo.addr = SocketAddr::new(ip.trim().parse().expect("the container's address"), 8000);
        demo
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", "--tail", "30", &self.name])
            .output()
            .expect("docker logs");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

/// Waits until the app answers its metrics page.
fn until_up(demo: &Demo) {
    let began = Instant::now();
    while agent().get(&demo.url("/metrics")).call().is_err() {
        assert!(
            began.elapsed() < STARTUP,
            "the demo app did not answer within {STARTUP:?}\n{}",
            demo.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends GET / to the app from a thread until dropped, as users would.
struct Traffic(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl Traffic {
    fn start(url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let agent = agent();
            while !flag.load(Ordering::Relaxed) {
                let _ = agent.get(&url).call();
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self(stop, Some(thread))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

fn spec() -> AnalysisSpec {
    serde_json::from_value(serde_json::json!({
        "services": ["backend"],
        "metrics": {"port": 8000},
        "windowSeconds": 8,
        "intervalSeconds": 1,
        "maxErrorRate": 0.1,
        "minRequests": 20,
        "latency": {"maxSeconds": 2.0, "maxIncrease": 100.0},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_app_answering_half_its_requests_with_500_fails_the_error_rate_gate_and_passes_once_fixed(
) {
    let demo = Demo::start("0.5");
    until_up(&demo);
    let spec = spec();
    let metrics = spec.url(demo.addr);
    let traffic = Traffic::start(demo.url("/"));

    let verdict = analyse(&spec, &metrics, None, CancellationToken::new()).await;
    let Verdict::Fail {
        gate,
        observed,
        limit,
        message,
    } = &verdict
    else {
        panic!(
            "expected the ErrorRate gate to fail: {verdict:?}\n{}",
            demo.logs()
        );
    };
    assert_eq!((*gate, *limit), (Gate::ErrorRate, 0.1), "{message}");
    assert!(*observed > 0.1, "{message}");
    assert!(
        message.starts_with("5xx share ") && message.contains("is above maxErrorRate 10 %"),
        "{message}"
    );

    // Fixed: the counters keep the errors of before, the window has none.
    let fixed = agent()
        .post(&demo.url("/admin/error-rate?rate=0"))
        .send_empty()
        .expect("switching the fault off");
    assert_eq!(fixed.status().as_u16(), 200);
    let baseline = baseline_latency(
        &spec,
        &metrics,
        Duration::from_secs(3),
        CancellationToken::new(),
    )
    .await
    .unwrap_or_else(|e| panic!("no baseline figure: {e}"));
    assert!(baseline > 0.0, "{baseline}");
    let verdict = analyse(&spec, &metrics, Some(baseline), CancellationToken::new()).await;
    drop(traffic);
    let Verdict::Pass { figures } = &verdict else {
        panic!(
            "expected a pass once the fault is off: {verdict:?}\n{}",
            demo.logs()
        );
    };
    assert_eq!(figures.errors, 0, "{figures:?}");
    assert!(figures.requests >= 20, "{figures:?}");
    assert!(figures.latency.is_some_and(|l| l > 0.0), "{figures:?}");
}
