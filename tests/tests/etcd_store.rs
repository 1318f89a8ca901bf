//! Issue 15, first part: the aggregator's records (hosts registered through
//! the API, users, applications with their caps and scaling) in a real
//! three-member etcd cluster on loopback, shared by two aggregator
//! replicas: a change through either is seen by the other; the etcd leader
//! killed, they carry on; with no quorum a change is refused with a 503
//! (and nothing changed), not lost silently; everything restarted, the records are
//! as they were.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::{aggregator::Aggregator, etcd::EtcdCluster, wait_for};

const FAST: &str = "[aggregator]\npoll_ms = 500\ntimeout_ms = 400\n[history]\nflush_ms = 1000\n";

/// What the records hold, as the API shows it.
fn records(agg: &Aggregator) -> Value {
    let apps = agg.get("/v1/apps").1;
    let app = |n: &str| {
        let v = agg.get(&format!("/v1/apps/{n}")).1;
        json!({"containers": v["containers"], "user": v["user"], "cap": v["energy_cap"]["watts"],
               "scaling": v["scaling"], "weights": v["weights"]})
    };
    let names: Vec<String> =
        apps["apps"].as_array().into_iter().flatten().filter_map(|a| a["name"].as_str().map(str::to_owned)).collect();
    let hosts: Vec<Value> = agg.get("/v1/hosts").1["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| json!([h["name"], h["url"]]))
        .collect();
    json!({
        "apps": names.iter().map(|n| (n.clone(), app(n))).collect::<serde_json::Map<_, _>>(),
        "users": agg.get("/v1/users").1["users"].as_array().map(|u| u.iter().map(|u| json!([u["name"], u["cpu_budget"], u["energy_budget_w"]])).collect::<Vec<_>>()),
        "hosts": hosts,
    })
}

fn ok(agg: &Aggregator, method: &str, path: &str, body: Value) {
    let (s, v) = agg.send(method, path, Some(&body));
    assert!(s == 200 || s == 201, "{method} {path}: {s} {v}\n{}", agg.log());
}

#[test]
fn records_in_etcd_are_shared_by_replicas_survive_its_leader_and_a_full_restart() {
    let mut etcd = EtcdCluster::start(3);
    let cfg = format!("{FAST}[store]\netcd = {}\nprefix = \"/scaler-test/\"\n", etcd.endpoints_toml());
    let (mut a, mut b) = (Aggregator::start(&cfg), Aggregator::start(&cfg));
    assert_eq!(a.get("/healthz").1["records"], "etcd /scaler-test/");

    // A burst of registrations through A (each put that follows A's own
    // is not read back in full), removed through B: both end up the same.
    let t = Instant::now();
    for i in 0..150 {
        ok(&a, "PUT", &format!("/v1/hosts/b{i}"), json!({"url": format!("http://127.0.0.1:{}", 10_000 + i)}));
    }
    println!("150 registrations through one replica: {:.2} s", t.elapsed().as_secs_f64());
    let listed = |agg: &Aggregator| agg.get("/v1/hosts").1["hosts"].as_array().map_or(0, Vec::len);
    assert_eq!(listed(&a), 150);
    let seen = wait_for(Duration::from_secs(10), || (listed(&b) == 150).then_some(()));
    assert!(seen.is_some(), "B saw {} of 150 hosts", listed(&b));
    for i in 0..150 {
        ok(&b, "DELETE", &format!("/v1/hosts/b{i}"), json!({}));
    }
    let gone = wait_for(Duration::from_secs(10), || (listed(&a) == 0).then_some(()));
    assert!(gone.is_some(), "A still lists {} hosts", listed(&a));

    // Keys outside the records moving etcd's revision between A's
    // registrations (as the replicas' ownership claims do) do not make A
    // read every record again at each.
    let reads = |agg: &Aggregator| agg.get("/healthz").1["records_full_reads"].as_u64().unwrap();
    let before = reads(&a);
    for i in 0..40 {
        etcd.put(&format!("/scaler-test/elsewhere/{i}"), "x");
        ok(&a, "PUT", &format!("/v1/hosts/o{i}"), json!({"url": format!("http://127.0.0.1:{}", 11_000 + i)}));
    }
    let read = reads(&a) - before;
    println!("40 registrations between other keys' writes: every record read {read} times");
    assert!(read <= 4, "A read every record {read} times in 40 registrations");
    // B takes in each of A's changes by reading what changed since its
    // last read, not every record (its own state: `/v1/hosts` would ask A).
    let held = |agg: &Aggregator| agg.get("/healthz").1["hosts"].as_u64().unwrap_or(0) as usize;
    assert!(wait_for(Duration::from_secs(10), || (held(&b) == 40).then_some(())).is_some());
    let before = reads(&b);
    for i in 40..46 {
        ok(&a, "PUT", &format!("/v1/hosts/o{i}"), json!({"url": format!("http://127.0.0.1:{}", 11_000 + i)}));
        let seen = wait_for(Duration::from_secs(10), || (held(&b) == i + 1).then_some(()));
        assert!(seen.is_some(), "B holds {} hosts", held(&b));
    }
    let read = reads(&b) - before;
    println!("B took in 6 registrations one by one, reading every record {read} times");
    assert!(read <= 1, "B read every record {read} times for 6 registrations");
    for i in 0..46 {
        ok(&a, "DELETE", &format!("/v1/hosts/o{i}"), json!({}));
    }
    assert!(wait_for(Duration::from_secs(10), || (listed(&b) == 0).then_some(())).is_some());

    // Writes through A, B, then A: A's own writes keep it in sync only
    // while nobody else wrote, so its third change takes in B's first.
    ok(&a, "PUT", "/v1/users/x1", json!({"cpu_budget": 100}));
    ok(&b, "PUT", "/v1/users/x2", json!({"cpu_budget": 200}));
    ok(&a, "PUT", "/v1/users/x3", json!({"cpu_budget": 300}));
    let users = |agg: &Aggregator| -> Vec<String> {
        agg.get("/v1/users").1["users"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(users(&a), ["x1", "x2", "x3"], "A right after its own write");
    let seen = wait_for(Duration::from_secs(10), || (users(&b) == ["x1", "x2", "x3"]).then_some(()));
    assert!(seen.is_some(), "B holds {:?}", users(&b));
    for u in ["x1", "x2", "x3"] {
        ok(&b, "DELETE", &format!("/v1/users/{u}"), json!({}));
    }
    let gone = wait_for(Duration::from_secs(10), || users(&a).is_empty().then_some(()));
    assert!(gone.is_some(), "A still holds {:?}", users(&a));

    // Made through A.
    ok(&a, "PUT", "/v1/hosts/h1", json!({"url": "http://127.0.0.1:9", "idle_mw": 10000, "max_mw": 90000}));
    ok(&a, "PUT", "/v1/users/ana", json!({"cpu_budget": 4000, "energy_budget_w": 100}));
    let containers = json!({"containers": [{"host": "h1", "name": "c1"}, {"host": "h1", "name": "c2"}]});
    ok(&a, "PUT", "/v1/apps/web", containers);
    ok(&a, "PUT", "/v1/apps/web/user", json!({"user": "ana"}));
    ok(&a, "PUT", "/v1/apps/web/energy-cap", json!({"watts": 40}));
    ok(&a, "PUT", "/v1/apps/web/scaling", json!({"cpu": {"min": 200, "max": 3000}}));
    let made = records(&a);
    assert_eq!(made["apps"]["web"]["cap"], 40.0, "{made}");
    // Seen by B within a few rounds.
    let t = Instant::now();
    let seen = wait_for(Duration::from_secs(10), || (records(&b) == made).then_some(()));
    assert!(seen.is_some(), "B never saw A's records:\nA {made}\nB {}", records(&b));
    println!("B saw A's records after {:.1} s", t.elapsed().as_secs_f64());
    // Changed through B, seen by A; A's gathering of h1 is kept.
    ok(&b, "PUT", "/v1/apps/web/energy-cap", json!({"watts": 30}));
    ok(&b, "DELETE", "/v1/apps/web/containers/h1/c2", json!({}));
    let changed = records(&b);
    assert!(
        wait_for(Duration::from_secs(10), || (records(&a) == changed).then_some(())).is_some(),
        "A never saw B's change:\nB {changed}\nA {}",
        records(&a)
    );

    // A removal is seen too: an application deleted through A cannot be
    // capped through B right after (B takes in A's changes first).
    ok(&a, "PUT", "/v1/apps/tmp", json!({"containers": []}));
    ok(&b, "PUT", "/v1/apps/tmp/energy-cap", json!({"watts": 5}));
    ok(&a, "DELETE", "/v1/apps/tmp", json!({}));
    let (s, v) = b.send("PUT", "/v1/apps/tmp/energy-cap", Some(&json!({"watts": 6})));
    assert_eq!(s, 404, "B still had the deleted application: {v}");

    // The etcd leader dies: both replicas carry on through the others.
    let leader = etcd.leader().unwrap();
    etcd.kill(leader);
    let t = Instant::now();
    ok(&a, "PUT", "/v1/apps/batch", json!({"containers": [{"host": "h1", "name": "c3"}]}));
    println!("a change with the etcd leader just killed took {:.2} s", t.elapsed().as_secs_f64());
    let new_leader = etcd.wait_leader();
    assert_ne!(new_leader, leader);
    assert!(
        wait_for(Duration::from_secs(10), || (b.get("/v1/apps/batch").0 == 200).then_some(())).is_some(),
        "B never saw the change made after the leader died: {}",
        b.log()
    );

    // No quorum (two of three members down): a change is refused with a
    // 503 naming the store, and nothing changed once etcd is back.
    let others: Vec<usize> = (0..3).filter(|&i| i != leader && i != new_leader).collect();
    etcd.kill(new_leader);
    let (s, v) = a.send("PUT", "/v1/users/bob", Some(&json!({"cpu_budget": 1000})));
    println!("without quorum: {s} {v}");
    assert_eq!(s, 503, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("store"), "{v}");
    etcd.restart(leader);
    etcd.restart(new_leader);
    etcd.wait_leader();
    let undone = wait_for(Duration::from_secs(15), || (a.get("/v1/users/bob").0 == 404).then_some(()));
    assert!(undone.is_some(), "the refused change stayed in memory: {}", a.get("/v1/users/bob").1);
    assert_eq!(b.get("/v1/users/bob").0, 404);

    // Everything killed and started again: the records are as they were.
    let before = records(&a);
    a.kill();
    b.kill();
    for i in 0..3 {
        etcd.kill(i);
    }
    for i in [others[0], leader, new_leader] {
        etcd.restart(i);
    }
    etcd.wait_leader();
    a.start_again();
    assert_eq!(records(&a), before, "the records after a restart of everything");
    assert_eq!(a.get("/v1/apps/web/energy-cap").1["watts"], 30.0);
}

/// `scaler aggregator --config CFG`, expected to stop by itself:
/// (success, stderr).
fn aggregator_once(cfg: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(tests::agent::scaler_bin())
        .args(["aggregator", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn an_aggregator_whose_etcd_does_not_answer_says_so_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let port = tests::agent::free_port();
    let cfg = dir.path().join("agg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[aggregator]\nlisten = \"127.0.0.1:{}\"\nstate_dir = \"{}\"\n[store]\netcd = [\"http://127.0.0.1:{port}\"]\ntimeout_ms = 500\n",
            tests::agent::free_port(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let run = || aggregator_once(&cfg);
    let (success, err) = run();
    assert!(!success);
    assert!(err.contains("reading the records") && err.contains(&format!("127.0.0.1:{port}")), "{err}");
    // A member that is no etcd URL is refused at load, naming the field.
    std::fs::write(&cfg, "[store]\netcd = [\"ftp://127.0.0.1:2379\"]\n").unwrap();
    let (success, err) = run();
    assert!(!success && err.contains("store.etcd[0]"), "{err}");
}

/// `scaler move-records --config CFG --to TO [--replace]`: (success,
/// stdout, stderr).
fn move_records(cfg: &std::path::Path, to: &str, replace: bool) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(tests::agent::scaler_bin());
    cmd.args(["move-records", "--config"]).arg(cfg).args(["--to", to]);
    if replace {
        cmd.arg("--replace");
    }
    let out = cmd.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn records_move_from_the_local_file_to_etcd_and_back() {
    let etcd = EtcdCluster::start(1);
    let store = format!("[store]\netcd = {}\nprefix = \"/scaler-move/\"\n", etcd.endpoints_toml());
    // Records made in an aggregator on its local file.
    let mut local = Aggregator::start(FAST);
    ok(&local, "PUT", "/v1/hosts/h1", json!({"url": "http://127.0.0.1:9", "idle_mw": 10000, "max_mw": 90000}));
    ok(&local, "PUT", "/v1/users/ana", json!({"cpu_budget": 4000, "energy_budget_w": 100}));
    ok(&local, "PUT", "/v1/users/temp", json!({"cpu_budget": 100}));
    ok(&local, "PUT", "/v1/apps/web", json!({"containers": [{"host": "h1", "name": "c1"}]}));
    ok(&local, "PUT", "/v1/apps/web/user", json!({"user": "ana"}));
    ok(&local, "PUT", "/v1/apps/web/energy-cap", json!({"watts": 40}));
    ok(&local, "PUT", "/v1/apps/web/scaling", json!({"cpu": {"min": 200, "max": 3000}}));
    let made = records(&local);
    let cfg = local.dir.path().join("move.toml");
    let state = local.dir.path().join("state");
    std::fs::write(&cfg, format!("[aggregator]\nstate_dir = \"{}\"\n{store}", state.display())).unwrap();

    // Not while the aggregator holds the file.
    let (success, _, err) = move_records(&cfg, "etcd", false);
    assert!(!success && err.contains("still running"), "{err}");
    local.stop();
    let (success, out, err) = move_records(&cfg, "etcd", false);
    assert!(success, "{err}");
    println!("{}", out.trim());
    assert!(out.contains("1 hosts, 2 users, 1 applications"), "{out}");
    // An aggregator on etcd holds the same records.
    let mut on_etcd = Aggregator::start(&format!("{FAST}{store}"));
    assert_eq!(records(&on_etcd), made);
    assert_eq!(on_etcd.get("/v1/apps/web/energy-cap").1["watts"], 40.0);
    // Etcd holds records now: a second move is refused, naming the way on.
    let (success, _, err) = move_records(&cfg, "etcd", false);
    assert!(
        !success && err.contains("already holds") && err.contains("1 hosts, 2 users") && err.contains("--replace"),
        "{err}"
    );

    // Changed there, then moved back over the local file.
    ok(&on_etcd, "PUT", "/v1/hosts/h2", json!({"url": "http://127.0.0.1:10"}));
    ok(&on_etcd, "DELETE", "/v1/users/temp", json!({}));
    ok(&on_etcd, "PUT", "/v1/apps/web/energy-cap", json!({"watts": 30}));
    let changed = records(&on_etcd);
    on_etcd.stop();
    let (success, _, err) = move_records(&cfg, "local", false);
    assert!(!success && err.contains("aggregator.redb already holds"), "{err}");
    let (success, out, err) = move_records(&cfg, "local", true);
    assert!(success, "{err}");
    println!("{}", out.trim());
    assert!(
        out.contains("2 hosts, 1 users, 1 applications") && out.contains("(1 records only it held deleted)"),
        "{out}"
    );
    local.start_again();
    assert_eq!(records(&local), changed);
    assert_eq!(local.get("/v1/apps/web/energy-cap").1["watts"], 30.0);

    // A configuration without etcd is refused, naming the field.
    std::fs::write(&cfg, format!("[aggregator]\nstate_dir = \"{}\"\n", state.display())).unwrap();
    let (success, _, err) = move_records(&cfg, "etcd", false);
    assert!(!success && err.contains("store.etcd"), "{err}");
}

#[test]
fn records_in_an_etcd_that_speaks_tls_and_demands_client_certificates() {
    let etcd = EtcdCluster::start_tls(1);
    let cfg = format!("{FAST}[store]\n{}prefix = \"/scaler-tls/\"\n", etcd.store_toml());
    let mut a = Aggregator::start(&cfg);
    assert_eq!(a.get("/healthz").1["records"], "etcd /scaler-tls/");
    ok(&a, "PUT", "/v1/hosts/h1", json!({"url": "http://127.0.0.1:9"}));
    ok(&a, "PUT", "/v1/users/ana", json!({"cpu_budget": 4000, "energy_budget_w": 100}));
    let made = records(&a);
    a.restart();
    assert_eq!(records(&a), made, "the records after a restart, read over TLS");
    a.stop();

    // Without a client certificate, or without the CA, etcd is not
    // reached: the aggregator says so and stops.
    let tls = etcd.tls.as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agg.toml");
    let run = |store: &str| {
        let head = format!(
            "[aggregator]\nlisten = \"127.0.0.1:{}\"\nstate_dir = \"{}\"\n",
            tests::agent::free_port(),
            dir.path().join("state").display()
        );
        std::fs::write(&path, format!("{head}[store]\netcd = {}\ntimeout_ms = 1000\n{store}", etcd.endpoints_toml()))
            .unwrap();
        aggregator_once(&path)
    };
    let (success, err) = run(&format!("ca_file = \"{}\"\n", tls.ca.display()));
    assert!(!success && err.contains("reading the records"), "no client certificate: {err}");
    println!("without a client certificate: {}", err.lines().last().unwrap_or_default());
    let (success, err) = run("");
    assert!(!success && err.contains("store.ca_file"), "no CA: {err}");
}
