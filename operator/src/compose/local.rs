//! The three compose keys that reach outside the compose file: `container_name`, `env_file` and
//! `build`.
//!
//! `container_name` is honoured anywhere. `env_file` and `build` name files relative to the
//! compose file's directory; a ServiceStack in a cluster has no such directory, so there they
//! are refused with what to do instead. In local mode the manifest file's directory stands in.
//!
//! Loading stays pure: the caller says where the stack comes from ([`Origin`]). For a local
//! stack the edge first asks [`references`] which files the compose file names, reads them
//! (env files' text, build contexts' digests) and hands them back in [`LocalInputs`]; the
//! decisions (paths, merge order, image tags, what is refused) are all made here, on what was
//! read, so every case is a unit test and no file is read twice with different results.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use yaml_serde::Value;

use super::model::BuildSpec;
use crate::api::Failure;
use crate::api::Reason;

/// Where a stack's compose file lives, which decides what `env_file` and `build` may refer to.
#[derive(Clone, Copy, Debug)]
pub enum Origin<'a> {
    /// In a cluster: the compose file is inline in the resource; there is no directory.
    Cluster,
    /// A manifest file of `stackwarden local`, with what was read of the files it names.
    Local(&'a LocalInputs),
}

/// What the edge read of the files a local stack's compose file names.
#[derive(Clone, Debug, Default)]
pub struct LocalInputs {
    /// The manifest file's directory: relative paths are resolved against it.
    pub dir: PathBuf,
    /// Each env file (absolute path) with its text, or why it could not be read.
    pub env_files: BTreeMap<PathBuf, Result<String, String>>,
    /// Each build context (absolute path) with the digest of its content, or why it could not
    /// be read.
    pub contexts: BTreeMap<PathBuf, Result<String, String>>,
}

/// The files outside the manifest a compose file names, resolved against the manifest's
/// directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct References {
    pub env_files: BTreeSet<PathBuf>,
    /// Build contexts, each with the Dockerfile path inside it.
    pub contexts: BTreeSet<(PathBuf, String)>,
}

/// A service's `build:` as written.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RawBuild {
    context: String,
    dockerfile: Option<String>,
    args: BTreeMap<String, String>,
    target: Option<String>,
}

/// The three keys of one service, taken out of the compose document.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Extras {
    pub container_name: Option<String>,
    env_files: Vec<String>,
    build: Option<RawBuild>,
    /// Whether the service also has `image:` (the build is then tagged with it too).
    has_image: bool,
}

const BUILD_KEYS: &[&str] = &["context", "dockerfile", "args", "target"];

/// Takes `container_name`, `env_file` and `build` out of each service of `doc` (so the rest is
/// parsed as before), checking their shape. A service with `build:` and no `image:` is given a
/// placeholder image, replaced by the build's tag in [`apply`].
pub(super) fn take_extras(doc: &mut Value) -> Result<BTreeMap<String, Extras>, Failure> {
    let mut out = BTreeMap::new();
    let Some(Value::Mapping(services)) = doc.get_mut("services") else {
        return Ok(out);
    };
    for (name, body) in services.iter_mut() {
        let (Some(name), Value::Mapping(body)) = (name.as_str(), body) else {
            continue;
        };
        let ctx = |key: &str| format!("spec.compose.file: services.{name}.{key}");
        let mut extras = Extras {
            has_image: body.contains_key("image"),
            ..Default::default()
        };
        if let Some(v) = body.remove("container_name") {
            extras.container_name = Some(container_name(&v, &ctx("container_name"))?);
        }
        if let Some(v) = body.remove("env_file") {
            extras.env_files = string_or_list(&v).ok_or_else(|| {
                malformed(format!(
                    "{} must be a path or a list of paths",
                    ctx("env_file")
                ))
            })?;
        }
        if let Some(v) = body.remove("build") {
            extras.build = Some(raw_build(&v, &ctx("build"))?);
            if !extras.has_image {
                body.insert("image".into(), "stackwarden-build/pending".into());
            }
        }
        out.insert(name.to_owned(), extras);
    }
    Ok(out)
}

/// Docker's own rule for container names, so a bad one is refused here, not by a 400 later.
fn container_name(v: &Value, what: &str) -> Result<String, Failure> {
    let name = v.as_str().unwrap_or_default();
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(name.to_owned())
    } else {
        Err(Failure::new(
            Reason::InvalidField,
            format!("{what} {name:?} is not a valid container name: use letters, digits, '_', '.' and '-', starting with a letter or digit, at least 2 characters"),
        ))
    }
}

