//! compose_spec's typed model to the operator's [`Project`].

use std::collections::{BTreeMap, BTreeSet};

use compose_spec::service::{
    self, deploy::resources::Limits, healthcheck::Test, volumes::mount::Mount, ByteValue,
    Healthcheck, NetworkConfig,
};
use compose_spec::{Compose, ListOrMap, Resource, ShortOrLong};
use yaml_serde::Value;

use super::model::*;
use crate::api::Failure;
use crate::api::Reason;

/// Service keys the operator honours. Anything else is refused by name.
const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "ports",
    "expose",
    "volumes",
    "networks",
    "depends_on",
    "healthcheck",
    "restart",
    "labels",
    "user",
    "working_dir",
    "hostname",
    "mem_limit",
    "cpus",
    "deploy",
    "pull_policy",
    "stop_signal",
    "stop_grace_period",
    "init",
    "tty",
    "stdin_open",
    "extra_hosts",
];
const TOP_LEVEL_KEYS: &[&str] = &["services", "networks", "volumes", "version", "name"];
const NETWORK_KEYS: &[&str] = &[
    "driver",
    "labels",
    "internal",
    "attachable",
    "external",
    "name",
];
const VOLUME_KEYS: &[&str] = &["driver", "driver_opts", "labels", "external", "name"];

