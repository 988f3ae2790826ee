//! Smoke tests: one per real component of the test environment, each asserting real behaviour.
//! Run `dev/setup` first (`make test` does).
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use pier::kafka::{BrokerConnection, ConnectOptions};
use pier_testenv::monitoring::MonitoringOptions;
use pier_testenv::{ControlPlane, Envoy, KafkaCluster, LogDir, Monitoring, wait_for};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// After a handle is dropped, none of its processes may be left.
fn assert_gone(pids: &[u32]) {
    for pid in pids {
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
        assert!(!alive, "process {pid} outlived its handle");
    }
}

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

#[tokio::test]
async fn control_plane_watches_schedules_and_collects_garbage() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("control_plane")?;
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    let pids = plane.pids();
    assert_eq!(
        pids.len(),
        4,
        "etcd, apiserver, controller-manager, scheduler"
    );

    // Create and watch a ConfigMap through kube-rs.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut events = watcher(
        cms.clone(),
        watcher::Config::default().fields("metadata.name=smoke"),
    )
    .applied_objects()
    .boxed();
    cms.create(&PostParams::default(), &cm("smoke", &[("k", "v1")]))
        .await?;
    let seen = tokio::time::timeout(Duration::from_secs(30), events.try_next())
        .await
        .context("no watch event for the new ConfigMap")??
        .context("watch ended")?;
    assert_eq!(seen.data.unwrap()["k"], "v1");
    cms.patch(
        "smoke",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v2"}})),
    )
    .await?;
    let seen = tokio::time::timeout(Duration::from_secs(30), events.try_next())
        .await
        .context("no watch event for the update")??
        .context("watch ended")?;
    assert_eq!(seen.data.unwrap()["k"], "v2");

    // Register a Node (no kubelet here) and let the real scheduler bind a Pod to it.
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "smoke-node", "labels": {"kubernetes.io/hostname": "smoke-node"}},
    }))?;
    nodes.create(&PostParams::default(), &node).await?;
    let capacity = json!({"cpu": "4", "memory": "8Gi", "pods": "110"});
    let now = chrono_like_now();
    nodes
        .patch_status(
            "smoke-node",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "capacity": capacity, "allocatable": capacity,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "smoke test", "lastHeartbeatTime": now, "lastTransitionTime": now}],
            }})),
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "smoke-pod"},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/smoke:1",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let bound = wait_for(
        "the scheduler to bind smoke-pod",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            let p = pods.get("smoke-pod").await.ok()?;
            p.spec?.node_name
        },
    )
    .await?;
    assert_eq!(bound, "smoke-node");

    // The garbage collector deletes a dependent once its owner is gone.
    let owner = cms
        .create(&PostParams::default(), &cm("owner", &[]))
        .await?;
    let mut dependent = cm("dependent", &[]);
    dependent.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.metadata.uid.clone().context("owner has no uid")?,
        ..Default::default()
    }]);
    cms.create(&PostParams::default(), &dependent).await?;
    cms.delete("owner", &DeleteParams::default()).await?;
    wait_for(
        "the garbage collector to delete the dependent ConfigMap",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async { matches!(cms.get_opt("dependent").await, Ok(None)).then_some(()) },
    )
    .await?;

    // Deleting a namespace removes it and its objects (namespace controller).
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "smoke-ns"}}))?;
    namespaces.create(&PostParams::default(), &ns).await?;
    let in_ns: Api<ConfigMap> = Api::namespaced(client.clone(), "smoke-ns");
    in_ns
        .create(&PostParams::default(), &cm("doomed", &[("a", "b")]))
        .await?;
    namespaces
        .delete("smoke-ns", &DeleteParams::default())
        .await?;
    wait_for(
        "namespace smoke-ns to be deleted",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async { matches!(namespaces.get_opt("smoke-ns").await, Ok(None)).then_some(()) },
    )
    .await?;
    assert!(in_ns.get_opt("doomed").await?.is_none());

    drop(events);
    drop(plane);
    assert_gone(&pids);
    Ok(())
}

