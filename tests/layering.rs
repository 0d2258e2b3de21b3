//! The crate's folders form layers (src/lib.rs, "The layering rule"; spec/06-node.md §1.2),
//! read from the sources:
//!
//! - between folders: every `crate::<folder>` a file names is an edge; an edge must go to
//!   a lower layer ([`LAYERS`], lowest first), so no folder imports one above it and
//!   folders have no cycle;
//! - the binary's two folders: `src/cli/` (the client) may use `src/control/` (the control
//!   server), never the reverse;
//! - inside each folder of `src/` (and of the binary's, `src/cli/` and `src/control/`): a module's `super::<m>`,
//!   `super::super::<m>`… and `crate::<folder>::<m>` name its siblings; no cycle among
//!   them. A module's own directory (its submodules and test files) belongs to it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A folder may import folders of lower layers only.
const LAYERS: &[&[&str]] = &[
    &["wire", "crypto", "source"],
    &["session", "nat"],
    &["dht", "transport"],
    &["node"],
    &["daemon"],
    &["files"],
    &["fuzzing"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The identifiers after each occurrence of `prefix` (`a`, and each of `{a, b::c}`).
fn names_after(text: &str, prefix: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in text.match_indices(prefix) {
        // Not the tail of a longer path (`super::super::x` counted once, by its own prefix).
        if i >= 2 && &text[i - 2..i] == "::" {
            continue;
        }
        let rest = &text[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(0)];
            out.extend(group.split(',').map(|p| ident(p.trim())));
        } else {
            out.push(ident(rest));
        }
    }
    out
}

/// The module path of a file under `root` (`src/nat/turn/client.rs` → `[turn, client]`).
fn module_path(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The import graph among the modules of `folder` (`src/<folder>` for the library,
/// `crate_path` how its files name it: `crate::nat`).
fn folder_graph(dir: &Path, crate_path: &str) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| {
            let stem = p.file_stem()?.to_string_lossy().into_owned();
            (stem != "mod" && (p.is_dir() || p.extension().is_some_and(|x| x == "rs")))
                .then_some(stem)
        })
        .collect();
    let mut files = Vec::new();
    rust_files(dir, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for f in files {
        let path = module_path(dir, &f);
        let Some(owner) = path.first().cloned() else {
            continue; // the folder's mod.rs: declarations
        };
        let text = std::fs::read_to_string(&f).unwrap();
        let mut named = names_after(&text, &format!("{crate_path}::"));
        // `super::` from a module at depth d reaches the folder after d - 1 steps up.
        let depth = path.len();
        let up = "super::".repeat(depth);
        named.extend(names_after(&text, &up));
        for n in named {
            if modules.contains(&n) && n != owner {
                g.get_mut(&owner).unwrap().insert(n);
            }
        }
    }
    g
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

fn assert_acyclic(what: &str, g: &BTreeMap<String, BTreeSet<String>>) {
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(c) = cycle_from(g, m, &mut Vec::new(), &mut done) {
            panic!("import cycle in {what}: {}", c.join(" → "));
        }
    }
    let edges: usize = g.values().map(BTreeSet::len).sum();
    println!("{what}: {} modules, {edges} imports, no cycle", g.len());
}

fn layer_of(folder: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&folder))
}

#[test]
fn no_folder_imports_its_own_layer_or_above() {
    let root = src();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in std::fs::read_dir(&root).unwrap().flatten() {
        let p = e.path();
        let Some(name) = p.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        // The binary crate's folders: checked by `the_binary_is_client_over_server`.
        if matches!(name.as_str(), "lib" | "main" | "cli" | "control") {
            continue;
        }
        let mut files = Vec::new();
        if p.is_dir() {
            rust_files(&p, &mut files);
        } else {
            files.push(p.clone());
        }
        let Some(layer) = layer_of(&name) else {
            panic!("src/{name} is in no layer: add it to LAYERS and to src/lib.rs");
        };
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for dep in names_after(&text, "crate::") {
                if dep == name || layer_of(&dep).is_none() {
                    continue;
                }
                let dl = layer_of(&dep).unwrap();
                assert!(
                    dl < layer,
                    "{} imports crate::{dep} (layer {dl}) from layer {layer}: {:?}",
                    f.display(),
                    LAYERS
                );
                edges.entry(name.clone()).or_default().insert(dep);
            }
        }
    }
    assert_acyclic("the folders of src/", &edges);
}

#[test]
fn no_folder_has_an_import_cycle() {
    let root = src();
    let mut checked = 0;
    for e in std::fs::read_dir(&root).unwrap().flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        // The CLI is the binary crate: its files name each other `crate::cli::…`.
        let g = folder_graph(&p, &format!("crate::{name}"));
        assert!(!g.is_empty(), "read src/{name}/");
        assert_acyclic(&format!("src/{name}/"), &g);
        checked += 1;
    }
    assert!(checked >= 9, "every folder of src/: {checked}");
}

/// The `dna` binary has two folders: `control`, the daemon's control socket (the server),
/// and `cli`, the command line (its client, and the start of `dna daemon`). The CLI may use
/// the server's pieces (the socket's path, the event hub it starts); the server never
/// names the CLI.
#[test]
fn the_binary_is_client_over_server() {
    let mut files = Vec::new();
    rust_files(&src().join("control"), &mut files);
    assert!(!files.is_empty(), "read src/control/");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("crate::cli") && !text.contains("super::cli"),
            "{} (the control server) imports the CLI",
            f.display()
        );
    }
}
