//! The planner's rules, one test each. Projects come from small compose files through
//! `compose::load`, so config hashes are the real ones; observed containers carry the labels
//! `docker/create.rs` writes. No Docker, no clock.

use std::collections::BTreeSet;

use super::plan::{Action, Applied, Hold, Plan};
use crate::api::{ContainerHealth, ContainerState, Reason, ServiceStack, ServiceStackSpec};
use crate::compose::{self, HealthcheckSpec, NetworkSpec, Project, VolumeSpec};
use crate::observe::{Claim, Observed, ObservedContainer};

/// uid of the ServiceStack doing the planning.
pub(super) const UID: &str = "7d3c1a52-ours";

/// A plan with no revision recorded in status (a first pass, or the status lost).
fn plan(p: &Project, o: &Observed, uid: &str) -> Plan {
    super::plan::plan(p, o, uid, None)
}

/// A plan after a pass that recorded `revision` for project `last`.
fn plan_after(p: &Project, o: &Observed, uid: &str, last: &Project, revision: u64) -> Plan {
    super::plan::plan(
        p,
        o,
        uid,
        Some(&Applied {
            revision,
            spec_hash: last.spec_hash(),
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// Only `service_started` dependencies: app needs db and cache. `scratch` is mounted by nobody.
const SIMPLE: &str = r#"
services:
  app:
    image: example/app:1
    depends_on: [db, cache]
  db:
    image: example/db:1
    volumes: [data:/var/lib/data]
  cache:
    image: example/cache:1
    environment: {MAXMEMORY: 64mb}
volumes:
  data: {}
  scratch: {}
"#;

/// api starts only once db passes its health check.
const HEALTHY: &str = r#"
services:
  api:
    image: example/api:1
    depends_on:
      db: {condition: service_healthy}
  db:
    image: example/db:1
    healthcheck: {test: ["CMD-SHELL", "pg_isready"], interval: 1s, retries: 3}
"#;

/// api asks for a healthy db, but db has no healthcheck at all.
const HEALTHY_WITHOUT_HEALTHCHECK: &str = r#"
services:
  api:
    image: example/api:1
    depends_on:
      db: {condition: service_healthy}
  db:
    image: example/db:1
"#;

/// api starts only after the one-shot migrate job exited 0.
const MIGRATE: &str = r#"
services:
  api:
    image: example/api:1
    depends_on:
      migrate: {condition: service_completed_successfully}
  migrate:
    image: example/api:1
    command: ["api", "migrate"]
"#;

/// A chain edge -> web -> api -> db; api's image is never pulled.
const NEVER_PULL: &str = r#"
services:
  edge:
    image: example/edge:1
    depends_on: [web]
  web:
    image: example/web:1
    depends_on: [api]
  api:
    image: example/api:1
    pull_policy: never
    depends_on: [db]
  db:
    image: example/db:1
"#;

/// proxy sits on an external network, db mounts an external volume, app needs proxy.
const EXTERNAL: &str = r#"
services:
  proxy:
    image: example/proxy:1
    networks: [edge]
  app:
    image: example/app:1
    depends_on: [proxy]
  db:
    image: example/db:1
    volumes: [backups:/backups]
networks:
  edge: {external: true, name: corp-edge}
volumes:
  backups: {external: true}
"#;

const TWO_SERVICES: &str =
    "services: {app: {image: example/app:1}, worker: {image: example/worker:1}}";
const ONE_SERVICE: &str = "services: {app: {image: example/app:1}}";

/// One service with the given `restart:` policy.
/// A service `job` with the given `restart:` policy; when `waited_for`, `report` depends on it
/// with `service_completed_successfully`, which makes `job` a one-shot job.
fn job(restart: &str, waited_for: bool) -> String {
    let mut file =
        format!("services:\n  job:\n    image: example/job:1\n    restart: \"{restart}\"\n");
    if waited_for {
        file.push_str("  report:\n    image: example/report:1\n    depends_on:\n      job: {condition: service_completed_successfully}\n");
    }
    file
}

/// One service with the given `pull_policy:`.
fn pulled(policy: &str) -> String {
    format!("services:\n  app:\n    image: example/app:1\n    pull_policy: {policy}\n")
}

/// A ServiceStack `ops/demo` with this compose file (and any other spec fields, as JSON).
pub(super) fn stack_with(file: &str, extra: serde_json::Value) -> ServiceStack {
    let mut spec = serde_json::json!({ "compose": { "file": file } });
    if let serde_json::Value::Object(extra) = extra {
        spec.as_object_mut().expect("object").extend(extra);
    }
    let spec: ServiceStackSpec = serde_json::from_value(spec).expect("test spec is valid");
    let mut stack = ServiceStack::new("demo", spec);
    stack.metadata.namespace = Some("ops".into());
    stack
}

/// The project of a valid compose file, in project `demo`.
pub(super) fn project(file: &str) -> Project {
    compose::load(&stack_with(file, serde_json::json!({}))).expect("test compose file is valid")
}

/// A running container this stack created for `service` at revision 1, labelled like
/// `docker::create::container_body` does (uid, config hash, revision, spec hash). Healthy when
/// the service has a healthcheck.
pub(super) fn running(p: &Project, service: &str) -> ObservedContainer {
    let svc = p
        .service(service)
        .unwrap_or_else(|| panic!("no service {service} in the project"));
    ObservedContainer {
        id: format!("{service}-0123456789abcdef0123456789abcdef"),
        name: svc.container_name(&p.name),
        service: service.to_owned(),
        uid: Some(UID.to_owned()),
        config_hash: Some(svc.config_hash()),
        compose_hash: Some(svc.compose_hash(None)),
        revision: Some(1),
        spec_hash: Some(p.spec_hash()),
        state: ContainerState::Running,
        health: matches!(svc.healthcheck, Some(HealthcheckSpec::Check { .. }))
            .then_some(ContainerHealth::Healthy),
        image: svc.image.clone(),
        exit_code: None,
        restart_count: 0,
        addresses: Default::default(),
        published: Default::default(),
        oom_killed: false,
        started_at: None,
        finished_at: None,
        restart_policy: None,
    }
}

/// The same container, stopped with `code`.
pub(super) fn exited(c: ObservedContainer, code: i64) -> ObservedContainer {
    ObservedContainer {
        state: ContainerState::Exited,
        exit_code: Some(code),
        health: None,
        ..c
    }
}

fn with_health(c: ObservedContainer, health: ContainerHealth) -> ObservedContainer {
    ObservedContainer {
        health: Some(health),
        ..c
    }
}

fn in_state(c: ObservedContainer, state: ContainerState) -> ObservedContainer {
    ObservedContainer { state, ..c }
}

fn with_id(c: ObservedContainer, id: &str) -> ObservedContainer {
    ObservedContainer {
        id: id.to_owned(),
        ..c
    }
}

fn at_revision(c: ObservedContainer, revision: u64) -> ObservedContainer {
    ObservedContainer {
        revision: Some(revision),
        ..c
    }
}

/// A container of the project, but not created by this stack.
fn owned_by(c: ObservedContainer, uid: Option<&str>) -> ObservedContainer {
    ObservedContainer {
        uid: uid.map(str::to_owned),
        ..c
    }
}

/// A config hash no service of any fixture has.
fn stale(c: ObservedContainer) -> ObservedContainer {
    ObservedContainer {
        config_hash: Some("0ld-c0nf1g".into()),
        ..c
    }
}

fn images(p: &Project) -> BTreeSet<String> {
    p.services.iter().map(|s| s.image.clone()).collect()
}

/// An engine that has never seen the project: nothing at all, not even its images.
fn bare_engine() -> Observed {
    Observed::default()
}

/// An engine with the project's images but no container, network or volume yet.
fn engine_with_images(p: &Project) -> Observed {
    Observed {
        images: images(p),
        image_ids: Default::default(),
        ..Default::default()
    }
}

/// Everything in place: networks, volumes, images, and every service's current container
/// running (and healthy where there is a healthcheck), at revision 1.
fn converged(p: &Project) -> Observed {
    Observed {
        containers: p.services.iter().map(|s| running(p, &s.name)).collect(),
        networks: p.networks.iter().map(|n| n.name.clone()).collect(),
        volumes: p.volumes.iter().map(|v| v.name.clone()).collect(),
        images: images(p),
        image_ids: Default::default(),
    }
}

/// `converged(p)` with these containers instead.
fn engine_running(p: &Project, containers: Vec<ObservedContainer>) -> Observed {
    Observed {
        containers,
        ..converged(p)
    }
}

fn network(p: &Project, name: &str) -> NetworkSpec {
    p.networks
        .iter()
        .find(|n| n.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no network {name}"))
}

fn volume(p: &Project, name: &str) -> VolumeSpec {
    p.volumes
        .iter()
        .find(|v| v.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no volume {name}"))
}

fn create(service: &str) -> Action {
    Action::Create {
        service: service.to_owned(),
    }
}

fn pull(p: &Project, service: &str) -> Action {
    Action::PullImage {
        service: service.to_owned(),
        image: p.service(service).expect("service").image.clone(),
    }
}

fn start(c: &ObservedContainer) -> Action {
    Action::Start {
        service: c.service.clone(),
        id: c.id.clone(),
    }
}

fn recreate(c: &ObservedContainer) -> Action {
    Action::Recreate {
        service: c.service.clone(),
        old_id: c.id.clone(),
    }
}

fn remove(c: &ObservedContainer) -> Action {
    Action::Remove {
        service: c.service.clone(),
        id: c.id.clone(),
    }
}

fn actions_for<'a>(plan: &'a Plan, service: &str) -> Vec<&'a Action> {
    plan.actions
        .iter()
        .filter(|a| a.service() == Some(service))
        .collect()
}

fn hold<'a>(holds: &'a [Hold], service: &str) -> &'a Hold {
    holds
        .iter()
        .find(|h| h.service == service)
        .unwrap_or_else(|| panic!("no hold for {service} in {holds:#?}"))
}

fn held(holds: &[Hold]) -> Vec<&str> {
    holds.iter().map(|h| h.service.as_str()).collect()
}

/// The plan has no action, hold or conflict at all.
fn assert_nothing_to_do(plan: &Plan) {
    assert_eq!(plan.actions, [], "actions");
    assert_eq!(plan.waiting, [], "waiting");
    assert_eq!(plan.blocked, [], "blocked");
    assert_eq!(plan.conflict, None, "conflict");
}

// ---------------------------------------------------------------------------------------------
// A first start on an empty engine
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_engine_creates_networks_then_volumes_then_services_in_dependency_order() {
    let p = project(SIMPLE);
    let plan = plan(&p, &engine_with_images(&p), UID);
    assert_eq!(
        plan.actions,
        [
            Action::CreateNetwork(network(&p, "demo_default")),
            Action::CreateVolume(volume(&p, "demo_data")),
            create("db"),
            create("cache"),
            create("app"),
        ]
    );
    assert_eq!(plan.waiting, []);
    assert_eq!(plan.blocked, []);
    assert_eq!(plan.conflict, None);
}

#[test]
fn owned_volume_that_no_service_mounts_is_not_created() {
    let p = project(SIMPLE);
    let plan = plan(&p, &engine_with_images(&p), UID);
    assert!(plan
        .actions
        .contains(&Action::CreateVolume(volume(&p, "demo_data"))));
    assert!(
        !plan
            .actions
            .contains(&Action::CreateVolume(volume(&p, "demo_scratch"))),
        "{:#?}",
        plan.actions
    );
}

#[test]
fn missing_image_is_pulled_right_before_its_service_is_created() {
    let p = project(SIMPLE);
    let plan = plan(&p, &bare_engine(), UID);
    assert_eq!(
        plan.actions,
        [
            Action::CreateNetwork(network(&p, "demo_default")),
            Action::CreateVolume(volume(&p, "demo_data")),
            pull(&p, "db"),
            create("db"),
            pull(&p, "cache"),
            create("cache"),
            pull(&p, "app"),
            create("app"),
        ]
    );
}

#[test]
fn pull_policy_missing_pulls_only_an_absent_image() {
    let p = project(&pulled("missing"));
    assert_eq!(
        actions_for(&plan(&p, &bare_engine(), UID), "app"),
        [&pull(&p, "app"), &create("app")]
    );
    assert_eq!(
        actions_for(&plan(&p, &engine_with_images(&p), UID), "app"),
        [&create("app")]
    );
}

#[test]
fn image_already_on_the_engine_is_not_pulled() {
    let p = project(SIMPLE);
    let plan = plan(&p, &engine_with_images(&p), UID);
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::PullImage { .. })),
        "{:#?}",
        plan.actions
    );
}

