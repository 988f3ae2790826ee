//! The layering the compiler enforces: `pier-xds` (with the shared model) and `pier-kafka` know
//! nothing of Kubernetes, so neither may depend on `kube` or `k8s-openapi`, directly or through
//! another crate. Offline and fast: reads the manifests and Cargo.lock, never runs cargo.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates that must stay free of Kubernetes, by package name and manifest directory.
const KUBERNETES_FREE: &[(&str, &str)] = &[
    ("pier-xds", "crates/pier-xds"),
    ("pier-kafka", "crates/pier-kafka"),
    ("pier-balance", "crates/pier-balance"),
    ("pier-cruise-control", "crates/pier-cruise-control"),
    ("pier-pki", "crates/pier-pki"),
];

/// Any crate whose name starts with one of these is Kubernetes (`kube`, `kube-client`,
/// `kube-runtime`, ... and `k8s-openapi`).
const KUBERNETES_PREFIXES: &[&str] = &["kube", "k8s-openapi"];

fn is_kubernetes(name: &str) -> bool {
    KUBERNETES_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every crate a manifest names in any dependency table (`[dependencies]`, `[dev-dependencies]`,
/// `[build-dependencies]`, target-specific ones, `[dependencies.NAME]`), by key and by
/// `package = "..."` when renamed.
fn manifest_dependencies(manifest: &str) -> BTreeSet<String> {
    /// Where a line sits: a table of dependencies (`key = spec`), one dependency's own table
    /// (`[dependencies.NAME]`, whose keys are its settings), or elsewhere.
    enum Table {
        Dependencies,
        OneDependency,
        Other,
    }
    let mut deps = BTreeSet::new();
    let mut table = Table::Other;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            let header = line.trim_matches(|c| c == '[' || c == ']');
            table = if header.ends_with("dependencies") {
                Table::Dependencies
            } else if let Some((_, name)) = header.split_once("dependencies.") {
                deps.insert(name.trim_matches('"').to_string());
                Table::OneDependency
            } else {
                Table::Other
            };
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        // A renamed dependency: `package = "real-name"`, inline or in its own table.
        let renamed = |spec: &str| {
            let (_, rest) = spec.split_once("package")?;
            let (_, rest) = rest.trim_start().strip_prefix('=')?.split_once('"')?;
            rest.split('"').next().map(str::to_string)
        };
        match table {
            Table::Dependencies => {
                let name = key.split_once('.').map_or(key, |(k, _)| k);
                deps.insert(name.trim_matches('"').to_string());
                deps.extend(renamed(value));
            }
            Table::OneDependency => deps.extend(renamed(line)),
            _ => {}
        }
    }
    deps
}

/// Cargo.lock as package name → names of its dependencies (all versions of a name merged, so
/// the walk over-approximates and never misses a path).
fn lock_graph(lock: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_deps = false;
    for line in lock.lines().map(str::trim) {
        if line == "[[package]]" {
            current = None;
            in_deps = false;
        } else if let Some(name) = line.strip_prefix("name = ") {
            let name = name.trim_matches('"').to_string();
            graph.entry(name.clone()).or_default();
            current = Some(name);
        } else if line.starts_with("dependencies = [") {
            in_deps = true;
        } else if in_deps && line.starts_with(']') {
            in_deps = false;
        } else if in_deps && let Some(package) = &current {
            // `"name"` or `"name version"` or `"name version (source)"`.
            let dep = line.trim_end_matches(',').trim_matches('"');
            let dep = dep.split(' ').next().unwrap_or(dep).to_string();
            graph.entry(package.clone()).or_default().insert(dep);
        }
    }
    graph
}

/// The path from `root` to the first Kubernetes crate it reaches, if any.
fn path_to_kubernetes(graph: &BTreeMap<String, BTreeSet<String>>, root: &str) -> Option<String> {
    let mut seen = BTreeSet::from([root.to_string()]);
    let mut queue = std::collections::VecDeque::from([vec![root.to_string()]]);
    while let Some(path) = queue.pop_front() {
        let last = path.last().expect("paths are never empty");
        for dep in graph.get(last).into_iter().flatten() {
            let mut next = path.clone();
            next.push(dep.clone());
            if is_kubernetes(dep) {
                return Some(next.join(" → "));
            }
            if seen.insert(dep.clone()) {
                queue.push_back(next);
            }
        }
    }
    None
}

#[test]
fn xds_and_kafka_crates_name_no_kubernetes_dependency() {
    for (name, dir) in KUBERNETES_FREE {
        let manifest = read(&repo().join(dir).join("Cargo.toml"));
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{dir}/Cargo.toml is not {name}"
        );
        let deps = manifest_dependencies(&manifest);
        assert!(
            !deps.is_empty(),
            "no dependencies parsed from {dir}/Cargo.toml"
        );
        let kubernetes: Vec<_> = deps.iter().filter(|d| is_kubernetes(d)).collect();
        assert!(
            kubernetes.is_empty(),
            "{name} must know nothing of Kubernetes, but {dir}/Cargo.toml depends on {kubernetes:?}"
        );
    }
}

#[test]
fn xds_and_kafka_crates_reach_no_kubernetes_crate_through_others() {
    let graph = lock_graph(&read(&repo().join("Cargo.lock")));
    // The walk itself works: the operator does reach Kubernetes.
    assert!(path_to_kubernetes(&graph, "pier").is_some());
    for (name, _) in KUBERNETES_FREE {
        assert!(graph.contains_key(*name), "{name} is not in Cargo.lock");
        if let Some(path) = path_to_kubernetes(&graph, name) {
            panic!("{name} must know nothing of Kubernetes, but Cargo.lock has {path}");
        }
    }
}

#[test]
fn the_manifest_parser_sees_every_form_of_dependency() {
    let manifest = r#"
[package]
name = "x"

[dependencies]
tokio.workspace = true
serde = { workspace = true, features = ["derive"] }
client = { package = "kube-client", version = "1" }

[target.'cfg(unix)'.dependencies]
k8s-openapi = "0.29"

[dev-dependencies.kube]
version = "5"
"#;
    let deps = manifest_dependencies(manifest);
    for dep in [
        "tokio",
        "serde",
        "client",
        "kube-client",
        "k8s-openapi",
        "kube",
    ] {
        assert!(deps.contains(dep), "{dep} not in {deps:?}");
    }
    assert!(!deps.contains("name"), "{deps:?}");
    assert!(!deps.contains("version"), "{deps:?}");
}

#[test]
fn crates_that_need_no_unsafe_forbid_it() {
    for lib in [
        "src/lib.rs",
        "src/main.rs",
        "crates/pier-xds/src/lib.rs",
        "crates/pier-kafka/src/lib.rs",
        "crates/pier-balance/src/lib.rs",
        "crates/pier-cruise-control/src/lib.rs",
        "crates/pier-pki/src/lib.rs",
    ] {
        assert!(
            read(&repo().join(lib)).contains("#![forbid(unsafe_code)]"),
            "{lib} lacks #![forbid(unsafe_code)] (only dev/testenv needs unsafe, for fork and prctl)"
        );
    }
}
