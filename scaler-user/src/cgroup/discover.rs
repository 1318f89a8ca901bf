//! Container discovery: which cgroups are containers, and their stable names.
//!
//! [`classify`] is pure (a relative cgroup path in, a kind and a name out);
//! [`scan`] walks the v2 tree and, on hybrid hosts, the v1 `memory` and `cpu`
//! trees, so a container that exists in only one of them is still found.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::layout::Layout;

/// What made a cgroup a container (as `/v1/stats` names it).
pub use scaler_api::wire::Kind;

/// What discovery looks for. `watch` patterns are matched against cgroup
/// paths relative to the hierarchy root, segment by segment, with `*` and
/// `?` inside a segment (`scaler-test-*/*`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryOptions {
    /// LXC and LXD containers (`lxc.payload.NAME`).
    pub lxc: bool,
    /// Docker containers (`docker-ID.scope`, `docker/ID`).
    pub docker: bool,
    /// Podman containers (`libpod-ID.scope`).
    pub podman: bool,
    /// Kubernetes pods (`kubepods*/...pod<UID>`), one container per pod.
    pub kubernetes: bool,
    /// systemd services directly under `system.slice`.
    pub systemd_services: bool,
    /// Extra cgroup path patterns to watch, relative to the hierarchy root.
    pub watch: Vec<String>,
    /// Deepest level walked below the root.
    pub max_depth: usize,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        Self {
            lxc: true,
            docker: true,
            podman: true,
            kubernetes: true,
            // Services are containers too (the user can scale a database
            // unit like an LXC container); they are only watched, never
            // touched, until subscribed.
            systemd_services: true,
            watch: Vec::new(),
            // Rootless Podman sits 5 levels down (user.slice/user-1000.slice/...).
            max_depth: 6,
        }
    }
}

/// A container found on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discovered {
    pub name: String,
    /// Path relative to the hierarchy roots, with a leading `/`.
    pub cgroup: String,
    pub kind: Kind,
    /// It has a directory in the v2 tree (the eBPF counters see it).
    pub in_v2: bool,
    /// It has a directory in a v1 controller tree.
    pub in_v1: bool,
    /// What its engine calls it, when an engine runs it and answered.
    pub engine: Option<crate::engine::EngineInfo>,
}

/// The engine that may run a container of `kind` at `rel`, and the key it
/// knows it by (Docker and Podman: the full id; LXD: the instance name,
/// the same as LXC's).
pub fn engine_key(kind: Kind, rel: &str) -> Option<(crate::engine::Engine, String)> {
    use crate::engine::Engine;
    let base = rel.trim_matches('/').rsplit('/').next()?;
    let id = |prefix: &str| base.strip_prefix(prefix).unwrap_or(base).trim_end_matches(".scope").to_owned();
    match kind {
        Kind::Docker => Some((Engine::Docker, id("docker-"))),
        Kind::Podman => Some((Engine::Podman, id("libpod-"))),
        Kind::Lxc => Some((Engine::Lxd, base.strip_prefix("lxc.payload.").unwrap_or(base).to_owned())),
        _ => None,
    }
}

/// The engine that may run the container at cgroup path `rel`, by the
/// shape of the path alone.
pub fn engine_of_path(rel: &str) -> Option<crate::engine::Engine> {
    let (kind, _) = classify(rel, &DiscoveryOptions::default())?;
    engine_key(kind, rel).map(|(e, _)| e)
}

/// What the engines call their containers: `(engine, key)` to what the
/// engine says, `None` where no engine answers for it.
pub type EngineNames<'a> = &'a mut dyn FnMut(crate::engine::Engine, &str) -> Option<crate::engine::EngineInfo>;

