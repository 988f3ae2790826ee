//! `pier-devlet`, the dev-only node agent that stands in for a kubelet (and a cloud) on machines
//! without one. This first part registers a Node and keeps it alive (Ready condition and Lease
//! heartbeat), and provisions PersistentVolumes as local directories for the StorageClass
//! `pier-dev-local` (kube-controller-manager's PV binder then binds them), and runs the Pods
//! bound to it as local processes (Kafka, Envoy and Pier images) with their ServiceAccount
//! tokens, plays kube-proxy for ClusterIP Services (a userspace proxy, see [`services`]), and
//! plays the cloud's LoadBalancer provider.
//!
//! With [`DevletOptions::simulate`] (`pier-devlet --simulate`) it starts nothing: Pods are
//! reported Running and Ready with an address of their own (see [`simulate`]), so a thousand
//! brokers fit on one machine.
mod container;
mod image;
mod loadbalancer;
mod node;
mod pod_volumes;
mod pods;
pub mod services;
pub mod simulate;
mod volumes;

use std::path::PathBuf;
use std::time::Duration;

pub use loadbalancer::{INGRESS_IP, provide_load_balancers};
pub use node::{heartbeat, register_node};
pub use pods::{rewrite_kafka_properties, run_pods};
pub use volumes::{STORAGE_CLASS, ensure_storage_class, provision_volumes};

/// What this node is.
#[derive(Debug, Clone)]
pub struct DevletOptions {
    pub node_name: String,
    /// `topology.kubernetes.io/zone`, so several devlets can stand for racks.
    pub zone: Option<String>,
    /// Where volumes and pod files live.
    pub root: PathBuf,
    pub cpu: String,
    pub memory: String,
    pub pods: String,
    /// How often the Lease and the Ready condition are renewed.
    pub heartbeat_every: Duration,
    /// The crash-loop back-off: the delay before the second restart of a crashing container
    /// (the first is at once), doubling up to the maximum. The kubelet's: 10 s and 5 min.
    pub crash_backoff: Duration,
    pub crash_backoff_max: Duration,
    /// The apiserver URL Pods are given (`KUBERNETES_SERVICE_HOST`/`_PORT`, Pier's kubeconfig);
    /// `None`: the address the apiserver publishes (`serverAddressByClientCIDRs` of `/api`).
    pub api_server: Option<String>,
    /// The OCI archive of Pier's image (`make image`); when it exists, Pods of the Pier image
    /// run the `pier` binary extracted from it, else `$PIER_BINARY`. Default:
    /// `$PIER_IMAGE_ARCHIVE`, else `<cargo target dir>/pier-image.tar`.
    pub pier_image: PathBuf,
    /// Start no process: report every Pod Running and Ready at once (see [`simulate`]).
    pub simulate: bool,
}

impl DevletOptions {
    pub fn new(node_name: &str, root: PathBuf) -> Self {
        Self {
            node_name: node_name.into(),
            zone: None,
            root,
            cpu: "8".into(),
            memory: "16Gi".into(),
            pods: "110".into(),
            heartbeat_every: Duration::from_secs(10),
            crash_backoff: Duration::from_secs(10),
            crash_backoff_max: Duration::from_secs(300),
            api_server: None,
            pier_image: std::env::var_os("PIER_IMAGE_ARCHIVE")
                .map(PathBuf::from)
                .unwrap_or_else(|| crate::paths::target_dir().join("pier-image.tar")),
            simulate: false,
        }
    }

    /// A node of simulated Pods ([`Self::simulate`]) with room for `pods` of them: capacity
    /// enough that the scheduler never runs out of CPU or memory for brokers that use none.
    pub fn simulated(node_name: &str, root: PathBuf, pods: usize) -> Self {
        Self {
            cpu: "100000".into(),
            memory: "1000Ti".into(),
            pods: pods.to_string(),
            simulate: true,
            ..Self::new(node_name, root)
        }
    }
}

/// Runs the devlet's parts until one fails.
pub async fn run(client: kube::Client, mut options: DevletOptions) -> anyhow::Result<()> {
    register_node(&client, &options).await?;
    ensure_storage_class(&client).await?;
    std::fs::create_dir_all(&options.root)?;
    if options.api_server.is_none() {
        match published_api_server(&client).await {
            Ok(url) => options.api_server = Some(url),
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "containers get no KUBERNETES_SERVICE_HOST"
                )
            }
        }
    }
    if options.simulate {
        tokio::try_join!(
            heartbeat(client.clone(), options.clone()),
            provision_volumes(client.clone(), options.clone()),
            simulate::run_pods(client.clone(), options.clone()),
            provide_load_balancers(client.clone()),
        )?;
        return Ok(());
    }
    let (addresses, proxy) = services::proxy(client.clone());
    tokio::try_join!(
        heartbeat(client.clone(), options.clone()),
        provision_volumes(client.clone(), options.clone()),
        run_pods(client.clone(), options.clone(), addresses),
        provide_load_balancers(client.clone()),
        proxy,
    )?;
    Ok(())
}

/// The apiserver's address as it publishes it for clients (`GET /api`), as a URL.
async fn published_api_server(client: &kube::Client) -> anyhow::Result<String> {
    let versions = client.list_core_api_versions().await?;
    let address = versions
        .server_address_by_client_cidrs
        .first()
        .map(|a| a.server_address.clone())
        .ok_or_else(|| anyhow::anyhow!("the apiserver publishes no address (GET /api)"))?;
    Ok(format!("https://{address}"))
}
