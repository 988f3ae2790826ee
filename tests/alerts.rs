//! The Alertmanager webhook of `pier operator --alerts-listen`. Against a real API server: a
//! notification is recorded in the KafkaCluster's status before the webhook answers, once
//! however often it arrives (1,000 concurrent copies), refused with 401/422 when it must be,
//! and acted on exactly once by whichever operator leads, even when the one that received it
//! never acted (it stood by) and is gone; declared actions are checked by a dry run and act
//! with the alert's labels. Counted in the API server's audit log. With real brokers, Envoy,
//! Prometheus and Alertmanager: a rule on the brokers' own metric adds a broker (once, while the
//! alert keeps being re-sent), a disk alert adds a volume to one broker whose restart waits while
//! a roll-blocking alert fires, a downscale alert drains and removes the least-loaded broker, and
//! an acks=all producer through Envoy loses nothing.
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use pier::api::{AlertActionState, BrokerPhase, KafkaCluster, SpecChange};
use pier_testenv::devlet::{self, DevletOptions};
use pier_testenv::monitoring::{Monitoring, MonitoringOptions};
use pier_testenv::{LogDir, wait_for};
use serde_json::json;
use support::{OperatorArgs, OperatorProcess, VerifiableProducer, start_plane};

mod support;

const NS: &str = "default";
const NAME: &str = "alerted";
const TOKEN: &str = "s3cret-alertmanager-token";
const LEASE: &str = "pier-operator";
/// Where the Envoys of a test without Envoys would dial.
const NO_ENVOY: Option<&str> = Some("pier-xds:18000");
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

fn cluster() -> anyhow::Result<KafkaCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaCluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "brokerConfigGroups": {"default": {
                "storage": [{"mountPath": "/var/lib/kafka/data0", "size": "1Gi"}]
            }},
            "brokers": [
                {"id": 0, "configGroup": "default"},
                {"id": 1, "configGroup": "default"},
                {"id": 2, "configGroup": "default"}
            ],
            "alerts": {"mode": "enforce", "maxBrokers": 5, "actions": [
                {"name": "longerRetention",
                 "mergePatch": {"kafka": {"clusterWideConfig": {"log.retention.ms": "{{ $labels.retention_ms }}"}}}},
                {"name": "broken", "mergePatch": {"brokers": "{{ $labels.x }}"}}
            ]}
        }
    }))?)
}

/// A webhook notification (version 4) with one firing alert.
fn notification(labels: serde_json::Value) -> serde_json::Value {
    json!({
        "receiver": "pier", "status": "firing", "version": "4",
        "groupKey": "{}:{alertname=\"KafkaLoad\"}", "truncatedAlerts": 0,
        "groupLabels": {"alertname": "KafkaLoad"}, "commonLabels": labels.clone(),
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": "firing", "labels": labels, "annotations": {},
            "startsAt": "2026-12-03T10:00:00.000Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": "5e1f2a3b4c5d6e7f"
        }]
    })
}

fn upscale_labels() -> serde_json::Value {
    json!({"alertname": "KafkaLoad", "namespace": NS, "kafkacluster": NAME, "pier_action": "upscale"})
}

/// Holds the operator Lease as someone else, renewed every 500 ms, until dropped.
struct ForeignLeader(tokio::task::JoinHandle<()>);

impl ForeignLeader {
    async fn hold(client: kube::Client) -> anyhow::Result<Self> {
        let leases: Api<Lease> = Api::namespaced(client, NS);
        let now = || MicroTime(k8s_openapi::jiff::Timestamp::now());
        leases
            .create(
                &PostParams::default(),
                &Lease {
                    metadata: kube::api::ObjectMeta {
                        name: Some(LEASE.into()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some("someone-else".into()),
                        lease_duration_seconds: Some(60),
                        acquire_time: Some(now()),
                        renew_time: Some(now()),
                        ..Default::default()
                    }),
                },
            )
            .await?;
        Ok(ForeignLeader(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(mut l) = leases.get(LEASE).await {
                    if let Some(spec) = l.spec.as_mut() {
                        spec.renew_time = Some(now());
                    }
                    let _ = leases.replace(LEASE, &PostParams::default(), &l).await;
                }
            }
        })))
    }
}

