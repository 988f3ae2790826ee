//! Monitoring with the real components: Pier (`pier operator`, a process) runs a KafkaCluster
//! whose brokers (run by the devlet) carry the JMX exporter agent; a real Prometheus finds them
//! with the shipped `monitoring/scrape-configs.yaml` (its relabeling of the Pods' discovery
//! labels makes targets labelled namespace / kafkacluster / broker_id; the discovery itself is
//! a file of the Pods' targets, as Debian's Prometheus has no Kubernetes discovery), scrapes
//! them and Pier's /metrics,
//! and loads the shipped `monitoring/rules.yaml` (which `promtool check rules` accepts). Every
//! metric name the rules and `monitoring/dashboard.json` query must have a series in Prometheus.
use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, ensure};
use kube::api::{Api, PostParams};
use pier::api::KafkaCluster;
use pier_testenv::devlet::{self, DevletOptions};
use pier_testenv::monitoring::{Monitoring, MonitoringOptions};
use pier_testenv::{ControlPlane, LogDir, wait_for};
use serde_json::{Value, json};
use support::{OperatorArgs, OperatorProcess, broker_pods, example};

mod support;

const NS: &str = "default";
const BOOTSTRAP: &str = "127.0.0.1:29092";

fn repo_file(path: &str) -> anyhow::Result<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// PromQL functions and keywords: identifiers that are not metric names.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    // Aggregations, which may take `by (…)` before their parenthesis.
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

/// The metric names a PromQL expression selects: identifiers outside label matchers, strings
/// and grouping lists that are not a function call or a keyword.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut braces = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            // A string: skip it (escapes included).
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if c == '{' {
            braces += 1;
        } else if c == '}' {
            braces -= 1;
        }
        if braces > 0 || !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        // A number's exponent or a duration's unit (5m) starts after a digit: not a name.
        if i > 0 && (chars[i - 1].is_ascii_digit() || chars[i - 1] == '.' || chars[i - 1] == '$') {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        let next = chars.get(j).copied();
        let lower = word.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
        ) {
            // A label list: skip it.
            if next == Some('(') {
                while j < chars.len() && chars[j] != ')' {
                    j += 1;
                }
                i = j + 1;
            }
            continue;
        }
        if next == Some('(') || KEYWORDS.contains(&lower.as_str()) {
            continue;
        }
        names.insert(word);
    }
    names
}

/// Every metric name `monitoring/rules.yaml` and `monitoring/dashboard.json` query.
fn shipped_metric_names() -> anyhow::Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    let rules: Value = serde_yaml_ng::from_str(&repo_file("monitoring/rules.yaml")?)?;
    for group in rules["groups"].as_array().context("rules without groups")? {
        for rule in group["rules"].as_array().context("a group without rules")? {
            names.extend(metric_names(
                rule["expr"].as_str().context("a rule without expr")?,
            ));
        }
    }
    let dashboard: Value = serde_json::from_str(&repo_file("monitoring/dashboard.json")?)?;
    let mut exprs = 0;
    for panel in dashboard["panels"].as_array().context("no panels")? {
        for target in panel["targets"].as_array().into_iter().flatten() {
            names.extend(metric_names(
                target["expr"].as_str().context("a target without expr")?,
            ));
            exprs += 1;
        }
    }
    // Template variables: label_values(<selector>, <label>).
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(q) = var["query"]["query"].as_str()
            && let Some(args) = q.strip_prefix("label_values(")
        {
            let selector = args.rsplit_once(',').map(|(s, _)| s).unwrap_or(args);
            names.extend(metric_names(selector));
        }
    }
    ensure!(exprs >= 20, "the dashboard has {exprs} queries");
    Ok(names)
}

#[test]
fn the_tokenizer_finds_metric_names_only() {
    let names = metric_names(
        r#"label_replace(predict_linear(pier_log_dir_usable_bytes[1h], 4 * 3600) < 0 and on (namespace) a:b{x="y", z=~"w"} / total_bytes offset 5m, "kafkacluster", "$1", "cluster", "(.+)") > 1e3"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["a:b", "pier_log_dir_usable_bytes", "total_bytes"]
    );
    let names = metric_names(
        "sum by (broker_id) (rate(kafka_x_total{namespace=\"$namespace\", topic=\"\"}[5m])) or absent(up)",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["kafka_x_total", "up"]
    );
}