/// RFC 3339 "now" without pulling in a date crate.
fn chrono_like_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("running date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn kafka_cluster_has_three_brokers_and_replicates_a_record() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("kafka")?;
    let cluster = KafkaCluster::start(&logs, 3).await?;
    let pids = cluster.pids();
    assert_eq!(pids.len(), 3);

    let first = cluster.nodes()[0].broker_addr();
    let mut conn = BrokerConnection::connect(&first, ConnectOptions::default()).await?;
    let md = conn.metadata(None).await?;
    let ids: Vec<i32> = md.brokers.iter().map(|b| b.id).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert!(
        (1..=3).contains(&md.controller_id),
        "a controller is known: {}",
        md.controller_id
    );
    assert_eq!(md.cluster_id.as_deref(), Some(cluster.cluster_id()));
    for (b, node) in md.brokers.iter().zip(cluster.nodes()) {
        assert_eq!(format!("{}:{}", b.host, b.port), node.broker_addr());
    }

    conn.create_topic("smoke", 1, 3).await?;
    let topic = wait_for(
        "topic smoke with 3 in-sync replicas",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let first = first.clone();
            async move {
                let mut c = BrokerConnection::connect(&first, ConnectOptions::default())
                    .await
                    .ok()?;
                let md = c.metadata(Some(&["smoke"])).await.ok()?;
                let t = md.topic("smoke")?.clone();
                (t.partitions.len() == 1 && t.partitions[0].isr.len() == 3).then_some(t)
            }
        },
    )
    .await?;
    assert_eq!(topic.partitions[0].replicas.len(), 3);

    // Produce with acks=all and read it back, with kcat (librdkafka), a real client.
    let bootstrap = cluster.bootstrap();
    let within = Duration::from_secs(30);
    let produced = pier_testenv::kcat(
        &["-b", &bootstrap, "-P", "-t", "smoke", "-X", "acks=all"],
        Some(b"hello from pier\n"),
        within,
    )
    .await?;
    assert!(
        produced.status.success(),
        "kcat produce failed: {produced:?}"
    );
    let out = pier_testenv::kcat(
        &[
            "-b",
            &bootstrap,
            "-C",
            "-t",
            "smoke",
            "-o",
            "beginning",
            "-e",
            "-q",
        ],
        None,
        within,
    )
    .await?;
    assert!(out.status.success(), "kcat consume failed: {:?}", out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from pier"
    );

    drop(conn);
    drop(cluster);
    assert_gone(&pids);
    Ok(())
}

/// An echo server on a free loopback port.
async fn echo_server() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn envoy_static_tcp_proxy_passes_bytes_both_ways() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("envoy")?;
    let echo = echo_server().await?;
    let port = pier_testenv::net::free_port(Ipv4Addr::LOCALHOST)?;
    let bootstrap = format!(
        r#"
static_resources:
  listeners:
  - name: smoke
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: smoke
          cluster: echo
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {echo_port}}}}}}}
"#,
        echo_port = echo.port()
    );
    let mut envoy = Envoy::start(&logs, "envoy", &bootstrap, &[]).await?;
    envoy.wait_live(Duration::from_secs(30)).await?;
    assert_eq!(envoy.listener_names().await?, vec!["smoke".to_string()]);
    let info = envoy.server_info().await?;
    assert_eq!(info["state"], "LIVE");
    let version = info
        .pointer("/version")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    assert!(version.contains("/1.40."), "Envoy version {version}");

    let mut conn = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    for round in 0..3 {
        let msg = format!("round {round}: bytes through envoy\n");
        conn.write_all(msg.as_bytes()).await?;
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut back)).await??;
        assert_eq!(back, msg.as_bytes());
    }
    let dump = envoy.config_dump().await?;
    assert!(
        dump.to_string().contains("\"echo\""),
        "config_dump shows the cluster"
    );
    assert_eq!(
        envoy.stat("cluster.echo.upstream_cx_total").await?,
        Some(1),
        "one upstream connection carried all rounds"
    );

    let pid = envoy.pid();
    drop(conn);
    drop(envoy);
    assert_gone(&[pid]);
    Ok(())
}

