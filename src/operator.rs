//! `pier operator`: the KafkaCluster controller, the xDS server every managed cluster's Envoys
//! connect to, and the admin endpoint (metrics, health, xDS status), in one process; and the
//! order in which they start and stop around leader election.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::admin::Health;
use crate::controller::leader::{Elector, LeaderError, LeaseConfig};
use crate::controller::leader_pod::LeaderPod;
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
    /// Serve xDS over TLS with client certificates; plaintext when absent.
    pub xds_tls: Option<crate::listen::XdsTlsFiles>,
    /// The CA of the xDS serving certificate, handed to the Envoys.
    pub xds_server_ca: Option<std::path::PathBuf>,
    /// The admin endpoint's bearer token file; no token asked for when absent.
    pub admin_token_file: Option<PathBuf>,
    /// The Alertmanager webhook; off when absent.
    pub alerts: Option<crate::alerts::AlertsServerConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("cannot load the Kubernetes config: {0}")]
    Config(String),
    #[error("lost leadership ({0}); exiting so that a restart campaigns again")]
    LostLeadership(#[source] LeaderError),
    #[error(transparent)]
    Leader(LeaderError),
    #[error(transparent)]
    Listen(#[from] crate::listen::ListenError),
    #[error("xDS TLS: {0}")]
    XdsTls(#[from] crate::xds::tls::TlsError),
    #[error(transparent)]
    AdminToken(#[from] crate::admin::TokenError),
    #[error(transparent)]
    Alerts(#[from] crate::alerts::server::ServeError),
}

/// How long a stopping leader tries to hand its Lease over before it gives up on it (the Lease
/// then expires by itself).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the controller stopped.
enum Ended {
    /// SIGTERM or Ctrl-C.
    Signal,
    /// Another replica took the Lease, or it was not renewed in time.
    Lost(LeaderError),
    /// Every controller stream ended by itself.
    Controller,
    /// It could not start leading (the xDS port was taken meanwhile).
    Failed(OperatorError),
}

/// Connects to Kubernetes and runs until Ctrl-C or SIGTERM, or until it loses leadership (an
/// error: the process exits non-zero and its restart campaigns again). A replica stands by
/// (ready, xDS port closed) until it leads; then it opens the xDS port, marks its Pod for the
/// xDS Service and reconciles. Stopping goes in the order that keeps one actor at a time: stop
/// reconciling (and report unready), unmark the Pod, hand the Lease over, then drain the xDS
/// streams so Envoys reconnect to the new leader.
pub async fn run(options: OperatorOptions) -> Result<(), OperatorError> {
    if let Some(lease) = &options.leader_election {
        lease.validate().map_err(OperatorError::Leader)?;
    }
    // Files given on the command line are checked before anything else.
    let xds_tls = crate::listen::xds_tls(options.xds_tls.as_ref(), options.xds_listen)?;
    let admin_token = options
        .admin_token_file
        .as_deref()
        .map(crate::admin::AdminToken::from_file)
        .transpose()?;
    if let Some(alerts) = &options.alerts {
        alerts.check()?;
    }
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
    let mut elector = match &options.leader_election {
        Some(lease) => {
            Some(Elector::new(client.clone(), lease.clone()).map_err(OperatorError::Leader)?)
        }
        None => None,
    };
    let metrics = Arc::new(XdsMetrics::default());
    let cache = Arc::new(SnapshotCache::new(metrics.clone()));
    // The xDS port is open on the leader only: an Envoy that reaches a stand-by is refused at
    // once and dials again, instead of waiting on a server that has no config for it. Binding
    // it here once says early that the port is free.
    drop(crate::listen::bind(options.xds_listen, "xDS").await?);
    let admin_listener = crate::listen::bind(options.metrics_listen, "metrics").await?;
    let health = Arc::new(Health::default());
    let ctx = Context::new(client.clone(), cache.clone(), options.settings);
    if let Some(tls) = &xds_tls {
        // The controller registers each KafkaCluster's CA for its node group here.
        let _ = ctx.xds_trust.set(tls.trust().clone());
    }
    if let Some(ca) = &options.xds_server_ca {
        let _ = ctx.xds_server_ca.set(ca.clone());
    }
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    ctx.register(&mut registry);
    if let Some(tls) = &xds_tls {
        tls.register(&mut registry);
    }
    // Every replica serves the alerts webhook: a stand-by records alerts in status as well as
    // the leader does; only the leader acts on them.
    let (stop_alerts, alerts_stopped) = tokio::sync::oneshot::channel::<()>();
    let alerts = match &options.alerts {
        Some(config) => {
            let sink = Arc::new(controller::alerts::AlertRecorder::new(ctx.clone()));
            let server =
                crate::alerts::server::AlertsServer::bind(config, sink, &mut registry).await?;
            Some(tokio::spawn(server.run(async {
                let _ = alerts_stopped.await;
            })))
        }
        None => None,
    };
    // The admin endpoint serves until the process exits, so /readyz says "stopping" while the
    // xDS streams drain.
    tokio::spawn(crate::admin::serve(
        admin_listener,
        cache.clone(),
        registry,
        health.clone(),
        admin_token,
    ));
    let leader_pod = LeaderPod::from_env(&client);
    let (stop_xds, xds_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut xds: Option<tokio::task::JoinHandle<()>> = None;
    tracing::info!(
        namespaces = ?options.namespaces,
        xds = %options.xds_listen,
        metrics = %options.metrics_listen,
        identity = options.leader_election.as_ref().map(|l| l.identity.as_str()),
        "operator started"
    );
    // One controller per watched namespace (or one for all); nothing runs until polled.
    let scopes: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    let controller = futures::future::join_all(
        scopes
            .into_iter()
            .map(|ns| controller::run(ctx.clone(), ns, std::future::pending())),
    );
    // A stand-by is ready: it serves its role, which is to be there when the leader goes.
    health.ready.store(true, Ordering::Relaxed);
    let leading = async {
        if let Some(elector) = elector.as_mut() {
            elector.acquire().await;
        }
        let listener = match crate::listen::bind(options.xds_listen, "xDS").await {
            Ok(l) => l,
            Err(e) => return Ended::Failed(e.into()),
        };
        let (cache, tls) = (cache.clone(), xds_tls.clone());
        xds = Some(tokio::spawn(async move {
            let stop = async {
                let _ = xds_stopped.await;
            };
            if let Err(e) = crate::shutdown::serve_xds(listener, cache, tls, stop).await {
                tracing::error!(error = %e, "xDS server failed");
            }
        }));
        let _ = ctx.xds_serving_since.set(std::time::Instant::now());
        health.leading.store(true, Ordering::Relaxed);
        ctx.metrics.leader.set(1);
        let marking = async {
            if let Some(pod) = &leader_pod {
                pod.keep_trying_to_mark().await;
            }
        };
        let work = async {
            futures::join!(controller, marking);
        };
        match elector.as_mut() {
            Some(elector) => match elector.lead(work).await {
                Ok(()) => Ended::Controller,
                Err(lost) => Ended::Lost(lost),
            },
            None => {
                work.await;
                Ended::Controller
            }
        }
    };
    // Dropping `leading` drops the controller: no reconcile runs past this point.
    let ended = tokio::select! {
        biased;
        _ = crate::shutdown::requested() => Ended::Signal,
        ended = leading => ended,
    };
    health.ready.store(false, Ordering::Relaxed);
    health.leading.store(false, Ordering::Relaxed);
    ctx.metrics.leader.set(0);
    if let Ended::Lost(e) = &ended {
        tracing::error!(error = %e, "stopped acting: lost leadership");
    }
    // Out of the xDS Service first, then the Lease goes to a stand-by.
    if let (Some(pod), Some(_)) = (&leader_pod, &xds) {
        match tokio::time::timeout(RELEASE_TIMEOUT, pod.unmark()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot remove the leader label from this Pod; the next leader does")
            }
            Err(_) => tracing::warn!(
                "removing the leader label from this Pod timed out; the next leader does"
            ),
        }
    }
    if let Some(elector) = elector.as_mut() {
        match tokio::time::timeout(RELEASE_TIMEOUT, elector.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot release the leader Lease; it expires by itself")
            }
            Err(_) => {
                tracing::warn!(timeout = ?RELEASE_TIMEOUT, "releasing the leader Lease timed out; it expires by itself")
            }
        }
    }
    let _ = stop_alerts.send(());
    if let Some(alerts) = alerts {
        match tokio::time::timeout(RELEASE_TIMEOUT, alerts).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "alerts webhook failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "alerts webhook task failed"),
            Err(_) => tracing::warn!("alerts webhook requests still running at exit"),
        }
    }
    let _ = stop_xds.send(());
    if let Some(xds) = xds
        && let Err(e) = xds.await
    {
        tracing::error!(error = %e, "xDS server task failed");
    }
    tracing::info!("operator stopped");
    match ended {
        Ended::Lost(e) => Err(OperatorError::LostLeadership(e)),
        Ended::Failed(e) => Err(e),
        Ended::Signal | Ended::Controller => Ok(()),
    }
}
