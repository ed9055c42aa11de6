//! The `stackwarden` command line.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};

use crate::api::{condition, ConditionType};
use crate::driver::local::{self as local_driver, LocalOptions};
use crate::store::local::{self, LocalStore, Record};

mod backup_cli;
mod history_cli;
mod hold_cli;
mod rollback_cli;

#[derive(Parser, Debug)]
#[command(
    name = "stackwarden",
    version,
    about = "Keeps Docker Compose stacks alive: a reconciling operator for ServiceStack resources"
)]
pub struct Cli {
    /// How log lines are written to stderr: `text` for people, `json` (one object per line,
    /// with the span fields) for log collectors. RUST_LOG filters them either way.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "STACKWARDEN_LOG_FORMAT",
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// See `--log-format`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the ServiceStack CustomResourceDefinition as YAML.
    Crd,
    /// Reconcile ServiceStack manifests from files against the local Docker engine.
    Local {
        /// A manifest file, or a directory of `.yaml`/`.yml` manifests; re-read as it changes.
        path: PathBuf,
        #[arg(long, env = "STACKWARDEN_STATE_DIR", default_value_os_t = default_state_dir())]
        state_dir: PathBuf,
        /// Exit as soon as every stack is Ready (for scripts and demos).
        #[arg(long)]
        exit_when_ready: bool,
        /// Give up (exit non-zero) after this many seconds.
        #[arg(long, value_parser = parse_seconds)]
        timeout: Option<Duration>,
        /// Serve /metrics, /healthz and /readyz here (`off` for none).
        #[arg(long, default_value = "127.0.0.1:9464", value_parser = parse_addr)]
        metrics_addr: Endpoint,
    },
    /// Show the stacks the local driver manages: a `kubectl get`-like table, then each stack's
    /// services, conditions and recent events.
    Status {
        /// Only this stack (`name` or `namespace/name`).
        name: Option<String>,
        #[arg(long, env = "STACKWARDEN_STATE_DIR", default_value_os_t = default_state_dir())]
        state_dir: PathBuf,
    },
    /// Take a backup of one target now, through the running `stackwarden local`, and wait for it.
    Backup {
        /// The stack (`name` or `namespace/name`).
        stack: String,
        /// The backup target (`spec.backups[].name`).
        target: String,
        #[arg(long, env = "STACKWARDEN_STATE_DIR", default_value_os_t = default_state_dir())]
        state_dir: PathBuf,
        /// Give up waiting after this many seconds (the backup itself goes on).
        #[arg(long, default_value = "3600", value_parser = parse_seconds)]
        timeout: Duration,
    },
    /// Restore a backup into its stack: stops the services using the database, restores,
    /// starts them again and waits for the stack to be Ready. The database it replaces is kept.
    Restore {
        /// The stack (`name` or `namespace/name`): a restore always names it.
        stack: String,
        /// The backup, as `stackwarden backups` lists it (e.g. `pg-20260102T020000Z`).
        #[arg(value_parser = parse_backup_id)]
        backup: String,
        #[arg(long, env = "STACKWARDEN_STATE_DIR", default_value_os_t = default_state_dir())]
        state_dir: PathBuf,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value = "3600", value_parser = parse_seconds)]
        timeout: Duration,
    },
    /// Test that a backup restores, now: restore it into a scratch database (or Redis server)
    /// and compare its row (key) counts with its manifest. The live database is not touched.
    Verify {
        /// The stack (`name` or `namespace/name`).
        stack: String,
        /// The backup target (`spec.backups[].name`).
        target: String,
        /// The backup to test (default: the newest).
        #[arg(long, value_parser = parse_backup_id)]
        backup: Option<String>,
        #[arg(long, env = "STACKWARDEN_STATE_DIR", default_value_os_t = default_state_dir())]
        state_dir: PathBuf,
        /// Give up waiting after this many seconds (the test itself goes on).
        #[arg(long, default_value = "3600", value_parser = parse_seconds)]
        timeout: Duration,
    },
    /// List the backups of a stack, newest first, read from their destinations.
    Backups {
        /// The stack (`name` or `namespace/name`).
        stack: String,
        #[arg(long, env = "STACKWARDEN_STATE_DIR", default_value_os_t = default_state_dir())]
        state_dir: PathBuf,
    },
    /// List a stack's revisions (each change of its compose file or variables), oldest first,
    /// as `kubectl rollout history` does; with --revision, one revision in full (its compose
    /// file with variable values masked, its services' images).
    History {
        /// The stack (`name` or `namespace/name`).
        stack: String,
        #[arg(long)]
        revision: Option<u64>,
        #[arg(long, env = "STACKWARDEN_STATE_DIR", default_value_os_t = default_state_dir())]
        state_dir: PathBuf,
    },
    /// Roll a stack back to an earlier revision (`stackwarden history` lists them): applied as
    /// a new revision, through the same rollout, and kept until the spec changes (the spec
    /// itself is not edited). In a cluster: annotate the ServiceStack with
    /// `stackwarden.dev/rollback=N` (or `previous`; `,restore-backup`; `#NONCE` to ask again).
    Rollback {
        /// The stack (`name` or `namespace/name`).
        stack: String,
        /// The revision to go back to (default: the newest Complete one before the running one).
        #[arg(long)]
        to: Option<u64>,
        /// Also restore the beforeDeploy backups taken before the revision being undone, once
        /// the rollback runs. Writes made since those backups are lost.
        #[arg(long)]
        restore_backup: bool,
        #[arg(long, env = "STACKWARDEN_STATE_DIR", default_value_os_t = default_state_dir())]
        state_dir: PathBuf,
        /// Give up waiting after this many seconds (the rollback goes on).
        #[arg(long, default_value = "600", value_parser = parse_seconds)]
        timeout: Duration,
    },
    /// Hold a service: stop it and keep it stopped (not started, not repaired) until
    /// `stackwarden resume`, or until --for has passed. The runbook's "stop the backend while
    /// the database is recovered". In a cluster: annotate the ServiceStack with
    /// `hold.stackwarden.dev/SERVICE` (value empty, or `by=WHO until=RFC3339`).
    Hold {
        /// The stack (`name` or `namespace/name`).
        stack: String,
        /// The compose service to hold.
        service: String,
        /// End the hold by itself after this long (e.g. `30m`, `2h`).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        for_: Option<Duration>,
        /// Who holds it, shown in status (default: $USER).
        #[arg(long)]
        by: Option<String>,
        #[arg(long, env = "STACKWARDEN_STATE_DIR", default_value_os_t = default_state_dir())]
        state_dir: PathBuf,
        /// Give up waiting for the service to stop after this many seconds (it stays held).
        #[arg(long, default_value = "120", value_parser = parse_seconds)]
        timeout: Duration,
    },
    /// End a hold: the service is started again (not counted as a crash).
    Resume {
        stack: String,
        service: String,
        #[arg(long, env = "STACKWARDEN_STATE_DIR", default_value_os_t = default_state_dir())]
        state_dir: PathBuf,
        /// Give up waiting for the service to run after this many seconds.
        #[arg(long, default_value = "120", value_parser = parse_seconds)]
        timeout: Duration,
    },
    /// Run in a Kubernetes cluster: watch ServiceStacks through the API server. Several may
    /// run; the one holding the Lease acts, the others stand by.
    Controller(ControllerArgs),
}

