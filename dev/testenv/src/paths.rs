//! Where things are: the programs `dev/setup` installed, and the per-test log directory.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};

/// `${PIER_CACHE:-$HOME/.cache/pier}`, the cache `dev/setup` fills.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PIER_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/pier")
}

/// The path of a program `dev/setup` installed, e.g. `program("etcd")`.
pub fn program(name: &str) -> anyhow::Result<PathBuf> {
    let path = cache_dir().join("bin").join(name);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Ok(path),
        _ => bail!(
            "{name} is not installed at {}: run dev/setup (or `make test`) first",
            path.display()
        ),
    }
}

/// The `target/` directory of the build that is running: `$CARGO_TARGET_DIR`, else the
/// ancestor of the running executable named `target`, else `./target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(t) = exe
            .ancestors()
            .find(|a| a.file_name() == Some("target".as_ref()))
    {
        return t.to_path_buf();
    }
    PathBuf::from("target")
}

/// A test's log directory (shared by the components of one test through an `Arc`, so its
/// scratch space outlives every process that uses it), `target/test-logs/<name>/`, with a fresh scratch directory for data
/// next to it in the system temp dir (removed on drop; logs are kept).
#[derive(Debug)]
pub struct LogDir {
    dir: PathBuf,
    scratch: tempfile::TempDir,
}

impl LogDir {
    /// A log directory named after the running test (the thread name cargo test gives it), or
    /// `name` outside a test. An earlier run's logs of the same test are replaced.
    pub fn for_current_test(fallback: &str) -> anyhow::Result<Arc<Self>> {
        let thread = std::thread::current();
        let name = match thread.name() {
            Some(n) if n != "main" => n.replace("::", "-"),
            _ => fallback.to_string(),
        };
        Self::named(&name)
    }

    /// `target/test-logs/<name>/`, emptied first.
    pub fn named(name: &str) -> anyhow::Result<Arc<Self>> {
        Self::under("test-logs", name)
    }

    /// `target/bench-logs/<name>/` for a benchmark, emptied first.
    pub fn for_bench(name: &str) -> anyhow::Result<Arc<Self>> {
        Self::under("bench-logs", name)
    }

    fn under(kind: &str, name: &str) -> anyhow::Result<Arc<Self>> {
        let dir = target_dir().join(kind).join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let scratch = tempfile::Builder::new()
            .prefix(&format!("pier-{name}-"))
            .tempdir()
            .context("creating a scratch directory")?;
        Ok(Arc::new(Self { dir, scratch }))
    }

    /// Where logs and config files go.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A subdirectory for one component's logs and configs, created on demand.
    pub fn sub(&self, name: &str) -> anyhow::Result<PathBuf> {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    /// A scratch data directory (etcd, Kafka log dirs, TSDB), deleted when this is dropped.
    pub fn data(&self, name: &str) -> anyhow::Result<PathBuf> {
        let d = self.scratch.path().join(name);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }
}