impl Drop for ForeignLeader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Webhook {
    url: String,
    http: reqwest::Client,
}

impl Webhook {
    async fn post(&self, token: Option<&str>, body: &serde_json::Value) -> anyhow::Result<u16> {
        let mut req = self.http.post(&self.url).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Ok(req.send().await?.status().as_u16())
    }
}

/// `pier operator` with the webhook; `xds_address` as OperatorArgs says (None: Envoys reach
/// its xDS port directly).
fn operator(
    plane: &pier_testenv::ControlPlane,
    name: &str,
    token_file: &std::path::Path,
    xds_address: Option<&str>,
) -> anyhow::Result<(OperatorProcess, Webhook)> {
    let port = pier_testenv::net::free_ports(std::net::Ipv4Addr::LOCALHOST, 1)?[0];
    let op = OperatorProcess::start_with_args(
        plane,
        OperatorArgs {
            name,
            pod_name: Some(name),
            pid_namespace: false,
            kubeconfig: plane.kubeconfig(),
            namespace: NS,
            pod_namespace: None,
            xds_listen: None,
            xds_address,
        },
        &[
            format!("--alerts-listen=127.0.0.1:{port}"),
            format!("--alerts-token-file={}", token_file.display()),
        ],
    )?;
    let webhook = Webhook {
        url: format!("http://127.0.0.1:{port}/alerts"),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()?,
    };
    Ok((op, webhook))
}

async fn get(client: &kube::Client, name: &str) -> anyhow::Result<KafkaCluster> {
    Ok(Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .get(name)
        .await?)
}

