//! The import graph between the crate's top-level modules: no cycles, and imports point down the
//! layers of [`LAYERS`] (issue 14).
//!
//! Every `.rs` file under `src/` belongs to the top-level module named by its first path
//! component (`raft/host.rs` → `raft`, `node.rs` → `node`); `lib.rs` and `main.rs` are the crate
//! root and `bin/` holds other crates, so those are skipped. Each `crate::X` path in code, whether
//! in a `use` (grouped `use crate::{a::b, c}` too) or inline (`crate::x::f()`, `$crate::x` in a
//! macro), where `X` is another top-level module, is an edge from the file's module to `X`.
//! Comments, doc comments and string/char literals are skipped, so neither doc links nor
//! `#[serde(with = "crate::x")]` count. `super::`/`self::` paths and re-exports through the crate
//! root are not followed. `#[cfg(test)]` code counts like any other; a whole file can be left out
//! through [`EXEMPT_FILES`] (an inline `mod tests {}` cannot: move it to `x/tests.rs` first).
//!
//! Rules:
//! 1. Layers: an edge from a lower layer to a higher one fails. Same-layer edges are allowed.
//!    A top-level module missing from [`LAYERS`] fails, so a new module must be placed.
//! 2. Cycles: a set of modules that reach each other fails, unless every cycle in it runs through
//!    an edge listed in [`KNOWN_VIOLATIONS`], i.e. the set falls apart once the listed edges are
//!    gone. A cycle always has an edge that does not point down, and upward edges must be listed
//!    anyway (rule 1), so in practice only a cycle within one layer needs an entry of its own.
//!
//! [`KNOWN_VIOLATIONS`] is a ratchet for the migration to the target layers, so the list only
//! shrinks: an entry fails the test once its import is gone, or once its edge neither points up
//! nor lies on a cycle that the listed upward edges leave standing.
//!
//! The sources are read from `$SHOAL_SRC_DIR`, by default this crate's `src/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// Every top-level module and its layer. A module may import modules of its own layer or below.
const LAYERS: &[(&str, u32)] = &[
    ("cli", 10),
    ("node", 9),
    ("supervisor", 9),
    ("http", 8),
    ("services", 7),
    ("router", 6),
    ("raft", 5),
    ("membership", 4),
    ("storage", 3),
    ("transport", 3),
    ("placement", 3),
    ("metrics", 2),
    ("sandbox", 2),
    ("config", 1),
    ("certs", 1),
    ("util", 0),
];

/// Edges tolerated while the migration lasts: `(from, to, why and which issue removes it)`.
/// Delete an entry as soon as its edge is fixed; the test fails on one that is no longer needed.
const KNOWN_VIOLATIONS: &[(&str, &str, &str)] = &[
    // The peer envelope carries Raft's messages as typed variants (`Request::Raft`), so the
    // transport knows `raft::wire`. Issue 15 replaces Raft's peer traffic with batched one-way
    // streams of stored entry bytes, which removes this import.
    ("transport", "raft", "proto envelope carries raft::wire::{RaftRequest, RaftResponse} (issue 15)"),
];

/// Files (relative to `src/`) whose imports are not counted, e.g. a test file that needs a
/// higher layer to build its fixture. Each entry needs a reason in a comment.
const EXEMPT_FILES: &[&str] = &[];

#[test]
fn imports_point_down_the_layers_without_cycles() {
    let src_dir = std::env::var_os("SHOAL_SRC_DIR")
        .map_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src")), PathBuf::from);
    let files = read_sources(&src_dir);
    assert!(
        files.iter().any(|(path, _)| path == "lib.rs"),
        "no lib.rs in {}: SHOAL_SRC_DIR must name the crate's src directory",
        src_dir.display()
    );
    for exempt in EXEMPT_FILES {
        assert!(files.iter().any(|(path, _)| path == exempt), "EXEMPT_FILES lists {exempt}, which does not exist");
    }
    let graph = build_graph(&files, EXEMPT_FILES);
    let problems = check(&graph, LAYERS, KNOWN_VIOLATIONS);
    assert!(
        problems.is_empty(),
        "the module graph of {} breaks {} rule(s):\n\n{}",
        src_dir.display(),
        problems.len(),
        problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n\n")
    );
}

