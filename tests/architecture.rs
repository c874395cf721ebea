//! The service crate's module structure, checked from its sources: data flows one way
//! (ingest → queue → worker → moderation/enrichment → storage / dead letters), the support
//! modules sit below the stages, and no file imports another in a circle. A new `use` that
//! climbs back fails here with the offending edge named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules from the bottom up: each may import only modules listed before it.
const LAYERS: &[&str] = &[
    "domain",
    "config",
    "backoff",
    "shutdown",
    "supervisor",
    "http_server",
    "telemetry",
    "queue",
    "moderation",
    "enrich",
    "storage",
    "deadletter",
    "ingest",
    "worker",
    "app",
];

type ModulePath = Vec<String>;

struct SourceFile {
    module: ModulePath,
    /// The source without comments and without its inline test module.
    code: String,
}

fn service_sources() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/service/src");
    let mut files = Vec::new();
    collect_rs(&root, &mut files);
    files
        .into_iter()
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name != "tests.rs" && !name.ends_with("_tests.rs")
        })
        .map(|path| {
            let relative = path.strip_prefix(&root).expect("under the source root");
            let mut module: ModulePath = relative
                .with_extension("")
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if module
                .last()
                .is_some_and(|last| last == "mod" || last == "lib")
            {
                module.pop();
            }
            let source = std::fs::read_to_string(&path).expect("readable source");
            SourceFile {
                module,
                code: production_code(&source),
            }
        })
        .collect()
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// Drops line comments and everything from the inline `#[cfg(test)] mod … {` on: tests may
/// reach anywhere.
fn production_code(source: &str) -> String {
    let mut code = String::new();
    let mut lines = source.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines.peek().is_some_and(|next| {
                let next = next.trim_start();
                next.starts_with("mod ") && next.trim_end().ends_with('{')
            })
        {
            break;
        }
        let without_comment = match trimmed.find("//") {
            Some(at) => &trimmed[..at],
            None => trimmed,
        };
        code.push_str(without_comment);
        code.push('\n');
    }
    code
}

/// Every path the code names that starts with `crate::`, `super::` or `self::`, with `use`
/// trees such as `crate::a::{b, c::d}` expanded.
fn named_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let boundary = at == 0 || !is_ident(rest.as_bytes()[at - 1] as char);
        let after = &rest[at + 4..];
        let Some(end) = after.find(';') else { break };
        if boundary {
            expand_use_tree(&compact(&after[..end]), &mut paths);
        }
        rest = &after[end..];
    }
    let chars: Vec<char> = code.chars().collect();
    for start in 0..chars.len() {
        if start > 0 && (is_ident(chars[start - 1]) || chars[start - 1] == ':') {
            continue;
        }
        let tail: String = chars[start..chars.len().min(start + 200)].iter().collect();
        if ["crate::", "super::", "self::"]
            .iter()
            .any(|prefix| tail.starts_with(prefix))
        {
            let path: String = tail
                .chars()
                .take_while(|c| is_ident(*c) || *c == ':')
                .collect();
            paths.push(path.trim_end_matches(':').to_owned());
        }
    }
    paths
}

