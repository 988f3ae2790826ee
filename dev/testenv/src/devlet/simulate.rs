//! Simulated Pods (`pier-devlet --simulate`, [`super::DevletOptions::simulate`]): every Pod bound
//! to this node is reported Running and Ready at once, with a loopback address of its own as
//! `status.podIP`, but no process is started, no volume is mounted and no probe runs. So
//! hundreds or thousands of broker Pods fit on one machine, for measuring the operator at
//! scale (`benches/operator_scale.rs`).
//!
//! What a client of such a Pod sees: its address routes (all of 127.0.0.0/8 is `lo`) and nothing
//! listens there, so a connection is refused at once. The operator's Kafka admin calls fail
//! fast, as against brokers that are down, not after a timeout.
//!
//! Deleted Pods are removed at once (grace period 0). Claims are still provisioned by the
//! devlet's volume provisioner (the scheduler waits for them), the LoadBalancer provider still
//! gives addresses; the Service proxy does not run (nothing would connect through it).
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::DevletOptions;
use super::container::now_rfc3339;
use crate::net::loopback_ips;

/// Status writes in flight at once: the apiserver's default max-in-flight is 400 (shared with
/// the operator and the control plane), a burst of a thousand Pods must not crowd it out.
const PARALLEL_WRITES: usize = 32;

/// Marks every Pod bound to this node Running and Ready, until the watch fails.
pub async fn run_pods(client: kube::Client, options: DevletOptions) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", options.node_name));
    let mut stream = watcher(pods, config).applied_objects().boxed();
    // uid → the address given to it.
    let mut addresses: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    let writes = Arc::new(Semaphore::new(PARALLEL_WRITES));
    while let Some(pod) = stream.try_next().await? {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some() {
            addresses.remove(&uid);
            let permit = writes.clone().acquire_owned().await?;
            tokio::spawn(async move {
                let _permit = permit;
                let _ = api
                    .delete(&name, &DeleteParams::default().grace_period(0))
                    .await;
            });
            continue;
        }
        if addresses.contains_key(&uid) || reported(&pod) {
            continue;
        }
        let ports: Vec<u16> = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| u16::try_from(p.container_port).ok())
            .collect();
        // Free ports on the address: a client of the Pod finds nothing there, not some
        // other process bound to all addresses.
        let ip = loopback_ips(1, &ports)?[0];
        addresses.insert(uid, ip);
        let status = running_status(&pod, ip);
        let permit = writes.clone().acquire_owned().await?;
        tokio::spawn(async move {
            let _permit = permit;
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await
            {
                Ok(_) => tracing::debug!(pod = %name, %ip, "simulated: running"),
                Err(e) => tracing::warn!(pod = %name, error = %e, "cannot report the pod status"),
            }
        });
    }
    Ok(())
}

/// The Pod already says it runs with an address (e.g. this devlet restarted): left as it is.
fn reported(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .is_some_and(|s| s.phase.as_deref() == Some("Running") && s.pod_ip.is_some())
}

/// Running and Ready, every container running since now.
fn running_status(pod: &Pod, ip: Ipv4Addr) -> Value {
    let now = now_rfc3339();
    let statuses: Vec<Value> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            json!({
                "name": c.name, "image": c.image, "imageID": "", "ready": true, "started": true,
                "restartCount": 0, "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    let condition = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
    json!({"status": {
        "phase": "Running", "reason": null, "message": null,
        "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
        "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "startTime": now,
        "conditions": [
            condition("PodReadyToStartContainers"),
            condition("PodScheduled"),
            condition("Initialized"),
            condition("ContainersReady"),
            condition("Ready"),
        ],
        "containerStatuses": statuses,
    }})
}
