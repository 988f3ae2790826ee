//! The KafkaCluster controller against a real kube-apiserver (+ controller-manager). There is
//! no kubelet: the tests play it (Pod IPs) and the cloud (LoadBalancer address) where needed.
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pier::api::{BrokerPhase, KafkaCluster};
use pier_testenv::wait_for;
use serde_json::json;
use support::{Operator, example, start_plane};

mod support;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);
const NS: &str = "default";
/// The user the operator runs as where the audit log counts its writes.
const OPERATOR_USER: &str = "pier-operator";

/// Objects of a cluster; for Pods only the brokers (the Envoy Deployment's Pods carry the
/// cluster label too).
fn selector(cluster: &str) -> ListParams {
    ListParams::default().labels(&format!("kafka.pier.dev/cluster={cluster}"))
}

fn selector_for<K: kube::Resource<DynamicType = ()>>(cluster: &str) -> ListParams {
    if K::kind(&()) == "Pod" {
        ListParams::default().labels(&format!(
            "kafka.pier.dev/cluster={cluster},app.kubernetes.io/component=broker"
        ))
    } else {
        selector(cluster)
    }
}

async fn names<K>(client: &Client, cluster: &str) -> anyhow::Result<Vec<String>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), NS);
    let mut names: Vec<String> = api
        .list(&selector_for::<K>(cluster))
        .await?
        .items
        .iter()
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .map(|o| o.name_any())
        .collect();
    names.sort();
    Ok(names)
}

async fn wait_names<K>(client: &Client, cluster: &str, want: &[&str]) -> anyhow::Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    let what = format!("{} {want:?}", K::kind(&()));
    wait_for(&what, WAIT, POLL, || async {
        (names::<K>(client, cluster).await.ok()? == want).then_some(())
    })
    .await
}

fn properties(cm: &ConfigMap) -> BTreeMap<String, String> {
    cm.data
        .as_ref()
        .map(|d| d["server.properties"].clone())
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Plays the kubelet: gives every broker Pod of the cluster an IP.
async fn assign_pod_ips(client: &Client, cluster: &str) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for p in pods.list(&selector_for::<Pod>(cluster)).await?.items {
        let id: u8 = p.labels()["kafka.pier.dev/broker-id"].parse()?;
        if p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some() {
            continue;
        }
        let ip = format!("10.1.0.{}", 10 + id);
        pods.patch_status(
            &p.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}]}})),
        )
        .await?;
    }
    Ok(())
}

async fn pod_uids(client: &Client, cluster: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    Ok(pods
        .list(&selector_for::<Pod>(cluster))
        .await?
        .items
        .into_iter()
        .map(|p| (p.name_any(), p.metadata.uid.unwrap_or_default()))
        .collect())
}

/// Waits until the cluster's Degraded condition is as `wanted` says; returns it.
async fn wait_degraded(
    kcs: &Api<KafkaCluster>,
    name: &str,
    what: &str,
    wanted: impl Fn(&Condition) -> bool,
) -> anyhow::Result<Condition> {
    wait_for(what, WAIT, POLL, || async {
        let kc = kcs.get(name).await.ok()?;
        kc.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded" && wanted(c))
    })
    .await
}

