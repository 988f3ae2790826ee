//! Dev-only test environment for Pier: starts the real components a user runs (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler, Kafka in KRaft mode, Envoy,
//! Prometheus, Alertmanager) as local processes, each on free loopback addresses and ports, so
//! tests can run side by side. Programs come from `dev/setup`'s cache (`$PIER_CACHE/bin`).
//!
//! Every process is owned by a handle: dropping the handle (also while a test panics) stops it,
//! and the kernel kills it if the test process itself dies (see [`process`]). All output lands
//! under `target/test-logs/<test-name>/`.
pub mod control_plane;
pub mod devlet;
pub mod envoy;
pub mod kafka;
pub mod monitoring;
pub mod net;
pub mod paths;
pub mod pki;
pub mod process;

pub use control_plane::ControlPlane;
pub use envoy::Envoy;
pub use kafka::KafkaCluster;
pub use monitoring::Monitoring;
pub use paths::{LogDir, program};
pub use process::Process;

/// Polls `check` every `every` until it returns `Some`, or fails after `within` with `what`.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    within: std::time::Duration,
    every: std::time::Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}
