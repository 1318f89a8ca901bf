//! Simulated agents: each a real HTTP server on its own loopback port,
//! answering `/v1/stats`, `/v1/host`, `/v1/containers`, `/v1/events` and
//! `/v1/round` (all four in one)
//! with the agent's full JSON shapes (50 containers are about 45 KiB of
//! stats) and values that change every second. For the aggregator's bench
//! and for end-to-end tests of many hosts. A thread per port and per
//! connection; they live as long as the process.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    net::{TcpListener, TcpStream},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `/v1/stats` of host `h`: `n` containers with the agent's fields (with
/// `brief`, those of `?fields=brief`).
pub fn stats(h: u64, n: u64, brief: bool) -> String {
    let now = now_ms();
    let mut s = String::with_capacity(n as usize * 1000);
    let _ = write!(s, "{{\"host\":\"sim{h}\",\"time_ms\":{now},\"tick_ms\":200,\"containers\":[");
    for c in 0..n {
        let rate = 50 + (h * 7 + c * 13) % 900;
        let wobble = (now / 1000 + c) % 7 * 10;
        let (cpu, lim, mem, dr, usec) = (rate + wobble, rate * 2, (100 + c) << 20, wobble * 100, rate * now);
        let _ = write!(
            s,
            "{}{{\"name\":\"c{c}\",\"cgroup\":\"/lxc.payload.c{c}\",\"kind\":\"lxc\",\"time_ms\":{now},\"interval_ms\":200,\
             \"resources\":{{\"cpu\":{{\"usage\":{cpu},\"current\":{lim}}},\"mem\":{{\"usage\":{mem},\"current\":1073741824}},\
             \"disk_read\":{{\"usage\":{dr},\"current\":null}},\"disk_write\":{{\"usage\":4096,\"current\":null}},\
             \"net_rx\":{{\"usage\":{dr},\"current\":null}},\"net_tx\":{{\"usage\":1200,\"current\":null}}}},",
            if c == 0 { "" } else { "," },
        );
        if brief {
            let _ = write!(s, "\"signals\":{{\"cpu_throttled_usec\":0}},\"totals\":{{\"cpu_usec\":{usec}}}}}");
            continue;
        }
        let _ = write!(
            s,
            "\"signals\":{{\"cpu_cgroupfs\":{cpu},\"cpu_throttled_usec\":0,\"cpu_nr_throttled\":0,\"mem_charged\":{mem},\
             \"mem_reclaims\":0,\"oom_kills\":0,\"mem_stall_usec\":0,\"cpu_stall_usec\":12,\"io_stall_usec\":0,\
             \"disk_read_ebpf\":{dr},\"disk_write_ebpf\":4096,\"disk_read_cgroupfs\":null,\"disk_write_cgroupfs\":null}},\
             \"totals\":{{\"cpu_usec\":{usec},\"cpu_cgroupfs_usec\":{usec},\"net_rx_bytes\":{now},\"net_tx_bytes\":{now},\
             \"disk_read_bytes\":{now},\"disk_write_bytes\":{now},\"disk_read_ebpf_bytes\":{now},\"disk_write_ebpf_bytes\":{now},\
             \"disk_read_cgroupfs_bytes\":0,\"disk_write_cgroupfs_bytes\":0}}}}",
        );
    }
    s.push_str("]}");
    s
}

/// The subscriptions' list (`/v1/containers`' `containers`).
fn subscriptions(n: u64) -> String {
    let list: Vec<Value> = (0..n)
        .map(|c| {
            json!({"name": format!("c{c}"), "cgroup": format!("/lxc.payload.c{c}"), "policy": "fast", "priority": 0,
                   "status": "active", "resources": {"cpu": {"min": 100, "max": 4000, "current": 1000, "usage": 500,
                   "guard": true, "boundary": 25, "boundary_type": "percent_of_max", "upper": 0, "lower": 0}},
                   "ceiling": {}, "original": {"cpu": null, "mem": null}})
        })
        .collect();
    Value::Array(list).to_string()
}

/// What a simulated host answers that does not change: `/v1/host` and
/// `/v1/containers` (built once, so the fleet spends its CPU on stats).
pub struct Fixed {
    host: String,
    /// The subscriptions' list.
    subscriptions: Arc<String>,
    /// The events' list: one limit change, made when the host started.
    events: String,
}

pub fn respond(path: &str, h: u64, n: u64, fixed: &Fixed) -> (u16, String) {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    match path {
        "/v1/stats" => (200, stats(h, n, query.split('&').any(|kv| kv == "fields=brief"))),
        "/v1/host" => (200, fixed.host.clone()),
        "/v1/containers" => (200, format!("{{\"containers\":{}}}", fixed.subscriptions)),
        "/v1/events" => (200, format!("{{\"events\":{}}}", fixed.events)),
        "/v1/round" => {
            let (host, events) = (&fixed.host, &fixed.events);
            let mut body = format!("{{\"stats\":{},\"host\":{host},\"events\":{events}", stats(h, n, true));
            if query.split('&').any(|kv| kv == "containers=true") {
                let _ = write!(body, ",\"containers\":{}", fixed.subscriptions);
            }
            body.push('}');
            (200, body)
        }
        _ => (404, "{\"error\":\"no such endpoint\"}".to_owned()),
    }
}

