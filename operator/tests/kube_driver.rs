//! The kube driver (`driver::kube::reconcile`) against kube's mocked API service.
//!
//! No Kubernetes here: the `Client` talks to a `tower_test` mock, and a fake API server task
//! records every request (method, path, query, content type, body) and answers it the way the
//! API server would. Each test then asserts the exact sequence of requests the driver made.
//! Docker is either the real engine (only where a test says so) or a deliberately unreachable
//! socket; it is never faked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{json, Value};
use stackwarden::api::ServiceStack;
use stackwarden::driver::kube::{reconcile, KubeContext, KubeError, FINALIZER};
use tokio::task::JoinHandle;
use tower_test::mock::Handle;

const NS: &str = "ops";
const NAME: &str = "shop";
const UID: &str = "6a1f1a0e-5b8e-4c1e-9d52-3f0c2b7d9e11";
const GENERATION: i64 = 3;
const UNREACHABLE: &str = "unix:///nonexistent/docker.sock";
/// A value that must never reach the API server.
const SECRET: &str = "s3cr3t-Zebra-Quokka-90210";

const STACK_PATH: &str = "/apis/stackwarden.dev/v1alpha1/namespaces/ops/servicestacks/shop";
const STATUS_PATH: &str = "/apis/stackwarden.dev/v1alpha1/namespaces/ops/servicestacks/shop/status";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/ops/events";
/// The Secret the fake API server serves; it holds `DB_PASSWORD` = [`SECRET`].
const SECRET_PATH: &str = "/api/v1/namespaces/ops/secrets/db-credentials";
/// [`SECRET`], base64-encoded as the API server sends Secret data.
const SECRET_B64: &str = "czNjcjN0LVplYnJhLVF1b2trYS05MDIxMA==";

/// Each scenario, requests and all, must finish well within this.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A compose file the operator refuses: `build:` is not supported in a cluster. The secret is used the way
/// real stacks use one (environment, a command line, a connection string).
fn invalid_compose() -> String {
    r#"services:
  x:
    image: stackwarden-test/demo-app:latest
    build: .
    command: serve --db-password ${DB_PASSWORD}
    environment:
      DB_PASSWORD: ${DB_PASSWORD}
      DATABASE_URL: postgres://app:${DB_PASSWORD}@postgres/app
"#
    .to_owned()
}

/// A valid compose file using the secret in the same ways.
fn valid_compose() -> String {
    r#"services:
  web:
    image: stackwarden-test/demo-app:latest
    command: ["serve", "--db-password", "${DB_PASSWORD}"]
    environment:
      DB_PASSWORD: ${DB_PASSWORD}
      DATABASE_URL: postgres://app:${DB_PASSWORD}@postgres/app
    healthcheck:
      test: ["CMD-SHELL", "check --password ${DB_PASSWORD}"]
"#
    .to_owned()
}

/// The ServiceStack as the API server would hand it to the controller.
fn stack_json(spec: Value, finalizers: &[&str], deleting: bool) -> Value {
    let mut metadata = json!({
        "name": NAME,
        "namespace": NS,
        "uid": UID,
        "resourceVersion": "4711",
        "generation": GENERATION,
        "creationTimestamp": "2026-11-25T10:00:00Z",
    });
    if !finalizers.is_empty() {
        metadata["finalizers"] = json!(finalizers);
    }
    if deleting {
        metadata["deletionTimestamp"] = json!("2026-11-25T12:00:00Z");
    }
    json!({
        "apiVersion": "stackwarden.dev/v1alpha1",
        "kind": "ServiceStack",
        "metadata": metadata,
        "spec": spec,
    })
}

fn parse(v: &Value) -> ServiceStack {
    serde_json::from_value(v.clone()).expect("fixture is a valid ServiceStack")
}

fn spec(file: String, host: Option<&str>) -> Value {
    let mut spec = json!({
        "compose": { "file": file },
        "variables": { "DB_PASSWORD": SECRET },
    });
    if let Some(h) = host {
        spec["docker"] = json!({ "host": h });
    }
    spec
}

// ---------------------------------------------------------------------------------------------
// The fake API server
// ---------------------------------------------------------------------------------------------

