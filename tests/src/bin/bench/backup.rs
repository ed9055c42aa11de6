//! backup: a PostgreSQL database of `--size-mb` (1 GB by default) dumped by stackwarden's
//! backup path (`pg_dump -Fc -Z0` over the Docker exec API → zstd → sha256 → a local
//! destination with fsync and rename) against the runbook's own command,
//! `docker exec C pg_dump -Fc DB > file`, on the same database in the same run. Rounds
//! alternate the two. Throughput is the database's on-disk size (`pg_database_size`) over the
//! wall time. The operator's memory is sampled (VmRSS of this process, which runs the backup
//! exactly as the operator does) every 10 ms during its dumps; the figure is peak minus the
//! RSS just before the dump.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stackwarden::backup::destination::local::LocalDir;
use stackwarden::backup::destination::Destination;
use stackwarden::backup::postgres::{self, Postgres};
use stackwarden::docker::Engines;
use stackwarden_tests::harness::docker;

use super::{median, round2};

const USER: &str = "bench";
const PASSWORD: &str = "bench-password";

pub async fn run(rounds: usize, size_mb: u64) -> anyhow::Result<()> {
    stackwarden_tests::images::ensure_images()?;
    let name = format!("bench-backup-{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "-e",
        &format!("POSTGRES_USER={USER}"),
        "-e",
        &format!("POSTGRES_PASSWORD={PASSWORD}"),
        "-e",
        &format!("POSTGRES_DB={USER}"),
        "stackwarden-test/postgres:15",
    ]);
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &name,
    ])
    .trim()
    .to_owned();
    wait_ready(&name)?;
    let t = Instant::now();
    generate(&name, size_mb)?;
    let db_bytes: u64 = psql(&name, &format!("SELECT pg_database_size('{USER}')"))?
        .trim()
        .parse()?;
    println!(
        "generated {:.0} MB in {:.0} s",
        db_bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let engine = Engines::default()
        .get(stackwarden::api::DEFAULT_DOCKER_HOST)
        .await?;
    let id = docker(&["inspect", "-f", "{{.Id}}", &name])
        .trim()
        .to_owned();
    let pg = Postgres {
        engine: &engine,
        container: id,
        addr: format!("{ip}:5432").parse()?,
        database: USER.to_owned(),
        user: USER.to_owned(),
        password: Some(PASSWORD.to_owned()),
    };
    let out = tempfile::tempdir()?;
    let (mut sw, mut rf) = (Vec::new(), Vec::new());
    let (mut sw_size, mut rf_size, mut rss_growth) = (0u64, 0u64, 0u64);
    for round in 1..=rounds {
        let dir = out.path().join(format!("sw-{round}"));
        let (secs, size, growth) = stackwarden_round(&pg, &dir).await?;
        std::fs::remove_dir_all(&dir)?;
        let file = out.path().join(format!("ref-{round}.dump"));
        let ref_secs = reference_round(&name, &file)?;
        let ref_size = std::fs::metadata(&file)?.len();
        std::fs::remove_file(&file)?;
        println!(
            "round {round}: stackwarden {secs:.2} s ({size} bytes, RSS +{:.1} MB), pg_dump > file {ref_secs:.2} s ({ref_size} bytes)",
            growth as f64 / 1e6
        );
        sw.push(secs);
        rf.push(ref_secs);
        sw_size = size;
        rf_size = ref_size;
        rss_growth = rss_growth.max(growth);
    }
    let (sw_med, rf_med) = (median(&mut sw), median(&mut rf));
    let mbps = |s: f64| db_bytes as f64 / 1e6 / s;
    println!(
        "stackwarden    median {sw_med:.2} s = {:.1} MB/s, output {:.1} MB",
        mbps(sw_med),
        sw_size as f64 / 1e6
    );
    println!(
        "pg_dump > file median {rf_med:.2} s = {:.1} MB/s, output {:.1} MB",
        mbps(rf_med),
        rf_size as f64 / 1e6
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "backup",
            "rounds": rounds,
            "database_mb": round2(db_bytes as f64 / 1e6),
            "stackwarden_mb_s": round2(mbps(sw_med)),
            "reference_mb_s": round2(mbps(rf_med)),
            "ratio": round2(mbps(sw_med) / mbps(rf_med)),
            "stackwarden_output_mb": round2(sw_size as f64 / 1e6),
            "reference_output_mb": round2(rf_size as f64 / 1e6),
            "operator_rss_growth_mb": round2(rss_growth as f64 / 1e6),
        })
    );
    Ok(())
}

