//! The reconcile pass on an engine in memory ([`FakeEngine`]) and a real local store: what a
//! pass does, and what the next one does not. The end-to-end suites prove the same on Docker.

use std::sync::Arc;

use super::*;
use crate::api::{ConditionType, ContainerState, ServiceStackSpec};
use crate::docker::fake::FakeEngine;
use crate::store::local::LocalStore;

const COMPOSE: &str = "services:\n  db:\n    image: test/redis:7\n  app:\n    image: test/app:1\n    depends_on: [db]\n";

/// One stack in a local store, reconciled against a fake engine.
struct Bench {
    store: LocalStore,
    ctx: Arc<Context>,
    engine: Arc<FakeEngine>,
    _dir: tempfile::TempDir,
}

impl Bench {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("state"));
        let engine = Arc::new(FakeEngine::default());
        let ctx = Self::context(&store, &engine);
        let bench = Self {
            store,
            ctx,
            engine,
            _dir: dir,
        };
        bench.apply(COMPOSE, |_| {});
        bench
    }

    /// A fresh operator: a new context (no memory of the last one) on the same store and
    /// engine.
    fn context(store: &LocalStore, engine: &Arc<FakeEngine>) -> Arc<Context> {
        let ctx = Context::new(Arc::new(store.clone()));
        ctx.engines
            .stand_in(crate::api::DEFAULT_DOCKER_HOST, engine.clone());
        ctx
    }

    fn apply(&self, compose: &str, edit: impl FnOnce(&mut ServiceStackSpec)) {
        let mut spec: ServiceStackSpec = serde_json::from_value(serde_json::json!({
            "compose": {"projectName": "bench", "file": compose},
        }))
        .unwrap();
        edit(&mut spec);
        let source = self._dir.path().join("stack.yaml");
        self.store.admit("ops", "shop", spec, &source).unwrap();
    }

    fn stack(&self) -> ServiceStack {
        self.store.load("ops", "shop").unwrap().unwrap().to_stack()
    }

    fn status(&self) -> ServiceStackStatus {
        self.stack().status.unwrap_or_default()
    }

    async fn pass(&self) -> Requeue {
        let record = self.store.load("ops", "shop").unwrap().unwrap();
        reconcile(&record.to_stack(), &record.uid, &self.ctx)
            .await
            .expect("a pass")
    }

    /// Passes until the stack is Ready (every container created and started).
    async fn until_ready(&self) {
        for _ in 0..20 {
            self.pass().await;
            let ready =
                crate::api::condition::find(&self.status().conditions, ConditionType::Ready)
                    .is_some_and(|c| c.status == crate::api::ConditionStatus::True);
            if ready {
                return;
            }
        }
        panic!("not Ready after 20 passes: {:?}", self.status().conditions);
    }

    /// The status writes counted so far, as the metrics page shows them.
    fn writes(&self) -> Vec<String> {
        self.ctx
            .metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("stackwarden_status_writes_total"))
            .map(str::to_owned)
            .collect()
    }

    fn events(&self) -> Vec<String> {
        self.store
            .events("ops", "shop")
            .into_iter()
            .map(|(_, e)| e.reason.to_string())
            .collect()
    }
}

#[tokio::test]
async fn the_first_passes_create_and_start_every_service_in_dependency_order() {
    let b = Bench::new();
    b.until_ready().await;
    let calls = b.engine.calls();
    let at = |c: &str| calls.iter().position(|x| x == c).expect(c);
    assert!(at("start db") < at("create app"), "{calls:?}");
    assert!(b
        .engine
        .containers()
        .iter()
        .all(|c| c.state == ContainerState::Running));
    assert_eq!(b.status().revision, Some(1));
}