#[tokio::test]
async fn prometheus_scrapes_brokers_and_pier_and_every_shipped_query_has_series()
-> anyhow::Result<()> {
    let started = std::time::Instant::now();
    // promtool accepts the shipped rules.
    let check = std::process::Command::new(pier_testenv::program("promtool")?)
        .args(["check", "rules"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring/rules.yaml"))
        .output()?;
    ensure!(
        check.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let wanted = shipped_metric_names()?;

    let logs = LogDir::for_current_test("monitoring")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    let devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::new("dev-a", logs.data("devlet")?),
    ));
    let operator = OperatorProcess::start(
        &plane,
        OperatorArgs {
            name: "pier",
            pod_name: None,
            pid_namespace: false,
            kubeconfig: plane.kubeconfig(),
            namespace: NS,
            pod_namespace: None,
            xds_listen: None,
            xds_address: None,
        },
    )?;
    let mut kc = example("kafkacluster-basic.yaml")?;
    // A TLS listener besides the example's: Pier issues certificates (and reports their expiry).
    kc.spec
        .listeners
        .internal
        .push(pier::api::InternalListener {
            name: "tls".into(),
            port: 9095,
            protocol: pier::api::SecurityProtocol::Ssl,
            client_auth: Default::default(),
            used_for_inter_broker: false,
            used_for_controller: false,
        });
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &kc)
        .await?;

    // Prometheus: the brokers with the shipped scrape config (its relabeling as it is; the
    // Kubernetes discovery it names, which Debian's Prometheus build lacks, stood in for by a
    // file of the same targets, see `discover_pods`), Pier's /metrics directly (honor_labels,
    // as the chart's ServiceMonitor).
    let sd_file = logs.sub("monitoring")?.join("pods-sd.json");
    let discovery = tokio::spawn(pier_testenv::monitoring::discover_pods(
        client.clone(),
        NS.to_string(),
        sd_file.clone(),
    ));
    let mut scrape_configs = pier_testenv::monitoring::file_discovered(
        &repo_file("monitoring/scrape-configs.yaml")?,
        &sd_file,
    )?;
    scrape_configs.push(json!({
        "job_name": "pier",
        "honor_labels": true,
        "static_configs": [{"targets": [operator.metrics.to_string()]}],
    }));
    let monitoring = Monitoring::start(
        &logs,
        MonitoringOptions {
            rules_yaml: repo_file("monitoring/rules.yaml")?,
            webhook_url: "http://127.0.0.1:9/unused".into(),
            scrape_configs,
            ..Default::default()
        },
    )
    .await?;
    let prometheus = monitoring.prometheus_url();
    let http = reqwest::Client::new();
    let query = |q: String| {
        let http = http.clone();
        let url = format!("{prometheus}/api/v1/query");
        async move {
            let url = url::Url::parse_with_params(&url, [("query", q)]).ok()?;
            let r: Value = http.get(url).send().await.ok()?.json().await.ok()?;
            r["data"]["result"].as_array().cloned()
        }
    };

    // Every broker's exporter is up, labelled as the rules expect.
    let targets = wait_for(
        "3 broker exporters up in Prometheus",
        Duration::from_secs(150),
        Duration::from_secs(1),
        || async {
            let up = query(format!(
                "up{{job=\"kafka-brokers\", namespace=\"{NS}\", kafkacluster=\"basic\"}} == 1"
            ))
            .await?;
            let ids: BTreeSet<String> = up
                .iter()
                .filter_map(|s| s["metric"]["broker_id"].as_str().map(str::to_string))
                .collect();
            (ids.len() == 3).then_some(ids)
        },
    )
    .await?;
    assert_eq!(targets, BTreeSet::from(["0", "1", "2"].map(String::from)));
    // Each target is its Pod's IP and metrics port.
    let pods = broker_pods(&client, NS, "basic").await?;
    let up = query("up{job=\"kafka-brokers\"}".into())
        .await
        .context("query up")?;
    for s in &up {
        let id: i32 = s["metric"]["broker_id"]
            .as_str()
            .context("broker_id")?
            .parse()?;
        let pod = pods.get(&id).context("a target without a broker Pod")?;
        ensure!(
            s["metric"]["instance"] == format!("{}:9404", pod.ip),
            "target of broker {id}: {s}"
        );
    }

    // Traffic through Envoy: produce and consume, so request and byte metrics have series.
    support::create_topic(
        BOOTSTRAP,
        &[
            "--topic",
            "metrics",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
    )
    .await?;
    let records: String = (0..100).map(|i| format!("record-{i}\n")).collect();
    let out = pier_testenv::kcat(
        &["-b", BOOTSTRAP, "-P", "-t", "metrics", "-X", "acks=all"],
        Some(records.as_bytes()),
        Duration::from_secs(60),
    )
    .await?;
    ensure!(
        out.status.success(),
        "produce: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        support::read_topic(BOOTSTRAP, "metrics")
            .await
            .is_some_and(|t| t.lines().count() >= 100),
        "the records read back"
    );

    // Every name the rules and the dashboard query has a series. Broker names arrive with the
    // next scrapes; then Pier's.
    let names_url = format!("{prometheus}/api/v1/label/__name__/values");
    let present = || async {
        let r: Value = http.get(&names_url).send().await.ok()?.json().await.ok()?;
        Some(
            r["data"]
                .as_array()?
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect::<BTreeSet<String>>(),
        )
    };
    let missing_of = |present: &BTreeSet<String>| -> Vec<String> {
        wanted.difference(present).cloned().collect()
    };
    let _ = wait_for(
        "every broker metric the rules and dashboard use",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            let p = present().await?;
            let missing = missing_of(&p);
            missing.iter().all(|n| n.starts_with("pier_")).then_some(())
        },
    )
    .await;
    let _ = wait_for(
        "every Pier metric the rules and dashboard use",
        Duration::from_secs(10),
        Duration::from_secs(1),
        || async { missing_of(&present().await?).is_empty().then_some(()) },
    )
    .await;
    let missing = missing_of(&present().await.context("metric names")?);
    println!(
        "{} metric names queried by the shipped rules and dashboard; {} missing; {:?} in",
        wanted.len(),
        missing.len(),
        started.elapsed()
    );
    ensure!(
        missing.is_empty(),
        "metric names the shipped rules or dashboard query without a series in Prometheus: {missing:?}"
    );

    drop(monitoring);
    drop(operator);
    discovery.abort();
    devlet.abort();
    Ok(())
}
