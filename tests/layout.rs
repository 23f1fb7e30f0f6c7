//! The layout rules of the crate, checked on the source tree itself (std only, no parsing
//! crate): the core (everything in `src/` but `src/glue/`) never touches the Workers glue or
//! its crates; no two modules of `src/` and `objects/` import each other, directly or round a
//! longer loop; and no file's non-test part grows past [`MAX_LINES`] lines.
//!
//! The checker reads each `.rs` file, strips comments, string and character literals with a
//! small lexer, drops test-only items (`#[cfg(test)] mod tests { … }`, any other
//! `#[cfg(test)]` item, `tests.rs` child files), and collects every path reference: `use`
//! trees (brace groups expanded) and inline paths such as `crate::a::b::f(`, `super::x` or
//! `self::y`. Each resolves to the longest module path that is a file of the tree, which gives
//! a file-level module graph; Tarjan's algorithm finds its strongly connected components, and
//! every component of more than one module is a cycle. A `pub use child::…` in a `mod.rs` is
//! an edge parent → child, so a child that imports through its parent's re-exports closes a
//! cycle: children import the defining module instead. `ROOMKEEPER_LAYOUT_GRAPH=1 cargo test
//! --test layout no_module_import_cycles -- --nocapture` prints every edge. The unit tests at
//! the end check the checker on small in-memory trees.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

/// The most lines the non-test part of a file (the lines before its first `#[cfg(test)]`)
/// may have.
const MAX_LINES: usize = 800;

/// One source file: its path relative to the crate root (`src/rooms/room.rs`) and its text.
#[derive(Debug, Clone)]
struct SourceFile {
    rel: String,
    text: String,
}

/// Every `.rs` file under `src/` and `objects/` of the crate, sorted by path.
fn real_tree() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for top in ["src", "objects"] {
        collect(root, &root.join(top), &mut files);
    }
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    assert!(
        files.iter().any(|f| f.rel == "src/lib.rs"),
        "no src/lib.rs under {}",
        root.display()
    );
    files
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<SourceFile>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(root)
                .expect("under the crate root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            out.push(SourceFile { rel, text });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rule 1: the core has no Workers dependency.

/// Whether a file is part of the core: `src/` but not `src/glue/`.
fn is_core(rel: &str) -> bool {
    rel.starts_with("src/") && !rel.starts_with("src/glue/")
}

/// Text that marks a Workers dependency in a core file.
const FORBIDDEN: &[&str] = &[
    "worker::",
    "use worker",
    "js_sys",
    "wasm_bindgen",
    "web_sys",
    "crate::glue",
    "crate::objects",
];

/// Every line of a core file that mentions the Workers glue or its crates, as
/// `file:line: what: the line`. Comment lines (starting with `//`) are ignored, and so are
/// the cfg-gated `mod glue;` and `mod objects;` of `src/lib.rs` (with their `#[path]`).
fn boundary_violations(files: &[SourceFile]) -> Vec<String> {
    let mut out = Vec::new();
    for f in files.iter().filter(|f| is_core(&f.rel)) {
        let lines: Vec<&str> = f.text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            if t.starts_with("//") {
                continue;
            }
            if f.rel == "src/lib.rs" && lib_gate_line(&lines, i) {
                continue;
            }
            let mut hits: Vec<&str> = FORBIDDEN
                .iter()
                .copied()
                .filter(|p| mentions(t, p))
                .collect();
            let squeezed: String = t.chars().filter(|c| !c.is_whitespace()).collect();
            if squeezed.contains("target_arch=\"wasm32\"") {
                hits.push("cfg(target_arch = \"wasm32\")");
            }
            if !hits.is_empty() {
                out.push(format!("{}:{}: {}: {t}", f.rel, i + 1, hits.join(", ")));
            }
        }
    }
    out
}

