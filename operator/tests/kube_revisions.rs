//! The kube store's revision history against kube's mocked API service: a small fake API
//! server keeps ControllerRevisions the way the real one does (create refuses a taken name
//! with 409, lists filter by label, merge patches, delete of a missing object is 404), and
//! the test checks the objects the store writes and what it reads back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{json, Value};
use stackwarden::api::revision::{Cause, Outcome, Phase, Revision};
use stackwarden::api::ServiceStack;
use stackwarden::decide::history::{self, Event};
use stackwarden::store::kube::KubeStore;
use stackwarden::store::Store;

const PATH: &str = "/apis/apps/v1/namespaces/ops/controllerrevisions";
const UID: &str = "6a1f1a0e-5b8e-4c1e-9d52-3f0c2b7d9e11";

type Objects = Arc<Mutex<BTreeMap<String, Value>>>;

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": reason, "code": code, "message": reason})
}

/// Answers one request against `objects`.
fn answer(
    objects: &Objects,
    method: &Method,
    path: &str,
    query: &str,
    body: Value,
) -> (u16, Value) {
    let mut objects = objects.lock().unwrap();
    let name = path.strip_prefix(PATH).and_then(|p| p.strip_prefix('/'));
    match (method.clone(), name) {
        (Method::POST, None) => {
            let name = body["metadata"]["name"].as_str().unwrap().to_owned();
            if objects.contains_key(&name) {
                return (409, status(409, "AlreadyExists"));
            }
            objects.insert(name, body.clone());
            (201, body)
        }
        (Method::GET, None) => {
            let selector = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("labelSelector="))
                .map(|s| s.replace("%3D", "=").replace("%2F", "/"))
                .expect("revisions are listed by label");
            let (key, value) = selector.split_once('=').unwrap();
            let items: Vec<Value> = objects
                .values()
                .filter(|o| o["metadata"]["labels"][key] == value)
                .cloned()
                .collect();
            (
                200,
                json!({"apiVersion": "apps/v1", "kind": "ControllerRevisionList",
                         "metadata": {}, "items": items}),
            )
        }
        (Method::PATCH, Some(name)) => match objects.get_mut(name) {
            None => (404, status(404, "NotFound")),
            Some(o) => {
                for (k, v) in body["metadata"]["annotations"].as_object().unwrap() {
                    o["metadata"]["annotations"][k] = v.clone();
                }
                (200, o.clone())
            }
        },
        (Method::DELETE, Some(name)) => match objects.remove(name) {
            None => (404, status(404, "NotFound")),
            Some(o) => (200, o),
        },
        _ => (404, status(404, "NotFound")),
    }
}

fn fake_store() -> (KubeStore, Objects) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let objects: Objects = Arc::default();
    let served = objects.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let query = parts.uri.query().unwrap_or_default();
            let (code, reply) = answer(&served, &parts.method, parts.uri.path(), query, body);
            let response = Response::builder()
                .status(StatusCode::from_u16(code).unwrap())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    (
        KubeStore::new(kube::Client::new(service, "default")),
        objects,
    )
}

fn stack() -> ServiceStack {
    let mut s: ServiceStack = serde_json::from_value(json!({
        "apiVersion": "stackwarden.dev/v1alpha1", "kind": "ServiceStack",
        "metadata": {"name": "shop", "namespace": "ops", "uid": UID, "generation": 3},
        "spec": {"compose": {"file": "services: {}"}},
    }))
    .unwrap();
    s.status = None;
    s
}

fn revision(number: u64, hash: &str) -> Revision {
    Revision {
        number,
        spec_hash: hash.into(),
        created: "2026-12-05T00:00:00Z".parse().unwrap(),
        cause: Cause::SpecChange {
            generation: Some(3),
        },
        compose: "services: {}".into(),
        services: BTreeMap::new(),
        backups: BTreeMap::new(),
    }
}

