//! Chaos: the operator (the `pier operator` binary, with a user of its own) is SIGKILLed at
//! random points of rolling restarts of three real brokers run by the dev node agent, and
//! started again, 10 times. Every roll must still finish with each broker's Pod replaced
//! exactly once, and never two brokers down at once (Pods polled continuously).
//!
//! The random points come from a seed printed at the start; `PIER_CHAOS_SEED=<n>` replays it.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pier::api::KafkaCluster;
use pier_testenv::devlet::{self, DevletOptions};
use pier_testenv::{ControlPlane, LogDir, Process, wait_for};
use serde_json::json;

const NS: &str = "default";
const NAME: &str = "chaos";
const BROKERS: [&str; 3] = ["chaos-broker-0", "chaos-broker-1", "chaos-broker-2"];
/// Operator kills over the whole test.
const KILLS: usize = 10;
/// The longest an operator lives during a roll before it is killed.
const MAX_LIFE: Duration = Duration::from_secs(12);

fn cluster() -> anyhow::Result<KafkaCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "kafka.pier.dev/v1alpha1",
        "kind": "KafkaCluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "kafka": {
                "readOnlyConfig": {
                    "offsets.topic.replication.factor": "3",
                    "transaction.state.log.replication.factor": "3",
                    "transaction.state.log.min.isr": "2"
                },
                // Kafka 4.1 keeps a cluster-level min.insync.replicas while ELR is enabled.
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
            "rollingUpgrade": {"failureThreshold": 3, "brokerReadyTimeoutSeconds": 120}
        }
    }))?)
}

/// xorshift64*: enough randomness for kill points, and replayable from its seed.
struct Rng(u64);

impl Rng {
    fn from_env_or_clock() -> Self {
        let seed = std::env::var("PIER_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("chaos seed: PIER_CHAOS_SEED={seed}");
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, max).
    fn duration(&mut self, max: Duration) -> Duration {
        Duration::from_millis(self.next() % max.as_millis().max(1) as u64)
    }
}

/// The `pier operator` binary as a child process that can be SIGKILLed and started again.
struct OperatorProcess {
    kubeconfig: PathBuf,
    log: PathBuf,
    xds: u16,
    metrics: u16,
    process: Option<Process>,
    starts: usize,
}

impl OperatorProcess {
    fn new(kubeconfig: PathBuf, log: PathBuf) -> anyhow::Result<Self> {
        let ports = pier_testenv::net::free_ports(std::net::Ipv4Addr::LOCALHOST, 2)?;
        Ok(Self {
            kubeconfig,
            log,
            xds: ports[0],
            metrics: ports[1],
            process: None,
            starts: 0,
        })
    }

    fn start(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let xds = format!("127.0.0.1:{}", self.xds);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pier"));
        cmd.args(["operator", "--namespace", NS, "--no-leader-election"])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--xds-listen", &xds, "--xds-address", &xds])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", self.metrics)])
            .env("RUST_LOG", "pier=debug");
        self.process = Some(Process::spawn(
            &format!("pier-operator-{}", self.starts),
            cmd,
            &self.log,
            Duration::from_secs(5),
        )?);
        Ok(())
    }

    /// SIGKILL: no shutdown code runs, as when a node dies.
    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.signal(libc::SIGKILL);
            p.stop();
        }
    }

    /// Fails with its log if the operator exited by itself.
    fn check_running(&mut self) -> anyhow::Result<()> {
        match &mut self.process {
            Some(p) => p.check_running(),
            None => Ok(()),
        }
    }
}

/// What the Pod poller saw.
#[derive(Debug, Default)]
struct Seen {
    /// Every Pod UID seen per broker, in order.
    uids: BTreeMap<String, Vec<String>>,
    /// Moments when two or more brokers were down.
    violations: Vec<String>,
    polls: u64,
}

/// Broker Pods by name: (uid, up). Up = exists, not terminating, Ready.
async fn brokers(client: &Client) -> anyhow::Result<BTreeMap<String, (String, bool)>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let lp = ListParams::default().labels(&format!(
        "kafka.pier.dev/cluster={NAME},app.kubernetes.io/component=broker"
    ));
    Ok(pods
        .list(&lp)
        .await?
        .items
        .into_iter()
        .map(|p| {
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let up = ready && p.metadata.deletion_timestamp.is_none();
            (
                p.name_any(),
                (p.metadata.uid.clone().unwrap_or_default(), up),
            )
        })
        .collect())
}