fn is_hex_id(s: &str) -> bool {
    s.len() >= 12 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// Kind and stable name of the cgroup at `rel` (relative, no leading `/`),
/// or `None` if it is not a container of an enabled kind.
pub fn classify(rel: &str, opts: &DiscoveryOptions) -> Option<(Kind, String)> {
    let rel = rel.trim_matches('/');
    let (parent, base) = match rel.rsplit_once('/') {
        Some((p, b)) => (p, b),
        None => ("", rel),
    };
    if opts.lxc {
        if let Some(name) = base.strip_prefix("lxc.payload.") {
            return Some((Kind::Lxc, name.to_owned()));
        }
        // Older LXC: lxc/NAME and lxc.payload/NAME.
        if (parent == "lxc" || parent == "lxc.payload") && !base.is_empty() {
            return Some((Kind::Lxc, base.to_owned()));
        }
    }
    if opts.docker {
        if let Some(id) = base.strip_prefix("docker-").and_then(|b| b.strip_suffix(".scope"))
            && is_hex_id(id)
        {
            return Some((Kind::Docker, format!("docker-{}", short(id))));
        }
        if parent.rsplit('/').next() == Some("docker") && is_hex_id(base) {
            return Some((Kind::Docker, format!("docker-{}", short(base))));
        }
    }
    if opts.podman
        && let Some(id) = base.strip_prefix("libpod-").map(|b| b.strip_suffix(".scope").unwrap_or(b))
        && is_hex_id(id)
    {
        return Some((Kind::Podman, format!("podman-{}", short(id))));
    }
    if opts.kubernetes && rel.starts_with("kubepods") {
        // systemd driver: kubepods-burstable-pod<uid>.slice (uid with '_'),
        // cgroupfs driver: pod<uid>.
        let uid = base
            .strip_suffix(".slice")
            .and_then(|b| b.rsplit_once("-pod").map(|(_, u)| u))
            .or_else(|| base.strip_prefix("pod"));
        if let Some(uid) = uid
            && uid.len() >= 8
        {
            return Some((Kind::Kubernetes, format!("pod-{}", uid.replace('_', "-"))));
        }
    }
    if opts.systemd_services && parent == "system.slice" && base.ends_with(".service") {
        return Some((Kind::Systemd, base.to_owned()));
    }
    if opts.watch.iter().any(|p| glob_match(p.trim_matches('/'), rel)) {
        return Some((Kind::Configured, base.to_owned()));
    }
    None
}

/// Does path `rel` match `pattern` segment by segment (`*` and `?` within
/// a segment; the number of segments must be equal)?
pub fn glob_match(pattern: &str, rel: &str) -> bool {
    let (mut p, mut r) = (pattern.split('/'), rel.split('/'));
    loop {
        match (p.next(), r.next()) {
            (None, None) => return true,
            (Some(ps), Some(rs)) if segment_match(ps.as_bytes(), rs.as_bytes()) => {}
            _ => return false,
        }
    }
}

fn segment_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => segment_match(&p[1..], s) || (!s.is_empty() && segment_match(p, &s[1..])),
        (Some(b'?'), Some(_)) => segment_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => segment_match(&p[1..], &s[1..]),
        _ => false,
    }
}

/// Walks the v2 tree and the v1 `memory` and `cpu` trees for containers.
/// Explicitly configured cgroups (`name -> path`) are added when they exist.
/// A container an engine runs takes the engine's name (`engines`).
/// Names are unique: a clash gets the path-derived name instead.
pub fn scan(
    layout: &Layout,
    opts: &DiscoveryOptions,
    configured: &[(String, String)],
    engines: EngineNames,
) -> Vec<Discovered> {
    let mut found: BTreeMap<String, Discovered> = BTreeMap::new();
    let mut record = |rel: &str, kind: Kind, name: String, v2: bool| {
        let cgroup = format!("/{}", rel.trim_matches('/'));
        let entry = found.entry(cgroup.clone()).or_insert_with(|| {
            let engine = engine_key(kind, rel).and_then(|(e, key)| engines(e, &key));
            let name = engine.as_ref().map(|e| e.name.clone()).filter(|n| !n.is_empty()).unwrap_or(name);
            Discovered { name, cgroup, kind, in_v2: false, in_v1: false, engine }
        });
        if v2 { entry.in_v2 = true } else { entry.in_v1 = true }
    };
    let mut roots: Vec<(PathBuf, bool)> = vec![(layout.v2.clone(), true)];
    for ctl in ["memory", "cpu"] {
        if let Some(p) = layout.v1.get(ctl)
            && !roots.iter().any(|(r, _)| r == p)
        {
            roots.push((p.clone(), false));
        }
    }
    for (root, is_v2) in &roots {
        walk(root, "", 0, opts, &mut |rel| match classify(rel, opts) {
            Some((kind, name)) => {
                record(rel, kind, name, *is_v2);
                true
            }
            None => false,
        });
        for (name, path) in configured {
            if super::layout::join_rel(root, path).is_dir() {
                record(path, Kind::Configured, name.clone(), *is_v2);
            }
        }
    }
    // A configured (or subscribed) name wins over the discovered one.
    for (name, path) in configured {
        let cgroup = format!("/{}", path.trim_matches('/'));
        if let Some(d) = found.get_mut(&cgroup) {
            d.name = name.clone();
        }
    }
    let pinned: std::collections::HashSet<String> =
        configured.iter().map(|(_, p)| format!("/{}", p.trim_matches('/'))).collect();
    let mut out: Vec<Discovered> = found.into_values().collect();
    // On a name clash configured names win, then the shallower cgroup keeps
    // the short name.
    out.sort_by_key(|d| (!pinned.contains(&d.cgroup), d.cgroup.matches('/').count(), d.cgroup.clone()));
    let mut seen = std::collections::HashSet::new();
    for d in &mut out {
        d.name = scaler_api::names::sanitize(&d.name);
        if !seen.insert(d.name.clone()) {
            d.name = scaler_api::names::sanitize(&d.cgroup.trim_start_matches('/').replace('/', "_"));
            seen.insert(d.name.clone());
        }
    }
    out
}

