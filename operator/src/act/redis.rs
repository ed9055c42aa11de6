//! The one way the operator logs in to Redis: probes, backups and restores (and next, password
//! rotation with `ACL SETUSER` / `CONFIG SET requirepass`) open their connections here.

use std::net::SocketAddr;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

/// Where to connect and with what.
#[derive(Clone, Copy, Debug)]
pub struct Login<'a> {
    pub addr: SocketAddr,
    pub password: Option<&'a str>,
    /// None: the caller bounds the whole exchange itself (the crate's own defaults, 1 s to
    /// connect and 500 ms per answer, would fail before a probe's timeoutSeconds).
    pub connect_timeout: Option<Duration>,
    pub response_timeout: Option<Duration>,
}

/// Why a connection or a command failed, as far as what to tell a person depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The address does not make a connection (never expected for a socket address).
    Misconfigured,
    /// `WRONGPASS`: the password was refused.
    WrongPassword,
    /// `NOAUTH`: the server wants a password and got none.
    NoAuth,
    /// A password was sent to a server that has none configured.
    NoPasswordConfigured,
    /// Authentication failed otherwise.
    AuthFailed,
    /// Nothing listens at the address.
    Refused,
    /// No answer in time.
    Timeout,
    /// The network or the connection failed otherwise.
    Unreachable,
    /// The server answered with an error.
    Command,
}

/// A failure of this client, without the password.
pub type Error = super::ClientError<Kind>;

impl Error {
    /// Classifies `e`; `password` is masked out of the message.
    pub fn new(e: &redis::RedisError, password: Option<&str>) -> Self {
        Self::of(classify(e), e, password)
    }
}

/// What kind of failure `e` is.
pub fn classify(e: &redis::RedisError) -> Kind {
    match e.code() {
        Some("WRONGPASS") => return Kind::WrongPassword,
        Some("NOAUTH") => return Kind::NoAuth,
        Some("ERR") if super::chain(e).contains("without any password configured") => {
            return Kind::NoPasswordConfigured
        }
        _ => {}
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        Kind::AuthFailed
    } else if e.is_connection_refusal() {
        Kind::Refused
    } else if e.is_timeout() {
        Kind::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() {
        Kind::Unreachable
    } else {
        Kind::Command
    }
}

/// Connects and authenticates.
pub async fn connect(login: &Login<'_>) -> Result<MultiplexedConnection, Error> {
    let misconfigured = |e: redis::RedisError| Error::of(Kind::Misconfigured, &e, login.password);
    let info = redis::IntoConnectionInfo::into_connection_info((
        login.addr.ip().to_string().as_str(),
        login.addr.port(),
    ))
    .map_err(misconfigured)?
    // No CLIENT SETINFO before AUTH: it would fail with NOAUTH and hide the real answer.
    .set_redis_settings(redis::RedisConnectionInfo::default().set_skip_set_lib_name());
    let client = redis::Client::open(info).map_err(misconfigured)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(login.connect_timeout)
        .set_response_timeout(login.response_timeout);
    let failed = |e: redis::RedisError| Error::new(&e, login.password);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(failed)?;
    if let Some(p) = login.password {
        redis::cmd("AUTH")
            .arg(p)
            .query_async::<()>(&mut conn)
            .await
            .map_err(failed)?;
    }
    Ok(conn)
}
