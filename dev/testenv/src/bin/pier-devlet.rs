//! `pier-devlet`: the dev-only node agent (see `pier_testenv::devlet`). Registers a Node, keeps
//! it alive, provisions `pier-dev-local` volumes and runs (or, with `--simulate`, only reports)
//! its Pods until Ctrl-C.
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use pier_testenv::devlet::{DevletOptions, run};

#[derive(Debug, Parser)]
#[command(
    name = "pier-devlet",
    version,
    about = "Dev-only node agent for Pier's local clusters"
)]
struct Cli {
    /// Kubeconfig of the cluster to join.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Name of the Node to register.
    #[arg(long, default_value = "pier-dev")]
    node_name: String,
    /// topology.kubernetes.io/zone label of the Node.
    #[arg(long)]
    zone: Option<String>,
    /// Where volumes live (default: $PIER_CACHE/devlet/<node-name>).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Start no processes: report every Pod Running and Ready with an address of its own
    /// (nothing listens there), for many brokers on one machine; the Node gets room for
    /// `--max-pods` of them.
    #[arg(long)]
    simulate: bool,
    /// The Node's Pod capacity with --simulate.
    #[arg(long, default_value_t = 5000)]
    max_pods: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&cli.kubeconfig).context("reading the kubeconfig")?,
        &KubeConfigOptions::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    let root = cli.root.unwrap_or_else(|| {
        pier_testenv::paths::cache_dir()
            .join("devlet")
            .join(&cli.node_name)
    });
    let mut options = if cli.simulate {
        DevletOptions::simulated(&cli.node_name, root, cli.max_pods)
    } else {
        DevletOptions::new(&cli.node_name, root)
    };
    options.zone = cli.zone;
    tokio::select! {
        r = run(client, options) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
