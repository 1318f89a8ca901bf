//! Serving a router over TCP with limits, for the agent and the aggregator:
//! a client gets `header_read_timeout` to send a request's headers (an idle
//! keep-alive connection waiting for its next request too), at most
//! `max_connections` connections are open at once (a new one beyond that is
//! closed at once), and at most `max_in_flight` requests are handled (their
//! bodies buffered) at once; the rest wait their turn.

use std::{future::Future, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};

/// What a server allows its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a request's headers, and the longest an idle
    /// keep-alive connection is kept.
    pub header_read_timeout: Duration,
    /// Open connections at once.
    pub max_connections: usize,
    /// Requests handled at once.
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Ten seconds: a slow or silent client holds a socket no longer.
            header_read_timeout: Duration::from_secs(10),
            // Far above a fleet's aggregators and operators, far below the
            // fd limit the agent raises itself to.
            max_connections: 512,
            // 64 bodies of at most 2 MiB: at most 128 MiB buffered.
            max_in_flight: 64,
        }
    }
}

/// The longest request target (path and query) answered; a longer one gets
/// 414 with a JSON body.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header fields, and the largest header block, answered; beyond
/// either, 431 with a JSON body.
pub const MAX_HEADERS: usize = 100;
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Answers requests over the size limits with a JSON error, like every
/// other error of the API. hyper's own, larger limits (twice the fields,
/// URIs of 64 KiB, a read buffer of 400 KiB) remain for what is not worth
/// parsing: there, and for bytes that are not HTTP at all, hyper answers
/// with a bare status, there being no request to answer.
async fn size_limits(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::{http::StatusCode, response::IntoResponse};
    let uri = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri > MAX_URI_BYTES {
        let e = format!("the request target is {uri} bytes; at most {MAX_URI_BYTES} are accepted");
        return crate::error::ApiError::new(StatusCode::URI_TOO_LONG, e).into_response();
    }
    let headers = req.headers();
    let bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        let e = format!(
            "{} header fields in {bytes} bytes; at most {MAX_HEADERS} fields and {MAX_HEADER_BYTES} bytes are accepted",
            headers.len()
        );
        return crate::error::ApiError::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, e).into_response();
    }
    next.run(req).await
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open
/// requests finish (at most 5 s).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    tls: Option<crate::tls::ServerTls>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tls.as_ref().map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
    let app = match tls.as_ref().filter(|t| t.mutating_needs_cert) {
        Some(t) => {
            app.layer(axum::middleware::from_fn_with_state(t.client_ca_setting, crate::tls::require_client_cert))
        }
        None => app,
    };
    let app = app
        .layer(tower::limit::ConcurrencyLimitLayer::new(limits.max_in_flight.max(1)))
        .layer(axum::middleware::from_fn(size_limits));
    // HTTP/1.1 only: its header timeout runs from the first byte awaited
    // (an HTTP/2-detecting server waits for a preface with no timeout).
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).max_headers(2 * MAX_HEADERS);
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut refused: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(max = limits.max_connections, refused, "too many connections: closing new ones");
            }
            drop(stream);
            continue;
        };
        let (app, builder, watcher, acceptor) = (app.clone(), builder.clone(), graceful.watcher(), acceptor.clone());
        let handshake = limits.header_read_timeout;
        tokio::spawn(async move {
            match acceptor {
                None => {
                    let service = TowerToHyperService::new(app);
                    let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await;
                }
                Some(a) => {
                    if let Some(tls) = crate::tls::accept(&a, stream, handshake).await {
                        // What the handshake verified, for the requests.
                        let certified = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                        let app = app.layer(axum::Extension(crate::tls::ClientCertified(certified)));
                        let service = TowerToHyperService::new(app);
                        let _ = watcher.watch(builder.serve_connection(TokioIo::new(tls), service)).await;
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    Ok(())
}

/// Whether an `Authorization` header value carries `token` as a bearer
/// credential: the scheme is case-insensitive (RFC 9110), the token is
/// compared in constant time (no timing hint about a prefix). Both servers
/// use this one check.
pub fn bearer_matches(header: Option<&str>, token: &str) -> bool {
    let Some((scheme, given)) = header.and_then(|h| h.trim().split_once(' ')) else { return false };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let (a, b) = (given.trim_start().as_bytes(), token.as_bytes());
    // Length is not secret (tokens are a configured size); the bytes are.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token a server requires of requests that change something,
/// and the setting it comes from (named in the 401's message).
#[derive(Debug, Clone)]
pub struct Bearer {
    token: Option<Arc<str>>,
    setting: &'static str,
}

impl Bearer {
    /// `None` or an empty token: every request is let through.
    pub fn new(token: Option<&str>, setting: &'static str) -> Self {
        Self { token: token.filter(|t| !t.is_empty()).map(Arc::from), setting }
    }
}

/// The one auth middleware of both servers (install it with
/// `route_layer`, so an unknown path or method is 404/405 before any 401):
/// reads (`GET`, `HEAD`, `OPTIONS`) pass; anything else needs
/// `Authorization: Bearer <token>` when a token is set.
pub async fn require_bearer(
    axum::extract::State(b): axum::extract::State<Bearer>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::{
        http::{Method, StatusCode, header},
        response::IntoResponse,
    };
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let Some(token) = b.token.as_deref()
        && !read_only
    {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if !bearer_matches(given, token) {
            let e = format!("missing or wrong token: this request needs Authorization: Bearer <{}>", b.setting);
            return crate::error::ApiError::new(StatusCode::UNAUTHORIZED, e).into_response();
        }
    }
    next.run(req).await
}

/// Why `token` cannot be a bearer token, if it cannot: it must be sent in an
/// `Authorization` header, so it is 1 to 4096 visible ASCII characters (no
/// space, no control character, nothing outside ASCII).
pub fn token_problem(token: &str) -> Option<&'static str> {
    if token.is_empty() {
        Some("must not be empty")
    } else if token.len() > 4096 {
        Some("must be at most 4096 characters")
    } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
        Some("must be visible ASCII characters only (no spaces, control characters or non-ASCII)")
    } else {
        None
    }
}

#[cfg(test)]
mod bearer_tests {
    use super::{bearer_matches, token_problem};

    #[test]
    fn a_token_must_fit_in_a_header() {
        assert_eq!(token_problem("s3cret-~+/="), None);
        assert!(token_problem("").is_some());
        assert!(token_problem("a b").is_some());
        assert!(token_problem("a\nb").is_some());
        assert!(token_problem("caf\u{e9}").is_some());
        assert!(token_problem(&"x".repeat(4097)).is_some());
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_exact() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(bearer_matches(Some("bearer s3cret"), "s3cret"));
        assert!(bearer_matches(Some("BEARER  s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cretX"), "s3cret"));
        assert!(!bearer_matches(Some("Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("s3cret"), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
    }
}
