//! The house rules `cargo xtask test` checks (issue 16): no dependency
//! cycle between the top-level modules of a crate (`crate::a` using
//! `crate::b` while `b` uses `a`), and no source file over 400 lines of
//! code (blank lines, comments and the `#[cfg(test)]` part not counted).
//!
//! The debts that exist are listed below; the check fails on a new one, and
//! on a listed one that is gone (so that the list only shrinks).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// Most lines of code in one file.
pub const MAX_LINES: usize = 400;

/// Crates whose `src/` is checked.
const CRATES: [&str; 8] =
    ["scaler-common", "api", "scaler-user", "aggregator", "policies", "xtask", "testkit", "tests"];

/// Cycles between top-level modules that exist today (crate: modules in
/// the cycle, sorted, joined by " <-> ").
const KNOWN_CYCLES: &[&str] = &[];

/// Files over [`MAX_LINES`] today.
const KNOWN_LONG: &[&str] = &[];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Lines of code: not blank, not a comment, before `#[cfg(test)]`.
pub fn lines_of_code(text: &str) -> usize {
    text.lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .filter(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with("//")
        })
        .count()
}

/// The top-level module a file of `src/` belongs to (`None` for the crate
/// root).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// Top-level modules `text` refers to as `crate::name`.
pub fn references(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    // Code only: a doc comment naming another module is no dependency.
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if modules.contains(&name) {
            out.insert(name);
        }
        // `use crate::{a, b::c}`: every name in the braces.
        if rest.starts_with('{') {
            let end = rest.find('}').unwrap_or(rest.len());
            for part in rest[1..end].split(',') {
                let n: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if modules.contains(&n) {
                    out.insert(n);
                }
            }
        }
    }
    out
}

/// Strongly connected components with more than one module (Tarjan).
pub fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low[v];
                    self.low.insert(v, lv.min(lw));
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low[v];
                    self.low.insert(v, lv.min(iw));
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

/// What the check found: cycles (`crate: a <-> b`) and long files
/// (`(path, lines of code)`).
pub type Findings = (Vec<String>, Vec<(String, usize)>);

/// Every cycle and long file.
pub fn findings(root: &Path) -> anyhow::Result<Findings> {
    let mut found_cycles = Vec::new();
    let mut long = Vec::new();
    for krate in CRATES {
        let src = root.join(krate).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        files.sort();
        let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &files {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let n = lines_of_code(&text);
            if n > MAX_LINES {
                let rel = f.strip_prefix(root).unwrap_or(f).display().to_string();
                long.push((rel, n));
            }
            if let Some(m) = module_of(&src, f) {
                let refs = references(&text, &modules);
                graph.entry(m.clone()).or_default().extend(refs.into_iter().filter(|r| *r != m));
            }
        }
        for c in cycles(&graph) {
            found_cycles.push(format!("{krate}: {}", c.join(" <-> ")));
        }
    }
    Ok((found_cycles, long))
}

/// Fails on a cycle or long file not in the lists, and on a listed one
/// that is gone.
pub fn check(root: &Path) -> anyhow::Result<()> {
    let (found_cycles, long) = findings(root)?;
    let mut problems = Vec::new();
    for c in &found_cycles {
        if !KNOWN_CYCLES.contains(&c.as_str()) {
            problems.push(format!("new module cycle: {c}"));
        }
    }
    for k in KNOWN_CYCLES {
        if !found_cycles.iter().any(|c| c == k) {
            problems.push(format!("the cycle {k} is gone: remove it from KNOWN_CYCLES in xtask/src/arch.rs"));
        }
    }
    for (f, n) in &long {
        if !KNOWN_LONG.contains(&f.as_str()) {
            problems.push(format!("{f}: {n} lines of code (at most {MAX_LINES}): split it"));
        }
    }
    for k in KNOWN_LONG {
        if !long.iter().any(|(f, _)| f == k) {
            problems.push(format!("{k} is no longer over {MAX_LINES} lines: remove it from KNOWN_LONG"));
        }
    }
    if !problems.is_empty() {
        bail!("house rules (xtask/src/arch.rs):\n  {}", problems.join("\n  "));
    }
    eprintln!(
        "house rules: no new module cycle ({} known), no new file over {MAX_LINES} lines ({} known)",
        KNOWN_CYCLES.len(),
        KNOWN_LONG.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_references_and_cycles() {
        let mods: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let r =
            references("use crate::{a::X, b};\n/// see crate::zz\nfn f() { crate::c::g(); crate::zz::h(); }", &mods);
        assert_eq!(r, mods);
        let g: BTreeMap<String, BTreeSet<String>> = [
            ("a".to_string(), ["b".to_string()].into()),
            ("b".to_string(), ["a".to_string()].into()),
            ("c".to_string(), ["a".to_string()].into()),
        ]
        .into();
        assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".to_string()]]);
    }

    #[test]
    fn counts_code_not_comments_blanks_or_tests() {
        let text = "// c\n\nfn a() {}\n  /// doc\nfn b() {}\n#[cfg(test)]\nmod tests { fn t() {} }\n";
        assert_eq!(lines_of_code(text), 2);
    }
}