async fn set_brokers(
    api: &Api<KafkaCluster>,
    name: &str,
    brokers: serde_json::Value,
) -> anyhow::Result<()> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"brokers": brokers}})),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn basic_cluster_lifecycle() -> anyhow::Result<()> {
    let plane = start_plane("controller-basic").await?;
    let client = plane.client();
    // The operator as a user of its own, so the audit log tells its writes from the test's.
    let op = Operator::start(
        plane
            .client_for(OPERATOR_USER, Some("system:masters"))
            .await?,
        NS,
    )
    .await?;
    let kcs: Api<KafkaCluster> = Api::namespaced(client.clone(), NS);
    kcs.create(&PostParams::default(), &example("kafkacluster-basic.yaml")?)
        .await?;

    // Without a LoadBalancer address brokers cannot be configured: Envoy and Services first.
    wait_names::<Deployment>(&client, "basic", &["basic-envoy"]).await?;
    wait_names::<Service>(
        &client,
        "basic",
        &[
            "basic-broker-0",
            "basic-broker-1",
            "basic-broker-2",
            "basic-bootstrap",
            "basic-external",
            "basic-headless",
        ],
    )
    .await?;
    assert!(names::<Pod>(&client, "basic").await?.is_empty());
    let status = wait_for("status to explain the wait", WAIT, POLL, || async {
        let kc = kcs.get("basic").await.ok()?;
        let ready = kc
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        ready.message.contains("LoadBalancer").then_some(ready)
    })
    .await?;
    assert_eq!(status.status, "False");

    // Play the cloud: the LoadBalancer gets an address; the brokers follow.
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    services
        .patch_status(
            "basic-external",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}}),
            ),
        )
        .await?;
    wait_names::<Pod>(
        &client,
        "basic",
        &["basic-broker-0", "basic-broker-1", "basic-broker-2"],
    )
    .await?;
    wait_names::<ConfigMap>(
        &client,
        "basic",
        &[
            "basic-broker-0-config",
            "basic-broker-1-config",
            "basic-broker-2-config",
            "basic-envoy-bootstrap",
        ],
    )
    .await?;
    wait_names::<PersistentVolumeClaim>(
        &client,
        "basic",
        &[
            "basic-broker-0-data-0",
            "basic-broker-1-data-0",
            "basic-broker-2-data-0",
        ],
    )
    .await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    for id in 0..3 {
        let p = properties(&cms.get(&format!("basic-broker-{id}-config")).await?);
        assert_eq!(p["node.id"], id.to_string());
        assert_eq!(p["process.roles"], "broker,controller");
        assert_eq!(
            p["listeners"],
            "INTERNAL://:9092,CONTROLLER://:9093,EXTERNAL://:9094"
        );
        // A controller of a dynamic quorum advertises its controller listener at its stable
        // name too: voters record what it advertises.
        assert_eq!(
            p["advertised.listeners"],
            format!(
                "INTERNAL://basic-broker-{id}.basic-headless.default.svc.cluster.local:9092,CONTROLLER://basic-broker-{id}.basic-headless.default.svc.cluster.local:9093,EXTERNAL://203.0.113.10:{}",
                29100 + id
            )
        );
    }
    let ext = services.get("basic-external").await?;
    let spec = ext.spec.context("spec")?;
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    let ports: Vec<i32> = spec
        .ports
        .unwrap_or_default()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [29092, 29100, 29101, 29102]);

    // Play the kubelet: Pod IPs reach the xDS snapshot.
    assert_eq!(
        op.listeners("default/basic"),
        ["pier/default/basic/external/bootstrap"]
    );
    assign_pod_ips(&client, "basic").await?;
    wait_for(
        "a listener per broker in the xDS snapshot",
        WAIT,
        POLL,
        || async { (op.listeners("default/basic").len() == 4).then_some(()) },
    )
    .await?;
    let kc = kcs.get("basic").await?;
    let status = kc.status.context("status")?;
    assert_eq!(status.broker_count, 3);
    assert!(status.cluster_id.is_some());
    assert_eq!(
        status.bootstrap_address.as_deref(),
        Some("203.0.113.10:29092")
    );

    // Nothing to change: reconciles keep running (Pods never become Ready here) but write
    // nothing, as the API server's audit log says (Events included).
    let writes = op.wait_steady(WAIT).await?;
    let mark = plane.audit_mark()?;
    let reconciles = op.reconciles();
    wait_for("more reconciles", WAIT, POLL, || async {
        (op.reconciles() >= reconciles + 3).then_some(())
    })
    .await?;
    assert_eq!(
        op.writes(),
        writes,
        "a reconcile with nothing to change writes nothing"
    );
    let audited = plane.audit_write_counts(OPERATOR_USER, &mark)?;
    assert!(
        audited.is_empty(),
        "writes in the steady state: {audited:?}"
    );

    // Drift: a hand edit of a field Pier sets is undone; a label Pier does not set stays.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let svcs: Api<Service> = Api::namespaced(client.clone(), NS);
    let original = cms.get("basic-broker-0-config").await?;
    cms.patch(
        "basic-broker-0-config",
        &PatchParams::default(),
        &Patch::Merge(json!({
            "metadata": {"labels": {"team": "data"}},
            "data": {"server.properties": "edited=by hand\n"},
        })),
    )
    .await?;
    let service = svcs.get("basic-broker-0").await?;
    let ports = service
        .spec
        .clone()
        .context("spec")?
        .ports
        .context("ports")?;
    svcs.patch(
        "basic-broker-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"ports": [{"name": "edited", "port": 1234}]}})),
    )
    .await?;
    wait_for("the hand edits to be undone", WAIT, POLL, || async {
        let cm = cms.get("basic-broker-0-config").await.ok()?;
        let svc = svcs.get("basic-broker-0").await.ok()?;
        // Pier's ports are back; the one added by hand is not Pier's (server-side apply).
        let live = svc.spec.as_ref()?.ports.clone()?;
        let restored = cm.data == original.data
            && ports
                .iter()
                .all(|p| live.iter().any(|l| l.port == p.port && l.name == p.name));
        restored.then_some(cm)
    })
    .await
    .map(|cm| assert_eq!(cm.labels().get("team").map(String::as_str), Some("data")))?;
    op.wait_steady(WAIT).await?;

    // A per-broker config change touches only that broker's ConfigMap.
    let versions = |list: Vec<ConfigMap>| -> BTreeMap<String, String> {
        list.into_iter()
            .map(|c| {
                (
                    c.name_any(),
                    c.metadata.resource_version.unwrap_or_default(),
                )
            })
            .collect()
    };
    let before = versions(cms.list(&selector("basic")).await?.items);
    let uids = pod_uids(&client, "basic").await?;
    // A dynamic key is applied live (Kafka is not running here): no ConfigMap, no Pod changes.
    set_brokers(
        &kcs,
        "basic",
        json!([
            {"id": 0, "configGroup": "default"},
            {"id": 1, "configGroup": "default", "config": {"log.cleaner.threads": "2"}},
            {"id": 2, "configGroup": "default"}
        ]),
    )
    .await?;
    wait_for(
        "broker 1 to wait for its live config",
        WAIT,
        POLL,
        || async {
            let kc = kcs.get("basic").await.ok()?;
            let b = kc.status?.brokers.into_iter().find(|b| b.id == 1)?;
            (b.configuration_state.as_deref() == Some("DynamicConfigPending")).then_some(())
        },
    )
    .await?;
    assert_eq!(versions(cms.list(&selector("basic")).await?.items), before);
    assert_eq!(pod_uids(&client, "basic").await?, uids);

    // A read-only key on broker 1 changes only its ConfigMap and replaces only its Pod (not
    // ready, so without health gates).
    set_brokers(
        &kcs,
        "basic",
        json!([
            {"id": 0, "configGroup": "default"},
            {"id": 1, "configGroup": "default", "config": {"log.cleaner.threads": "2"},
             "readOnlyConfig": {"num.partitions": "2"}},
            {"id": 2, "configGroup": "default"}
        ]),
    )
    .await?;
    wait_for("broker 1's ConfigMap to change", WAIT, POLL, || async {
        let p = properties(&cms.get("basic-broker-1-config").await.ok()?);
        (p.get("num.partitions").map(String::as_str) == Some("2")).then_some(())
    })
    .await?;
    let after = versions(cms.list(&selector("basic")).await?.items);
    for (name, v) in &before {
        assert_eq!(after[name] != *v, name == "basic-broker-1-config", "{name}");
    }
    wait_for("broker 1's Pod to be replaced", WAIT, POLL, || async {
        let now = pod_uids(&client, "basic").await.ok()?;
        let replaced = now.get("basic-broker-1")? != &uids["basic-broker-1"];
        replaced.then_some(())
    })
    .await?;
    assign_pod_ips(&client, "basic").await?;
    let now = pod_uids(&client, "basic").await?;
    for name in ["basic-broker-0", "basic-broker-2"] {
        assert_eq!(now[name], uids[name], "{name} was not replaced");
    }
    let uids = now;

    // Add broker 3: only its objects appear, the Service gains its port, xDS its listener.
    set_brokers(
        &kcs,
        "basic",
        json!([
            {"id": 0, "configGroup": "default"},
            {"id": 1, "configGroup": "default", "config": {"log.cleaner.threads": "2"},
             "readOnlyConfig": {"num.partitions": "2"}},
            {"id": 2, "configGroup": "default"},
            {"id": 3, "configGroup": "default"}
        ]),
    )
    .await?;
    wait_names::<Pod>(
        &client,
        "basic",
        &[
            "basic-broker-0",
            "basic-broker-1",
            "basic-broker-2",
            "basic-broker-3",
        ],
    )
    .await?;
    let now = pod_uids(&client, "basic").await?;
    for (name, uid) in &uids {
        assert_eq!(&now[name], uid, "{name} was not replaced");
    }
    wait_for(
        "the external Service to gain port 29103",
        WAIT,
        POLL,
        || async {
            let svc = services.get("basic-external").await.ok()?;
            svc.spec?
                .ports?
                .iter()
                .any(|p| p.port == 29103)
                .then_some(())
        },
    )
    .await?;
    assign_pod_ips(&client, "basic").await?;
    wait_for("broker 3's listener", WAIT, POLL, || async {
        op.listeners("default/basic")
            .contains(&"pier/default/basic/external/broker-3".to_string())
            .then_some(())
    })
    .await?;

    // Remove broker 1. No Kafka runs in this test, so Pier cannot learn which replicas broker
    // 1 holds: nothing of it is deleted (tests/e2e.rs drains a real broker), it stays in
    // status as a broker that left the spec, and its Envoy listener stays.
    set_brokers(
        &kcs,
        "basic",
        json!([
            {"id": 0, "configGroup": "default"},
            {"id": 2, "configGroup": "default"},
            {"id": 3, "configGroup": "default"}
        ]),
    )
    .await?;
    let waiting = wait_for("broker 1 reported as leaving", WAIT, POLL, || async {
        let status = kcs.get("basic").await.ok()?.status?;
        let one = status.brokers.iter().find(|b| b.id == 1)?;
        let moves = status.replica_moves?;
        (status.broker_count == 3 && one.phase == BrokerPhase::Running)
            .then_some(moves.message.unwrap_or_default())
    })
    .await?;
    assert!(waiting.contains("waiting for Kafka"), "{waiting}");
    let last = pod_uids(&client, "basic").await?;
    for name in [
        "basic-broker-0",
        "basic-broker-1",
        "basic-broker-2",
        "basic-broker-3",
    ] {
        assert_eq!(last[name], now[name], "{name} kept its Pod");
    }
    for (kind, names) in [
        ("ConfigMap", names::<ConfigMap>(&client, "basic").await?),
        ("Service", names::<Service>(&client, "basic").await?),
    ] {
        assert!(
            names.iter().any(|n| n.starts_with("basic-broker-1")),
            "broker 1 kept its {kind}: {names:?}"
        );
    }
    assert!(
        op.listeners("default/basic")
            .contains(&"pier/default/basic/external/broker-1".to_string()),
        "broker 1's listener stays while its data may be there"
    );
    Ok(())
}