fn records(kc: &KafkaCluster) -> Vec<pier::api::AlertActionRecord> {
    kc.status
        .as_ref()
        .and_then(|s| s.alerts.as_ref())
        .map(|a| a.actions.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_alert_is_recorded_once_and_acted_on_once_by_the_leader() -> anyhow::Result<()> {
    let plane = start_plane("alerts-record").await?;
    let client = plane.client();
    // A directory of its own: for_current_test would empty the control plane's (its kubeconfig).
    let logs = LogDir::named("alerts-record-files")?;
    let token_file = logs.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n"))?;
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &cluster()?)
        .await?;

    // This operator stands by (someone else holds the Lease): it receives, never acts.
    let foreign = ForeignLeader::hold(client.clone()).await?;
    let (standby, webhook) = operator(&plane, "standby", &token_file, NO_ENVOY)?;
    wait_for("the stand-by to be ready", WAIT, POLL, || async {
        standby.ready().await.then_some(())
    })
    .await?;
    assert!(!standby.leading().await);

    // Credentials first: nothing is recorded without the token.
    let body = notification(upscale_labels());
    wait_for("the webhook to listen", WAIT, POLL, || async {
        webhook.post(None, &body).await.ok()
    })
    .await?;
    assert_eq!(webhook.post(None, &body).await?, 401);
    assert_eq!(webhook.post(Some("wrong"), &body).await?, 401);
    let mut unknown_cluster = upscale_labels();
    unknown_cluster["kafkacluster"] = json!("nope");
    assert_eq!(
        webhook
            .post(Some(TOKEN), &notification(unknown_cluster))
            .await?,
        422
    );
    let mut unknown_action = upscale_labels();
    unknown_action["pier_action"] = json!("teleport");
    assert_eq!(
        webhook
            .post(Some(TOKEN), &notification(unknown_action))
            .await?,
        422
    );
    assert!(
        records(&get(&client, NAME).await?).is_empty(),
        "nothing recorded"
    );

    // 1,000 copies of the same notification at once: all answered 200, one record.
    let mark = plane.audit_mark()?;
    let posts = (0..1000).map(|_| webhook.post(Some(TOKEN), &body));
    let codes = futures::future::join_all(posts).await;
    let ok = codes.iter().filter(|c| matches!(c, Ok(200))).count();
    assert_eq!(ok, 1000, "every copy is answered 200: {:?}", &codes[..5]);
    let kc = get(&client, NAME).await?;
    let log = records(&kc);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].state, AlertActionState::Pending);
    assert_eq!(log[0].action, "upscale");
    assert_eq!(
        log[0].change,
        Some(SpecChange::AddBrokers {
            ids: vec![3],
            config_group: Some("default".into())
        })
    );
    assert_eq!(kc.spec.brokers.len(), 3, "a stand-by does not act");
    let status_writes: Vec<_> = plane
        .audit_events(&mark, None)?
        .into_iter()
        .filter(|e| e.is_write() && e.resource == "kafkaclusters")
        .collect();
    assert_eq!(
        status_writes.len(),
        1,
        "one status write for 1,000 copies: {status_writes:?}"
    );

    // The receiver goes before acting; the next leader acts, once.
    drop(standby);
    drop(foreign);
    Api::<Lease>::namespaced(client.clone(), NS)
        .delete(LEASE, &DeleteParams::default())
        .await?;
    let mark = plane.audit_mark()?;
    let (leader, webhook) = operator(&plane, "leader", &token_file, NO_ENVOY)?;
    let kc = wait_for("the recorded upscale to be applied", WAIT, POLL, || async {
        let kc = get(&client, NAME).await.ok()?;
        (records(&kc).first()?.state == AlertActionState::Applied).then_some(kc)
    })
    .await?;
    let added = kc
        .spec
        .brokers
        .iter()
        .find(|b| b.id == 3)
        .expect("broker 3");
    assert_eq!(added.roles, vec![pier::api::Role::Broker]);
    assert_eq!(added.config_group.as_deref(), Some("default"));
    assert_eq!(kc.spec.brokers.len(), 4);
    let managers: Vec<String> = kc
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.iter().any(|m| m == "pier-alerts"), "{managers:?}");
    // The same alert again, and the leader restarted: nothing more happens.
    assert_eq!(webhook.post(Some(TOKEN), &body).await?, 200);
    drop(leader);
    let (leader, webhook) = operator(&plane, "leader-2", &token_file, NO_ENVOY)?;
    wait_for("the new leader to lead", WAIT, POLL, || async {
        leader.leading().await.then_some(())
    })
    .await?;
    // Its first reconcile has run once its status write (observed generation) landed.
    wait_for("a reconcile of the new leader", WAIT, POLL, || async {
        let kc = get(&client, NAME).await.ok()?;
        let s = kc.status.as_ref()?;
        (s.observed_generation == kc.metadata.generation).then_some(())
    })
    .await?;
    let kc = get(&client, NAME).await?;
    assert_eq!(kc.spec.brokers.len(), 4, "applied exactly once");
    assert_eq!(records(&kc).len(), 1);
    let spec_writes: Vec<_> = plane
        .audit_events(&mark, None)?
        .into_iter()
        .filter(|e| {
            e.is_write()
                && e.resource == "kafkaclusters"
                && e.subresource.is_empty()
                && e.request_uri.contains("fieldManager=pier-alerts")
                && !e.request_uri.contains("dryRun")
        })
        .collect();
    assert_eq!(spec_writes.len(), 1, "one spec change: {spec_writes:?}");

    // Declared actions: checked by a dry run when declared; the valid one acts with the
    // alert's label filled in, the broken one is refused.
    let problem = wait_for("AlertActionsValid False", WAIT, POLL, || async {
        let kc = get(&client, NAME).await.ok()?;
        kc.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "AlertActionsValid" && c.status == "False")
            .map(|c| c.message)
    })
    .await?;
    assert!(problem.contains("action broken"), "{problem}");
    assert!(!problem.contains("longerRetention"), "{problem}");
    let declared = |action: &str, fingerprint: &str| {
        let mut n = notification(json!({
            "alertname": "KafkaRetention", "namespace": NS, "kafkacluster": NAME,
            "pier_action": action, "retention_ms": "86400000", "x": "1"
        }));
        n["alerts"][0]["fingerprint"] = json!(fingerprint);
        n
    };
    assert_eq!(
        webhook
            .post(Some(TOKEN), &declared("longerRetention", "aa01"))
            .await?,
        200
    );
    assert_eq!(
        webhook
            .post(Some(TOKEN), &declared("broken", "aa02"))
            .await?,
        200
    );
    let kc = wait_for("the declared action applied", WAIT, POLL, || async {
        let kc = get(&client, NAME).await.ok()?;
        let done = records(&kc)
            .iter()
            .any(|r| r.action == "longerRetention" && r.state == AlertActionState::Applied);
        done.then_some(kc)
    })
    .await?;
    assert_eq!(
        kc.spec
            .kafka
            .cluster_wide_config
            .get("log.retention.ms")
            .map(String::as_str),
        Some("86400000")
    );
    let broken = records(&kc)
        .into_iter()
        .find(|r| r.action == "broken")
        .expect("the broken action recorded");
    assert_eq!(broken.state, AlertActionState::Refused, "{broken:?}");
    drop(leader);
    Ok(())
}

