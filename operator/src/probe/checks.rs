//! The five kinds of probe. Each returns a message that says what failed and what to check;
//! `check` in mod.rs bounds them with the timeout and masks the variables out of the message.

use std::collections::BTreeMap;

use super::{ProbeError, ProbeErrorKind, Targets};
use crate::act::chain;
use crate::act::postgres as pg;
use crate::act::redis as rd;
use crate::api::{ExecProbe, HttpProbe, JsonFieldMatch, PostgresProbe, Probe, RedisProbe};
use crate::docker::{short_id, Engine, EngineError};

use ProbeErrorKind as K;

/// Bodies longer than this are not read further: a health answer is small, and a probe must not
/// let a service make the operator buffer megabytes.
const MAX_BODY: usize = 1 << 20;
/// How much of a body or a command's output a message quotes.
const QUOTE: usize = 200;

pub(super) async fn run(
    probe: &Probe,
    service: &str,
    targets: &Targets,
    variables: &BTreeMap<String, String>,
    engine: &dyn Engine,
) -> Result<(), ProbeError> {
    match probe {
        Probe::Http(p) => http(p, targets).await,
        Probe::Tcp(p) => tcp(p.port, service, targets).await,
        Probe::Postgres(p) => postgres(p, service, targets, variables).await,
        Probe::Redis(p) => redis(p, service, targets, variables).await,
        Probe::Exec(p) => exec(p, service, targets, engine).await,
    }
}

/// What the probe does, for the start of a message.
pub(super) fn describe(probe: &Probe, service: &str) -> String {
    match probe {
        Probe::Http(p) => format!("GET {}", p.url),
        Probe::Tcp(p) => format!("TCP connect to {service}:{}", p.port),
        Probe::Postgres(p) => format!(
            "PostgreSQL login as {} to database {} on {service}:{}",
            p.user,
            p.database,
            p.port.unwrap_or(5432)
        ),
        Probe::Redis(p) => format!("Redis PING on {service}:{}", p.port.unwrap_or(6379)),
        Probe::Exec(p) => format!("command {:?} in service `{service}`", p.command),
    }
}

async fn http(p: &HttpProbe, targets: &Targets) -> Result<(), ProbeError> {
    let what = format!("GET {}", p.url);
    let mut url = reqwest::Url::parse(&p.url).map_err(|e| {
        ProbeError::new(
            K::Misconfigured,
            format!("{what}: the URL does not parse ({e}); write it as http://SERVICE:PORT/PATH"),
        )
    })?;
    let (Some(host), Some(port)) = (
        url.host_str().map(str::to_owned),
        url.port_or_known_default(),
    ) else {
        return Err(ProbeError::new(
            K::Misconfigured,
            format!("{what}: the URL has no host; write it as http://SERVICE:PORT/PATH"),
        ));
    };
    let addr = targets.address(&host, port)?;
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    // The URL keeps the service name, resolved to the address found, so the request carries the
    // Host header (and, with https, the server name) the service sees from its own network.
    url.set_port(Some(addr.port())).ok();
    // reqwest is built without a crypto provider of its own (see operator/Cargo.toml); the
    // binary installs one at start, a library caller (tests) may not have.
    crate::install_crypto_provider();
    let client = reqwest::Client::builder()
        // A probe checks the service itself: no proxy from the operator's environment, no
        // redirect to a URL that names a host the operator may not resolve.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(&host, addr)
        // A fresh connection every time: a pooled one could outlive the container it went to.
        .pool_max_idle_per_host(0)
        .user_agent(concat!("stackwarden-probe/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProbeError::new(K::Misconfigured, format!("{what}: {}", chain(&e))))?;
    let via = format!("{what} (via {addr})");
    let mut response = client
        .get(url)
        .header(reqwest::header::HOST, authority)
        .send()
        .await
        .map_err(|e| http_error(&via, port, &host, &e))?;
    let status = response.status();
    let mut body = Vec::new();
    while body.len() < MAX_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return Err(http_error(&via, port, &host, &e)),
        }
    }
    let text = String::from_utf8_lossy(&body);
    let status_ok = match p.expect_status {
        Some(expected) => status.as_u16() == expected,
        None => status.is_success(),
    };
    if !status_ok {
        let expected = p
            .expect_status
            .map_or_else(|| "a 2xx status".to_owned(), |s| format!("status {s}"));
        return Err(ProbeError::new(
            K::BadStatus,
            format!(
                "{via} answered status {}, expected {expected}; body: {}",
                status.as_u16(),
                quote(&text)
            ),
        ));
    }
    if let Some(field) = &p.json_field {
        json_field(&via, field, &text)?;
    }
    Ok(())
}

