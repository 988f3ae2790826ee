//! Pier's image as a local program: the devlet runs the `pier` binary of the OCI archive
//! `make image` writes (index.json → manifest → the layer holding `/pier`), extracted once per
//! layer digest under `<devlet root>/images/`, so a Pod of the Pier image runs what the image
//! holds. Without the archive, `$PIER_BINARY`, else the `pier` the running build made
//! (`<target>/debug/pier`, which `cargo test` builds with the integration tests: every broker
//! Pod has an init container of Pier's image, so tests without `make image` need it).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use super::DevletOptions;

/// The `pier` binary a Pod of the Pier image runs.
pub fn pier_binary(o: &DevletOptions) -> anyhow::Result<PathBuf> {
    if o.pier_image.is_file() {
        return from_archive(&o.pier_image, &o.root.join("images"))
            .with_context(|| format!("the Pier image {}", o.pier_image.display()));
    }
    let built = crate::paths::target_dir().join("debug").join("pier");
    std::env::var_os("PIER_BINARY")
        .map(PathBuf::from)
        .or_else(|| built.is_file().then_some(built))
        .with_context(|| {
            format!(
                "the Pier image needs {} (`make image`) or PIER_BINARY (the pier binary to run)",
                o.pier_image.display()
            )
        })
}

/// `/pier` of the archive's image, cached by its layer's digest.
fn from_archive(archive: &Path, cache: &Path) -> anyhow::Result<PathBuf> {
    let index: Value = serde_json::from_slice(&member(archive, "index.json")?)?;
    let manifest = digest_hex(&index["manifests"][0])?;
    let manifest: Value = serde_json::from_slice(&member(archive, &blob(&manifest))?)?;
    let layers = manifest["layers"]
        .as_array()
        .context("the manifest has no layers")?;
    // The last layer that holds /pier wins, as in the image's filesystem.
    for layer in layers.iter().rev() {
        let hex = digest_hex(layer)?;
        let dir = cache.join(&hex);
        let pier = dir.join("pier");
        if pier.is_file() {
            return Ok(pier);
        }
        std::fs::create_dir_all(cache)?;
        let tmp = tempfile::Builder::new()
            .prefix(".extract-")
            .tempdir_in(cache)?;
        let gz = tmp.path().join("layer.tar.gz");
        std::fs::write(&gz, member(archive, &blob(&hex))?)?;
        let root = tmp.path().join("root");
        std::fs::create_dir(&root)?;
        let out = Command::new("tar")
            .arg("-xzf")
            .arg(&gz)
            .arg("-C")
            .arg(&root)
            .arg("pier")
            .output()
            .context("running tar")?;
        if !out.status.success() {
            // Not in this layer.
            continue;
        }
        ensure!(
            root.join("pier").is_file(),
            "layer {hex}: /pier is not a file"
        );
        std::fs::remove_file(&gz)?;
        // Another Pod may have extracted it meanwhile: theirs is the same.
        if std::fs::rename(&root, &dir).is_err() && !pier.is_file() {
            bail!("cannot move the extracted layer to {}", dir.display());
        }
        tracing::info!(layer = %hex, binary = %pier.display(), "pier extracted from its image");
        return Ok(pier);
    }
    bail!("no layer of the image holds /pier")
}

fn blob(hex: &str) -> String {
    format!("blobs/sha256/{hex}")
}

/// The hex of a descriptor's sha256 digest (checked to be hex: it becomes a path).
fn digest_hex(descriptor: &Value) -> anyhow::Result<String> {
    let digest = descriptor["digest"]
        .as_str()
        .context("a descriptor without a digest")?;
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("{digest} is not a sha256 digest"))?;
    ensure!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{digest} is not a sha256 digest"
    );
    Ok(hex.to_string())
}

/// One file of the archive.
fn member(archive: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(name)
        .output()
        .context("running tar")?;
    ensure!(
        out.status.success(),
        "{name} not in {}: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out.stdout)
}
