//! `dev/setup`, the installer of the real components: idempotent, reinstalls only what is
//! missing, and names what is wrong when it fails.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

fn setup_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dev/setup")
}

fn run_setup(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(setup_script()).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running dev/setup")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Lines that mean dev/setup did real work rather than finding a component in place.
fn install_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            ["building", "fetching", "installing"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect()
}

#[test]
fn a_warm_run_installs_nothing() {
    let started = Instant::now();
    let out = run_setup(&[], &[]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    for component in ["debian", "kafka", "envoy", "kubectl", "etcd", "kubernetes"] {
        assert!(
            log.contains(&format!("ok {component}")),
            "{component} missing:\n{log}"
        );
    }
    assert!(
        install_lines(&log).is_empty(),
        "a warm run did work:\n{log}"
    );
    println!("warm dev/setup took {:?}", started.elapsed());
}

#[test]
fn a_removed_component_is_reinstalled_alone() {
    // A cache whose components are links to the real cache's, except Envoy's.
    let real = pier_testenv::paths::cache_dir();
    let cache = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&real).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("envoy-") || name == "bin" || name == "logs" {
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), cache.path().join(&name)).unwrap();
    }
    let out = run_setup(&[], &[("PIER_CACHE", cache.path().as_os_str())]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let work = install_lines(&log);
    assert_eq!(work.len(), 1, "exactly one component reinstalled:\n{log}");
    assert!(work[0].contains("Envoy"), "{log}");
    assert!(cache.path().join("bin/envoy").exists());
}

#[test]
fn a_missing_prerequisite_is_named() {
    // A PATH with every program of the usual directories except java.
    let bin = tempfile::tempdir().unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':') {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name == "java" || bin.path().join(&name).exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(entry.path(), bin.path().join(&name));
        }
    }
    let out = run_setup(&["kafka"], &[("PATH", bin.path().as_os_str())]);
    let log = text(&out);
    assert!(!out.status.success(), "setup passed without java:\n{log}");
    assert!(
        log.contains("FAILED kafka") && log.contains("'java'"),
        "{log}"
    );
}

#[test]
fn an_unknown_component_is_refused() {
    let out = run_setup(&["nosuch"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("unknown component 'nosuch'"));
}
