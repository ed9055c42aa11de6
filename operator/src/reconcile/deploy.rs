//! The deploy gate: a changed compose file waits for its `beforeDeploy` backups.

use crate::api::{ServiceStack, ServiceStackStatus};
use crate::compose::Project;
use crate::decide::backup::plan::Gate;

/// A compose file other than the one applied last, and whether its `beforeDeploy` backups
/// let it through yet; until they do, nothing is applied and status keeps the old revision.
pub(super) struct Deploy {
    pub spec_hash: String,
    /// Whether the spec hash differs from the one applied (and the stack is not suspended).
    pub changed: bool,
    pub gate: Gate,
}

impl Deploy {
    pub fn of(stack: &ServiceStack, project: &Project, previous: &ServiceStackStatus) -> Self {
        let spec_hash = project.spec_hash();
        let changed =
            !stack.spec.suspend && previous.spec_hash.as_ref().is_some_and(|h| *h != spec_hash);
        let gate = if changed {
            crate::decide::backup::plan::deploy_gate(
                &stack.spec.backups,
                &previous.backups,
                &spec_hash,
            )
        } else {
            Gate::Open
        };
        Self {
            spec_hash,
            changed,
            gate,
        }
    }

    pub fn deploying(&self) -> Option<&str> {
        self.changed.then_some(self.spec_hash.as_str())
    }

    /// The gate again, on the backups as this pass left them.
    pub fn gate_after(&self, stack: &ServiceStack, status: &ServiceStackStatus) -> Gate {
        match self.deploying() {
            Some(h) => {
                crate::decide::backup::plan::deploy_gate(&stack.spec.backups, &status.backups, h)
            }
            None => Gate::Open,
        }
    }
}