fn http_error(via: &str, port: u16, host: &str, e: &reqwest::Error) -> ProbeError {
    if e.is_connect() {
        // The socket's own error says it best ("Connection refused"); reqwest wraps it thrice.
        let mut source: Option<&dyn std::error::Error> = Some(e);
        while let Some(err) = source {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                return connect_error(via, host, port, io);
            }
            source = err.source();
        }
    }
    ProbeError::new(K::Unreachable, format!("{via}: {}", chain(e)))
}

/// Compares a field of a JSON body with the expected text: a JSON string by its content, any
/// other value by its JSON text (`true`, `42`, `null`). Path segments are object keys, or
/// indices into arrays.
fn json_field(via: &str, field: &JsonFieldMatch, body: &str) -> Result<(), ProbeError> {
    let json: serde_json::Value = serde_json::from_str(body).map_err(|e| {
        ProbeError::new(
            K::BadBody,
            format!(
                "{via}: the body is not JSON ({e}), so field `{}` cannot be checked; body: {}",
                field.path,
                quote(body)
            ),
        )
    })?;
    let mut here = &json;
    for segment in field.path.split('.') {
        let next = match here {
            serde_json::Value::Object(map) => map.get(segment),
            serde_json::Value::Array(items) => {
                segment.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            _ => None,
        };
        here = next.ok_or_else(|| {
            ProbeError::new(
                K::BadBody,
                format!(
                    "{via}: the body has no field `{}`; body: {}",
                    field.path,
                    quote(body)
                ),
            )
        })?;
    }
    let actual = match here {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if actual == field.equals {
        Ok(())
    } else {
        Err(ProbeError::new(
            K::BadBody,
            format!(
                "{via}: field `{}` is {}, expected {:?}; body: {}",
                field.path,
                quote(&actual),
                field.equals,
                quote(body)
            ),
        ))
    }
}

async fn tcp(port: u16, service: &str, targets: &Targets) -> Result<(), ProbeError> {
    let addr = targets.address(service, port)?;
    tokio::net::TcpStream::connect(addr)
        .await
        .map(drop)
        .map_err(|e| {
            connect_error(
                &format!("TCP connect to {service}:{port} (via {addr})"),
                service,
                port,
                &e,
            )
        })
}

fn connect_error(what: &str, service: &str, port: u16, e: &std::io::Error) -> ProbeError {
    let hint = if e.kind() == std::io::ErrorKind::ConnectionRefused {
        format!(
            "nothing listens on port {port} of `{service}`; check the port, and that the server listens on all interfaces (0.0.0.0), not only on 127.0.0.1"
        )
    } else {
        "check that the operator can reach the container (spec.health.probeAccess)".to_owned()
    };
    ProbeError::new(K::Unreachable, format!("{what}: {e}: {hint}"))
}

fn password<'a>(
    what: &str,
    name: Option<&str>,
    variables: &'a BTreeMap<String, String>,
) -> Result<Option<&'a str>, ProbeError> {
    let Some(name) = name else { return Ok(None) };
    variables.get(name).map(|v| Some(v.as_str())).ok_or_else(|| {
        ProbeError::new(
            K::Misconfigured,
            format!("{what}: passwordVariable names `{name}`, which spec.variables does not define; add it or fix the name"),
        )
    })
}

