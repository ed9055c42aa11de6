//! The real `stackwarden controller` binary starts against an API server over HTTPS: it builds
//! its TLS client (one rustls crypto provider, chosen at start), verifies the server against
//! the kubeconfig's CA, authenticates with the token and sends its first API request. The
//! server here is the test's own: a CA and a server certificate made on the spot, every
//! request answered 404 as if the CRD were not installed, so the operator exits with the error
//! that says so.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::{pem::PemObject as _, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

const TOKEN: &str = "startup-test-token-5f0c";

/// What reached the server: a request it decoded (so TLS was established), or a handshake
/// that failed.
#[derive(Debug)]
enum Seen {
    Request {
        method: String,
        path: String,
        authorization: Option<String>,
    },
    HandshakeFailed(String),
}

/// A CA, and a certificate for 127.0.0.1 it signed.
struct Pki {
    ca_pem: String,
    server: tokio_rustls::rustls::ServerConfig,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let server = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server,
    }
}

/// Answers every request like an API server without the ServiceStack CRD.
async fn not_found(
    req: Request<Incoming>,
    seen: mpsc::UnboundedSender<Seen>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _ = seen.send(Seen::Request {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        authorization: req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    let status = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "the server could not find the requested resource",
        "reason": "NotFound", "details": {}, "code": 404
    });
    Ok(Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(status.to_string())))
        .unwrap())
}

async fn serve_https(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    seen: mpsc::UnboundedSender<Seen>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let (acceptor, seen) = (acceptor.clone(), seen.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    let _ = seen.send(Seen::HandshakeFailed(e.to_string()));
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| not_found(req, seen.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn kubeconfig(server: &str, ca_pem: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    // JSON is YAML, which is what a kubeconfig is read as.
    serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {
            "server": server, "certificate-authority-data": ca}}],
        "users": [{"name": "test", "user": {"token": TOKEN}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]
    })
    .to_string()
}

#[tokio::test]
async fn controller_talks_tls_to_the_api_server_and_names_a_missing_crd() {
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("https://{}", listener.local_addr().unwrap());
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(serve_https(
        listener,
        TlsAcceptor::from(Arc::new(pki.server)),
        seen_tx,
    ));
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("kubeconfig");
    std::fs::write(&config, kubeconfig(&server, &pki.ca_pem)).unwrap();

    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_stackwarden"));
    command
        .args(["controller", "--metrics-addr", "off"])
        .env("KUBECONFIG", &config)
        // Nothing of this machine's own Kubernetes setup may stand in for the test's.
        .env("HOME", home.path())
        .env("RUST_LOG", "info")
        .kill_on_drop(true);
    for var in [
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        command.env_remove(var);
    }
    // A bound only so that a hung operator fails the test instead of hanging it; the operator
    // is expected to exit on its own right after the 404.
    let out = tokio::time::timeout(Duration::from_secs(600), command.output())
        .await
        .expect("the controller neither failed nor exited")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);

    assert!(
        !stderr.contains("panicked"),
        "the operator panicked:\n{stderr}"
    );
    let first = seen.try_recv().unwrap_or_else(|_| {
        panic!("no connection reached the API server; operator's stderr:\n{stderr}")
    });
    match first {
        Seen::Request {
            method,
            path,
            authorization,
        } => {
            assert_eq!(method, "GET");
            assert_eq!(path, "/apis/stackwarden.dev/v1alpha1/servicestacks");
            assert_eq!(authorization.as_deref(), Some(&*format!("Bearer {TOKEN}")));
        }
        Seen::HandshakeFailed(e) => panic!("TLS handshake failed: {e}; stderr:\n{stderr}"),
    }
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains("is the CRD installed?"),
        "the error does not say what is missing:\n{stderr}"
    );
    assert!(!stderr.contains(TOKEN), "the token leaked:\n{stderr}");
}
