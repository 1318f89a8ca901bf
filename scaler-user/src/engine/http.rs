//! A small blocking HTTP/1.1 client over a Unix socket: what the engines'
//! APIs (Docker, Podman, LXD) need, one request per connection, with a
//! deadline so a stuck engine never holds the agent.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

/// Why an engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{socket}: {error}")]
    Io { socket: String, error: std::io::Error },
    #[error("{socket}: malformed response: {what}")]
    Malformed { socket: String, what: String },
    #[error("{method} {path}: HTTP {status}: {message}")]
    Status { method: String, path: String, status: u16, message: String },
}

/// The largest answer taken (a listing of thousands of containers is a
/// few MiB).
const MAX_BODY: usize = 64 << 20;

/// Connects without waiting: a Unix socket whose listener's queue is full
/// (an engine that stopped accepting) would otherwise block the connect
/// forever; it fails at once instead (`EAGAIN`).
fn connect(path: &Path) -> std::io::Result<UnixStream> {
    use std::os::{fd::FromRawFd, unix::ffi::OsStrExt};
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "socket path too long"));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, &b) in addr.sun_path.iter_mut().zip(bytes) {
        *d = b as libc::c_char;
    }
    // SAFETY: plain syscalls on a descriptor this function owns; it is
    // handed to UnixStream (which closes it) or closed here on error.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        if libc::connect(fd, (&raw const addr).cast(), len) != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        let stream = UnixStream::from_raw_fd(fd);
        stream.set_nonblocking(false)?;
        Ok(stream)
    }
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends one request (`body` as JSON when given) and reads the whole
/// response, within `timeout` for each read and write.
pub fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<Response, CallError> {
    let io = |error| CallError::Io { socket: socket.display().to_string(), error };
    let deadline = std::time::Instant::now() + timeout;
    let stream = connect(socket).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: engine\r\nConnection: close\r\n");
    if body.is_some() {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", payload.len()));
    }
    req.push_str("\r\n");
    req.push_str(&payload);
    (&stream).write_all(req.as_bytes()).map_err(io)?;
    let malformed = |what: &str| CallError::Malformed { socket: socket.display().to_string(), what: what.into() };
    let mut r = BufReader::new(&stream);
    let mut line = String::new();
    r.read_line(&mut line).map_err(io)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed(&format!("status line {line:?}")))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(io)? == 0 {
            return Err(malformed("headers cut short"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = Some(v.parse::<usize>().map_err(|_| malformed("content-length"))?);
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    let late = || std::time::Instant::now() > deadline;
    let too_big = |n: usize| n > MAX_BODY;
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).map_err(io)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| malformed("chunk size"))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            let end = start.checked_add(size).filter(|&n| !too_big(n)).ok_or_else(|| malformed("body too large"))?;
            body.resize(end, 0);
            r.read_exact(&mut body[start..]).map_err(io)?;
            line.clear();
            r.read_line(&mut line).map_err(io)?;
            if late() {
                return Err(malformed("no whole answer within the timeout"));
            }
        }
    } else if let Some(n) = length {
        if too_big(n) {
            return Err(malformed("body too large"));
        }
        body.resize(n, 0);
        r.read_exact(&mut body).map_err(io)?;
    } else {
        r.take(MAX_BODY as u64 + 1).read_to_end(&mut body).map_err(io)?;
        if too_big(body.len()) {
            return Err(malformed("body too large"));
        }
    }
    if late() {
        return Err(malformed("no whole answer within the timeout"));
    }
    Ok(Response { status, body })
}

/// [`call`], then a 2xx status or an error carrying the engine's message,
/// and the body parsed as JSON (`null` when empty).
pub fn json(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<serde_json::Value, CallError> {
    let resp = call(socket, method, path, body, timeout)?;
    let parsed: serde_json::Value = if resp.body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&resp.body).unwrap_or_default()
    };
    if !(200..300).contains(&resp.status) {
        // Docker and Podman say `message`, LXD says `error`.
        let message = ["message", "error", "cause"]
            .iter()
            .find_map(|k| parsed.get(k).and_then(|v| v.as_str()).filter(|s| !s.is_empty()))
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&resp.body).trim().chars().take(200).collect());
        return Err(CallError::Status { method: method.into(), path: path.into(), status: resp.status, message });
    }
    if parsed.is_null() && !resp.body.is_empty() {
        // Podman's update answers with the container's id as plain text.
        return Ok(serde_json::Value::String(String::from_utf8_lossy(&resp.body).trim().to_owned()));
    }
    Ok(parsed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// Serves one canned response on a real Unix socket and returns what
    /// the client sent.
    fn serve(response: &'static [u8]) -> (tempfile::TempDir, std::path::PathBuf, std::thread::JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("engine.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            s.write_all(response).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (dir, sock, t)
    }

    #[test]
    fn chunked_and_sized_bodies_are_read_and_errors_carry_the_engines_message() {
        let (_d, sock, t) =
            serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[{\"a\"\r\n4\r\n:1}]\r\n0\r\n\r\n");
        let v = json(&sock, "GET", "/containers/json", None, Duration::from_secs(2)).unwrap();
        assert_eq!(v, serde_json::json!([{"a": 1}]));
        assert!(t.join().unwrap().starts_with("GET /containers/json HTTP/1.1\r\n"));

        let (_d, sock, t) = serve(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 43\r\n\r\n{\"message\":\"Minimum memory limit is 6MB\"}  ",
        );
        let body = serde_json::json!({"Memory": 1});
        let e = json(&sock, "POST", "/containers/web/update", Some(&body), Duration::from_secs(2)).unwrap_err();
        assert_eq!(e.to_string(), "POST /containers/web/update: HTTP 400: Minimum memory limit is 6MB");
        let sent = t.join().unwrap();
        assert!(sent.contains("Content-Length: 12\r\n") && sent.ends_with("{\"Memory\":1}"), "{sent}");
    }

    #[test]
    fn an_answer_too_large_is_refused_before_it_is_read() {
        let (_d, sock, _t) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n[]");
        let e = call(&sock, "GET", "/", None, Duration::from_secs(2)).unwrap_err();
        assert!(e.to_string().ends_with("malformed response: body too large"), "{e}");
        let (_d, sock, _t) = serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n");
        let e = call(&sock, "GET", "/", None, Duration::from_secs(2)).unwrap_err();
        assert!(e.to_string().ends_with("body too large"), "{e}");
    }

    #[test]
    fn a_missing_socket_or_a_silent_engine_is_an_error_not_a_hang() {
        let e = call(Path::new("/nonexistent/engine.sock"), "GET", "/", None, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/engine.sock: "), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("silent.sock");
        let _listener = UnixListener::bind(&sock).unwrap();
        let t0 = std::time::Instant::now();
        assert!(call(&sock, "GET", "/", None, Duration::from_millis(200)).is_err());
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}
