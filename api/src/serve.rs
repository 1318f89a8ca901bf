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

/// Serves `app` on `listener` until `shutdown` completes, then lets open
/// requests finish (at most 5 s).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = app.layer(tower::limit::ConcurrencyLimitLayer::new(limits.max_in_flight.max(1)));
    // HTTP/1.1 only: its header timeout runs from the first byte awaited
    // (an HTTP/2-detecting server waits for a preface with no timeout).
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
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
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = conn.await;
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

#[cfg(test)]
mod bearer_tests {
    use super::bearer_matches;

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