fn string_or_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Sequence(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

fn raw_build(v: &Value, what: &str) -> Result<RawBuild, Failure> {
    let map = match v {
        Value::String(context) => {
            return Ok(RawBuild {
                context: context.clone(),
                dockerfile: None,
                args: BTreeMap::new(),
                target: None,
            })
        }
        Value::Mapping(m) => m,
        _ => return Err(malformed(format!("{what} must be a path or a mapping"))),
    };
    for key in map.keys() {
        let key = key.as_str().unwrap_or_default();
        if !BUILD_KEYS.contains(&key) && !key.starts_with("x-") {
            return Err(Failure::new(
                Reason::UnsupportedComposeKey,
                format!(
                    "{what}.{key} is not supported by stackwarden yet (it supports {}); remove it",
                    BUILD_KEYS.join(", ")
                ),
            ));
        }
    }
    let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
    let args = match map.get("args") {
        None => BTreeMap::new(),
        Some(Value::Mapping(m)) => m
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), scalar(v))))
            .collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|s| match s.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (s.to_owned(), String::new()),
            })
            .collect(),
        Some(_) => {
            return Err(malformed(format!(
                "{what}.args must be a mapping or a list"
            )))
        }
    };
    Ok(RawBuild {
        context: text("context").unwrap_or_else(|| ".".to_owned()),
        dockerfile: text("dockerfile"),
        args,
        target: text("target"),
    })
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => yaml_serde::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

fn malformed(message: String) -> Failure {
    Failure::new(Reason::MalformedCompose, message)
}

/// The files `extras` name, resolved against `dir`.
pub(super) fn references_of(extras: &BTreeMap<String, Extras>, dir: &Path) -> References {
    let mut refs = References::default();
    for e in extras.values() {
        refs.env_files
            .extend(e.env_files.iter().map(|f| dir.join(f)));
        if let Some(b) = &e.build {
            refs.contexts.insert((dir.join(&b.context), dockerfile(b)));
        }
    }
    refs
}

fn dockerfile(b: &RawBuild) -> String {
    b.dockerfile
        .clone()
        .unwrap_or_else(|| "Dockerfile".to_owned())
}

/// What a service gets from its extras: the container name, the variables of its env files
/// (later files win, as in compose; `environment:` wins over all, applied by the caller) and
/// the build with its content tag.
#[derive(Debug, Default)]
pub(super) struct Applied {
    pub container_name: Option<String>,
    pub env: BTreeMap<String, String>,
    pub build: Option<BuildSpec>,
}

/// Resolves one service's extras for `origin`.
pub(super) fn resolve(
    project: &str,
    service: &str,
    extras: &Extras,
    image: &str,
    origin: Origin<'_>,
) -> Result<Applied, Failure> {
    let ctx = |key: &str| format!("spec.compose.file: services.{service}.{key}");
    let mut out = Applied {
        container_name: extras.container_name.clone(),
        ..Default::default()
    };
    let inputs = match origin {
        Origin::Local(inputs) => inputs,
        Origin::Cluster if !extras.env_files.is_empty() => {
            return Err(Failure::new(
                Reason::UnsupportedComposeKey,
                format!("{} is not supported in a cluster (there is no directory to read the file from): put the values in a Secret and name it in spec.variablesFrom, then use `environment:` with ${{VAR}}", ctx("env_file")),
            ))
        }
        Origin::Cluster if extras.build.is_some() => {
            return Err(Failure::new(
                Reason::UnsupportedComposeKey,
                format!("{} is not supported in a cluster (the operator builds no images there): build and push the image to a registry, then set `image:` to it", ctx("build")),
            ))
        }
        Origin::Cluster => return Ok(out),
    };
    for file in &extras.env_files {
        let path = inputs.dir.join(file);
        let text = match inputs.env_files.get(&path) {
            Some(Ok(text)) => text,
            Some(Err(e)) => return Err(env_file_missing(&ctx("env_file"), &path, e)),
            None => return Err(env_file_missing(&ctx("env_file"), &path, "not read")),
        };
        let vars = parse_env_file(text).map_err(|e| {
            Failure::new(
                Reason::InvalidField,
                format!("{}: {}: {e}", ctx("env_file"), path.display()),
            )
        })?;
        out.env.extend(vars);
    }
    if let Some(b) = &extras.build {
        let context = inputs.dir.join(&b.context);
        let dockerfile = dockerfile(b);
        let digest = match inputs.contexts.get(&context) {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(context_unreadable(&ctx("build"), &context, e)),
            None => return Err(context_unreadable(&ctx("build"), &context, "not read")),
        };
        out.build = Some(BuildSpec {
            image: build_tag(
                project,
                service,
                digest,
                &dockerfile,
                &b.args,
                b.target.as_deref(),
            ),
            context,
            dockerfile,
            args: b.args.clone(),
            target: b.target.clone(),
            also_tag: extras.has_image.then(|| image.to_owned()),
        });
    }
    Ok(out)
}

