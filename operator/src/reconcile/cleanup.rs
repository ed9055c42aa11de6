//! Removing a deleted stack: its containers and networks, and its volumes under `Delete`.

use tracing::info;

use super::{Context, Error};
use crate::api::{DeletionPolicy, ServiceStack};
use crate::docker::{Claim, Owner};

/// Removes a deleted stack's containers and networks, and its volumes under `Delete`.
#[tracing::instrument(name = "cleanup", skip_all, fields(stack = %stack.key()))]
pub async fn cleanup(stack: &ServiceStack, uid: &str, ctx: &Context) -> Result<(), Error> {
    if stack.spec.deletion_policy == DeletionPolicy::Orphan {
        info!("deletionPolicy Orphan: leaving containers, networks and volumes in place");
        return Ok(());
    }
    let engine = ctx.engines.engine(stack.spec.docker.host()).await?;
    let owner = Owner {
        project: stack.project_name(),
        stack: stack.key(),
        uid: uid.to_owned(),
    };
    let observed = engine.observe(&owner.project, &[], &[], &[]).await?;
    let status = stack.status.clone().unwrap_or_default();
    let claim = Claim {
        uid: uid.to_owned(),
        unlabelled: status.owned_project.as_deref() == Some(owner.project.as_str()),
    };
    let mut owns_project = claim.unlabelled;
    for c in observed.containers.iter().filter(|c| claim.owns(c)) {
        owns_project = true;
        engine.remove_container(&c.id, None).await?;
    }
    // Networks and volumes carry only docker-compose's labels: they go with the project, and
    // only when the project is this stack's (never a namesake project's).
    if !owns_project {
        info!(
            "the compose project {} is not this stack's; nothing removed",
            owner.project
        );
        return Ok(());
    }
    let (networks, volumes) = engine.owned_resources(&owner).await?;
    for n in networks {
        engine.remove_network(&n).await?;
    }
    if stack.spec.deletion_policy == DeletionPolicy::Delete {
        for v in volumes {
            engine.remove_volume(&v).await?;
        }
    }
    info!(policy = ?stack.spec.deletion_policy, "stack removed");
    Ok(())
}
