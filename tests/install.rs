//! Pier installed the way a user installs it: `helm install` of `charts/pier` into the dev
//! control plane, and the devlet runs both operator replicas from the image `make image` wrote,
//! each authenticating with its ServiceAccount's token, so the real apiserver enforces exactly
//! the chart's RBAC. One replica leads (its Pod carries the leader mark the xDS Service
//! selects), a KafkaCluster becomes Ready with brokers and Envoy, a client produces and reads
//! back through Envoy; the leader's Pod deleted, the other replica takes over and a spec change
//! still converges; `helm upgrade` rolls the operator without touching a broker; `helm uninstall`
//! leaves the KafkaCluster, its brokers and their data. Not one request of the operator is
//! refused.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use pier::api::KafkaCluster;
use pier::controller::leader_pod::LEADER_LABEL;
use pier_testenv::devlet::{self, DevletOptions};
use pier_testenv::{ControlPlane, LogDir, wait_for};
use serde_json::json;
use support::{example, read_topic};

mod support;

const RELEASE_NS: &str = "pier-system";
const SERVICE_ACCOUNT: &str = "system:serviceaccount:pier-system:pier";
const NS: &str = "default";
const BOOTSTRAP: &str = "127.0.0.1:29092";
const WAIT: Duration = Duration::from_secs(180);

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/pier")
}

/// The image archive `make image` writes beside this test's binaries.
fn image_archive() -> anyhow::Result<PathBuf> {
    let target = Path::new(env!("CARGO_BIN_EXE_pier"))
        .parent()
        .and_then(Path::parent)
        .context("the pier binary sits in <target>/<profile>/")?;
    let archive = target.join("pier-image.tar");
    ensure!(
        archive.exists(),
        "{} is missing: `make image` builds it; `make test` does so first",
        archive.display()
    );
    Ok(archive)
}

fn helm(plane: &ControlPlane, args: &[&str]) -> anyhow::Result<String> {
    let home = tempfile::tempdir()?;
    let out = Command::new(pier_testenv::program("helm")?)
        .arg("--kubeconfig")
        .arg(plane.kubeconfig())
        .args(args)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()?;
    ensure!(
        out.status.success(),
        "helm {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The operator's Pods: name → (uid, Ready, marked leader).
async fn operator_pods(
    client: &kube::Client,
) -> anyhow::Result<BTreeMap<String, (String, bool, bool)>> {
    let pods = Api::<Pod>::namespaced(client.clone(), RELEASE_NS)
        .list(&ListParams::default().labels("app.kubernetes.io/name=pier"))
        .await?;
    Ok(pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let marked = p.labels().get(LEADER_LABEL).map(String::as_str) == Some("true");
            (
                p.name_any(),
                (p.uid().unwrap_or_default(), support::ready(p), marked),
            )
        })
        .collect())
}

/// Waits until `count` operator Pods are Ready and exactly one is marked; returns the leader.
async fn one_marked_leader(client: &kube::Client, count: usize) -> anyhow::Result<String> {
    wait_for(
        &format!("{count} operator Pods Ready, exactly one marked leader"),
        WAIT,
        Duration::from_secs(1),
        || async {
            let pods = operator_pods(client).await.ok()?;
            let ready = pods.values().filter(|(_, r, _)| *r).count();
            let marked: Vec<&String> = pods
                .iter()
                .filter(|(_, (_, _, m))| *m)
                .map(|(n, _)| n)
                .collect();
            (pods.len() == count && ready == count && marked.len() == 1).then(|| marked[0].clone())
        },
    )
    .await
}

async fn broker_uids(client: &kube::Client) -> anyhow::Result<BTreeMap<String, String>> {
    let pods = Api::<Pod>::namespaced(client.clone(), NS)
        .list(
            &ListParams::default().labels("kafka.pier.dev/cluster=basic,kafka.pier.dev/broker-id"),
        )
        .await?;
    Ok(pods
        .items
        .iter()
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect())
}