#[test]
fn pull_policy_always_pulls_before_every_create_even_when_the_image_is_present() {
    let p = project(&pulled("always"));
    assert_eq!(
        actions_for(&plan(&p, &engine_with_images(&p), UID), "app"),
        [&pull(&p, "app"), &create("app")]
    );
}

#[test]
fn pull_policy_always_pulls_before_a_recreate() {
    let old = project(&pulled("always"));
    let new = project(&pulled("always").replace("example/app:1", "example/app:2"));
    let app = running(&old, "app");
    let plan = plan(&new, &engine_running(&new, vec![app.clone()]), UID);
    assert_eq!(plan.actions, [pull(&new, "app"), recreate(&app)]);
}

#[test]
fn pull_policy_always_does_not_pull_for_a_service_that_already_runs() {
    let p = project(&pulled("always"));
    assert_nothing_to_do(&plan(&p, &converged(&p), UID));
}

#[test]
fn starting_a_created_container_never_pulls() {
    let p = project(&pulled("always"));
    let app = in_state(running(&p, "app"), ContainerState::Created);
    let mut observed = engine_running(&p, vec![app.clone()]);
    observed.images.clear();
    assert_eq!(plan(&p, &observed, UID).actions, [start(&app)]);
}

#[test]
fn pull_policy_never_with_the_image_present_creates_without_pulling() {
    let p = project(&pulled("never"));
    assert_eq!(
        actions_for(&plan(&p, &engine_with_images(&p), UID), "app"),
        [&create("app")]
    );
}