#[tokio::test]
async fn the_second_pass_on_an_unchanged_stack_does_nothing() {
    let b = Bench::new();
    b.until_ready().await;
    // One more pass lets the conditions settle (their first Ready, Progressing Converged).
    b.pass().await;
    let (calls, events, status) = (b.engine.calls(), b.events(), b.stack().status);
    let writes = b.writes();
    assert!(!writes.is_empty(), "the first passes wrote the status");
    let requeue = b.pass().await;
    assert_eq!(b.writes(), writes, "the status was written again");
    assert_eq!(
        b.engine.calls(),
        calls,
        "the engine was asked to change something"
    );
    assert_eq!(b.events(), events, "an event was told");
    assert_eq!(b.stack().status, status, "the status was written");
    assert_eq!(requeue, Requeue(STEADY_REQUEUE));
}

#[tokio::test]
async fn a_crash_leads_to_one_restart() {
    let b = Bench::new();
    b.until_ready().await;
    let before = b.engine.calls().len();
    b.engine.crash("app", 3);
    b.pass().await;
    b.pass().await;
    let calls = b.engine.calls();
    assert_eq!(calls[before..], ["start app".to_owned()], "{calls:?}");
    let app = &b.status().services["app"];
    assert_eq!(app.restarts, 1);
    assert_eq!(
        app.last_restart.as_ref().map(|r| r.reason),
        Some(crate::api::RestartReason::Crashed)
    );
    assert_eq!(b.events().iter().filter(|r| *r == "Crashed").count(), 1);
}

#[tokio::test]
async fn a_deploy_held_for_its_backup_changes_nothing() {
    let b = Bench::new();
    b.until_ready().await;
    let containers = b.engine.containers();
    let before = b.engine.calls().len();
    // A changed compose file with a backup to take first, which this engine cannot take.
    let backup = serde_json::json!([{
        "name": "cache",
        "redis": {"service": "db"},
        "destination": {"path": b._dir.path().join("backups")},
        "beforeDeploy": true,
    }]);
    b.apply(&COMPOSE.replace("test/app:1", "test/app:2"), |s| {
        s.backups = serde_json::from_value(backup).unwrap();
    });
    for _ in 0..5 {
        b.pass().await;
        tokio::task::yield_now().await;
    }
    let calls = b.engine.calls();
    assert!(
        calls[before..]
            .iter()
            .all(|c| !c.starts_with("create") && !c.starts_with("remove")),
        "{calls:?}"
    );
    assert_eq!(b.engine.containers(), containers);
    assert_eq!(b.status().revision, Some(1));
}

#[tokio::test]
async fn a_backup_job_cut_off_by_a_kill_is_taken_up_again_by_the_next_operator() {
    let mut b = Bench::new();
    let target = serde_json::json!([{
        "name": "cache",
        "redis": {"service": "db"},
        "destination": {"path": b._dir.path().join("backups")},
    }]);
    b.apply(COMPOSE, |s| {
        s.backups = serde_json::from_value(target).unwrap()
    });
    b.until_ready().await;
    let requested = |mut stack: ServiceStack| {
        stack
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                format!("{}cache", crate::decide::backup::plan::BACKUP_REQUEST),
                "1".into(),
            );
        stack
    };
    let uid = b.store.load("ops", "shop").unwrap().unwrap().uid;
    reconcile(&requested(b.stack()), &uid, &b.ctx)
        .await
        .unwrap();
    let first = b.status().backups["cache"].running.clone();
    let first = first.expect("the job's intent is in status before it starts");
    assert_eq!(first.attempt, 1);
    // The operator is killed before the job ran: its jobs die with it, its memory too.
    b.ctx.stop_all();
    b.ctx = Bench::context(&b.store, &b.engine);
    reconcile(&requested(b.stack()), &uid, &b.ctx)
        .await
        .unwrap();
    let again = b.status().backups["cache"].running.clone();
    let again = again.expect("the next operator takes the job up");
    assert_eq!((again.id.as_str(), again.attempt), (first.id.as_str(), 2));
}

fn history(b: &Bench) -> Vec<(u64, crate::api::revision::Phase)> {
    b.store
        .read_revisions(&b.stack())
        .unwrap()
        .iter()
        .map(|r| (r.revision.number, r.outcome.phase))
        .collect()
}

