//! docker-compose 1.29's own `com.docker.compose.config-hash`, so that the runbook's
//! `docker-compose -p P -f FILE up -d` on a stack the operator manages finds every container up
//! to date and recreates nothing.
//!
//! docker-compose 1.29 (`compose/service.py`, `Service.config_dict` and `utils.json_hash`)
//! hashes `json.dumps(d, sort_keys=True, separators=(',', ':'))` (ASCII-escaped) with SHA-256,
//! where `d` is `{options, image_id, links, net, ipc_mode, networks, secrets, volumes_from}`:
//! `options` is the service mapping after its config processing (interpolated, list forms of
//! `environment`/`labels`/`depends_on` turned into maps, ports parsed into
//! `[target, published, protocol, mode, host_ip]`, short volumes into `[source, target, mode]`
//! with named volumes under their Docker name, durations of `healthcheck` in nanoseconds,
//! `restart` as Docker's policy object, `deploy.resources.limits` moved to `mem_limit`/`cpus`,
//! `networks` removed, `platform` and `device_requests` always present); `image_id` is the id
//! of the image on the engine; `net` is the service's first network by name and `networks`
//! maps each Docker network name to the service's settings on it. This module rebuilds that
//! dictionary from the interpolated compose file for the keys the operator supports. Where a
//! form is one this module does not reproduce for sure (a relative bind path, an environment
//! entry read from the shell, a port range of unequal sides...), there is no docker-compose hash
//! and the operator writes its own instead: docker-compose then recreates that service on its
//! next `up`, as it did before, and nothing else changes.
//!
//! Compose v2 (`docker compose`, `pkg/compose/hash.go` `ServiceHash`) hashes a JSON of its own
//! service model instead. One label cannot carry both values; 1.29 is what these machines and
//! the runbooks use, so 1.29's is the one written.
//!
//! Nothing the operator decides about its own containers depends on this hash being right: it
//! keeps its own in [`crate::docker::labels::OWN_CONFIG_HASH`]. This one is only compared for
//! containers that lack that label (created by docker-compose), where it is the best evidence
//! that the container was created from this very config.

use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};
use yaml_serde::Value;

use super::model::{NetworkSpec, VolumeSpec};

/// docker-compose 1.29's config dictionary of a service, without its image id (known only on
/// the engine). It holds environment values in clear, so `Debug` shows none of it.
#[derive(Clone, PartialEq)]
pub struct ComposeV1Config(Json);

impl std::fmt::Debug for ComposeV1Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ComposeV1Config(..)")
    }
}

impl ComposeV1Config {
    /// The `com.docker.compose.config-hash` docker-compose 1.29 computes for this service when
    /// the service's image has `image_id` on the engine (None: not there).
    pub fn hash(&self, image_id: Option<&str>) -> String {
        let mut d = self.0.clone();
        d["image_id"] = image_id.map_or(Json::Null, |i| Json::String(i.to_owned()));
        let text = serde_json::to_string(&d).expect("JSON values serialize");
        hex::encode(Sha256::digest(ascii_escaped(&text).as_bytes()))
    }
}

/// Python's `json.dumps` escapes everything outside printable ASCII as `\uXXXX` (UTF-16 code
/// units); serde_json writes it as is. Control characters are already escaped alike by both.
fn ascii_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if (' '..='~').contains(&ch) || ch < ' ' {
            out.push(ch);
        } else {
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The names compose resources go by on Docker, to resolve a service's references.
pub struct Names<'a> {
    pub networks: &'a [NetworkSpec],
    pub volumes: &'a [VolumeSpec],
}

