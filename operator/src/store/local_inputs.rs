//! The local driver's edge for the files a compose file names outside itself: env files and
//! build contexts, relative to the manifest file's directory. Reads them for
//! [`crate::admit::admit`] (which decides everything on what was read), and stamps them
//! (sizes and modification times) so the poll notices an edit without reading content. The env
//! files of `spec.variablesFrom` are stamped too ([`references`]); the store reads them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::api::{ServiceStack, VariablesSource};
use crate::compose::{self, LocalInputs, References};

/// Reads the env files and digests the build contexts `stack`'s compose file names. Errors are
/// kept per file (the I/O error's text names no content) for `load_local` to report.
pub fn gather(stack: &ServiceStack, dir: &Path) -> LocalInputs {
    let refs = compose::references(stack, dir);
    LocalInputs {
        dir: dir.to_owned(),
        env_files: refs
            .env_files
            .into_iter()
            .map(|f| {
                let text = std::fs::read_to_string(&f).map_err(|e| e.to_string());
                (f, text)
            })
            .collect(),
        contexts: refs
            .contexts
            .into_iter()
            .map(|(ctx, dockerfile)| {
                let digest = context_digest(&ctx, &dockerfile);
                (ctx, digest)
            })
            .collect(),
    }
}

/// What a local stack reads beside its manifest, whose edits make it due: the env files and
/// build contexts its compose file names, and the env files of `spec.variablesFrom`. The
/// compose file is read with those files' variables, which its `${VAR}`s may need.
pub fn references(stack: &ServiceStack, dir: &Path) -> References {
    let files: Vec<PathBuf> = stack
        .spec
        .variables_from
        .iter()
        .filter_map(|s| match s {
            VariablesSource::File(f) => Some(dir.join(f)),
            VariablesSource::SecretRef(_) => None,
        })
        .collect();
    // Later files win over earlier ones, the spec's own variables over all (as the admit does).
    let from_files: BTreeMap<String, String> = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter_map(|text| crate::env_file::parse(&text).ok())
        .flatten()
        .collect();
    let mut with_vars = stack.clone();
    for (k, v) in from_files {
        with_vars.spec.variables.entry(k).or_insert(v);
    }
    let mut refs = compose::references(&with_vars, dir);
    refs.env_files.extend(files);
    refs
}

fn context_digest(ctx: &Path, dockerfile: &str) -> Result<String, String> {
    let digest = crate::build_context::digest(ctx).map_err(|e| e.to_string())?;
    // The Dockerfile is sent inside the context; one `.dockerignore` left out cannot be built.
    let listed = crate::build_context::files(ctx)
        .map_err(|e| e.to_string())?
        .iter()
        .any(|f| f.rel == dockerfile.trim_start_matches("./"));
    if listed {
        Ok(digest)
    } else {
        Err(format!(
            "it has no {dockerfile} (or .dockerignore leaves it out); the Dockerfile must be inside the context"
        ))
    }
}

/// What may change a local stack's project without its manifest changing: each referenced
/// file's size and modification time, each context's files' too.
pub type Stamp = Vec<(
    PathBuf,
    Option<(u64, Option<SystemTime>)>,
    crate::build_context::Stamp,
)>;

/// Stamps the files `refs` names; cheap enough for every poll (no content is read).
pub fn stamp(refs: &References) -> Stamp {
    let file = |f: &Path| {
        std::fs::metadata(f)
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    let mut out: Stamp = refs
        .env_files
        .iter()
        .map(|f| (f.clone(), file(f), Vec::new()))
        .collect();
    for (ctx, _) in &refs.contexts {
        out.push((ctx.clone(), None, crate::build_context::stamp(ctx)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_env_files_of_variables_from_are_watched_and_lend_the_compose_file_their_variables() {
        let dir = tempfile::tempdir().unwrap();
        // The compose file's env_file path needs ${ENV_NAME}, which only stack.env sets.
        std::fs::write(dir.path().join("stack.env"), "ENV_NAME=app.env\n").unwrap();
        let spec = serde_json::json!({
            "compose": {"file": "services: {a: {image: x, env_file: \"${ENV_NAME}\"}}"},
            "variablesFrom": [{"file": "stack.env"}],
        });
        let stack = ServiceStack::new("demo", serde_json::from_value(spec).unwrap());
        let refs = references(&stack, dir.path());
        assert_eq!(
            refs.env_files,
            [dir.path().join("app.env"), dir.path().join("stack.env")].into()
        );
        let before = stamp(&refs);
        std::fs::write(dir.path().join("stack.env"), "ENV_NAME=app.env\nPW=x\n").unwrap();
        assert_ne!(stamp(&refs), before, "an edit to stack.env went unseen");
    }
}