#[tokio::test]
async fn a_changed_compose_file_is_recorded_as_a_revision_before_anything_of_it_is_done() {
    use crate::api::revision::Phase::Complete;
    let b = Bench::new();
    b.until_ready().await;
    assert_eq!(history(&b), [(1, Complete)]);
    assert_eq!(b.status().last_good_revision, Some(1));

    // The store refuses the revision (a full disk, say): the pass fails before touching the
    // engine, and the containers of revision 1 run on.
    let revisions = b._dir.path().join("state/ops/shop/revisions");
    let kept = b._dir.path().join("kept-revisions");
    std::fs::rename(&revisions, &kept).unwrap();
    std::fs::write(&revisions, b"not a directory").unwrap();
    b.apply(&COMPOSE.replace("test/app:1", "test/app:2"), |_| {});
    let calls = b.engine.calls().len();
    let record = b.store.load("ops", "shop").unwrap().unwrap();
    let failed = reconcile(&record.to_stack(), &record.uid, &b.ctx).await;
    assert!(failed.is_err(), "the pass went on without its revision");
    let after: Vec<String> = b.engine.calls()[calls..]
        .iter()
        .filter(|c| !c.starts_with("observe"))
        .cloned()
        .collect();
    assert!(after.is_empty(), "acted without a revision: {after:?}");

    std::fs::remove_file(&revisions).unwrap();
    std::fs::rename(&kept, &revisions).unwrap();
    b.until_ready().await;
    assert_eq!(history(&b), [(1, Complete), (2, Complete)]);
    assert_eq!(b.status().last_good_revision, Some(2));
    let stored = b.store.read_revisions(&b.stack()).unwrap();
    assert_eq!(stored[1].revision.services["app"].image, "test/app:2");
}

#[tokio::test]
async fn beyond_the_history_limit_the_oldest_revisions_are_forgotten() {
    use crate::api::revision::Phase::Complete;
    let b = Bench::new();
    let limited = |s: &mut ServiceStackSpec| s.rollout.revision_history_limit = Some(2);
    b.apply(COMPOSE, limited);
    b.until_ready().await;
    for tag in ["2", "3", "4"] {
        b.apply(
            &COMPOSE.replace("test/app:1", &format!("test/app:{tag}")),
            limited,
        );
        b.until_ready().await;
    }
    assert_eq!(history(&b), [(3, Complete), (4, Complete)]);
}

#[tokio::test]
async fn a_pass_looks_at_the_engine_once_before_acting_and_once_after() {
    let b = Bench::new();
    b.pass().await;
    // Planned, acted on and reported from one look each side of the actions.
    assert_eq!(
        b.engine.requests(),
        [
            "observe bench",
            "create network bench_default",
            "create db",
            "start db",
            "create app",
            "start app",
            "observe bench",
        ]
    );
    b.until_ready().await;
    b.engine.crash("app", 3);
    let before = b.engine.requests().len();
    b.pass().await;
    // Repaired on the snapshot: nothing was converged, so nothing is looked at again.
    assert_eq!(
        b.engine.requests()[before..],
        ["observe bench".to_owned(), "start app".to_owned()]
    );
}

#[tokio::test]
async fn a_changed_service_is_rolled_out_beside_its_old_container_which_goes_only_after() {
    use crate::api::rollout_status::{Method, RolloutPhase};
    let b = Bench::new();
    b.until_ready().await;
    let old = b.engine.containers();
    let old_app = old.iter().find(|c| c.service == "app").unwrap().id.clone();
    let before = b.engine.calls().len();
    b.apply(&COMPOSE.replace("test/app:1", "test/app:2"), |_| {});
    b.until_ready().await;

    let rollout = b.status().rollout.expect("a rollout");
    assert_eq!(rollout.phase, RolloutPhase::Complete);
    assert_eq!(rollout.services.len(), 1);
    assert_eq!(rollout.services[0].method, Method::Surge);
    let calls: Vec<String> = b.engine.calls()[before..].to_vec();
    let at = |c: &str| {
        calls
            .iter()
            .position(|x| x.starts_with(c))
            .unwrap_or_else(|| panic!("{c} not in {calls:?}"))
    };
    // The new container runs before the old one is stopped; db is never touched.
    assert!(at("create surge app") < at("stop app"), "{calls:?}");
    assert!(calls.iter().all(|c| !c.ends_with(" db")), "{calls:?}");
    let apps: Vec<_> = b
        .engine
        .containers()
        .into_iter()
        .filter(|c| c.service == "app")
        .collect();
    assert_eq!(apps.len(), 1, "the old container is removed at the end");
    assert_ne!(apps[0].id, old_app);
    assert_eq!(apps[0].image, "test/app:2");
    assert_eq!(b.status().last_good_revision, Some(2));
    assert!(
        b.events().iter().any(|e| e == "RolloutComplete"),
        "{:?}",
        b.events()
    );
}