/// Prometheus rule on a real broker metric with a low threshold: one alert per cluster, firing
/// the whole test (the 18 replicas of `events` leave every broker at least 4 of them, also once
/// the added broker has taken its share; over a minute, so a scrape missed on this loaded
/// machine does not end the alert: one that ended and fired again would be a new alert).
const UPSCALE_RULE: &str = r#"groups:
  - name: pier-alerts-e2e
    interval: 1s
    rules:
      - alert: KafkaPartitionsPerBrokerHigh
        expr: max by (namespace, kafkacluster) (max_over_time(kafka_server_replicamanager_partitioncount[1m])) > 3
        labels: {pier_action: upscale, count: "1", severity: warning}
"#;

const E2E_NAME: &str = "alerting";
const E2E_BOOTSTRAP: &str = "127.0.0.1:29592";
const E2E_EVENTS: &str = "events";

fn e2e_cluster() -> anyhow::Result<KafkaCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaCluster",
        "metadata": {"name": E2E_NAME, "namespace": NS},
        "spec": {
            "kafka": {
                "readOnlyConfig": {
                    "default.replication.factor": "3",
                    "offsets.topic.replication.factor": "3",
                    "transaction.state.log.replication.factor": "3",
                    "transaction.state.log.min.isr": "2",
                    // The rule counts the partitions of the topic made below, never an
                    // auto-created one.
                    "auto.create.topics.enable": "false"
                },
                "clusterWideConfig": {"min.insync.replicas": "2"}
            },
            "brokerConfigGroups": {"default": {
                "heapOpts": "-Xms256m -Xmx256m",
                "storage": [{"mountPath": "/var/lib/kafka/data0", "size": "1Gi"}]
            }},
            "brokers": [
                {"id": 0, "configGroup": "default"},
                {"id": 1, "configGroup": "default"},
                {"id": 2, "configGroup": "default"}
            ],
            "listeners": {"external": [{
                "name": "external", "containerPort": 9094,
                "bootstrapPort": 29592, "brokerPortBase": 29600
            }]},
            "envoy": {"replicas": 1},
            "alerts": {"mode": "enforce", "maxBrokers": 4}
        }
    }))?)
}

/// Posts alerts to Alertmanager's API, as Prometheus would (`endsAt` in the past resolves).
async fn to_alertmanager(
    monitoring: &Monitoring,
    labels: serde_json::Value,
    firing: bool,
) -> anyhow::Result<()> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let ends = if firing {
        now + k8s_openapi::jiff::SignedDuration::from_secs(3600)
    } else {
        now - k8s_openapi::jiff::SignedDuration::from_secs(1)
    };
    let body = json!([{
        "labels": labels,
        "annotations": {},
        "startsAt": (now - k8s_openapi::jiff::SignedDuration::from_secs(5)).to_string(),
        "endsAt": ends.to_string(),
        "generatorURL": "http://test/alerts"
    }]);
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v2/alerts", monitoring.alertmanager_url()))
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "Alertmanager said {}",
        resp.status()
    );
    Ok(())
}