/// Every `.rs` file under `dir` as (path relative to `dir` with `/` separators, content), sorted.
fn read_sources(dir: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                walk(&path, &format!("{prefix}{name}/"), out);
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                out.push((format!("{prefix}{name}"), text));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

/// Where an import is written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Site {
    /// Relative to `src/`.
    file: String,
    line: usize,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "src/{}:{}", self.file, self.line)
    }
}

/// The top-level modules and the imports between them.
#[derive(Debug)]
struct ModuleGraph {
    modules: BTreeSet<String>,
    /// `(from, to)` → every place that imports `to` from within `from`, in file and line order.
    edges: BTreeMap<(String, String), Vec<Site>>,
}

/// The top-level module a file under `src/` belongs to; `None` for the crate root and `bin/`.
fn top_module(path: &str) -> Option<&str> {
    match path.split_once('/') {
        Some(("bin", _)) => None,
        Some((dir, _)) => Some(dir),
        None => match path.strip_suffix(".rs")? {
            "lib" | "main" => None,
            module => Some(module),
        },
    }
}

/// The graph of `files` (path relative to `src/`, content), ignoring the imports in `exempt`.
fn build_graph(files: &[(impl AsRef<str>, impl AsRef<str>)], exempt: &[&str]) -> ModuleGraph {
    let modules = files.iter().filter_map(|(path, _)| top_module(path.as_ref())).map(str::to_owned).collect();
    let mut graph = ModuleGraph { modules, edges: BTreeMap::new() };
    for (path, text) in files {
        let path = path.as_ref();
        let Some(from) = top_module(path) else { continue };
        if exempt.contains(&path) {
            continue;
        }
        for (to, line) in crate_refs(text.as_ref()) {
            if to != from && graph.modules.contains(&to) {
                let sites = graph.edges.entry((from.to_owned(), to)).or_default();
                let site = Site { file: path.to_owned(), line };
                if !sites.contains(&site) {
                    sites.push(site);
                }
            }
        }
    }
    for sites in graph.edges.values_mut() {
        sites.sort();
    }
    graph
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    /// `::`
    PathSep,
    Punct(char),
}

/// A character-level cursor that counts lines.
struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// Skips the rest of a `"..."` literal whose opening quote is consumed.
    fn skip_quoted(&mut self) {
        while let Some(c) = self.bump() {
            match c {
                '\\' => {
                    self.bump();
                }
                '"' => return,
                _ => {}
            }
        }
    }

    /// Skips the rest of a raw string `r#"..."#` whose `r` is consumed and the cursor is on its
    /// first `#` (or its quote, with `hashes == 0`).
    fn skip_raw(&mut self, hashes: usize) {
        for _ in 0..=hashes {
            self.bump();
        }
        while let Some(c) = self.bump() {
            if c == '"' && (0..hashes).all(|i| self.peek(i) == Some('#')) {
                self.pos += hashes;
                return;
            }
        }
    }

    /// Skips a block comment, nested ones included, whose `/*` is consumed.
    fn skip_block_comment(&mut self) {
        let mut depth = 1;
        while depth > 0 {
            match (self.bump(), self.peek(0)) {
                (None, _) => return,
                (Some('/'), Some('*')) => {
                    self.bump();
                    depth += 1;
                }
                (Some('*'), Some('/')) => {
                    self.bump();
                    depth -= 1;
                }
                _ => {}
            }
        }
    }
}