/// Ready as the status says it.
fn is_ready(b: &Bench) -> bool {
    crate::api::condition::find(&b.status().conditions, ConditionType::Ready)
        .is_some_and(|c| c.status == crate::api::ConditionStatus::True)
}

#[tokio::test]
async fn an_operator_killed_after_each_pass_of_a_rollout_finishes_it_once_and_never_reports_two_revisions_ready(
) {
    use crate::api::rollout_status::RolloutPhase;
    let mut b = Bench::new();
    b.until_ready().await;
    b.apply(&COMPOSE.replace("test/app:1", "test/app:2"), |_| {});
    for pass in 0..20 {
        // A new operator each pass: nothing in memory, only status, the store and Docker.
        b.ctx.stop_all();
        b.ctx = Bench::context(&b.store, &b.engine);
        b.pass().await;
        let apps = b
            .engine
            .containers()
            .into_iter()
            .filter(|c| c.service == "app" && c.state == ContainerState::Running)
            .count();
        assert!(
            !(apps > 1 && is_ready(&b)),
            "pass {pass}: two app containers run and the stack says Ready"
        );
        let done = b
            .status()
            .rollout
            .is_some_and(|r| r.phase == RolloutPhase::Complete);
        if done && is_ready(&b) {
            break;
        }
    }
    let rollout = b.status().rollout.expect("a rollout");
    assert_eq!(rollout.phase, RolloutPhase::Complete);
    let calls = b.engine.calls();
    let surges = calls
        .iter()
        .filter(|c| c.starts_with("create surge app"))
        .count();
    assert_eq!(surges, 1, "the new container was created once: {calls:?}");
    let apps: Vec<_> = b
        .engine
        .containers()
        .into_iter()
        .filter(|c| c.service == "app")
        .collect();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0].image, "test/app:2");
    assert!(is_ready(&b));
}

#[tokio::test]
async fn a_manual_key_past_its_age_gets_the_condition_and_one_warning_and_nothing_is_touched() {
    let b = Bench::new();
    b.apply(COMPOSE, |s| {
        s.variables
            .insert("API_KEY".into(), "sk-secret-value".into());
        s.key_rotation = serde_json::from_value(serde_json::json!({
            "maxAgeDays": 90,
            "keys": [{"variable": "API_KEY"}],
        }))
        .unwrap();
    });
    b.until_ready().await;
    b.pass().await;
    let key = b.status().keys["API_KEY"].clone();
    let due = crate::api::condition::find(&b.status().conditions, ConditionType::KeyRotationDue)
        .cloned()
        .unwrap();
    assert_eq!(due.status, crate::api::ConditionStatus::False);
    assert_eq!(key.next_due - key.since, chrono::Duration::days(90));

    // 100 days later, as the status remembers it: first seen then.
    let mut stack = b.stack();
    let mut status = b.status();
    let long_ago = Utc::now() - chrono::Duration::days(100);
    status.keys.get_mut("API_KEY").unwrap().since = long_ago;
    status.keys.get_mut("API_KEY").unwrap().next_due = long_ago + chrono::Duration::days(90);
    crate::store::Store::write_status(&b.store, &mut stack, status)
        .await
        .unwrap();
    let calls = b.engine.calls().len();
    b.pass().await;
    b.pass().await;
    let due = crate::api::condition::find(&b.status().conditions, ConditionType::KeyRotationDue)
        .cloned()
        .unwrap();
    assert_eq!(due.status, crate::api::ConditionStatus::True);
    assert!(
        due.message.starts_with("API_KEY (manual): first seen "),
        "{}",
        due.message
    );
    let warnings: Vec<String> = b
        .events()
        .into_iter()
        .filter(|r| r == "KeyRotationDue")
        .collect();
    assert_eq!(warnings.len(), 1, "{:?}", b.events());
    assert_eq!(b.engine.calls().len(), calls, "nothing was touched");
    let everything = format!("{:?}{:?}", b.status(), b.store.events("ops", "shop"));
    assert!(!everything.contains("sk-secret-value"));
}

