//! The `pier` command line.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Pier: a Kafka operator for Kubernetes whose Envoy front door is driven live over xDS.
#[derive(Debug, Parser)]
#[command(name = "pier", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

// Parsed once at start: the size of the operator's variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Print Pier's CustomResourceDefinitions (KafkaCluster, KafkaTopic) as YAML documents, or
    /// write each to its file in a directory (`pier crd --write crds`).
    Crd {
        #[arg(long)]
        write: Option<PathBuf>,
    },
    /// Copy the JMX exporter agent jar into a directory: the init container of broker Pods runs
    /// this from Pier's image (which has no shell or cp).
    InstallAgent {
        /// The jar (where Pier's image holds it).
        #[arg(long, default_value = pier::reconcile::monitoring::IMAGE_AGENT_JAR)]
        from: PathBuf,
        /// The directory to copy it into (as jmx_prometheus_javaagent.jar).
        #[arg(long)]
        to: PathBuf,
    },
    /// Run the operator: the KafkaCluster controller and the xDS server for its Envoys.
    Operator {
        /// Kubeconfig file (default: in-cluster config, else ~/.kube/config).
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// Watch only this namespace; repeat for several (default: all namespaces).
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// Where the ADS gRPC server for the Envoys listens.
        #[arg(long, default_value = "0.0.0.0:18000")]
        xds_listen: SocketAddr,
        /// host:port the Envoys dial to reach the xDS server (written into their bootstrap).
        #[arg(long, default_value = "pier-xds.pier-system.svc:18000")]
        xds_address: String,
        /// Where /metrics, /healthz, /readyz and /status are served.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics_listen: SocketAddr,
        /// File with a bearer token that /status, /metrics and /leader then require
        /// (/healthz and /readyz stay open for probes).
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        #[command(flatten)]
        xds_tls: XdsTlsArgs,
        #[command(flatten)]
        alerts: AlertsArgs,
        /// The CA (PEM) that signed --xds-tls-cert: the Envoys get it (Secret
        /// <cluster>-envoy-xds-tls, key xds-ca.crt) to verify the xDS server. Read again
        /// when it changes.
        #[arg(long, requires = "xds_tls_cert")]
        xds_server_ca: Option<PathBuf>,
        /// The Kubernetes cluster DNS domain.
        #[arg(long, default_value = "cluster.local")]
        cluster_domain: String,
        /// The image broker Pods copy the JMX exporter agent from (an init container): Pier's
        /// own image (default: ghcr.io/pier-dev/pier:<this version>).
        #[arg(long, env = "PIER_AGENT_IMAGE")]
        agent_image: Option<String>,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else "default").
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        leader_election_namespace: String,
        /// Run without leader election (only ever one replica).
        #[arg(long)]
        no_leader_election: bool,
        /// How long a follower waits, after it last saw the Lease change, before taking it over.
        #[arg(long, default_value = "15s", value_parser = parse_duration)]
        leader_election_lease_duration: Duration,
        /// How long the leader keeps acting without renewing the Lease (< the lease duration).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        leader_election_renew_deadline: Duration,
        /// How often the leader renews the Lease and a follower tries to take it.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        leader_election_retry_period: Duration,
    },
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
        /// File with a bearer token that /status, /metrics and /leader then require.
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        #[command(flatten)]
        xds_tls: XdsTlsArgs,
    },
}

/// ADS over TLS with client certificates; plaintext without these (with a warning).
#[derive(Debug, clap::Args)]
struct XdsTlsArgs {
    /// Serve xDS over TLS with this certificate chain (PEM; reloaded when the file changes).
    #[arg(long, requires = "xds_tls_key")]
    xds_tls_cert: Option<PathBuf>,
    /// The private key of --xds-tls-cert (PEM; reloaded with it).
    #[arg(long, requires = "xds_tls_cert")]
    xds_tls_key: Option<PathBuf>,
    /// CAs (PEM bundle) trusted to sign Envoy client certificates for any Kafka cluster. An
    /// Envoy reads only the node group its certificate's URI SAN
    /// spiffe://pier.dev/ns/<namespace>/kafkacluster/<name> names.
    #[arg(long, requires = "xds_tls_cert")]
    xds_client_ca: Option<PathBuf>,
}

/// The Alertmanager webhook (off without --alerts-listen); it needs a token file or client
/// certificates (or both).
#[derive(Debug, clap::Args)]
struct AlertsArgs {
    /// Where the Alertmanager webhook listens (POST /alerts, payload version 4).
    #[arg(long)]
    alerts_listen: Option<SocketAddr>,
    /// File with the bearer token Alertmanager sends (http_config.authorization); read again
    /// when it changes.
    #[arg(long, requires = "alerts_listen")]
    alerts_token_file: Option<PathBuf>,
    /// Serve the webhook over HTTPS with this certificate chain (PEM; reloaded when it changes).
    #[arg(long, requires_all = ["alerts_tls_key", "alerts_listen"])]
    alerts_tls_cert: Option<PathBuf>,
    /// The private key of --alerts-tls-cert (PEM).
    #[arg(long, requires = "alerts_tls_cert")]
    alerts_tls_key: Option<PathBuf>,
    /// CAs (PEM bundle) that must sign the webhook clients' certificates (mTLS).
    #[arg(long, requires = "alerts_tls_cert")]
    alerts_client_ca: Option<PathBuf>,
    /// Larger request bodies are refused (413).
    #[arg(long, default_value_t = pier::alerts::server::DEFAULT_MAX_BODY_BYTES, value_parser = clap::value_parser!(usize))]
    alerts_max_body_bytes: usize,
}

