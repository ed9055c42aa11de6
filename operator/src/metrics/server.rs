//! The operator's HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.
//!
//! Plain hyper (already in the build through bollard) rather than a web framework: three
//! fixed routes need no router.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::Metrics;

/// `Content-Type` of `/metrics`: the Prometheus text format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A client gets this long to send a request's headers (slow or idle clients are dropped).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;

/// Binds `addr` and returns the bound address (so that port 0 can be used) with the future
/// that serves:
/// - `GET /metrics`: [`Metrics::render`] as [`METRICS_CONTENT_TYPE`];
/// - `GET /healthz`: 200 while the process runs;
/// - `GET /readyz`: 200 once `ready` is true (the drivers set it after their first pass),
///   503 before.
///
/// The future never completes; dropping it (e.g. aborting the task it was spawned on) closes
/// the listener and every open connection. A bind error is returned at once, so that a port
/// in use stops the operator at start rather than leaving it unobservable; its text names the
/// address and what to do (its kind is the bind error's).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> io::Result<(SocketAddr, impl Future<Output = ()> + Send + 'static)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(addr, e))?;
    let bound = listener.local_addr()?;
    Ok((bound, accept_loop(listener, metrics, ready)))
}

/// The OS says only "Address already in use"; the operator knows which address, and whose
/// flag moves it.
fn bind_error(addr: SocketAddr, e: io::Error) -> io::Error {
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => "another stackwarden may be running, or another program uses the port; pass --metrics-addr HOST:PORT (or off)",
        _ => "pass --metrics-addr HOST:PORT (or off)",
    };
    io::Error::new(
        e.kind(),
        format!("cannot serve /metrics on {addr}: {e}; {hint}"),
    )
}

async fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) {
    // Connections live in this set, so dropping the future aborts them too.
    let mut connections = JoinSet::new();
    loop {
        if connections.len() >= MAX_CONNECTIONS {
            connections.join_next().await;
            continue;
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (metrics, ready) = (metrics.clone(), ready.clone());
                    connections.spawn(async move {
                        let service = service_fn(move |req| {
                            let response = respond(&req, &metrics, &ready);
                            async move { Ok::<_, Infallible>(response) }
                        });
                        let served = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_READ_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        if let Err(e) = served {
                            debug!(%peer, error = %e, "metrics connection ended");
                        }
                    });
                }
                // Usually out of file descriptors: wait a little rather than spin.
                Err(e) => {
                    warn!(error = %e, "accepting a metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn respond(
    req: &Request<Incoming>,
    metrics: &Metrics,
    ready: &AtomicBool,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match req.uri().path() {
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(metrics.render())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the first reconcile pass has not finished\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// One HTTP/1.1 request on a fresh connection, read to the end (`Connection: close`).
    async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut raw))
            .await
            .expect("response within 5 s")
            .unwrap();
        parse(&raw)
    }

    fn parse(raw: &str) -> Reply {
        let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {raw:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Reply {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    #[tokio::test]
    async fn serves_metrics_healthz_and_readyz_until_dropped() {
        let metrics = Arc::new(Metrics::new());
        let ready = Arc::new(AtomicBool::new(false));
        let (addr, server) = serve(
            "127.0.0.1:0".parse().unwrap(),
            metrics.clone(),
            ready.clone(),
        )
        .await
        .expect("bind");
        assert_ne!(addr.port(), 0, "the bound port is returned");
        let server = tokio::spawn(server);

        // Liveness does not wait for readiness.
        let health = request(addr, "GET", "/healthz").await;
        assert_eq!(health.status, 200);
        let not_ready = request(addr, "GET", "/readyz").await;
        assert_eq!(not_ready.status, 503, "{}", not_ready.body);

        // The drivers finish their first pass.
        ready.store(true, Ordering::Release);
        assert_eq!(request(addr, "GET", "/readyz").await.status, 200);
        assert_eq!(request(addr, "GET", "/healthz").await.status, 200);

        // /metrics serves the live registry, in the Prometheus text format.
        metrics.restarted("ops/erni", "backend", "OOMKilled");
        let scraped = request(addr, "GET", "/metrics").await;
        assert_eq!(scraped.status, 200);
        assert_eq!(
            scraped.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert!(
            scraped.body.lines().any(|l| l
                == "stackwarden_restarts_total{namespace=\"ops\",name=\"erni\",service=\"backend\",reason=\"OOMKilled\"} 1"),
            "{}",
            scraped.body
        );
        assert!(scraped
            .body
            .contains("# TYPE stackwarden_restarts_total counter\n"));

        // HEAD is answered without a body; other methods and paths are refused.
        let head = request(addr, "HEAD", "/metrics").await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty(), "{:?}", head.body);
        let post = request(addr, "POST", "/metrics").await;
        assert_eq!(post.status, 405);
        assert_eq!(post.header("allow"), Some("GET, HEAD"));
        assert_eq!(request(addr, "GET", "/nope").await.status, 404);

        // Dropping the future closes the listener and open keep-alive connections.
        let mut open = TcpStream::connect(addr).await.unwrap();
        open.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 12];
        open.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        server.abort();
        assert!(server.await.unwrap_err().is_cancelled());
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener still open"
        );
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut rest))
            .await
            .expect("the open connection is closed, not left hanging")
            .ok();
    }

    #[tokio::test]
    async fn a_port_in_use_is_an_error_at_once() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let result = serve(
            addr,
            Arc::new(Metrics::new()),
            Arc::new(AtomicBool::new(true)),
        )
        .await;
        let error = result.err().expect("a port in use is an error");
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        // What the operator prints when it stops: the address, the cause and the way out.
        let shown = format!("{:#}", anyhow::Error::from(error));
        assert!(
            shown.starts_with(&format!("cannot serve /metrics on {addr}: ")),
            "{shown}"
        );
        let cause = TcpListener::bind(addr).await.unwrap_err().to_string();
        assert!(shown.contains(&format!(": {cause}; ")), "{shown}");
        assert!(
            shown.contains("--metrics-addr HOST:PORT (or off)"),
            "{shown}"
        );
    }
}
