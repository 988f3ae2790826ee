//! `pier operator`: the KafkaCluster controller, the xDS server every managed cluster's Envoys
//! connect to, and the admin endpoint (metrics, health, xDS status), in one process.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::controller::leader::{self, LeaseConfig};
use crate::controller::{self, Context};
use crate::reconcile::Settings;
use crate::xds::SnapshotCache;
use crate::xds::metrics::XdsMetrics;

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// Kubeconfig file; in-cluster config (or the default kubeconfig) when absent.
    pub kubeconfig: Option<PathBuf>,
    /// Watch only these namespaces; all namespaces when empty.
    pub namespaces: Vec<String>,
    pub xds_listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub settings: Settings,
    /// Compete for a Lease before reconciling; `None` runs as the only replica.
    pub leader_election: Option<LeaseConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("cannot load the Kubernetes config: {0}")]
    Config(String),
    #[error("lost leadership; exiting so that a restart campaigns again")]
    LostLeadership,
    #[error(transparent)]
    Listen(#[from] crate::listen::ListenError),
}

/// Connects to Kubernetes and runs until Ctrl-C or SIGTERM.
pub async fn run(options: OperatorOptions) -> Result<(), OperatorError> {
    let client = match &options.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|e| OperatorError::Config(e.to_string()))?;
            let config =
                kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| OperatorError::Config(e.to_string()))?;
            kube::Client::try_from(config).map_err(|e| OperatorError::Config(e.to_string()))?
        }
        None => kube::Client::try_default()
            .await
            .map_err(|e| OperatorError::Config(e.to_string()))?,
    };
    let metrics = Arc::new(XdsMetrics::default());
    let cache = Arc::new(SnapshotCache::new(metrics.clone()));
    let xds_listener = crate::listen::bind(options.xds_listen, "xDS").await?;
    let admin_listener = crate::listen::bind(options.metrics_listen, "metrics").await?;
    let ready = Arc::new(AtomicBool::new(options.leader_election.is_none()));
    let ctx = Context::new(client.clone(), cache.clone(), options.settings);
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    ctx.register(&mut registry);
    tokio::spawn(crate::admin::serve(
        admin_listener,
        cache.clone(),
        registry,
        ready.clone(),
    ));
    let xds_cache = cache.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::xds::serve(xds_listener, xds_cache, std::future::pending()).await {
            tracing::error!(error = %e, "xDS server failed");
        }
    });
    tracing::info!(
        namespaces = ?options.namespaces,
        xds = %options.xds_listen,
        metrics = %options.metrics_listen,
        "operator started"
    );
    if let Some(lease) = &options.leader_election {
        leader::acquire(&client, lease).await;
        ready.store(true, Ordering::Relaxed);
    }
    // One controller per watched namespace (or one for all).
    let scopes: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    let controller = futures::future::join_all(
        scopes
            .into_iter()
            .map(|ns| controller::run(ctx.clone(), ns, terminated())),
    );
    match &options.leader_election {
        Some(lease) => tokio::select! {
            _ = controller => {}
            _ = leader::keep(&client, lease) => return Err(OperatorError::LostLeadership),
        },
        None => {
            controller.await;
        }
    }
    tracing::info!("operator stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn terminated() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