/// The flags of `stackwarden controller`.
#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    /// Only watch this namespace (default: all).
    #[arg(long)]
    namespace: Option<String>,
    /// Serve /metrics, /healthz and /readyz here (`off` for none).
    #[arg(long, default_value = "0.0.0.0:8080", value_parser = parse_addr)]
    metrics_addr: Endpoint,
    /// The Lease (coordination.k8s.io) the operators elect their leader with.
    #[arg(long, default_value = "stackwarden-controller")]
    lease_name: String,
    /// Namespace of the Lease (default: the pod's, else the kubeconfig's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This operator's name in the election (default: the pod's name, else host and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a leader that stopped renewing keeps the Lease; a standby takes over within it.
    #[arg(long, default_value = "15", value_parser = parse_seconds)]
    lease_duration: Duration,
    /// Seconds a stopping leader waits for running backup jobs before it lets go.
    #[arg(long, default_value = "20", value_parser = parse_seconds)]
    shutdown_timeout: Duration,
}

/// Where to serve the operator's endpoints, or nowhere (`off`). A newtype because clap reads an
/// `Option` field as "may be absent", not as a value that can say "none".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint(pub Option<std::net::SocketAddr>);

fn parse_addr(s: &str) -> Result<Endpoint, String> {
    if s == "off" {
        return Ok(Endpoint(None));
    }
    s.parse()
        .map(|a| Endpoint(Some(a)))
        .map_err(|e| format!("{e}: give HOST:PORT, or off"))
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| format!("{e}: give whole seconds"))
}

