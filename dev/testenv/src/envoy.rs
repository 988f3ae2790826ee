//! A real Envoy started from a given bootstrap, with helpers for its admin API.
//!
//! The admin listener is always put on a free loopback port by merging `--config-yaml` over the
//! bootstrap, and `--use-dynamic-base-id` keeps several Envoys on one machine apart. The base id
//! it picked is written next to the log, so [`Envoy::hot_restart`] can start the next epoch
//! (`--base-id <it> --restart-epoch <n>`), which takes over the listen sockets while this
//! process drains (`--drain-time-s 2`) and exits (`--parent-shutdown-time-s 3`).
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::net::free_port;
use crate::paths::{LogDir, program};
use crate::process::Process;
use crate::wait_for;

/// A running Envoy. Dropping it stops the process.
#[derive(Debug)]
pub struct Envoy {
    process: Process,
    admin: SocketAddr,
    bootstrap: PathBuf,
    base_id_file: PathBuf,
    http: reqwest::Client,
    _logs: Arc<LogDir>,
}

impl Envoy {
    /// Starts Envoy as `name` with `bootstrap_yaml` (plus `extra_args`, e.g. `--service-node`)
    /// and waits until its admin API answers. Use [`Envoy::wait_live`] to wait for `LIVE`.
    pub async fn start(
        logs: &Arc<LogDir>,
        name: &str,
        bootstrap_yaml: &str,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let dir = logs.sub(name)?;
        let bootstrap = dir.join("bootstrap.yaml");
        std::fs::write(&bootstrap, bootstrap_yaml)
            .with_context(|| format!("writing {}", bootstrap.display()))?;
        Self::start_from_file(logs, name, &bootstrap, extra_args).await
    }

    /// Like [`Envoy::start`], with a bootstrap file that already exists.
    pub async fn start_from_file(
        logs: &Arc<LogDir>,
        name: &str,
        bootstrap: &Path,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_with_overlay(logs, name, bootstrap, None, extra_args).await
    }

    /// Like [`Envoy::start_from_file`], merging `overlay` (YAML, what `--config-yaml` takes)
    /// over the bootstrap.
    pub async fn start_with_overlay(
        logs: &Arc<LogDir>,
        name: &str,
        bootstrap: &Path,
        overlay: Option<&str>,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        Self::spawn(logs, name, bootstrap, overlay, extra_args, None).await
    }

    /// Starts the next epoch of this Envoy as `name` with `bootstrap` (Envoy's hot restart):
    /// the same base id, `--restart-epoch epoch`. The new process takes over the listen
    /// sockets; this one drains and exits by itself after the parent shutdown time.
    pub async fn hot_restart(
        &self,
        logs: &Arc<LogDir>,
        name: &str,
        bootstrap: &Path,
        epoch: u32,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let base_id = self.base_id()?;
        Self::spawn(
            logs,
            name,
            bootstrap,
            None,
            extra_args,
            Some((base_id, epoch)),
        )
        .await
    }