// ---------------------------------------------------------------------------------------------
// pull_policy: never and a missing image
// ---------------------------------------------------------------------------------------------

/// NEVER_PULL on an engine that has every image but api's.
fn engine_without_api_image(p: &Project) -> Observed {
    let mut observed = engine_with_images(p);
    observed.images.remove("example/api:1");
    observed
}

#[test]
fn pull_policy_never_with_a_missing_image_blocks_the_service_with_image_not_found() {
    let p = project(NEVER_PULL);
    let plan = plan(&p, &engine_without_api_image(&p), UID);
    assert_eq!(held(&plan.blocked), ["api"]);
    let h = hold(&plan.blocked, "api");
    assert_eq!(h.reason, Reason::ImageNotFound);
    assert!(
        h.message.contains("example/api:1") && h.message.contains("pull_policy is never"),
        "{}",
        h.message
    );
    assert_eq!(
        actions_for(&plan, "api"),
        Vec::<&Action>::new(),
        "neither pulled nor created"
    );
}

#[test]
fn services_depending_on_a_blocked_service_wait_all_the_way_down_the_chain() {
    let p = project(NEVER_PULL);
    let plan = plan(&p, &engine_without_api_image(&p), UID);
    // db, which api needs, is not affected.
    assert_eq!(
        plan.actions,
        [
            Action::CreateNetwork(network(&p, "demo_default")),
            create("db")
        ]
    );
    assert_eq!(held(&plan.waiting), ["web", "edge"]);
    for (service, dep) in [("web", "api"), ("edge", "web")] {
        let h = hold(&plan.waiting, service);
        assert_eq!(h.reason, Reason::WaitingForDependencies);
        assert_eq!(
            h.message,
            format!("{service} waits for {dep}, which cannot start")
        );
    }
}

#[test]
fn changed_service_whose_new_image_is_missing_keeps_its_old_container() {
    let old = project(NEVER_PULL);
    let new = project(&NEVER_PULL.replace("example/api:1", "example/api:2"));
    // Everything runs the old project; example/api:2 was never loaded.
    let observed = converged(&old);
    let plan = plan(&new, &observed, UID);
    assert_eq!(held(&plan.blocked), ["api"]);
    assert_eq!(hold(&plan.blocked, "api").reason, Reason::ImageNotFound);
    assert_eq!(
        plan.actions,
        [],
        "the old api container is neither recreated nor removed"
    );
    // web and edge run their current config: nothing to wait for either.
    assert_eq!(plan.waiting, []);
}

// ---------------------------------------------------------------------------------------------
// depends_on conditions
// ---------------------------------------------------------------------------------------------

#[test]
fn service_started_dependency_created_in_the_same_pass_is_met() {
    let p = project(SIMPLE);
    let plan = plan(&p, &engine_with_images(&p), UID);
    let pos = |a: &Action| {
        plan.actions
            .iter()
            .position(|x| x == a)
            .unwrap_or_else(|| panic!("{a:?} not planned"))
    };
    assert!(
        pos(&create("db")) < pos(&create("app")) && pos(&create("cache")) < pos(&create("app"))
    );
    assert_eq!(plan.waiting, []);
}

#[test]
fn service_started_dependency_that_already_runs_is_met() {
    let p = project(SIMPLE);
    let observed = engine_running(&p, vec![running(&p, "db"), running(&p, "cache")]);
    assert_eq!(plan(&p, &observed, UID).actions, [create("app")]);
}

#[test]
fn service_started_dependency_that_itself_waits_holds_the_dependent() {
    let p = project(&format!(
        "{HEALTHY}  web:\n    image: example/web:1\n    depends_on: [api]\n"
    ));
    let plan = plan(&p, &engine_with_images(&p), UID);
    assert_eq!(
        plan.actions,
        [
            Action::CreateNetwork(network(&p, "demo_default")),
            create("db")
        ]
    );
    assert_eq!(held(&plan.waiting), ["api", "web"]);
    assert_eq!(
        hold(&plan.waiting, "web").message,
        "web waits for api to start"
    );
    assert_eq!(
        hold(&plan.waiting, "web").reason,
        Reason::WaitingForDependencies
    );
}