fn cluster_labels(alertname: &str) -> serde_json::Value {
    json!({"alertname": alertname, "namespace": NS, "kafkacluster": E2E_NAME})
}

/// The first record of `action` in the cluster's log.
fn record_of(kc: &KafkaCluster, action: &str) -> Option<pier::api::AlertActionRecord> {
    records(kc).into_iter().find(|r| r.action == action)
}

fn settled(kc: &KafkaCluster, ids: &[i32]) -> bool {
    let Some(s) = kc.status.as_ref() else {
        return false;
    };
    let running: Vec<i32> = s
        .brokers
        .iter()
        .filter(|b| b.phase == BrokerPhase::Running)
        .map(|b| b.id)
        .collect();
    let ready = s
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ready
        && running == ids
        && s.replica_moves.is_none()
        && s.rolling_upgrade.is_none()
        && s.rebalanced_brokers.as_deref() == Some(ids)
}

/// What Prometheus and Alertmanager saw, for a failure message: the rule's input series, the
/// scrape targets' health and last errors, the rule's state and Alertmanager's alerts.
async fn monitoring_state(monitoring: &Monitoring) -> String {
    let http = reqwest::Client::new();
    let prometheus = monitoring.prometheus_url();
    let alertmanager = monitoring.alertmanager_url();
    let urls = [
        format!("{prometheus}/api/v1/query?query=kafka_server_replicamanager_partitioncount"),
        format!("{prometheus}/api/v1/query?query=up"),
        // Each target's health and last error (a timeout, a refused connection).
        format!("{prometheus}/api/v1/targets?state=active"),
        format!("{prometheus}/api/v1/rules"),
        format!("{alertmanager}/api/v2/alerts"),
    ];
    let mut state = String::from("monitoring state:");
    for url in urls {
        let body = match http.get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_else(|e| e.to_string()),
            Err(e) => e.to_string(),
        };
        state.push_str(&format!("\n{url}: {body}"));
    }
    state
}

async fn claims_per_broker(client: &kube::Client) -> anyhow::Result<BTreeMap<String, usize>> {
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(&format!("kafka.pier.dev/cluster={E2E_NAME}")))
        .await?;
    let mut counts = BTreeMap::new();
    for pvc in pvcs {
        if let Some(id) = pvc.labels().get("kafka.pier.dev/broker-id") {
            *counts.entry(id.clone()).or_default() += 1;
        }
    }
    Ok(counts)
}

