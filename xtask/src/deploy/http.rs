//! Just enough HTTP/1.1 to ask `/healthz` and register an agent, over a
//! TCP connection or through `ssh -W` (so an agent that listens on the
//! host's loopback can be checked without curl on the host), in clear or
//! over TLS (`[tls]`: the fleet CA trusted, the operator's certificate
//! shown).

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs as _},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::ssh::Ssh;

/// Where an HTTP server is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub via: Via,
    /// HTTPS (the server's certificate checked against the fleet CA).
    pub tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Straight from this machine to `host:port`.
    Direct { host: String, port: u16 },
    /// Through SSH to the host, then to `target` (`127.0.0.1:8470`) there.
    Tunnel { ssh: Box<Ssh>, target: String },
}

impl Endpoint {
    pub fn direct(host: impl Into<String>, port: u16, tls: bool) -> Self {
        Self { via: Via::Direct { host: host.into(), port }, tls }
    }

    /// `http(s)://host:port/path`, and for a tunnel which host it is on.
    pub fn show(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        match &self.via {
            Via::Direct { host, port } if host.contains(':') => format!("{scheme}://[{host}]:{port}{path}"),
            Via::Direct { host, port } => format!("{scheme}://{host}:{port}{path}"),
            Via::Tunnel { ssh, target } => {
                format!("{scheme}://{target}{path} on {} (through ssh -W)", ssh.address)
            }
        }
    }

    /// The name the server's certificate must hold.
    fn server_name(&self) -> anyhow::Result<rustls::pki_types::ServerName<'static>> {
        let host = match &self.via {
            Via::Direct { host, .. } => host.clone(),
            Via::Tunnel { target, .. } => {
                target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h).trim_matches(['[', ']']).to_owned()
            }
        };
        rustls::pki_types::ServerName::try_from(host.clone()).with_context(|| format!("{host:?} as a TLS server name"))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.show(""))
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// One request with `Connection: close`; over TLS with `tls` (required
/// for an `https` endpoint).
pub fn request(
    ep: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
    timeout: Duration,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> anyhow::Result<Response> {
    let host_header = match &ep.via {
        Via::Direct { host, port } if host.contains(':') => format!("[{host}]:{port}"),
        Via::Direct { host, port } => format!("{host}:{port}"),
        Via::Tunnel { target, .. } => target.clone(),
    };
    let req = encode(method, path, &host_header, body, token);
    let tls = match (ep.tls, tls) {
        (false, _) => None,
        (true, Some(c)) => Some(rustls::ClientConnection::new(c.clone(), ep.server_name()?)?),
        (true, None) => bail!("{} needs TLS settings (the hosts file's [tls])", ep.show("")),
    };
    let raw = match &ep.via {
        Via::Direct { host, port } => {
            let addr = (host.as_str(), *port)
                .to_socket_addrs()
                .with_context(|| format!("resolving {host}"))?
                .next()
                .with_context(|| format!("{host} has no address"))?;
            let s = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connecting to {addr}"))?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            exchange(s, tls, &req).with_context(|| format!("talking to {}", ep.show("")))?
        }
        Via::Tunnel { ssh, target } => ssh.tunnel(target, timeout, move |s| exchange(s, tls, &req))?,
    };
    parse(&raw)
}

/// Writes `req` and reads the whole answer, through TLS when given.
pub fn exchange(s: impl Read + Write, tls: Option<rustls::ClientConnection>, req: &[u8]) -> anyhow::Result<Vec<u8>> {
    fn go(mut s: impl Read + Write, req: &[u8]) -> anyhow::Result<Vec<u8>> {
        s.write_all(req)?;
        s.flush()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => return Ok(buf),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // A server that closes without TLS's close_notify after a
                // whole answer (`Connection: close`) is no error here.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => return Ok(buf),
                Err(e) => return Err(e.into()),
            }
        }
    }
    match tls {
        Some(c) => go(rustls::StreamOwned::new(c, s), req),
        None => go(s, req),
    }
}