#[test]
fn service_healthy_dependency_created_in_the_same_pass_makes_the_dependent_wait() {
    let p = project(HEALTHY);
    let plan = plan(&p, &engine_with_images(&p), UID);
    assert_eq!(
        plan.actions,
        [
            Action::CreateNetwork(network(&p, "demo_default")),
            create("db")
        ]
    );
    let h = hold(&plan.waiting, "api");
    assert_eq!(h.reason, Reason::WaitingForDependencies);
    assert_eq!(h.message, "api waits for db to be healthy");
    // What it will need once db allows, for a rollout to take in its order.
    assert_eq!(plan.deferred, [create("api")]);
}

#[test]
fn service_healthy_dependency_whose_check_is_still_starting_makes_the_dependent_wait() {
    let p = project(HEALTHY);
    let observed = engine_running(
        &p,
        vec![with_health(running(&p, "db"), ContainerHealth::Starting)],
    );
    let plan = plan(&p, &observed, UID);
    assert_eq!(plan.actions, []);
    assert_eq!(held(&plan.waiting), ["api"]);
    assert_eq!(
        hold(&plan.waiting, "api").message,
        "api waits for db to be healthy"
    );
}

#[test]
fn service_healthy_dependency_that_is_unhealthy_makes_the_dependent_wait() {
    let p = project(HEALTHY);
    let observed = engine_running(
        &p,
        vec![with_health(running(&p, "db"), ContainerHealth::Unhealthy)],
    );
    let plan = plan(&p, &observed, UID);
    assert_eq!(plan.actions, []);
    assert_eq!(held(&plan.waiting), ["api"]);
}

#[test]
fn service_healthy_dependency_that_is_healthy_lets_the_dependent_be_created() {
    let p = project(HEALTHY);
    let observed = engine_running(
        &p,
        vec![with_health(running(&p, "db"), ContainerHealth::Healthy)],
    );
    let plan = plan(&p, &observed, UID);
    assert_eq!(plan.actions, [create("api")]);
    assert_eq!(plan.waiting, []);
}

#[test]
fn service_healthy_dependency_running_without_healthcheck_says_it_has_none() {
    let p = project(HEALTHY_WITHOUT_HEALTHCHECK);
    let db = running(&p, "db");
    assert_eq!(db.health, None);
    let plan = plan(&p, &engine_running(&p, vec![db]), UID);
    assert_eq!(plan.actions, []);
    let h = hold(&plan.waiting, "api");
    assert!(
        h.message.starts_with("api waits for db to be healthy"),
        "{}",
        h.message
    );
    assert!(
        h.message.contains("no healthcheck") && h.message.contains("service_started"),
        "{}",
        h.message
    );
}

#[test]
fn service_healthy_dependency_being_recreated_in_this_pass_makes_the_dependent_wait() {
    let old = project(HEALTHY);
    let new = project(&HEALTHY.replace("example/db:1", "example/db:2"));
    // The old db is healthy, but it is about to be replaced.
    let db = running(&old, "db");
    let plan = plan(&new, &engine_running(&new, vec![db.clone()]), UID);
    assert_eq!(plan.actions, [recreate(&db)]);
    assert_eq!(
        hold(&plan.waiting, "api").message,
        "api waits for db to be healthy"
    );
}

#[test]
fn service_healthy_dependency_that_stopped_makes_the_dependent_wait_for_heal_to_restart_it() {
    let p = project(HEALTHY);
    let db = exited(running(&p, "db"), 1);
    let plan = plan(&p, &engine_running(&p, vec![db]), UID);
    assert_eq!(plan.actions, []);
    assert_eq!(held(&plan.waiting), ["api"]);
}

#[test]
fn dependent_that_already_runs_is_left_alone_while_its_dependency_is_recreated() {
    let old = project(HEALTHY);
    let new = project(&HEALTHY.replace("example/db:1", "example/db:2"));
    let db = running(&old, "db");
    let plan = plan(
        &new,
        &engine_running(&new, vec![db.clone(), running(&new, "api")]),
        UID,
    );
    assert_eq!(plan.actions, [recreate(&db)]);
    assert_eq!(plan.waiting, []);
}

#[test]
fn service_completed_successfully_dependency_that_exited_0_is_met() {
    let p = project(MIGRATE);
    let plan = plan(
        &p,
        &engine_running(&p, vec![exited(running(&p, "migrate"), 0)]),
        UID,
    );
    assert_eq!(plan.actions, [create("api")]);
    assert_eq!(plan.waiting, []);
}

#[test]
fn service_completed_successfully_dependency_that_failed_holds_the_dependent() {
    // Rerunning the failed job is heal's business (with backoff); the planner only waits.
    let p = project(MIGRATE);
    let migrate = exited(running(&p, "migrate"), 3);
    let plan = plan(&p, &engine_running(&p, vec![migrate]), UID);
    assert_eq!(plan.actions, []);
    assert_eq!(
        hold(&plan.waiting, "api").message,
        "api waits for migrate to complete successfully"
    );
}

#[test]
fn service_completed_successfully_dependency_still_running_makes_the_dependent_wait() {
    let p = project(MIGRATE);
    let plan = plan(&p, &engine_running(&p, vec![running(&p, "migrate")]), UID);
    assert_eq!(plan.actions, []);
    assert_eq!(
        hold(&plan.waiting, "api").message,
        "api waits for migrate to complete successfully"
    );
}

#[test]
fn service_completed_successfully_dependency_created_in_the_same_pass_makes_the_dependent_wait() {
    let p = project(MIGRATE);
    let plan = plan(&p, &engine_with_images(&p), UID);
    assert_eq!(
        plan.actions,
        [
            Action::CreateNetwork(network(&p, "demo_default")),
            create("migrate")
        ]
    );
    assert_eq!(held(&plan.waiting), ["api"]);
}