#[tokio::test]
async fn revisions_are_controller_revisions_owned_by_the_stack_and_written_once() {
    let (store, objects) = fake_store();
    let (s, now) = (stack(), chrono::Utc::now());
    store
        .create_revision(&s, &revision(1, "a"), now)
        .await
        .unwrap();
    // Recorded again by a pass cut off before its status write: the first one stays.
    store
        .create_revision(&s, &revision(1, "b"), now)
        .await
        .unwrap();
    store
        .create_revision(&s, &revision(2, "c"), now)
        .await
        .unwrap();

    let stored = objects.lock().unwrap().get("shop.1").cloned().unwrap();
    assert_eq!(stored["revision"], 1);
    assert_eq!(stored["data"]["specHash"], "a");
    assert_eq!(
        stored["metadata"]["labels"]["stackwarden.dev/stack-uid"],
        UID
    );
    let owner = &stored["metadata"]["ownerReferences"][0];
    assert_eq!(owner["uid"], UID);
    assert_eq!(owner["kind"], "ServiceStack");
    assert_eq!(owner["controller"], true);
    let outcome: Outcome = serde_json::from_str(
        stored["metadata"]["annotations"]["stackwarden.dev/outcome"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(outcome.phase, Phase::Progressing);

    let done = Outcome {
        phase: Phase::Complete,
        since: Some(now),
    };
    store.set_outcome(&s, 1, &done).await.unwrap();
    store.set_outcome(&s, 7, &done).await.unwrap();
    let listed = store.revisions(&s).await.unwrap();
    let numbers: Vec<u64> = listed.iter().map(|r| r.revision.number).collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(listed[0].outcome, done);
    assert_eq!(listed[0].revision.spec_hash, "a");

    store.remove_revision(&s, 1).await.unwrap();
    store.remove_revision(&s, 1).await.unwrap();
    let numbers: Vec<u64> = store
        .revisions(&s)
        .await
        .unwrap()
        .iter()
        .map(|r| r.revision.number)
        .collect();
    assert_eq!(numbers, [2]);
}

#[tokio::test]
async fn objects_that_are_not_revisions_are_left_out_not_fatal() {
    let (store, objects) = fake_store();
    let s = stack();
    objects.lock().unwrap().insert(
        "shop.9".into(),
        json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "revision": 9,
               "metadata": {"name": "shop.9", "labels": {"stackwarden.dev/stack-uid": UID}},
               "data": {"edited": "by a person"}}),
    );
    store
        .create_revision(&s, &revision(1, "a"), chrono::Utc::now())
        .await
        .unwrap();
    let listed = store.revisions(&s).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].revision.number, 1);
}

/// Writes what `decide::history` says after `event`, as the reconcile's history step does.
async fn settle(store: &KubeStore, s: &ServiceStack, event: Event, limit: usize, keep: &[u64]) {
    let now = chrono::Utc::now();
    let stored = store.revisions(s).await.unwrap();
    let changes = history::changes(&stored, event, limit, keep, now);
    for (number, outcome) in &changes.outcomes {
        store.set_outcome(s, *number, outcome).await.unwrap();
    }
    for number in changes.forget {
        store.remove_revision(s, number).await.unwrap();
    }
}

#[tokio::test]
async fn controller_revisions_are_pruned_to_the_history_limit_keeping_the_last_good_one() {
    let (store, objects) = fake_store();
    let s = stack();
    let limit = 3;
    // Revisions 1 and 2 get Ready; 3 to 6 are each recorded and never Ready (a stack stuck
    // rolling back): the last good one, 2, must outlive the limit.
    for n in 1..=6u64 {
        store
            .create_revision(&s, &revision(n, &format!("h{n}")), chrono::Utc::now())
            .await
            .unwrap();
        let last_good = n.min(2);
        settle(&store, &s, Event::Recorded(n), limit, &[n, last_good]).await;
        if n <= 2 {
            settle(&store, &s, Event::Ready(n), limit, &[n]).await;
        }
    }
    let left: Vec<String> = objects.lock().unwrap().keys().cloned().collect();
    assert_eq!(left, ["shop.2", "shop.5", "shop.6"]);
    let listed = store.revisions(&s).await.unwrap();
    let phases: Vec<(u64, Phase)> = listed
        .iter()
        .map(|r| (r.revision.number, r.outcome.phase))
        .collect();
    assert_eq!(
        phases,
        [
            (2, Phase::Complete),
            (5, Phase::Superseded),
            (6, Phase::Progressing)
        ]
    );
}