/// The tokens of `src` that matter for paths, with their line; comments and literals are dropped.
fn lex(src: &str) -> Vec<(Tok, usize)> {
    let mut lx = Lexer { chars: src.chars().collect(), pos: 0, line: 1 };
    let mut out = Vec::new();
    while let Some(c) = lx.peek(0) {
        let line = lx.line;
        match (c, lx.peek(1)) {
            ('/', Some('/')) => {
                while lx.peek(0).is_some_and(|c| c != '\n') {
                    lx.bump();
                }
            }
            ('/', Some('*')) => {
                lx.pos += 2;
                lx.skip_block_comment();
            }
            ('"', _) => {
                lx.bump();
                lx.skip_quoted();
            }
            // A char literal: `'\n'`, `'\''`, `'\u{7f}'`.
            ('\'', Some('\\')) => {
                lx.pos += 2;
                lx.bump();
                while lx.bump().is_some_and(|c| c != '\'') {}
            }
            // `'x'` is a char literal; `'a` without a closing quote is a lifetime or label.
            ('\'', _) => {
                lx.pos += if lx.peek(2) == Some('\'') { 3 } else { 1 };
            }
            (':', Some(':')) => {
                lx.pos += 2;
                out.push((Tok::PathSep, line));
            }
            _ if c.is_alphanumeric() || c == '_' => {
                let start = lx.pos;
                while lx.peek(0).is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    lx.pos += 1;
                }
                let word: String = lx.chars[start..lx.pos].iter().collect();
                let hashes = (0..).take_while(|&i| lx.peek(i) == Some('#')).count();
                if matches!(word.as_str(), "r" | "br" | "cr") && lx.peek(hashes) == Some('"') {
                    lx.skip_raw(hashes);
                } else {
                    out.push((Tok::Word(word), line));
                }
            }
            _ => {
                lx.bump();
                if !c.is_whitespace() {
                    out.push((Tok::Punct(c), line));
                }
            }
        }
    }
    out
}

/// The first segment after each `crate::` in `src`, with its line. For `crate::{a::b, c}` that
/// is `a` and `c`. Names that are not modules (`crate::NodeId`, `self`) are the caller's to drop.
fn crate_refs(src: &str) -> Vec<(String, usize)> {
    let toks = lex(src);
    let mut refs = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let is_crate_path = matches!(&toks[i].0, Tok::Word(w) if w == "crate")
            && toks.get(i + 1).is_some_and(|(t, _)| *t == Tok::PathSep);
        if !is_crate_path {
            i += 1;
            continue;
        }
        i += 2;
        match toks.get(i) {
            Some((Tok::Word(name), line)) => refs.push((name.clone(), *line)),
            Some((Tok::Punct('{'), _)) => {
                // Inside the group, the first word at depth 1 after `{` or `,` is a module.
                let mut depth = 0;
                let mut expect_name = false;
                while let Some((tok, line)) = toks.get(i) {
                    match tok {
                        Tok::Punct('{') => {
                            depth += 1;
                            expect_name = depth == 1;
                        }
                        Tok::Punct('}') => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        Tok::Punct(',') if depth == 1 => expect_name = true,
                        Tok::Word(name) if depth == 1 && expect_name => {
                            refs.push((name.clone(), *line));
                            expect_name = false;
                        }
                        _ => expect_name = false,
                    }
                    i += 1;
                }
            }
            _ => {}
        }
    }
    refs
}

/// A broken rule, worded as what to do about it.
#[derive(Debug, PartialEq, Eq)]
enum Problem {
    Unplaced {
        module: String,
    },
    Upward {
        from: String,
        to: String,
        from_layer: u32,
        to_layer: u32,
        sites: Vec<Site>,
    },
    /// Modules that still reach each other once the listed edges are taken out, and their edges.
    Cycle {
        modules: Vec<String>,
        edges: Vec<CycleEdge>,
    },
    /// A listed edge that no longer exists.
    Gone {
        from: String,
        to: String,
        why: String,
    },
    /// A listed edge that exists but breaks no rule.
    Fixed {
        from: String,
        to: String,
        why: String,
        from_layer: u32,
        to_layer: u32,
    },
    Duplicate {
        from: String,
        to: String,
    },
}

/// An edge inside a cycle, with the layers of its ends when both are placed.
#[derive(Debug, PartialEq, Eq)]
struct CycleEdge {
    from: String,
    to: String,
    layers: Option<(u32, u32)>,
    sites: Vec<Site>,
}

impl CycleEdge {
    fn points_down(&self) -> bool {
        matches!(self.layers, Some((a, b)) if a > b)
    }
}

