//! An engine in memory, for unit tests of the reconcile: containers, networks and volumes as
//! plain data, every request recorded as a line of [`FakeEngine::requests`] (the changes alone
//! in [`FakeEngine::calls`]), and a few levers for what Docker does by itself (a crash). What
//! a test never needs (exec, files, scratch containers) answers with an error, as an engine
//! that cannot do it would.

use std::collections::BTreeSet;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;

use super::{
    Brief, Bytes, Engine, EngineError, ExecOutcome, ExecStream, FileStat, Observed,
    ObservedContainer, Owner, Surge,
};
use crate::api::ContainerState;
use crate::compose::{BuildSpec, NetworkSpec, RestartPolicy, ServiceSpec, VolumeSpec};

#[derive(Default)]
pub struct FakeEngine {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    containers: Vec<ObservedContainer>,
    networks: BTreeSet<String>,
    volumes: BTreeSet<String>,
    calls: Vec<String>,
    created: u64,
}

impl FakeEngine {
    /// The changes asked of the engine so far, one line each (`create cache`, `start cache`).
    pub fn calls(&self) -> Vec<String> {
        let s = self.lock();
        s.calls
            .iter()
            .filter(|c| !c.starts_with(OBSERVE))
            .cloned()
            .collect()
    }

    /// Every request so far in order, the looks (`observe PROJECT`) among the changes.
    pub fn requests(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// The containers as the engine has them.
    pub fn containers(&self) -> Vec<ObservedContainer> {
        self.lock().containers.clone()
    }

    /// The service's container exits by itself with `code`, as a crash does.
    pub fn crash(&self, service: &str, code: i64) {
        let mut s = self.lock();
        let c = s
            .containers
            .iter_mut()
            .find(|c| c.service == service)
            .expect("a container of the service");
        c.state = ContainerState::Exited;
        c.exit_code = Some(code);
        c.finished_at = Some(Utc::now());
    }

    /// A created container of `svc` named `name`, with an address on each of its networks.
    fn add(
        &self,
        svc: &ServiceSpec,
        owner: &Owner,
        revision: u64,
        spec_hash: &str,
        name: String,
    ) -> String {
        let mut s = self.lock();
        s.created += 1;
        let id = format!("{:064x}", s.created);
        let host = (s.created % 250) as u8 + 2;
        s.containers.push(ObservedContainer {
            id: id.clone(),
            name,
            service: svc.name.clone(),
            uid: Some(owner.uid.clone()),
            config_hash: Some(svc.config_hash()),
            compose_hash: None,
            revision: Some(revision),
            spec_hash: Some(spec_hash.to_owned()),
            state: ContainerState::Created,
            health: None,
            image: svc.image.clone(),
            exit_code: None,
            restart_count: 0,
            // One address per network, as Docker gives (probes and backups reach it there).
            addresses: svc
                .networks
                .iter()
                .map(|n| (n.network.clone(), [172, 18, 0, host].into()))
                .collect(),
            published: Default::default(),
            oom_killed: false,
            started_at: None,
            finished_at: None,
            restart_policy: Some(svc.restart),
        });
        id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake engine lock")
    }

    /// Applies `change` to container `id` and records `call`; a missing container is Docker's
    /// 404.
    fn with(
        &self,
        id: &str,
        call: &str,
        change: impl FnOnce(&mut ObservedContainer),
    ) -> Result<(), EngineError> {
        let mut s = self.lock();
        let c = s
            .containers
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| missing(id))?;
        let line = format!("{call} {}", c.service);
        change(c);
        s.calls.push(line);
        Ok(())
    }
}

/// How a look at a project is recorded.
const OBSERVE: &str = "observe ";

fn missing(id: &str) -> EngineError {
    EngineError::Api {
        context: format!("container {id}"),
        status: Some(404),
        message: "no such container".into(),
    }
}

fn unsupported(what: &str) -> EngineError {
    EngineError::Api {
        context: format!("the fake engine: {what}"),
        status: None,
        message: "not something the fake engine does".into(),
    }
}

fn started(c: &mut ObservedContainer) {
    c.state = ContainerState::Running;
    c.exit_code = None;
    c.started_at = Some(Utc::now());
}

#[async_trait]
impl Engine for FakeEngine {
    async fn observe(
        &self,
        project: &str,
        networks: &[String],
        volumes: &[String],
        images: &[String],
    ) -> Result<Observed, EngineError> {
        let mut s = self.lock();
        s.calls.push(format!("{OBSERVE}{project}"));
        let prefix = format!("{project}-");
        Ok(Observed {
            containers: s
                .containers
                .iter()
                .filter(|c| c.name.starts_with(&prefix))
                .cloned()
                .collect(),
            networks: networks
                .iter()
                .filter(|n| s.networks.contains(*n))
                .cloned()
                .collect(),
            volumes: volumes
                .iter()
                .filter(|v| s.volumes.contains(*v))
                .cloned()
                .collect(),
            // Every image is there: nothing is pulled.
            images: images.iter().cloned().collect(),
            image_ids: images
                .iter()
                .map(|i| (i.clone(), format!("sha256:{i}")))
                .collect(),
        })
    }

    async fn create_network(&self, net: &NetworkSpec, _: &Owner) -> Result<(), EngineError> {
        let mut s = self.lock();
        s.networks.insert(net.name.clone());
        s.calls.push(format!("create network {}", net.name));
        Ok(())
    }