#[tokio::test]
async fn jbod_and_invalid_specs() -> anyhow::Result<()> {
    let plane = start_plane("controller-jbod").await?;
    let client = plane.client();
    let _op = Operator::start(client.clone(), NS).await?;
    let kcs: Api<KafkaCluster> = Api::namespaced(client.clone(), NS);
    kcs.create(&PostParams::default(), &example("kafkacluster-jbod.yaml")?)
        .await?;

    // advertisedHost is set, so brokers need not wait for the LoadBalancer.
    wait_names::<Pod>(
        &client,
        "jbod",
        &[
            "jbod-broker-0",
            "jbod-broker-1",
            "jbod-broker-100",
            "jbod-broker-101",
            "jbod-broker-102",
            "jbod-broker-2",
        ],
    )
    .await?;
    let claims = names::<PersistentVolumeClaim>(&client, "jbod").await?;
    for id in [0, 1, 2] {
        let mine: Vec<&String> = claims
            .iter()
            .filter(|c| c.starts_with(&format!("jbod-broker-{id}-")))
            .collect();
        assert_eq!(mine.len(), 2, "{claims:?}");
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod = pods.get("jbod-broker-0").await?;
    let mounts: Vec<String> = pod.spec.context("spec")?.containers[0]
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_path)
        .collect();
    assert!(mounts.contains(&"/var/lib/kafka/data0".to_string()));
    assert!(mounts.contains(&"/var/lib/kafka/data1".to_string()));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let p = properties(&cms.get("jbod-broker-0-config").await?);
    assert_eq!(
        p["log.dirs"],
        "/var/lib/kafka/data0/kafka,/var/lib/kafka/data1/kafka"
    );
    assert_eq!(p["process.roles"], "broker");

    // A spec the apiserver accepts but Pier cannot realise: Degraded, and nothing is deleted.
    let before = names::<Pod>(&client, "jbod").await?;
    kcs.patch(
        "jbod",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"kafka": {"readOnlyConfig": {"log.dirs": "/tmp/elsewhere"}}}}),
        ),
    )
    .await?;
    let degraded =
        wait_degraded(&kcs, "jbod", "Degraded condition", |c| c.status == "True").await?;
    assert!(
        degraded.message.contains("\"log.dirs\" is set by Pier"),
        "{}",
        degraded.message
    );
    assert_eq!(names::<Pod>(&client, "jbod").await?, before);

    // Fixing the spec clears it.
    kcs.patch(
        "jbod",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"kafka": {"readOnlyConfig": {"log.dirs": null}}}})),
    )
    .await?;
    wait_degraded(&kcs, "jbod", "Degraded to clear", |c| c.status == "False").await?;

    // A spec the CRD accepts but the API server refuses when Pier applies it (Envoy requests
    // above their limits): the error is in status and in a Warning Event, not only in a log.
    kcs.patch(
        "jbod",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"envoy": {"resources": {
            "requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}}})),
    )
    .await?;
    let failed = wait_degraded(&kcs, "jbod", "Degraded ApplyFailed", |c| {
        c.status == "True" && c.reason == "ApplyFailed"
    })
    .await?;
    assert!(
        failed.message.contains("Deployment")
            && failed.message.contains("less than or equal to cpu limit"),
        "{}",
        failed.message
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    wait_for("a Warning Event ApplyFailed", WAIT, POLL, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("ApplyFailed") && e.type_.as_deref() == Some("Warning")
        })
    })
    .await?;
    kcs.patch(
        "jbod",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"envoy": {"resources": null}}})),
    )
    .await?;
    wait_degraded(&kcs, "jbod", "ApplyFailed to clear", |c| {
        c.status == "False"
    })
    .await?;

    // Volumes never shrink, and grow only where their StorageClass allows it (these claims
    // name none): both are refused with a condition, and no claim is touched.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let size = |c: &PersistentVolumeClaim| {
        c.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .map(|r| r["storage"].0.clone())
    };
    let versions_before: Vec<Option<String>> = claims
        .list(&selector("jbod"))
        .await?
        .items
        .iter()
        .map(|c| c.metadata.resource_version.clone())
        .collect();
    for (wanted, refusal) in [("512Mi", "cannot shrink"), ("2Gi", "cannot grow")] {
        kcs.patch(
            "jbod",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"brokerConfigGroups": {"controllers": {
                "storage": [{"mountPath": "/var/lib/kafka/metadata", "size": wanted}]}}}})),
        )
        .await?;
        let refused = wait_degraded(&kcs, "jbod", "Degraded VolumeResizeRefused", |c| {
            c.reason == "VolumeResizeRefused" && c.message.contains(refusal)
        })
        .await?;
        assert!(
            refused.message.contains("jbod-broker-100-"),
            "{}",
            refused.message
        );
    }
    let after = claims.list(&selector("jbod")).await?.items;
    assert_eq!(
        after
            .iter()
            .map(|c| c.metadata.resource_version.clone())
            .collect::<Vec<_>>(),
        versions_before,
        "no claim was changed"
    );
    assert!(
        after
            .iter()
            .filter(|c| c.name_any().starts_with("jbod-broker-100-"))
            .all(|c| size(c).as_deref() == Some("1Gi"))
    );
    Ok(())
}