/// Up to three sites, then how many more.
struct Sites<'a>(&'a [Site]);

impl fmt::Display for Sites<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self.0.iter().take(3).map(ToString::to_string).collect();
        write!(f, "{}", shown.join(", "))?;
        if self.0.len() > 3 {
            write!(f, " (+{} more)", self.0.len() - 3)?;
        }
        Ok(())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unplaced { module } => write!(
                f,
                "module `{module}` has no layer: add it to LAYERS in tests/module_graph.rs (it may import its own \
                 layer and below)"
            ),
            Problem::Upward { from, to, from_layer, to_layer, sites } => write!(
                f,
                "upward import `{from}` (layer {from_layer}) -> `{to}` (layer {to_layer}) at {}\n  move what `{from}` \
                 needs down to layer {from_layer} or below, or invert the dependency; while migrating, list \
                 (\"{from}\", \"{to}\", \"why, issue\") in KNOWN_VIOLATIONS",
                Sites(sites)
            ),
            Problem::Cycle { modules, edges } => {
                let names: Vec<String> = modules.iter().map(|m| format!("`{m}`")).collect();
                writeln!(f, "import cycle between {}; every cycle runs through one of:", names.join(", "))?;
                for CycleEdge { from, to, layers, sites } in edges.iter().filter(|e| !e.points_down()) {
                    let direction = match layers {
                        Some((a, b)) if a == b => format!("same layer {a}"),
                        Some((a, b)) => format!("layer {a} -> {b}, upward"),
                        None => "unplaced".to_owned(),
                    };
                    writeln!(f, "  `{from}` -> `{to}` ({direction}) at {}", Sites(sites))?;
                }
                let down: Vec<String> =
                    edges.iter().filter(|e| e.points_down()).map(|e| format!("{} -> {}", e.from, e.to)).collect();
                if !down.is_empty() {
                    writeln!(f, "  (closed by the downward edges {})", down.join(", "))?;
                }
                write!(
                    f,
                    "  remove the imports of one of those edges on every cycle; while migrating, list the edge in \
                     KNOWN_VIOLATIONS"
                )
            }
            Problem::Gone { from, to, why } => write!(
                f,
                "KNOWN_VIOLATIONS lists `{from}` -> `{to}` ({why:?}), but `{from}` no longer imports `{to}`: delete \
                 the entry"
            ),
            Problem::Fixed { from, to, why, from_layer, to_layer } => write!(
                f,
                "KNOWN_VIOLATIONS lists `{from}` -> `{to}` ({why:?}), but that edge no longer points up (layer \
                 {from_layer} -> {to_layer}) and lies on no cycle the listed upward edges leave standing: delete the entry"
            ),
            Problem::Duplicate { from, to } => write!(f, "KNOWN_VIOLATIONS lists `{from}` -> `{to}` twice: keep one"),
        }
    }
}

/// The sets of more than one module in which every module reaches every other through `edges`.
fn cycles<'a>(nodes: &BTreeSet<&'a str>, edges: &BTreeSet<(&'a str, &'a str)>) -> Vec<BTreeSet<&'a str>> {
    // A few dozen modules: a transitive closure is small and plainly right.
    let mut reach: BTreeMap<&str, BTreeSet<&str>> = nodes.iter().map(|&n| (n, BTreeSet::new())).collect();
    for &(from, to) in edges {
        reach.entry(from).or_default().insert(to);
    }
    loop {
        let mut grew = false;
        for &n in nodes {
            let next: BTreeSet<&str> =
                reach[n].iter().flat_map(|m| reach.get(m).into_iter().flatten().copied()).collect();
            let set = reach.entry(n).or_default();
            let before = set.len();
            set.extend(next);
            grew |= set.len() != before;
        }
        if !grew {
            break;
        }
    }
    let mut found: Vec<BTreeSet<&str>> = Vec::new();
    for &n in nodes {
        if found.iter().any(|c| c.contains(n)) {
            continue;
        }
        let component: BTreeSet<&str> =
            reach[n].iter().copied().filter(|&m| m == n || reach.get(m).is_some_and(|r| r.contains(n))).collect();
        if component.len() > 1 {
            found.push(component);
        }
    }
    found
}