/// A `use` tree on one line with single spaces kept only inside `x as y`.
fn compact(tree: &str) -> String {
    let words: Vec<&str> = tree.split_whitespace().collect();
    let mut out = String::new();
    for (i, word) in words.iter().enumerate() {
        if *word == "as" || (i > 0 && words[i - 1] == "as") {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn expand_use_tree(tree: &str, out: &mut Vec<String>) {
    let Some(open) = tree.find('{') else {
        out.push(tree.split(' ').next().unwrap_or(tree).to_owned());
        return;
    };
    let prefix = tree[..open].trim_end_matches("::");
    let inner = tree[open + 1..]
        .strip_suffix('}')
        .unwrap_or(&tree[open + 1..]);
    let mut depth = 0;
    let mut item = String::new();
    for c in inner.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            expand_use_tree(&format!("{prefix}::{item}"), out);
            item.clear();
        } else {
            item.push(c);
        }
    }
    if !item.is_empty() {
        expand_use_tree(&format!("{prefix}::{item}"), out);
    }
}

/// The deepest module of the crate a path names, or `None` for paths outside the crate.
fn resolve(from: &ModulePath, path: &str, modules: &BTreeSet<ModulePath>) -> Option<ModulePath> {
    let mut parts = path.split("::").filter(|p| !p.is_empty()).peekable();
    let mut base: ModulePath = match parts.peek().copied() {
        Some("crate") => {
            parts.next();
            Vec::new()
        }
        Some("self") => {
            parts.next();
            from.clone()
        }
        Some("super") => {
            let mut base = from.clone();
            while parts.peek() == Some(&"super") {
                parts.next();
                base.pop();
            }
            base
        }
        _ => return None,
    };
    for part in parts {
        base.push(part.to_owned());
        if !modules.contains(&base) {
            base.pop();
            break;
        }
    }
    Some(base)
}

fn file_graph() -> BTreeMap<ModulePath, BTreeSet<ModulePath>> {
    let sources = service_sources();
    let modules: BTreeSet<ModulePath> = sources.iter().map(|s| s.module.clone()).collect();
    let mut graph = BTreeMap::new();
    for source in &sources {
        let edges: BTreeSet<ModulePath> = named_paths(&source.code)
            .iter()
            .filter_map(|path| resolve(&source.module, path, &modules))
            .filter(|target| target != &source.module)
            .collect();
        graph.insert(source.module.clone(), edges);
    }
    graph
}

fn name(module: &ModulePath) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

#[test]
fn the_parser_sees_use_trees_and_inline_paths() {
    let paths = named_paths(
        "use crate::{config::WorkerSettings,\n    queue::{consumer::X, offsets as o}};\n\
         use super::routes::Route;\nfn f() { crate::telemetry::register(); }\n",
    );
    for expected in [
        "crate::config::WorkerSettings",
        "crate::queue::consumer::X",
        "crate::queue::offsets",
        "super::routes::Route",
        "crate::telemetry::register",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected} in {paths:?}"
        );
    }
    let code = production_code(
        "use crate::a;\n// use crate::b;\n#[cfg(test)]\nmod tests {\n use crate::c;\n}\n",
    );
    assert_eq!(named_paths(&code), ["crate::a", "crate::a"]);
}

#[test]
fn every_top_level_module_has_a_layer() {
    let graph = file_graph();
    let top: BTreeSet<&str> = graph
        .keys()
        .filter_map(|m| m.first().map(String::as_str))
        .collect();
    let missing: Vec<&str> = top
        .iter()
        .copied()
        .filter(|m| !LAYERS.contains(m))
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a place in LAYERS: {missing:?}"
    );
    assert!(
        top.len() >= 10,
        "the source walk found the crate's modules: {top:?}"
    );
}

#[test]
fn no_module_imports_a_module_above_it() {
    let rank = |module: &ModulePath| {
        module
            .first()
            .and_then(|top| LAYERS.iter().position(|layer| layer == top))
    };
    let mut upward = Vec::new();
    let mut edges = 0;
    for (from, targets) in file_graph() {
        for to in targets {
            let (Some(a), Some(b)) = (rank(&from), rank(&to)) else {
                continue;
            };
            if a != b {
                edges += 1;
                if b > a {
                    upward.push(format!("{} -> {}", name(&from), name(&to)));
                }
            }
        }
    }
    assert!(edges > 20, "the graph has edges between modules ({edges})");
    assert!(upward.is_empty(), "imports that climb: {upward:#?}");
}

#[test]
fn no_file_imports_in_a_circle() {
    let graph = file_graph();
    // A module naming its own ancestor (`super::Item`) reaches the item's defining file
    // through a re-export; only edges between distinct, non-nested files make a circle.
    let nested = |a: &ModulePath, b: &ModulePath| a.starts_with(b) || b.starts_with(a);
    let mut circles = Vec::new();
    for (start, targets) in &graph {
        let mut stack: Vec<(ModulePath, Vec<ModulePath>)> = targets
            .iter()
            .filter(|t| !nested(start, t))
            .map(|t| (t.clone(), vec![start.clone(), t.clone()]))
            .collect();
        let mut seen = BTreeSet::new();
        while let Some((at, trail)) = stack.pop() {
            if &at == start {
                circles.push(trail.iter().map(name).collect::<Vec<_>>().join(" -> "));
                break;
            }
            if !seen.insert(at.clone()) {
                continue;
            }
            for next in graph.get(&at).into_iter().flatten() {
                if !nested(&at, next) {
                    let mut longer = trail.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}