/// Polls `/healthz` until it says ok (and names `expect_host`).
pub fn wait_healthy(
    ep: &Endpoint,
    expect_host: Option<&str>,
    timeout: Duration,
    crashed: impl Fn() -> bool,
    client: &Option<Arc<rustls::ClientConfig>>,
) -> anyhow::Result<String> {
    let end = Instant::now() + timeout;
    let mut next_crash_check = Instant::now() + Duration::from_secs(1);
    let mut last: String;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match request(
            ep,
            "GET",
            "/healthz",
            None,
            None,
            left.clamp(Duration::from_secs(1), Duration::from_secs(5)),
            client.as_ref(),
        ) {
            Ok(r) if r.status == 200 => {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                let host = v["host"].as_str().unwrap_or_default();
                if v["status"] != "ok" {
                    last = format!("status {}", v["status"]);
                } else if expect_host.is_some_and(|h| h != host) {
                    last = format!("answered as host {host:?}, not {:?}", expect_host.unwrap_or_default());
                } else {
                    let host = if host.is_empty() { String::new() } else { format!("host {host}, ") };
                    return Ok(format!("ok ({host}version {})", v["version"].as_str().unwrap_or("?")));
                }
            }
            Ok(r) => last = format!("HTTP {}: {}", r.status, r.body.trim()),
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= end {
            bail!("{} did not answer ok within {} s (last: {last})", ep.show("/healthz"), timeout.as_secs());
        }
        if Instant::now() >= next_crash_check {
            if crashed() {
                bail!("it exited after it was started (last answer from {}: {last})", ep.show("/healthz"));
            }
            next_crash_check = Instant::now() + Duration::from_secs(2);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn encode(method: &str, path: &str, host: &str, body: Option<&str>, token: Option<&str>) -> Vec<u8> {
    let mut r =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: scaler-xtask\r\n");
    if let Some(t) = token {
        r.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        r.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len()));
    } else {
        r.push_str("\r\n");
    }
    r.into_bytes()
}

/// Status and body of a complete response (`Content-Length`, chunked, or
/// up to the end of the connection).
fn parse(raw: &[u8]) -> anyhow::Result<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("not an HTTP response (no header end)")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = &raw[split + 4..];
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP status line: {status_line:?}"))?;
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { continue };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k == "content-length" {
            let n: usize = v.parse().with_context(|| format!("bad Content-Length {v:?}"))?;
            body = body.get(..n).context("response shorter than its Content-Length")?;
        }
    }
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Ok(Response { status, body: String::from_utf8_lossy(&body).into_owned() })
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").context("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn encodes_body_and_token() {
        let r = String::from_utf8(encode("PUT", "/v1/hosts/n1", "a:1", Some("{}"), Some("t0k"))).unwrap();
        assert!(r.starts_with("PUT /v1/hosts/n1 HTTP/1.1\r\nHost: a:1\r\n"));
        assert!(r.contains("Authorization: Bearer t0k\r\n"));
        assert!(r.ends_with("Content-Length: 2\r\n\r\n{}"));
    }

    #[test]
    fn parses_length_chunked_and_eof_bodies() {
        let r = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nokayEXTRA").unwrap();
        assert_eq!(r, Response { status: 200, body: "okay".into() });
        let r = parse(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(r, Response { status: 404, body: "abcde".into() });
        let r = parse(b"HTTP/1.0 500 X\r\n\r\nall of it").unwrap();
        assert_eq!(r.body, "all of it");
        assert!(parse(b"garbage").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort").is_err());
    }

    #[test]
    fn talks_to_a_real_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap();
            req
        });
        let ep = Endpoint::direct("127.0.0.1", port, false);
        let r = request(&ep, "GET", "/healthz", None, None, Duration::from_secs(5), None).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "hi"));
        assert!(t.join().unwrap().starts_with("GET /healthz HTTP/1.1\r\n"));
    }
}