/// Refuses keys the operator would otherwise have to ignore. Extension keys (`x-...`) are
/// ignored by definition of the compose spec, so they pass.
pub fn check_supported_keys(doc: &Value) -> Result<(), Failure> {
    let top = doc.as_mapping().ok_or_else(|| {
        Failure::new(
            Reason::MalformedCompose,
            "spec.compose.file must be a YAML mapping with a `services` key",
        )
    })?;
    check_keys(top, TOP_LEVEL_KEYS, "")?;
    for (section, allowed) in [("networks", NETWORK_KEYS), ("volumes", VOLUME_KEYS)] {
        if let Some(Value::Mapping(items)) = top.get(section) {
            for (name, body) in items {
                if let Value::Mapping(body) = body {
                    check_keys(body, allowed, &format!("{section}.{}.", key_str(name)))?;
                }
            }
        }
    }
    let Some(Value::Mapping(services)) = top.get("services") else {
        return Err(Failure::new(
            Reason::MalformedCompose,
            "spec.compose.file has no `services` mapping",
        ));
    };
    for (name, body) in services {
        let Value::Mapping(body) = body else { continue };
        let prefix = format!("services.{}.", key_str(name));
        check_keys(body, SERVICE_KEYS, &prefix)?;
        if let Some(Value::Mapping(deploy)) = body.get("deploy") {
            check_keys(deploy, &["resources"], &format!("{prefix}deploy."))?;
            if let Some(Value::Mapping(res)) = deploy.get("resources") {
                check_keys(res, &["limits"], &format!("{prefix}deploy.resources."))?;
                if let Some(Value::Mapping(limits)) = res.get("limits") {
                    check_keys(
                        limits,
                        &["memory", "cpus"],
                        &format!("{prefix}deploy.resources.limits."),
                    )?;
                }
            }
        }
        if let Some(Value::Mapping(nets)) = body.get("networks") {
            for (net, cfg) in nets {
                if let Value::Mapping(cfg) = cfg {
                    check_keys(
                        cfg,
                        &["aliases"],
                        &format!("{prefix}networks.{}.", key_str(net)),
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn check_keys(map: &yaml_serde::Mapping, allowed: &[&str], prefix: &str) -> Result<(), Failure> {
    for key in map.keys() {
        let key = key_str(key);
        if key.starts_with("x-") || allowed.contains(&key.as_str()) {
            continue;
        }
        let hint = match key.as_str() {
            "scale" => " (one container per service; `container_name` and the probes rely on it)",
            _ => "",
        };
        return Err(Failure::new(
            Reason::UnsupportedComposeKey,
            format!("spec.compose.file: `{prefix}{key}` is not supported by stackwarden yet{hint}; remove it or change it to a supported form"),
        ));
    }
    Ok(())
}

fn key_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => yaml_serde::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

pub fn project(name: &str, compose: Compose) -> Result<Project, Failure> {
    if compose.services.is_empty() {
        return Err(Failure::new(
            Reason::MalformedCompose,
            "spec.compose.file defines no services",
        ));
    }
    let mut networks = networks(name, &compose.networks)?;
    let volumes = volumes(name, &compose.volumes)?;
    let service_names: BTreeSet<String> = compose.services.keys().map(|k| k.to_string()).collect();
    let mut uses_default_network = false;
    let mut services = Vec::new();
    for (svc_name, svc) in compose.services {
        let names = Names {
            project: name,
            service: svc_name.to_string(),
            services: &service_names,
            networks: &networks,
            volumes: &volumes,
        };
        let (spec, uses_default) = service(&names, &svc)?;
        uses_default_network |= uses_default;
        services.push(spec);
    }
    keep_default_network(name, &mut networks, uses_default_network, &services);
    Ok(Project {
        name: name.to_owned(),
        networks,
        volumes,
        services: start_order(services)?,
    })
}

/// The top-level `networks:`, each named as docker-compose names it.
fn networks(name: &str, declared: &compose_spec::Networks) -> Result<Vec<NetworkSpec>, Failure> {
    let mut networks = Vec::new();
    for (key, net) in declared {
        let key = key.to_string();
        let spec = match net {
            None => NetworkSpec::owned(name, &key),
            Some(Resource::External { name: ext }) => NetworkSpec {
                external: true,
                name: ext.clone().unwrap_or_else(|| key.clone()),
                ..NetworkSpec::owned(name, &key)
            },
            Some(Resource::Compose(n)) => NetworkSpec {
                driver: n.driver.as_ref().map(|d| d.to_string()),
                internal: n.internal,
                attachable: n.attachable,
                labels: list_or_map(&n.labels, "networks labels")?,
                name: n.name.clone().unwrap_or_else(|| format!("{name}_{key}")),
                ..NetworkSpec::owned(name, &key)
            },
        };
        networks.push(spec);
    }
    Ok(networks)
}

/// The top-level `volumes:`, each named as docker-compose names it.
fn volumes(name: &str, declared: &compose_spec::Volumes) -> Result<Vec<VolumeSpec>, Failure> {
    let mut volumes = Vec::new();
    for (key, vol) in declared {
        let key = key.to_string();
        let owned = VolumeSpec {
            key: key.clone(),
            name: format!("{name}_{key}"),
            driver: None,
            driver_opts: BTreeMap::new(),
            labels: BTreeMap::new(),
            external: false,
        };
        volumes.push(match vol {
            None => owned,
            Some(Resource::External { name: ext }) => VolumeSpec {
                external: true,
                name: ext.clone().unwrap_or_else(|| key.clone()),
                ..owned
            },
            Some(Resource::Compose(v)) => VolumeSpec {
                driver: v.driver.clone(),
                driver_opts: v
                    .driver_opts
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                labels: list_or_map(&v.labels, "volume labels")?,
                name: v.name.clone().unwrap_or_else(|| format!("{name}_{key}")),
                ..owned
            },
        });
    }
    Ok(volumes)
}

/// What a service's keys may refer to: the project, the other services, the top-level networks
/// and volumes.
struct Names<'a> {
    project: &'a str,
    service: String,
    services: &'a BTreeSet<String>,
    networks: &'a [NetworkSpec],
    volumes: &'a [VolumeSpec],
}

impl Names<'_> {
    /// Where a key of this service is, for messages: `services.NAME.KEY`.
    fn at(&self, what: &str) -> String {
        format!("services.{}.{what}", self.service)
    }
}

/// One service, and whether it joins the project's default network.
fn service(names: &Names<'_>, svc: &service::Service) -> Result<(ServiceSpec, bool), Failure> {
    let ctx = |what: &str| names.at(what);
    let image = svc.image.as_ref().map(|i| i.to_string()).ok_or_else(|| {
        Failure::new(
            Reason::MalformedCompose,
            format!("spec.compose.file: {} is required", ctx("image")),
        )
    })?;
    let (service_networks, uses_default) = service_networks(names, &svc.network_config)?;
    let depends_on = depends_on(names, &svc.depends_on)?;
    let mut mounts = Vec::new();
    for v in svc.volumes.iter().cloned().map(|v| match v {
        ShortOrLong::Short(s) => s.into_long(),
        ShortOrLong::Long(m) => m,
    }) {
        mounts.push(mount(v, names.volumes, &ctx("volumes"))?);
    }
    let (memory_bytes, nano_cpus) = limits(svc, &ctx("deploy.resources.limits"))?;
    let spec = ServiceSpec {
        name: names.service.clone(),
        image,
        compose_v1: None,
        pull_policy: pull_policy(svc.pull_policy.as_ref(), &ctx("pull_policy"))?,
        command: svc
            .command
            .as_ref()
            .map(|c| command(c, &ctx("command")))
            .transpose()?,
        entrypoint: svc
            .entrypoint
            .as_ref()
            .map(|c| command(c, &ctx("entrypoint")))
            .transpose()?,
        environment: Environment(environment(&svc.environment, &ctx("environment"))?),
        ports: ports(&svc.ports),
        expose: svc.expose.iter().map(|e| e.to_string()).collect(),
        mounts,
        networks: service_networks,
        depends_on,
        healthcheck: svc.healthcheck.as_ref().map(healthcheck),
        restart: match svc.restart {
            None | Some(service::Restart::No) => RestartPolicy::No,
            Some(service::Restart::Always) => RestartPolicy::Always,
            Some(service::Restart::OnFailure) => RestartPolicy::OnFailure,
            Some(service::Restart::UnlessStopped) => RestartPolicy::UnlessStopped,
        },
        labels: list_or_map(&svc.labels, &ctx("labels"))?,
        user: svc.user.as_ref().map(|u| u.to_string()),
        working_dir: svc
            .working_dir
            .as_ref()
            .map(|p| p.as_path().display().to_string()),
        hostname: svc.hostname.as_ref().map(|h| h.to_string()),
        memory_bytes,
        nano_cpus,
        stop_signal: svc.stop_signal.clone(),
        stop_grace_period_s: svc.stop_grace_period.map(|d| d.as_secs() as i64),
        init: svc.init,
        tty: svc.tty,
        stdin_open: svc.stdin_open,
        extra_hosts: svc
            .extra_hosts
            .iter()
            .map(|(h, ip)| format!("{h}:{ip}"))
            .collect(),
        fixed_name: None,
        build: None,
    };
    Ok((spec, uses_default))
}

fn pull_policy(policy: Option<&service::PullPolicy>, at: &str) -> Result<PullPolicy, Failure> {
    match policy {
        None | Some(service::PullPolicy::Missing) => Ok(PullPolicy::Missing),
        Some(service::PullPolicy::Never) => Ok(PullPolicy::Never),
        Some(service::PullPolicy::Always) => Ok(PullPolicy::Always),
        Some(other) => Err(Failure::new(
            Reason::UnsupportedComposeKey,
            format!("spec.compose.file: {at} `{other:?}` is not supported; use missing, never or always"),
        )),
    }
}

/// The networks a service joins, each with its aliases (the service's name first), and
/// whether one of them is the project's default network.
fn service_networks(
    names: &Names<'_>,
    config: &Option<NetworkConfig>,
) -> Result<(Vec<ServiceNetwork>, bool), Failure> {
    let name = names.project;
    let entries: Vec<(String, Vec<String>)> = match config {
        None => {
            let default = ServiceNetwork {
                network: format!("{name}_default"),
                aliases: vec![names.service.clone()],
            };
            return Ok((vec![default], true));
        }
        Some(NetworkConfig::NetworkMode(_)) => {
            return Err(Failure::new(
                Reason::UnsupportedComposeKey,
                format!(
                    "spec.compose.file: `{}` is not supported by stackwarden yet; use `networks:`",
                    names.at("network_mode")
                ),
            ))
        }
        Some(NetworkConfig::Networks(ShortOrLong::Short(list))) => {
            list.iter().map(|n| (n.to_string(), Vec::new())).collect()
        }
        Some(NetworkConfig::Networks(ShortOrLong::Long(map))) => map
            .iter()
            .map(|(n, cfg)| {
                let aliases = cfg
                    .as_ref()
                    .map(|c| c.aliases.iter().map(|a| a.to_string()).collect())
                    .unwrap_or_default();
                (n.to_string(), aliases)
            })
            .collect(),
    };
    let mut uses_default = false;
    let mut out = Vec::new();
    for (key, mut aliases) in entries {
        let net = if key == "default" && !names.networks.iter().any(|n| n.key == "default") {
            uses_default = true;
            format!("{name}_default")
        } else {
            names
                .networks
                .iter()
                .find(|n| n.key == key)
                .map(|n| n.name.clone())
                .ok_or_else(|| {
                    Failure::new(
                        Reason::MalformedCompose,
                        format!("spec.compose.file: {} uses network `{key}`, which the top-level `networks:` does not define", names.at("networks")),
                    )
                })?
        };
        aliases.insert(0, names.service.clone());
        out.push(ServiceNetwork {
            network: net,
            aliases,
        });
    }
    Ok((out, uses_default))
}

/// A service's `depends_on`, each naming a service of this file.
fn depends_on(names: &Names<'_>, deps: &service::DependsOn) -> Result<Vec<Dependency>, Failure> {
    let deps: Vec<(String, DependencyCondition)> = match deps {
        ShortOrLong::Short(list) => list
            .iter()
            .map(|d| (d.to_string(), DependencyCondition::Started))
            .collect(),
        ShortOrLong::Long(map) => map
            .iter()
            .map(|(d, dep)| {
                let cond = match dep.condition {
                    service::Condition::ServiceStarted => DependencyCondition::Started,
                    service::Condition::ServiceHealthy => DependencyCondition::Healthy,
                    service::Condition::ServiceCompletedSuccessfully => {
                        DependencyCondition::CompletedSuccessfully
                    }
                };
                (d.to_string(), cond)
            })
            .collect(),
    };
    let mut depends_on = Vec::new();
    for (dep, condition) in deps {
        if !names.services.contains(&dep) {
            return Err(Failure::new(
                Reason::UnknownService,
                format!(
                    "spec.compose.file: {} names `{dep}`, which is not a service of this file",
                    names.at("depends_on")
                ),
            ));
        }
        depends_on.push(Dependency {
            service: dep,
            condition,
        });
    }
    Ok(depends_on)
}

/// Adds the default network when a service joins it and the file does not declare it, and
/// drops a declared `default` nothing uses, as docker-compose does.
fn keep_default_network(
    name: &str,
    networks: &mut Vec<NetworkSpec>,
    uses_default_network: bool,
    services: &[ServiceSpec],
) {
    if uses_default_network && !networks.iter().any(|n| n.key == "default") {
        networks.insert(0, NetworkSpec::owned(name, "default"));
    }
    networks.retain(|n| {
        n.key != "default"
            || uses_default_network
            || services
                .iter()
                .any(|s| s.networks.iter().any(|sn| sn.network == n.name))
    });
}

impl NetworkSpec {
    fn owned(project: &str, key: &str) -> Self {
        NetworkSpec {
            key: key.to_owned(),
            name: format!("{project}_{key}"),
            driver: None,
            internal: false,
            attachable: false,
            labels: BTreeMap::new(),
            external: false,
        }
    }
}

/// Orders services so each comes after its dependencies; a cycle is a spec error.
fn start_order(services: Vec<ServiceSpec>) -> Result<Vec<ServiceSpec>, Failure> {
    let mut remaining = services;
    let mut ordered: Vec<ServiceSpec> = Vec::with_capacity(remaining.len());
    while !remaining.is_empty() {
        let ready = remaining.iter().position(|s| {
            s.depends_on
                .iter()
                .all(|d| ordered.iter().any(|o| o.name == d.service))
        });
        match ready {
            Some(i) => ordered.push(remaining.remove(i)),
            None => {
                let names: Vec<_> = remaining.iter().map(|s| s.name.as_str()).collect();
                return Err(Failure::new(
                    Reason::MalformedCompose,
                    format!(
                        "spec.compose.file: depends_on forms a cycle among: {}",
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(ordered)
}

fn command(c: &service::Command, what: &str) -> Result<Vec<String>, Failure> {
    match c {
        service::Command::List(v) => Ok(v.clone()),
        // Compose splits a string command shell-style into argv; it does not wrap it in `sh -c`.
        service::Command::String(s) => shlex::split(s).ok_or_else(|| {
            Failure::new(
                Reason::MalformedCompose,
                format!("spec.compose.file: {what} has unbalanced quotes"),
            )
        }),
    }
}

fn environment(env: &ListOrMap, what: &str) -> Result<BTreeMap<String, String>, Failure> {
    let map = env.clone().into_map().map_err(|e| {
        Failure::new(
            Reason::MalformedCompose,
            format!("spec.compose.file: {what}: {e}"),
        )
    })?;
    // A key without a value means "take it from the shell" in docker-compose; the operator has no
    // shell to take it from, so it is set empty, as compose does for an unset variable.
    Ok(map
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.map(|v| v.to_string()).unwrap_or_default()))
        .collect())
}

fn list_or_map(labels: &ListOrMap, what: &str) -> Result<BTreeMap<String, String>, Failure> {
    environment(labels, what)
}

fn ports(ports: &service::Ports) -> Vec<PortSpec> {
    service::ports::into_long_iter(ports.clone())
        .map(|p| PortSpec {
            container_port: p.target,
            protocol: p
                .protocol
                .as_ref()
                .map_or_else(|| "tcp".to_owned(), |p| p.as_str().to_owned()),
            host_ip: p.host_ip.map(|ip| ip.to_string()),
            // A published range (`8000-8010:80`) lets Docker pick from it; its start is taken.
            host_port: p.published.map(|r| r.start()),
        })
        .collect()
}

fn mount(m: Mount, volumes: &[VolumeSpec], what: &str) -> Result<MountSpec, Failure> {
    match m {
        Mount::Volume(v) => {
            let target = v.common.target.as_path().display().to_string();
            match v.source {
                None => Ok(MountSpec::Anonymous { target }),
                Some(src) => {
                    let src = src.to_string();
                    let vol = volumes.iter().find(|vs| vs.key == src).ok_or_else(|| {
                        Failure::new(
                            Reason::MalformedCompose,
                            format!("spec.compose.file: {what} uses volume `{src}`, which the top-level `volumes:` does not define"),
                        )
                    })?;
                    Ok(MountSpec::Volume {
                        source: vol.name.clone(),
                        target,
                        read_only: v.common.read_only,
                    })
                }
            }
        }
        Mount::Bind(b) => {
            let source = b.source.as_path().display().to_string();
            if !source.starts_with('/') {
                return Err(Failure::new(
                    Reason::InvalidField,
                    format!("spec.compose.file: {what}: bind mount source `{source}` must be an absolute path (the compose file is inline, so there is no directory to resolve it against)"),
                ));
            }
            Ok(MountSpec::Bind {
                source,
                target: b.common.target.as_path().display().to_string(),
                read_only: b.common.read_only,
            })
        }
        Mount::Tmpfs(t) => Ok(MountSpec::Tmpfs {
            target: t.common.target.as_path().display().to_string(),
        }),
        other => Err(Failure::new(
            Reason::UnsupportedComposeKey,
            format!(
                "spec.compose.file: {what}: mount type `{}` is not supported by stackwarden yet",
                other.kind()
            ),
        )),
    }
}

fn limits(svc: &compose_spec::Service, what: &str) -> Result<(Option<i64>, Option<i64>), Failure> {
    let deploy_limits: Option<&Limits> = svc
        .deploy
        .as_ref()
        .and_then(|d| d.resources.as_ref())
        .and_then(|r| r.limits.as_ref());
    let memory = svc
        .mem_limit
        .or_else(|| deploy_limits.and_then(|l| l.memory));
    let cpus = svc.cpus.or_else(|| deploy_limits.and_then(|l| l.cpus));
    let memory_bytes = memory
        .map(|m: ByteValue| {
            // compose_spec counts `m` as 10^6, but Docker and docker-compose count memory in
            // powers of 1024 (`256m` is 256 MiB), and users copy their files from there.
            let (n, unit) = match m {
                ByteValue::Bytes(n) => (n, 1u64),
                ByteValue::Kilobytes(n) => (n, 1 << 10),
                ByteValue::Megabytes(n) => (n, 1 << 20),
                ByteValue::Gigabytes(n) => (n, 1 << 30),
            };
            n.checked_mul(unit)
                .and_then(|b| i64::try_from(b).ok())
                .ok_or_else(|| {
                    Failure::new(
                        Reason::InvalidField,
                        format!("spec.compose.file: {what}.memory is too large"),
                    )
                })
        })
        .transpose()?;
    let nano_cpus = cpus.map(|c| (c.into_inner() * 1e9).round() as i64);
    Ok((memory_bytes, nano_cpus))
}

fn healthcheck(h: &Healthcheck) -> HealthcheckSpec {
    match h {
        Healthcheck::Disable => HealthcheckSpec::Disabled,
        Healthcheck::Command(c) => {
            let ns = |d: Option<std::time::Duration>| d.map(|d| d.as_nanos() as i64);
            let test = match &c.test {
                None => Vec::new(),
                Some(Test::Command(argv)) => {
                    let mut v = vec!["CMD".to_owned()];
                    v.extend(argv.iter().cloned());
                    v
                }
                Some(Test::ShellCommand(s)) => vec!["CMD-SHELL".to_owned(), s.clone()],
            };
            HealthcheckSpec::Check {
                test,
                interval_ns: ns(c.interval),
                timeout_ns: ns(c.timeout),
                retries: c.retries.map(|r| r as i64),
                start_period_ns: ns(c.start_period),
            }
        }
    }
}
