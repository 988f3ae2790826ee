//! `pier xds`: Pier's xDS server without Kubernetes. It serves the translation of a broker list
//! read from a YAML file, so Envoy can front a Kafka cluster that runs anywhere, and reloads the
//! file when it changes. A file that does not parse or validate is reported (with the field and
//! line) and the last good snapshot keeps serving.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::model::{BrokerRouting, BrokerState, ExposedBroker, ExternalAccess, ModelError};
use crate::xds::metrics::XdsMetrics;
use crate::xds::{Snapshot, SnapshotCache, translate};

/// The broker-list file (see README, "Standalone xDS").
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BrokersFile {
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub cluster: String,
    pub listeners: Vec<ListenerSpec>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenerSpec {
    pub name: String,
    #[serde(default = "default_bind")]
    pub bind_address: String,
    pub bootstrap_port: u16,
    /// Port-per-broker routing: broker `id` listens on `brokerPortBase + id`.
    #[serde(default)]
    pub broker_port_base: Option<u16>,
    /// SNI routing on the bootstrap port instead.
    #[serde(default)]
    pub sni: Option<SniSpec>,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: u64,
    pub brokers: Vec<BrokerSpec>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SniSpec {
    pub domain: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BrokerSpec {
    pub id: i32,
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub draining: bool,
}

fn default_namespace() -> String {
    "default".into()
}
fn default_bind() -> String {
    "0.0.0.0".into()
}
fn default_idle_timeout() -> u64 {
    3600
}

/// Why a broker-list file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: listener {listener:?}: {message}")]
    Listener {
        path: PathBuf,
        listener: String,
        message: String,
    },
    #[error("{path}: {source}")]
    Model {
        path: PathBuf,
        #[source]
        source: ModelError,
    },
}

impl BrokersFile {
    /// Parses the file's text; errors name the field and line.
    pub fn parse(path: &Path, text: &str) -> Result<Self, FileError> {
        serde_yaml_ng::from_str(text).map_err(|e| FileError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The model of every listener, validated.
    pub fn to_model(&self, path: &Path) -> Result<Vec<ExternalAccess>, FileError> {
        let mut out = Vec::new();
        for l in &self.listeners {
            let bad = |message: &str| FileError::Listener {
                path: path.to_path_buf(),
                listener: l.name.clone(),
                message: message.to_string(),
            };
            let routing = match (&l.broker_port_base, &l.sni) {
                (Some(base), None) => BrokerRouting::PortPerBroker { base_port: *base },
                (None, Some(sni)) => BrokerRouting::Sni {
                    domain: sni.domain.clone(),
                },
                (Some(_), Some(_)) => return Err(bad("set brokerPortBase or sni, not both")),
                (None, None) => return Err(bad("set brokerPortBase or sni")),
            };
            out.push(ExternalAccess {
                namespace: self.namespace.clone(),
                cluster: self.cluster.clone(),
                listener: l.name.clone(),
                bind_address: l.bind_address.clone(),
                bootstrap_port: l.bootstrap_port,
                routing,
                idle_timeout: Duration::from_secs(l.idle_timeout_seconds),
                brokers: l
                    .brokers
                    .iter()
                    .map(|b| ExposedBroker {
                        id: b.id,
                        host: b.host.clone(),
                        port: b.port,
                        state: if b.draining {
                            BrokerState::Draining
                        } else {
                            BrokerState::Serving
                        },
                    })
                    .collect(),
            });
        }
        crate::model::validate_group(&out).map_err(|source| FileError::Model {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(out)
    }
}

/// Reads, parses, validates and translates the file into (group, snapshot).
pub fn load(path: &Path) -> Result<(String, Snapshot), FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file = BrokersFile::parse(path, &text)?;
    let model = file.to_model(path)?;
    let group = crate::model::group_name(&file.namespace, &file.cluster);
    let resources = translate(&model).map_err(|source| FileError::Model {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((group, Snapshot::new(resources)))
}

/// How `pier xds` runs.
#[derive(Debug, Clone)]
pub struct XdsOptions {
    /// The broker-list file.
    pub config: PathBuf,
    /// Where ADS is served.
    pub listen: SocketAddr,
    /// Where status and metrics are served, if anywhere.
    pub admin: Option<SocketAddr>,
    /// The admin endpoint's bearer token file; no token asked for when absent.
    pub admin_token_file: Option<PathBuf>,
    /// Serve ADS over TLS with client certificates (the client CA is required here: no
    /// KafkaCluster registers its own); plaintext when absent.
    pub tls: Option<crate::listen::XdsTlsFiles>,
}

/// Runs `pier xds` until Ctrl-C/SIGTERM, then drains the xDS streams as the operator does:
/// serves ADS on `listen`, and status and metrics on `admin` if given. Fails at start if the
/// file is bad; later bad edits only log.
pub async fn run(options: XdsOptions) -> Result<(), RunError> {
    let XdsOptions {
        config,
        listen,
        admin,
        admin_token_file,
        tls,
    } = options;
    if tls.as_ref().is_some_and(|t| t.client_ca.is_none()) {
        return Err(RunError::NoClientCa);
    }
    let tls = crate::listen::xds_tls(tls.as_ref(), listen)?;
    let admin_token = admin_token_file
        .as_deref()
        .map(crate::admin::AdminToken::from_file)
        .transpose()?;
    let metrics = Arc::new(XdsMetrics::default());
    let cache = Arc::new(SnapshotCache::new(metrics.clone()));
    let (group, snapshot) = load(&config)?;
    cache.set_snapshot(&group, snapshot);
    let listener = crate::listen::bind(listen, "xDS").await?;
    if let Some(addr) = admin {
        let admin_listener = crate::listen::bind(addr, "admin").await?;
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        if let Some(tls) = &tls {
            tls.register(&mut registry);
        }
        tokio::spawn(crate::admin::serve(
            admin_listener,
            cache.clone(),
            registry,
            crate::admin::Health::alone(),
            admin_token,
        ));
    }
    tokio::spawn(watch_file(config, cache.clone(), group));
    crate::shutdown::serve_xds(listener, cache, tls, crate::shutdown::requested()).await?;
    Ok(())
}

/// How often the file is read even without a change event: a safety net for file systems that
/// send none (network mounts); change events make a reload immediate.
const FALLBACK_POLL: Duration = Duration::from_secs(5);

/// Reloads the file whenever its content changes: on a change event in its directory (the
/// directory, so a file replaced by rename — an editor's save, a ConfigMap volume's symlink
/// swap — is seen too), or at the latest after [`FALLBACK_POLL`].
async fn watch_file(path: PathBuf, cache: Arc<SnapshotCache>, mut group: String) {
    let (changed, mut changes) = tokio::sync::mpsc::channel::<()>(1);
    let _watcher = change_events(&path, changed);
    // None: the first (immediate) tick reads the file again, so an edit made after `run` loaded
    // it and before the watch began is not missed (an unchanged file sets an equal snapshot,
    // which the cache ignores).
    let mut last = None;
    let mut tick = tokio::time::interval(FALLBACK_POLL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(()) = changes.recv() => {}
        }
        let now = std::fs::read(&path).ok();
        if now == last {
            continue;
        }
        last = now;
        match load(&path) {
            Ok((new_group, snapshot)) => {
                cache.set_snapshot(&new_group, snapshot);
                if new_group != group {
                    // Only the file's group is served: the old group's Envoys are disconnected
                    // and refused; they keep their last config.
                    tracing::warn!(old = %group, new = %new_group, "node group changed; the old group is no longer served");
                    cache.remove_group(&group);
                    group = new_group;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "invalid broker file; the last good config keeps serving");
            }
        }
    }
}

/// Whether a change event in the file's directory may have changed the file named `name`:
/// a write, creation, rename or removal of that name, or of a ConfigMap volume's `..data`
/// entries (whose symlink swap changes the file without an event naming it). Not reads: the
/// watcher's own read of the file raises an access event, which would loop.
fn may_change(event: &notify::Event, name: &std::ffi::OsStr) -> bool {
    use notify::EventKind;
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    event.paths.is_empty()
        || event.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n == name || n.as_encoded_bytes().starts_with(b".."))
        })
}

/// Watches the directory of `path`, sending on `changed` for every event (coalesced: a full
/// channel already means "read it again"). None, with a warning, where the file system cannot
/// watch: the fallback poll still reloads.
fn change_events(
    path: &Path,
    changed: tokio::sync::mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| may_change(&e, &name)) {
            let _ = changed.try_send(());
        }
    })
    .and_then(|mut w| {
        w.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, poll = ?FALLBACK_POLL, "cannot watch the broker file's directory; reloading by polling");
            None
        }
    }
}

