//! The local test images, built from Debian packages by `images/build.sh` because these
//! machines have no image registry to pull from.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::bail;

pub const BASE_IMAGE: &str = "stackwarden-test/base:bookworm";
pub const POSTGRES_IMAGE: &str = "stackwarden-test/postgres:15";
pub const REDIS_IMAGE: &str = "stackwarden-test/redis:7";
pub const DEMO_APP_IMAGE: &str = "stackwarden-test/demo-app:latest";

/// Label holding the hash of an image's inputs; `build.sh` skips an image whose label matches.
pub const INPUTS_HASH_LABEL: &str = "stackwarden.dev/inputs-hash";

pub fn build_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images/build.sh")
}

/// Builds the images that are missing or out of date, once per process: every test calls it
/// first, and after the first call it costs nothing. Across processes the script serialises
/// itself with a lock file, and a second run with nothing changed takes about a second.
pub fn ensure_images() -> anyhow::Result<()> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| run_build_script().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn run_build_script() -> anyhow::Result<()> {
    let script = build_script();
    let output = Command::new("bash").arg(&script).output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Through the test harness's capture: shown for failing tests or with --nocapture.
    print!("{stdout}");
    eprint!("{stderr}");
    if !output.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{} failed ({}):\n{}",
            script.display(),
            output.status,
            tail.join("\n")
        );
    }
    Ok(())
}