async fn postgres(
    p: &PostgresProbe,
    service: &str,
    targets: &Targets,
    variables: &BTreeMap<String, String>,
) -> Result<(), ProbeError> {
    let port = p.port.unwrap_or(5432);
    let what = format!(
        "PostgreSQL login as {} to database {} on {service}:{port}",
        p.user, p.database
    );
    let secret = password(&what, p.password_variable.as_deref(), variables)?;
    let addr = targets.address(service, port)?;
    let via = format!("{what} (via {addr})");
    let login = pg::Login {
        addr,
        user: &p.user,
        password: secret,
        database: &p.database,
        application: "stackwarden-probe",
        timeout: None,
    };
    let failed = |e: &tokio_postgres::Error| postgres_error(&via, p, &pg::Error::new(e, secret));
    let (client, connection) = pg::open(&login)
        .await
        .map_err(|e| postgres_error(&via, p, &e))?;
    // The connection is driven here, not in a spawned task, so a probe that times out leaves
    // nothing behind: dropping this future closes the socket.
    tokio::pin!(connection);
    let answer = tokio::select! {
        answer = client.simple_query("SELECT 1") => answer,
        ended = &mut connection => {
            return Err(match ended {
                Err(e) => failed(&e),
                Ok(()) => ProbeError::new(
                    K::QueryFailed,
                    format!("{via}: the server closed the connection before answering SELECT 1"),
                ),
            });
        }
    };
    // Say goodbye (Terminate) rather than drop the socket, so the server logs nothing for it.
    drop(client);
    let _ = connection.await;
    answer.map(drop).map_err(|e| failed(&e))
}

fn postgres_error(via: &str, p: &PostgresProbe, e: &pg::Error) -> ProbeError {
    let detail = &e.message;
    match e.kind {
        pg::Kind::LoginRefused => {
            let hint = match &p.password_variable {
                Some(v) => format!("check that spec.variables.{v} holds the password of user {} (and that the user may log in over the network)", p.user),
                None => format!("the probe sends no password: set passwordVariable to the entry of spec.variables that holds the password of user {}", p.user),
            };
            ProbeError::new(
                K::AuthFailed,
                format!("{via}: login refused ({detail}); {hint}"),
            )
        }
        pg::Kind::NoDatabase => ProbeError::new(
            K::QueryFailed,
            format!("{via}: database {} does not exist ({detail}); fix the probe's database or create it", p.database),
        ),
        pg::Kind::Starting => ProbeError::new(
            K::Unreachable,
            format!("{via}: the server is starting or shutting down ({detail})"),
        ),
        pg::Kind::Server => ProbeError::new(K::QueryFailed, format!("{via}: {detail}")),
        pg::Kind::PasswordMissing => ProbeError::new(
            K::AuthFailed,
            format!("{via}: the server asks for a password and the probe has none; set passwordVariable to the entry of spec.variables that holds the password of user {}", p.user),
        ),
        pg::Kind::AuthFailed => ProbeError::new(K::AuthFailed, format!("{via}: {detail}")),
        pg::Kind::Refused => ProbeError::new(
            K::Unreachable,
            format!("{via}: connection refused: nothing listens on port {}; check the port and listen_addresses", p.port.unwrap_or(5432)),
        ),
        pg::Kind::Unreachable => ProbeError::new(K::Unreachable, format!("{via}: {detail}")),
    }
}

async fn redis(
    p: &RedisProbe,
    service: &str,
    targets: &Targets,
    variables: &BTreeMap<String, String>,
) -> Result<(), ProbeError> {
    let port = p.port.unwrap_or(6379);
    let what = format!("Redis PING on {service}:{port}");
    let secret = password(&what, p.password_variable.as_deref(), variables)?;
    let addr = targets.address(service, port)?;
    let via = format!("{what} (via {addr})");
    // No client timeouts: `check` bounds the whole probe by the timeoutSeconds the user chose.
    let login = rd::Login {
        addr,
        password: secret,
        connect_timeout: None,
        response_timeout: None,
    };
    let mut conn = rd::connect(&login)
        .await
        .map_err(|e| redis_error(&via, p, &e))?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| redis_error(&via, p, &rd::Error::new(&e, secret)))?;
    if pong == "PONG" {
        Ok(())
    } else {
        Err(ProbeError::new(
            K::QueryFailed,
            format!("{via}: PING answered {}, expected PONG", quote(&pong)),
        ))
    }
}

