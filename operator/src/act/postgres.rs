//! The one way the operator logs in to PostgreSQL: probes, backups and restores (and next,
//! password rotation with `ALTER ROLE ... PASSWORD`) open their sessions here.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Connection, NoTls, Socket};

/// Who logs in where.
#[derive(Clone, Copy, Debug)]
pub struct Login<'a> {
    pub addr: SocketAddr,
    pub user: &'a str,
    pub password: Option<&'a str>,
    pub database: &'a str,
    /// `application_name`, so a DBA sees who holds the session.
    pub application: &'a str,
    /// None: the caller bounds the whole exchange itself.
    pub timeout: Option<Duration>,
}

/// Why a login or a statement failed, as far as what to tell a person depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The server refused the credentials.
    LoginRefused,
    /// The server asked for a password and there is none.
    PasswordMissing,
    /// Authentication failed on the client's side (an unsupported method, a bad answer).
    AuthFailed,
    /// The database does not exist.
    NoDatabase,
    /// The server is starting or shutting down.
    Starting,
    /// Any other answer of the server.
    Server,
    /// Nothing listens at the address.
    Refused,
    /// The network or the connection failed otherwise.
    Unreachable,
}

/// A failure of this client, without the password.
pub type Error = super::ClientError<Kind>;

impl Error {
    /// Classifies `e`; `password` is masked out of the message.
    pub fn new(e: &tokio_postgres::Error, password: Option<&str>) -> Self {
        Self::of(classify(e), e, password)
    }
}

/// What kind of failure `e` is.
pub fn classify(e: &tokio_postgres::Error) -> Kind {
    if let Some(code) = e.code() {
        return if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            Kind::LoginRefused
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            Kind::NoDatabase
        } else if *code == SqlState::CANNOT_CONNECT_NOW {
            Kind::Starting
        } else {
            Kind::Server
        };
    }
    let detail = super::chain(e);
    if detail.contains("password missing") {
        return Kind::PasswordMissing;
    }
    if detail.starts_with("authentication error") {
        return Kind::AuthFailed;
    }
    let refused = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
    if refused {
        Kind::Refused
    } else {
        Kind::Unreachable
    }
}

/// Logs in and hands back the session with its connection, which the caller drives: a probe
/// drives it in place so a timeout leaves nothing behind.
pub async fn open(login: &Login<'_>) -> Result<(Client, Connection<Socket, NoTlsStream>), Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(login.addr.ip().to_string())
        .port(login.addr.port())
        .user(login.user)
        .dbname(login.database)
        .application_name(login.application);
    if let Some(t) = login.timeout {
        config.connect_timeout(t);
    }
    if let Some(p) = login.password {
        config.password(p);
    }
    config
        .connect(NoTls)
        .await
        .map_err(|e| Error::new(&e, login.password))
}

/// Logs in; the connection is driven by a task that ends with the client.
pub async fn connect(login: &Login<'_>) -> Result<Client, Error> {
    let (client, connection) = open(login).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}
