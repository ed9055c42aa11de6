//! A real S3 API for tests: moto's server (`moto[server]` from PyPI) on a free local port, with
//! one bucket, stopped when dropped.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// moto accepts any credentials.
pub const ACCESS_KEY_ID: &str = "test";
pub const SECRET_ACCESS_KEY: &str = "test";

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running moto server with one bucket.
pub struct Moto {
    child: Child,
    port: u16,
    bucket: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Installs moto if it is missing, starts it and creates a bucket.
    pub fn start() -> anyhow::Result<Moto> {
        Self::spawn(false)
    }

    /// Like [`Moto::start`], but checking credentials after the bucket is created: moto then
    /// knows no access key at all, so every signed request is refused.
    pub fn start_with_auth() -> anyhow::Result<Moto> {
        Self::spawn(true)
    }

    fn spawn(auth: bool) -> anyhow::Result<Moto> {
        ensure_installed()?;
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("moto.log");
        let port = free_port()?;
        let mut command = Command::new("python3");
        command.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]);
        if auth {
            // The two requests let through are the readiness probe and the bucket's creation.
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", "2");
        }
        let child = command
            .stdin(Stdio::null())
            // A pipe nobody reads would block moto once its request log fills it.
            .stdout(File::create(&log)?)
            .stderr(File::create(&log)?)
            .spawn()
            .context("starting python3 -m moto.server")?;
        let mut moto = Moto {
            child,
            port,
            bucket: format!("stackwarden-test-{}", std::process::id()),
            log,
            _dir: dir,
        };
        moto.wait_ready()?;
        moto.create_bucket()?;
        Ok(moto)
    }

    /// `http://127.0.0.1:PORT`, for `S3Config::endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Multipart uploads started and neither completed nor aborted, in the whole bucket.
    pub fn unfinished_uploads(&self) -> anyhow::Result<usize> {
        let url = format!("{}/{}?uploads", self.endpoint(), self.bucket);
        let response = Self::agent()
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response.into_body().read_to_string()?;
        if !status.is_success() {
            bail!("GET {url}: {status} {body}");
        }
        Ok(body.matches("<Upload>").count())
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into()
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let agent = Self::agent();
        let url = format!("{}/", self.endpoint());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("moto_server exited ({status}): {}", self.log_text());
            }
            if agent.get(&url).call().is_ok() {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                bail!(
                    "moto_server did not answer on {url} within {START_TIMEOUT:?}: {}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn create_bucket(&self) -> anyhow::Result<()> {
        let url = format!("{}/{}", self.endpoint(), self.bucket);
        let response = Self::agent()
            .put(&url)
            .send_empty()
            .with_context(|| format!("PUT {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.into_body().read_to_string().unwrap_or_default();
            bail!("creating the bucket: PUT {url}: {status} {body}");
        }
        Ok(())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now (the OS may hand it out again, but not soon).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn moto_importable() -> bool {
    Command::new("python3")
        .args(["-c", "import moto.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `pip install 'moto[server]'` once: once per process (tests run in threads), under a lock
/// file across processes (test binaries run in parallel).
fn ensure_installed() -> anyhow::Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| install().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn install() -> anyhow::Result<()> {
    if moto_importable() {
        return Ok(());
    }
    let lock_path = std::env::temp_dir().join("stackwarden-moto-install.lock");
    let lock = File::create(&lock_path)?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    // Another process may have installed it while we waited for the lock.
    if moto_importable() {
        return Ok(());
    }
    eprintln!("moto is not installed: running python3 -m pip install 'moto[server]'");
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "moto[server]"])
        .status()
        .context("running python3 -m pip install 'moto[server]'")?;
    if !status.success() || !moto_importable() {
        bail!("python3 -m pip install 'moto[server]' failed ({status}); install it by hand");
    }
    eprintln!("moto installed");
    Ok(())
}
