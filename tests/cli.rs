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

#[test]
fn xds_tls_flags_come_together() {
    let out = pier(&["xds", "--config", "x.yaml", "--xds-tls-cert", "tls.crt"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--xds-tls-key"), "{text}");

    let out = pier(&["operator", "--xds-client-ca", "ca.crt"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--xds-tls-cert"), "{text}");
}

#[test]
fn pier_xds_with_tls_needs_a_client_ca() {
    let out = pier(&[
        "xds",
        "--config",
        "x.yaml",
        "--xds-tls-cert",
        "tls.crt",
        "--xds-tls-key",
        "tls.key",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--xds-client-ca"), "{text}");
}

#[test]
fn the_operator_checks_its_tls_and_token_files_first() {
    let out = pier(&[
        "operator",
        "--xds-tls-cert",
        "/nonexistent/tls.crt",
        "--xds-tls-key",
        "/nonexistent/tls.key",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("cannot read /nonexistent/tls.crt"), "{text}");

    let out = pier(&["operator", "--admin-token-file", "/nonexistent/token"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("admin token file /nonexistent/token"),
        "{text}"
    );
}

#[test]
fn the_alerts_webhook_refuses_to_start_without_authentication() {
    let out = pier(&["operator", "--alerts-listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("the alerts webhook needs authentication"),
        "{text}"
    );

    let out = pier(&[
        "operator",
        "--alerts-listen",
        "127.0.0.1:0",
        "--alerts-token-file",
        "/nonexistent/token",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("alerts token file /nonexistent/token"),
        "{text}"
    );

    // The webhook's flags need --alerts-listen; its TLS key and client CA need a certificate.
    for args in [
        &["--alerts-token-file", "t"][..],
        &[
            "--alerts-listen",
            "127.0.0.1:0",
            "--alerts-client-ca",
            "ca.crt",
        ],
        &[
            "--alerts-listen",
            "127.0.0.1:0",
            "--alerts-tls-cert",
            "tls.crt",
        ],
    ] {
        let out = pier(&[&["operator"][..], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