/// The config dictionary of `service` (its interpolated mapping), or None where a form is not
/// reproduced (see the module doc).
pub fn config(service: &Value, names: &Names) -> Option<ComposeV1Config> {
    let svc = service.as_mapping()?;
    let mut options = Map::new();
    options.insert("platform".into(), Json::Null);
    options.insert("device_requests".into(), Json::Null);
    options.insert("volumes".into(), json!([]));
    let mut networks = None;
    for (key, value) in svc {
        let key = key.as_str()?;
        let (name, converted) = match key {
            k if k.starts_with("x-") => continue,
            "networks" => {
                networks = Some(value);
                continue;
            }
            "deploy" => {
                limits(value, &mut options)?;
                continue;
            }
            "image" | "command" | "entrypoint" | "expose" | "user" | "working_dir" | "hostname"
            | "mem_limit" | "cpus" | "pull_policy" | "stop_signal" | "stop_grace_period"
            | "init" | "tty" | "stdin_open" | "extra_hosts" => (key, to_json(value)?),
            "environment" => (key, environment(value)?),
            "labels" => (key, labels(value)?),
            "ports" => (key, ports(value)?),
            "volumes" => (key, volumes(value, names)?),
            "depends_on" => (key, depends_on(value)?),
            "healthcheck" => (key, healthcheck(value)?),
            "restart" => (key, restart(value)?),
            _ => return None,
        };
        options.insert(name.to_owned(), converted);
    }
    let networks = service_networks(networks, names)?;
    let net = networks
        .keys()
        .next()
        .cloned()
        .map_or(Json::Null, Json::String);
    Some(ComposeV1Config(json!({
        "options": options,
        "links": [],
        "net": net,
        "ipc_mode": null,
        "networks": networks,
        "secrets": [],
        "volumes_from": [],
    })))
}

fn to_json(v: &Value) -> Option<Json> {
    serde_json::to_value(v).ok()
}

/// `key: value` of a YAML scalar used as a map key or list entry.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn environment(v: &Value) -> Option<Json> {
    let mut out = Map::new();
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                // A null value is read from docker-compose's own environment: unknown here.
                let v = match v {
                    Value::String(_) | Value::Number(_) => to_json(v)?,
                    _ => return None,
                };
                out.insert(scalar(k)?, v);
            }
        }
        Value::Sequence(items) => {
            for item in items {
                let (k, v) = item.as_str()?.split_once('=')?;
                out.insert(k.to_owned(), Json::String(v.to_owned()));
            }
        }
        _ => return None,
    }
    Some(Json::Object(out))
}

fn labels(v: &Value) -> Option<Json> {
    match v {
        Value::Mapping(_) => to_json(v),
        Value::Sequence(items) => {
            let mut out = Map::new();
            for item in items {
                let s = item.as_str()?;
                let (k, v) = s.split_once('=').unwrap_or((s, ""));
                out.insert(k.to_owned(), Json::String(v.to_owned()));
            }
            Some(Json::Object(out))
        }
        _ => None,
    }
}

fn ports(v: &Value) -> Option<Json> {
    let mut out = Vec::new();
    for item in v.as_sequence()? {
        match item {
            Value::Number(n) => out.push(json!([n.as_u64()?, null, null, null, null])),
            Value::String(s) => out.extend(short_port(s)?),
            Value::Mapping(m) => {
                let field = |k: &str| m.get(k).map(to_json).unwrap_or(Some(Json::Null));
                let target = m.get("target")?.as_u64()?;
                if m.keys().any(|k| {
                    !matches!(
                        k.as_str(),
                        Some("target" | "published" | "protocol" | "mode" | "host_ip")
                    )
                }) || m.get("published").is_some_and(|p| !p.is_u64())
                {
                    return None;
                }
                out.push(json!([
                    target,
                    field("published")?,
                    field("protocol")?,
                    field("mode")?,
                    field("host_ip")?
                ]));
            }
            _ => return None,
        }
    }
    Some(Json::Array(out))
}

/// `[[ip:]published:]target[/protocol]`, ranges expanded pairwise.
fn short_port(s: &str) -> Option<Vec<Json>> {
    let (rest, protocol) = match s.rsplit_once('/') {
        Some((r, p)) => (r, Json::String(p.to_owned())),
        None => (s, Json::Null),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, published, target) = match parts.as_slice() {
        [t] => (None, None, *t),
        [p, t] => (None, Some(*p), *t),
        [ip, p, t] => (Some(*ip), Some(*p).filter(|p| !p.is_empty()), *t),
        _ => return None,
    };
    let targets = range(target)?;
    let published = match published {
        None => vec![None; targets.len()],
        Some(p) => range(p)?.into_iter().map(Some).collect(),
    };
    if published.len() != targets.len() {
        return None;
    }
    let ip = ip.map_or(Json::Null, |i| Json::String(i.to_owned()));
    Some(
        targets
            .into_iter()
            .zip(published)
            .map(|(t, p)| json!([t, p, protocol.clone(), null, ip.clone()]))
            .collect(),
    )
}

fn range(s: &str) -> Option<Vec<u64>> {
    match s.split_once('-') {
        None => Some(vec![s.parse().ok()?]),
        Some((a, b)) => {
            let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
            (a <= b).then(|| (a..=b).collect())
        }
    }
}