/// Polls the broker Pods every 100 ms into `seen` until aborted.
async fn poll_pods(client: Client, seen: Arc<Mutex<Seen>>) {
    loop {
        if let Ok(now) = brokers(&client).await {
            let down: Vec<&str> = BROKERS
                .into_iter()
                .filter(|n| !now.get(*n).is_some_and(|(_, up)| *up))
                .collect();
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            s.polls += 1;
            if down.len() > 1 {
                s.violations.push(format!(
                    "{}: down {down:?} ({now:?})",
                    k8s_openapi::jiff::Timestamp::now()
                ));
            }
            for (name, (uid, _)) in now {
                let list = s.uids.entry(name).or_default();
                if list.last() != Some(&uid) {
                    list.push(uid);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(client: &Client) -> anyhow::Result<pier::api::KafkaClusterStatus> {
    Ok(Api::<KafkaCluster>::namespaced(client.clone(), NS)
        .get(NAME)
        .await?
        .status
        .unwrap_or_default())
}

/// Every broker runs its current configuration and no roll is in progress.
async fn wait_settled(client: &Client, within: Duration) -> anyhow::Result<()> {
    let settled = wait_for(
        "every broker InSync and no roll in progress",
        within,
        Duration::from_millis(500),
        || async {
            let s = status(client).await.ok()?;
            let all = s.brokers.len() == 3
                && s.brokers
                    .iter()
                    .all(|b| b.configuration_state.as_deref() == Some("InSync"));
            (all && s.rolling_upgrade.is_none()).then_some(())
        },
    )
    .await;
    if let Err(e) = settled {
        anyhow::bail!("{e}; status: {:?}", status(client).await);
    }
    Ok(())
}

fn uids(b: &BTreeMap<String, (String, bool)>) -> BTreeMap<String, String> {
    b.iter().map(|(n, (u, _))| (n.clone(), u.clone())).collect()
}

/// Every broker is up on a Pod other than the one it had in `before`.
fn rolled(now: &BTreeMap<String, (String, bool)>, before: &BTreeMap<String, String>) -> bool {
    BROKERS.iter().all(|name| {
        now.get(*name)
            .is_some_and(|(uid, up)| *up && before.get(*name) != Some(uid))
    })
}

#[tokio::test]
async fn operator_killed_at_random_points_of_rolls() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("chaos")?;
    let mut rng = Rng::from_env_or_clock();
    let plane = ControlPlane::start(&logs).await?;
    let client = plane.client();
    let devlet = tokio::spawn(devlet::run(
        client.clone(),
        DevletOptions::new("dev-a", logs.data("devlet")?),
    ));
    let mut operator = OperatorProcess::new(
        plane.kubeconfig_for("pier-operator", Some("system:masters"))?,
        logs.path().join("operator.log"),
    )?;
    operator.start()?;
    let clusters: Api<KafkaCluster> = Api::namespaced(client.clone(), NS);
    clusters.create(&PostParams::default(), &cluster()?).await?;
    wait_for(
        "3 brokers up",
        Duration::from_secs(240),
        Duration::from_secs(1),
        || async {
            let b = brokers(&client).await.ok()?;
            (b.len() == 3 && b.values().all(|(_, up)| *up)).then_some(())
        },
    )
    .await?;
    wait_settled(&client, Duration::from_secs(120)).await?;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let poller = tokio::spawn(poll_pods(client.clone(), seen.clone()));
    let mut kills = 0;
    let mut roll = 0;
    let mut failures = Vec::new();
    while kills < KILLS {
        roll += 1;
        let before = uids(&brokers(&client).await?);
        *seen.lock().unwrap_or_else(|e| e.into_inner()) = Seen {
            uids: before
                .iter()
                .map(|(n, u)| (n.clone(), vec![u.clone()]))
                .collect(),
            ..Seen::default()
        };
        let mark = plane.audit_mark()?;
        clusters
            .patch(
                NAME,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    "kafka.pier.dev/restart": format!("chaos-{roll}")
                }}})),
            )
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        let mut kills_this_roll = Vec::new();
        // Kill at random points until the roll is over (the first one may come before the
        // operator even saw the change); after the last kill, let it finish.
        'roll: loop {
            let life = rng.duration(MAX_LIFE);
            let kill_at = tokio::time::Instant::now() + life;
            loop {
                operator.check_running()?;
                let now = brokers(&client).await?;
                if rolled(&now, &before) {
                    break 'roll;
                }
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "roll {roll} did not finish within 300 s (kills {kills_this_roll:?}); \
                     Pods {now:?}, status {:?}",
                    status(&client).await.ok()
                );
                if kills < KILLS && tokio::time::Instant::now() >= kill_at {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            operator.kill();
            kills += 1;
            let pods = brokers(&client).await?;
            let down: Vec<&String> = pods
                .iter()
                .filter(|(_, (_, up))| !up)
                .map(|(n, _)| n)
                .collect();
            let replaced = BROKERS
                .iter()
                .filter(|n| pods.get(**n).map(|(u, _)| u) != before.get(**n))
                .count();
            eprintln!(
                "roll {roll}: kill {kills} after {life:?} ({replaced} Pods replaced, down {down:?})"
            );
            kills_this_roll.push(format!("after {life:?}: {pods:?}"));
            tokio::time::sleep(rng.duration(Duration::from_secs(2))).await;
            operator.start()?;
        }
        wait_settled(&client, Duration::from_secs(180)).await?;
        let after = uids(&brokers(&client).await?);
        let s = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
        let writes = plane.audit_writes("pier-operator", &mark)?;
        eprintln!(
            "roll {roll}: {} kills, {} Pod polls, {} operator writes; Pods seen {:?}",
            kills_this_roll.len(),
            s.polls,
            writes.len(),
            s.uids
        );
        // Each broker's Pod replaced exactly once: the one before and one new, still there.
        for name in BROKERS {
            let list = s.uids.get(name).cloned().unwrap_or_default();
            let replaced_once = list.len() == 2
                && list.first() == before.get(name)
                && list.last() == after.get(name);
            if !replaced_once {
                failures.push(format!(
                    "roll {roll}: {name} was not replaced exactly once: Pods {list:?} \
                     (before {:?}, after {:?}); kills {kills_this_roll:?}",
                    before.get(name),
                    after.get(name)
                ));
            }
        }
        if let (Some(first), Some(last)) = (s.violations.first(), s.violations.last()) {
            failures.push(format!(
                "roll {roll}: two brokers down at once in {} of {} polls, first {first}, last \
                 {last}; kills {kills_this_roll:?}",
                s.violations.len(),
                s.polls
            ));
        }
    }
    poller.abort();
    operator.kill();
    devlet.abort();
    assert!(
        failures.is_empty(),
        "{} failures over {roll} rolls and {kills} kills:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}