/// Whether `text` contains `pattern` starting at a word boundary (so `worker::` does not
/// match `my_worker::`).
fn mentions(text: &str, pattern: &str) -> bool {
    text.match_indices(pattern).any(|(at, _)| {
        !text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// In `src/lib.rs`: line `i` is an attribute of, or is, a `mod glue;` or `mod objects;`
/// declaration (the wasm-only modules are mounted there, cfg-gated).
fn lib_gate_line(lines: &[&str], i: usize) -> bool {
    let is_gated_mod = |t: &str| {
        let t = t.strip_prefix("pub ").unwrap_or(t);
        t == "mod glue;" || t == "mod objects;"
    };
    let mut j = i;
    while j < lines.len() {
        let t = lines[j].trim();
        if is_gated_mod(t) {
            return true;
        }
        if !t.starts_with("#[") {
            return false;
        }
        j += 1;
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Rule 2: no module import cycles.

/// A token of Rust source, with comments and literals already gone.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    /// A string, character or number literal.
    Lit,
    Punct(char),
}

/// Splits Rust source into tokens with their (1-based) line numbers, dropping comments
/// (nested block comments included) and the contents of string, raw string and character
/// literals; lifetimes stay as a `'` and an identifier.
fn lex(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            toks.push((Tok::Lit, line));
            i = skip_string(&c, i + 1, &mut line);
        } else if ch == '\'' {
            if at(i + 1) == '\\' {
                // An escaped character literal: '\n', '\'', '\u{1F600}'.
                toks.push((Tok::Lit, line));
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' && at(i + 1) != '\n' {
                toks.push((Tok::Lit, line));
                i += 3;
            } else {
                // A lifetime or loop label.
                toks.push((Tok::Punct('\''), line));
                i += 1;
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
            if raw_prefix && (at(i) == '"' || (at(i) == '#' && matches!(at(i + 1), '"' | '#'))) {
                let mut hashes = 0;
                while at(i) == '#' {
                    hashes += 1;
                    i += 1;
                }
                i += 1; // the opening quote
                toks.push((Tok::Lit, line));
                loop {
                    if i >= c.len() {
                        break;
                    }
                    if c[i] == '"' && (1..=hashes).all(|h| at(i + h) == '#') {
                        i += 1 + hashes;
                        break;
                    }
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            } else if matches!(word.as_str(), "b" | "c") && at(i) == '"' {
                toks.push((Tok::Lit, line));
                i = skip_string(&c, i + 1, &mut line);
            } else if word == "b" && at(i) == '\'' {
                toks.push((Tok::Lit, line));
                i += 1;
                if at(i) == '\\' {
                    i += 2;
                }
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if word == "r" && at(i) == '#' && (at(i + 1).is_alphabetic() || at(i + 1) == '_')
            {
                // A raw identifier, r#type.
                let start = i + 1;
                i += 1;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
                toks.push((Tok::Ident(c[start..i].iter().collect()), line));
            } else {
                toks.push((Tok::Ident(word), line));
            }
        } else if ch.is_ascii_digit() {
            while i < c.len()
                && (c[i].is_alphanumeric()
                    || c[i] == '_'
                    || (c[i] == '.' && at(i + 1).is_ascii_digit()))
            {
                i += 1;
            }
            toks.push((Tok::Lit, line));
        } else if ch == ':' && at(i + 1) == ':' {
            toks.push((Tok::Path, line));
            i += 2;
        } else {
            toks.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    toks
}

/// Skips a (non-raw) string literal body from just after its opening quote; returns the
/// index after the closing quote.
fn skip_string(c: &[char], mut i: usize, line: &mut usize) -> usize {
    while i < c.len() {
        match c[i] {
            '\\' => {
                if c.get(i + 1) == Some(&'\n') {
                    *line += 1;
                }
                i += 2;
            }
            '"' => return i + 1,
            '\n' => {
                *line += 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    i
}

/// A path reference found in a file: the module it was written in (the file's module path
/// plus any inline `mod x { … }` it is inside), its segments, and its line.
#[derive(Debug, Clone, PartialEq)]
struct PathRef {
    scope: Vec<String>,
    segs: Vec<String>,
    line: usize,
}

/// The module path of a file: `src/lib.rs` → `[]` (the crate root), `src/rooms/mod.rs` →
/// `rooms`, `src/rooms/room.rs` → `rooms::room`, `objects/rooms/room.rs` →
/// `objects::rooms::room` (objects/ is mounted as `crate::objects`). `None` for files that are
/// not modules of the tree and for test-only `tests.rs` children.
fn module_path(rel: &str) -> Option<Vec<String>> {
    let (mut segs, rest): (Vec<String>, &str) = if let Some(r) = rel.strip_prefix("src/") {
        (Vec::new(), r)
    } else if let Some(r) = rel.strip_prefix("objects/") {
        (vec!["objects".to_string()], r)
    } else {
        return None;
    };
    let rest = rest.strip_suffix(".rs")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let (last, dirs) = parts.split_last()?;
    if *last == "tests" {
        return None;
    }
    segs.extend(dirs.iter().map(|s| s.to_string()));
    let top_file = segs.is_empty() || (segs.len() == 1 && rel.starts_with("objects/"));
    match *last {
        "mod" => {}
        "lib" | "main" if top_file && rel.starts_with("src/") => {}
        name => segs.push(name.to_string()),
    }
    Some(segs)
}

/// Every path reference in a file's non-test code. Panics if the braces of what is left do
/// not balance (the lexer misread the file, so its findings could not be trusted).
fn path_refs(rel: &str, file_module: &[String], src: &str) -> Vec<PathRef> {
    let toks = lex(src);
    let mut out = Vec::new();
    // Inline modules we are inside: (name, brace depth of their body).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let scope = |inline: &[(String, usize)]| {
        let mut s = file_module.to_vec();
        s.extend(inline.iter().map(|(n, _)| n.clone()));
        s
    };
    let mut i = 0;
    while i < toks.len() {
        let (tok, line) = (&toks[i].0, toks[i].1);
        match tok {
            Tok::Punct('#') => {
                let inner = toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Punct('!'));
                let open = if inner { i + 2 } else { i + 1 };
                if toks.get(open).map(|t| &t.0) == Some(&Tok::Punct('[')) {
                    let close = matching(&toks, open);
                    if is_cfg_test(&toks[open + 1..close]) {
                        if inner {
                            // `#![cfg(test)]`: the whole file (or inline module) is test-only.
                            return out;
                        }
                        i = skip_item(&toks, close + 1);
                        continue;
                    }
                }
                i += 1;
            }
            Tok::Ident(w) if w == "mod" => {
                if let (Some((Tok::Ident(name), _)), Some((Tok::Punct('{'), _))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((name.clone(), depth + 1));
                    i += 2;
                } else {
                    i += 1;
                }
            }
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            Tok::Ident(w) if w == "use" => {
                let mut end = i + 1;
                let mut paths = Vec::new();
                use_tree(&toks, &mut end, Vec::new(), &mut paths);
                while end < toks.len() && toks[end].0 != Tok::Punct(';') {
                    end += 1;
                }
                let s = scope(&inline);
                for (segs, line) in paths {
                    out.push(PathRef {
                        scope: s.clone(),
                        segs,
                        line,
                    });
                }
                i = end + 1;
            }
            Tok::Ident(first) => {
                let after_path = i > 0 && toks[i - 1].0 == Tok::Path;
                let mut segs = vec![first.clone()];
                let mut k = i + 1;
                while let (Some((Tok::Path, _)), Some((Tok::Ident(s), _))) =
                    (toks.get(k), toks.get(k + 1))
                {
                    segs.push(s.clone());
                    k += 2;
                }
                if !after_path && segs.len() >= 2 {
                    out.push(PathRef {
                        scope: scope(&inline),
                        segs,
                        line,
                    });
                }
                i = k;
            }
            _ => i += 1,
        }
    }
    assert!(
        depth == 0 && inline.is_empty(),
        "{rel}: braces do not balance once comments and literals are gone; \
         tests/layout.rs misread this file"
    );
    out
}

/// Whether an attribute's contents are exactly `cfg(test)`.
fn is_cfg_test(body: &[(Tok, usize)]) -> bool {
    let want = [
        Tok::Ident("cfg".into()),
        Tok::Punct('('),
        Tok::Ident("test".into()),
        Tok::Punct(')'),
    ];
    body.len() == want.len() && body.iter().zip(&want).all(|((t, _), w)| t == w)
}

/// The index of the bracket closing the one at `open` (`(`, `[` or `{`).
fn matching(toks: &[(Tok, usize)], open: usize) -> usize {
    let mut depth = 0usize;
    for (k, (t, _)) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return k;
                }
            }
            _ => {}
        }
    }
    toks.len().saturating_sub(1)
}

/// Skips one item starting at `i` (its further attributes, then up to its `;` or the end of
/// its `{ … }` body); returns the index after it.
fn skip_item(toks: &[(Tok, usize)], mut i: usize) -> usize {
    while toks.get(i).map(|t| &t.0) == Some(&Tok::Punct('#'))
        && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Punct('['))
    {
        i = matching(toks, i + 1) + 1;
    }
    while i < toks.len() {
        match toks[i].0 {
            Tok::Punct(';') => return i + 1,
            Tok::Punct('{') => return matching(toks, i) + 1,
            Tok::Punct('(' | '[') => i = matching(toks, i) + 1,
            _ => i += 1,
        }
    }
    i
}

/// Parses a `use` tree from `*i`, expanding brace groups: every path it imports, with the
/// segments of `prefix` first, and the line of its last segment. A trailing `self`
/// (`a::{self, b}`) is dropped; `*` and `as x` end a path.
fn use_tree(
    toks: &[(Tok, usize)],
    i: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, usize)>,
) {
    let mut segs = prefix;
    if toks.get(*i).map(|t| &t.0) == Some(&Tok::Path) {
        *i += 1; // `use ::std::…`
    }
    loop {
        match toks.get(*i).map(|t| &t.0) {
            Some(Tok::Ident(s)) => {
                if s != "self" || segs.is_empty() {
                    segs.push(s.clone());
                }
                let line = toks[*i].1;
                *i += 1;
                if toks.get(*i).map(|t| &t.0) == Some(&Tok::Path) {
                    *i += 1;
                    continue;
                }
                if toks.get(*i).map(|t| &t.0) == Some(&Tok::Ident("as".into())) {
                    *i += 2;
                }
                out.push((segs, line));
                return;
            }
            Some(Tok::Punct('*')) => {
                out.push((segs, toks[*i].1));
                *i += 1;
                return;
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                loop {
                    match toks.get(*i).map(|t| &t.0) {
                        None => return,
                        Some(Tok::Punct('}')) => {
                            *i += 1;
                            return;
                        }
                        Some(Tok::Punct(',')) => *i += 1,
                        Some(_) => {
                            let before = *i;
                            use_tree(toks, i, segs.clone(), out);
                            if *i == before {
                                *i += 1;
                            }
                        }
                    }
                }
            }
            _ => return,
        }
    }
}

/// The absolute module path a reference written in module `scope` points at (`crate::…`,
/// `super::…`, `self::…`, or relative to `scope` for anything else, as a `pub use child::x`
/// in a `mod.rs` is); `None` if `super` climbs above the crate root.
fn absolute(scope: &[String], segs: &[String]) -> Option<Vec<String>> {
    let first = segs.first()?.as_str();
    match first {
        "crate" => Some(segs[1..].to_vec()),
        "self" => Some([scope, &segs[1..]].concat()),
        "super" => {
            let ups = segs.iter().take_while(|s| *s == "super").count();
            let base = scope.len().checked_sub(ups)?;
            Some([&scope[..base], &segs[ups..]].concat())
        }
        _ => Some([scope, segs].concat()),
    }
}

/// One import of one module by another: where it is written and what it says.
#[derive(Debug, Clone)]
struct Edge {
    from: usize,
    to: usize,
    file: String,
    line: usize,
    path: String,
}

/// The module graph of a tree: node names (`crate` for the root) and file-level edges.
#[derive(Debug)]
struct Graph {
    names: Vec<String>,
    edges: Vec<Edge>,
}

fn display(m: &[String]) -> String {
    if m.is_empty() {
        "crate".to_string()
    } else {
        m.join("::")
    }
}

fn module_graph(files: &[SourceFile]) -> Graph {
    let mut index: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    let mut nodes: Vec<(Vec<String>, &SourceFile)> = Vec::new();
    for f in files {
        if let Some(m) = module_path(&f.rel) {
            index.insert(m.clone(), nodes.len());
            nodes.push((m, f));
        }
    }
    let mut edges = Vec::new();
    for (from, (m, f)) in nodes.iter().enumerate() {
        for r in path_refs(&f.rel, m, &f.text) {
            let Some(abs) = absolute(&r.scope, &r.segs) else {
                continue;
            };
            let to = (0..=abs.len())
                .rev()
                .find_map(|n| index.get(&abs[..n]).copied());
            if let Some(to) = to.filter(|&to| to != from) {
                edges.push(Edge {
                    from,
                    to,
                    file: f.rel.clone(),
                    line: r.line,
                    path: r.segs.join("::"),
                });
            }
        }
    }
    Graph {
        names: nodes.iter().map(|(m, _)| display(m)).collect(),
        edges,
    }
}

/// Tarjan's strongly connected components of a graph of `n` nodes.
fn tarjan(n: usize, adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        adj: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        sccs: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        let adj = s.adj;
        for &w in &adj[v] {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut scc = Vec::new();
            loop {
                let w = s.stack.pop().expect("v is on the stack");
                s.on_stack[w] = false;
                scc.push(w);
                if w == v {
                    break;
                }
            }
            s.sccs.push(scc);
        }
    }
    let mut s = State {
        adj,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        sccs: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.sccs
}

/// Every import cycle (strongly connected component of more than one module), each as its
/// sorted module names and a readable list of the edges inside it.
fn import_cycles(files: &[SourceFile]) -> Vec<(Vec<String>, String)> {
    let g = module_graph(files);
    let n = g.names.len();
    let mut adj = vec![Vec::new(); n];
    for e in &g.edges {
        if !adj[e.from].contains(&e.to) {
            adj[e.from].push(e.to);
        }
    }
    let mut cycles = Vec::new();
    for scc in tarjan(n, &adj) {
        if scc.len() < 2 {
            continue;
        }
        let members: BTreeSet<usize> = scc.iter().copied().collect();
        let mut names: Vec<String> = scc.iter().map(|&v| g.names[v].clone()).collect();
        names.sort();
        // Edges inside the component, one line per (from, to): its first place and how many
        // more there are.
        let mut by_pair: BTreeMap<(String, String), Vec<&Edge>> = BTreeMap::new();
        for e in &g.edges {
            if members.contains(&e.from) && members.contains(&e.to) {
                by_pair
                    .entry((g.names[e.from].clone(), g.names[e.to].clone()))
                    .or_default()
                    .push(e);
            }
        }
        let width = by_pair
            .keys()
            .map(|(a, b)| a.len() + b.len() + 4)
            .max()
            .unwrap_or(0);
        let mut text = String::new();
        for ((a, b), es) in &by_pair {
            let e = es[0];
            let arrow = format!("{a} -> {b}");
            let _ = write!(
                text,
                "    {arrow:width$}  {}:{}  {}",
                e.file, e.line, e.path
            );
            let more: BTreeSet<usize> = es[1..]
                .iter()
                .map(|e| e.line)
                .filter(|&l| l != e.line)
                .collect();
            if !more.is_empty() {
                let more: Vec<String> = more.iter().map(usize::to_string).collect();
                let _ = write!(text, "  (also line {})", more.join(", "));
            }
            text.push('\n');
        }
        cycles.push((names, text));
    }
    cycles.sort();
    cycles
}

/// The cycles as one readable report (empty when there are none).
fn cycle_report(files: &[SourceFile]) -> String {
    let cycles = import_cycles(files);
    let mut out = String::new();
    for (k, (names, edges)) in cycles.iter().enumerate() {
        let _ = writeln!(
            out,
            "cycle {} of {} ({} modules): {}",
            k + 1,
            cycles.len(),
            names.len(),
            names.join(", ")
        );
        out.push_str(edges);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Rule 3: files stay small.

/// Lines of a file before its first `#[cfg(test)]` line.
fn non_test_lines(text: &str) -> usize {
    text.lines()
        .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
        .count()
}

/// Files of `src/` and `objects/` whose non-test part is over [`MAX_LINES`], largest first.
fn oversized(files: &[SourceFile]) -> Vec<(String, usize)> {
    let mut big: Vec<(String, usize)> = files
        .iter()
        .filter(|f| f.rel.starts_with("src/") || f.rel.starts_with("objects/"))
        .map(|f| (f.rel.clone(), non_test_lines(&f.text)))
        .filter(|(_, n)| *n > MAX_LINES)
        .collect();
    big.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    big
}

// ---------------------------------------------------------------------------------------------
// The rules on the real tree.

#[test]
fn core_has_no_workers_dependency() {
    let v = boundary_violations(&real_tree());
    assert!(
        v.is_empty(),
        "the core (src/ but src/glue/) must not use the Workers glue or its crates; \
         move this code to src/glue/ or objects/:\n{}",
        v.join("\n")
    );
}

#[test]
fn no_module_import_cycles() {
    let files = real_tree();
    if std::env::var_os("ROOMKEEPER_LAYOUT_GRAPH").is_some() {
        let g = module_graph(&files);
        for e in &g.edges {
            eprintln!(
                "{} -> {}  {}:{}  {}",
                g.names[e.from], g.names[e.to], e.file, e.line, e.path
            );
        }
    }
    let report = cycle_report(&files);
    assert!(
        report.is_empty(),
        "modules of src/ and objects/ import each other (A -> B: A refers to B at file:line). \
         Break each cycle; a child imports the module that defines an item, not its parent's \
         re-export:\n{report}"
    );
}

#[test]
fn files_stay_small() {
    let big = oversized(&real_tree());
    let list: Vec<String> = big
        .iter()
        .map(|(f, n)| format!("    {f}: {n} lines"))
        .collect();
    assert!(
        big.is_empty(),
        "{} file(s) over {MAX_LINES} lines before their first #[cfg(test)]; split them:\n{}",
        big.len(),
        list.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The checker on small in-memory trees.

mod checker {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Vec<SourceFile> {
        files
            .iter()
            .map(|(rel, text)| SourceFile {
                rel: rel.to_string(),
                text: text.to_string(),
            })
            .collect()
    }

    fn edges(files: &[SourceFile]) -> BTreeSet<(String, String)> {
        let g = module_graph(files);
        g.edges
            .iter()
            .map(|e| (g.names[e.from].clone(), g.names[e.to].clone()))
            .collect()
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    #[test]
    fn module_paths_follow_the_files() {
        let m = |rel| module_path(rel).map(|m| display(&m));
        assert_eq!(m("src/lib.rs").as_deref(), Some("crate"));
        assert_eq!(m("src/rooms/mod.rs").as_deref(), Some("rooms"));
        assert_eq!(m("src/rooms/room.rs").as_deref(), Some("rooms::room"));
        assert_eq!(m("objects/mod.rs").as_deref(), Some("objects"));
        assert_eq!(
            m("objects/rooms/room.rs").as_deref(),
            Some("objects::rooms::room")
        );
        assert_eq!(m("src/rooms/tests.rs"), None);
    }

    #[test]
    fn a_two_file_cycle_is_found() {
        let t = tree(&[
            ("src/lib.rs", "pub mod a;\npub mod b;\n"),
            ("src/a.rs", "use crate::b::Thing;\npub struct Other;\n"),
            (
                "src/b.rs",
                "pub struct Thing;\nfn f() { crate::a::Other; }\n",
            ),
        ]);
        let cycles = import_cycles(&t);
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        assert_eq!(cycles[0].0, vec!["a", "b"]);
        let report = cycle_report(&t);
        assert!(report.contains("a -> b"), "{report}");
        assert!(report.contains("src/a.rs:1  crate::b::Thing"), "{report}");
        assert!(report.contains("src/b.rs:2  crate::a::Other"), "{report}");
    }

    #[test]
    fn a_parent_re_exporting_a_child_that_imports_a_sibling_is_no_cycle() {
        let t = tree(&[
            ("src/lib.rs", "pub mod rooms;\n"),
            (
                "src/rooms/mod.rs",
                "mod protocol;\nmod room;\npub use room::Room;\npub use self::protocol::Frame;\n",
            ),
            (
                "src/rooms/room.rs",
                "use super::protocol::Frame;\npub struct Room;\n",
            ),
            ("src/rooms/protocol.rs", "pub struct Frame;\n"),
        ]);
        assert_eq!(cycle_report(&t), "");
        let e = edges(&t);
        assert!(e.contains(&pair("rooms", "rooms::room")), "{e:?}");
        assert!(e.contains(&pair("rooms", "rooms::protocol")), "{e:?}");
        assert!(e.contains(&pair("rooms::room", "rooms::protocol")), "{e:?}");
        // `mod x;` is no edge, so the crate root imports nothing here.
        assert!(!e.iter().any(|(a, _)| a == "crate"), "{e:?}");
    }

    #[test]
    fn importing_through_the_parent_re_export_is_a_cycle() {
        let t = tree(&[
            (
                "src/rooms/mod.rs",
                "mod protocol;\nmod room;\npub use protocol::Frame;\n",
            ),
            ("src/rooms/room.rs", "use crate::rooms::Frame;\n"),
            (
                "src/rooms/protocol.rs",
                "pub struct Frame;\nuse super::room;\n",
            ),
        ]);
        let cycles = import_cycles(&t);
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        assert_eq!(cycles[0].0, vec!["rooms", "rooms::protocol", "rooms::room"]);
    }

    #[test]
    fn brace_groups_are_expanded() {
        let t = tree(&[
            ("src/lib.rs", "pub mod a;\npub mod c;\npub mod x;\n"),
            ("src/a/mod.rs", "pub mod b;\n"),
            ("src/a/b.rs", ""),
            ("src/c/mod.rs", "pub mod d;\npub mod e;\n"),
            ("src/c/d.rs", ""),
            ("src/c/e.rs", ""),
            (
                "src/x.rs",
                "use crate::{a::b::{self, Item}, c::{d, e::{F, G as H}}};\n",
            ),
        ]);
        let mut paths = Vec::new();
        let toks = lex("use crate::{a::b::{self, Item}, c::{d, e::{F, G as H}}};");
        use_tree(&toks, &mut 1, Vec::new(), &mut paths);
        let paths: Vec<String> = paths.iter().map(|(p, _)| p.join("::")).collect();
        assert_eq!(
            paths,
            vec![
                "crate::a::b",
                "crate::a::b::Item",
                "crate::c::d",
                "crate::c::e::F",
                "crate::c::e::G"
            ]
        );
        let mut lines = Vec::new();
        use_tree(
            &lex("use crate::{\n    a::b,\n    c::*,\n};"),
            &mut 1,
            Vec::new(),
            &mut lines,
        );
        let lines: Vec<usize> = lines.iter().map(|(_, l)| *l).collect();
        assert_eq!(
            lines,
            vec![2, 3],
            "each path has the line of its last segment"
        );
        let from_x: BTreeSet<String> = edges(&t)
            .into_iter()
            .filter(|(a, _)| a == "x")
            .map(|(_, b)| b)
            .collect();
        let want: BTreeSet<String> = ["a::b", "c::d", "c::e"].map(String::from).into();
        assert_eq!(from_x, want);
    }

    #[test]
    fn super_self_and_inline_paths_resolve() {
        let t = tree(&[
            ("src/a/mod.rs", "pub mod b;\npub mod c;\n"),
            (
                "src/a/b.rs",
                "fn f() { let _ = super::c::g(); }\n\
                 pub mod inner { pub fn h() { super::super::c::g(); } }\n",
            ),
            (
                "src/a/c.rs",
                "pub fn g() { self::k(); crate::z::q::w(); }\nfn k() {}\n",
            ),
            ("src/z/q.rs", ""),
        ]);
        let e = edges(&t);
        assert!(e.contains(&pair("a::b", "a::c")), "{e:?}");
        assert!(e.contains(&pair("a::c", "z::q")), "{e:?}");
        assert_eq!(e.len(), 2, "self::k is a self-edge: {e:?}");
    }

    #[test]
    fn tests_comments_and_strings_are_no_edges() {
        let t = tree(&[
            ("src/a/mod.rs", "pub mod b;\npub use b::X;\n"),
            (
                "src/a/b.rs",
                "// use crate::a::Y;\n/* crate::a::Y */\npub struct X;\n\
                 const S: &str = \"crate::a::Y {\";\nconst R: &str = r#\"super::Y\"#;\n\
                 fn lt<'a>(c: char) -> bool { c == '{' }\n\
                 #[cfg(test)]\nmod tests {\n    use super::super::*;\n    fn f() { crate::a::X; }\n}\n",
            ),
            ("src/a/tests.rs", "use crate::a::b::X;\n"),
        ]);
        assert_eq!(cycle_report(&t), "");
        let e = edges(&t);
        assert_eq!(e, [pair("a", "a::b")].into(), "{e:?}");
    }

    #[test]
    fn a_worker_use_in_a_core_file_is_reported() {
        let t = tree(&[
            (
                "src/lib.rs",
                "pub mod rooms;\n#[cfg(target_arch = \"wasm32\")]\nmod glue;\n\
                 #[cfg(target_arch = \"wasm32\")]\n#[path = \"../objects/mod.rs\"]\nmod objects;\n",
            ),
            (
                "src/rooms/room.rs",
                "// worker:: in a comment is fine\nuse worker::Env;\nfn f() { js_sys::Date::now(); }\n\
                 #[cfg(target_arch = \"wasm32\")]\nfn g() { crate::glue::x(); }\nfn my_worker() {}\n",
            ),
            ("src/glue/mod.rs", "use worker::*;\n"),
            ("objects/mod.rs", "use wasm_bindgen::prelude::*;\n"),
        ]);
        let v = boundary_violations(&t);
        assert_eq!(v.len(), 4, "{v:#?}");
        assert!(
            v[0].starts_with("src/rooms/room.rs:2: worker::, use worker:"),
            "{v:#?}"
        );
        assert!(v[1].starts_with("src/rooms/room.rs:3: js_sys"), "{v:#?}");
        assert!(
            v[2].starts_with("src/rooms/room.rs:4: cfg(target_arch"),
            "{v:#?}"
        );
        assert!(
            v[3].starts_with("src/rooms/room.rs:5: crate::glue"),
            "{v:#?}"
        );
    }

    #[test]
    fn file_size_counts_lines_before_the_tests() {
        let body = "fn f() {}\n".repeat(MAX_LINES);
        let t = tree(&[
            (
                "src/ok.rs",
                format!("{body}#[cfg(test)]\nmod tests {{}}\n").as_str(),
            ),
            ("src/big.rs", format!("{body}fn g() {{}}\n").as_str()),
        ]);
        assert_eq!(
            oversized(&t),
            vec![("src/big.rs".to_string(), MAX_LINES + 1)]
        );
    }
}