/// Every broken rule of `graph` under `layers`, tolerating the edges in `known`.
fn check(graph: &ModuleGraph, layers: &[(&str, u32)], known: &[(&str, &str, &str)]) -> Vec<Problem> {
    let layer = |m: &str| layers.iter().find(|(name, _)| *name == m).map(|&(_, l)| l);
    let listed: BTreeSet<(&str, &str)> = known.iter().map(|&(from, to, _)| (from, to)).collect();
    let mut problems = Vec::new();

    for module in &graph.modules {
        if layer(module).is_none() {
            problems.push(Problem::Unplaced { module: module.clone() });
        }
    }

    let is_upward = |from: &str, to: &str| matches!((layer(from), layer(to)), (Some(a), Some(b)) if a < b);
    for ((from, to), sites) in &graph.edges {
        if is_upward(from, to) && !listed.contains(&(from.as_str(), to.as_str())) {
            problems.push(Problem::Upward {
                from: from.clone(),
                to: to.clone(),
                from_layer: layer(from).unwrap_or_default(),
                to_layer: layer(to).unwrap_or_default(),
                sites: sites.clone(),
            });
        }
    }

    let nodes: BTreeSet<&str> = graph.modules.iter().map(String::as_str).collect();
    let edges: BTreeSet<(&str, &str)> = graph.edges.keys().map(|(from, to)| (from.as_str(), to.as_str())).collect();
    let components = cycles(&nodes, &edges);
    for component in &components {
        let unlisted: BTreeSet<(&str, &str)> = edges
            .iter()
            .copied()
            .filter(|&(from, to)| component.contains(from) && component.contains(to) && !listed.contains(&(from, to)))
            .collect();
        for rest in cycles(component, &unlisted) {
            let edges = unlisted
                .iter()
                .filter(|&&(from, to)| rest.contains(from) && rest.contains(to))
                .map(|&(from, to)| CycleEdge {
                    from: from.to_owned(),
                    to: to.to_owned(),
                    layers: layer(from).zip(layer(to)),
                    sites: graph.edges[&(from.to_owned(), to.to_owned())].clone(),
                })
                .collect();
            problems.push(Problem::Cycle { modules: rest.iter().map(|&m| m.to_owned()).collect(), edges });
        }
    }

    // A listed edge that does not point up is needed while it lies on a cycle that the listed
    // upward edges leave standing.
    let without_listed_upward: BTreeSet<(&str, &str)> =
        edges.iter().copied().filter(|&(from, to)| !(is_upward(from, to) && listed.contains(&(from, to)))).collect();
    let standing = cycles(&nodes, &without_listed_upward);
    let on_cycle = |from: &str, to: &str| standing.iter().any(|c| c.contains(from) && c.contains(to));
    let mut seen = BTreeSet::new();
    for &(from, to, why) in known {
        let (owned_from, owned_to, why) = (from.to_owned(), to.to_owned(), why.to_owned());
        if !seen.insert((from, to)) {
            problems.push(Problem::Duplicate { from: owned_from, to: owned_to });
        } else if !graph.edges.contains_key(&(from.to_owned(), to.to_owned())) {
            problems.push(Problem::Gone { from: owned_from, to: owned_to, why });
        } else if !is_upward(from, to) && !on_cycle(from, to) {
            let (from_layer, to_layer) = (layer(from).unwrap_or_default(), layer(to).unwrap_or_default());
            problems.push(Problem::Fixed { from: owned_from, to: owned_to, why, from_layer, to_layer });
        }
    }
    problems
}

mod tests {
    use super::*;

    const TEST_LAYERS: &[(&str, u32)] = &[("top", 3), ("mid", 2), ("mid2", 2), ("low", 1), ("base", 0)];

    fn names(src: &str) -> Vec<String> {
        crate_refs(src).into_iter().map(|(name, _)| name).collect()
    }