/// One request as the API server received it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    /// The raw body, for leak checks.
    raw: String,
    /// The body as JSON; `Null` when empty.
    body: Value,
}

impl Seen {
    fn is(&self, method: &Method, path: &str) -> bool {
        self.method == *method && self.path == path
    }
}

/// Records every request and answers like the API server: the finalizer patch and the status
/// patch return the object (the status merged in), an event create echoes the event with 201,
/// an event patch echoes it with 200. Anything else is a 404 `Status`, which the driver sees as
/// an error.
struct FakeApi {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl FakeApi {
    fn start(mut handle: Handle<Request<Body>, Response<Body>>, object: Value) -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            let mut object = object;
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let bytes = body
                    .collect_bytes()
                    .await
                    .expect("request body is readable");
                let raw = String::from_utf8(bytes.to_vec()).expect("request body is UTF-8");
                let body: Value = if raw.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&raw).expect("request body is JSON")
                };
                let seen = Seen {
                    method: parts.method.clone(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                    content_type: parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default(),
                    raw,
                    body: body.clone(),
                };
                let (code, reply) = if seen.is(&Method::PATCH, STATUS_PATH) {
                    // Server-side apply by the status's only manager: the applied status
                    // replaces the stored one, if the resource version it names is current.
                    if body["metadata"]["resourceVersion"] != object["metadata"]["resourceVersion"]
                    {
                        conflict()
                    } else {
                        object["status"] = body["status"].clone();
                        let rv: u64 = object["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        object["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
                        (StatusCode::OK, object.clone())
                    }
                } else if seen.is(&Method::PATCH, STACK_PATH) {
                    (StatusCode::OK, object.clone())
                } else if seen.is(&Method::POST, EVENTS_PATH) {
                    (StatusCode::CREATED, body)
                } else if seen.is(&Method::GET, SECRET_PATH) {
                    let secret = json!({
                        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": "db-credentials", "namespace": NS},
                        "data": {"DB_PASSWORD": SECRET_B64},
                    });
                    (StatusCode::OK, secret)
                } else if seen.method == Method::PATCH
                    && seen.path.starts_with(&format!("{EVENTS_PATH}/"))
                {
                    (StatusCode::OK, body)
                } else {
                    let status = json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": format!("the fake API server does not serve {} {}", seen.method, seen.path),
                        "reason": "NotFound", "code": 404,
                    });
                    (StatusCode::NOT_FOUND, status)
                };
                log.lock().unwrap().push(seen);
                let response = Response::builder()
                    .status(code)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
        });
        Self { seen, task }
    }

    /// The requests received since the last call.
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// The API server's answer to a write based on an old resource version.
fn conflict() -> (StatusCode, Value) {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Operation cannot be fulfilled on servicestacks.stackwarden.dev \"shop\": the object has been modified; please apply your changes to the latest version and try again",
        "reason": "Conflict", "code": 409,
    });
    (StatusCode::CONFLICT, status)
}

/// A driver context on a mocked client, and the fake API server behind it.
struct Scenario {
    kctx: Arc<KubeContext>,
    api: FakeApi,
}