    async fn create_volume(&self, vol: &VolumeSpec, _: &Owner) -> Result<(), EngineError> {
        let mut s = self.lock();
        s.volumes.insert(vol.name.clone());
        s.calls.push(format!("create volume {}", vol.name));
        Ok(())
    }

    async fn pull_image(&self, image: &str) -> Result<(), EngineError> {
        self.lock().calls.push(format!("pull {image}"));
        Ok(())
    }

    async fn build_image(&self, build: &BuildSpec) -> Result<(), EngineError> {
        self.lock().calls.push(format!("build {}", build.image));
        Ok(())
    }

    async fn create_container(
        &self,
        svc: &ServiceSpec,
        owner: &Owner,
        revision: u64,
        spec_hash: &str,
    ) -> Result<String, EngineError> {
        let name = format!("{}-{}-1", owner.project, svc.name);
        let id = self.add(svc, owner, revision, spec_hash, name);
        self.lock().calls.push(format!("create {}", svc.name));
        Ok(id)
    }

    async fn create_surge_container(
        &self,
        svc: &ServiceSpec,
        owner: &Owner,
        revision: u64,
        spec_hash: &str,
        surge: &Surge,
    ) -> Result<String, EngineError> {
        // Repeat-safe as the real engine's: the surge made by an earlier try is answered.
        let made = self.lock().containers.iter().find_map(|c| {
            (c.name == surge.name() && c.spec_hash.as_deref() == Some(spec_hash))
                .then(|| c.id.clone())
        });
        let id = match made {
            Some(id) => id,
            None => self.add(svc, owner, revision, spec_hash, surge.name().to_owned()),
        };
        self.lock()
            .calls
            .push(format!("create surge {} {}", svc.name, surge.number()));
        Ok(id)
    }

    async fn disconnect_network(&self, id: &str, network: &str) -> Result<(), EngineError> {
        let mut s = self.lock();
        // Gone, or not on the network, is done.
        if let Some(c) = s.containers.iter_mut().find(|c| c.id == id) {
            c.addresses.remove(network);
            let line = format!("disconnect {} from {network}", c.service);
            s.calls.push(line);
        }
        Ok(())
    }

    async fn rename_container(&self, id: &str, name: &str) -> Result<(), EngineError> {
        let name = name.to_owned();
        self.with(id, "rename", move |c| c.name = name)
    }

    async fn start_container(&self, id: &str) -> Result<(), EngineError> {
        self.with(id, "start", started)
    }

    async fn remove_container(&self, id: &str, _: Option<i64>) -> Result<(), EngineError> {
        let mut s = self.lock();
        // Already gone is done: removal is repeat-safe, as the real engine's is.
        if let Some(at) = s.containers.iter().position(|c| c.id == id) {
            let c = s.containers.remove(at);
            s.calls.push(format!("remove {}", c.service));
        }
        Ok(())
    }

    async fn owned_resources(&self, _: &Owner) -> Result<(Vec<String>, Vec<String>), EngineError> {
        let s = self.lock();
        Ok((
            s.networks.iter().cloned().collect(),
            s.volumes.iter().cloned().collect(),
        ))
    }

    async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        self.lock().networks.remove(name);
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        self.lock().volumes.remove(name);
        Ok(())
    }

    async fn restart_container(&self, id: &str, _: Option<i64>) -> Result<(), EngineError> {
        self.with(id, "restart", started)
    }

    async fn exec_capture(
        &self,
        _: &str,
        _: &[String],
        _: usize,
    ) -> Result<ExecOutcome, EngineError> {
        Err(unsupported("exec"))
    }

    async fn exec_stream(
        &self,
        _: &str,
        _: &[String],
        _: &[String],
        _: Option<Bytes>,
    ) -> Result<ExecStream, EngineError> {
        Err(unsupported("exec"))
    }

    async fn open_file(&self, _: &str, _: &str) -> Result<(FileStat, Bytes), EngineError> {
        Err(unsupported("files"))
    }

    async fn upload_file(
        &self,
        _: &str,
        _: &str,
        _: Bytes,
        _: FileStat,
    ) -> Result<(), EngineError> {
        Err(unsupported("files"))
    }

    async fn brief(&self, id: &str) -> Result<Brief, EngineError> {
        Err(unsupported(&format!("brief of {id}")))
    }

    async fn create_scratch(
        &self,
        _: &str,
        _: &str,
        _: &[String],
        _: Option<&[String]>,
    ) -> Result<String, EngineError> {
        Err(unsupported("scratch containers"))
    }

    async fn scratch_containers(&self, _: &str) -> Result<Vec<String>, EngineError> {
        Ok(Vec::new())
    }

    async fn logs_tail(&self, _: &str, _: usize) -> Result<String, EngineError> {
        Ok(String::new())
    }

    async fn stop_container(&self, id: &str, _: Option<i64>) -> Result<(), EngineError> {
        self.with(id, "stop", |c| {
            c.state = ContainerState::Exited;
            c.exit_code = Some(0);
            c.finished_at = Some(Utc::now());
        })
    }

    async fn set_restart_policy(&self, id: &str, policy: RestartPolicy) -> Result<(), EngineError> {
        self.with(id, "update restart policy of", |c| {
            c.restart_policy = Some(policy);
        })
    }
}