/// One backup through the operator's own code path; (seconds, bytes stored, RSS growth).
async fn stackwarden_round(
    pg: &Postgres<'_>,
    dir: &std::path::Path,
) -> anyhow::Result<(f64, u64, u64)> {
    let dest = LocalDir::new(dir.to_owned());
    let baseline = rss();
    let peak = Arc::new(AtomicU64::new(baseline));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let start = Instant::now();
    let upload = dest.create("bench.pgdump.zst").await?;
    let progress = AtomicU64::new(0);
    let dumped = postgres::backup(pg, upload, 3, &progress).await;
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let dumped = dumped.map_err(|e| anyhow::anyhow!("{e}"))?;
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    Ok((secs, dumped.sealed.size, growth))
}

/// The runbook's line, timed as a whole command.
fn reference_round(name: &str, file: &std::path::Path) -> anyhow::Result<f64> {
    let out = std::fs::File::create(file)?;
    let start = Instant::now();
    let status = Command::new("docker")
        .args(["exec", name, "pg_dump", "-U", USER, "-d", USER, "-Fc"])
        .stdout(out)
        .stderr(Stdio::inherit())
        .status()?;
    // The operator's path fsyncs; so must the reference, or it measures the page cache.
    std::fs::File::open(file)?.sync_all()?;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(status.success(), "pg_dump failed: {status}");
    Ok(secs)
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn psql(name: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(["exec", name, "psql", "-U", USER, "-d", USER, "-Atqc", sql])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_ready(name: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    while psql(name, "SELECT 1").is_err() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(120),
            "postgres did not start"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

/// A database of about `size_mb` MB in the shapes an application has: an orders table of
/// numbers, timestamps and short text, and an events table of JSON payloads. Half the rows'
/// text is random (md5), so it compresses about as well as real data, not like zeros.
fn generate(name: &str, size_mb: u64) -> anyhow::Result<()> {
    psql(
        name,
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer int, total numeric(10,2), created timestamptz, note text);
         CREATE TABLE events (id bigint, kind text, payload jsonb)",
    )?;
    // Each batch adds about 100 MB (measured: ~420 bytes per orders row and ~390 per event).
    let batch = 125_000u64;
    let mut start = 0u64;
    while psql(name, &format!("SELECT pg_database_size('{USER}')"))?
        .trim()
        .parse::<u64>()?
        < size_mb * 1_000_000
    {
        psql(
            name,
            &format!(
                "INSERT INTO orders SELECT g, g % 9973, (g % 100000) / 100.0, now() - (g || ' seconds')::interval,
                   'order ' || g || ' ' || md5(g::text) || md5((g * 7)::text) || repeat('standard shipping ', 10)
                 FROM generate_series({a}, {b}) g;
                 INSERT INTO events SELECT g, (ARRAY['click','view','buy','refund'])[1 + g % 4],
                   jsonb_build_object('user', g % 50000, 'session', md5(g::text), 'path', '/products/' || (g % 997), 'agent', repeat('Mozilla/5.0 ', 8))
                 FROM generate_series({a}, {b}) g",
                a = start + 1,
                b = start + batch
            ),
        )?;
        start += batch;
    }
    psql(name, "VACUUM ANALYZE")?;
    Ok(())
}

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.0])
            .output();
    }
}
