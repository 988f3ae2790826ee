//! The Helm chart (`charts/pier`): its CRDs are those of `crds/`, its alert rules those of
//! `monitoring/`, its Prometheus Operator objects render when asked, `helm lint` passes, what
//! `helm template` renders (all namespaces, and watched namespaces only) is accepted by a real
//! apiserver's server-side dry run, and, installed for real, its RBAC is enough for Pier: an
//! operator that authenticates as the chart's ServiceAccount (and so has only the chart's
//! permissions) brings a KafkaCluster to Ready with real brokers and Envoy, and the apiserver's
//! audit log shows not one request of it refused.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use pier::api::{KafkaCluster, KafkaTopic, KafkaUser};
use pier::controller::leader_pod::LEADER_LABEL;
use pier_testenv::devlet::{self, DevletOptions};
use pier_testenv::{ControlPlane, LogDir, wait_for};
use serde_json::json;
use support::{OperatorArgs, OperatorProcess, example, read_topic};

mod support;

const RELEASE_NS: &str = "pier-system";
const SERVICE_ACCOUNT: &str = "system:serviceaccount:pier-system:pier";
const NS: &str = "default";
const BOOTSTRAP: &str = "127.0.0.1:29092";

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/pier")
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn helm(kubeconfig: Option<&Path>) -> anyhow::Result<Command> {
    let mut cmd = Command::new(pier_testenv::program("helm")?);
    if let Some(k) = kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    // Helm keeps caches and its registry config in $HOME; tests must not share or need them.
    let home = tempfile::tempdir()?.keep();
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    Ok(cmd)
}

async fn create_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[test]
fn the_chart_carries_the_crds_of_the_crds_dir() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(root.join("crds"))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let name = path.file_name().context("a file name")?;
        let copy = chart().join("crds").join(name);
        ensure!(
            std::fs::read(&path)? == std::fs::read(&copy).unwrap_or_default(),
            "{} differs from {}: `cp crds/*.yaml charts/pier/crds/`",
            copy.display(),
            path.display()
        );
    }
    Ok(())
}

#[test]
fn the_chart_carries_the_shipped_alert_rules() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (shipped, copy) = (
        root.join("monitoring/rules.yaml"),
        chart().join("files/rules.yaml"),
    );
    ensure!(
        std::fs::read(&shipped)? == std::fs::read(&copy).unwrap_or_default(),
        "{} differs from {}: `cp monitoring/rules.yaml charts/pier/files/`",
        copy.display(),
        shipped.display()
    );
    Ok(())
}

/// The Prometheus Operator objects (off by default) render when asked: the PrometheusRule is
/// the shipped rules file, the PodMonitor labels brokers as the rules expect, the
/// ServiceMonitor scrapes Pier with the admin token.
#[test]
fn the_chart_renders_the_monitoring_objects_when_asked() -> anyhow::Result<()> {
    let off = run(helm(None)?
        .args(["template", "pier"])
        .arg(chart())
        .args(["--namespace", RELEASE_NS]))?;
    ensure!(
        !off.contains("monitoring.coreos.com"),
        "off by default:\n{off}"
    );
    let on: [&str; 6] = [
        "--set",
        "monitoring.prometheusRule.enabled=true",
        "--set",
        "monitoring.brokerPodMonitor.enabled=true",
        "--set",
        "monitoring.operatorServiceMonitor.enabled=true",
    ];
    run(helm(None)?.args(["lint", "--strict"]).arg(chart()).args(on))?;
    let rendered = run(helm(None)?
        .args(["template", "pier"])
        .arg(chart())
        .args(["--namespace", RELEASE_NS])
        .args(on))?;
    let docs: Vec<serde_json::Value> = rendered
        .split("\n---")
        .filter_map(|d| serde_yaml_ng::from_str::<serde_json::Value>(d).ok())
        .filter(|d| d.is_object())
        .collect();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .with_context(|| format!("no {k} rendered"))
    };
    let shipped: serde_json::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring/rules.yaml"),
    )?)?;
    ensure!(kind("PrometheusRule")?["spec"] == shipped);
    let pm = kind("PodMonitor")?;
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    ensure!(endpoint["port"] == "metrics", "{pm}");
    let targets: Vec<&str> = endpoint["relabelings"]
        .as_array()
        .context("relabelings")?
        .iter()
        .filter_map(|r| r["targetLabel"].as_str())
        .collect();
    ensure!(
        targets == ["namespace", "kafkacluster", "broker_id"],
        "{targets:?}"
    );
    ensure!(pm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "broker");
    let sm = kind("ServiceMonitor")?;
    let endpoint = &sm["spec"]["endpoints"][0];
    ensure!(
        endpoint["port"] == "metrics"
            && endpoint["honorLabels"] == true
            && endpoint["bearerTokenSecret"]["name"] == "pier-admin-token",
        "{sm}"
    );
    // The operator tells broker Pods to copy the agent from the chart's image.
    ensure!(
        rendered.contains("--agent-image=ghcr.io/pier-dev/pier:"),
        "{rendered}"
    );
    Ok(())
}

