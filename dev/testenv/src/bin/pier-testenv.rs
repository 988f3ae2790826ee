//! The local environment behind `make demo`.
//!
//! * `pier-testenv demo --image target/pier-image.tar`: a real control plane and the dev node
//!   agent; installs Pier as a user does (`helm install` of `charts/pier`: the devlet runs both
//!   operator replicas from the image, each as its ServiceAccount); applies
//!   `examples/kafkacluster-basic.yaml`, shows progress until the cluster is Ready, prints the
//!   bootstrap address through Envoy and kcat commands, and runs until Ctrl-C (or SIGTERM), when
//!   it stops everything it started. `--smoke` makes one produce/consume round trip through Envoy
//!   instead and exits 0 or 1.
//! * `pier-testenv up`: just a control plane and a Kafka cluster (no operator).
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use pier_testenv::devlet::{self, DevletOptions};
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
    /// The operator demo: control plane, dev node agent, Pier installed by its chart, and a
    /// KafkaCluster.
    Demo {
        /// Pier's image as an OCI archive (`make image`).
        #[arg(long)]
        image: PathBuf,
        /// Pier's Helm chart.
        #[arg(long, default_value = "charts/pier")]
        chart: PathBuf,
        /// The KafkaCluster to apply.
        #[arg(long, default_value = "examples/kafkacluster-basic.yaml")]
        example: PathBuf,
        /// One produce/consume round trip through Envoy, then stop and exit.
        #[arg(long)]
        smoke: bool,
    },
    /// A control plane and a Kafka cluster, no operator.
    Up {
        #[arg(long, default_value_t = 3)]
        kafka_nodes: usize,
        #[arg(long)]
        smoke: bool,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Demo {
            image,
            chart,
            example,
            smoke,
        } => demo(image, chart, example, smoke).await,
        Cmd::Up { kafka_nodes, smoke } => up(kafka_nodes, smoke).await,
    };
    if let Err(e) = result {
        eprintln!("pier-testenv: {e:#}");
        std::process::exit(1);
    }
}

