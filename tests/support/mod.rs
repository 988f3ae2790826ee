//! Shared by the integration tests that run the operator (`controller.rs`, `e2e.rs`,
//! `rolling.rs`, `leader.rs`): the operator in the test process, a control plane without a
//! scheduler, the shipped examples, and small Pod and record helpers.
#![allow(dead_code)]
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use pier::controller::{self, Context};
use pier::reconcile::Settings;
use pier::xds::{ResourceType, SnapshotCache};

/// The operator (xDS server + controller) in this process; restartable.
pub struct Operator {
    client: Client,
    cache: Arc<SnapshotCache>,
    settings: Settings,
    namespace: String,
    /// The running controller's context (its counters and xDS cache).
    ctx: Arc<Context>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Operator {
    /// Starts the xDS server and the controller for `namespace`.
    pub async fn start(client: Client, namespace: &str) -> anyhow::Result<Self> {
        // A test that set up its own subscriber first keeps it.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("pier=info,pier_testenv=info")
            .with_test_writer()
            .try_init();
        let cache = Arc::new(SnapshotCache::default());
        let xds_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let settings = Settings {
            xds_address: xds_listener.local_addr()?.to_string(),
            ..Settings::default()
        };
        tokio::spawn(pier::xds::serve(
            xds_listener,
            cache.clone(),
            std::future::pending(),
        ));
        let ctx = Context::new(client.clone(), cache.clone(), settings.clone());
        let mut op = Operator {
            client,
            cache,
            settings,
            namespace: namespace.to_string(),
            ctx,
            task: None,
        };
        op.restart();
        Ok(op)
    }

    /// Stops the controller and starts a fresh one: nothing survives but the cluster's state.
    pub fn restart(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            self.ctx = Context::new(
                self.client.clone(),
                self.cache.clone(),
                self.settings.clone(),
            );
        }
        self.task = Some(tokio::spawn(controller::run(
            self.ctx.clone(),
            Some(self.namespace.clone()),
            std::future::pending(),
        )));
    }

    /// Write calls the running controller made to the API server.
    pub fn writes(&self) -> u64 {
        self.ctx.writes.get()
    }

    /// Reconciles the running controller ran.
    pub fn reconciles(&self) -> u64 {
        self.ctx.reconciles.get()
    }

    /// Waits until the controller ran two reconciles in a row that wrote nothing, and returns
    /// the write count then. Reconciles must keep coming (a roll, Pods not ready, Envoys that
    /// did not ACK); the deadline bounds the wait.
    pub async fn wait_steady(&self, within: std::time::Duration) -> anyhow::Result<u64> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (writes, reconciles) = (self.writes(), self.reconciles());
            pier_testenv::wait_for(
                "two more reconciles",
                deadline.saturating_duration_since(tokio::time::Instant::now()),
                std::time::Duration::from_millis(100),
                || async { (self.reconciles() >= reconciles + 2).then_some(()) },
            )
            .await?;
            if self.writes() == writes {
                return Ok(writes);
            }
        }
    }

    /// Listener names of a node group's xDS snapshot.
    pub fn listeners(&self, group: &str) -> Vec<String> {
        self.ctx
            .cache
            .snapshot(group)
            .map(|s| {
                s.get(ResourceType::Listener)
                    .resources
                    .keys()
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The Pod reports Ready.
pub fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Everything in `topic` right now, one record per line, read with kcat from the beginning
/// through `bootstrap`; `None` when kcat fails.
pub async fn read_topic(bootstrap: &str, topic: &str) -> Option<String> {
    let args = [
        "-b",
        bootstrap,
        "-C",
        "-t",
        topic,
        "-o",
        "beginning",
        "-e",
        "-q",
    ];
    // Bounded: a kcat waiting on a broker that is gone must not hang the test.
    let out = pier_testenv::kcat(&args, None, std::time::Duration::from_secs(60))
        .await
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).to_string())
}

/// A control plane without a scheduler (nothing runs Pods): for tests of the operator alone.
pub async fn start_plane(name: &str) -> anyhow::Result<pier_testenv::ControlPlane> {
    let logs = pier_testenv::LogDir::for_current_test(name)?;
    pier_testenv::ControlPlane::start_with(
        &logs,
        pier_testenv::control_plane::ControlPlaneOptions {
            scheduler: false,
            ..Default::default()
        },
    )
    .await
}

/// A KafkaCluster from `examples/`.
pub fn example(file: &str) -> anyhow::Result<pier::api::KafkaCluster> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(file);
    Ok(serde_yaml_ng::from_str(&std::fs::read_to_string(path)?)?)
}