#[tokio::test]
async fn the_legacy_finalizer_is_removed_and_deletion_needs_no_operator() -> anyhow::Result<()> {
    let plane = start_plane("controller-finalizer").await?;
    let client = plane.client();
    let kcs: Api<KafkaCluster> = Api::namespaced(client.clone(), NS);
    let mut kc = example("kafkacluster-basic.yaml")?;
    kc.spec.listeners.external[0].advertised_host = Some("kafka.example.com".into());
    // As earlier versions left it, next to somebody else's finalizer.
    kc.metadata.finalizers = Some(vec![
        "example.com/keep".into(),
        "kafka.pier.dev/cleanup".into(),
    ]);
    kcs.create(&PostParams::default(), &kc).await?;
    let op = Operator::start(client.clone(), NS).await?;
    wait_for("the legacy finalizer to go", WAIT, POLL, || async {
        let kc = kcs.get("basic").await.ok()?;
        (kc.finalizers() == ["example.com/keep"]).then_some(())
    })
    .await?;
    wait_names::<Pod>(
        &client,
        "basic",
        &["basic-broker-0", "basic-broker-1", "basic-broker-2"],
    )
    .await?;
    // No operator runs: deleting the cluster must not hang on Pier.
    drop(op);
    kcs.patch(
        "basic",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    kcs.delete("basic", &Default::default()).await?;
    wait_for("the KafkaCluster to be gone", WAIT, POLL, || async {
        kcs.get_opt("basic").await.ok()?.is_none().then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_interrupted_operator_converges_without_duplicates() -> anyhow::Result<()> {
    let plane = start_plane("controller-restart").await?;
    let client = plane.client();
    let mut kc = example("kafkacluster-basic.yaml")?;
    kc.spec.listeners.external[0].advertised_host = Some("kafka.example.com".into());
    let kcs: Api<KafkaCluster> = Api::namespaced(client.clone(), NS);
    kcs.create(&PostParams::default(), &kc).await?;

    // Stop the first operator in the middle of creating the cluster.
    let first = Operator::start(client.clone(), NS).await?;
    wait_for(
        "the first writes",
        WAIT,
        Duration::from_millis(5),
        || async { (first.writes() >= 3).then_some(()) },
    )
    .await?;
    drop(first);
    let partial = object_count(&client, "basic").await?;
    println!("objects when the first operator stopped: {partial}");

    let second = Operator::start(client.clone(), NS).await?;
    wait_names::<Pod>(
        &client,
        "basic",
        &["basic-broker-0", "basic-broker-1", "basic-broker-2"],
    )
    .await?;
    wait_names::<ConfigMap>(
        &client,
        "basic",
        &[
            "basic-broker-0-config",
            "basic-broker-1-config",
            "basic-broker-2-config",
            "basic-envoy-bootstrap",
        ],
    )
    .await?;
    wait_names::<Deployment>(&client, "basic", &["basic-envoy"]).await?;
    // Converged: further reconciles write nothing, and the second operator wrote only what the
    // first had not (objects it left are not written again), plus the status.
    let writes = second.wait_steady(WAIT).await?;
    let total = object_count(&client, "basic").await?;
    assert!(
        partial > 0 && partial < total,
        "the interruption left some objects, not all: {partial} of {total}"
    );
    assert!(
        writes <= (total - partial) as u64 + 3,
        "{writes} writes to create {} missing objects",
        total - partial
    );
    Ok(())
}

/// Every object of the cluster, of every kind Pier writes.
async fn object_count(client: &Client, cluster: &str) -> anyhow::Result<usize> {
    Ok(names::<Pod>(client, cluster).await?.len()
        + names::<ConfigMap>(client, cluster).await?.len()
        + names::<Service>(client, cluster).await?.len()
        + names::<Deployment>(client, cluster).await?.len()
        + names::<PersistentVolumeClaim>(client, cluster).await?.len()
        + names::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(client, cluster)
            .await?
            .len())
}

/// Helm installs a chart's CRDs once and never upgrades them: an operator upgraded on a cluster
/// that has only the KafkaCluster CRD runs its clusters as before, with the KafkaTopic and
/// KafkaUser controllers off (their caches would never fill and hold every cluster back).
#[tokio::test]
async fn clusters_are_run_without_the_topic_and_user_crds() -> anyhow::Result<()> {
    use pier_testenv::control_plane::{ControlPlaneOptions, repo_crds_dir};
    let logs = pier_testenv::LogDir::for_current_test("controller-old-crds")?;
    let plane = pier_testenv::ControlPlane::start_with(
        &logs,
        ControlPlaneOptions {
            scheduler: false,
            install_crds: false,
            ..Default::default()
        },
    )
    .await?;
    let crds = logs.sub("crds")?;
    std::fs::copy(
        repo_crds_dir().join("kafkacluster.yaml"),
        crds.join("kafkacluster.yaml"),
    )?;
    plane.install_crds(&crds).await?;
    let client = plane.client();
    let mut kc = example("kafkacluster-basic.yaml")?;
    kc.spec.listeners.external[0].advertised_host = Some("kafka.example.com".into());
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &kc)
        .await?;
    let _operator = Operator::start(client.clone(), NS).await?;
    wait_names::<Pod>(
        &client,
        "basic",
        &["basic-broker-0", "basic-broker-1", "basic-broker-2"],
    )
    .await?;
    wait_for("the cluster's status", WAIT, POLL, || async {
        let kc = Api::<KafkaCluster>::namespaced(client.clone(), NS)
            .get("basic")
            .await
            .ok()?;
        (kc.status?.broker_count == 3).then_some(())
    })
    .await?;
    Ok(())
}