#[test]
fn failed_one_shot_still_holds_its_dependents() {
    let p = project(&format!(
        "{MIGRATE}    depends_on:\n      db: {{condition: service_healthy}}\n  db:\n    image: example/db:1\n    healthcheck: {{test: [\"CMD\", \"true\"]}}\n"
    ));
    let db = with_health(running(&p, "db"), ContainerHealth::Starting);
    let migrate = exited(running(&p, "migrate"), 1);
    let plan = plan(&p, &engine_running(&p, vec![db, migrate]), UID);
    assert_eq!(plan.actions, []);
    assert_eq!(
        hold(&plan.waiting, "api").message,
        "api waits for migrate to complete successfully"
    );
}

#[test]
fn a_waiting_service_gets_no_action_not_even_a_pull() {
    let p = project(HEALTHY);
    let plan = plan(&p, &bare_engine(), UID);
    assert_eq!(held(&plan.waiting), ["api"]);
    assert_eq!(actions_for(&plan, "api"), Vec::<&Action>::new());
}

// ---------------------------------------------------------------------------------------------
// Converged stacks and drift
// ---------------------------------------------------------------------------------------------

#[test]
fn converged_stack_needs_no_actions_and_keeps_its_revision() {
    for file in [SIMPLE, HEALTHY, NEVER_PULL, TWO_SERVICES] {
        let p = project(file);
        let observed = Observed {
            containers: converged(&p)
                .containers
                .into_iter()
                .map(|c| at_revision(c, 7))
                .collect(),
            ..converged(&p)
        };
        let plan = plan(&p, &observed, UID);
        assert_nothing_to_do(&plan);
        assert_eq!(plan.revision, 7, "{file}");
    }
}

#[test]
fn converged_stack_needs_no_pull_even_when_its_images_are_gone() {
    let p = project(SIMPLE);
    let mut observed = converged(&p);
    observed.images.clear();
    assert_nothing_to_do(&plan(&p, &observed, UID));
}

#[test]
fn planning_twice_from_the_same_observation_gives_the_same_plan() {
    let p = project(NEVER_PULL);
    let observed = engine_without_api_image(&p);
    assert_eq!(plan(&p, &observed, UID), plan(&p, &observed, UID));
}

#[test]
fn one_changed_service_is_recreated_and_nothing_else() {
    let old = project(SIMPLE);
    let new = project(&SIMPLE.replace("MAXMEMORY: 64mb", "MAXMEMORY: 128mb"));
    assert_ne!(
        old.service("cache").unwrap().config_hash(),
        new.service("cache").unwrap().config_hash()
    );
    let observed = converged(&old);
    let cache = observed
        .containers
        .iter()
        .find(|c| c.service == "cache")
        .unwrap()
        .clone();
    let plan = plan(&new, &observed, UID);
    assert_eq!(plan.actions, [recreate(&cache)]);
    assert_eq!(plan.waiting, []);
    assert_eq!(plan.blocked, []);
}

#[test]
fn changed_image_is_pulled_before_the_recreate_when_missing() {
    let old = project(SIMPLE);
    let new = project(&SIMPLE.replace("example/cache:1", "example/cache:2"));
    let observed = converged(&old);
    let cache = running(&old, "cache");
    assert_eq!(
        plan(&new, &observed, UID).actions,
        [pull(&new, "cache"), recreate(&cache)]
    );
}

#[test]
fn container_without_a_config_hash_label_is_recreated() {
    let p = project(ONE_SERVICE);
    let app = ObservedContainer {
        config_hash: None,
        compose_hash: None,
        ..running(&p, "app")
    };
    assert_eq!(
        plan(&p, &engine_running(&p, vec![app.clone()]), UID).actions,
        [recreate(&app)]
    );
}

// ---------------------------------------------------------------------------------------------
// Containers to remove
// ---------------------------------------------------------------------------------------------

#[test]
fn container_of_a_service_no_longer_in_the_file_is_removed() {
    let before = project(TWO_SERVICES);
    let after = project(ONE_SERVICE);
    let worker = running(&before, "worker");
    let observed = engine_running(&after, vec![running(&after, "app"), worker.clone()]);
    let plan = plan(&after, &observed, UID);
    assert_eq!(plan.actions, [remove(&worker)]);
}

#[test]
fn obsolete_containers_are_removed_after_the_services_are_brought_up() {
    let before = project(TWO_SERVICES);
    let after = project(ONE_SERVICE);
    let worker = running(&before, "worker");
    let plan = plan(&after, &engine_running(&after, vec![worker.clone()]), UID);
    assert_eq!(plan.actions, [create("app"), remove(&worker)]);
}

#[test]
fn duplicates_of_a_service_keep_the_current_running_one_and_remove_the_others() {
    let p = project(SIMPLE);
    let best = with_id(running(&p, "db"), "db-best");
    let stopped = with_id(exited(running(&p, "db"), 1), "db-stopped");
    let outdated = with_id(stale(running(&p, "db")), "db-outdated");
    let mut observed = converged(&p);
    observed.containers.retain(|c| c.service != "db");
    // Order on the engine must not matter.
    observed
        .containers
        .extend([outdated.clone(), stopped.clone(), best.clone()]);
    let plan = plan(&p, &observed, UID);
    assert_eq!(plan.actions.len(), 2, "{:#?}", plan.actions);
    assert!(
        plan.actions.contains(&remove(&stopped)) && plan.actions.contains(&remove(&outdated)),
        "{:#?}",
        plan.actions
    );
}

#[test]
fn duplicates_prefer_the_current_config_over_a_running_container() {
    let p = project(ONE_SERVICE);
    let outdated = with_id(stale(running(&p, "app")), "app-outdated");
    let current = with_id(exited(running(&p, "app"), 1), "app-current");
    let plan = plan(
        &p,
        &engine_running(&p, vec![outdated.clone(), current.clone()]),
        UID,
    );
    // The current one is kept (heal restarts it); the outdated one goes.
    assert_eq!(plan.actions, [remove(&outdated)]);
}

