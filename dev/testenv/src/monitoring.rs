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

/// The jobs of a shipped `scrape_configs` file (`monitoring/scrape-configs.yaml`) with their
/// Kubernetes discovery replaced by discovery from `sd_file` (see [`discover_pods`]): Debian's
/// Prometheus is built without Kubernetes discovery; the relabeling stays as shipped.
pub fn file_discovered(
    shipped_yaml: &str,
    sd_file: &std::path::Path,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let shipped: serde_json::Value = serde_yaml_ng::from_str(shipped_yaml)?;
    let mut jobs = Vec::new();
    for mut job in shipped["scrape_configs"]
        .as_array()
        .context("no scrape_configs")?
        .clone()
    {
        let job_map = job.as_object_mut().context("a scrape config")?;
        anyhow::ensure!(
            job_map.remove("kubernetes_sd_configs").is_some(),
            "the shipped job discovers Pods: {job_map:?}"
        );
        job_map.insert(
            "file_sd_configs".into(),
            serde_json::json!([{"files": [sd_file.display().to_string()], "refresh_interval": "1s"}]),
        );
        jobs.push(job);
    }
    Ok(jobs)
}

/// Prometheus' Kubernetes discovery (`role: pod`) as a file: every container port of every
/// Pod of the namespace becomes a target `<Pod IP>:<port>` with the `__meta_kubernetes_*`
/// labels that discovery gives (namespace, Pod name, labels and annotations with their names
/// sanitized, container port name), rewritten every second.
pub async fn discover_pods(client: kube::Client, namespace: String, file: std::path::PathBuf) {
    use k8s_openapi::api::core::v1::Pod;
    let sanitize = |name: &str| -> String {
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    };
    let pods: kube::Api<Pod> = kube::Api::namespaced(client, &namespace);
    loop {
        if let Ok(list) = pods.list(&Default::default()).await {
            let mut groups = Vec::new();
            for p in list.items {
                let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
                    continue;
                };
                let mut base = serde_json::Map::new();
                base.insert(
                    "__meta_kubernetes_namespace".into(),
                    serde_json::json!(namespace),
                );
                base.insert(
                    "__meta_kubernetes_pod_name".into(),
                    serde_json::json!(p.metadata.name.clone().unwrap_or_default()),
                );
                for (k, v) in p.metadata.labels.iter().flatten() {
                    base.insert(
                        format!("__meta_kubernetes_pod_label_{}", sanitize(k)),
                        serde_json::json!(v),
                    );
                }
                for (k, v) in p.metadata.annotations.iter().flatten() {
                    base.insert(
                        format!("__meta_kubernetes_pod_annotation_{}", sanitize(k)),
                        serde_json::json!(v),
                    );
                }
                for c in p.spec.iter().flat_map(|s| &s.containers) {
                    for port in c.ports.iter().flatten() {
                        let mut labels = base.clone();
                        labels.insert(
                            "__meta_kubernetes_pod_container_name".into(),
                            serde_json::json!(c.name),
                        );
                        labels.insert(
                            "__meta_kubernetes_pod_container_port_name".into(),
                            serde_json::json!(port.name.clone().unwrap_or_default()),
                        );
                        groups.push(serde_json::json!({
                            "targets": [format!("{ip}:{}", port.container_port)],
                            "labels": labels,
                        }));
                    }
                }
            }
            let tmp = file.with_extension("tmp");
            if std::fs::write(&tmp, serde_json::Value::Array(groups).to_string()).is_ok() {
                let _ = std::fs::rename(&tmp, &file);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