async fn until_stopped() -> anyhow::Result<()> {
    println!("Press Ctrl-C to stop everything.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("Stopping…");
    Ok(())
}

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program("kubectl")?)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn demo(image: PathBuf, chart: PathBuf, example: PathBuf, smoke: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        image.exists(),
        "no image at {} (`make image` writes it)",
        image.display()
    );
    let logs = LogDir::named("demo")?;
    println!("Logs and configs: {}", logs.path().display());
    println!("Starting etcd, kube-apiserver, kube-controller-manager and kube-scheduler…");
    let plane = ControlPlane::start(&logs).await?;
    let kubeconfig = plane.kubeconfig().to_path_buf();

    println!("Starting the dev node agent (runs Pods as local processes)…");
    let devlet_root = logs.data("devlet")?;
    let mut options = DevletOptions::new("pier-dev", devlet_root.clone());
    options.pier_image = image.clone();
    let devlet = tokio::spawn(devlet::run(plane.client(), options));

    println!(
        "Installing Pier: helm install pier {} --namespace pier-system (image {})…",
        chart.display(),
        image.display()
    );
    let helm_home = logs.sub("helm")?;
    let out = Command::new(program("helm")?)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["install", "pier"])
        .arg(&chart)
        .args(["--namespace", "pier-system", "--create-namespace"])
        .env("HELM_CACHE_HOME", helm_home.join("cache"))
        .env("HELM_CONFIG_HOME", helm_home.join("config"))
        .env("HELM_DATA_HOME", helm_home.join("data"))
        .output()
        .context("running helm")?;
    if !out.status.success() {
        bail!(
            "helm install: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    let name = kubectl(
        &kubeconfig,
        &["apply", "-f", &example.display().to_string(), "-o", "name"],
    )?;
    println!(
        "Applied {} ({name}); waiting until it is Ready…",
        example.display()
    );
    let started = std::time::Instant::now();
    let mut last = String::new();
    loop {
        if devlet.is_finished() {
            bail!(
                "the dev node agent stopped; see the logs in {}",
                logs.path().display()
            );
        }
        let ready = kubectl(&kubeconfig, &["get", &name, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].message}"]).unwrap_or_default();
        if ready != last {
            println!(
                "  [{:>3}s] {}",
                started.elapsed().as_secs(),
                if ready.is_empty() {
                    "reconciling"
                } else {
                    &ready
                }
            );
            last = ready.clone();
        }
        if ready.starts_with("True") {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            let kept = keep_pod_logs(&devlet_root, &logs.sub("pods")?);
            eprintln!("{}", diagnose(&kubeconfig, &name, &kept));
            bail!(
                "not Ready after 5 minutes; see the logs in {}",
                logs.path().display()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let bootstrap = kubectl(
        &kubeconfig,
        &["get", &name, "-o", "jsonpath={.status.bootstrapAddress}"],
    )?;
    let leader_ip = kubectl(
        &kubeconfig,
        &[
            "get",
            "pods",
            "-n",
            "pier-system",
            "-l",
            "kafka.pier.dev/leader=true",
            "-o",
            "jsonpath={.items[0].status.podIP}",
        ],
    )
    .unwrap_or_default();
    let bin = pier_testenv::paths::cache_dir().join("bin");
    println!(
        "
Ready: a Kafka cluster run by Pier, reachable through Envoy at {bootstrap}.

Try (in another terminal):
  export PATH={bin}:$PATH KUBECONFIG={kubeconfig}
  kubectl get kafkaclusters,pods,svc
  kubectl -n pier-system get pods -L kafka.pier.dev/leader     # Pier, installed by its chart
  kcat -b {bootstrap} -L
  seq 1 100 | kcat -b {bootstrap} -P -t demo
  kcat -b {bootstrap} -C -t demo -o beginning -e
  # the Envoys' xDS status, from the leader (the chart's admin token guards it):
  curl -s -H \"Authorization: Bearer $(kubectl -n pier-system get secret pier-admin-token -o jsonpath='{{.data.token}}' | base64 -d)\" http://{leader_ip}:8080/status
",
        bin = bin.display(),
        kubeconfig = kubeconfig.display(),
    );
    if smoke {
        round_trip(&bootstrap)?;
        println!("Smoke check passed: produced and consumed through Envoy. Stopping.");
    } else {
        until_stopped().await?;
    }
    devlet.abort();
    let _ = devlet.await;
    drop(plane);
    println!("Stopped.");
    Ok(())
}

async fn up(kafka_nodes: usize, smoke: bool) -> anyhow::Result<()> {
    let logs = LogDir::named("up")?;
    println!("Logs and configs: {}", logs.path().display());
    println!("Starting etcd, kube-apiserver, kube-controller-manager and kube-scheduler…");
    let plane = ControlPlane::start(&logs).await?;
    println!("Starting a {kafka_nodes}-node Kafka cluster (KRaft)…");
    let kafka = KafkaCluster::start(&logs, kafka_nodes).await?;
    let kubeconfig = plane.kubeconfig().display().to_string();
    let bootstrap = kafka.bootstrap();
    println!(
        "
Ready.
  Kubernetes API   {server}
  kubeconfig       {kubeconfig}
  Kafka bootstrap  {bootstrap}   (cluster id {cid})
",
        server = plane.server_url(),
        cid = kafka.cluster_id(),
    );
    if smoke {
        round_trip(&bootstrap)?;
        println!("Smoke check passed; stopping.");
    } else {
        until_stopped().await?;
    }
    drop(kafka);
    drop(plane);
    println!("Stopped.");
    Ok(())
}

/// One produce/consume round trip with kcat.
/// Copies every container log the devlet wrote (under `<root>/pods/<ns>_<pod>_<uid>/`) to
/// `into/<ns>_<pod>_<container>.log` (the devlet's directory is scratch, deleted on exit), and
/// returns the copies.
fn keep_pod_logs(root: &std::path::Path, into: &std::path::Path) -> Vec<PathBuf> {
    let mut kept = Vec::new();
    let Ok(pods) = std::fs::read_dir(root.join("pods")) else {
        return kept;
    };
    for pod in pods.flatten() {
        let pod_dir = pod.file_name().to_string_lossy().to_string();
        // `<ns>_<pod>_<uid>`: the uid is dropped, names stay readable.
        let pod_name = pod_dir
            .rsplit_once('_')
            .map_or(pod_dir.as_str(), |(p, _)| p);
        let Ok(files) = std::fs::read_dir(pod.path()) else {
            continue;
        };
        for f in files.flatten() {
            let file = f.file_name().to_string_lossy().to_string();
            if !file.ends_with(".log") {
                continue;
            }
            let to = into.join(format!("{pod_name}_{file}"));
            if std::fs::copy(f.path(), &to).is_ok() {
                kept.push(to);
            }
        }
    }
    kept.sort();
    kept
}

/// What a failed demo run prints, so that a CI log alone says why: the cluster's conditions,
/// the Pods, and the end of the operator's and the Envoys' logs.
fn diagnose(kubeconfig: &std::path::Path, cluster: &str, logs: &[PathBuf]) -> String {
    let mut out = String::from("--- diagnostics ---\n");
    let conditions = kubectl(
        kubeconfig,
        &[
            "get",
            cluster,
            "-o",
            "jsonpath={range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{\"\\n\"}{end}",
        ],
    );
    let xds = kubectl(
        kubeconfig,
        &["get", cluster, "-o", "jsonpath={.status.xds}"],
    );
    let pods = kubectl(kubeconfig, &["get", "pods", "-A", "-o", "wide"]);
    for (what, got) in [
        ("conditions", conditions),
        ("status.xds", xds),
        ("pods", pods),
    ] {
        let text = got.unwrap_or_else(|e| format!("({e:#})"));
        out.push_str(&format!("{what}:\n{text}\n"));
    }
    for log in logs {
        let file = log.file_name().unwrap_or_default().to_string_lossy();
        // The operator's and the Envoys' logs say why the config is not taken; brokers' logs
        // are long and stay in the directory.
        if !(file.starts_with("pier-system_") || file.contains("envoy")) {
            continue;
        }
        out.push_str(&format!("--- last lines of {file} ---\n"));
        for line in pier_testenv::process::file_tail(log, 25).lines() {
            // Long JSON lines cut: the message and the first fields are what tell.
            let cut = line.char_indices().nth(400).map_or(line.len(), |(i, _)| i);
            out.push_str(&line[..cut]);
            out.push('\n');
        }
    }
    out
}

fn round_trip(bootstrap: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let kcat = program("kcat")?;
    let mut produce = Command::new(&kcat)
        .args(["-b", bootstrap, "-P", "-t", "demo-smoke", "-X", "acks=all"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("running kcat")?;
    produce
        .stdin
        .take()
        .context("kcat stdin")?
        .write_all(b"demo\n")?;
    if !produce.wait()?.success() {
        bail!("kcat could not produce to {bootstrap}");
    }
    // The topic is created by the produce; give the consumer a few tries.
    for _ in 0..20 {
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
