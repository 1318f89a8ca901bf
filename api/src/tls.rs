//! TLS for both servers (rustls with ring; no OpenSSL): the server
//! configuration from PEM files, the check that refuses plain HTTP off
//! loopback unless the operator says `insecure = true`, and the handshake
//! of one connection (a client speaking plain HTTP to a TLS port gets a
//! clear answer, not a hang).

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A server's TLS configuration, ready to accept connections, and whether
/// requests that change something need a client certificate (one signed
/// by the client CA; with `all`, the handshake itself needs one).
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub mutating_needs_cert: bool,
    /// The setting named in the refusal (`agent.tls_client_ca`).
    pub client_ca_setting: &'static str,
}

/// Which requests need a client certificate when a client CA is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Those that change something (reads stay open to any TLS client).
    #[default]
    Mutating,
    /// Every connection (the handshake fails without one).
    All,
}

/// The provider both servers and their clients use.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (a chain: the server's first).
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// A TLS server configuration from a certificate chain and its key (PEM),
/// HTTP/1.1 only; with `client_ca`, clients are verified against it
/// (`auth` says for which requests a certificate is needed).
pub fn server_config(
    cert: &Path,
    key_path: &Path,
    client_ca: Option<&Path>,
    auth: ClientAuth,
    client_ca_setting: &'static str,
) -> Result<ServerTls, String> {
    let chain = certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let v = if auth == ClientAuth::All { v } else { v.allow_unauthenticated() };
            builder.with_client_cert_verifier(v.build().map_err(|e| format!("{}: {e}", ca.display()))?)
        }
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("{} with {}: {e}", cert.display(), key_path.display()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(cfg),
        mutating_needs_cert: client_ca.is_some() && auth == ClientAuth::Mutating,
        client_ca_setting,
    })
}

/// Whether the connection a request came on presented a client
/// certificate the server verified (set per connection by `serve`).
#[derive(Debug, Clone, Copy)]
pub struct ClientCertified(pub bool);

/// Refuses requests that change something without a verified client
/// certificate (when the server asks for them).
pub async fn require_client_cert(
    axum::extract::State(setting): axum::extract::State<&'static str>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::{
        http::{Method, StatusCode},
        response::IntoResponse,
    };
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let certified = req.extensions().get::<ClientCertified>().is_some_and(|c| c.0);
    if !read_only && !certified {
        let e = format!("this request needs a client certificate signed by the CA in {setting}");
        return crate::error::ApiError::new(StatusCode::UNAUTHORIZED, e).into_response();
    }
    next.run(req).await
}

/// A client configuration that trusts the CA certificates in `ca` (PEM),
/// and nothing else (no system roots: a fleet's own CA signs its hosts),
/// presenting `identity` (a certificate chain and its key) when given.
/// Without a CA file, no `https://` server is trusted.
pub fn client_config(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        for cert in certs(ca)? {
            roots.add(cert).map_err(|e| format!("{}: {e}", ca.display()))?;
        }
    }
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match identity {
        None => Ok(b.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certs(cert)?;
            let k = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            b.with_client_auth_cert(chain, k).map_err(|e| format!("{} with {}: {e}", cert.display(), key.display()))
        }
    }
}

/// A server's TLS settings (the same fields in `[agent]` and
/// `[aggregator]`).
pub struct Settings<'a> {
    /// `agent` or `aggregator`: the config section, named in messages.
    pub section: &'static str,
    pub listen: SocketAddr,
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
    pub client_ca: Option<&'a Path>,
    pub client_auth: ClientAuth,
    pub insecure: bool,
}

impl Settings<'_> {
    /// The first setting that is wrong, and why: (field, reason).
    pub fn check(&self) -> Result<(), (String, String)> {
        let s = self.section;
        if self.client_ca.is_some() && self.cert.is_none() {
            return Err((format!("{s}.tls_client_ca"), format!("needs {s}.tls_cert and {s}.tls_key")));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err((format!("{s}.tls_key"), format!("{s}.tls_cert and {s}.tls_key go together")));
        }
        match exposure_problem(self.listen, self.cert.is_some(), self.insecure, s) {
            Some(why) => Err((format!("{s}.insecure"), why)),
            None => Ok(()),
        }
    }

    /// The server's TLS configuration, if it has a certificate.
    pub fn load(&self) -> Result<Option<ServerTls>, String> {
        let setting = if self.section == "agent" { "agent.tls_client_ca" } else { "aggregator.tls_client_ca" };
        match (self.cert, self.key) {
            (Some(c), Some(k)) => server_config(c, k, self.client_ca, self.client_auth, setting)
                .map(Some)
                .map_err(|e| format!("{}.tls_cert/tls_key/tls_client_ca: {e}", self.section)),
            _ => Ok(None),
        }
    }
}

/// Why a server listening on `listen` must not start: off loopback with
/// no TLS, unless `insecure` (the setting names are in the message).
pub fn exposure_problem(listen: SocketAddr, tls: bool, insecure: bool, section: &str) -> Option<String> {
    (!listen.ip().is_loopback() && !tls && !insecure).then(|| {
        format!(
            "{section}.listen ({listen}) is off loopback without TLS (the token would cross the network in clear): \
             set {section}.tls_cert and {section}.tls_key, or {section}.insecure = true to serve plain HTTP anyway"
        )
    })
}

/// The answer to plain HTTP on a TLS port.
const PLAIN_ON_TLS: &str =
    r#"{"error":"this port speaks HTTPS (TLS): use https:// (and the CA that signed its certificate)"}"#;

/// Takes a connection through the TLS handshake (within `timeout`). A
/// client that sends plain HTTP gets a 400 saying to use `https://`.
pub async fn accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    mut stream: TcpStream,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    // A TLS record starts with 0x16 (handshake); anything else is not TLS.
    if first[0] != 0x16 {
        // Read the request's head first (a client still writing it would
        // otherwise see its connection reset instead of the answer).
        let mut request = Vec::with_capacity(1024);
        let mut buf = [0u8; 4096];
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        while request.len() < 16 * 1024 && !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => request.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        let reply = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_ON_TLS}",
            PLAIN_ON_TLS.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
        // Drain what else comes (a body) for a moment, so the close is not
        // a reset that could discard the answer.
        let until = tokio::time::Instant::now() + Duration::from_millis(200);
        while let Ok(Ok(n)) = tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            if n == 0 {
                break;
            }
        }
        return None;
    }
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!("TLS handshake: {e}");
            None
        }
        Err(_) => None,
    }
}
