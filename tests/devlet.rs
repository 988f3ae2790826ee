//! The dev node agent against a real control plane: its Node stays Ready with a fresh Lease, the
//! real scheduler binds Pods to it, and its provisioner's volumes are bound by the real PV binder.
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, PostParams};
use pier_testenv::devlet::{self, DevletOptions, STORAGE_CLASS};
use pier_testenv::{ControlPlane, LogDir, wait_for};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

#[tokio::test]
async fn devlet_node_volumes_and_scheduling() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("devlet")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    let mut options = DevletOptions::new("dev-a", logs.data("devlet")?);
    options.zone = Some("zone-a".into());
    options.heartbeat_every = Duration::from_secs(1);
    let devlet = tokio::spawn(devlet::run(client.clone(), options.clone()));

    // The Node is Ready, labelled with its zone, and its Lease is renewed.
    let nodes: Api<Node> = Api::all(client.clone());
    let node = wait_for("Node dev-a to be Ready", WAIT, POLL, || async {
        let n = nodes.get("dev-a").await.ok()?;
        let ready = n
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(n)
    })
    .await?;
    assert_eq!(
        node.metadata.labels.context("labels")?["topology.kubernetes.io/zone"],
        "zone-a"
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renewed = |l: Lease| l.spec.and_then(|s| s.renew_time).map(|t| t.0);
    let first = wait_for("the node Lease", WAIT, POLL, || async {
        renewed(leases.get("dev-a").await.ok()?)
    })
    .await?;
    wait_for("the node Lease to be renewed", WAIT, POLL, || async {
        (renewed(leases.get("dev-a").await.ok()?)? > first).then_some(())
    })
    .await?;

    // A claim of the devlet's class gets a local volume, bound by kube-controller-manager.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"storageClassName": STORAGE_CLASS, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}},
    }))?;
    claims.create(&PostParams::default(), &claim).await?;
    let bound = wait_for("the claim to be Bound", WAIT, POLL, || async {
        let c = claims.get("data").await.ok()?;
        (c.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(c)
    })
    .await?;
    let pv_name = bound
        .spec
        .and_then(|s| s.volume_name)
        .context("volume name")?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get(&pv_name).await?;
    let dir = pv.spec.and_then(|s| s.host_path).context("hostPath")?.path;
    assert!(std::path::Path::new(&dir).is_dir(), "{dir} exists");

    // The real scheduler places a Pod that uses the volume on the devlet's node.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "user"},
        "spec": {
            "containers": [{"name": "c", "image": "apache/kafka:4.1.2",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        },
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let node_name = wait_for("the Pod to be scheduled", WAIT, POLL, || async {
        pods.get("user").await.ok()?.spec?.node_name
    })
    .await?;
    assert_eq!(node_name, "dev-a");
    assert!(!devlet.is_finished(), "the devlet keeps running");
    devlet.abort();
    Ok(())
}