/// A backup id as `stackwarden backups` lists it: a blank one (an unset shell variable, say)
/// names no backup, and is refused before any stack is looked up.
fn parse_backup_id(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err(
            "the backup id is empty; give one as `stackwarden backups STACK` lists it (e.g. pg-20260102T020000Z)"
                .to_owned(),
        );
    }
    Ok(s.to_owned())
}

/// Outside a pod: the host's name and this process's id, unique enough among operators.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "stackwarden".to_owned());
    format!("{host}-{}", std::process::id())
}

/// `$XDG_STATE_HOME/stackwarden`, else `~/.local/state/stackwarden`.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join("stackwarden")
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crd => {
            print!("{}", crate::api::crd_yaml());
            Ok(())
        }
        Command::Local {
            path,
            state_dir,
            exit_when_ready,
            timeout,
            metrics_addr,
        } => local(path, state_dir, exit_when_ready, timeout, metrics_addr).await,
        Command::Status { name, state_dir } => status(name.as_deref(), &state_dir),
        Command::Backup {
            stack,
            target,
            state_dir,
            timeout,
        } => backup_cli::backup(&LocalStore::new(&state_dir), &stack, &target, timeout).await,
        Command::Restore {
            stack,
            backup,
            state_dir,
            timeout,
        } => backup_cli::restore(&LocalStore::new(&state_dir), &stack, &backup, timeout).await,
        Command::Verify {
            stack,
            target,
            backup,
            state_dir,
            timeout,
        } => {
            let store = LocalStore::new(&state_dir);
            backup_cli::verify(&store, &stack, &target, backup.as_deref(), timeout).await
        }
        Command::Backups { stack, state_dir } => {
            backup_cli::list(&LocalStore::new(&state_dir), &stack).await
        }
        Command::History {
            stack,
            revision,
            state_dir,
        } => history_cli::history(&LocalStore::new(&state_dir), &stack, revision),
        Command::Rollback {
            stack,
            to,
            restore_backup,
            state_dir,
            timeout,
        } => {
            let store = LocalStore::new(&state_dir);
            rollback_cli::rollback(&store, &stack, to, restore_backup, timeout).await
        }
        Command::Hold {
            stack,
            service,
            for_,
            by,
            state_dir,
            timeout,
        } => {
            let store = LocalStore::new(&state_dir);
            hold_cli::hold(&store, &stack, &service, for_, by, timeout).await
        }
        Command::Resume {
            stack,
            service,
            state_dir,
            timeout,
        } => hold_cli::resume(&LocalStore::new(&state_dir), &stack, &service, timeout).await,
        Command::Controller(args) => controller(args).await,
    }
}