/// Serves one keep-alive connection of simulated host `h` (plain TCP or
/// a TLS stream).
pub fn serve<S: std::io::Read + std::io::Write>(conn: S, h: u64, n: u64, fixed: &Fixed) {
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        loop {
            let mut hdr = String::new();
            if r.read_line(&mut hdr).unwrap_or(0) == 0 {
                return;
            }
            if hdr == "\r\n" || hdr == "\n" {
                break;
            }
        }
        let (status, body) = respond(&path, h, n, fixed);
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            if status == 200 { "OK" } else { "Not Found" },
            body.len()
        );
        let out = r.get_mut();
        if out
            .write_all(head.as_bytes())
            .and_then(|()| out.write_all(body.as_bytes()))
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

impl Fixed {
    /// What simulated host `h` with `n` containers answers that does not
    /// change (`subscriptions` shared by all hosts of one size).
    pub fn new(h: u64, n: u64, subscriptions: Arc<String>) -> Self {
        let host = json!({"host": format!("sim{h}"), "capacity": {"cpu": 16000, "mem": 68719476736u64},
               "allocated": {"cpu": n * 1000}, "usage": {"cpu": 9000 + h % 5000}, "rapl_mw": null,
               "power_model": {"idle_mw": 60000, "max_mw": 220000}});
        let events = json!([{"id": 1, "time_ms": now_ms(), "container": "c0", "resource": "cpu",
                             "old": 1000, "new": 1200, "reason": format!("simulated on sim{h}")}]);
        Self { host: host.to_string(), subscriptions, events: events.to_string() }
    }
}

/// Starts `hosts` simulated agents of `n` containers, each on a free
/// loopback port, with `accept` serving each connection (plain: `serve`;
/// the bench wraps it in TLS). Returns the ports.
pub fn start<A>(hosts: u64, n: u64, accept: A) -> std::io::Result<Vec<u16>>
where
    A: Fn(TcpStream, u64, Arc<Fixed>) + Clone + Send + 'static,
{
    let mut ports = Vec::new();
    let subs = Arc::new(subscriptions(n));
    for h in 0..hosts {
        let l = TcpListener::bind("127.0.0.1:0")?;
        ports.push(l.local_addr()?.port());
        let fixed = Arc::new(Fixed::new(h, n, subs.clone()));
        let accept = accept.clone();
        std::thread::Builder::new().stack_size(128 << 10).spawn(move || {
            for conn in l.incoming().flatten() {
                let (fixed, accept) = (fixed.clone(), accept.clone());
                let _ = std::thread::Builder::new().stack_size(256 << 10).spawn(move || accept(conn, h, fixed));
            }
        })?;
    }
    Ok(ports)
}

/// [`start`] over plain HTTP.
pub fn start_plain(hosts: u64, n: u64) -> std::io::Result<Vec<u16>> {
    start(hosts, n, move |conn, h, fixed| serve(conn, h, n, &fixed))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_brief_form_has_the_same_containers_and_fewer_bytes() {
        let (full, brief) = (stats(3, 50, false), stats(3, 50, true));
        let (f, b): (Value, Value) = (serde_json::from_str(&full).unwrap(), serde_json::from_str(&brief).unwrap());
        for (fc, bc) in f["containers"].as_array().unwrap().iter().zip(b["containers"].as_array().unwrap()) {
            // (Values move with the clock between the two calls.)
            assert_eq!(fc["name"], bc["name"]);
            let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            assert_eq!(
                (keys(&bc["signals"]), keys(&bc["totals"])),
                (vec!["cpu_throttled_usec".into()], vec!["cpu_usec".into()])
            );
        }
        assert_eq!(b["containers"].as_array().unwrap().len(), 50);
        println!("full {} B, brief {} B", full.len(), brief.len());
        assert!(brief.len() * 2 < full.len());
    }

    #[test]
    fn the_round_holds_what_each_endpoint_answers() {
        let fixed = Fixed::new(3, 4, Arc::new(subscriptions(4)));
        let body = |path: &str| -> Value { serde_json::from_str(&respond(path, 3, 4, &fixed).1).unwrap() };
        let (round, with) = (body("/v1/round?limit=100"), body("/v1/round?since_ms=0&containers=true"));
        assert_eq!(round["host"], body("/v1/host"));
        assert_eq!(round["events"], body("/v1/events")["events"]);
        assert_eq!(round.get("containers"), None);
        assert_eq!(with["containers"], body("/v1/containers")["containers"]);
        let names =
            |v: &Value| v["containers"].as_array().unwrap().iter().map(|c| c["name"].clone()).collect::<Vec<_>>();
        assert_eq!(names(&round["stats"]), names(&body("/v1/stats?fields=brief")));
        assert_eq!(names(&round["stats"]).len(), 4);
    }
}