#[tokio::test]
async fn the_apiserver_accepts_what_the_chart_renders() -> anyhow::Result<()> {
    let plane = support::start_plane("chart-dry-run").await?;
    let client = plane.client();
    for ns in [RELEASE_NS, "kafka-a", "kafka-b"] {
        create_namespace(&client, ns).await?;
    }
    let kubectl = pier_testenv::program("kubectl")?;
    let modes: [&[&str]; 2] = [&[], &["--set", "watchNamespaces={kafka-a,kafka-b}"]];
    for values in modes {
        run(helm(None)?
            .args(["lint", "--strict"])
            .arg(chart())
            .args(values))?;
        let rendered = run(helm(None)?
            .args(["template", "pier"])
            .arg(chart())
            .args(["--namespace", RELEASE_NS, "--include-crds"])
            .args(values))?;
        // Only what the chart says: a role it names is bound, a namespace it names exists.
        let path = plane.logs().path().join("rendered.yaml");
        std::fs::write(&path, &rendered)?;
        let applied = run(Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(plane.kubeconfig())
            .args(["apply", "--server-side", "--dry-run=server", "-f"])
            .arg(&path))?;
        for kind in [
            "customresourcedefinition.apiextensions.k8s.io/kafkaclusters.kafka.pier.dev",
            "customresourcedefinition.apiextensions.k8s.io/kafkatopics.kafka.pier.dev",
            "customresourcedefinition.apiextensions.k8s.io/kafkausers.kafka.pier.dev",
            "deployment.apps/pier",
            "service/pier-xds",
            "serviceaccount/pier",
            "clusterrole.rbac.authorization.k8s.io/pier-cluster",
            "role.rbac.authorization.k8s.io/pier-leader",
            "poddisruptionbudget.policy/pier",
        ] {
            ensure!(
                applied.contains(kind),
                "{kind} not applied ({values:?}):\n{applied}"
            );
        }
        if !values.is_empty() {
            ensure!(
                applied
                    .matches("role.rbac.authorization.k8s.io/pier serverside-applied")
                    .count()
                    == 2,
                "a Role in each watched namespace:\n{applied}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn pier_runs_with_only_the_rbac_the_chart_grants() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("chart-rbac")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    // Installed for real, watching one namespace (Roles, the narrower mode); no replica of the
    // chart's Deployment runs here: the operator below runs as its ServiceAccount instead.
    run(helm(Some(plane.kubeconfig()))?
        .args(["install", "pier"])
        .arg(chart())
        .args(["--namespace", RELEASE_NS, "--create-namespace"])
        .args([
            "--set",
            "replicaCount=0",
            "--set",
            "watchNamespaces={default}",
        ]))?;
    // The Pod the operator says it is (its leader mark needs pods/patch in its namespace);
    // bound to no node, so no devlet runs it. Of the chart's ServiceAccount (the ServiceAccount
    // admission plugin refuses Pods of one that does not exist yet, as `default` of a fresh
    // namespace may be).
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "pier-0", "labels": {"app.kubernetes.io/name": "pier"}},
        "spec": {"nodeName": "elsewhere", "serviceAccountName": "pier",
                 "containers": [{"name": "pier", "image": "pier"}]},
    }))?;
    Api::<Pod>::namespaced(client.clone(), RELEASE_NS)
        .create(&PostParams::default(), &pod)
        .await?;

    let mark = plane.audit_mark()?;
    // A client certificate names the ServiceAccount's user and group, as its token would.
    let kubeconfig = plane.kubeconfig_for(SERVICE_ACCOUNT, Some("system:serviceaccounts"))?;
    let operator = OperatorProcess::start(
        &plane,
        OperatorArgs {
            name: "pier-0",
            pod_name: Some("pier-0"),
            pid_namespace: false,
            kubeconfig: &kubeconfig,
            namespace: NS,
            pod_namespace: Some(RELEASE_NS),
            xds_listen: None,
            xds_address: None,
        },
    )?;
    let devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::new("devlet", logs.data("devlet")?),
    ));
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &example("kafkacluster-basic.yaml")?)
        .await?;
    // A refused request fails the test at once, not after the wait for Ready times out.
    let refused = || plane.audit_refused(SERVICE_ACCOUNT, &mark);
    wait_for(
        "the cluster Ready, or a request of the operator refused",
        Duration::from_secs(300),
        Duration::from_secs(1),
        || async {
            match refused() {
                Ok(r) if r.is_empty() => {}
                Ok(r) => return Some(Err(anyhow::anyhow!("refused: {r:#?}"))),
                Err(e) => return Some(Err(e)),
            }
            let s = support::cluster_status(&client, NS, "basic").await.ok()?;
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(Ok(()))
        },
    )
    .await??;
    let marked = Api::<Pod>::namespaced(client.clone(), RELEASE_NS)
        .get("pier-0")
        .await?
        .metadata
        .labels
        .unwrap_or_default();
    assert_eq!(marked.get(LEADER_LABEL).map(String::as_str), Some("true"));

    // A client that knows only Envoy's address produces and reads back.
    let text: String = (0..100).map(|i| format!("rbac-{i}\n")).collect();
    let out = pier_testenv::kcat(
        &["-b", BOOTSTRAP, "-P", "-t", "rbac", "-X", "acks=all"],
        Some(text.as_bytes()),
        Duration::from_secs(60),
    )
    .await?;
    ensure!(out.status.success(), "produce through Envoy");
    wait_for(
        "every record back through Envoy",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async { (read_topic(BOOTSTRAP, "rbac").await?.lines().count() == 100).then_some(()) },
    )
    .await?;

    // A KafkaTopic: its finalizer added, its status written, the topic created, then deleted
    // through the finalizer.
    let topics: Api<KafkaTopic> = Api::namespaced(client.clone(), NS);
    let topic: KafkaTopic = serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1", "kind": "KafkaTopic",
        "metadata": {"name": "rbac-topic"},
        "spec": {"clusterRef": {"name": "basic"}, "partitions": 2, "replicationFactor": 3},
    }))?;
    topics.create(&PostParams::default(), &topic).await?;
    wait_for(
        "the KafkaTopic Ready",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || async {
            let t = topics.get("rbac-topic").await.ok()?;
            t.status?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        },
    )
    .await?;
    topics
        .delete("rbac-topic", &DeleteParams::default())
        .await?;
    wait_for(
        "the KafkaTopic deleted",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || async {
            topics
                .get_opt("rbac-topic")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await?;

    // A KafkaUser (a generated SCRAM password in its Secret, a quota): its Secret written,
    // its status, then deleted through its finalizer.
    let users: Api<KafkaUser> = Api::namespaced(client.clone(), NS);
    let user: KafkaUser = serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1", "kind": "KafkaUser",
        "metadata": {"name": "rbac-user"},
        "spec": {"clusterRef": {"name": "basic"}, "authentication": {"type": "scram-sha-512"},
                 "quotas": {"producerByteRate": 1048576}},
    }))?;
    users.create(&PostParams::default(), &user).await?;
    wait_for(
        "the KafkaUser Ready",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || async {
            let u = users.get("rbac-user").await.ok()?;
            u.status?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        },
    )
    .await?;
    users.delete("rbac-user", &DeleteParams::default()).await?;
    wait_for(
        "the KafkaUser deleted",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || async {
            users
                .get_opt("rbac-user")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await?;

    // Not one request of the operator was refused.
    let refused = refused()?;
    assert!(refused.is_empty(), "refused: {refused:#?}");
    let log = std::fs::read_to_string(operator.process.log_path())?;
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator's log mentions `forbidden`"
    );
    devlet.abort();
    Ok(())
}
