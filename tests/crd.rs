//! The KafkaCluster CRD: generated from the Rust types, checked in, and enforced by a real
//! kube-apiserver (schema, defaults and CEL rules).
use std::path::Path;

use kube::api::{Api, PostParams};
use pier::api::{KafkaCluster, KafkaClusterSpec};
use pier_testenv::control_plane::ControlPlaneOptions;
use pier_testenv::{ControlPlane, LogDir};
use serde_json::json;

#[test]
fn checked_in_crd_matches_the_rust_types() {
    let generated = pier::api::crd_yaml().unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/kafkacluster.yaml");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == checked_in,
        "crds/kafkacluster.yaml is stale: run `cargo run -- crd > crds/kafkacluster.yaml`"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pier"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), generated);
}

fn cluster(name: &str, spec: serde_json::Value) -> KafkaCluster {
    serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaCluster",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a KafkaCluster")
}

fn brokers(ids: &[i32]) -> serde_json::Value {
    json!(ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>())
}

#[tokio::test]
async fn the_apiserver_enforces_the_schema() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("crd")?;
    let plane = ControlPlane::start_with(
        &logs,
        ControlPlaneOptions {
            controller_manager: false,
            scheduler: false,
            install_crds: true,
        },
    )
    .await?;
    let api: Api<KafkaCluster> = Api::namespaced(plane.client(), "default");
    let pp = PostParams::default();

    // A minimal valid cluster gets the defaults filled in by the apiserver.
    let created = api
        .create(&pp, &cluster("ok", json!({"brokers": brokers(&[0, 1, 2])})))
        .await?;
    let spec: &KafkaClusterSpec = &created.spec;
    assert_eq!(spec.kafka.image, pier::api::DEFAULT_KAFKA_IMAGE);
    assert_eq!(spec.listeners.internal.len(), 2);
    assert_eq!(spec.brokers[0].roles.len(), 2);
    assert_eq!(spec.envoy.replicas, 2);

    let rejected = [
        (
            json!({"brokers": brokers(&[0, 0])}),
            "broker ids must be unique",
        ),
        (
            json!({"brokers": [{"id": 0, "configGroup": "nope"}]}),
            "every configGroup must name an entry of brokerConfigGroups",
        ),
        (
            json!({"brokers": [{"id": 0, "roles": ["broker"]}]}),
            "at least one broker must have the controller role",
        ),
        (
            json!({"brokers": brokers(&[0]), "listeners": {"internal": [
                {"name": "a", "port": 9092, "usedForInterBroker": true},
                {"name": "b", "port": 9092, "usedForController": true}]}}),
            "internal listener ports must differ",
        ),
        (
            json!({"brokers": brokers(&[0]), "listeners": {"external": [
                {"name": "ext", "containerPort": 9092, "bootstrapPort": 29092, "brokerPortBase": 29100}]}}),
            "external listener containerPorts must differ",
        ),
        (
            json!({"brokers": brokers(&[0]), "listeners": {"external": [
                {"name": "ext", "containerPort": 9094, "bootstrapPort": 29092}]}}),
            "set exactly one of brokerPortBase and sni",
        ),
        (
            json!({"brokers": [{"id": 0, "storage": [{"mountPath": "data", "size": "1Gi"}]}]}),
            "mountPath must be absolute",
        ),
        (json!({"brokers": [{"id": -1}]}), "spec.brokers[0].id"),
    ];
    for (i, (spec, message)) in rejected.into_iter().enumerate() {
        let err = api
            .create(&pp, &cluster(&format!("bad-{i}"), spec))
            .await
            .expect_err(message);
        assert!(err.to_string().contains(message), "{message}: {err}");
    }

    // kubectl explain shows the field descriptions.
    let out = std::process::Command::new(pier_testenv::program("kubectl")?)
        .args(["--kubeconfig"])
        .arg(plane.kubeconfig())
        .args(["explain", "kafkacluster.spec.brokers"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Stable node id"), "{text}");
    assert!(text.contains("configGroup"), "{text}");
    Ok(())
}
