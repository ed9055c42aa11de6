//! The dependency checks behind `/health` and `/readiness`. Each check opens a fresh
//! connection: a cached one could outlive a server that has since died or changed its
//! password, and the whole point of these endpoints is to notice exactly that.

use std::future::Future;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::config::{DatabaseConfig, RedisConfig, Secret};

/// Short enough that a hanging dependency answers well within a Docker healthcheck timeout.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Error messages end up in HTTP answers and logs; they stay short.
const MAX_ERROR_LEN: usize = 200;

/// A failed check, with a message already safe to show.
pub type CheckResult = Result<(), String>;

pub async fn check_database(config: &DatabaseConfig) -> CheckResult {
    let result = with_timeout(async {
        let mut pg = tokio_postgres::Config::new();
        pg.host(&config.host)
            .port(config.port)
            .dbname(&config.name)
            .user(&config.user)
            .connect_timeout(CHECK_TIMEOUT)
            .application_name("demo-app");
        if !config.password.is_empty() {
            pg.password(config.password.expose());
        }
        let (client, connection) = pg
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| error_chain(&e))?;
        let driver = tokio::spawn(connection);
        let answer = client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| error_chain(&e));
        // Dropping the client closes the session; the driver task then ends by itself.
        drop(client);
        let _ = driver.await;
        answer.map(|_| ())
    })
    .await;
    result.map_err(|e| sanitize(&e, &[&config.password]))
}

pub async fn check_redis(config: &RedisConfig) -> CheckResult {
    let result = with_timeout(async {
        let mut settings = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
        if let Some(password) = &config.password {
            settings = settings.set_password(password.expose());
        }
        let info =
            redis::IntoConnectionInfo::into_connection_info((config.host.as_str(), config.port))
                .map_err(|e| error_chain(&e))?
                .set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(|e| error_chain(&e))?;
        // Connecting sends AUTH when a password is set, so a wrong password fails here.
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| error_chain(&e))?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .map_err(|e| error_chain(&e))?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(format!("unexpected answer to PING: {pong}"))
        }
    })
    .await;
    let secrets: Vec<&Secret> = config.password.iter().collect();
    result.map_err(|e| sanitize(&e, &secrets))
}

async fn with_timeout(check: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    }
}

/// The error and its causes on one line: tokio-postgres's own message for a server-side
/// error is only "db error", with the server's reason (such as a failed password) in the
/// source.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Neither client library puts passwords in its errors today; this keeps it that way should
/// one ever echo a connection string. Also caps the length.
pub fn sanitize(message: &str, secrets: &[&Secret]) -> String {
    let mut clean = message.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        clean = clean.replace(secret.expose(), "<redacted>");
    }
    if clean.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        clean.truncate(end);
        clean.push('…');
    }
    clean
}

/// The `/health` answer: HTTP status and JSON body, from the check results and the
/// fail-health switch.
pub fn health_report(
    database: &CheckResult,
    redis: &CheckResult,
    fail_health: bool,
) -> (u16, Value) {
    let state = |result: &CheckResult| {
        if result.is_ok() {
            "connected"
        } else {
            "disconnected"
        }
    };
    let mut errors = Vec::new();
    if let Err(e) = database {
        errors.push(format!("database: {e}"));
    }
    if let Err(e) = redis {
        errors.push(format!("redis: {e}"));
    }
    if fail_health {
        errors.push("fail-health fault is on".to_owned());
    }
    let healthy = errors.is_empty();
    let mut body = Map::new();
    body.insert(
        "status".into(),
        json!(if healthy { "healthy" } else { "unhealthy" }),
    );
    body.insert("database".into(), json!(state(database)));
    body.insert("redis".into(), json!(state(redis)));
    if !healthy {
        body.insert("error".into(), json!(errors.join("; ")));
    }
    (if healthy { 200 } else { 503 }, Value::Object(body))
}

/// The `/readiness` answer: ready when the database answers.
pub fn readiness_report(database: &CheckResult) -> (u16, Value) {
    match database {
        Ok(()) => (200, json!({"ready": true})),
        Err(e) => (
            503,
            json!({"ready": false, "error": format!("database: {e}")}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_when_both_dependencies_answer() {
        let (code, body) = health_report(&Ok(()), &Ok(()), false);
        assert_eq!(code, 200);
        assert_eq!(
            body,
            json!({"status": "healthy", "database": "connected", "redis": "connected"})
        );
    }

    #[test]
    fn names_the_failing_dependency() {
        let (code, body) = health_report(&Ok(()), &Err("connection refused".into()), false);
        assert_eq!(code, 503);
        assert_eq!(body["status"], "unhealthy");
        assert_eq!(body["database"], "connected");
        assert_eq!(body["redis"], "disconnected");
        assert_eq!(body["error"], "redis: connection refused");

        let (code, body) = health_report(&Err("timeout".into()), &Err("refused".into()), false);
        assert_eq!(code, 503);
        assert_eq!(body["database"], "disconnected");
        assert_eq!(body["redis"], "disconnected");
        assert_eq!(body["error"], "database: timeout; redis: refused");
    }

    #[test]
    fn fail_health_switch_makes_healthy_dependencies_unhealthy() {
        let (code, body) = health_report(&Ok(()), &Ok(()), true);
        assert_eq!(code, 503);
        assert_eq!(body["status"], "unhealthy");
        assert_eq!(body["database"], "connected");
        assert_eq!(body["redis"], "connected");
        assert!(body["error"].as_str().unwrap().contains("fail-health"));
    }

    #[test]
    fn readiness_follows_the_database() {
        assert_eq!(readiness_report(&Ok(())), (200, json!({"ready": true})));
        let (code, body) = readiness_report(&Err("refused".into()));
        assert_eq!(code, 503);
        assert_eq!(body["ready"], false);
    }

    #[test]
    fn error_chain_includes_the_causes() {
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("db error")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let wrapped = Wrapper(std::io::Error::other("password authentication failed"));
        assert_eq!(
            error_chain(&wrapped),
            "db error: password authentication failed"
        );
    }

    #[test]
    fn sanitize_removes_passwords_and_caps_length() {
        let secret = Secret::new("hunter2");
        let empty = Secret::default();
        assert_eq!(
            sanitize(
                "auth failed for redis://:hunter2@redis:6379",
                &[&secret, &empty]
            ),
            "auth failed for redis://:<redacted>@redis:6379"
        );
        let long = "é".repeat(300);
        let clean = sanitize(&long, &[]);
        assert!(clean.len() <= MAX_ERROR_LEN + '…'.len_utf8());
        assert!(clean.ends_with('…'));
    }
}