    #[test]
    fn comments_and_literals_are_not_paths() {
        let src = r####"
            // use crate::a;
            /// see [`crate::b::X`]
            //! crate::c
            /* crate::d /* nested crate::e */ crate::f */
            let s = "crate::g \" crate::h";
            let r = r#"crate::i " crate::j"#;
            let r2 = r##"crate::k "# crate::l"##;
            let b = br"crate::m";
            let c = '"'; let q = '\''; let u = '\u{22}';
            fn f<'a>(x: &'a str) -> &'a str { 'outer: loop { break 'outer x; } }
            use crate::real;
        "####;
        assert_eq!(crate_refs(src), vec![("real".to_owned(), 12)]);
    }

    #[test]
    fn use_and_inline_paths_are_found() {
        let src = "use crate::{a::b, c, d::{e, f::{g}}, self};\n\
                   use crate::h::{i, j};\n\
                   use {crate::k, std::fmt};\n\
                   pub(crate) fn x() -> crate::l::T { crate :: m::n(); $crate::o::p!(); crate::NodeId }\n\
                   pub(in crate::q) struct S;\n\
                   extern crate r;";
        assert_eq!(names(src), ["a", "c", "d", "self", "h", "k", "l", "m", "o", "NodeId", "q"]);
        let lines: Vec<usize> = crate_refs("use crate::{\n    a,\n    b::c,\n};").into_iter().map(|(_, l)| l).collect();
        assert_eq!(lines, [2, 3]);
    }

    #[test]
    fn files_map_to_top_level_modules() {
        assert_eq!(top_module("raft/host.rs"), Some("raft"));
        assert_eq!(top_module("raft/mod.rs"), Some("raft"));
        assert_eq!(top_module("node.rs"), Some("node"));
        assert_eq!(top_module("lib.rs"), None);
        assert_eq!(top_module("main.rs"), None);
        assert_eq!(top_module("bin/tool.rs"), None);
    }

    #[test]
    fn graph_keeps_module_edges_with_sites() {
        let files = [
            ("lib.rs", "pub mod top; use crate::low::X;"),
            ("top.rs", "use crate::{low, NodeId};\nuse crate::top::Y;\nfn f() { crate::low::g(); }"),
            ("low/mod.rs", "// crate::top\nmod tests;"),
            ("low/tests.rs", "use crate::top::Z;"),
        ];
        let graph = build_graph(&files, &[]);
        assert_eq!(graph.modules, ["low", "top"].map(str::to_owned).into());
        let keys: Vec<_> = graph.edges.keys().cloned().collect();
        assert_eq!(keys, [("low".to_owned(), "top".to_owned()), ("top".to_owned(), "low".to_owned())]);
        let sites: Vec<String> =
            graph.edges[&("top".to_owned(), "low".to_owned())].iter().map(ToString::to_string).collect();
        assert_eq!(sites, ["src/top.rs:1", "src/top.rs:3"]);

        let exempted = build_graph(&files, &["low/tests.rs"]);
        assert!(!exempted.edges.contains_key(&("low".to_owned(), "top".to_owned())));
    }

    #[test]
    fn an_unplaced_module_fails() {
        let graph = build_graph(&[("stray.rs", "")], &[]);
        assert_eq!(check(&graph, TEST_LAYERS, &[]), [Problem::Unplaced { module: "stray".to_owned() }]);
    }

    #[test]
    fn an_upward_edge_fails_unless_listed() {
        let graph =
            build_graph(&[("low.rs", "use crate::top::X;"), ("top.rs", "use crate::mid2::Y;"), ("mid2.rs", "")], &[]);
        let problems = check(&graph, TEST_LAYERS, &[]);
        let site = Site { file: "low.rs".to_owned(), line: 1 };
        assert_eq!(
            problems,
            [Problem::Upward { from: "low".into(), to: "top".into(), from_layer: 1, to_layer: 3, sites: vec![site] }]
        );
        assert!(problems[0].to_string().contains("src/low.rs:1"), "{}", problems[0]);
        assert_eq!(check(&graph, TEST_LAYERS, &[("low", "top", "issue 1")]), []);
    }

