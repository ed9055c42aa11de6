//! An engine that stops the operator at a chosen action: the real Docker engine behind
//! [`Engine`], except that the first action `trap` picks never returns. A test runs passes
//! against it until the trap has sprung, then drops the pass: the operator is killed exactly
//! between recording an act and doing it, on a real engine (see the kill-point tests of
//! `e2e_rollout`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use stackwarden::compose::{BuildSpec, NetworkSpec, ServiceSpec, VolumeSpec};
use stackwarden::docker::{
    Brief, Bytes, Engine, EngineError, ExecOutcome, ExecStream, FileStat, Observed, Owner, Surge,
};

/// An action that changes what runs, as the trap sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// A container of the service is created (beside another, in a surge, or in its place).
    Create {
        service: String,
        surge: bool,
    },
    Start {
        id: String,
    },
    /// Stopped, removed, or taken off a network: a container on its way out.
    Retire {
        id: String,
    },
    Rename {
        id: String,
    },
}

/// Picks the action at which the operator is "killed".
pub type Pick = Box<dyn Fn(&Act) -> bool + Send + Sync>;

/// The real engine with one trap in it.
pub struct Trapped {
    inner: Arc<dyn Engine>,
    pick: Pick,
    sprung: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Trapped {
    pub fn new(inner: Arc<dyn Engine>, pick: Pick) -> Arc<Self> {
        Arc::new(Self {
            inner,
            pick,
            sprung: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
        })
    }

    /// Returns once an action was caught (the pass that made it now hangs in it).
    pub async fn sprung(&self) {
        loop {
            let notified = self.notify.notified();
            if self.sprung.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    pub fn has_sprung(&self) -> bool {
        self.sprung.load(Ordering::Acquire)
    }

    /// Hangs forever when `act` is the one picked (the first only); returns at once otherwise.
    async fn check(&self, act: Act) {
        if self.has_sprung() || !(self.pick)(&act) {
            return;
        }
        self.sprung.store(true, Ordering::Release);
        self.notify.notify_waiters();
        std::future::pending::<()>().await;
    }
}

#[async_trait]
impl Engine for Trapped {
    async fn observe(
        &self,
        project: &str,
        networks: &[String],
        volumes: &[String],
        images: &[String],
    ) -> Result<Observed, EngineError> {
        self.inner.observe(project, networks, volumes, images).await
    }
    async fn create_network(&self, net: &NetworkSpec, owner: &Owner) -> Result<(), EngineError> {
        self.inner.create_network(net, owner).await
    }
    async fn create_volume(&self, vol: &VolumeSpec, owner: &Owner) -> Result<(), EngineError> {
        self.inner.create_volume(vol, owner).await
    }
    async fn pull_image(&self, image: &str) -> Result<(), EngineError> {
        self.inner.pull_image(image).await
    }
    async fn build_image(&self, build: &BuildSpec) -> Result<(), EngineError> {
        self.inner.build_image(build).await
    }
    async fn create_container(
        &self,
        svc: &ServiceSpec,
        owner: &Owner,
        revision: u64,
        spec_hash: &str,
    ) -> Result<String, EngineError> {
        self.check(Act::Create {
            service: svc.name.clone(),
            surge: false,
        })
        .await;
        self.inner
            .create_container(svc, owner, revision, spec_hash)
            .await
    }
    async fn create_surge_container(
        &self,
        svc: &ServiceSpec,
        owner: &Owner,
        revision: u64,
        spec_hash: &str,
        surge: &Surge,
    ) -> Result<String, EngineError> {
        self.check(Act::Create {
            service: svc.name.clone(),
            surge: true,
        })
        .await;
        self.inner
            .create_surge_container(svc, owner, revision, spec_hash, surge)
            .await
    }
    async fn start_container(&self, id: &str) -> Result<(), EngineError> {
        self.check(Act::Start { id: id.to_owned() }).await;
        self.inner.start_container(id).await
    }
    async fn disconnect_network(&self, id: &str, network: &str) -> Result<(), EngineError> {
        self.check(Act::Retire { id: id.to_owned() }).await;
        self.inner.disconnect_network(id, network).await
    }
    async fn remove_container(&self, id: &str, grace_s: Option<i64>) -> Result<(), EngineError> {
        self.check(Act::Retire { id: id.to_owned() }).await;
        self.inner.remove_container(id, grace_s).await
    }
    async fn owned_resources(
        &self,
        owner: &Owner,
    ) -> Result<(Vec<String>, Vec<String>), EngineError> {
        self.inner.owned_resources(owner).await
    }
    async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        self.inner.remove_network(name).await
    }
    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        self.inner.remove_volume(name).await
    }
    async fn restart_container(&self, id: &str, grace_s: Option<i64>) -> Result<(), EngineError> {
        self.check(Act::Start { id: id.to_owned() }).await;
        self.inner.restart_container(id, grace_s).await
    }
    async fn exec_capture(
        &self,
        id: &str,
        command: &[String],
        limit: usize,
    ) -> Result<ExecOutcome, EngineError> {
        self.inner.exec_capture(id, command, limit).await
    }
    async fn exec_stream(
        &self,
        id: &str,
        command: &[String],
        env: &[String],
        stdin: Option<Bytes>,
    ) -> Result<ExecStream, EngineError> {
        self.inner.exec_stream(id, command, env, stdin).await
    }
    async fn open_file(&self, id: &str, path: &str) -> Result<(FileStat, Bytes), EngineError> {
        self.inner.open_file(id, path).await
    }
    async fn upload_file(
        &self,
        id: &str,
        path: &str,
        data: Bytes,
        stat: FileStat,
    ) -> Result<(), EngineError> {
        self.inner.upload_file(id, path, data, stat).await
    }
    async fn brief(&self, id: &str) -> Result<Brief, EngineError> {
        self.inner.brief(id).await
    }
    async fn create_scratch(
        &self,
        image: &str,
        name: &str,
        cmd: &[String],
        entrypoint: Option<&[String]>,
    ) -> Result<String, EngineError> {
        self.inner
            .create_scratch(image, name, cmd, entrypoint)
            .await
    }
    async fn scratch_containers(&self, prefix: &str) -> Result<Vec<String>, EngineError> {
        self.inner.scratch_containers(prefix).await
    }
    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, EngineError> {
        self.inner.logs_tail(id, lines).await
    }
    async fn stop_container(&self, id: &str, grace_s: Option<i64>) -> Result<(), EngineError> {
        self.check(Act::Retire { id: id.to_owned() }).await;
        self.inner.stop_container(id, grace_s).await
    }
    async fn rename_container(&self, id: &str, name: &str) -> Result<(), EngineError> {
        self.check(Act::Rename { id: id.to_owned() }).await;
        self.inner.rename_container(id, name).await
    }
    async fn set_restart_policy(
        &self,
        id: &str,
        policy: stackwarden::compose::RestartPolicy,
    ) -> Result<(), EngineError> {
        self.inner.set_restart_policy(id, policy).await
    }
}
