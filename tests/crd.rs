//! The KafkaCluster CRD: generated from the Rust types, checked in, and enforced by a real
//! kube-apiserver (schema, defaults and CEL rules).
use std::path::Path;

use kube::api::{Api, Patch, PatchParams, PostParams};
use pier::api::{DeletionPolicy, KafkaCluster, KafkaClusterSpec, KafkaTopic, KafkaUser};
use pier_testenv::control_plane::ControlPlaneOptions;
use pier_testenv::{ControlPlane, LogDir};
use serde_json::json;

#[test]
fn checked_in_crds_match_the_rust_types() {
    let files = pier::api::crd_files().unwrap();
    for (name, generated) in &files {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("crds")
            .join(name);
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            *generated == checked_in,
            "crds/{name} is stale: run `cargo run -- crd --write crds && cp crds/*.yaml charts/pier/crds/`"
        );
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pier"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let all: Vec<&str> = files.iter().map(|(_, y)| y.as_str()).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), all.join("---\n"));
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

fn volume() -> serde_json::Value {
    json!([{"mountPath": "/var/lib/kafka/data0", "size": "1Gi"}])
}

/// Brokers with a volume each, as every broker must have.
fn brokers(ids: &[i32]) -> serde_json::Value {
    json!(
        ids.iter()
            .map(|id| json!({"id": id, "storage": volume()}))
            .collect::<Vec<_>>()
    )
}

/// One broker with `extra` merged into its spec.
fn broker_with(extra: serde_json::Value) -> serde_json::Value {
    let mut b = json!({"id": 0, "storage": volume()});
    b.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!([b])
}

fn example(name: &str) -> anyhow::Result<KafkaCluster> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    Ok(serde_yaml_ng::from_str(&std::fs::read_to_string(path)?)?)
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

    // The shipped examples, and what the new rules must still let through.
    for name in ["kafkacluster-basic.yaml", "kafkacluster-jbod.yaml"] {
        api.create(&pp, &example(name)?).await?;
    }
    api.create(
        &pp,
        &cluster(
            "allowed",
            json!({
                "brokers": [
                    {"id": 0, "configGroup": "g", "labels": {"app.kubernetes.io/version": "4.1", "team": "a"},
                     "config": {"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": "x\ny"}},
                    {"id": 1, "storage": [{"mountPath": "/data", "size": "1.5Gi"}]}
                ],
                "brokerConfigGroups": {"g": {"image": "registry:5000/kafka@sha256:abcd",
                    "storage": [{"mountPath": "/data", "size": "500M"}]}},
                "kafka": {"readOnlyConfig": {"num.partitions": "3", "com.example.Plugin_key-1": "v"}}
            }),
        ),
    )
    .await?;

    let rejected = [
        (
            json!({"brokers": brokers(&[0, 0])}),
            "broker ids must be unique",
        ),
        (
            json!({"brokers": broker_with(json!({"configGroup": "nope"}))}),
            "every configGroup must name an entry of brokerConfigGroups",
        ),
        (
            json!({"brokers": broker_with(json!({"roles": ["broker"]}))}),
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
        (json!({"brokers": brokers(&[-1])}), "spec.brokers[0].id"),
        // A line break in a key would add a line of its own to server.properties.
        (
            json!({"brokers": broker_with(json!({"config": {"x\nnode.id": "1"}}))}),
            "config keys are Kafka config names",
        ),
        (
            json!({"brokers": broker_with(json!({"readOnlyConfig": {"num partitions": "1"}}))}),
            "config keys are Kafka config names",
        ),
        (
            json!({"brokers": brokers(&[0]), "kafka": {"readOnlyConfig": {"a=b": "1"}}}),
            "config keys are Kafka config names",
        ),
        (
            json!({"brokers": brokers(&[0]), "kafka": {"clusterWideConfig": {"#x": "1"}}}),
            "config keys are Kafka config names",
        ),
        // Pier's selector labels and its own annotations belong to Pier.
        (
            json!({"brokers": broker_with(json!({"labels": {"kafka.pier.dev/cluster": "other"}}))}),
            "are set by Pier",
        ),
        (
            json!({"brokers": broker_with(json!({"annotations": {"kafka.pier.dev/restart": "1"}}))}),
            "are set by Pier",
        ),
        (
            json!({"brokers": broker_with(json!({"configGroup": "g"})),
                   "brokerConfigGroups": {"g": {"labels": {"app.kubernetes.io/instance": "other"}}}}),
            "are set by Pier",
        ),
        (
            json!({"brokers": broker_with(json!({"configGroup": "g"})),
                   "brokerConfigGroups": {"g": {"annotations": {"kafka.pier.dev/broker-id": "1"}}}}),
            "are set by Pier",
        ),
        (
            json!({"brokers": brokers(&[0]), "envoy": {"annotations": {"kafka.pier.dev/x": "y"}}}),
            "are set by Pier",
        ),
        (
            json!({"brokers": brokers(&[0]), "listeners": {"external": [
                {"name": "ext", "containerPort": 9094, "bootstrapPort": 29092, "brokerPortBase": 29100,
                 "annotations": {"app.kubernetes.io/managed-by": "me"}}]}}),
            "are set by Pier",
        ),
        // Quantities and images the apiserver would only refuse on every apply.
        (
            json!({"brokers": broker_with(json!({"storage": [{"mountPath": "/d", "size": "1Gb"}]}))}),
            "size must be a positive Kubernetes quantity",
        ),
        (
            json!({"brokers": broker_with(json!({"storage": [{"mountPath": "/d", "size": "0"}]}))}),
            "size must be a positive Kubernetes quantity",
        ),
        (
            json!({"brokers": brokers(&[0]), "kafka": {"image": ""}}),
            "image must be a container image reference",
        ),
        (
            json!({"brokers": broker_with(json!({"configGroup": "g"})),
                   "brokerConfigGroups": {"g": {"image": "apache/kafka 4.1"}}}),
            "image must be a container image reference",
        ),
        (
            json!({"brokers": brokers(&[0]), "envoy": {"image": " "}}),
            "image must be a container image reference",
        ),
        // A volume's mount path is an entry of the comma-separated log.dirs.
        (
            json!({"brokers": broker_with(json!({"storage": [{"mountPath": "/a,/b", "size": "1Gi"}]}))}),
            "mountPath must not contain commas or whitespace",
        ),
        (
            json!({"brokers": broker_with(json!({"storage": [
                {"mountPath": "/a", "size": "1Gi"}, {"mountPath": "/a", "size": "2Gi"}]}))}),
            "the mountPaths of a storage list must differ",
        ),
        // Without a volume a broker's data would be an emptyDir, wiped by every roll.
        (
            json!({"brokers": [{"id": 0}]}),
            "every broker needs storage",
        ),
        (
            json!({"brokers": [{"id": 0, "configGroup": "g"}], "brokerConfigGroups": {"g": {"heapOpts": "-Xmx1g"}}}),
            "every broker needs storage",
        ),
    ];
    // Every case is tried, so one run shows all that slip through.
    let mut wrong = Vec::new();
    for (i, (spec, message)) in rejected.into_iter().enumerate() {
        match api.create(&pp, &cluster(&format!("bad-{i}"), spec)).await {
            Ok(_) => wrong.push(format!("case {i} accepted, expected {message:?}")),
            Err(e) if !e.to_string().contains(message) => {
                wrong.push(format!("case {i}: expected {message:?}, got {e}"))
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

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

/// An API server with the CRDs installed (no controller manager, no scheduler) and the API of
/// `K` in namespace `default`.
async fn schema_plane<K>(name: &str) -> anyhow::Result<(ControlPlane, Api<K>)>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    let logs = LogDir::for_current_test(name)?;
    let plane = ControlPlane::start_with(
        &logs,
        ControlPlaneOptions {
            controller_manager: false,
            scheduler: false,
            install_crds: true,
        },
    )
    .await?;
    let api = Api::namespaced(plane.client(), "default");
    Ok((plane, api))
}

/// A resource of `examples/`.
fn shipped_example<K: serde::de::DeserializeOwned>(file: &str) -> anyhow::Result<K> {
    Ok(serde_yaml_ng::from_str(&std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(file),
    )?)?)
}

fn topic(name: &str, spec: serde_json::Value) -> KafkaTopic {
    serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaTopic",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a KafkaTopic")
}

#[tokio::test]
async fn the_apiserver_enforces_the_kafkatopic_schema() -> anyhow::Result<()> {
    let (_plane, api) = schema_plane::<KafkaTopic>("crd-topic").await?;
    let pp = PostParams::default();
    let shipped: KafkaTopic = shipped_example("kafkatopic.yaml")?;
    api.create(&pp, &shipped).await?;
    let created = api
        .create(
            &pp,
            &topic(
                "minimal",
                json!({"clusterRef": {"name": "c"}, "partitions": 1, "replicationFactor": 1}),
            ),
        )
        .await?;
    assert_eq!(created.spec.deletion_policy, DeletionPolicy::Delete);

    let ok = |extra: serde_json::Value| {
        let mut spec =
            json!({"clusterRef": {"name": "c"}, "partitions": 1, "replicationFactor": 1});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            spec[k] = v;
        }
        spec
    };
    let rejected = [
        (ok(json!({"partitions": 0})), "spec.partitions"),
        (
            ok(json!({"replicationFactor": 0})),
            "spec.replicationFactor",
        ),
        (ok(json!({"topicName": "a/b"})), "spec.topicName"),
        (
            ok(json!({"topicName": ".."})),
            "topicName cannot be '.' or '..'",
        ),
        (
            ok(json!({"config": {"bad key": "1"}})),
            "config keys are Kafka config names",
        ),
    ];
    let mut wrong = Vec::new();
    for (i, (spec, message)) in rejected.into_iter().enumerate() {
        match api.create(&pp, &topic(&format!("bad-{i}"), spec)).await {
            Ok(_) => wrong.push(format!("case {i} accepted, expected {message:?}")),
            Err(e) if !e.to_string().contains(message) => {
                wrong.push(format!("case {i}: expected {message:?}, got {e}"))
            }
            Err(_) => {}
        }
    }
    // The topic's name and cluster are fixed once set.
    for (patch, message) in [
        (
            json!({"spec": {"topicName": "other"}}),
            "topicName cannot change",
        ),
        (
            json!({"spec": {"clusterRef": {"name": "other"}}}),
            "clusterRef cannot change",
        ),
    ] {
        match api
            .patch("orders", &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => wrong.push(format!("{patch} accepted, expected {message:?}")),
            Err(e) if !e.to_string().contains(message) => {
                wrong.push(format!("{patch}: expected {message:?}, got {e}"))
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

#[tokio::test]
async fn the_apiserver_enforces_the_kafkauser_schema() -> anyhow::Result<()> {
    let (_plane, api) = schema_plane::<KafkaUser>("crd-user").await?;
    let pp = PostParams::default();
    let shipped: KafkaUser = shipped_example("kafkauser.yaml")?;
    api.create(&pp, &shipped).await?;
    let user = |name: &str, spec: serde_json::Value| -> KafkaUser {
        let mut spec = spec;
        spec["clusterRef"] = json!({"name": "c"});
        serde_json::from_value(json!({
            "apiVersion": "kafka.pier.dev/v1alpha1", "kind": "KafkaUser",
            "metadata": {"name": name}, "spec": spec,
        }))
        .expect("a KafkaUser")
    };
    let acl = |resource: serde_json::Value, ops: serde_json::Value| json!({"authorization": {"acls": [{"resource": resource, "operations": ops}]}});
    let rejected = [
        (
            acl(json!({"type": "topic"}), json!(["Read"])),
            "needs a name",
        ),
        (
            acl(json!({"type": "topic", "name": "t"}), json!([])),
            "operations",
        ),
        (
            json!({"quotas": {"requestPercentage": 20000}}),
            "requestPercentage",
        ),
        (
            json!({"quotas": {"producerByteRate": 0}}),
            "producerByteRate",
        ),
    ];
    let mut wrong = Vec::new();
    for (i, (spec, message)) in rejected.into_iter().enumerate() {
        match api.create(&pp, &user(&format!("bad-{i}"), spec)).await {
            Ok(_) => wrong.push(format!("case {i} accepted, expected {message:?}")),
            Err(e) if !e.to_string().contains(message) => {
                wrong.push(format!("case {i}: expected {message:?}, got {e}"))
            }
            Err(_) => {}
        }
    }
    api.create(
        &pp,
        &user(
            "cluster-acl",
            acl(json!({"type": "cluster"}), json!(["IdempotentWrite"])),
        ),
    )
    .await?;
    match api
        .patch(
            "cluster-acl",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"clusterRef": {"name": "other"}}})),
        )
        .await
    {
        Ok(_) => wrong.push("clusterRef change accepted".into()),
        Err(e) if !e.to_string().contains("clusterRef cannot change") => {
            wrong.push(format!("clusterRef change: {e}"))
        }
        Err(_) => {}
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}