impl AlertsArgs {
    fn config(self) -> Option<pier::alerts::AlertsServerConfig> {
        Some(pier::alerts::AlertsServerConfig {
            listen: self.alerts_listen?,
            token_file: self.alerts_token_file,
            tls: self
                .alerts_tls_cert
                .zip(self.alerts_tls_key)
                .map(|(cert, key)| pier::alerts::server::AlertsTlsFiles {
                    cert,
                    key,
                    client_ca: self.alerts_client_ca,
                }),
            max_body_bytes: self.alerts_max_body_bytes,
        })
    }
}

impl XdsTlsArgs {
    fn files(self) -> Option<pier::listen::XdsTlsFiles> {
        Some(pier::listen::XdsTlsFiles {
            cert: self.xds_tls_cert?,
            key: self.xds_tls_key?,
            client_ca: self.xds_client_ca,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Copies `from` into the directory `to` (atomically: a broker never sees half a jar).
/// Prints every CRD (documents separated by `---`), or writes each to `dir`.
fn print_crds(dir: Option<&std::path::Path>) -> Result<(), Box<dyn std::error::Error>> {
    let files = pier::api::crd_files()?;
    match dir {
        Some(dir) => {
            for (name, yaml) in files {
                std::fs::write(dir.join(name), yaml)?;
            }
        }
        None => {
            let docs: Vec<String> = files.into_iter().map(|(_, y)| y).collect();
            print!("{}", docs.join("---\n"));
        }
    }
    Ok(())
}

fn install_agent(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    let target = to.join("jmx_prometheus_javaagent.jar");
    let tmp = to.join(".jmx_prometheus_javaagent.jar.tmp");
    std::fs::copy(from, &tmp)?;
    std::fs::rename(&tmp, &target)?;
    println!("{} -> {}", from.display(), target.display());
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        // No subcommand: show what there is.
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        return;
    };
    if let Command::InstallAgent { from, to } = &command {
        if let Err(e) = install_agent(from, to) {
            eprintln!("pier: cannot install the agent: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Command::Crd { write } = &command {
        if let Err(e) = print_crds(write.as_deref()) {
            eprintln!("pier: cannot render the CRDs: {e}");
            std::process::exit(1);
        }
        return;
    }
    let json = matches!(
        command,
        Command::Operator {
            log_format: LogFormat::Json,
            ..
        }
    );
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pier: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result: Result<(), String> = match command {
        Command::Crd { .. } | Command::InstallAgent { .. } => Ok(()),
        Command::Operator {
            kubeconfig,
            namespaces,
            xds_listen,
            xds_address,
            metrics_listen,
            admin_token_file,
            xds_tls,
            alerts,
            xds_server_ca,
            cluster_domain,
            agent_image,
            log_format: _,
            leader_election_namespace,
            no_leader_election,
            leader_election_lease_duration,
            leader_election_renew_deadline,
            leader_election_retry_period,
        } => runtime
            .block_on(pier::operator::run(pier::operator::OperatorOptions {
                kubeconfig,
                namespaces,
                xds_listen,
                metrics_listen,
                settings: pier::reconcile::Settings {
                    xds_address,
                    cluster_domain,
                    xds_tls: xds_tls.xds_tls_cert.is_some(),
                    agent_image: agent_image.unwrap_or_else(pier::reconcile::default_agent_image),
                },
                xds_tls: xds_tls.files(),
                xds_server_ca,
                admin_token_file,
                alerts: alerts.config(),
                leader_election: (!no_leader_election).then(|| {
                    use pier::controller::leader::{LeaseConfig, default_identity};
                    LeaseConfig {
                        lease_duration: leader_election_lease_duration,
                        renew_deadline: leader_election_renew_deadline,
                        retry_period: leader_election_retry_period,
                        ..LeaseConfig::new(&leader_election_namespace, &default_identity())
                    }
                }),
            }))
            .map_err(|e| e.to_string()),
        Command::Xds {
            config,
            listen,
            admin,
            admin_token_file,
            xds_tls,
        } => runtime
            .block_on(pier::standalone::run(pier::standalone::XdsOptions {
                config,
                listen,
                admin,
                admin_token_file,
                tls: xds_tls.files(),
            }))
            .map_err(|e| e.to_string()),
    };
    if let Err(message) = result {
        eprintln!("pier: {message}");
        std::process::exit(1);
    }
}

/// A duration such as `15s`, `500ms` or `1.5s`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => match text.strip_suffix('s') {
            Some(n) => (n, 1.0),
            None => return Err(format!("{text:?}: give a unit, e.g. 15s or 500ms")),
        },
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 15s or 500ms"))?;
    Duration::try_from_secs_f64(value * unit).map_err(|e| format!("{text:?}: {e}"))
}