#[test]
fn duplicates_without_a_current_one_keep_the_running_one_and_recreate_it() {
    let p = project(ONE_SERVICE);
    let up = with_id(stale(running(&p, "app")), "app-up");
    let down = with_id(exited(stale(running(&p, "app")), 0), "app-down");
    let plan = plan(&p, &engine_running(&p, vec![down.clone(), up.clone()]), UID);
    assert_eq!(plan.actions.len(), 2, "{:#?}", plan.actions);
    assert!(
        plan.actions.contains(&remove(&down)) && plan.actions.contains(&recreate(&up)),
        "{:#?}",
        plan.actions
    );
}

// ---------------------------------------------------------------------------------------------
// Stopped containers
// ---------------------------------------------------------------------------------------------

const WAITED_FOR: bool = true;

/// Plans `job(restart, waited_for)` with job's container in the state `container` makes of a
/// running one (and report, if any, running).
fn plan_job(
    restart: &str,
    waited_for: bool,
    container: impl Fn(ObservedContainer) -> ObservedContainer,
) -> (Plan, ObservedContainer) {
    let p = project(&job(restart, waited_for));
    let c = container(running(&p, "job"));
    let mut containers = vec![c.clone()];
    if waited_for {
        containers.push(running(&p, "report"));
    }
    (plan(&p, &engine_running(&p, containers), UID), c)
}

#[test]
fn created_but_never_started_container_is_started() {
    let (plan, c) = plan_job("no", WAITED_FOR, |c| in_state(c, ContainerState::Created));
    assert_eq!(plan.actions, [start(&c)]);
}

#[test]
fn stopped_containers_are_left_to_heal_whatever_the_policy_and_exit_code() {
    for restart in ["no", "on-failure", "always", "unless-stopped"] {
        for code in [0, 1, 137] {
            let (plan, _) = plan_job(restart, WAITED_FOR, |c| exited(c, code));
            assert_eq!(plan.actions, [], "restart: {restart}, exit {code}");
            let (plan, _) = plan_job(restart, !WAITED_FOR, |c| exited(c, code));
            assert_eq!(plan.actions, [], "restart: {restart}, exit {code}");
        }
    }
    let (plan, _) = plan_job("always", WAITED_FOR, |c| {
        in_state(exited(c, 1), ContainerState::Dead)
    });
    assert_eq!(plan.actions, []);
}

#[test]
fn running_restarting_and_paused_containers_are_left_alone() {
    for state in [
        ContainerState::Running,
        ContainerState::Restarting,
        ContainerState::Paused,
    ] {
        let (plan, _) = plan_job("always", WAITED_FOR, |c| in_state(c, state));
        assert_nothing_to_do(&plan);
    }
}

// ---------------------------------------------------------------------------------------------
// Foreign containers
// ---------------------------------------------------------------------------------------------

#[test]
fn container_of_another_servicestack_using_the_project_name_is_a_conflict_and_nothing_is_done() {
    let p = project(SIMPLE);
    let theirs = owned_by(running(&p, "db"), Some("0000-another-stack"));
    let plan = plan(
        &p,
        &Observed {
            containers: vec![theirs.clone()],
            ..engine_with_images(&p)
        },
        UID,
    );
    assert_eq!(plan.actions, []);
    let conflict = plan.conflict.expect("a conflict");
    assert!(
        conflict.contains(&theirs.name) && conflict.contains("\"demo\""),
        "{conflict}"
    );
    assert!(conflict.contains("spec.compose.projectName"), "{conflict}");
}

#[test]
fn container_without_a_stackwarden_uid_using_the_project_name_is_a_conflict() {
    // e.g. started by hand with `docker-compose -p demo up`.
    let p = project(SIMPLE);
    let by_hand = owned_by(running(&p, "cache"), None);
    let plan = plan(
        &p,
        &Observed {
            containers: vec![by_hand],
            ..engine_with_images(&p)
        },
        UID,
    );
    let conflict = plan.conflict.expect("a conflict");
    assert!(conflict.contains("spec.compose.adopt: true"), "{conflict}");
    assert_eq!(plan.actions, []);
}

/// A container docker-compose created for `service` from the compose file as it is now: its
/// `com.docker.compose.config-hash` is docker-compose's own, and it has no stackwarden label.
fn by_docker_compose(p: &Project, service: &str) -> ObservedContainer {
    ObservedContainer {
        uid: None,
        config_hash: None,
        revision: None,
        spec_hash: None,
        compose_hash: Some(p.service(service).unwrap().compose_hash(None)),
        ..running(p, service)
    }
}

fn adopting(uid: &str) -> Claim {
    Claim {
        uid: uid.to_owned(),
        unlabelled: true,
    }
}

#[test]
fn adopting_keeps_docker_compose_containers_that_match_the_file_and_recreates_the_others() {
    let p = project(TWO_SERVICES);
    let app = by_docker_compose(&p, "app");
    let worker = ObservedContainer {
        compose_hash: Some("an older config".into()),
        ..by_docker_compose(&p, "worker")
    };
    let observed = engine_running(&p, vec![app, worker.clone()]);
    let plan = super::plan::plan_claimed(&p, &observed, &adopting(UID), None);
    assert_eq!(plan.conflict, None);
    assert_eq!(plan.actions, [recreate(&worker)]);
}

#[test]
fn an_owned_project_replaced_by_docker_compose_up_is_managed_not_a_conflict() {
    // `docker-compose up --force-recreate` replaced every container without our labels.
    let p = project(TWO_SERVICES);
    let observed = engine_running(
        &p,
        vec![
            by_docker_compose(&p, "app"),
            by_docker_compose(&p, "worker"),
        ],
    );
    let plan = super::plan::plan_claimed(&p, &observed, &adopting(UID), None);
    assert_eq!(plan.conflict, None);
    assert_eq!(plan.actions, []);
}