/// Why `pier xds` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Listen(#[from] crate::listen::ListenError),
    #[error("xDS server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("xDS TLS: {0}")]
    Tls(#[from] crate::xds::tls::TlsError),
    #[error(
        "--xds-tls-cert needs --xds-client-ca here: it is the only source of trusted client CAs"
    )]
    NoClientCa,
    #[error(transparent)]
    AdminToken(#[from] crate::admin::TokenError),
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
cluster: demo
listeners:
  - name: external
    bindAddress: 127.0.0.1
    bootstrapPort: 29092
    brokerPortBase: 29100
    brokers:
      - {id: 0, host: 127.0.0.2, port: 9092}
      - {id: 1, host: kafka-1.example, port: 9092, draining: true}
";

    fn model(text: &str) -> Result<Vec<ExternalAccess>, FileError> {
        let p = Path::new("brokers.yaml");
        BrokersFile::parse(p, text)?.to_model(p)
    }

    #[test]
    fn a_good_file_becomes_the_model() {
        let m = model(GOOD).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].group(), "default/demo");
        assert_eq!(m[0].brokers[1].state, BrokerState::Draining);
        assert_eq!(m[0].idle_timeout, Duration::from_secs(3600));
    }

    #[test]
    fn errors_name_the_field_and_line() {
        let typo = GOOD.replace("bootstrapPort", "bootstrapPrt");
        let e = model(&typo).unwrap_err().to_string();
        assert!(e.contains("bootstrapPrt") && e.contains("line 6"), "{e}");

        let missing = GOOD.replace(", port: 9092}", "}");
        let e = model(&missing).unwrap_err().to_string();
        assert!(
            e.contains("missing field `port`") && e.contains("line 9"),
            "{e}"
        );

        let wrong_type = GOOD.replace("id: 0", "id: zero");
        let e = model(&wrong_type).unwrap_err().to_string();
        assert!(e.contains("line 9"), "{e}");

        let dup = GOOD.replace("id: 1", "id: 0");
        let e = model(&dup).unwrap_err().to_string();
        assert!(e.contains("broker id 0 appears more than once"), "{e}");

        let neither = GOOD.replace("    brokerPortBase: 29100\n", "");
        let e = model(&neither).unwrap_err().to_string();
        assert!(e.contains("set brokerPortBase or sni"), "{e}");
    }

    #[test]
    fn sni_files_parse() {
        let sni = GOOD.replace("brokerPortBase: 29100", "sni: {domain: kafka.example.com}");
        let m = model(&sni).unwrap();
        assert_eq!(
            m[0].routing,
            BrokerRouting::Sni {
                domain: "kafka.example.com".into()
            }
        );
    }

    /// Reloads come from change events, not the fallback poll: each edit is served well
    /// before [`FALLBACK_POLL`] ends, for an edit in place and a file replaced by rename.
    #[tokio::test]
    async fn edits_are_served_on_change_events() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("brokers.yaml");
        std::fs::write(&path, GOOD).expect("write");
        let (group, snapshot) = load(&path).expect("good file");
        let cache = Arc::new(SnapshotCache::new(Arc::new(XdsMetrics::default())));
        cache.set_snapshot(&group, snapshot);
        tokio::spawn(watch_file(path.clone(), cache.clone(), group.clone()));
        let within = FALLBACK_POLL / 2;
        let served = |text: &str| {
            let version = BrokersFile::parse(&path, text)
                .and_then(|f| f.to_model(&path))
                .map(|m| Snapshot::new(translate(&m).expect("translates")).version())
                .expect("valid edit");
            let cache = cache.clone();
            let group = group.clone();
            async move {
                let deadline = tokio::time::Instant::now() + within;
                while cache.group_status(&group).version.as_deref() != Some(version.as_str()) {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the edit was not served within {within:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };

        let in_place = GOOD.replace("port: 9092}", "port: 9093}");
        std::fs::write(&path, &in_place).expect("write");
        served(&in_place).await;

        let renamed = GOOD.replace("127.0.0.2", "127.0.0.3");
        let tmp = dir.path().join(".brokers.yaml.tmp");
        std::fs::write(&tmp, &renamed).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        served(&renamed).await;
    }

    #[test]
    fn only_changes_of_the_file_are_reload_events() {
        use notify::event::{AccessKind, CreateKind, DataChange, ModifyKind, RenameMode};
        use notify::{Event, EventKind};
        let name = std::ffi::OsStr::new("brokers.yaml");
        let at = |kind: EventKind, file: &str| {
            Event::new(kind).add_path(PathBuf::from(format!("/etc/pier/{file}")))
        };
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Content));
        assert!(may_change(&at(write, "brokers.yaml"), name));
        assert!(may_change(
            &at(EventKind::Create(CreateKind::File), "brokers.yaml"),
            name
        ));
        assert!(may_change(
            &at(
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                "brokers.yaml"
            ),
            name
        ));
        // A ConfigMap volume swaps its `..data` symlink; the file's own name is not in the event.
        assert!(may_change(
            &at(EventKind::Create(CreateKind::Any), "..data_tmp"),
            name
        ));
        assert!(
            may_change(&Event::new(EventKind::Any), name),
            "an event without paths"
        );
        // Reading the file (as the watcher does) and other files' writes are not changes.
        assert!(!may_change(
            &at(EventKind::Access(AccessKind::Any), "brokers.yaml"),
            name
        ));
        assert!(!may_change(&at(write, "pier.log"), name));
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/brokers.yaml");
        let (group, snapshot) = load(&path).unwrap();
        assert_eq!(group, "default/my-kafka");
        assert!(
            !snapshot
                .get(crate::xds::ResourceType::Listener)
                .resources
                .is_empty()
        );
    }

    mod fuzz {
        //! The broker file is outside input: any bytes, and any edit of a good file, give a
        //! model or an error — never a panic — and a model always translates.
        use super::*;
        use proptest::prelude::*;

        fn check(text: &str) -> Result<(), TestCaseError> {
            let p = Path::new("brokers.yaml");
            if let Ok(file) = BrokersFile::parse(p, text)
                && let Ok(model) = file.to_model(p)
            {
                prop_assert!(translate(&model).is_ok());
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                check(&String::from_utf8_lossy(&bytes))?;
            }

            #[test]
            fn edits_of_a_good_file(
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8)
            ) {
                let mut bytes = GOOD.as_bytes().to_vec();
                for (at, byte, op) in edits {
                    let i = at.index(bytes.len() + 1);
                    match op {
                        0 => bytes.insert(i, byte),
                        1 if i < bytes.len() => bytes[i] = byte,
                        _ if i < bytes.len() => { bytes.remove(i); }
                        _ => {}
                    }
                }
                check(&String::from_utf8_lossy(&bytes))?;
            }

            #[test]
            fn generated_files(
                ids in prop::collection::vec(-2i32..70000, 0..6),
                base in any::<u16>(),
                bootstrap in any::<u16>(),
                sni in any::<bool>(),
                host in "[a-z0-9.:-]{0,12}",
            ) {
                let mut text = format!("cluster: c\nlisteners:\n  - name: l\n    bootstrapPort: {bootstrap}\n");
                if sni {
                    text.push_str("    sni: {domain: kafka.example.com}\n");
                } else {
                    text.push_str(&format!("    brokerPortBase: {base}\n"));
                }
                text.push_str("    brokers:\n");
                for id in ids {
                    text.push_str(&format!("      - {{id: {id}, host: \"{host}\", port: 9092}}\n"));
                }
                check(&text)?;
            }
        }
    }
}