    /// The shared-memory base id this Envoy runs with (for [`Envoy::hot_restart`]).
    pub fn base_id(&self) -> anyhow::Result<u64> {
        let text = std::fs::read_to_string(&self.base_id_file)
            .with_context(|| format!("reading {}", self.base_id_file.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("base id {text:?} in {}", self.base_id_file.display()))
    }

    async fn spawn(
        logs: &Arc<LogDir>,
        name: &str,
        bootstrap: &Path,
        overlay: Option<&str>,
        extra_args: &[&str],
        restart_of: Option<(u64, u32)>,
    ) -> anyhow::Result<Self> {
        let dir = logs.sub(name)?;
        let base_id_file = dir.join("base-id");
        let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)?));
        // Envoy takes one --config-yaml: merge the admin address into the caller's overlay.
        let mut merged: serde_yaml_ng::Mapping = match overlay {
            Some(text) => serde_yaml_ng::from_str(text).context("parsing the Envoy overlay")?,
            None => serde_yaml_ng::Mapping::new(),
        };
        let admin_yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&format!(
            "{{address: {{socket_address: {{address: {}, port_value: {}}}}}}}",
            admin.ip(),
            admin.port()
        ))?;
        merged.insert("admin".into(), admin_yaml);
        let admin_override = serde_json::to_string(&merged)?;
        let mut cmd = Command::new(program("envoy")?);
        cmd.arg("-c")
            .arg(bootstrap)
            .args(["--config-yaml", &admin_override])
            .args(["--log-level", "info"])
            .args(["--drain-time-s", "2", "--parent-shutdown-time-s", "3"])
            .args(extra_args);
        match restart_of {
            None => {
                cmd.arg("--use-dynamic-base-id")
                    .arg("--base-id-path")
                    .arg(&base_id_file);
            }
            Some((base_id, epoch)) => {
                std::fs::write(&base_id_file, base_id.to_string())?;
                cmd.args(["--base-id", &base_id.to_string()])
                    .args(["--restart-epoch", &epoch.to_string()]);
            }
        }
        let mut process =
            Process::spawn(name, cmd, &dir.join("envoy.log"), Duration::from_secs(5))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let url = format!("http://{admin}/ready");
        wait_for(
            &format!("{name} admin API at {admin}"),
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let check = process.check_running();
                let req = http.get(&url).send();
                async move {
                    if let Err(e) = check {
                        return Some(Err(e));
                    }
                    req.await.ok().map(|_| Ok(()))
                }
            },
        )
        .await??;
        Ok(Self {
            process,
            admin,
            bootstrap: bootstrap.to_path_buf(),
            base_id_file,
            http,
            _logs: logs.clone(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The admin API's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub fn bootstrap_path(&self) -> &Path {
        &self.bootstrap
    }

    pub fn process_mut(&mut self) -> &mut Process {
        &mut self.process
    }

    /// GET an admin path, returning the body of any answer (Envoy uses 503 for "not ready").
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("http://{}{path}", self.admin);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        Ok(resp.text().await?)
    }

    /// `/ready`: `LIVE`, `PRE_INITIALIZING`, `INITIALIZING`, `DRAINING`, ….
    pub async fn ready(&self) -> anyhow::Result<String> {
        Ok(self.admin_get("/ready").await?.trim().to_string())
    }

    /// Waits until `/ready` says `LIVE`.
    pub async fn wait_live(&mut self, within: Duration) -> anyhow::Result<()> {
        let admin = self.admin;
        let http = self.http.clone();
        let process = &mut self.process;
        wait_for(
            &format!("Envoy at {admin} to be LIVE"),
            within,
            Duration::from_millis(100),
            || {
                let check = process.check_running();
                let req = http.get(format!("http://{admin}/ready")).send();
                async move {
                    if let Err(e) = check {
                        return Some(Err(e));
                    }
                    let body = req.await.ok()?.text().await.ok()?;
                    (body.trim() == "LIVE").then_some(Ok(()))
                }
            },
        )
        .await?
    }

    /// `/listeners?format=json`: the active listeners' names and addresses.
    pub async fn listeners(&self) -> anyhow::Result<serde_json::Value> {
        self.admin_json("/listeners?format=json").await
    }

    /// The names of the active listeners.
    pub async fn listener_names(&self) -> anyhow::Result<Vec<String>> {
        let v = self.listeners().await?;
        let statuses = v
            .get("listener_statuses")
            .and_then(|s| s.as_array())
            .cloned()
            .unwrap_or_default();
        Ok(statuses
            .iter()
            .filter_map(|s| s.get("name")?.as_str().map(str::to_string))
            .collect())
    }

    /// `/config_dump`.
    pub async fn config_dump(&self) -> anyhow::Result<serde_json::Value> {
        self.admin_json("/config_dump").await
    }

    /// `/server_info`: version, state, uptime, command line.
    pub async fn server_info(&self) -> anyhow::Result<serde_json::Value> {
        self.admin_json("/server_info").await
    }

    /// Seconds since this Envoy process started (from `/server_info`), to prove it was not
    /// restarted.
    pub async fn uptime_seconds(&self) -> anyhow::Result<u64> {
        let info = self.server_info().await?;
        let text = info
            .pointer("/uptime_all_epochs")
            .and_then(|v| v.as_str())
            .context("server_info has no uptime_all_epochs")?;
        let secs = text.trim_end_matches('s');
        Ok(secs
            .parse::<f64>()
            .with_context(|| format!("uptime {text:?}"))? as u64)
    }

    /// A counter or gauge from `/stats`, if present.
    pub async fn stat(&self, name: &str) -> anyhow::Result<Option<u64>> {
        let text = self
            .admin_get(&format!("/stats?filter=^{}$", regex_escape(name)))
            .await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse().ok()))
    }

    async fn admin_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let text = self.admin_get(path).await?;
        serde_json::from_str(&text).with_context(|| {
            let head: String = text.chars().take(200).collect();
            format!("admin {path} did not answer JSON: {head}")
        })
    }

    /// Validates a bootstrap without serving (`envoy --mode validate`).
    pub fn validate(bootstrap: &Path) -> anyhow::Result<()> {
        let out = Command::new(program("envoy")?)
            .args(["--mode", "validate", "-c"])
            .arg(bootstrap)
            .output()
            .context("running envoy --mode validate")?;
        if !out.status.success() {
            bail!(
                "envoy rejects {}: {}{}",
                bootstrap.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}