impl Scenario {
    fn new(object: &Value) -> Self {
        let (mock_service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(mock_service, "default");
        Self {
            kctx: KubeContext::new(client),
            api: FakeApi::start(handle, object.clone()),
        }
    }

    async fn reconcile(&self, object: &Value) -> Result<Action, KubeError> {
        reconcile(Arc::new(parse(object)), self.kctx.clone()).await
    }

    /// Drops every client and waits for the fake server to see the channel close, so a request
    /// sent late (from a spawned task) is still caught. Returns the requests not yet taken.
    async fn finish(self) -> Vec<Seen> {
        let Scenario { kctx, api } = self;
        drop(kctx);
        let FakeApi { seen, task } = api;
        task.await.expect("the fake API server panicked");
        let rest = std::mem::take(&mut *seen.lock().unwrap());
        rest
    }
}

async fn within<F: std::future::Future<Output = ()>>(scenario: F) {
    tokio::time::timeout(SCENARIO_TIMEOUT, scenario)
        .await
        .expect("scenario timed out: the driver waited on a request the test never answered");
}

fn describe(seen: &[Seen]) -> String {
    seen.iter()
        .map(|s| format!("{} {}?{} {}", s.method, s.path, s.query, s.raw))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// Assertions on request bodies
// ---------------------------------------------------------------------------------------------

/// The regarding reference kube's recorder builds from `object_ref`.
fn regarding() -> Value {
    json!({
        "apiVersion": "stackwarden.dev/v1alpha1",
        "kind": "ServiceStack",
        "name": NAME,
        "namespace": NS,
        "uid": UID,
    })
}

/// Asserts an events.k8s.io/v1 Event create and returns its note.
fn assert_event(seen: &Seen, type_: &str, reason: &str) -> String {
    assert!(
        seen.is(&Method::POST, EVENTS_PATH),
        "expected an event create, got {} {}",
        seen.method,
        seen.path
    );
    assert!(
        seen.content_type.starts_with("application/json"),
        "event content type: {}",
        seen.content_type
    );
    let mut ev = seen.body.clone();
    let obj = ev.as_object_mut().expect("event body is an object");
    let event_time = obj.remove("eventTime").expect("event has an eventTime");
    assert!(
        event_time
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
        "eventTime {event_time}"
    );
    let name = obj["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("name")
        .expect("event has a name");
    let name = name.as_str().unwrap();
    let suffix = name
        .strip_prefix(&format!("{NAME}."))
        .unwrap_or_else(|| panic!("event name {name} is not NAME.<hex>"));
    assert!(
        !suffix.is_empty() && suffix.chars().all(|c| c.is_ascii_hexdigit()),
        "event name {name}"
    );
    let note = obj.remove("note").expect("event has a note");
    let note = note.as_str().expect("note is a string").to_owned();
    let instance = std::env::var("POD_NAME").unwrap_or_else(|_| "stackwarden".to_owned());
    assert_eq!(
        ev,
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": { "namespace": NS },
            "type": type_,
            "reason": reason,
            "action": "Reconcile",
            "regarding": regarding(),
            "reportingController": "stackwarden",
            "reportingInstance": instance,
        }),
        "event body (eventTime, metadata.name and note checked separately)"
    );
    note
}

/// Asserts a status write by server-side apply, conditional on the resource version the pass
/// read (`rv`), and returns the `status` it writes.
fn assert_status_apply(seen: &Seen, rv: &str) -> Value {
    assert!(
        seen.is(&Method::PATCH, STATUS_PATH),
        "expected a status patch, got {} {}",
        seen.method,
        seen.path
    );
    assert_eq!(seen.content_type, "application/apply-patch+yaml");
    assert!(
        seen.query
            .split('&')
            .any(|q| q == "fieldManager=stackwarden")
            && seen.query.split('&').any(|q| q == "force=true"),
        "query: {}",
        seen.query
    );
    let body = seen.body.as_object().expect("status patch is an object");
    assert_eq!(
        body.keys().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            &"apiVersion".to_owned(),
            &"kind".to_owned(),
            &"metadata".to_owned(),
            &"status".to_owned()
        ]),
        "a status apply names the object and touches nothing but status: {}",
        seen.raw
    );
    assert_eq!(body["apiVersion"], json!("stackwarden.dev/v1alpha1"));
    assert_eq!(body["kind"], json!("ServiceStack"));
    assert_eq!(
        body["metadata"],
        json!({"name": NAME, "resourceVersion": rv}),
        "the write is conditional on the version read"
    );
    body["status"].clone()
}

/// [`assert_status_apply`] for a pass over the fixture as created (resource version 4711).
fn assert_status_patch(seen: &Seen) -> Value {
    assert_status_apply(seen, "4711")
}

type Cond = (String, String, String);

/// The conditions as (type, status, reason), after checking the shape every condition must have.
fn conditions(status: &Value) -> BTreeSet<Cond> {
    let list = status["conditions"]
        .as_array()
        .expect("status.conditions is a list");
    let mut out = BTreeSet::new();
    for c in list {
        let t = c["lastTransitionTime"]
            .as_str()
            .unwrap_or_else(|| panic!("no lastTransitionTime in {c}"));
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "lastTransitionTime {t} is not RFC 3339"
        );
        assert_eq!(
            c["observedGeneration"],
            json!(GENERATION),
            "condition observedGeneration in {c}"
        );
        assert!(
            c["message"].as_str().is_some_and(|m| !m.is_empty()),
            "condition without a message: {c}"
        );
        let s = |k: &str| {
            c[k].as_str()
                .unwrap_or_else(|| panic!("{k} missing in {c}"))
                .to_owned()
        };
        out.insert((s("type"), s("status"), s("reason")));
    }
    assert_eq!(
        out.len(),
        list.len(),
        "a condition type appears twice: {list:?}"
    );
    out
}

