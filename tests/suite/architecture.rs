//! The layout rules of ARCHITECTURE.md, checked on the source itself: no import cycles between
//! files, and the state model knows nothing of storage or of the contract above it.
//!
//! A file depends on another when it names one of that file's module paths (`crate::a::b`,
//! `super::x`, or `s3state::…` from the binary). A module's own `mod.rs` naming its children
//! (declaring and re-exporting them) is not counted: that is the tree, not a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One crate's files, by module path (`remote`, `store::memory`, `` for the root).
struct Crate {
    modules: BTreeMap<String, PathBuf>,
}

fn module_path(root: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(root).unwrap();
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, skip: Option<&Path>, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if Some(path.as_path()) == skip {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, skip, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn load(root: &Path, skip: Option<&Path>) -> Crate {
    let mut files = Vec::new();
    rust_files(root, skip, &mut files);
    Crate {
        modules: files
            .into_iter()
            .map(|file| (module_path(root, &file), file))
            .collect(),
    }
}

/// The code of a file without comments and string contents, so prose never counts as a use.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path expression in `code` that starts with one of `roots` (`crate`, `super`,
/// `s3state`), expanded across `use a::{b, c::{d}}` groups.
fn paths(code: &str, roots: &[&str]) -> Vec<Vec<String>> {
    let tokens: Vec<String> = {
        let mut tokens = Vec::new();
        let mut word = String::new();
        let chars: Vec<char> = code.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_alphanumeric() || c == '_' {
                word.push(c);
            } else {
                if !word.is_empty() {
                    tokens.push(std::mem::take(&mut word));
                }
                if c == ':' && chars.get(i + 1) == Some(&':') {
                    tokens.push("::".into());
                    i += 1;
                } else if "{},;".contains(c) {
                    tokens.push(c.to_string());
                } else if !c.is_whitespace() {
                    tokens.push(" ".into());
                }
            }
            i += 1;
        }
        tokens
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let preceded_by_path = i > 0 && tokens[i - 1] == "::";
        if roots.contains(&tokens[i].as_str()) && !preceded_by_path {
            let (mut prefixes, next) = expand(&tokens, i);
            found.append(&mut prefixes);
            i = next;
        } else {
            i += 1;
        }
    }
    found
}

/// Expands the path starting at `tokens[start]`; returns the full paths and where it ended.
fn expand(tokens: &[String], start: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    let mut i = start;
    loop {
        let Some(token) = tokens.get(i) else {
            return (vec![prefix], i);
        };
        if token == "{" {
            let mut all = Vec::new();
            i += 1;
            while i < tokens.len() && tokens[i] != "}" {
                if tokens[i] == "," {
                    i += 1;
                    continue;
                }
                let (inner, next) = expand(tokens, i);
                for path in inner {
                    let mut full = prefix.clone();
                    full.extend(path);
                    all.push(full);
                }
                i = next;
            }
            return (all, i + 1);
        }
        if token == "::" {
            i += 1;
            continue;
        }
        if token.chars().all(|c| c.is_alphanumeric() || c == '_') {
            prefix.push(token.clone());
            i += 1;
            if tokens.get(i).map(String::as_str) != Some("::") {
                return (vec![prefix], i);
            }
        } else {
            return (vec![prefix], i);
        }
    }
}

/// The longest known module that `path` (relative to the crate root) names.
fn resolve(krate: &Crate, path: &[String]) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|candidate| krate.modules.contains_key(candidate))
}

