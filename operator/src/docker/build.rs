//! Building a `build:` service's image through the build API, from a tar of its context.

use std::collections::HashMap;

use bollard::query_parameters::{BuildImageOptionsBuilder, TagImageOptionsBuilder};
use futures::StreamExt;

use super::{BollardEngine, EngineError};
use crate::compose::BuildSpec;

/// Lines of build output kept for the error: the failing step and its message are at the end.
const TAIL_LINES: usize = 15;

impl BollardEngine {
    pub(super) async fn build(&self, build: &BuildSpec) -> Result<(), EngineError> {
        let context = format!(
            "building image {} from {}",
            build.image,
            build.context.display()
        );
        let api = |message: String| EngineError::Api {
            context: context.clone(),
            status: None,
            message,
        };
        let tar = crate::build_context::tar(&build.context)
            .await
            .map_err(|e| api(format!("cannot read the context: {e}")))?;
        let args: HashMap<&str, &str> = build
            .args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut opts = BuildImageOptionsBuilder::default()
            .dockerfile(&build.dockerfile)
            .t(&build.image)
            .rm(true)
            .forcerm(true)
            .buildargs(&args);
        if let Some(target) = &build.target {
            opts = opts.target(target);
        }
        let mut stream =
            self.docker
                .build_image(opts.build(), None, Some(bollard::body_full(tar.into())));
        let mut tail: Vec<String> = Vec::new();
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(api(failure(&tail, &error)))
                }
                Err(e) => return Err(self.err(context.clone())(e)),
            };
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(api(failure(&tail, &detail)));
            }
            if let Some(line) = info.stream {
                tail.extend(
                    line.lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(str::to_owned),
                );
                let skip = tail.len().saturating_sub(TAIL_LINES);
                tail.drain(..skip);
            }
        }
        if let Some(also) = &build.also_tag {
            let (repo, tag) = split_tag(also);
            let opts = TagImageOptionsBuilder::default()
                .repo(repo)
                .tag(tag)
                .build();
            self.docker
                .tag_image(&build.image, Some(opts))
                .await
                .map_err(self.err(format!("tagging {} as {also}", build.image)))?;
        }
        Ok(())
    }
}

fn failure(tail: &[String], error: &str) -> String {
    format!(
        "the build failed: {}. Its last output:\n{}",
        error.trim(),
        tail.join("\n")
    )
}

/// `repo[:tag]`, where a `:` in a registry's port is not a tag.
fn split_tag(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_name_splits_into_repo_and_tag_past_a_registry_port() {
        assert_eq!(split_tag("erni/backend"), ("erni/backend", "latest"));
        assert_eq!(split_tag("erni/backend:v2"), ("erni/backend", "v2"));
        assert_eq!(
            split_tag("reg:5000/erni/backend"),
            ("reg:5000/erni/backend", "latest")
        );
    }
}