#[tokio::test]
async fn a_certificate_ten_days_from_expiry_sets_certificate_expiring_with_subject_and_date() {
    let b = Bench::new();
    let not_after = Utc::now() + chrono::Duration::days(10);
    let mut params = rcgen::CertificateParams::new(vec!["shop.example".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "shop.example");
    params.not_after = rcgen::date_time_ymd(
        not_after.format("%Y").to_string().parse().unwrap(),
        not_after.format("%m").to_string().parse().unwrap(),
        not_after.format("%d").to_string().parse().unwrap(),
    );
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    std::fs::write(b._dir.path().join("web.pem"), pem).unwrap();
    b.apply(COMPOSE, |s| {
        s.key_rotation = serde_json::from_value(serde_json::json!({
            "certificates": [
                {"name": "web", "file": "web.pem"},
                {"name": "gone", "file": "missing.pem", "warnBeforeDays": 5},
            ],
        }))
        .unwrap();
    });
    b.until_ready().await;
    b.pass().await;
    let c = crate::api::condition::find(&b.status().conditions, ConditionType::CertificateExpiring)
        .cloned()
        .unwrap();
    assert_eq!(c.status, crate::api::ConditionStatus::True);
    let date = not_after.format("%Y-%m-%d").to_string();
    assert!(
        c.message
            .starts_with(&format!("web (CN=shop.example) expires on {date}")),
        "{}",
        c.message
    );
    assert!(c.message.contains("unreadable: gone: "), "{}", c.message);
    assert_eq!(b.status().certificates["web"].subject, "CN=shop.example");
    let warned = b
        .events()
        .iter()
        .filter(|r| *r == "CertificateExpiresSoon")
        .count();
    assert_eq!(warned, 1, "{:?}", b.events());
    let metrics = b.ctx.metrics.render();
    assert!(
        metrics.contains("stackwarden_certificate_expiry_seconds{namespace=\"ops\",name=\"shop\",certificate=\"web\"}"),
        "{metrics}"
    );
}

fn app_images(b: &Bench) -> Vec<String> {
    b.engine
        .containers()
        .into_iter()
        .filter(|c| c.service == "app" && c.state == ContainerState::Running)
        .map(|c| c.image)
        .collect()
}

fn ask_rollback(b: &Bench, value: &str) {
    let key = crate::decide::rollback::ROLLBACK_ANNOTATION;
    b.store.request("ops", "shop", key, value).unwrap();
}

#[tokio::test]
async fn a_rollback_applies_the_old_revision_as_a_new_one_rolled_out_until_the_spec_changes() {
    use crate::api::revision::{Cause, Phase::Complete};
    use crate::api::rollout_status::RolloutPhase;
    let b = Bench::new();
    b.until_ready().await;
    let two = COMPOSE.replace("test/app:1", "test/app:2");
    b.apply(&two, |_| {});
    b.until_ready().await;
    assert_eq!(app_images(&b), ["test/app:2"]);

    ask_rollback(&b, "1#first");
    b.until_ready().await;
    assert_eq!(app_images(&b), ["test/app:1"]);
    assert_eq!(b.status().revision, Some(3));
    assert_eq!(history(&b), [(1, Complete), (2, Complete), (3, Complete)]);
    let stored = b.store.read_revisions(&b.stack()).unwrap();
    assert_eq!(stored[2].revision.cause, Cause::Rollback { to: 1 });
    assert_eq!(stored[2].revision.compose, stored[0].revision.compose);
    // Through the rollout machinery, beside the old container; db untouched.
    let rollout = b.status().rollout.expect("a rollout");
    assert_eq!(
        (rollout.revision, rollout.phase),
        (3, RolloutPhase::Complete)
    );
    assert_eq!(rollout.services.len(), 1);
    // The spec is the person's: still revision 2's.
    assert_eq!(b.stack().spec.compose.file, two);
    let rollback = b.status().rollback.expect("recorded");
    assert_eq!((rollback.to, rollback.from), (Some(1), Some(2)));
    assert!(
        b.events().iter().any(|e| e == "RollbackTaken"),
        "{:?}",
        b.events()
    );

    // Handled once: more passes change nothing.
    b.pass().await;
    let calls = b.engine.calls().len();
    b.pass().await;
    let after: Vec<String> = b.engine.calls()[calls..]
        .iter()
        .filter(|c| !c.starts_with("observe"))
        .cloned()
        .collect();
    assert!(after.is_empty(), "{after:?}");
    assert_eq!(b.status().revision, Some(3));

    // A changed spec drops the pin and is rolled out as usual.
    b.apply(&COMPOSE.replace("test/app:1", "test/app:4"), |_| {});
    b.until_ready().await;
    assert_eq!(app_images(&b), ["test/app:4"]);
    assert_eq!(b.status().revision, Some(4));
    let stored = b.store.read_revisions(&b.stack()).unwrap();
    assert!(matches!(
        stored.last().unwrap().revision.cause,
        Cause::SpecChange { .. }
    ));
}

#[tokio::test]
async fn a_rollback_that_cannot_be_done_is_refused_with_a_condition_and_nothing_is_touched() {
    let b = Bench::new();
    b.until_ready().await;
    b.apply(&COMPOSE.replace("test/app:1", "test/app:2"), |_| {});
    b.until_ready().await;
    let calls = b.engine.calls().len();
    ask_rollback(&b, "7");
    b.pass().await;
    let after: Vec<String> = b.engine.calls()[calls..]
        .iter()
        .filter(|c| !c.starts_with("observe"))
        .cloned()
        .collect();
    assert!(after.is_empty(), "{after:?}");
    let refused =
        crate::api::condition::find(&b.status().conditions, ConditionType::RollbackRefused)
            .expect("a RollbackRefused condition")
            .clone();
    assert_eq!(refused.status, crate::api::ConditionStatus::True);
    assert!(
        refused.message.contains("revision 7"),
        "{}",
        refused.message
    );
    assert!(is_ready(&b));
    assert_eq!(b.status().revision, Some(2));
    assert_eq!(app_images(&b), ["test/app:2"]);
}

#[tokio::test]
async fn a_rollback_survives_an_operator_killed_after_every_pass_and_is_recorded_once() {
    use crate::api::revision::{Cause, Phase::Complete};
    let mut b = Bench::new();
    b.until_ready().await;
    b.apply(&COMPOSE.replace("test/app:1", "test/app:2"), |_| {});
    b.until_ready().await;
    let before = b.engine.calls().len();
    ask_rollback(&b, "previous#k");
    for _ in 0..20 {
        // A new operator each pass: nothing in memory, only status, the store and Docker.
        b.ctx.stop_all();
        b.ctx = Bench::context(&b.store, &b.engine);
        b.pass().await;
        let rolled = b.status().rollout.is_some_and(|r| !r.phase.active());
        if b.status().revision == Some(3) && rolled && is_ready(&b) {
            break;
        }
    }
    assert_eq!(app_images(&b), ["test/app:1"]);
    assert_eq!(history(&b), [(1, Complete), (2, Complete), (3, Complete)]);
    let stored = b.store.read_revisions(&b.stack()).unwrap();
    assert_eq!(stored[2].revision.cause, Cause::Rollback { to: 1 });
    let surges = b.engine.calls()[before..]
        .iter()
        .filter(|c| c.starts_with("create surge app"))
        .count();
    assert_eq!(surges, 1, "{:?}", &b.engine.calls()[before..]);
    let taken = b.events().iter().filter(|e| *e == "RollbackTaken").count();
    assert_eq!(taken, 1, "the request was acted on once");
}