    #[test]
    fn a_two_cycle_in_one_layer_fails_unless_an_edge_is_listed() {
        let graph = build_graph(&[("mid.rs", "use crate::mid2::A;"), ("mid2.rs", "\nfn f() { crate::mid::b() }")], &[]);
        let problems = check(&graph, TEST_LAYERS, &[]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let Problem::Cycle { modules, edges } = &problems[0] else { panic!("{problems:?}") };
        assert_eq!(modules, &["mid", "mid2"]);
        assert_eq!(edges.len(), 2);
        let text = problems[0].to_string();
        assert!(text.contains("`mid2` -> `mid` (same layer 2) at src/mid2.rs:2"), "{text}");
        assert!(text.contains("`mid` -> `mid2` (same layer 2) at src/mid.rs:1"), "{text}");
        assert_eq!(check(&graph, TEST_LAYERS, &[("mid2", "mid", "issue 2")]), []);
    }

    #[test]
    fn a_cycle_through_a_listed_upward_edge_is_tolerated() {
        let files =
            [("top.rs", "use crate::mid::A;"), ("mid.rs", "use crate::low::B;"), ("low.rs", "use crate::top::C;")];
        let graph = build_graph(&files, &[]);
        let problems = check(&graph, TEST_LAYERS, &[]);
        let [Problem::Upward { .. }, cycle @ Problem::Cycle { .. }] = &problems[..] else { panic!("{problems:?}") };
        let text = cycle.to_string();
        assert!(text.contains("`low` -> `top` (layer 1 -> 3, upward) at src/low.rs:1"), "{text}");
        assert!(text.contains("(closed by the downward edges mid -> low, top -> mid)"), "{text}");
        assert_eq!(check(&graph, TEST_LAYERS, &[("low", "top", "issue 3")]), []);
    }

    #[test]
    fn a_cycle_left_once_listed_edges_are_gone_fails() {
        // mid <-> mid2 stays a cycle after the listed low -> top edge is taken out.
        let files = [
            ("top.rs", "use crate::mid::A;"),
            ("mid.rs", "use crate::{low, mid2};"),
            ("mid2.rs", "use crate::mid::B;"),
            ("low.rs", "use crate::top::C;"),
        ];
        let problems = check(&build_graph(&files, &[]), TEST_LAYERS, &[("low", "top", "issue 3")]);
        let [Problem::Cycle { modules, .. }] = &problems[..] else { panic!("{problems:?}") };
        assert_eq!(modules, &["mid", "mid2"]);
    }

    #[test]
    fn a_same_layer_entry_is_stale_once_a_listed_upward_edge_breaks_its_cycle() {
        // mid -> mid2 (same layer) closes a cycle only through the upward mid2 -> top.
        let files =
            [("mid.rs", "use crate::mid2::A;"), ("mid2.rs", "use crate::top::B;"), ("top.rs", "use crate::mid::C;")];
        let graph = build_graph(&files, &[]);
        let upward = ("mid2", "top", "issue 4");
        assert_eq!(check(&graph, TEST_LAYERS, &[upward]), []);
        let problems = check(&graph, TEST_LAYERS, &[upward, ("mid", "mid2", "same layer")]);
        let [Problem::Fixed { from, to, .. }] = &problems[..] else { panic!("{problems:?}") };
        assert_eq!((from.as_str(), to.as_str()), ("mid", "mid2"));
    }

    #[test]
    fn stale_known_violations_fail() {
        let graph = build_graph(&[("top.rs", "use crate::low::A;"), ("low.rs", ""), ("mid.rs", "")], &[]);
        let known = [("low", "top", "gone"), ("top", "low", "fixed"), ("top", "low", "twice"), ("mid", "base", "x")];
        let problems = check(&graph, TEST_LAYERS, &known);
        assert_eq!(
            problems,
            [
                Problem::Gone { from: "low".into(), to: "top".into(), why: "gone".into() },
                Problem::Fixed {
                    from: "top".into(),
                    to: "low".into(),
                    why: "fixed".into(),
                    from_layer: 3,
                    to_layer: 1
                },
                Problem::Duplicate { from: "top".into(), to: "low".into() },
                Problem::Gone { from: "mid".into(), to: "base".into(), why: "x".into() },
            ]
        );
    }
}
