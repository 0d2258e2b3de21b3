//! The driver's modules form layers (spec/06-node.md §1.2): no module in `src/daemon/`
//! imports, directly or through others, a module that imports it. Read from the sources:
//! every `super::<module>` a file names is an edge. A module's own directory (its test
//! files, `src/daemon/reach/`) belongs to it: its `super::` is the module itself.

use std::collections::{BTreeMap, BTreeSet};

fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/daemon");
    let mut graph = BTreeMap::new();
    let files: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| {
            f.path()
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .collect();
    for f in &files {
        let path = f.path();
        let Some(name) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        if name == "mod" || path.is_dir() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut deps = BTreeSet::new();
        for (i, _) in text.match_indices("super::") {
            let rest = &text[i + "super::".len()..];
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if modules.contains(&ident) && ident != name {
                deps.insert(ident);
            }
        }
        // `use super::{a, b}` names modules too.
        for (i, _) in text.match_indices("super::{") {
            let rest = &text[i + "super::{".len()..];
            let group = &rest[..rest.find('}').unwrap_or(0)];
            for part in group.split(',') {
                let ident = part.trim().split("::").next().unwrap_or("").to_owned();
                if modules.contains(&ident) && ident != name {
                    deps.insert(ident);
                }
            }
        }
        graph.insert(name, deps);
    }
    graph
}

fn cycle_from(
    g: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|p| p == node) {
        let mut c = path[at..].to_vec();
        c.push(node.to_owned());
        return Some(c);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_owned());
    for d in g.get(node).into_iter().flatten() {
        if let Some(c) = cycle_from(g, d, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(node.to_owned());
    None
}

#[test]
fn the_driver_modules_have_no_import_cycle() {
    let g = edges();
    assert!(g.len() > 5, "read the driver's modules: {g:?}");
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(c) = cycle_from(&g, m, &mut Vec::new(), &mut done) {
            panic!("import cycle in src/daemon/: {}", c.join(" → "));
        }
    }
    let edges: usize = g.values().map(BTreeSet::len).sum();
    println!(
        "src/daemon/: {} modules, {edges} imports, no cycle",
        g.len()
    );
}