/// `stackwarden local`, once its manifests are known to exist.
async fn local(
    manifests: PathBuf,
    state_dir: PathBuf,
    exit_when_ready: bool,
    timeout: Option<Duration>,
    metrics_addr: Endpoint,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        manifests.exists(),
        "{} does not exist: give a manifest file or a directory of them",
        manifests.display()
    );
    local_driver::run(LocalOptions {
        manifests,
        state_dir,
        exit_when_ready,
        timeout,
        metrics_addr: metrics_addr.0,
    })
    .await
}

/// `stackwarden status`: every stack's table, or one stack's.
fn status(name: Option<&str>, state_dir: &std::path::Path) -> anyhow::Result<()> {
    let store = LocalStore::new(state_dir);
    let mut records = store.list()?;
    if let Some(n) = name {
        records.retain(|r| r.name == n || format!("{}/{}", r.namespace, r.name) == n);
        anyhow::ensure!(
            !records.is_empty(),
            "no stack named {n} in {}",
            state_dir.display()
        );
    }
    print!("{}", status_table(&store, &records));
    if name.is_none() {
        print!("{}", problems_text(&store.manifest_problems()));
    }
    Ok(())
}

/// `stackwarden controller`: the kube driver, with the Lease its flags describe.
async fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    anyhow::ensure!(
        args.lease_duration >= Duration::from_secs(4),
        "--lease-duration must be at least 4 seconds (the leader renews 2 s before it ends)"
    );
    let lease = crate::driver::kube::LeaseOptions {
        name: args.lease_name,
        namespace: args
            .lease_namespace
            .unwrap_or_else(|| client.default_namespace().to_owned()),
        identity: args.identity.unwrap_or_else(default_identity),
        duration: args.lease_duration,
        // The renewal margin: a third of the Lease, at least 2 s.
        grace: (args.lease_duration / 3).max(Duration::from_secs(2)),
        shutdown_timeout: args.shutdown_timeout,
    };
    let opts = crate::driver::kube::ControllerOptions {
        namespace: args.namespace,
        metrics_addr: args.metrics_addr.0,
        lease,
    };
    crate::driver::kube::run(client, opts).await
}

/// The text `stackwarden status` prints.
pub fn status_table(store: &LocalStore, records: &[Record]) -> String {
    let mut rows = vec![[
        "NAMESPACE",
        "NAME",
        "READY",
        "HEALTH",
        "REVISION",
        "LAST BACKUP",
        "AGE",
    ]
    .map(str::to_owned)
    .to_vec()];
    for r in records {
        let ready = condition::find(&r.status.conditions, ConditionType::Ready)
            .map_or("Unknown".to_owned(), |c| c.status.to_string());
        rows.push(vec![
            r.namespace.clone(),
            r.name.clone(),
            ready,
            r.status.health.map_or("-".to_owned(), |h| format!("{h:?}")),
            r.status.revision.map_or("-".to_owned(), |v| v.to_string()),
            r.status
                .last_backup
                .map_or("-".to_owned(), |t| format!("{} ago", age(Utc::now() - t))),
            age(Utc::now() - r.created),
        ]);
    }
    let mut out = table(&rows);
    for r in records {
        out.push_str(&stack_details(store, r));
    }
    out
}

/// One stack's part below the table: its services, conditions, backups and recent events.
fn stack_details(store: &LocalStore, r: &Record) -> String {
    let mut out = format!(
        "\n{}/{} (project {})\n",
        r.namespace,
        r.name,
        r.status.project.as_deref().unwrap_or("-")
    );
    out.push_str(&services_table(r));
    let mut cond = vec![["  CONDITION", "STATUS", "REASON", "MESSAGE"]
        .map(str::to_owned)
        .to_vec()];
    for c in &r.status.conditions {
        cond.push(vec![
            format!("  {}", c.type_),
            c.status.to_string(),
            c.reason.to_string(),
            c.message.clone(),
        ]);
    }
    out.push_str(&table(&cond));
    if !r.status.backups.is_empty() {
        out.push_str(&backup_table(&r.status.backups));
    }
    let events = store.events(&r.namespace, &r.name);
    if !events.is_empty() {
        out.push_str("  Recent events:\n");
        for (t, e) in events.iter().rev().take(5).rev() {
            out.push_str(&format!(
                "    {} {:?} {}: {}\n",
                t.format("%H:%M:%S"),
                e.type_,
                e.reason,
                e.note
            ));
        }
    }
    out
}

