//! The Node object and its heartbeat: a Ready condition and a Lease in `kube-node-lease`, both
//! renewed, so kube-controller-manager's node lifecycle controller keeps the node schedulable.
use anyhow::Context;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use super::DevletOptions;

const MANAGER: &str = "pier-devlet";

/// Creates (or updates) the Node with its labels, capacity and a Ready condition.
pub async fn register_node(client: &kube::Client, o: &DevletOptions) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), json!(o.node_name));
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    labels.insert("node.pier.dev/devlet".into(), json!("true"));
    if let Some(zone) = &o.zone {
        labels.insert("topology.kubernetes.io/zone".into(), json!(zone));
    }
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": o.node_name, "labels": labels},
    });
    nodes
        .patch(
            &o.node_name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&node),
        )
        .await
        .with_context(|| format!("registering Node {}", o.node_name))?;
    update_status(&nodes, o).await
}

async fn update_status(nodes: &Api<Node>, o: &DevletOptions) -> anyhow::Result<()> {
    let now = Timestamp::now().to_string();
    let capacity = json!({"cpu": o.cpu, "memory": o.memory, "pods": o.pods});
    let status = json!({"status": {
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": o.node_name},
        ],
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "DevletReady",
            "message": "pier-devlet runs Pods as local processes",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
        "nodeInfo": {
            "architecture": std::env::consts::ARCH, "operatingSystem": "linux",
            "kubeletVersion": "v1.35.4", "kubeProxyVersion": "", "containerRuntimeVersion": "pier-devlet://0.1",
            "bootID": "", "kernelVersion": "", "machineID": "", "osImage": "pier-devlet", "systemUUID": "",
        },
    }});
    nodes
        .patch_status(
            &o.node_name,
            &PatchParams::default(),
            &Patch::Strategic(status),
        )
        .await
        .with_context(|| format!("updating the status of Node {}", o.node_name))?;
    Ok(())
}

/// Renews the node Lease and the Ready condition forever.
pub async fn heartbeat(client: kube::Client, o: DevletOptions) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    loop {
        if let Err(e) = renew_lease(&leases, &o).await {
            tracing::warn!(error = %e, "cannot renew the node Lease");
        }
        if let Err(e) = update_status(&nodes, &o).await {
            tracing::warn!(error = %e, "cannot update the Node status");
        }
        tokio::time::sleep(o.heartbeat_every).await;
    }
}

async fn renew_lease(leases: &Api<Lease>, o: &DevletOptions) -> anyhow::Result<()> {
    let now = MicroTime(Timestamp::now());
    let duration = i32::try_from(o.heartbeat_every.as_secs() * 4).unwrap_or(40);
    match leases.get_opt(&o.node_name).await? {
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(now);
            spec.holder_identity = Some(o.node_name.clone());
            spec.lease_duration_seconds = Some(duration);
            leases
                .replace(&o.node_name, &PostParams::default(), &lease)
                .await?;
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(o.node_name.clone()),
                    namespace: Some("kube-node-lease".into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(o.node_name.clone()),
                    lease_duration_seconds: Some(duration),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            leases.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}
