//! `KubeStore`'s variables against kube's mocked API service: where each variable of a Secret
//! is read from, and a rotated value written back into it (the request bodies asserted as the
//! API server receives them). A fake API server task serves one Secret and answers a replace
//! the way the API server does: 409 unless the body carries the current resourceVersion.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{json, Value};
use stackwarden::api::{Reason, ServiceStack};
use stackwarden::store::kube::{KubeStore, ROTATIONS};
use stackwarden::store::{Location, Rewrite, Stamp, Store, StoreError};
use tokio::task::JoinHandle;

const NS: &str = "ops";
const SECRET_PATH: &str = "/api/v1/namespaces/ops/secrets/db";
const OLD: &str = "0ld-Pangolin-4411";
const NEW: &str = "n3w-Zebra-Quokka-90210";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// One request as the fake API server received it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    body: Value,
}

/// How the fake API server treats a replace.
#[derive(Clone, Copy, PartialEq)]
enum Writers {
    /// The store is the only writer.
    Alone,
    /// Another writer changes the Secret between the store's read and its replace.
    Racing,
}

struct FakeApi {
    seen: Arc<Mutex<Vec<Seen>>>,
    secret: Arc<Mutex<Value>>,
    task: JoinHandle<()>,
}

fn secret(pw: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "db", "namespace": NS, "resourceVersion": "7",
                     "annotations": {"team": "payments"}},
        "data": {"PW": b64(pw), "USER": b64("app")},
    })
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("fake: {reason}"), "reason": reason, "code": code})
}

fn bump(secret: &mut Value) {
    let rv: u64 = secret["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    secret["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
}

/// Answers one request against the Secret the server holds.
fn answer(seen: &Seen, secret: &mut Value, writers: Writers) -> (StatusCode, Value) {
    if seen.path != SECRET_PATH {
        return (StatusCode::NOT_FOUND, status(404, "NotFound"));
    }
    match seen.method {
        Method::GET => (StatusCode::OK, secret.clone()),
        Method::PUT => {
            if writers == Writers::Racing {
                bump(secret);
            }
            // Like the API server: a replace without a resourceVersion is unconditional.
            let read_at = &seen.body["metadata"]["resourceVersion"];
            if !read_at.is_null() && *read_at != secret["metadata"]["resourceVersion"] {
                return (StatusCode::CONFLICT, status(409, "Conflict"));
            }
            *secret = seen.body.clone();
            bump(secret);
            (StatusCode::OK, secret.clone())
        }
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            status(405, "MethodNotAllowed"),
        ),
    }
}

impl FakeApi {
    fn start(
        mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
        held: Value,
        writers: Writers,
    ) -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let secret = Arc::new(Mutex::new(held));
        let (log, state) = (seen.clone(), secret.clone());
        let task = tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.expect("readable body");
                let body = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("JSON body")
                };
                let seen = Seen {
                    method: parts.method,
                    path: parts.uri.path().to_owned(),
                    body,
                };
                let (code, reply) = answer(&seen, &mut state.lock().unwrap(), writers);
                log.lock().unwrap().push(seen);
                send.send_response(
                    Response::builder()
                        .status(code)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                        .unwrap(),
                );
            }
        });
        Self { seen, secret, task }
    }
}

/// A store on a mocked client, the fake API server behind it holding `held`.
fn scenario(held: Value, writers: Writers) -> (KubeStore, FakeApi) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let store = KubeStore::new(kube::Client::new(service, "default"));
    (store, FakeApi::start(handle, held, writers))
}

/// Drops the store and returns every request the server saw, and the Secret as it holds it.
async fn finish(store: KubeStore, api: FakeApi) -> (Vec<Seen>, Value) {
    drop(store);
    api.task.await.expect("the fake API server panicked");
    let seen = std::mem::take(&mut *api.seen.lock().unwrap());
    let secret = api.secret.lock().unwrap().clone();
    (seen, secret)
}

fn stack(sources: Value) -> ServiceStack {
    serde_json::from_value(json!({
        "apiVersion": "stackwarden.dev/v1alpha1", "kind": "ServiceStack",
        "metadata": {"name": "shop", "namespace": NS, "uid": "u1", "resourceVersion": "1"},
        "spec": {"compose": {"file": "services: {}"}, "variablesFrom": sources},
    }))
    .unwrap()
}

fn pw() -> Location {
    Location::Secret {
        name: "db".into(),
        key: "PW".into(),
    }
}

fn stamp() -> Stamp {
    Stamp {
        rotated_at: "2026-12-05T01:00:00Z".parse::<DateTime<Utc>>().unwrap(),
        version: 3,
        reason: Some("scheduled".into()),
    }
}

fn rewrite<'a>(location: &'a Location, expected: &'a str) -> Rewrite<'a> {
    Rewrite {
        location,
        expected: Some(expected),
        value: NEW,
        stamp: stamp(),
    }
}

