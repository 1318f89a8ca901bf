//! The state in memory made to match the records: at start (every record)
//! and, with etcd, whenever another replica changed them. What the records
//! do not hold is kept: a host's gathered data while its address stays, an
//! application's controller and status while its cap stays.

use tracing::warn;

use super::{
    config::{self, AggConfig},
    records::Snapshot,
    state::{AppState, CeilingState, ContainerRef, HostState, Source, State},
};

/// Makes `st` hold `snap`'s hosts (those registered through the API: config
/// hosts win), users and applications; ceilings only when `ceilings` (at
/// start: afterwards they are this replica's own business).
pub fn apply(st: &mut State, snap: Snapshot, cfg: &AggConfig, ceilings: bool) -> anyhow::Result<()> {
    let mut api_hosts = std::collections::BTreeSet::new();
    for (name, rec) in snap.hosts {
        if cfg.hosts.iter().any(|h| h.name == name) {
            warn!(host = %name, "registered through the API and in config: config wins");
            continue;
        }
        // Stored by an older version, or damaged: held to the API's rules.
        if let Err((field, why)) = config::check_host(&rec.url, rec.token.as_deref(), rec.idle_mw, rec.max_mw) {
            warn!(host = %name, "stored host left out: {field}: {why}");
            continue;
        }
        api_hosts.insert(name.clone());
        match st.hosts.get_mut(&name) {
            Some(h) if h.record.url == rec.url && h.record.token == rec.token => h.record = rec,
            _ => {
                st.hosts.insert(name.clone(), HostState::new(name, rec, Source::Api));
            }
        }
    }
    st.hosts.retain(|name, h| h.source == Source::Config || api_hosts.contains(name));

    st.users = snap.users.into_iter().collect();

    let names: std::collections::BTreeSet<String> = snap.apps.iter().map(|(n, _)| n.clone()).collect();
    st.apps.retain(|name, _| names.contains(name));
    for (name, rec) in snap.apps {
        let capped = rec.cap_mw.is_some();
        let app = st.apps.entry(name).or_insert_with(|| AppState::new(rec.clone()));
        if app.record.cap_mw != rec.cap_mw {
            app.cap_share = None;
        }
        app.record = rec;
        match (capped, app.controller.is_some()) {
            (true, false) => app.controller = Some(std::sync::Mutex::new(cfg.energy.controller.build()?)),
            (false, true) => app.controller = None,
            _ => {}
        }
    }

    if ceilings {
        take_ceilings(st, snap.ceilings);
    }
    Ok(())
}

/// The ceilings as stored, in place of those in memory (at start, and on
/// taking the lead: the previous leader may have set or cleared some);
/// each is sent again.
pub fn take_ceilings(st: &mut State, stored: Vec<(String, crate::state::CeilingRecord)>) {
    st.ceilings = stored
        .into_iter()
        .filter_map(|(key, record)| {
            let (host, name) = key.split_once('/')?;
            let c = ContainerRef { host: host.into(), name: name.into() };
            Some((c, CeilingState { record, sent: None, attempt_ms: 0, error: None }))
        })
        .collect();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::state::{AppRecord, HostRecord, UserRecord};

    fn host(url: &str) -> HostRecord {
        HostRecord { url: url.into(), token: None, idle_mw: None, max_mw: None }
    }

    #[test]
    fn another_replicas_changes_replace_records_and_keep_what_was_gathered() {
        let mut cfg = AggConfig::default();
        cfg.hosts.push(config::HostEntry {
            name: "c".into(),
            url: "http://127.0.0.1:1".into(),
            token: None,
            idle_mw: None,
            max_mw: None,
        });
        let mut st = State::default();
        st.hosts.insert("c".into(), HostState::new("c".into(), host("http://127.0.0.1:1"), Source::Config));
        let first = Snapshot {
            revision: 5,
            version: (5, 5),
            hosts: vec![("a".into(), host("http://10.0.0.1:8470")), ("b".into(), host("http://10.0.0.2:8470"))],
            users: vec![("ana".into(), UserRecord { cpu_budget_mc: Some(900), ..UserRecord::default() })],
            apps: vec![("web".into(), AppRecord { cap_mw: Some(40_000), ..AppRecord::default() })],
            ceilings: vec![("a/x".into(), crate::state::CeilingRecord { app: "web".into(), cpu: Some(500) })],
        };
        apply(&mut st, first.clone(), &cfg, true).unwrap();
        assert_eq!(st.hosts.len(), 3);
        assert!(st.apps["web"].controller.is_some());
        assert_eq!(st.ceilings.len(), 1);
        st.hosts.get_mut("a").unwrap().rounds_ok = 7;

        // Another replica: b gone, a's power model set, a user and an
        // application changed, a host "c" registered (config wins).
        let mut next = first;
        next.revision = 9;
        next.hosts = vec![
            ("a".into(), HostRecord { idle_mw: Some(10_000), max_mw: Some(90_000), ..host("http://10.0.0.1:8470") }),
            ("c".into(), host("http://10.9.9.9:8470")),
        ];
        next.users[0].1.cpu_budget_mc = Some(1200);
        next.apps = vec![("db".into(), AppRecord::default())];
        next.ceilings.clear();
        apply(&mut st, next, &cfg, false).unwrap();
        assert_eq!(st.hosts.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(st.hosts["a"].rounds_ok, 7, "what was gathered stays");
        assert_eq!(st.hosts["a"].record.max_mw, Some(90_000));
        assert_eq!(st.hosts["c"].record.url, "http://127.0.0.1:1", "config wins");
        assert_eq!(st.users["ana"].cpu_budget_mc, Some(1200));
        assert_eq!(st.apps.keys().collect::<Vec<_>>(), ["db"]);
        assert!(st.apps["db"].controller.is_none());
        assert_eq!(st.ceilings.len(), 1, "ceilings are read at start only");

        // Taking the lead: the stored ceilings replace those in memory (the
        // interim leader cleared a/x and set c/y).
        st.ceilings.get_mut(&ContainerRef { host: "a".into(), name: "x".into() }).unwrap().sent = Some(Some(500));
        take_ceilings(&mut st, vec![("c/y".into(), crate::state::CeilingRecord { app: "db".into(), cpu: Some(300) })]);
        let now: Vec<_> = st.ceilings.iter().map(|(c, v)| (c.key(), v.record.cpu, v.sent)).collect();
        assert_eq!(now, [("c/y".to_owned(), Some(300), None)]);
    }
}