/// Depth-first walk of directories below `root`; `visit` returns true when it
/// claimed a directory as a container (its children are then not visited).
fn walk(root: &Path, rel: &str, depth: usize, opts: &DiscoveryOptions, visit: &mut dyn FnMut(&str) -> bool) {
    if depth >= opts.max_depth {
        return;
    }
    let dir = super::layout::join_rel(root, rel);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return; // vanished or unreadable: nothing below it to find
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        if !visit(&child) {
            walk(root, &child, depth + 1, opts, visit);
        }
    }
}

/// Most cgroup directories walked below one container (nested containers,
/// systemd scopes inside LXC).
const MAX_SUBTREE: usize = 4096;

/// v2 ids (directory inode numbers) of `dir` and its descendants.
pub fn subtree_ids(dir: &Path) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let mut ids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if ids.len() >= MAX_SUBTREE {
            break;
        }
        let Ok(meta) = std::fs::metadata(&d) else {
            continue;
        };
        ids.push(meta.ino());
        if let Ok(entries) = std::fs::read_dir(&d) {
            stack.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
    }
    ids
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn c(rel: &str) -> Option<(Kind, String)> {
        classify(rel, &DiscoveryOptions::default())
    }

    const ID: &str = "3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e";

    #[test]
    fn names_of_each_kind() {
        assert_eq!(c("lxc.payload.web1"), Some((Kind::Lxc, "web1".into())));
        assert_eq!(c("lxc/old"), Some((Kind::Lxc, "old".into())));
        assert_eq!(c("lxc.payload/mid"), Some((Kind::Lxc, "mid".into())));
        assert_eq!(c(&format!("system.slice/docker-{ID}.scope")), Some((Kind::Docker, "docker-3f4e5d6c7b8a".into())));
        assert_eq!(c(&format!("docker/{ID}")), Some((Kind::Docker, "docker-3f4e5d6c7b8a".into())));
        assert_eq!(c(&format!("machine.slice/libpod-{ID}.scope")), Some((Kind::Podman, "podman-3f4e5d6c7b8a".into())));
        assert_eq!(
            c(&format!("user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope")),
            Some((Kind::Podman, "podman-3f4e5d6c7b8a".into()))
        );
        assert_eq!(
            c("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd_5678_90ef.slice"),
            Some((Kind::Kubernetes, "pod-1234abcd-5678-90ef".into()))
        );
        assert_eq!(c("kubepods/besteffort/pod1234abcd-5678"), Some((Kind::Kubernetes, "pod-1234abcd-5678".into())));
        assert_eq!(c("system.slice/nginx.service"), Some((Kind::Systemd, "nginx.service".into())));
    }

    #[test]
    fn not_containers() {
        for rel in [
            "lxc.monitor.web1",
            "system.slice",
            "system.slice/foo.scope",
            "user.slice/user-1000.slice/session-1.scope/nginx.service",
            &format!("machine.slice/libpod-conmon-{ID}.scope"),
            "system.slice/docker-short.scope",
            "kubepods.slice/kubepods-burstable.slice",
            "process_api/769c7d8f98c9f9e783999bd3781ca93a",
        ] {
            assert_eq!(c(rel), None, "{rel}");
        }
    }

    #[test]
    fn kinds_can_be_switched_off_and_watch_patterns_added() {
        let opts = DiscoveryOptions {
            systemd_services: false,
            lxc: false,
            watch: vec!["scaler-test-*/c?".into()],
            ..Default::default()
        };
        assert_eq!(classify("system.slice/nginx.service", &opts), None);
        assert_eq!(classify("lxc.payload.a", &opts), None);
        assert_eq!(classify("scaler-test-x1/c1", &opts), Some((Kind::Configured, "c1".into())));
        assert_eq!(classify("scaler-test-x1/c10", &opts), None);
        assert_eq!(classify("scaler-test-x1", &opts), None);
    }

    #[test]
    fn globs() {
        assert!(glob_match("a/*", "a/b"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("x*y", "xy"));
        assert!(glob_match("x*y", "x-long-y"));
        assert!(!glob_match("x*y", "x-long-z"));
        assert!(!glob_match("a/*", "a/b/c"));
        assert!(glob_match("a/?", "a/b"));
        assert!(!glob_match("a/?", "a/bc"));
    }

    #[test]
    fn scan_fake_hybrid_tree_mirrors_names_and_flags() {
        let tmp = tempfile::tempdir().unwrap();
        let v2 = tmp.path().join("unified");
        let mem = tmp.path().join("memory");
        let cpu = tmp.path().join("cpu");
        for d in [
            v2.join("lxc.payload.web/init.scope"),
            mem.join("lxc.payload.web"),
            cpu.join("lxc.payload.web"),
            mem.join(format!("docker/{ID}")),
            v2.join("system.slice/db.service"),
            v2.join("custom/thing"),
            v2.join("a/lxc.payload.web"), // same name again: gets a path name
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        let layout = Layout {
            kernfs: false,
            v2: v2.clone(),
            v1: [("memory".to_owned(), mem), ("cpu".to_owned(), cpu)].into_iter().collect(),
        };
        let mut asked = Vec::new();
        // Docker knows its container as "api"; no LXD answers.
        let mut engines = |e: crate::engine::Engine, key: &str| {
            asked.push((e, key.to_owned()));
            (e == crate::engine::Engine::Docker).then(|| crate::engine::EngineInfo {
                engine: "docker".into(),
                id: key.into(),
                name: "api".into(),
                labels: [("tier".to_owned(), "back".to_owned())].into(),
            })
        };
        let found = scan(
            &layout,
            &DiscoveryOptions::default(),
            &[("thing".into(), "/custom/thing".into()), ("renamed".into(), "/system.slice/db.service".into())],
            &mut engines,
        );
        asked.sort();
        use crate::engine::Engine::{Docker, Lxd};
        assert_eq!(asked, vec![(Docker, ID.to_owned()), (Lxd, "web".to_owned()), (Lxd, "web".to_owned())]);
        let by_cg: BTreeMap<_, _> = found.iter().map(|d| (d.cgroup.as_str(), d)).collect();
        let web = by_cg["/lxc.payload.web"];
        assert_eq!((web.name.as_str(), web.in_v2, web.in_v1), ("web", true, true));
        let docker = by_cg[format!("/docker/{ID}").as_str()];
        assert_eq!((docker.in_v2, docker.in_v1, docker.kind), (false, true, Kind::Docker));
        assert_eq!(docker.name, "api", "the engine's name");
        assert_eq!(docker.engine.as_ref().unwrap().labels["tier"], "back");
        assert_eq!(web.engine, None);
        assert_eq!(by_cg["/system.slice/db.service"].name, "renamed", "configured names win");
        assert_eq!(by_cg["/system.slice/db.service"].kind, Kind::Systemd);
        assert_eq!(by_cg["/custom/thing"].kind, Kind::Configured);
        assert_eq!(by_cg["/a/lxc.payload.web"].name, "a_lxc.payload.web");
        assert_eq!(found.len(), 5);
    }
}
