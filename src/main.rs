//! The `pier` command line.
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Pier: a Kafka operator for Kubernetes whose Envoy front door is driven live over xDS.
#[derive(Debug, Parser)]
#[command(name = "pier", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the KafkaCluster CustomResourceDefinition (YAML).
    Crd,
    /// Serve Envoy config over xDS for a broker list in a file (no Kubernetes needed).
    Xds {
        /// The broker-list file (see examples/brokers.yaml); reloaded when it changes.
        #[arg(long)]
        config: PathBuf,
        /// Where the ADS gRPC server listens.
        #[arg(long, default_value = "127.0.0.1:18000")]
        listen: SocketAddr,
        /// Where /status, /metrics and /healthz are served (off if not given).
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
}

fn main() {
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        // No subcommand: show what there is.
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        return;
    };
    if let Command::Crd = command {
        match pier::api::crd_yaml() {
            Ok(yaml) => print!("{yaml}"),
            Err(e) => {
                eprintln!("pier: cannot render the CRD: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pier: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = match command {
        Command::Crd => Ok(()),
        Command::Xds {
            config,
            listen,
            admin,
        } => runtime.block_on(pier::standalone::run(config, listen, admin)),
    };
    if let Err(message) = result {
        eprintln!("pier: {message}");
        std::process::exit(1);
    }
}