fn redis_error(via: &str, p: &RedisProbe, e: &rd::Error) -> ProbeError {
    let detail = &e.message;
    let auth_hint = |what: &str| {
        let hint = match &p.password_variable {
            Some(v) => format!("check that spec.variables.{v} holds the server's password (requirepass)"),
            None => "the server wants a password: set passwordVariable to the entry of spec.variables that holds it".to_owned(),
        };
        format!("{via}: {what} ({detail}); {hint}")
    };
    match e.kind {
        rd::Kind::WrongPassword => ProbeError::new(K::AuthFailed, auth_hint("the password was refused")),
        rd::Kind::NoAuth => ProbeError::new(K::AuthFailed, auth_hint("authentication required")),
        rd::Kind::NoPasswordConfigured => ProbeError::new(
            K::AuthFailed,
            format!("{via}: the probe sends a password but the server has none configured; remove passwordVariable or set requirepass"),
        ),
        rd::Kind::AuthFailed => ProbeError::new(K::AuthFailed, auth_hint("authentication failed")),
        rd::Kind::Refused => ProbeError::new(
            K::Unreachable,
            format!("{via}: connection refused: nothing listens on port {}; check the port and redis' `bind`", p.port.unwrap_or(6379)),
        ),
        rd::Kind::Timeout => ProbeError::new(K::Timeout, format!("{via}: {detail}")),
        rd::Kind::Unreachable => ProbeError::new(K::Unreachable, format!("{via}: {detail}")),
        rd::Kind::Misconfigured => ProbeError::new(K::Misconfigured, format!("{via}: {detail}")),
        rd::Kind::Command => ProbeError::new(K::QueryFailed, format!("{via}: {detail}")),
    }
}

async fn exec(
    p: &ExecProbe,
    service: &str,
    targets: &Targets,
    engine: &dyn Engine,
) -> Result<(), ProbeError> {
    let what = format!("command {:?} in service `{service}`", p.command);
    if p.command.is_empty() {
        return Err(ProbeError::new(
            K::Misconfigured,
            format!("{what}: the command is empty"),
        ));
    }
    let c = targets.container(service)?;
    // Docker cannot stop an exec: a command that outlives the timeout keeps running in the
    // container, and the probe reports Timeout without waiting for it.
    let outcome = engine.exec(&c.id, &p.command).await.map_err(|e| match e {
        EngineError::Unreachable { .. } => ProbeError::new(K::Unreachable, format!("{what}: {e}")),
        EngineError::Api { .. } => ProbeError::new(
            K::CommandFailed,
            format!(
                "{what}: Docker could not run it in container {} ({e})",
                short_id(&c.id)
            ),
        ),
    })?;
    if outcome.exit_code == 0 {
        return Ok(());
    }
    let hint = match outcome.exit_code {
        126 => "; the command could not be started (missing or not executable?)",
        127 => "; the command was not found (give its full path, or name a shell)",
        _ => "",
    };
    Err(ProbeError::new(
        K::CommandFailed,
        format!(
            "{what} exited with code {}{hint}; output: {}",
            outcome.exit_code,
            quote(&outcome.output)
        ),
    ))
}

/// The first characters of a text, on one line, quoted.
fn quote(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return "(empty)".to_owned();
    }
    match one_line.char_indices().nth(QUOTE) {
        Some((cut, _)) => format!("{:?}…", &one_line[..cut]),
        None => format!("{one_line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(path: &str, equals: &str) -> JsonFieldMatch {
        JsonFieldMatch {
            path: path.into(),
            equals: equals.into(),
        }
    }

    #[test]
    fn json_fields_compare_as_text() {
        let body = r#"{"status":"healthy","checks":{"db":{"ok":true,"ms":3}},"items":[{"n":"a"}],"none":null}"#;
        for (path, equals) in [
            ("status", "healthy"),
            ("checks.db.ok", "true"),
            ("checks.db.ms", "3"),
            ("items.0.n", "a"),
            ("none", "null"),
        ] {
            json_field("GET x", &field(path, equals), body)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        let e = json_field("GET x", &field("status", "\"healthy\""), body).unwrap_err();
        assert_eq!(e.kind, K::BadBody);
        let e = json_field("GET x", &field("checks.db.ok", "false"), body).unwrap_err();
        assert!(
            e.message.contains("`checks.db.ok` is \"true\""),
            "{}",
            e.message
        );
        let e = json_field("GET x", &field("checks.cache", "x"), body).unwrap_err();
        assert!(
            e.message.contains("no field `checks.cache`"),
            "{}",
            e.message
        );
        let e = json_field("GET x", &field("status", "ok"), "<html>").unwrap_err();
        assert!(e.message.contains("not JSON"), "{}", e.message);
    }

    #[test]
    fn quotes_are_short_and_on_one_line() {
        assert_eq!(quote("a\n  b\tc"), "\"a b c\"");
        assert_eq!(quote(" \n"), "(empty)");
        let long = "x".repeat(500);
        assert_eq!(quote(&long).chars().count(), QUOTE + 3);
    }
}