#[tokio::test]
async fn each_variable_of_a_secret_is_read_with_the_secret_and_key_it_lives_in() {
    let (store, api) = scenario(secret(OLD), Writers::Alone);
    let vars = store
        .referenced_variables(&stack(json!([{"secretRef": {"name": "db"}}])))
        .await
        .unwrap();
    assert_eq!(vars["PW"].value, OLD);
    assert_eq!(vars["PW"].location, pw());
    assert_eq!(vars["USER"].value, "app");
    finish(store, api).await;
}

#[tokio::test]
async fn an_env_file_in_a_cluster_is_an_invalid_spec_saying_to_use_a_secret() {
    let (store, api) = scenario(secret(OLD), Writers::Alone);
    let err = store
        .referenced_variables(&stack(json!([{"file": "stack.env"}])))
        .await
        .unwrap_err();
    assert_eq!(err.reason, Reason::InvalidField);
    assert!(
        err.message.contains("stack.env") && err.message.contains("secretRef"),
        "{err}"
    );
    let (seen, _) = finish(store, api).await;
    assert!(seen.is_empty(), "{seen:?}");
}

#[tokio::test]
async fn a_rotated_value_is_replaced_in_its_secret_with_its_stamp_on_the_version_read() {
    let (store, api) = scenario(secret(OLD), Writers::Alone);
    let stack = stack(json!([{"secretRef": {"name": "db"}}]));
    let location = pw();
    store
        .write_variable(&stack, rewrite(&location, OLD))
        .await
        .unwrap();
    assert_eq!(store.stamps(&stack).await.unwrap()["PW"], stamp());
    let (seen, held) = finish(store, api).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[0].method == Method::GET && seen[0].path == SECRET_PATH);
    let put = &seen[1];
    assert!(
        put.method == Method::PUT && put.path == SECRET_PATH,
        "{put:?}"
    );
    assert_eq!(put.body["metadata"]["resourceVersion"], "7");
    assert_eq!(put.body["data"]["PW"], b64(NEW));
    assert_eq!(put.body["data"]["USER"], b64("app"), "another key changed");
    let annotations = &put.body["metadata"]["annotations"];
    assert_eq!(annotations["team"], "payments", "another annotation lost");
    let stamps: Value = serde_json::from_str(annotations[ROTATIONS].as_str().unwrap()).unwrap();
    assert_eq!(
        stamps,
        json!({"PW": {"rotatedAt": "2026-12-05T01:00:00Z", "version": 3, "reason": "scheduled"}})
    );
    assert!(!put.body.to_string().contains(NEW), "the value in clear");
    assert_eq!(held["data"]["PW"], b64(NEW));
}

#[tokio::test]
async fn writing_the_value_and_stamp_already_there_sends_no_write() {
    let (store, api) = scenario(secret(OLD), Writers::Alone);
    let stack = stack(json!([{"secretRef": {"name": "db"}}]));
    let location = pw();
    for _ in 0..2 {
        store
            .write_variable(&stack, rewrite(&location, OLD))
            .await
            .unwrap();
    }
    let (seen, _) = finish(store, api).await;
    let methods: Vec<_> = seen.iter().map(|s| s.method.clone()).collect();
    assert_eq!(methods, [Method::GET, Method::PUT, Method::GET], "{seen:?}");
}

#[tokio::test]
async fn another_writer_in_between_is_a_conflict() {
    let (store, api) = scenario(secret(OLD), Writers::Racing);
    let stack = stack(json!([{"secretRef": {"name": "db"}}]));
    let location = pw();
    let err = store
        .write_variable(&stack, rewrite(&location, OLD))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err}");
    assert!(!err.to_string().contains(NEW));
    let (_, held) = finish(store, api).await;
    assert_eq!(held["data"]["PW"], b64(OLD));
}

#[tokio::test]
async fn a_value_changed_since_it_was_read_is_a_conflict_without_a_write() {
    let (store, api) = scenario(secret("rotated-by-someone-else"), Writers::Alone);
    let stack = stack(json!([{"secretRef": {"name": "db"}}]));
    let location = pw();
    let err = store
        .write_variable(&stack, rewrite(&location, OLD))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err}");
    let (seen, _) = finish(store, api).await;
    assert!(seen.iter().all(|s| s.method == Method::GET), "{seen:?}");
}

#[tokio::test]
async fn an_env_file_location_is_refused_without_a_request() {
    let (store, api) = scenario(secret(OLD), Writers::Alone);
    let stack = stack(json!([{"secretRef": {"name": "db"}}]));
    let location = Location::File {
        path: "/m/stack.env".into(),
        key: "PW".into(),
    };
    let err = store
        .write_variable(&stack, rewrite(&location, OLD))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err}");
    let (seen, _) = finish(store, api).await;
    assert!(seen.is_empty(), "{seen:?}");
}