fn volumes(v: &Value, names: &Names) -> Option<Json> {
    let docker_name = |key: &str| {
        names
            .volumes
            .iter()
            .find(|vol| vol.key == key)
            .map(|vol| vol.name.clone())
    };
    let mut out = Vec::new();
    for item in v.as_sequence()? {
        match item {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                let (source, target, mode) = match parts.as_slice() {
                    [t] => (None, *t, "rw"),
                    [s, t] => (Some(*s), *t, "rw"),
                    [s, t, m] => (Some(*s), *t, *m),
                    _ => return None,
                };
                let source = match source {
                    None => Json::Null,
                    Some(p) if p.starts_with('/') => Json::String(trim_slash(p)),
                    Some(p) if p.starts_with('.') || p.starts_with('~') => return None,
                    Some(key) => Json::String(docker_name(key)?),
                };
                out.push(json!([source, trim_slash(target), mode]));
            }
            Value::Mapping(m) => {
                let mut mount = Map::new();
                for (k, val) in m {
                    match (k.as_str()?, val) {
                        ("type" | "target", Value::String(s)) => {
                            mount.insert(k.as_str()?.to_owned(), Json::String(s.clone()));
                        }
                        ("read_only", Value::Bool(b)) => {
                            if *b {
                                mount.insert("read_only".into(), Json::Bool(true));
                            }
                        }
                        ("source", Value::String(s)) => {
                            let s = match m.get("type").and_then(Value::as_str) {
                                Some("volume") => docker_name(s)?,
                                Some("bind") if s.starts_with('/') => s.clone(),
                                _ => return None,
                            };
                            mount.insert("source".into(), Json::String(s));
                        }
                        _ => return None,
                    }
                }
                out.push(Json::Object(mount));
            }
            _ => return None,
        }
    }
    Some(Json::Array(out))
}

/// compose normalizes `/a/b/` to `/a/b`.
fn trim_slash(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() { "/" } else { t }.to_owned()
}

fn depends_on(v: &Value) -> Option<Json> {
    match v {
        Value::Sequence(items) => {
            let mut out = Map::new();
            for item in items {
                out.insert(
                    item.as_str()?.to_owned(),
                    json!({"condition": "service_started"}),
                );
            }
            Some(Json::Object(out))
        }
        Value::Mapping(_) => to_json(v),
        _ => None,
    }
}

fn healthcheck(v: &Value) -> Option<Json> {
    let mut out = Map::new();
    for (k, val) in v.as_mapping()? {
        match k.as_str()? {
            "disable" if val.as_bool() == Some(true) => return Some(json!({"test": ["NONE"]})),
            "disable" => {}
            "test" | "retries" => {
                out.insert(k.as_str()?.to_owned(), to_json(val)?);
            }
            d @ ("interval" | "timeout" | "start_period") => {
                out.insert(d.to_owned(), json!(nanoseconds(val.as_str()?)?));
            }
            _ => return None,
        }
    }
    Some(Json::Object(out))
}

/// Go-style durations as compose parses them (`1m30s`, `1.5s`, `500ms`), in nanoseconds.
fn nanoseconds(s: &str) -> Option<i64> {
    const UNITS: [(&str, f64); 7] = [
        ("ns", 1.0),
        ("us", 1e3),
        ("ms", 1e6),
        ("s", 1e9),
        ("m", 60e9),
        ("h", 3600e9),
        ("d", 86400e9),
    ];
    let mut rest = s.trim();
    let mut total = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = UNITS.iter().find(|(u, _)| *u == &rest[..unit_len])?.1;
        rest = &rest[unit_len..];
        total += number * factor;
    }
    Some(total as i64)
}

fn restart(v: &Value) -> Option<Json> {
    let s = v.as_str()?;
    let (name, count) = match s.split_once(':') {
        Some((n, c)) => (n, c.parse::<u64>().ok()?),
        None => (s, 0),
    };
    Some(json!({"Name": name, "MaximumRetryCount": count}))
}

