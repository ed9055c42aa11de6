//! Scrapes a service's metrics page for the rollout analysis. The caller gives the URL, built
//! from the address it found for the service (see `AnalysisSpec::url`), so nothing here knows
//! Docker.

use std::time::Duration;

use super::{chain, ClientError};

/// Metrics pages larger than this are refused: a page of a few families is kilobytes, and a
/// service must not make the operator buffer without end.
pub const MAX_SCRAPE_BYTES: usize = 4 << 20;

/// Why a scrape gave no text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrapeFailure {
    /// Nothing answered at the address (connection refused, no route, reset).
    Unreachable,
    /// No whole answer within the timeout.
    Timeout,
    /// The server answered with a status other than 2xx.
    Status(u16),
    /// The page is larger than [`MAX_SCRAPE_BYTES`].
    TooBig,
    /// The URL does not parse, the page is not UTF-8, or the exchange broke off.
    Other,
}

pub type ScrapeError = ClientError<ScrapeFailure>;

/// GETs `url` and returns the page, within `timeout` for the whole exchange.
pub async fn scrape(url: &str, timeout: Duration) -> Result<String, ScrapeError> {
    match tokio::time::timeout(timeout, fetch(url)).await {
        Ok(result) => result,
        Err(_) => Err(failure(
            ScrapeFailure::Timeout,
            format!("GET {url}: no answer within {timeout:?}"),
        )),
    }
}

fn failure(kind: ScrapeFailure, message: String) -> ScrapeError {
    ClientError { kind, message }
}

async fn fetch(url: &str) -> Result<String, ScrapeError> {
    // reqwest is built without a crypto provider of its own (see operator/Cargo.toml).
    crate::install_crypto_provider();
    let client = reqwest::Client::builder()
        // The service itself, as the probes reach it: no proxy from the operator's
        // environment, no redirect elsewhere, a fresh connection (a pooled one could outlive
        // the container it went to).
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .user_agent(concat!("stackwarden-analysis/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| failure(ScrapeFailure::Other, format!("GET {url}: {}", chain(&e))))?;
    let mut response = client
        .get(url)
        .header(
            reqwest::header::ACCEPT,
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .map_err(|e| transport(url, &e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(failure(
            ScrapeFailure::Status(status.as_u16()),
            format!(
                "GET {url} answered status {}, expected 2xx; check metrics.port and metrics.path",
                status.as_u16()
            ),
        ));
    }
    let too_big = || {
        failure(
            ScrapeFailure::TooBig,
            format!("GET {url}: the page is larger than {MAX_SCRAPE_BYTES} bytes"),
        )
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_SCRAPE_BYTES as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(url, &e))? {
        if body.len() + chunk.len() > MAX_SCRAPE_BYTES {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| {
        failure(
            ScrapeFailure::Other,
            format!("GET {url}: the page is not UTF-8 text"),
        )
    })
}

fn transport(url: &str, e: &reqwest::Error) -> ScrapeError {
    let kind = if e.is_connect() {
        ScrapeFailure::Unreachable
    } else if e.is_timeout() {
        ScrapeFailure::Timeout
    } else {
        ScrapeFailure::Other
    };
    failure(kind, format!("GET {url}: {}", chain(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that answers every connection with `answer`, after reading the request.
    async fn serve(answer: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let _ = socket.write_all(&answer).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        format!("http://{addr}/metrics")
    }

    fn http(status: &str, body: &[u8]) -> Vec<u8> {
        let mut answer = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(body);
        answer
    }

    const TIMEOUT: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn a_page_comes_back_as_text() {
        let url = serve(http("200 OK", b"up 1\n# EOF\n")).await;
        assert_eq!(scrape(&url, TIMEOUT).await.unwrap(), "up 1\n# EOF\n");
    }

    #[tokio::test]
    async fn a_status_other_than_2xx_is_an_error_naming_it() {
        let url = serve(http("404 Not Found", b"no")).await;
        let e = scrape(&url, TIMEOUT).await.unwrap_err();
        assert_eq!(e.kind, ScrapeFailure::Status(404));
        assert!(e.message.contains("answered status 404"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_page_larger_than_the_limit_is_refused() {
        let url = serve(http("200 OK", &vec![b'#'; MAX_SCRAPE_BYTES + 1])).await;
        assert_eq!(
            scrape(&url, TIMEOUT).await.unwrap_err().kind,
            ScrapeFailure::TooBig
        );
        // Without a content-length the body is counted as it comes.
        let mut chunked = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec();
        chunked.extend(vec![b'#'; MAX_SCRAPE_BYTES + 1]);
        let url = serve(chunked).await;
        assert_eq!(
            scrape(&url, TIMEOUT).await.unwrap_err().kind,
            ScrapeFailure::TooBig
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = scrape(&format!("http://{addr}/metrics"), TIMEOUT)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ScrapeFailure::Unreachable, "{}", e.message);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts (the backlog does) and says nothing.
        let e = scrape(
            &format!("http://{addr}/metrics"),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind, ScrapeFailure::Timeout, "{}", e.message);
        drop(listener);
    }
}
