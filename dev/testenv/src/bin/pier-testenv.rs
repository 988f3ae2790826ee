//! `pier-testenv up`: starts a real control plane and a 3-node Kafka cluster on this machine,
//! prints how to reach them, and keeps them running until Ctrl-C (or SIGTERM), when it stops
//! everything it started. `--smoke` checks both with kubectl and kcat, then exits 0 or 1.
//! `make demo` runs this through `dev/demo`.
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use pier_testenv::{ControlPlane, KafkaCluster, LogDir, program};

#[derive(Debug, Parser)]
#[command(
    name = "pier-testenv",
    version,
    about = "Real components for Pier's demo and tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start the control plane and a Kafka cluster and keep them running until Ctrl-C.
    Up {
        /// Kafka nodes (combined broker + controller).
        #[arg(long, default_value_t = 3)]
        kafka_nodes: usize,
        /// Check everything once with kubectl and kcat, then stop and exit.
        #[arg(long)]
        smoke: bool,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Up { kafka_nodes, smoke } => up(kafka_nodes, smoke).await,
    };
    if let Err(e) = result {
        eprintln!("pier-testenv: {e:#}");
        std::process::exit(1);
    }
}

async fn up(kafka_nodes: usize, smoke: bool) -> anyhow::Result<()> {
    let logs = LogDir::named("demo")?;
    println!("Logs and configs: {}", logs.path().display());
    println!("Starting etcd, kube-apiserver, kube-controller-manager and kube-scheduler…");
    let plane = ControlPlane::start(&logs).await?;
    println!("Starting a {kafka_nodes}-node Kafka cluster (KRaft)…");
    let kafka = KafkaCluster::start(&logs, kafka_nodes).await?;
    let kubeconfig = plane.kubeconfig().display().to_string();
    let bootstrap = kafka.bootstrap();
    let bin = pier_testenv::paths::cache_dir().join("bin");
    println!(
        "
Ready.
  Kubernetes API   {server}
  kubeconfig       {kubeconfig}
  Kafka bootstrap  {bootstrap}   (cluster id {cid})

Try:
  export PATH={bin}:$PATH KUBECONFIG={kubeconfig}
  kubectl get namespaces
  kcat -b {bootstrap} -L
  echo hello | kcat -b {bootstrap} -P -t demo
  kcat -b {bootstrap} -C -t demo -o beginning -e
",
        server = plane.server_url(),
        cid = kafka.cluster_id(),
        bin = bin.display(),
    );
    if smoke {
        smoke_check(&kubeconfig, &bootstrap)?;
        println!("Smoke check passed; stopping.");
        return Ok(());
    }
    println!("Press Ctrl-C to stop everything.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("Stopping…");
    drop(kafka);
    drop(plane);
    println!("Stopped.");
    Ok(())
}

/// One kubectl call and one produce/consume round trip with kcat.
fn smoke_check(kubeconfig: &str, bootstrap: &str) -> anyhow::Result<()> {
    let out = Command::new(program("kubectl")?)
        .args([
            "--kubeconfig",
            kubeconfig,
            "get",
            "namespace",
            "default",
            "-o",
            "name",
        ])
        .output()
        .context("running kubectl")?;
    if String::from_utf8_lossy(&out.stdout).trim() != "namespace/default" {
        bail!("kubectl get namespace default: {out:?}");
    }
    let kcat = program("kcat")?;
    let mut produce = Command::new(&kcat)
        .args(["-b", bootstrap, "-P", "-t", "demo-smoke", "-X", "acks=all"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("running kcat")?;
    use std::io::Write;
    produce
        .stdin
        .take()
        .context("kcat stdin")?
        .write_all(b"demo\n")?;
    if !produce.wait()?.success() {
        bail!("kcat could not produce to {bootstrap}");
    }
    // The topic is auto-created by the produce; give the consumer a few tries.
    for _ in 0..10 {
        let out = Command::new(&kcat)
            .args([
                "-b",
                bootstrap,
                "-C",
                "-t",
                "demo-smoke",
                "-o",
                "beginning",
                "-e",
                "-q",
            ])
            .output()?;
        if String::from_utf8_lossy(&out.stdout).trim() == "demo" {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("the record produced to {bootstrap} did not come back")
}
