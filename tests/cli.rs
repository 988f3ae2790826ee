//! The `pier` binary's command line.
use std::process::Command;

fn pier(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pier"))
        .args(args)
        .output()
        .expect("running pier")
}

#[test]
fn version_prints_the_crate_version() {
    let out = pier(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("pier {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_describes_pier() {
    let out = pier(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Kafka operator for Kubernetes"), "{text}");
    assert!(text.contains("Usage: pier"), "{text}");
}

#[test]
fn unknown_arguments_are_rejected_with_usage() {
    let out = pier(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}