fn dependencies(krate: &Crate, lib: Option<&Crate>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &krate.modules {
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let edges = graph.entry(module.clone()).or_default();
        let parent: Vec<String> = if module.is_empty() {
            Vec::new()
        } else {
            let mut parts: Vec<String> = module.split("::").map(str::to_owned).collect();
            // A mod.rs is its own module; `super` from it is the parent of that module.
            parts.pop();
            parts
        };
        for path in paths(&code, &["crate", "super", "self"]) {
            let absolute: Vec<String> = match path[0].as_str() {
                "crate" => path[1..].to_vec(),
                "super" => {
                    let mut base = parent.clone();
                    base.extend(path[1..].iter().filter(|p| *p != "super").cloned());
                    base
                }
                _ => {
                    let mut base: Vec<String> = if module.is_empty() {
                        Vec::new()
                    } else {
                        module.split("::").map(str::to_owned).collect()
                    };
                    base.extend(path[1..].iter().cloned());
                    base
                }
            };
            if let Some(target) = resolve(krate, &absolute) {
                let is_child = target
                    .strip_prefix(module.as_str())
                    .is_some_and(|rest| module.is_empty() || rest.starts_with("::"));
                if target != *module && !is_child {
                    edges.insert(target);
                }
            }
        }
        if let Some(lib) = lib {
            for path in paths(&code, &["s3state"]) {
                if let Some(target) = resolve(lib, &path[1..]) {
                    edges.insert(format!("s3state::{target}"));
                }
            }
        }
    }
    graph
}

/// Every cycle (as a list of modules), found by a depth-first search over strongly connected
/// components.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's algorithm.
    struct Search<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        components: Vec<Vec<String>>,
    }
    impl<'g> Search<'g> {
        fn visit(&mut self, node: &'g str) {
            self.index.insert(node, self.next);
            self.low.insert(node, self.next);
            self.next += 1;
            self.stack.push(node);
            self.on_stack.insert(node);
            for target in self.graph.get(node).into_iter().flatten() {
                let target = target.as_str();
                if !self.graph.contains_key(target) {
                    continue;
                }
                if !self.index.contains_key(target) {
                    self.visit(target);
                    let low = self.low[target].min(self.low[node]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(target) {
                    let low = self.index[target].min(self.low[node]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                loop {
                    let member = self.stack.pop().unwrap();
                    self.on_stack.remove(member);
                    component.push(member.to_owned());
                    if member == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.components.push(component);
                }
            }
        }
    }
    let mut search = Search {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        components: Vec::new(),
    };
    for node in graph.keys() {
        if !search.index.contains_key(node.as_str()) {
            search.visit(node);
        }
    }
    search.components
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn library() -> Crate {
    load(&src(), Some(&src().join("bin")))
}

#[test]
fn no_two_files_of_the_library_import_each_other_even_indirectly() {
    let found = cycles(&dependencies(&library(), None));
    assert!(found.is_empty(), "import cycles in src/: {found:#?}");
}

#[test]
fn no_two_files_of_the_cli_import_each_other_even_indirectly() {
    let bin = src().join("bin").join("s3state");
    let cli = load(&bin, None);
    let found = cycles(&dependencies(&cli, Some(&library())));
    assert!(
        found.is_empty(),
        "import cycles in src/bin/s3state/: {found:#?}"
    );
}

#[test]
fn the_state_model_knows_nothing_of_storage_or_of_the_contract() {
    let graph = dependencies(&library(), None);
    let mut offending = Vec::new();
    for (module, targets) in &graph {
        if module == "state" || module.starts_with("state::") {
            for target in targets {
                if !(target == "state" || target.starts_with("state::") || target == "error") {
                    offending.push(format!("{module} -> {target}"));
                }
            }
        }
    }
    assert!(
        offending.is_empty(),
        "the state model imports upward: {offending:?}"
    );
}

#[test]
fn the_checker_finds_a_cycle_when_there_is_one() {
    // The checker itself must be able to fail.
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c"]]);
    let tokens = paths("use crate::{a::{b, c}, d};", &["crate"]);
    assert_eq!(
        tokens,
        vec![
            vec!["crate", "a", "b"],
            vec!["crate", "a", "c"],
            vec!["crate", "d"]
        ]
    );
}

/// The encryption layer works on bytes: it imports nothing of the crate (issue 24), so the
/// rules above it never depend on whether a state is encrypted.
#[test]
fn the_encryption_layer_knows_nothing_of_the_rules_or_of_storage() {
    let graph = dependencies(&library(), None);
    let mut offending = Vec::new();
    for (module, targets) in &graph {
        if module == "encryption" || module.starts_with("encryption::") {
            for target in targets {
                if !(target == "encryption" || target.starts_with("encryption::")) {
                    offending.push(format!("{module} -> {target}"));
                }
            }
        }
    }
    assert!(
        offending.is_empty(),
        "the encryption layer imports upward: {offending:?}"
    );
}
