//! The `pier` command line.
use clap::Parser;

/// Pier: a Kafka operator for Kubernetes whose Envoy front door is driven live over xDS.
#[derive(Debug, Parser)]
#[command(name = "pier", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
