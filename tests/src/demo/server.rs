//! The HTTP side of the demo app.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::checks::{check_database, check_redis, health_report, readiness_report};
use super::config::{parse_error_rate, parse_leak_rate, parse_switch, Config};
use super::faults::{should_inject_error, Faults};
use super::metrics::{Metrics, CONTENT_TYPE};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub faults: Arc<Faults>,
    pub metrics: Arc<Metrics>,
}

pub fn router(state: AppState) -> Router {
    // The error-rate fault stands for a bad release of the application itself, so it hits the
    // application's own routes; probes, metrics and admin keep answering truthfully so that a
    // test can observe and control the fault.
    let application = Router::new()
        .route("/", get(root))
        .route_layer(middleware::from_fn_with_state(state.clone(), inject_errors));
    Router::new()
        .merge(application)
        .route("/health", get(health))
        .route("/readiness", get(readiness))
        .route("/metrics", get(metrics))
        .route("/admin/faults", get(faults))
        .route("/admin/fail-health", post(set_fail_health))
        .route("/admin/error-rate", post(set_error_rate))
        .route("/admin/leak", post(set_leak))
        .route("/admin/crash", post(crash))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Outermost layer, so that every answer is counted, 404s and injected 500s included.
async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .observe(response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

async fn inject_errors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if should_inject_error(state.faults.error_rate(), rand::random::<f64>()) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected error\n").into_response();
    }
    next.run(request).await
}

async fn root(State(state): State<AppState>) -> &'static str {
    if !state.faults.latency.is_zero() {
        tokio::time::sleep(state.faults.latency).await;
    }
    "ok"
}

fn json_response(code: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

async fn health(State(state): State<AppState>) -> Response {
    let (database, redis) = tokio::join!(
        check_database(&state.config.database),
        check_redis(&state.config.redis)
    );
    let (code, body) = health_report(&database, &redis, state.faults.fail_health());
    json_response(code, body)
}

async fn readiness(State(state): State<AppState>) -> Response {
    let (code, body) = readiness_report(&check_database(&state.config.database).await);
    json_response(code, body)
}

async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.set_leaked_bytes(state.faults.leaked_bytes());
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

async fn faults(State(state): State<AppState>) -> Json<Value> {
    Json(state.faults.snapshot())
}

/// Reads one query parameter and parses it; the error is the reason, for a 400 answer.
fn param<T>(
    query: &HashMap<String, String>,
    name: &str,
    parse: impl Fn(&str) -> anyhow::Result<T>,
) -> Result<T, String> {
    let value = query
        .get(name)
        .ok_or_else(|| format!("missing query parameter `{name}`"))?;
    parse(value).map_err(|e| format!("`{name}`: {e:#}"))
}

fn bad_request(message: String) -> Response {
    json_response(400, json!({"error": message}))
}

async fn set_fail_health(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match param(&query, "on", parse_switch) {
        Ok(on) => {
            state.faults.set_fail_health(on);
            println!("demo-app: fault fail-health set to {on}");
            json_response(200, state.faults.snapshot())
        }
        Err(message) => bad_request(message),
    }
}

async fn set_error_rate(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match param(&query, "rate", parse_error_rate) {
        Ok(rate) => {
            state.faults.set_error_rate(rate);
            println!("demo-app: fault error-rate set to {rate}");
            json_response(200, state.faults.snapshot())
        }
        Err(message) => bad_request(message),
    }
}

async fn set_leak(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match param(&query, "mb_per_sec", parse_leak_rate) {
        Ok(mb_per_sec) => {
            state.faults.set_leak_mb_per_sec(mb_per_sec);
            println!("demo-app: fault leak set to {mb_per_sec} MiB/s");
            json_response(200, state.faults.snapshot())
        }
        Err(message) => bad_request(message),
    }
}

/// Exits before answering: a crash does not say goodbye, and the caller sees the connection
/// drop exactly as it would with a real one.
async fn crash() -> Response {
    println!("demo-app: /admin/crash called, exiting with code 1");
    std::process::exit(1)
}