#[tokio::test]
async fn prometheus_alert_reaches_a_rust_webhook_through_alertmanager() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("monitoring")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let webhook = format!("http://{}/alerts", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let monitoring = Monitoring::start(
        &logs,
        MonitoringOptions {
            rules_yaml: "groups:
  - name: pier-smoke
    interval: 1s
    rules:
      - alert: AlwaysFiring
        expr: vector(1) > 0
        labels: {severity: critical}
        annotations: {command: smoke}
"
            .into(),
            webhook_url: webhook,
            scrape_targets: Vec::new(),
            ..Default::default()
        },
    )
    .await?;
    let pids = monitoring.pids();

    let payload = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .context("no alert reached the webhook within 60 s")?
        .context("webhook channel closed")?;
    assert_eq!(payload["version"], "4");
    assert_eq!(payload["status"], "firing");
    let alert = &payload["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "AlwaysFiring");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["annotations"]["command"], "smoke");
    let labels: BTreeMap<String, String> = serde_json::from_value(alert["labels"].clone())?;
    assert!(labels.contains_key("alertname"));

    drop(monitoring);
    assert_gone(&pids);
    Ok(())
}

/// The control plane's audit log tells users apart: writes by a user of its own (a client
/// certificate from `kubeconfig_for`) are counted between two marks, reads are not logged,
/// another user's writes are not counted as its, and a user without rights is refused (403)
/// and logged as itself.
#[tokio::test]
async fn audit_log_counts_writes_by_user() -> anyhow::Result<()> {
    use pier_testenv::control_plane::ControlPlaneOptions;
    let logs = LogDir::for_current_test("audit")?;
    let plane = ControlPlane::start_with(
        &logs,
        ControlPlaneOptions {
            controller_manager: false,
            scheduler: false,
            install_crds: false,
        },
    )
    .await?;
    let admin: Api<ConfigMap> = Api::namespaced(plane.client(), "default");
    let operator: Api<ConfigMap> = Api::namespaced(
        plane
            .client_for("pier-operator", Some("system:masters"))
            .await?,
        "default",
    );
    let kubeconfig = std::fs::read_to_string(plane.kubeconfig_for("pier-operator", None)?)?;
    assert!(
        kubeconfig.contains("client-certificate-data"),
        "{kubeconfig}"
    );

    let t0 = plane.audit_mark()?;
    operator
        .create(&PostParams::default(), &cm("by-operator", &[("k", "1")]))
        .await?;
    operator
        .patch(
            "by-operator",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "2"}})),
        )
        .await?;
    operator.get("by-operator").await?;
    operator.list(&Default::default()).await?;
    admin
        .create(&PostParams::default(), &cm("by-admin", &[]))
        .await?;
    operator
        .delete("by-operator", &DeleteParams::default())
        .await?;
    let t1 = plane.audit_mark()?;

    let writes = plane.audit_writes("pier-operator", &t0)?;
    let summary: Vec<(String, String, String, u16)> = writes
        .iter()
        .map(|e| (e.verb.clone(), e.resource.clone(), e.name.clone(), e.code))
        .collect();
    let expect = |verb: &str, code: u16| {
        (
            verb.to_string(),
            "configmaps".to_string(),
            "by-operator".to_string(),
            code,
        )
    };
    assert_eq!(
        summary,
        vec![
            expect("create", 201),
            expect("patch", 200),
            expect("delete", 200)
        ],
        "the operator's writes, and no reads: {writes:#?}"
    );
    assert!(writes[0].groups.iter().any(|g| g == "system:masters"));
    assert_eq!(
        plane.audit_write_counts("pier-operator", &t0)?,
        [
            ("create configmaps".to_string(), 1),
            ("delete configmaps".to_string(), 1),
            ("patch configmaps".to_string(), 1)
        ]
        .into(),
    );
    let by_admin = plane.audit_writes("admin", &t0)?;
    assert_eq!(
        by_admin.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["by-admin"]
    );

    // Between t1 and t2 only the admin wrote: nothing by the operator.
    admin
        .create(&PostParams::default(), &cm("later", &[]))
        .await?;
    let t2 = plane.audit_mark()?;
    operator
        .create(&PostParams::default(), &cm("after-t2", &[]))
        .await?;
    let between = plane.audit_events(&t1, Some(&t2))?;
    assert!(
        !between.iter().any(|e| e.user == "pier-operator"),
        "{between:#?}"
    );
    assert_eq!(between.iter().filter(|e| e.user == "admin").count(), 1);
    assert_eq!(plane.audit_writes("pier-operator", &t2)?.len(), 1);

    // A user without rights is refused; the refused write is logged as its own.
    let nobody: Api<ConfigMap> =
        Api::namespaced(plane.client_for("nobody", None).await?, "default");
    let t3 = plane.audit_mark()?;
    let err = nobody
        .create(&PostParams::default(), &cm("denied", &[]))
        .await
        .expect_err("nobody has no rights");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );
    let refused = plane.audit_writes("nobody", &t3)?;
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!((refused[0].verb.as_str(), refused[0].code), ("create", 403));
    Ok(())
}