fn env_file_missing(what: &str, path: &Path, why: &str) -> Failure {
    Failure::new(
        Reason::InvalidField,
        format!("{what}: env file {} cannot be read ({why}); create it or fix the path (relative paths are taken from the manifest file's directory)", path.display()),
    )
}

fn context_unreadable(what: &str, path: &Path, why: &str) -> Failure {
    Failure::new(
        Reason::InvalidField,
        format!("{what}: build context {} cannot be read ({why}); fix the path (relative paths are taken from the manifest file's directory)", path.display()),
    )
}

/// The tag of a build: the same content, Dockerfile, args and target always give the same tag,
/// so an image already on the engine is not built again, and any change gives a new tag, so the
/// planner recreates the service (its config hash holds the image).
pub fn build_tag(
    project: &str,
    service: &str,
    context_digest: &str,
    dockerfile: &str,
    args: &BTreeMap<String, String>,
    target: Option<&str>,
) -> String {
    let mut h = Sha256::new();
    for part in [context_digest, dockerfile, target.unwrap_or("")] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for (k, v) in args {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    let digest = hex::encode(h.finalize());
    format!("stackwarden-build/{project}-{service}:{}", &digest[..12])
}

pub use crate::env_file::parse as parse_env_file;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_tag_changes_with_content_dockerfile_args_and_target_only() {
        let args = BTreeMap::from([("V".to_owned(), "1".to_owned())]);
        let tag = |d: &str, f: &str, a: &BTreeMap<String, String>, t: Option<&str>| {
            build_tag("p", "web", d, f, a, t)
        };
        let base = tag("abc", "Dockerfile", &args, None);
        assert!(base.starts_with("stackwarden-build/p-web:"), "{base}");
        assert_eq!(base.len(), "stackwarden-build/p-web:".len() + 12);
        assert_eq!(base, tag("abc", "Dockerfile", &args, None));
        assert_ne!(base, tag("abd", "Dockerfile", &args, None));
        assert_ne!(base, tag("abc", "Other", &args, None));
        assert_ne!(base, tag("abc", "Dockerfile", &BTreeMap::new(), None));
        assert_ne!(base, tag("abc", "Dockerfile", &args, Some("prod")));
    }

    #[test]
    fn extras_are_taken_out_and_a_build_without_image_gets_a_placeholder() {
        let mut doc: Value = yaml_serde::from_str(
            "services:\n  a: {container_name: erni-a, env_file: [.env, /abs/x.env], build: {context: ./app, args: [V=1]}}\n  b: {image: x, build: ., container_name: b1}",
        )
        .unwrap();
        let extras = take_extras(&mut doc).unwrap();
        let a = &doc["services"]["a"];
        assert!(a.get("build").is_none() && a.get("env_file").is_none());
        assert_eq!(a["image"].as_str(), Some("stackwarden-build/pending"));
        assert_eq!(extras["a"].container_name.as_deref(), Some("erni-a"));
        assert!(extras["b"].has_image && !extras["a"].has_image);
        let refs = references_of(&extras, Path::new("/m"));
        assert_eq!(
            refs.env_files,
            BTreeSet::from([PathBuf::from("/m/.env"), PathBuf::from("/abs/x.env")])
        );
        assert!(refs
            .contexts
            .contains(&(PathBuf::from("/m/./app"), "Dockerfile".to_owned())));
    }

    #[test]
    fn bad_container_names_and_unknown_build_keys_are_refused_by_name() {
        let mut doc: Value =
            yaml_serde::from_str("services: {a: {image: x, container_name: \"-bad name\"}}")
                .unwrap();
        let err = take_extras(&mut doc).unwrap_err();
        assert!(err.message.contains("container_name"), "{}", err.message);
        let mut doc: Value =
            yaml_serde::from_str("services: {a: {build: {context: ., ssh: [default]}}}").unwrap();
        let err = take_extras(&mut doc).unwrap_err();
        assert_eq!(err.reason, Reason::UnsupportedComposeKey);
        assert!(err.message.contains("build.ssh"), "{}", err.message);
    }
}
