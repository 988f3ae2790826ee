//! Pier's container image, as `make image` (dev/image) writes it without a Docker daemon: an
//! OCI archive whose blobs match their digests, whose config runs `/pier` as a non-root user,
//! and whose one layer holds a static binary that runs on its own (`pier --version` with an
//! empty environment). Prints the image's size; the aim is under 30 MB.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use serde_json::Value;

/// Where dev/image writes the archive: `<target dir>/pier-image.tar`, the target dir being the
/// one this test's `pier` binary was built into.
fn archive() -> PathBuf {
    let pier = Path::new(env!("CARGO_BIN_EXE_pier"));
    let target = pier
        .parent()
        .and_then(Path::parent)
        .expect("the pier binary sits in <target>/<profile>/");
    target.join("pier-image.tar")
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The blob a descriptor names, checked against its digest and size.
fn blob(layout: &Path, descriptor: &Value) -> anyhow::Result<PathBuf> {
    let digest = descriptor["digest"]
        .as_str()
        .context("descriptor without a digest")?;
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("{digest} is not a sha256 digest"))?;
    let path = layout.join("blobs/sha256").join(hex);
    let size = std::fs::metadata(&path)
        .with_context(|| format!("blob {digest} missing"))?
        .len();
    ensure!(
        Some(size) == descriptor["size"].as_u64(),
        "blob {digest}: {size} bytes, the descriptor says {}",
        descriptor["size"]
    );
    let sum = run(Command::new("sha256sum").arg(&path))?;
    ensure!(
        sum.starts_with(hex),
        "blob {digest} does not match its digest: {sum}"
    );
    Ok(path)
}

/// True when the ELF file asks for no dynamic loader (no PT_INTERP program header).
fn is_static_elf(bytes: &[u8]) -> anyhow::Result<bool> {
    ensure!(
        bytes.len() > 64 && &bytes[..4] == b"\x7fELF",
        "not an ELF file"
    );
    ensure!(
        bytes[4] == 2 && bytes[5] == 1,
        "not a 64-bit little-endian ELF"
    );
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into()?) as usize;
    let (entsize, count) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    for i in 0..count {
        let at = phoff + i * entsize;
        let kind = bytes
            .get(at..at + 4)
            .context("program header beyond the file")?;
        if u32::from_le_bytes(kind.try_into()?) == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

#[test]
fn the_image_runs_pier_as_a_non_root_user_from_a_static_binary() -> anyhow::Result<()> {
    let archive = archive();
    if !archive.exists() {
        bail!(
            "{} is missing: `make image` (dev/image) builds it; `make test` does so first",
            archive.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout)?;
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout))?;

    let oci_layout = json(&layout.join("oci-layout"))?;
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index = json(&layout.join("index.json"))?;
    let manifests = index["manifests"]
        .as_array()
        .context("index without manifests")?;
    assert_eq!(manifests.len(), 1, "one image: {index}");
    let reference = manifests[0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .context("the image has no reference name")?;
    assert!(
        reference.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "tagged with Pier's version: {reference}"
    );
    let manifest = json(&blob(&layout, &manifests[0])?)?;
    let config = json(&blob(&layout, &manifest["config"])?)?;

    // Runs as a non-root user, entrypoint pier.
    let user = config["config"]["User"].as_str().unwrap_or_default();
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        !uid.is_empty() && uid != "root" && uid.parse::<u32>().is_ok_and(|u| u != 0),
        "the image runs as a numeric non-root uid (runAsNonRoot can check it): {user:?}"
    );
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/pier"]));
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");

    // One layer: pier, the passwd/group files naming its user and the JMX exporter agent broker
    // Pods copy from it; no shell, nothing else.
    let layers = manifest["layers"]
        .as_array()
        .context("manifest without layers")?;
    assert_eq!(layers.len(), 1, "{manifest}");
    let layer = blob(&layout, &layers[0])?;
    let listing = run(Command::new("tar").arg("-tzf").arg(&layer))?;
    let mut files: Vec<&str> = listing.lines().map(|l| l.trim_end_matches('/')).collect();
    files.sort_unstable();
    assert_eq!(
        files,
        [
            "etc",
            "etc/group",
            "etc/passwd",
            "opt",
            "opt/pier",
            "opt/pier/jmx_prometheus_javaagent.jar",
            "pier"
        ]
    );
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs)?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&rootfs))?;
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd"))?;
    assert!(
        passwd.lines().any(|l| l.split(':').nth(2) == Some(uid)),
        "{passwd}"
    );

    let pier = rootfs.join("pier");
    assert!(
        is_static_elf(&std::fs::read(&pier)?)?,
        "pier in the image is static (a scratch image has no loader)"
    );
    let version = run(Command::new(&pier).arg("--version").env_clear())?;
    assert_eq!(
        version.trim(),
        format!("pier {}", env!("CARGO_PKG_VERSION"))
    );

    // The broker Pods' init container: `pier install-agent` copies the jar (a zip) where asked.
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir(&agent_dir)?;
    run(Command::new(&pier)
        .arg("install-agent")
        .arg("--from")
        .arg(rootfs.join("opt/pier/jmx_prometheus_javaagent.jar"))
        .arg("--to")
        .arg(&agent_dir)
        .env_clear())?;
    let jar = std::fs::read(agent_dir.join("jmx_prometheus_javaagent.jar"))?;
    assert!(jar.starts_with(b"PK"), "the agent is a jar");

    let mb = |bytes: u64| bytes as f64 / 1e6;
    println!(
        "image {reference}: archive {:.1} MB, layer {:.1} MB compressed, pier {:.1} MB (aim: under 30 MB)",
        mb(std::fs::metadata(&archive)?.len()),
        mb(layers[0]["size"].as_u64().unwrap_or_default()),
        mb(std::fs::metadata(&pier)?.len()),
    );
    Ok(())
}
