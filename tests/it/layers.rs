//! The library's layering, enforced: every `crate::` path in `src/` names a module of its own
//! layer or one below (ARCHITECTURE.md, "Layers"), the modules of one layer import each other
//! without a cycle, and the files inside a module do too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

use crate::support::root;

/// Bottom to top. A module may use its own layer and the ones before it.
const LAYERS: &[&[&str]] = &[
    &["error", "atomic", "proto"],
    &["onnx"],
    &["ir"],
    &["stats", "params"],
    &["config", "calib", "check"],
    &["policy"],
    &["rewrite"],
    &["accuracy"],
    &["report"],
    &["pipeline"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The source of a file without its comments (doc links name modules of any layer).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let line_comment = Regex::new(r"(?m)//.*$").unwrap();
    line_comment.replace_all(&text, "").into_owned()
}

/// The first segments of every path starting with `prefix::`, `prefix::{a, b::c}` included.
fn first_segments(code: &str, prefix: &str) -> BTreeSet<String> {
    let re = Regex::new(&format!(r"\b{prefix}::")).unwrap();
    let mut out = BTreeSet::new();
    for m in re.find_iter(code) {
        let rest = &code[m.end()..];
        if let Some(inner) = rest.strip_prefix('{') {
            // the group's top level only: `{a::{b, c}, d}` names a and d
            let (mut depth, mut item) = (0, String::new());
            for ch in inner.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.extend(first_word(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(ch);
            }
            out.extend(first_word(&item));
        } else {
            out.extend(first_word(rest));
        }
    }
    out
}

fn first_word(s: &str) -> Option<String> {
    let w: String = s
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!w.is_empty()).then_some(w)
}

/// The library's files (`cli/`, the top layer, included; the binary's `main.rs` is outside).
fn library_files() -> Vec<(String, PathBuf)> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(&src).unwrap().to_path_buf();
            let first = rel.components().next()?.as_os_str().to_str()?.to_string();
            let module = first.trim_end_matches(".rs").to_string();
            (!matches!(module.as_str(), "main" | "lib")).then_some((module, p))
        })
        .collect()
}

fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn every_library_module_has_a_layer() {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let re = Regex::new(r"(?m)^pub mod (\w+);").unwrap();
    let modules: Vec<String> = re.captures_iter(&lib).map(|c| c[1].to_string()).collect();
    assert!(modules.len() >= 10, "{modules:?}");
    let missing: Vec<_> = modules.iter().filter(|m| layer_of(m).is_none()).collect();
    assert!(
        missing.is_empty(),
        "modules without a layer in LAYERS: {missing:?}"
    );
}

#[test]
fn no_module_imports_a_layer_above_it() {
    let mut upward = Vec::new();
    let mut same_layer: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let files = library_files();
    assert!(files.len() > 40, "{} files", files.len());
    for (module, path) in &files {
        let own = layer_of(module).unwrap_or_else(|| panic!("{module} has no layer"));
        for used in first_segments(&code(path), "crate") {
            if used == *module || used == "self" {
                continue;
            }
            let Some(theirs) = layer_of(&used) else {
                continue; // a crate-root re-export (`crate::Error`)
            };
            if theirs > own {
                upward.push(format!("{} uses crate::{used}", path.display()));
            } else if theirs == own {
                same_layer.entry(module.clone()).or_default().insert(used);
            }
        }
    }
    assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
    assert_eq!(find_cycle(&same_layer), None, "a cycle inside one layer");
}

#[test]
fn the_files_of_a_module_import_each_other_without_a_cycle() {
    let mut by_module: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for (module, path) in library_files() {
        if path.parent().unwrap().file_name().unwrap() == module.as_str() {
            by_module.entry(module).or_default().push(path);
        }
    }
    assert!(by_module.len() >= 8, "{:?}", by_module.keys());
    for (module, paths) in by_module {
        let stem = |p: &Path| p.file_stem().unwrap().to_str().unwrap().to_string();
        let siblings: BTreeSet<String> = paths.iter().map(|p| stem(p)).collect();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in &paths {
            let me = stem(p);
            if me == "mod" {
                continue; // declares and re-exports its children
            }
            let text = code(p);
            // unit tests may reach anywhere in their module
            let text = text.split("#[cfg(test)]").next().unwrap();
            let used = first_segments(text, "super")
                .into_iter()
                .chain(first_segments(text, &format!("crate::{module}")));
            for u in used {
                if u != me && u != "mod" && siblings.contains(&u) {
                    edges.entry(me.clone()).or_default().insert(u);
                }
            }
        }
        assert_eq!(
            find_cycle(&edges),
            None,
            "a cycle between the files of {module}"
        );
    }
}

#[test]
fn the_scanner_sees_grouped_and_nested_imports() {
    let code = "use crate::{a::{B, C}, d, e::f::G};\nlet x = crate::h::i();";
    let got: Vec<_> = first_segments(code, "crate").into_iter().collect();
    assert_eq!(got, ["a", "d", "e", "h"]);
    let mut edges = BTreeMap::new();
    edges.insert("x".to_string(), BTreeSet::from(["y".to_string()]));
    edges.insert("y".to_string(), BTreeSet::from(["x".to_string()]));
    assert_eq!(find_cycle(&edges).map(|c| c.len()), Some(3));
}
