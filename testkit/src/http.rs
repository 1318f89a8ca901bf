//! One HTTP/1.1 request on a fresh connection, with no client library: what
//! the benches and the harness need to talk to an agent.

use std::{io, net::TcpStream, time::Duration};

/// Sends `method path` (with a JSON `body`) to `addr` (`host:port`) and
/// returns the status and the body.
pub fn request(addr: &str, method: &str, path: &str, body: Option<&str>) -> io::Result<(u16, String)> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    exchange(s, addr, method, path, body)
}

/// [`request`] over a Unix socket (a container engine's API).
pub fn unix_request(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> io::Result<(u16, String)> {
    let s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    exchange(s, "engine", method, path, body)
}

fn exchange(
    mut s: impl io::Read + io::Write,
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> io::Result<(u16, String)> {
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").ok_or_else(|| crate::error("malformed HTTP response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| crate::error("HTTP response without a status"))?;
    Ok((status, body.to_owned()))
}

/// The body of a 2xx answer; any other status is an error naming it.
pub fn ok(addr: &str, method: &str, path: &str, body: Option<&str>) -> io::Result<String> {
    let (status, body) = request(addr, method, path, body)?;
    if !(200..300).contains(&status) {
        return Err(crate::error(format!("{method} {path}: {status}: {body}")));
    }
    Ok(body)
}
