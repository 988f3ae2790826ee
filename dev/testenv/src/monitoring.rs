//! Real Prometheus + Alertmanager: Prometheus evaluates the given rules every second and sends
//! alerts to the Alertmanager, which posts them to a webhook URL.
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::net::free_ports;
use crate::paths::{LogDir, program};
use crate::process::{Process, stop_all};
use crate::wait_for;

/// What to monitor and where alerts go.
#[derive(Debug, Clone, Default)]
pub struct MonitoringOptions {
    /// The content of a Prometheus rules file (`groups: …`).
    pub rules_yaml: String,
    /// Where Alertmanager posts alerts (webhook receiver, `send_resolved: true`).
    pub webhook_url: String,
    /// `host:port` targets Prometheus scrapes every second (job `pier-test`).
    pub scrape_targets: Vec<String>,
    /// A file whose content Alertmanager sends as `Authorization: Bearer …` to the webhook
    /// (`http_config.authorization.credentials_file`).
    pub webhook_credentials_file: Option<std::path::PathBuf>,
    /// Post over HTTPS with a client certificate (`http_config.tls_config`).
    pub webhook_tls: Option<WebhookTls>,
    /// Further entries of Prometheus' `scrape_configs` (e.g. file discovery), each as JSON
    /// (which is YAML).
    pub scrape_configs: Vec<serde_json::Value>,
    /// Alertmanager's `repeat_interval` (default 1h): how often a firing group is sent again.
    pub repeat_interval: Option<String>,
}

/// The files of Alertmanager's TLS client for the webhook.
#[derive(Debug, Clone, Default)]
pub struct WebhookTls {
    /// The CA that signed the webhook's serving certificate.
    pub ca_file: std::path::PathBuf,
    /// Alertmanager's client certificate and key.
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

/// A running Prometheus and Alertmanager. Dropping it stops both.
#[derive(Debug)]
pub struct Monitoring {
    prometheus: Process,
    alertmanager: Process,
    prometheus_addr: SocketAddr,
    alertmanager_addr: SocketAddr,
    _logs: Arc<LogDir>,
}

impl Monitoring {
    pub async fn start(logs: &Arc<LogDir>, options: MonitoringOptions) -> anyhow::Result<Self> {
        let dir = logs.sub("monitoring")?;
        let ports = free_ports(Ipv4Addr::LOCALHOST, 2)?;
        let prometheus_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ports[0]));
        let alertmanager_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ports[1]));

        let am_config = dir.join("alertmanager.yml");
        let mut http_config = Vec::new();
        if let Some(file) = &options.webhook_credentials_file {
            http_config.push(format!(
                "authorization: {{type: Bearer, credentials_file: {:?}}}",
                file.display().to_string()
            ));
        }
        if let Some(tls) = &options.webhook_tls {
            http_config.push(format!(
                "tls_config: {{ca_file: {:?}, cert_file: {:?}, key_file: {:?}}}",
                tls.ca_file.display().to_string(),
                tls.cert_file.display().to_string(),
                tls.key_file.display().to_string()
            ));
        }
        let http_config = if http_config.is_empty() {
            String::new()
        } else {
            format!(", http_config: {{{}}}", http_config.join(", "))
        };
        std::fs::write(
            &am_config,
            format!(
                "route: {{receiver: webhook, group_by: [alertname], group_wait: 0s, group_interval: 1s, repeat_interval: {repeat}}}
receivers:
  - name: webhook
    webhook_configs: [{{url: {url:?}, send_resolved: true{http_config}}}]
",
                url = options.webhook_url,
                repeat = options.repeat_interval.as_deref().unwrap_or("1h"),
            ),
        )?;
        let rules = dir.join("rules.yml");
        std::fs::write(&rules, &options.rules_yaml)?;
        let targets = options
            .scrape_targets
            .iter()
            .map(|t| format!("{t:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let extra: String = options
            .scrape_configs
            .iter()
            .map(|c| format!("  - {c}\n"))
            .collect();
        let prom_config = dir.join("prometheus.yml");
        std::fs::write(
            &prom_config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [rules.yml]
alerting: {{alertmanagers: [{{static_configs: [{{targets: [\"{alertmanager_addr}\"]}}]}}]}}
scrape_configs:
  - job_name: pier-test
    static_configs: [{{targets: [{targets}]}}]
{extra}"
            ),
        )?;

        let mut cmd = Command::new(program("alertmanager")?);
        cmd.arg(format!("--config.file={}", am_config.display()))
            .arg(format!(
                "--storage.path={}",
                logs.data("alertmanager")?.display()
            ))
            .arg(format!("--web.listen-address={alertmanager_addr}"))
            // Empty: no gossip port, so parallel Alertmanagers do not clash on 9094.
            .arg("--cluster.listen-address=");
        let alertmanager = Process::spawn(
            "alertmanager",
            cmd,
            &dir.join("alertmanager.log"),
            Duration::from_secs(5),
        )?;

        let mut cmd = Command::new(program("prometheus")?);
        cmd.arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                logs.data("prometheus")?.display()
            ))
            .arg(format!("--web.listen-address={prometheus_addr}"))
            // Without this the first alert, sent before the Alertmanager is discovered, is
            // dropped and the next send waits the default minute.
            .arg("--rules.alert.resend-delay=1s");
        let prometheus = Process::spawn(
            "prometheus",
            cmd,
            &dir.join("prometheus.log"),
            Duration::from_secs(5),
        )?;

        let mut monitoring = Monitoring {
            prometheus,
            alertmanager,
            prometheus_addr,
            alertmanager_addr,
            _logs: logs.clone(),
        };
        monitoring.wait_ready().await?;
        Ok(monitoring)
    }

    pub fn prometheus_url(&self) -> String {
        format!("http://{}", self.prometheus_addr)
    }

    pub fn alertmanager_url(&self) -> String {
        format!("http://{}", self.alertmanager_addr)
    }

    pub fn pids(&self) -> Vec<u32> {
        vec![self.prometheus.pid(), self.alertmanager.pid()]
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let urls = [
            format!("{}/-/ready", self.alertmanager_url()),
            format!("{}/-/ready", self.prometheus_url()),
        ];
        let (prometheus, alertmanager) = (&mut self.prometheus, &mut self.alertmanager);
        wait_for(
            "Prometheus and Alertmanager /-/ready",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                let check = prometheus
                    .check_running()
                    .and_then(|_| alertmanager.check_running());
                let reqs = urls.clone().map(|u| http.get(u).send());
                async move {
                    if let Err(e) = check {
                        return Some(Err(e));
                    }
                    for r in reqs {
                        if !r.await.ok()?.status().is_success() {
                            return None;
                        }
                    }
                    Some(Ok(()))
                }
            },
        )
        .await?
        .context("starting monitoring")
    }
}

impl Drop for Monitoring {
    fn drop(&mut self) {
        stop_all([&mut self.prometheus, &mut self.alertmanager]);
    }
}
