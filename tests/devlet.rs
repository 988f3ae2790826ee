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

    // An Envoy Pod runs as a local process on its own loopback address, becomes Ready by its
    // TCP probe, and is restarted when it dies.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "default");
    let bootstrap = "static_resources:
  listeners:
  - name: probe
    address: {socket_address: {address: 0.0.0.0, port_value: 24000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: probe
          cluster: none
  clusters:
  - {name: none, type: STATIC, connect_timeout: 1s, load_assignment: {cluster_name: none}}
";
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "envoy-cfg"}, "data": {"bootstrap.yaml": bootstrap},
        }))?,
    )
    .await?;
    let envoy: Pod = serde_json::from_value(json!({
        "metadata": {"name": "envoy"},
        "spec": {
            "containers": [{"name": "envoy", "image": "envoyproxy/envoy:v1.40.0",
                "args": ["-c", "/etc/envoy/bootstrap.yaml", "--service-node", "$(POD_NAME)"],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"containerPort": 24000}],
                "readinessProbe": {"tcpSocket": {"port": 24000}, "periodSeconds": 1},
                "volumeMounts": [{"name": "cfg", "mountPath": "/etc/envoy"}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "envoy-cfg"}}],
        },
    }))?;
    pods.create(&PostParams::default(), &envoy).await?;
    let ready_pod = |restarts: i32| {
        let pods = pods.clone();
        async move {
            let p = pods.get("envoy").await.ok()?;
            let status = p.status?;
            let ready = status
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let count = status.container_statuses?.first()?.restart_count;
            (ready && count == restarts).then_some(status.pod_ip?)
        }
    };
    let ip = wait_for("the Envoy Pod to be Ready", WAIT, POLL, || ready_pod(0)).await?;
    let ip: std::net::Ipv4Addr = ip.parse()?;
    assert!(
        ip.is_loopback() && ip != std::net::Ipv4Addr::LOCALHOST,
        "its own loopback address: {ip}"
    );
    let killed = std::process::Command::new("pkill")
        .args(["-KILL", "-f", "envoy-cfg|/volumes/cfg/bootstrap.yaml"])
        .status()?;
    assert!(killed.success(), "the Envoy process was found");
    wait_for("Envoy to be restarted and Ready again", WAIT, POLL, || {
        ready_pod(1)
    })
    .await?;

    // An image without a local launcher fails the Pod with a clear reason.
    let unknown: Pod = serde_json::from_value(json!({
        "metadata": {"name": "mystery"},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/mystery:1"}]},
    }))?;
    pods.create(&PostParams::default(), &unknown).await?;
    let message = wait_for("the unknown image to fail", WAIT, POLL, || async {
        let s = pods.get("mystery").await.ok()?.status?;
        (s.phase.as_deref() == Some("Failed")).then_some(s.message.unwrap_or_default())
    })
    .await?;
    assert!(message.contains("no local launcher"), "{message}");

    // Deleting a Pod stops its process and removes it.
    pods.delete("envoy", &kube::api::DeleteParams::default())
        .await?;
    wait_for("the Envoy Pod to be gone", WAIT, POLL, || async {
        matches!(pods.get_opt("envoy").await, Ok(None)).then_some(())
    })
    .await?;
    assert!(
        std::net::TcpStream::connect_timeout(&(ip, 24000).into(), Duration::from_millis(500))
            .is_err(),
        "its listener is closed"
    );
    assert!(!devlet.is_finished(), "the devlet keeps running");
    devlet.abort();
    Ok(())
}