/// `deploy.resources.limits` become `mem_limit` and `cpus` (a float); nothing else of
/// `deploy` is supported by the operator.
fn limits(v: &Value, options: &mut Map<String, Json>) -> Option<()> {
    let Some(limits) = v.get("resources").and_then(|r| r.get("limits")) else {
        return Some(());
    };
    if let Some(m) = limits.get("memory") {
        options.insert("mem_limit".into(), to_json(m)?);
    }
    if let Some(c) = limits.get("cpus") {
        let cpus: f64 = match c {
            Value::Number(n) => n.as_f64()?,
            Value::String(s) => s.parse().ok()?,
            _ => return None,
        };
        options.insert("cpus".into(), json!(cpus));
    }
    Some(())
}

/// Docker network name -> the service's settings on it (`{}` when none).
fn service_networks(v: Option<&Value>, names: &Names) -> Option<Map<String, Json>> {
    let docker_name = |key: &str| {
        names
            .networks
            .iter()
            .find(|n| n.key == key)
            .map(|n| n.name.clone())
    };
    let mut out = Map::new();
    match v {
        None => {
            out.insert(docker_name("default")?, json!({}));
        }
        Some(Value::Sequence(items)) => {
            for item in items {
                out.insert(docker_name(item.as_str()?)?, json!({}));
            }
        }
        Some(Value::Mapping(m)) => {
            for (k, settings) in m {
                let settings = match settings {
                    Value::Null => json!({}),
                    other => to_json(other)?,
                };
                out.insert(docker_name(k.as_str()?)?, settings);
            }
        }
        Some(_) => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ServiceStack, ServiceStackSpec};

    /// A file using every form this module reproduces; its hashes below were printed by
    /// docker-compose 1.29.2 itself (`Service.config_hash` with the image id below,
    /// `REDIS_PASSWORD=s3cr3t`, project `proj`).
    const FIXTURE: &str = include_str!("compose_v1_fixture.yml");
    const IMAGE_ID: &str = "sha256:0123456789abcdef";

    fn project(file: &str) -> crate::compose::Project {
        let spec: ServiceStackSpec = serde_json::from_value(json!({
            "compose": {"projectName": "proj", "file": file},
            "variables": {"REDIS_PASSWORD": "s3cr3t"},
        }))
        .unwrap();
        crate::compose::load(&ServiceStack::new("demo", spec)).unwrap()
    }

    #[test]
    fn the_hash_is_the_one_docker_compose_1_29_computes_for_the_same_file() {
        let p = project(FIXTURE);
        for (service, expected) in [
            (
                "db",
                "ef8f16fd797a7c0bd11634cd7b14aab55667ad2604534ba5210a0c4f6fc4d336",
            ),
            (
                "cache",
                "80345f03f1835034dd96f2441efd2950cbcac1369d759a5187c5b426522cf09a",
            ),
            (
                "plain",
                "f0c428416377cb9d044378f8df354fd38a90712c877d33995471b304609258c6",
            ),
        ] {
            let svc = p.service(service).unwrap();
            assert!(svc.compose_v1.is_some(), "{service} has no compose view");
            assert_eq!(svc.compose_hash(Some(IMAGE_ID)), expected, "{service}");
        }
    }

    #[test]
    fn a_form_not_reproduced_falls_back_to_the_operators_own_hash() {
        let file = "services:\n  web:\n    image: busybox\n    environment: {EMPTY: }\n";
        let web = project(file).service("web").unwrap().clone();
        assert!(web.compose_v1.is_none());
        assert_eq!(web.compose_hash(Some(IMAGE_ID)), web.config_hash());
    }

    #[test]
    fn the_image_id_is_part_of_the_hash() {
        let p = project(FIXTURE);
        let plain = p.service("plain").unwrap();
        assert_ne!(plain.compose_hash(Some(IMAGE_ID)), plain.compose_hash(None));
    }

    #[test]
    fn debug_output_shows_no_environment_value() {
        let p = project(FIXTURE);
        let cache = p.service("cache").unwrap();
        assert!(!format!("{:?}", cache.compose_v1).contains("s3cr3t"));
    }

    #[test]
    fn non_ascii_is_escaped_as_python_does() {
        assert_eq!(
            ascii_escaped("a\u{e9}\u{1f600}~"),
            "a\\u00e9\\ud83d\\ude00~"
        );
    }

    #[test]
    fn durations_parse_as_compose_parses_them() {
        assert_eq!(nanoseconds("1m30s"), Some(90_000_000_000));
        assert_eq!(nanoseconds("1.5s"), Some(1_500_000_000));
        assert_eq!(nanoseconds("500ms"), Some(500_000_000));
        assert_eq!(nanoseconds("soon"), None);
    }
}