#[tokio::test]
async fn helm_install_runs_pier_with_only_its_rbac() -> anyhow::Result<()> {
    let archive = image_archive()?;
    let logs = LogDir::for_current_test("install")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    let mut options = DevletOptions::new("devlet", logs.data("devlet")?);
    options.pier_image = archive;
    let devlet = tokio::spawn(devlet::run(client.clone(), options));
    let mark = plane.audit_mark()?;

    helm(
        &plane,
        &[
            "install",
            "pier",
            chart().to_str().context("a UTF-8 path")?,
            "--namespace",
            RELEASE_NS,
            "--create-namespace",
            "--set",
            "alerts.enabled=true",
        ],
    )?;
    let leader = one_marked_leader(&client, 2).await?;

    // A cluster, as a user applies it, becomes Ready; a client reaches it through Envoy.
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &example("kafkacluster-basic.yaml")?)
        .await?;
    let ready = || async {
        let s = support::cluster_status(&client, NS, "basic").await.ok()?;
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(s)
    };
    wait_for(
        "the cluster Ready",
        Duration::from_secs(300),
        Duration::from_secs(1),
        ready,
    )
    .await?;
    let text: String = (0..100).map(|i| format!("installed-{i}\n")).collect();
    let out = pier_testenv::kcat(
        &["-b", BOOTSTRAP, "-P", "-t", "installed", "-X", "acks=all"],
        Some(text.as_bytes()),
        Duration::from_secs(60),
    )
    .await?;
    ensure!(out.status.success(), "produce through Envoy");
    wait_for(
        "every record back through Envoy",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            (read_topic(BOOTSTRAP, "installed").await?.lines().count() == 100).then_some(())
        },
    )
    .await?;
    let brokers = broker_uids(&client).await?;

    // Alertmanager's notification, with the token of the chart's Secret, to a replica's webhook:
    // recorded in status (a dry run: the example does not enforce alerts) with the chart's RBAC.
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), RELEASE_NS)
        .get("pier-alerts-token")
        .await?;
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .map(|t| String::from_utf8_lossy(&t.0).to_string())
        .context("the alerts token")?;
    let replica_ip = Api::<Pod>::namespaced(client.clone(), RELEASE_NS)
        .get(&leader)
        .await?
        .status
        .and_then(|s| s.pod_ip)
        .context("the leader's Pod IP")?;
    let notification = json!({
        "receiver": "pier", "status": "firing", "version": "4", "groupKey": "{}",
        "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "KafkaLoad", "namespace": NS, "kafkacluster": "basic", "pier_action": "upscale"},
            "annotations": {}, "startsAt": "2026-12-03T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090", "fingerprint": "00aa11bb22cc33dd"
        }]
    });
    let code = reqwest::Client::new()
        .post(format!("http://{replica_ip}:9095/alerts"))
        .bearer_auth(token.trim())
        .json(&notification)
        .send()
        .await?
        .status();
    ensure!(code.is_success(), "the webhook answered {code}");
    let status = support::cluster_status(&client, NS, "basic").await?;
    let record = status
        .alerts
        .as_ref()
        .and_then(|a| a.actions.first())
        .context("the alert recorded")?;
    assert_eq!(
        record.state,
        pier::api::AlertActionState::DryRun,
        "{record:?}"
    );

    // The leader's Pod goes: the other replica leads, and a spec change still converges.
    Api::<Pod>::namespaced(client.clone(), RELEASE_NS)
        .delete(&leader, &Default::default())
        .await?;
    let next = wait_for(
        "another replica marked leader",
        WAIT,
        Duration::from_secs(1),
        || async {
            let pods = operator_pods(&client).await.ok()?;
            pods.iter()
                .find(|(n, (_, _, m))| *m && **n != leader)
                .map(|(n, _)| n.clone())
        },
    )
    .await?;
    let patch = json!({"spec": {"kafka": {"clusterWideConfig": {"log.retention.ms": "86400000"}}}});
    let generation = Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .patch("basic", &PatchParams::default(), &Patch::Merge(&patch))
        .await?
        .metadata
        .generation;
    wait_for(
        &format!("the spec change converged by {next}"),
        WAIT,
        Duration::from_secs(1),
        || async {
            let s = support::cluster_status(&client, NS, "basic").await.ok()?;
            (s.observed_generation == generation
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True"))
            .then_some(())
        },
    )
    .await?;
    one_marked_leader(&client, 2).await?;

    // An upgrade with a changed value rolls the operator, not the brokers.
    let before: Vec<String> = operator_pods(&client)
        .await?
        .into_values()
        .map(|p| p.0)
        .collect();
    helm(
        &plane,
        &[
            "upgrade",
            "pier",
            chart().to_str().context("a UTF-8 path")?,
            "--namespace",
            RELEASE_NS,
            "--reuse-values",
            "--set",
            "logLevel=info\\,pier=debug",
        ],
    )?;
    wait_for(
        "the operator rolled to new Pods",
        WAIT,
        Duration::from_secs(1),
        || async {
            let pods = operator_pods(&client).await.ok()?;
            (pods.len() == 2
                && pods
                    .values()
                    .all(|(uid, ready, _)| *ready && !before.contains(uid)))
            .then_some(())
        },
    )
    .await?;
    one_marked_leader(&client, 2).await?;
    assert_eq!(
        broker_uids(&client).await?,
        brokers,
        "no broker Pod was touched"
    );

    // Not one request of the operator was refused while it was installed. (Uninstalling
    // deletes its RBAC with its Deployment: the last words of a stopping replica, taking its
    // leader mark off and handing the Lease over, may be refused then, which is harmless.)
    let refused = plane.audit_refused(SERVICE_ACCOUNT, &mark)?;
    assert!(refused.is_empty(), "refused: {refused:#?}");

    // Uninstalled, the operator goes; the cluster, its brokers and their claims stay.
    helm(&plane, &["uninstall", "pier", "--namespace", RELEASE_NS])?;
    wait_for(
        "the operator's Pods gone",
        WAIT,
        Duration::from_secs(1),
        || async { operator_pods(&client).await.ok()?.is_empty().then_some(()) },
    )
    .await?;
    ensure!(
        Api::<Deployment>::namespaced(client.clone(), RELEASE_NS)
            .get_opt("pier")
            .await?
            .is_none(),
        "the operator's Deployment is gone"
    );
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .get("basic")
        .await?;
    assert_eq!(
        broker_uids(&client).await?,
        brokers,
        "the brokers keep running"
    );
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await?;
    ensure!(claims.items.len() >= 3, "the brokers' claims stay");
    ensure!(
        read_topic(BOOTSTRAP, "installed")
            .await
            .unwrap_or_default()
            .lines()
            .count()
            == 100,
        "the data is still there"
    );

    devlet.abort();
    Ok(())
}
