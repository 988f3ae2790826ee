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

pub use control_plane::{AuditEvent, AuditMark, ControlPlane};
pub use envoy::Envoy;
pub use kafka::{KafkaCluster, kcat};
pub use monitoring::Monitoring;
pub use paths::{LogDir, program};
pub use process::Process;

/// Polls `check` every `every` until it returns `Some`, or fails after `within` with `what`.
/// The deadline holds even when a check hangs (a call to a frozen process, say): each check
/// runs under a timeout of the time left, and one that overruns it fails the wait.
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
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(_) => anyhow::bail!(
                "timed out after {within:?} waiting for {what} (a check was still running)"
            ),
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            anyhow::bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(every.min(deadline - now)).await;
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {within:?} waiting for {what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::wait_for;

    #[tokio::test]
    async fn wait_for_enforces_its_deadline_on_a_hanging_check() {
        let started = Instant::now();
        let err = wait_for(
            "a check that never returns",
            Duration::from_millis(300),
            Duration::from_millis(50),
            std::future::pending::<Option<()>>,
        )
        .await
        .expect_err("must time out");
        assert!(started.elapsed() < Duration::from_secs(2), "{err}");
        assert!(err.to_string().contains("still running"), "{err}");
    }

    #[tokio::test]
    async fn wait_for_returns_the_first_value() {
        let mut n = 0;
        let v = wait_for(
            "n to reach 3",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                n += 1;
                let n = n;
                async move { (n >= 3).then_some(n) }
            },
        )
        .await
        .unwrap();
        assert_eq!(v, 3);
    }
}