#[test]
fn adopting_never_takes_another_stacks_containers() {
    let p = project(TWO_SERVICES);
    let theirs = owned_by(running(&p, "app"), Some("0000-another-stack"));
    let observed = engine_running(&p, vec![theirs, by_docker_compose(&p, "worker")]);
    let plan = super::plan::plan_claimed(&p, &observed, &adopting(UID), None);
    let conflict = plan.conflict.expect("a conflict");
    assert!(conflict.contains("another ServiceStack"), "{conflict}");
    assert_eq!(plan.actions, []);
}

#[test]
fn the_operators_own_hash_decides_for_its_own_containers_whatever_docker_composes_says() {
    let p = project(ONE_SERVICE);
    let app = ObservedContainer {
        compose_hash: Some("whatever docker-compose would compute".into()),
        ..running(&p, "app")
    };
    assert_eq!(plan(&p, &engine_running(&p, vec![app]), UID).actions, []);
}

#[test]
fn a_conflict_touches_not_even_our_own_containers() {
    let p = project(ONE_SERVICE);
    let ours_obsolete = running(&project(TWO_SERVICES), "worker");
    let ours_stopped = exited(running(&p, "app"), 1);
    let theirs = with_id(owned_by(running(&p, "app"), Some("other")), "theirs");
    let plan = plan(
        &p,
        &engine_running(&p, vec![ours_obsolete, ours_stopped, theirs]),
        UID,
    );
    assert!(plan.conflict.is_some());
    assert_eq!(plan.actions, []);
    assert_eq!(plan.blocked, []);
    assert_eq!(plan.waiting, []);
}

// ---------------------------------------------------------------------------------------------
// External networks and volumes
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_external_network_blocks_the_services_on_it_and_is_never_created() {
    let p = project(EXTERNAL);
    let mut observed = engine_with_images(&p);
    observed.volumes.insert("backups".into());
    let plan = plan(&p, &observed, UID);
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::CreateNetwork(n) if n.name == "corp-edge")),
        "{:#?}",
        plan.actions
    );
    assert_eq!(held(&plan.blocked), ["proxy"]);
    let h = hold(&plan.blocked, "proxy");
    assert_eq!(h.reason, Reason::ApplyFailed);
    assert!(
        h.message.contains("external network corp-edge")
            && h.message.contains("docker network create corp-edge"),
        "{}",
        h.message
    );
    assert_eq!(actions_for(&plan, "proxy"), Vec::<&Action>::new());
    // db does not use the network: it goes ahead.
    assert!(plan.actions.contains(&create("db")));
}

#[test]
fn services_depending_on_a_service_without_its_external_network_wait() {
    let p = project(EXTERNAL);
    let mut observed = engine_with_images(&p);
    observed.volumes.insert("backups".into());
    let plan = plan(&p, &observed, UID);
    assert_eq!(actions_for(&plan, "app"), Vec::<&Action>::new());
    assert_eq!(
        hold(&plan.waiting, "app").message,
        "app waits for proxy, which cannot start"
    );
}

#[test]
fn missing_external_volume_blocks_the_services_mounting_it_and_is_never_created() {
    let p = project(EXTERNAL);
    let mut observed = engine_with_images(&p);
    observed.networks.insert("corp-edge".into());
    let plan = plan(&p, &observed, UID);
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::CreateVolume(_))),
        "{:#?}",
        plan.actions
    );
    assert_eq!(held(&plan.blocked), ["db"]);
    let h = hold(&plan.blocked, "db");
    assert_eq!(h.reason, Reason::ApplyFailed);
    assert!(
        h.message.contains("external volume backups")
            && h.message.contains("docker volume create backups"),
        "{}",
        h.message
    );
    assert_eq!(actions_for(&plan, "db"), Vec::<&Action>::new());
    assert!(plan.actions.contains(&create("proxy")) && plan.actions.contains(&create("app")));
}

#[test]
fn existing_external_resources_are_used_as_they_are() {
    let p = project(EXTERNAL);
    let mut observed = engine_with_images(&p);
    observed.networks.insert("corp-edge".into());
    observed.volumes.insert("backups".into());
    let plan = plan(&p, &observed, UID);
    assert_eq!(
        plan.actions,
        [
            Action::CreateNetwork(network(&p, "demo_default")),
            create("proxy"),
            create("app"),
            create("db")
        ]
    );
    assert_eq!(plan.blocked, []);
}

#[test]
fn existing_owned_networks_and_volumes_are_not_created_again() {
    let p = project(SIMPLE);
    let mut observed = converged(&p);
    observed.containers.clear();
    assert_eq!(
        plan(&p, &observed, UID).actions,
        [create("db"), create("cache"), create("app")]
    );
}

// ---------------------------------------------------------------------------------------------
// Revision numbers
// ---------------------------------------------------------------------------------------------

#[test]
fn revision_is_1_on_an_empty_engine() {
    let p = project(SIMPLE);
    assert_eq!(plan(&p, &bare_engine(), UID).revision, 1);
}

#[test]
fn revision_is_kept_while_a_container_carries_the_current_spec_hash() {
    let p = project(SIMPLE);
    let mut observed = converged(&p);
    // One container at the current spec; the others were stopped meanwhile.
    observed.containers = vec![
        at_revision(running(&p, "db"), 4),
        at_revision(exited(running(&p, "app"), 1), 4),
    ];
    assert_eq!(plan(&p, &observed, UID).revision, 4);
}

#[test]
fn revision_is_one_more_than_the_highest_recorded_when_the_spec_changed() {
    let old = project(SIMPLE);
    let new = project(&SIMPLE.replace("example/app:1", "example/app:2"));
    let observed = engine_running(
        &new,
        vec![
            at_revision(running(&old, "db"), 3),
            at_revision(running(&old, "cache"), 5),
            at_revision(running(&old, "app"), 5),
        ],
    );
    assert_eq!(plan(&new, &observed, UID).revision, 6);
}

