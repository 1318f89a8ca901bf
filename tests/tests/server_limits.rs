//! The API server's limits over a real socket: a client that never sends
//! its headers is cut off, a flood of connections beyond the cap is closed
//! at once, and the agent answers again as soon as they are gone.
#![allow(clippy::unwrap_used)]

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use tests::{Agent, require_root, wait_for};

fn addr(agent: &Agent) -> String {
    agent.url().trim_start_matches("http://").to_owned()
}

/// Seconds until the server closes `s` (EOF or reset), at most `within`.
fn closed_after(s: &mut TcpStream, within: Duration) -> Option<f64> {
    let t0 = Instant::now();
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) | Err(_) if t0.elapsed() < within => Some(t0.elapsed().as_secs_f64()),
        _ => None,
    }
}

#[test]
fn silent_and_slow_clients_are_cut_off_and_connections_are_capped() {
    require_root();
    let agent = Agent::start("[agent]\nhttp_header_timeout_ms = 800\nhttp_max_connections = 20\n");
    // A slow client: half a request line, then nothing.
    let mut slow = TcpStream::connect(addr(&agent)).unwrap();
    slow.write_all(b"GET /healthz HT").unwrap();
    let t = closed_after(&mut slow, Duration::from_secs(5));
    assert!(t.is_some_and(|t| (0.5..3.0).contains(&t)), "slow header not cut off in time: {t:?}");

    // Twenty silent connections take every slot; the next is closed at once.
    let mut silent: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr(&agent)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(addr(&agent)).unwrap();
    let t = closed_after(&mut extra, Duration::from_millis(700));
    assert!(t.is_some(), "a connection beyond the cap was kept open");
    // The silent ones are cut off by the header timeout, and the agent
    // answers again.
    for s in &mut silent {
        assert!(closed_after(s, Duration::from_secs(5)).is_some(), "a silent connection was kept open");
    }
    let back = wait_for(Duration::from_secs(5), || agent.get("/healthz").0.eq(&200).then_some(()));
    assert!(back.is_some(), "the agent did not answer after the flood");
}

/// Sends `request` raw and returns the status line and the body.
fn raw(agent: &Agent, request: &[u8]) -> (String, String) {
    let mut s = TcpStream::connect(addr(agent)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.lines().next().unwrap_or("").to_owned();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

#[test]
fn oversized_targets_and_headers_get_a_json_error() {
    require_root();
    let agent = Agent::start("[agent]\n");
    let long = format!("GET /v1/stats?x={} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "a".repeat(10_000));
    let (status, body) = raw(&agent, long.as_bytes());
    assert!(status.contains(" 414 "), "{status}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert!(v["error"].as_str().unwrap().contains("8192"), "{v}");

    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /healthz HTTP/1.1\r\nHost: a\r\n{many}Connection: close\r\n\r\n");
    let (status, body) = raw(&agent, req.as_bytes());
    assert!(status.contains(" 431 "), "{status}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok(), "{body:?}");

    let big = format!("GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "b".repeat(40_000));
    let (status, body) = raw(&agent, big.as_bytes());
    assert!(status.contains(" 431 "), "{status}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok(), "{body:?}");
    assert_eq!(agent.get("/healthz").0, 200);
}