#[tokio::test]
async fn alerts_scale_add_a_disk_and_pause_a_roll_of_a_real_cluster() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("alerts-e2e")?;
    let plane = pier_testenv::ControlPlane::start(&logs).await?;
    let client = plane.client();
    let token_file = logs.path().join("token");
    std::fs::write(&token_file, TOKEN)?;
    let (_operator, webhook) = operator(&plane, "op", &token_file, None)?;
    let _devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::new("node-1", logs.data("devlet")?),
    ));
    Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &e2e_cluster()?)
        .await?;
    let long = Duration::from_secs(300);
    wait_for(
        "the cluster settled on 0-2",
        long,
        Duration::from_secs(1),
        || async { settled(&get(&client, E2E_NAME).await.ok()?, &[0, 1, 2]).then_some(()) },
    )
    .await?;
    support::create_topic(
        E2E_BOOTSTRAP,
        &[
            "--topic",
            E2E_EVENTS,
            "--partitions",
            "6",
            "--replication-factor",
            "3",
            // A retried CreateTopics (its first answer lost while Envoy warms up) finds it there.
            "--if-not-exists",
        ],
    )
    .await?;
    let producer = VerifiableProducer::start(&logs, E2E_BOOTSTRAP, E2E_EVENTS)?;
    producer.wait_acked(100).await?;

    // Real Prometheus scraping the real brokers (Kubernetes service discovery with the shipped
    // scrape config) and a real Alertmanager posting to Pier with the token.
    let sd_file = logs.sub("monitoring")?.join("pods-sd.json");
    let discovery = tokio::spawn(pier_testenv::monitoring::discover_pods(
        client.clone(),
        NS.to_string(),
        sd_file.clone(),
    ));
    let scrape_configs = pier_testenv::monitoring::file_discovered(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/monitoring/scrape-configs.yaml"
        ))?,
        &sd_file,
    )?;
    let monitoring = Monitoring::start(
        &logs,
        MonitoringOptions {
            rules_yaml: UPSCALE_RULE.into(),
            webhook_url: webhook.url.clone(),
            scrape_configs,
            webhook_credentials_file: Some(token_file.clone()),
            repeat_interval: Some("2s".into()),
            ..Default::default()
        },
    )
    .await?;

    // 1. The rule fires on the brokers' partition counts: one broker-only node is added, it
    // becomes Ready, serves through Envoy and is filled.
    let upscaled = wait_for(
        "the upscale applied",
        long,
        Duration::from_secs(1),
        || async {
            let kc = get(&client, E2E_NAME).await.ok()?;
            (record_of(&kc, "upscale")?.state == AlertActionState::Applied).then_some(kc)
        },
    )
    .await;
    let kc = match upscaled {
        Ok(kc) => kc,
        Err(e) => return Err(e.context(monitoring_state(&monitoring).await)),
    };
    let added = kc
        .spec
        .brokers
        .iter()
        .find(|b| b.id == 3)
        .expect("broker 3 added");
    assert_eq!(added.roles, vec![pier::api::Role::Broker]);
    wait_for(
        "broker 3 running and filled",
        long,
        Duration::from_secs(1),
        || async { settled(&get(&client, E2E_NAME).await.ok()?, &[0, 1, 2, 3]).then_some(()) },
    )
    .await?;
    let listed =
        pier_testenv::kcat(&["-b", E2E_BOOTSTRAP, "-L"], None, Duration::from_secs(30)).await?;
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("broker 3 at 127.0.0.1:29603"), "{text}");
    let direct = pier_testenv::kcat(
        &["-b", "127.0.0.1:29603", "-L"],
        None,
        Duration::from_secs(30),
    )
    .await?;
    assert!(
        direct.status.success(),
        "broker 3 answers through its Envoy port"
    );

    // 2. A critical alert fires; then a disk alert for broker 3: the volume is added to broker
    // 3 only, and its restart waits while the critical alert fires.
    let critical = {
        let mut l = cluster_labels("KafkaCritical");
        l["pier_blocks_roll"] = json!("true");
        l["severity"] = json!("critical");
        l
    };
    to_alertmanager(&monitoring, critical.clone(), true).await?;
    wait_for("the critical alert recorded", WAIT, POLL, || async {
        let kc = get(&client, E2E_NAME).await.ok()?;
        (!kc.status?.alerts?.firing.is_empty()).then_some(())
    })
    .await?;
    let before = support::broker_pods(&client, NS, E2E_NAME).await?;
    let mut disk = cluster_labels("KafkaDiskLow");
    disk["pier_action"] = json!("addDisk");
    disk["broker_id"] = json!("3");
    disk["size"] = json!("1Gi");
    to_alertmanager(&monitoring, disk, true).await?;
    let kc = wait_for("the disk added", WAIT, POLL, || async {
        let kc = get(&client, E2E_NAME).await.ok()?;
        (record_of(&kc, "addDisk")?.state == AlertActionState::Applied).then_some(kc)
    })
    .await?;
    let storage: Vec<&str> = kc
        .spec
        .brokers
        .iter()
        .find(|b| b.id == 3)
        .map(|b| b.storage.iter().map(|s| s.mount_path.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(storage, ["/kafka-data-1"]);
    let blocked = wait_for("the roll blocked by the alert", WAIT, POLL, || async {
        let kc = get(&client, E2E_NAME).await.ok()?;
        let message = kc.status?.rolling_upgrade?.message?;
        message.contains("alert(s) tagged").then_some(message)
    })
    .await?;
    assert_eq!(
        support::broker_pods(&client, NS, E2E_NAME).await?,
        before,
        "no broker restarted while the critical alert fires: {blocked}"
    );

    // 3. Resolved: the roll goes on, broker 3 only, with its new volume.
    to_alertmanager(&monitoring, critical, false).await?;
    wait_for(
        "broker 3 restarted with two volumes",
        long,
        Duration::from_secs(1),
        || async {
            let claims = claims_per_broker(&client).await.ok()?;
            let kc = get(&client, E2E_NAME).await.ok()?;
            (claims.get("3") == Some(&2) && settled(&kc, &[0, 1, 2, 3])).then_some(())
        },
    )
    .await?;
    let after = support::broker_pods(&client, NS, E2E_NAME).await?;
    for id in [0, 1, 2] {
        assert_eq!(
            after[&id].uid, before[&id].uid,
            "broker {id} was not restarted"
        );
    }
    assert_ne!(after[&3].uid, before[&3].uid, "broker 3 was restarted");
    let claims = claims_per_broker(&client).await?;
    assert_eq!(claims.get("0"), Some(&1), "{claims:?}");

    // 4. A downscale alert: the least-loaded broker-only node (3) is drained, then removed.
    to_alertmanager(
        &monitoring,
        {
            let mut l = cluster_labels("KafkaIdle");
            l["pier_action"] = json!("downscale");
            l
        },
        true,
    )
    .await?;
    let kc = wait_for("broker 3 removed", long, Duration::from_secs(1), || async {
        let kc = get(&client, E2E_NAME).await.ok()?;
        let record = record_of(&kc, "downscale")?;
        (record.state == AlertActionState::Applied
            && kc.spec.brokers.len() == 3
            && settled(&kc, &[0, 1, 2]))
        .then_some(kc)
    })
    .await?;
    assert_eq!(
        record_of(&kc, "downscale").and_then(|r| r.change.clone()),
        Some(SpecChange::RemoveBroker { id: Some(3) })
    );

    // The upscale alert fired the whole time (re-sent every 2 s): one action.
    let upscales: Vec<_> = kc
        .status
        .as_ref()
        .and_then(|s| s.alerts.as_ref())
        .map(|a| a.actions.iter().filter(|r| r.action == "upscale").collect())
        .unwrap_or_default();
    assert_eq!(upscales.len(), 1, "{upscales:?}");

    // Nothing acked was lost.
    let acked = producer.finish().await?;
    assert!(
        acked.len() > 100,
        "the producer kept producing: {}",
        acked.len()
    );
    // Read until every acked record is back: one read can fail (kcat bounded at 60 s, a
    // metadata refresh racing broker 3's removal), which is not a loss.
    let missing = |text: &str| -> Vec<String> {
        let back: std::collections::BTreeSet<&str> = text.lines().collect();
        acked
            .iter()
            .filter(|v| !back.contains(v.as_str()))
            .take(10)
            .cloned()
            .collect()
    };
    let read_back = wait_for(
        "every acked record read back",
        Duration::from_secs(180),
        Duration::from_secs(2),
        || async {
            let text = support::read_topic(E2E_BOOTSTRAP, E2E_EVENTS).await?;
            missing(&text).is_empty().then_some(())
        },
    )
    .await;
    if let Err(e) = read_back {
        let last = support::read_topic(E2E_BOOTSTRAP, E2E_EVENTS).await;
        panic!(
            "acked but not read back: {:?} ({e:#}; the last read {})",
            last.as_deref().map(missing),
            if last.is_some() { "ended" } else { "failed" }
        );
    }
    drop(webhook);
    discovery.abort();
    Ok(())
}
