//! `pier-devlet`, the dev-only node agent that stands in for a kubelet (and a cloud) on machines
//! without one. This first part registers a Node and keeps it alive (Ready condition and Lease
//! heartbeat), and provisions PersistentVolumes as local directories for the StorageClass
//! `pier-dev-local` (kube-controller-manager's PV binder then binds them), and runs the Pods
//! bound to it as local processes (Kafka and Envoy images); it also plays the cloud's
//! LoadBalancer provider.
mod container;
mod loadbalancer;
mod node;
mod pods;
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
        }
    }
}

/// Runs the devlet's parts until one fails.
pub async fn run(client: kube::Client, options: DevletOptions) -> anyhow::Result<()> {
    register_node(&client, &options).await?;
    ensure_storage_class(&client).await?;
    std::fs::create_dir_all(&options.root)?;
    tokio::try_join!(
        heartbeat(client.clone(), options.clone()),
        provision_volumes(client.clone(), options.clone()),
        run_pods(client.clone(), options.clone()),
        provide_load_balancers(client.clone()),
    )?;
    Ok(())
}