fn services_table(r: &Record) -> String {
    let mut svc = vec![[
        "  SERVICE",
        "STATE",
        "HEALTH",
        "CONTAINER",
        "RESTARTS",
        "IMAGE",
    ]
    .map(str::to_owned)
    .to_vec()];
    for (name, s) in &r.status.services {
        svc.push(vec![
            format!("  {name}"),
            match (&s.hold, &s.waiting_for) {
                (Some(h), _) => format!("{} (held by {})", s.state.as_str(), h.by),
                (None, Some(w)) => format!("{} (waiting for {})", s.state.as_str(), w.service),
                (None, None) => s.state.as_str().to_owned(),
            },
            s.health
                .map_or("-".to_owned(), |h| format!("{h:?}").to_lowercase()),
            s.container_id.clone().unwrap_or_else(|| "-".into()),
            s.restarts.to_string(),
            s.image.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table(&svc)
}

/// What is wrong in the manifest files, per file; nothing when all is well.
pub fn problems_text(problems: &local::Problems) -> String {
    if problems.is_empty() {
        return String::new();
    }
    let mut out = "\nManifest problems (as `stackwarden local` last read the files):\n".to_owned();
    for (file, list) in problems {
        out.push_str(&format!("  {}\n", file.display()));
        for p in list {
            out.push_str(&format!("    {p}\n"));
        }
    }
    out
}

fn backup_table(
    backups: &std::collections::BTreeMap<String, crate::api::BackupTargetStatus>,
) -> String {
    let mut rows = vec![[
        "  BACKUP TARGET",
        "LAST SUCCESS",
        "SIZE",
        "VERIFIED",
        "NEXT RUN",
        "NOW",
    ]
    .map(str::to_owned)
    .to_vec()];
    let time = |t: Option<chrono::DateTime<Utc>>| {
        t.map_or("-".to_owned(), |t| {
            t.format("%Y-%m-%d %H:%M:%SZ").to_string()
        })
    };
    for (name, b) in backups {
        let s = b.last_success.as_ref();
        rows.push(vec![
            format!("  {name}"),
            s.map_or("-".to_owned(), |s| {
                format!("{} ({})", s.id, time(Some(s.time)))
            }),
            s.map_or("-".to_owned(), |s| s.size.to_string()),
            match s.and_then(|s| s.verified) {
                Some(true) => "yes".into(),
                Some(false) => "FAILED".into(),
                None => "-".into(),
            },
            time(b.next_run),
            match &b.running {
                Some(r) => format!("{:?} {} ({} bytes)", r.job, r.id, r.bytes),
                None => b
                    .last_failure
                    .as_ref()
                    .filter(|_| crate::decide::backup::plan::failing(b).is_some())
                    .map_or("-".to_owned(), |f| format!("failed: {}", f.reason)),
            },
        ]);
    }
    table(&rows)
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == r.len() {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn age(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_parses_with_its_defaults() {
        let parse =
            |args: &[&str]| Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        match parse(&["stackwarden", "local", "examples/demo"]).command {
            Command::Local {
                metrics_addr,
                exit_when_ready,
                ..
            } => {
                assert_eq!(
                    metrics_addr,
                    Endpoint(Some("127.0.0.1:9464".parse().unwrap()))
                );
                assert!(!exit_when_ready);
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "stackwarden",
            "local",
            "x",
            "--metrics-addr",
            "off",
            "--exit-when-ready",
            "--timeout",
            "5",
        ])
        .command
        {
            Command::Local {
                metrics_addr,
                timeout,
                ..
            } => {
                assert_eq!(metrics_addr, Endpoint(None));
                assert_eq!(timeout, Some(Duration::from_secs(5)));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["stackwarden", "controller", "--lease-duration", "30"]).command {
            Command::Controller(ControllerArgs {
                metrics_addr,
                namespace,
                lease_name,
                lease_duration,
                ..
            }) => {
                assert_eq!(
                    metrics_addr,
                    Endpoint(Some("0.0.0.0:8080".parse().unwrap()))
                );
                assert_eq!(namespace, None);
                assert_eq!(lease_name, "stackwarden-controller");
                assert_eq!(lease_duration, Duration::from_secs(30));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["stackwarden", "status"]).command,
            Command::Status { .. }
        ));
        assert!(matches!(
            parse(&["stackwarden", "crd"]).command,
            Command::Crd
        ));
        assert!(
            Cli::try_parse_from(["stackwarden", "local", "x", "--metrics-addr", "nowhere"])
                .is_err()
        );
    }

    #[test]
    fn a_blank_backup_id_is_refused_with_what_to_give_instead() {
        for args in [
            &["stackwarden", "restore", "demo", ""][..],
            &["stackwarden", "restore", "demo", "  "],
            &["stackwarden", "verify", "demo", "pg", "--backup", ""],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err().to_string();
            assert!(
                e.contains("the backup id is empty") && e.contains("stackwarden backups"),
                "{args:?}: {e}"
            );
        }
        assert!(
            Cli::try_parse_from(["stackwarden", "restore", "demo", "pg-20260102T020000Z"]).is_ok()
        );
    }

    #[test]
    fn rollback_takes_a_revision_the_restore_flag_and_a_timeout() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.command);
        match parse(&["stackwarden", "rollback", "demo"]).unwrap() {
            Command::Rollback {
                to,
                restore_backup,
                timeout,
                ..
            } => {
                assert_eq!((to, restore_backup), (None, false));
                assert_eq!(timeout, Duration::from_secs(600));
            }
            other => panic!("{other:?}"),
        }
        let args = [
            "stackwarden",
            "rollback",
            "demo",
            "--to",
            "2",
            "--restore-backup",
            "--timeout",
            "30",
        ];
        match parse(&args).unwrap() {
            Command::Rollback {
                to,
                restore_backup,
                timeout,
                ..
            } => {
                assert_eq!((to, restore_backup), (Some(2), true));
                assert_eq!(timeout, Duration::from_secs(30));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["stackwarden", "rollback", "demo", "--to", "two"]).is_err());
    }

    #[test]
    fn log_format_is_a_global_flag_and_an_environment_variable() {
        let format = |args: &[&str]| {
            Cli::try_parse_from(args)
                .unwrap_or_else(|e| panic!("{args:?}: {e}"))
                .log_format
        };
        assert_eq!(format(&["stackwarden", "crd"]), LogFormat::Text);
        assert_eq!(
            format(&["stackwarden", "--log-format", "json", "controller"]),
            LogFormat::Json
        );
        // Global: also after the subcommand, where a Deployment's args put it.
        assert_eq!(
            format(&["stackwarden", "local", "x", "--log-format", "json"]),
            LogFormat::Json
        );
        assert!(Cli::try_parse_from(["stackwarden", "--log-format", "xml", "crd"]).is_err());

        // Read from the command's definition: setting the variable here would race with the
        // other tests' reads of the environment.
        let command = Cli::command();
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == "log_format")
            .unwrap();
        assert_eq!(
            arg.get_env(),
            Some(std::ffi::OsStr::new("STACKWARDEN_LOG_FORMAT"))
        );
    }
}
