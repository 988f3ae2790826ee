//! The Alertmanager webhook of `pier operator --alerts-listen`, against a real API server:
//! a notification is recorded in the KafkaCluster's status before the webhook answers, once
//! however often it arrives (1,000 concurrent copies), refused with 401/422 when it must be,
//! and acted on exactly once by whichever operator leads, even when the one that received it
//! never acted (it stood by) and is gone. Counted in the API server's audit log.
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, PostParams};
use pier::api::{AlertActionState, KafkaCluster, SpecChange};
use pier_testenv::{LogDir, wait_for};
use serde_json::json;
use support::{OperatorArgs, OperatorProcess, start_plane};

mod support;

const NS: &str = "default";
const NAME: &str = "alerted";
const TOKEN: &str = "s3cret-alertmanager-token";
const LEASE: &str = "pier-operator";
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

fn operator(
    plane: &pier_testenv::ControlPlane,
    name: &str,
    token_file: &std::path::Path,
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
            xds_address: Some("pier-xds:18000"),
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

async fn get(client: &kube::Client) -> anyhow::Result<KafkaCluster> {
    Ok(Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .get(NAME)
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
    let (standby, webhook) = operator(&plane, "standby", &token_file)?;
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
    assert!(records(&get(&client).await?).is_empty(), "nothing recorded");

    // 1,000 copies of the same notification at once: all answered 200, one record.
    let mark = plane.audit_mark()?;
    let posts = (0..1000).map(|_| webhook.post(Some(TOKEN), &body));
    let codes = futures::future::join_all(posts).await;
    let ok = codes.iter().filter(|c| matches!(c, Ok(200))).count();
    assert_eq!(ok, 1000, "every copy is answered 200: {:?}", &codes[..5]);
    let kc = get(&client).await?;
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
    let (leader, webhook) = operator(&plane, "leader", &token_file)?;
    let kc = wait_for("the recorded upscale to be applied", WAIT, POLL, || async {
        let kc = get(&client).await.ok()?;
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
    let (leader, webhook) = operator(&plane, "leader-2", &token_file)?;
    wait_for("the new leader to lead", WAIT, POLL, || async {
        leader.leading().await.then_some(())
    })
    .await?;
    // Its first reconcile has run once its status write (observed generation) landed.
    wait_for("a reconcile of the new leader", WAIT, POLL, || async {
        let kc = get(&client).await.ok()?;
        let s = kc.status.as_ref()?;
        (s.observed_generation == kc.metadata.generation).then_some(())
    })
    .await?;
    let kc = get(&client).await?;
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
        let kc = get(&client).await.ok()?;
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
        let kc = get(&client).await.ok()?;
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