fn cond(t: &str, s: &str, r: &str) -> Cond {
    (t.to_owned(), s.to_owned(), r.to_owned())
}

fn message<'a>(status: &'a Value, type_: &str) -> &'a str {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["message"].as_str())
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

/// Nothing the driver sent carries the secret: not a body, not a path, not a query.
fn assert_no_secret(seen: &[Seen]) {
    assert!(!seen.is_empty(), "no requests to check");
    for s in seen {
        for (what, text) in [("body", &s.raw), ("path", &s.path), ("query", &s.query)] {
            assert!(
                !text.contains(SECRET),
                "the secret from spec.variables leaked into the {what} of {} {}: {text}",
                s.method,
                s.path
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Adding the finalizer
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn new_stack_first_gets_the_finalizer_and_nothing_else() {
    within(async {
        // Unreachable Docker and an invalid compose file: if the driver went past the finalizer
        // it would post an event and a status, which the exact request list below forbids.
        let object = stack_json(spec(invalid_compose(), Some(UNREACHABLE)), &[], false);
        let sc = Scenario::new(&object);
        let action = sc
            .reconcile(&object)
            .await
            .expect("adding the finalizer succeeds");
        assert_eq!(
            action,
            Action::await_change(),
            "the finalizer patch itself triggers the next pass"
        );
        let seen = sc.finish().await;
        assert_eq!(
            seen.len(),
            1,
            "exactly one request, the finalizer patch:\n{}",
            describe(&seen)
        );
        let patch = &seen[0];
        assert!(
            patch.is(&Method::PATCH, STACK_PATH),
            "{} {}",
            patch.method,
            patch.path
        );
        assert_eq!(patch.content_type, "application/json-patch+json");
        assert_eq!(
            patch.body,
            json!([
                { "op": "test", "path": "/metadata/finalizers", "value": null },
                { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] },
            ])
        );
        assert_eq!(FINALIZER, "stackwarden.dev/cleanup");
    })
    .await;
}

#[tokio::test]
async fn finalizer_is_appended_after_other_controllers_finalizers() {
    within(async {
        let object = stack_json(
            spec(valid_compose(), Some(UNREACHABLE)),
            &["example.com/other"],
            false,
        );
        let sc = Scenario::new(&object);
        assert_eq!(sc.reconcile(&object).await.unwrap(), Action::await_change());
        let seen = sc.finish().await;
        assert_eq!(seen.len(), 1, "{}", describe(&seen));
        assert!(seen[0].is(&Method::PATCH, STACK_PATH));
        assert_eq!(seen[0].content_type, "application/json-patch+json");
        assert_eq!(
            seen[0].body,
            json!([
                { "op": "test", "path": "/metadata/finalizers", "value": ["example.com/other"] },
                { "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER },
            ])
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 2. Invalid spec (and 4, no secret leaks)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_spec_writes_one_status_then_one_warning_and_leaks_no_secret() {
    within(async {
        // Unreachable Docker: an invalid spec must be reported without any engine.
        let object = stack_json(
            spec(invalid_compose(), Some(UNREACHABLE)),
            &[FINALIZER],
            false,
        );
        let sc = Scenario::new(&object);
        let action = sc
            .reconcile(&object)
            .await
            .expect("an invalid spec is a condition, not an error");
        // A person must change the spec; until then the pass looks again with backoff.
        assert_eq!(action, Action::requeue(Duration::from_secs(1)));
        let seen = sc.finish().await;
        assert_eq!(
            seen.len(),
            2,
            "one status write, then one event:\n{}",
            describe(&seen)
        );
        assert_no_secret(&seen);

        let note = assert_event(&seen[1], "Warning", "UnsupportedComposeKey");
        assert!(
            note.contains("services.x.build"),
            "the note names the offending key: {note}"
        );

        let status = assert_status_patch(&seen[0]);
        assert_eq!(
            keys(&status),
            BTreeSet::from(["conditions", "observedGeneration", "project"]),
            "status: {status}"
        );
        assert_eq!(status["observedGeneration"], json!(GENERATION));
        assert_eq!(status["project"], json!(NAME));
        assert_eq!(
            conditions(&status),
            BTreeSet::from([
                cond("InvalidSpec", "True", "UnsupportedComposeKey"),
                cond("Ready", "False", "UnsupportedComposeKey"),
                cond("Progressing", "False", "UnsupportedComposeKey"),
            ])
        );
        let invalid = message(&status, "InvalidSpec");
        assert!(
            invalid.contains("services.x.build"),
            "InvalidSpec message: {invalid}"
        );
        assert_eq!(note, invalid, "the event says what the condition says");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 3. Docker unreachable (and 4, no secret leaks)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unreachable_engine_is_a_condition_with_backoff_and_leaks_no_secret() {
    within(async {
        let object = stack_json(
            spec(valid_compose(), Some(UNREACHABLE)),
            &[FINALIZER],
            false,
        );
        let sc = Scenario::new(&object);
        let action = sc
            .reconcile(&object)
            .await
            .expect("an unreachable engine is a condition, not an error");
        assert_eq!(
            action,
            Action::requeue(Duration::from_secs(1)),
            "first failure: backoff of 1 s"
        );
        let seen = sc.api.take();
        assert_eq!(
            seen.len(),
            2,
            "one status write, then one event:\n{}",
            describe(&seen)
        );
        assert_no_secret(&seen);

        let note = assert_event(&seen[1], "Warning", "EngineUnreachable");
        assert!(
            note.contains(UNREACHABLE),
            "the note names spec.docker.host: {note}"
        );

        let status = assert_status_patch(&seen[0]);
        assert_eq!(
            keys(&status),
            BTreeSet::from(["conditions", "health", "observedGeneration", "project"]),
            "status: {status}"
        );
        assert_eq!(status["health"], json!("Unknown"));
        assert_eq!(status["observedGeneration"], json!(GENERATION));
        assert_eq!(status["project"], json!(NAME));
        assert_eq!(
            conditions(&status),
            BTreeSet::from([
                cond("DockerUnreachable", "True", "EngineUnreachable"),
                cond("Ready", "Unknown", "EngineUnreachable"),
                cond("InvalidSpec", "False", "SpecValid"),
            ])
        );
        assert_eq!(
            note,
            message(&status, "DockerUnreachable"),
            "the event says what the condition says"
        );

        // The next pass sees the status it wrote: same verdicts, so no new event and no status
        // write, and the backoff doubles.
        let mut object = object;
        object["status"] = status;
        object["metadata"]["resourceVersion"] = json!("4712");
        let action = sc.reconcile(&object).await.unwrap();
        assert_eq!(
            action,
            Action::requeue(Duration::from_secs(2)),
            "second failure: backoff of 2 s"
        );
        let seen = sc.finish().await;
        assert!(
            seen.is_empty(),
            "an unchanged failure must not write again:\n{}",
            describe(&seen)
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 5. Deletion
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn deletion_with_orphan_policy_removes_the_finalizer_without_docker() {
    within(async {
        let mut spec = spec(valid_compose(), Some(UNREACHABLE));
        spec["deletionPolicy"] = json!("Orphan");
        // Our finalizer second, to check the index the test-and-remove patch uses.
        let object = stack_json(spec, &["example.com/other", FINALIZER], true);
        let sc = Scenario::new(&object);
        let action = sc
            .reconcile(&object)
            .await
            .expect("Orphan cleanup needs no engine");
        assert_eq!(action, Action::await_change());
        let seen = sc.finish().await;
        assert_eq!(
            seen.len(),
            1,
            "exactly one request, the finalizer removal:\n{}",
            describe(&seen)
        );
        assert!(
            seen[0].is(&Method::PATCH, STACK_PATH),
            "{} {}",
            seen[0].method,
            seen[0].path
        );
        assert_eq!(seen[0].content_type, "application/json-patch+json");
        assert_eq!(
            seen[0].body,
            json!([
                { "op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER },
                { "op": "remove", "path": "/metadata/finalizers/1" },
            ])
        );
    })
    .await;
}

#[tokio::test]
async fn deletion_keeps_the_finalizer_when_cleanup_cannot_reach_docker() {
    within(async {
        // Retain (the default) must remove containers, so it needs the engine; without it the
        // finalizer stays and the pass fails, to be retried by the error policy.
        let object = stack_json(spec(valid_compose(), Some(UNREACHABLE)), &[FINALIZER], true);
        let sc = Scenario::new(&object);
        let err = sc.reconcile(&object).await.expect_err("cleanup without an engine fails");
        assert!(
            matches!(&err, KubeError::Finalizer(inner)
                if matches!(**inner, kube::runtime::finalizer::Error::CleanupFailed(stackwarden::reconcile::Error::Cleanup(_)))),
            "{err:?}"
        );
        let seen = sc.finish().await;
        assert!(seen.is_empty(), "the finalizer must stay while cleanup fails:\n{}", describe(&seen));
    })
    .await;
}

#[tokio::test]
async fn deleting_stack_without_our_finalizer_is_left_alone() {
    within(async {
        let object = stack_json(
            spec(valid_compose(), Some(UNREACHABLE)),
            &["example.com/other"],
            true,
        );
        let sc = Scenario::new(&object);
        assert_eq!(sc.reconcile(&object).await.unwrap(), Action::await_change());
        let seen = sc.finish().await;
        assert!(seen.is_empty(), "{}", describe(&seen));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Regressions of bugs found by these tests
// ---------------------------------------------------------------------------------------------

/// A second, different problem with the same reason must reach `kubectl describe` with its own
/// note. kube's `Recorder` deduplicates on (type, action, reason, reporter, regarding) but not
/// on the note, so a shared recorder would turn the second publish into a PATCH of the cached
/// first event (series count 2, old note). The store therefore publishes without that cache.
#[tokio::test]

async fn a_new_problem_with_the_same_reason_is_reported_with_its_own_note() {
    within(async {
        let first = stack_json(
            spec(invalid_compose(), Some(UNREACHABLE)),
            &[FINALIZER],
            false,
        );
        let sc = Scenario::new(&first);
        sc.reconcile(&first).await.unwrap();
        let seen = sc.api.take();
        assert_eq!(seen.len(), 2, "{}", describe(&seen));
        let note = assert_event(&seen[1], "Warning", "UnsupportedComposeKey");
        assert!(note.contains("services.x.build"), "{note}");
        let status = assert_status_patch(&seen[0]);

        // The user removes `build:` but adds `env_file:`; the API server bumps the generation
        // and the object carries the status the first pass wrote.
        let file = invalid_compose().replace("    build: .\n", "    env_file: .env\n");
        let mut second = stack_json(spec(file, Some(UNREACHABLE)), &[FINALIZER], false);
        second["metadata"]["generation"] = json!(GENERATION + 1);
        second["metadata"]["resourceVersion"] = json!("4712");
        second["status"] = status;
        sc.reconcile(&second).await.unwrap();
        let seen = sc.finish().await;
        let event = seen
            .iter()
            .find(|s| s.path.starts_with(EVENTS_PATH))
            .unwrap_or_else(|| panic!("no event for the new problem:\n{}", describe(&seen)));
        let note = event.body["note"].as_str().unwrap_or_default();
        assert!(
            note.contains("services.x.env_file"),
            "the event for the new problem says: {} {} note={note:?}",
            event.method,
            event.path
        );
    })
    .await;
}

/// The status is applied whole (server-side apply by its only manager), so a service removed
/// from the compose file must be absent from what is applied, and nothing else kept of it.
/// Uses the real engine, read-only (`suspend: true`, a project nobody else uses).
/// A suspended stack with one service `web`, in `project` on the local engine (read only).
fn suspended_web_on_local_engine(project: &str) -> Value {
    let mut spec = json!({
        "compose": { "projectName": project, "file": "services:\n  web:\n    image: stackwarden-test/demo-app:latest\n" },
        "suspend": true,
    });
    spec["docker"] = json!({ "host": stackwarden::api::DEFAULT_DOCKER_HOST });
    stack_json(spec, &[FINALIZER], false)
}

/// One pass of a suspended stack: the status patch it made, and the status it wrote.
async fn suspended_pass(object: &Value) -> (Seen, Value) {
    let sc = Scenario::new(object);
    sc.reconcile(object)
        .await
        .expect("a suspended pass on the local engine succeeds");
    let seen = sc.finish().await;
    let patch = seen
        .iter()
        .find(|s| s.is(&Method::PATCH, STATUS_PATH))
        .cloned()
        .unwrap_or_else(|| panic!("no status patch:\n{}", describe(&seen)));
    let written = assert_status_patch(&patch);
    (patch, written)
}

#[tokio::test]
async fn a_service_removed_from_the_compose_file_is_removed_from_status() {
    within(async {
        let project = format!("swkubedriver{}", std::process::id());
        let mut object = suspended_web_on_local_engine(&project);
        // What an earlier pass wrote, when the file still had a `worker` service.
        object["status"] = json!({
            "observedGeneration": GENERATION - 1,
            "project": project,
            "services": {
                "web": { "state": "running", "restarts": 0 },
                "worker": { "state": "running", "restarts": 0 },
            },
        });
        let (patch, written) = suspended_pass(&object).await;
        assert!(
            conditions(&written).contains(&cond("DockerUnreachable", "False", "EngineReachable")),
            "this test needs the local Docker engine: {written}"
        );
        let services: BTreeMap<String, Value> =
            serde_json::from_value(written["services"].clone()).unwrap();
        assert_eq!(
            services.keys().collect::<Vec<_>>(),
            ["web"],
            "status.services on the API server after the patch {}",
            patch.raw
        );
    })
    .await;
}

/// The hold annotation, as `kubectl annotate sst shop hold.stackwarden.dev/web="by=alice"` sets
/// it, reaches the status the driver patches: who holds the service, and Ready says why.
#[tokio::test]
async fn a_hold_annotation_is_in_the_status_patch_with_who_holds_the_service() {
    within(async {
        let project = format!("swkubehold{}", std::process::id());
        let mut object = suspended_web_on_local_engine(&project);
        object["metadata"]["annotations"] = json!({ "hold.stackwarden.dev/web": "by=alice" });
        let (_, written) = suspended_pass(&object).await;
        assert_eq!(
            written["services"]["web"]["hold"]["by"], "alice",
            "{written}"
        );
        assert!(
            conditions(&written).contains(&cond("Ready", "False", "ServicesHeld")),
            "{written}"
        );
    })
    .await;
}

/// `spec.variables` are documented as possibly secret and never to appear in status or events,
/// and `Failure` as never holding variable values. Interpolation runs before validation, so an
/// invalid *interpolated value* would be quoted back in the InvalidSpec message (by stackwarden's
/// own checks and by compose_spec's parse errors); the guarantee is unconditional.
#[tokio::test]

async fn an_invalid_interpolated_secret_is_not_quoted_in_status_or_events() {
    within(async {
        let files = [
            // stackwarden's own message: "depends_on names `<value>`"
            "services:\n  x:\n    image: stackwarden-test/demo-app:latest\n    depends_on: [\"${DB_PASSWORD}\"]\n",
            // stackwarden's own message: "uses volume `<value>`"
            "services:\n  x:\n    image: stackwarden-test/demo-app:latest\n    volumes: [\"${DB_PASSWORD}:/data\"]\n",
            // compose_spec's parse error: "duration `<value>` does not contain ASCII digits"
            "services:\n  x:\n    image: stackwarden-test/demo-app:latest\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: \"${DB_PASSWORD}\"\n",
        ];
        let mut leaks = Vec::new();
        for file in files {
            let object = stack_json(spec(file.to_owned(), Some(UNREACHABLE)), &[FINALIZER], false);
            let sc = Scenario::new(&object);
            sc.reconcile(&object).await.unwrap();
            let seen = sc.finish().await;
            let status = assert_status_patch(
                seen.iter().find(|s| s.is(&Method::PATCH, STATUS_PATH)).expect("a status patch"),
            );
            assert!(
                conditions(&status).iter().any(|(t, s, _)| t == "InvalidSpec" && s == "True"),
                "the file is meant to be invalid: {file}"
            );
            leaks.extend(seen.iter().filter(|s| s.raw.contains(SECRET)).map(|s| format!("{} {}: {}", s.method, s.path, s.raw)));
        }
        assert!(leaks.is_empty(), "the secret from spec.variables leaked in {} requests:\n{}", leaks.len(), leaks.join("\n"));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Variables from Secrets
// ---------------------------------------------------------------------------------------------

/// A spec whose only source of `DB_PASSWORD` is the Secret named `secret`.
fn spec_from_secret(secret: &str) -> Value {
    json!({
        "compose": { "file": valid_compose() },
        "docker": { "host": UNREACHABLE },
        "variablesFrom": [{ "secretRef": { "name": secret } }],
    })
}

#[tokio::test]
async fn variables_from_a_secret_are_used_and_never_leak() {
    within(async {
        let object = stack_json(spec_from_secret("db-credentials"), &[FINALIZER], false);
        let sc = Scenario::new(&object);
        sc.reconcile(&object).await.expect("reconcile");
        let seen = sc.finish().await;
        assert!(
            seen[0].is(&Method::GET, SECRET_PATH),
            "the Secret is read first:\n{}",
            describe(&seen)
        );
        assert_no_secret(&seen);
        let patch = seen
            .iter()
            .find(|s| s.is(&Method::PATCH, STATUS_PATH))
            .expect("a status patch");
        let status = assert_status_patch(patch);
        // The compose file interpolates ${DB_PASSWORD}; only the Secret provides it.
        assert!(
            conditions(&status).contains(&cond("InvalidSpec", "False", "SpecValid")),
            "the Secret's value did not reach interpolation: {status}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_missing_secret_is_an_invalid_spec_naming_it() {
    within(async {
        let object = stack_json(spec_from_secret("nope"), &[FINALIZER], false);
        let sc = Scenario::new(&object);
        sc.reconcile(&object)
            .await
            .expect("a missing Secret is a condition, not an error");
        let seen = sc.finish().await;
        assert!(
            seen[0].is(&Method::GET, "/api/v1/namespaces/ops/secrets/nope"),
            "{}",
            describe(&seen)
        );
        let status = assert_status_patch(&seen[1]);
        let note = assert_event(&seen[2], "Warning", "SecretNotFound");
        assert!(
            note.contains("ops/nope") && note.contains("does not exist"),
            "{note}"
        );
        assert!(
            conditions(&status).contains(&cond("InvalidSpec", "True", "SecretNotFound")),
            "{status}"
        );
        assert_eq!(seen.len(), 3, "{}", describe(&seen));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Stale views: a status computed from an old version is refused, and nothing is told of it
// ---------------------------------------------------------------------------------------------

/// The controller's cache can hand a pass the stack as it was before the pass's own last
/// write (or before another operator's). Its status write must be refused by the API server,
/// and the pass must tell nothing (no event) and look again soon, on the fresh copy.
#[tokio::test]
async fn a_pass_on_a_stale_copy_writes_nothing_and_tells_nothing() {
    within(async {
        let current = stack_json(
            spec(invalid_compose(), Some(UNREACHABLE)),
            &[FINALIZER],
            false,
        );
        let sc = Scenario::new(&current);
        let mut stale = current.clone();
        stale["metadata"]["resourceVersion"] = json!("4700");
        let action = sc
            .reconcile(&stale)
            .await
            .expect("a conflict is not an error");
        assert_eq!(action, Action::requeue(Duration::from_secs(1)));
        let seen = sc.api.take();
        assert_eq!(
            seen.len(),
            1,
            "one refused write, no event:\n{}",
            describe(&seen)
        );
        assert_status_apply(&seen[0], "4700");

        // On the fresh copy the same pass writes, and tells, once.
        sc.reconcile(&current).await.unwrap();
        let seen = sc.finish().await;
        assert_eq!(seen.len(), 2, "{}", describe(&seen));
        assert_status_patch(&seen[0]);
        assert_event(&seen[1], "Warning", "UnsupportedComposeKey");
    })
    .await;
}