#[test]
fn partially_applied_change_keeps_its_revision() {
    let old = project(SIMPLE);
    let new = project(
        &SIMPLE
            .replace("example/cache:1", "example/cache:2")
            .replace("example/app:1", "example/app:2"),
    );
    // The operator died after recreating cache at revision 2; app still runs revision 1.
    let observed = engine_running(
        &new,
        vec![
            running(&old, "db"),
            at_revision(running(&new, "cache"), 2),
            running(&old, "app"),
        ],
    );
    let plan = plan(&new, &observed, UID);
    assert_eq!(plan.revision, 2);
    assert_eq!(plan.actions, [recreate(&running(&old, "app"))]);
}

#[test]
fn containers_of_other_owners_do_not_count_towards_the_revision() {
    let p = project(ONE_SERVICE);
    let theirs = at_revision(owned_by(running(&p, "app"), Some("other")), 9);
    assert_eq!(
        plan(
            &p,
            &Observed {
                containers: vec![theirs],
                ..Default::default()
            },
            UID
        )
        .revision,
        1
    );
}

#[test]
fn containers_without_revision_labels_count_as_revision_0() {
    let old = project(ONE_SERVICE);
    let new = project(&ONE_SERVICE.replace("example/app:1", "example/app:2"));
    let unlabelled = ObservedContainer {
        revision: None,
        spec_hash: None,
        ..running(&old, "app")
    };
    assert_eq!(
        plan(&new, &engine_running(&new, vec![unlabelled]), UID).revision,
        1
    );
}

#[test]
fn revision_goes_up_for_each_change_even_when_a_change_only_removed_a_service() {
    let two = project(TWO_SERVICES);
    let one = project(ONE_SERVICE);
    let one_changed = project(&ONE_SERVICE.replace("example/app:1", "example/app:2"));
    // Revision 1 runs app and worker. Then worker is deleted from the file:
    let removal = plan_after(&one, &converged(&two), UID, &two, 1);
    assert_eq!(removal.revision, 2);
    // After the removal only app remains, still labelled revision 1 with the old spec hash;
    // the status recorded revision 2.
    let after_removal = engine_running(&one, vec![running(&two, "app")]);
    assert_eq!(
        plan_after(&one, &after_removal, UID, &one, 2).revision,
        2,
        "stable while nothing changes"
    );
    // Then app changes: a third compose file must get a third number.
    assert_eq!(
        plan_after(&one_changed, &after_removal, UID, &one, 2).revision,
        3
    );
}

#[test]
fn revision_never_goes_down_when_the_file_is_reverted() {
    let a = project(TWO_SERVICES);
    let b = project(&TWO_SERVICES.replace("example/worker:1", "example/worker:2"));
    // Revision 2 (b) is fully applied: worker was recreated at 2, app untouched since 1.
    let applied_b = engine_running(
        &b,
        vec![
            running(&a, "app"),
            ObservedContainer {
                revision: Some(2),
                ..running(&b, "worker")
            },
        ],
    );
    assert_eq!(plan_after(&b, &applied_b, UID, &b, 2).revision, 2);
    // Going back to a's file is a new change; it recreates worker and must not be revision 1.
    let back_to_a = plan_after(&a, &applied_b, UID, &b, 2);
    assert!(
        back_to_a
            .actions
            .contains(&recreate(&running(&b, "worker"))),
        "{:#?}",
        back_to_a.actions
    );
    assert_eq!(back_to_a.revision, 3);
}

#[test]
fn revision_written_on_labels_by_a_pass_cut_off_before_its_status_is_kept() {
    let a = project(TWO_SERVICES);
    let b = project(&TWO_SERVICES.replace("example/worker:1", "example/worker:2"));
    // The status still says revision 1 (a), but worker was already recreated for b at 2.
    let half = engine_running(
        &b,
        vec![
            running(&a, "app"),
            ObservedContainer {
                revision: Some(2),
                ..running(&b, "worker")
            },
        ],
    );
    assert_eq!(plan_after(&b, &half, UID, &a, 1).revision, 2);
}

// ---------------------------------------------------------------------------------------------
// Small things
// ---------------------------------------------------------------------------------------------

#[test]
fn network_and_volume_actions_belong_to_no_single_service() {
    let p = project(SIMPLE);
    assert_eq!(
        Action::CreateNetwork(network(&p, "demo_default")).service(),
        None
    );
    assert_eq!(
        Action::CreateVolume(volume(&p, "demo_data")).service(),
        None
    );
    assert_eq!(create("db").service(), Some("db"));
    assert_eq!(pull(&p, "db").service(), Some("db"));
}

/// A local project whose service `app` is built from a context whose digest is `digest`.
fn built(digest: &str) -> Project {
    let stack = stack_with(
        "services:\n  app:\n    build: ./app\n    container_name: erni-app\n",
        serde_json::json!({}),
    );
    let inputs = compose::LocalInputs {
        dir: "/m".into(),
        env_files: Default::default(),
        contexts: [("/m/./app".into(), Ok(digest.to_owned()))].into(),
    };
    compose::load_local(&stack, &inputs).expect("test compose file is valid")
}

#[test]
fn a_build_whose_tag_is_missing_is_built_before_its_container_is_created() {
    let p = built("one");
    let plan = plan(&p, &bare_engine(), UID);
    let build = p.service("app").unwrap().build.clone().unwrap();
    assert_eq!(
        actions_for(&plan, "app"),
        [
            &Action::BuildImage {
                service: "app".into(),
                build
            },
            &create("app")
        ]
    );
}

#[test]
fn an_unchanged_context_is_not_rebuilt_and_a_changed_one_is_rebuilt_and_recreated() {
    let before = built("one");
    let running_one = engine_running(&before, vec![running(&before, "app")]);
    assert!(plan(&before, &running_one, UID).actions.is_empty());
    let after = built("two");
    let plan = plan_after(&after, &running_one, UID, &before, 1);
    let c = running(&before, "app");
    assert!(
        matches!(
            actions_for(&plan, "app")[..],
            [Action::BuildImage { .. }, Action::Recreate { .. }]
        ),
        "{:#?}",
        plan.actions
    );
    assert_eq!(actions_for(&plan, "app")[1], &recreate(&c));
}
