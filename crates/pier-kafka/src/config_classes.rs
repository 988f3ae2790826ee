//! How each Kafka broker config can be changed on a running cluster, as data: one table per
//! Kafka major.minor under `config-classes/` (`name<TAB>mode`), generated from and checked
//! against a real broker by `tests/config_classes.rs`.
//!
//! The modes are Kafka's own (`DynamicBrokerConfig`, the "Update Mode" column of its docs):
//! - [`UpdateMode::ReadOnly`]: only `server.properties`; a change needs a restart.
//! - [`UpdateMode::PerBroker`]: dynamic, but only on one broker's resource (BROKER `<id>`);
//!   the cluster default (BROKER "") refuses it ("broker id must be specified").
//! - [`UpdateMode::ClusterWide`]: dynamic at the cluster default (and per broker too).
//!
//! Keys with a listener prefix (`listener.name.<listener>.<rest>`, also
//! `listener.name.<listener>.<mechanism>.sasl.jaas.config` and the like) are not in the
//! tables; they follow the bare key: unknown stays unknown, read-only stays read-only, and a
//! dynamic one is per-broker, except the connection limits and network threads
//! ([`CLUSTER_LEVEL_LISTENER_CONFIGS`]), which Kafka also takes at the cluster default. So the
//! prefixed `ssl.*`/`sasl.*` settings are per-broker. The bare keystore and truststore keys
//! ([`needs_listener_prefix`]) are per-broker in Kafka's docs, but Kafka updates them only
//! under a listener prefix.
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

/// How a broker config can be changed without a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UpdateMode {
    ReadOnly,
    PerBroker,
    ClusterWide,
}

impl UpdateMode {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateMode::ReadOnly => "read-only",
            UpdateMode::PerBroker => "per-broker",
            UpdateMode::ClusterWide => "cluster-wide",
        }
    }
}

impl fmt::Display for UpdateMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UpdateMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read-only" => Ok(UpdateMode::ReadOnly),
            "per-broker" => Ok(UpdateMode::PerBroker),
            "cluster-wide" => Ok(UpdateMode::ClusterWide),
            other => Err(format!(
                "unknown update mode {other:?} (read-only, per-broker or cluster-wide)"
            )),
        }
    }
}

/// The checked-in tables: (Kafka major.minor, file name, contents), oldest first.
const TABLE_FILES: &[(&str, &str, &str)] = &[
    (
        "4.0",
        "kafka-4.0.tsv",
        include_str!("config-classes/kafka-4.0.tsv"),
    ),
    (
        "4.1",
        "kafka-4.1.tsv",
        include_str!("config-classes/kafka-4.1.tsv"),
    ),
];

/// Where the tables live in the source tree, relative to the workspace root.
pub const TABLE_DIR: &str = "crates/pier-kafka/src/config-classes";

/// The file name of the table for a Kafka major.minor (e.g. `kafka-4.1.tsv`).
pub fn table_file_name(major_minor: &str) -> String {
    format!("kafka-{major_minor}.tsv")
}

/// Bare keys Kafka updates only under a listener prefix (`listener.name.<l>.<key>`):
/// Kafka's `SslConfigs.RECONFIGURABLE_CONFIGS`. A dynamic update of the bare key is refused.
pub const LISTENER_PREFIX_ONLY: &[&str] = &[
    "ssl.key.password",
    "ssl.keystore.certificate.chain",
    "ssl.keystore.key",
    "ssl.keystore.location",
    "ssl.keystore.password",
    "ssl.keystore.type",
    "ssl.truststore.certificates",
    "ssl.truststore.location",
    "ssl.truststore.password",
    "ssl.truststore.type",
];

/// Configs a listener prefix may carry after a SASL mechanism name
/// (`listener.name.<l>.<mechanism>.<config>`), as Kafka's `ListenerMechanismConfigs`.
const MECHANISM_CONFIGS: &[&str] = &[
    "sasl.jaas.config",
    "sasl.login.callback.handler.class",
    "sasl.login.class",
    "sasl.server.callback.handler.class",
    "connections.max.reauth.ms",
];

/// Dynamic keys that stay cluster-wide under a listener prefix (Kafka's
/// `DynamicBrokerConfig.ClusterLevelListenerConfigs`); every other dynamic key is per-broker
/// under a listener prefix.
pub const CLUSTER_LEVEL_LISTENER_CONFIGS: &[&str] = &[
    "max.connection.creation.rate",
    "max.connections",
    "num.network.threads",
];

/// Whether Kafka refuses a dynamic update of this bare key and wants it listener-prefixed.
pub fn needs_listener_prefix(key: &str) -> bool {
    LISTENER_PREFIX_ONLY.contains(&key)
}

/// Splits `listener.name.<listener>.<rest>` into (listener, rest).
pub fn listener_prefixed(key: &str) -> Option<(&str, &str)> {
    let tail = key.strip_prefix("listener.name.")?;
    let (listener, rest) = tail.split_once('.')?;
    (!listener.is_empty() && !rest.is_empty()).then_some((listener, rest))
}

#[derive(Debug)]
struct Table {
    version: Option<(u32, u32)>,
    name: String,
    modes: BTreeMap<String, UpdateMode>,
}

static TABLES: LazyLock<Vec<Arc<Table>>> = LazyLock::new(|| {
    let mut tables: Vec<Arc<Table>> = TABLE_FILES
        .iter()
        .map(|(version, _, text)| {
            Arc::new(Table {
                version: major_minor(version),
                name: version.to_string(),
                // Checked by a unit test; a broken line cannot reach a build that passed it.
                modes: parse_table(text).unwrap_or_default(),
            })
        })
        .collect();
    tables.sort_by_key(|t| t.version);
    tables
});

/// Parses a table: `#` comment lines, blank lines, and `name<TAB>mode` lines.
pub fn parse_table(text: &str) -> Result<BTreeMap<String, UpdateMode>, String> {
    let mut modes = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, mode) = line
            .split_once('\t')
            .ok_or_else(|| format!("line {}: expected name<TAB>mode: {line:?}", n + 1))?;
        let mode = mode.parse().map_err(|e| format!("line {}: {e}", n + 1))?;
        if modes.insert(name.to_string(), mode).is_some() {
            return Err(format!("line {}: {name} appears twice", n + 1));
        }
    }
    Ok(modes)
}

/// Renders a table as the checked-in files are written: one header comment line, then the
/// keys sorted.
pub fn render_table(kafka_version: &str, modes: &BTreeMap<String, UpdateMode>) -> String {
    let mut out = format!(
        "# name<TAB>mode of every Kafka {kafka_version} broker config, derived from a real broker \
         (DescribeConfigs read_only, then an IncrementalAlterConfigs validate_only SET at the \
         cluster default) by `PIER_WRITE_CONFIG_CLASSES=1 cargo test --test config_classes`; do not edit\n"
    );
    for (name, mode) in modes {
        out.push_str(name);
        out.push('\t');
        out.push_str(mode.as_str());
        out.push('\n');
    }
    out
}

/// `4.1.2` (or `4.1`, `4.1.2-rc1`) → (4, 1).
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The update modes of one Kafka version's broker configs.
#[derive(Debug, Clone)]
pub struct ConfigClasses {
    table: Arc<Table>,
    fallback: bool,
}

impl ConfigClasses {
    /// The table for this Kafka version's major.minor, or the newest table (with
    /// [`ConfigClasses::is_fallback`] set) if there is none for it.
    pub fn for_version(kafka_version: &str) -> Self {
        let wanted = major_minor(kafka_version);
        match TABLES
            .iter()
            .find(|t| wanted.is_some() && t.version == wanted)
        {
            Some(table) => ConfigClasses {
                table: table.clone(),
                fallback: false,
            },
            None => ConfigClasses {
                fallback: true,
                ..Self::newest()
            },
        }
    }

    /// The newest table.
    pub fn newest() -> Self {
        let table = TABLES.last().cloned().unwrap_or_else(|| {
            Arc::new(Table {
                version: None,
                name: "none".to_string(),
                modes: BTreeMap::new(),
            })
        });
        ConfigClasses {
            table,
            fallback: false,
        }
    }

    /// Classes from a table that is not checked in (e.g. one just derived from a broker).
    pub fn from_table(kafka_version: &str, modes: BTreeMap<String, UpdateMode>) -> Self {
        ConfigClasses {
            table: Arc::new(Table {
                version: major_minor(kafka_version),
                name: kafka_version.to_string(),
                modes,
            }),
            fallback: false,
        }
    }

    /// The Kafka major.minor of the table in use, e.g. `4.1`.
    pub fn table_version(&self) -> &str {
        &self.table.name
    }

    /// True when there was no table for the version asked for and the newest is used.
    pub fn is_fallback(&self) -> bool {
        self.fallback
    }

    /// How `key` can be changed; `None` for a key this Kafka version does not know (a
    /// plugin's, a typo). Handles `listener.name.<listener>.<rest>` keys (see the module doc).
    pub fn lookup(&self, key: &str) -> Option<UpdateMode> {
        if let Some(mode) = self.table.modes.get(key) {
            return Some(*mode);
        }
        let (_, rest) = listener_prefixed(key)?;
        let base = match self.table.modes.get(rest) {
            Some(_) => rest,
            None => {
                let (mechanism, config) = rest.split_once('.')?;
                if mechanism.is_empty() || !MECHANISM_CONFIGS.contains(&config) {
                    return None;
                }
                config
            }
        };
        Some(match *self.table.modes.get(base)? {
            UpdateMode::ReadOnly => UpdateMode::ReadOnly,
            _ if CLUSTER_LEVEL_LISTENER_CONFIGS.contains(&base) => UpdateMode::ClusterWide,
            _ => UpdateMode::PerBroker,
        })
    }

    /// Every key of the table with its mode, sorted.
    pub fn entries(&self) -> impl Iterator<Item = (&str, UpdateMode)> {
        self.table.modes.iter().map(|(k, m)| (k.as_str(), *m))
    }

    pub fn len(&self) -> usize {
        self.table.modes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.modes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_tables_parse_and_are_sorted_with_a_header() {
        for (version, file, text) in TABLE_FILES {
            assert_eq!(*file, table_file_name(version));
            let modes = parse_table(text).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(modes.len() > 100, "{file} has {} keys", modes.len());
            assert!(
                text.lines().next().unwrap().starts_with("# "),
                "{file}: header"
            );
            assert_eq!(
                render_table(version, &modes).lines().count(),
                text.lines().count()
            );
            let names: Vec<&str> = text
                .lines()
                .skip(1)
                .filter_map(|l| l.split('\t').next())
                .collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted, "{file} is sorted");
            // The header names the Kafka the table was derived from: one of this major.minor.
            let derived_from = text
                .strip_prefix("# name<TAB>mode of every Kafka ")
                .and_then(|rest| rest.split_once(' '))
                .map(|(v, _)| v);
            assert_eq!(
                derived_from.and_then(major_minor),
                major_minor(version),
                "{file}: header names {derived_from:?}"
            );
        }
        assert_eq!(TABLES.len(), TABLE_FILES.len());
        let versions: Vec<_> = TABLE_FILES.iter().map(|(v, _, _)| major_minor(v)).collect();
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "TABLE_FILES oldest first, one per major.minor: {versions:?}"
        );
    }

    #[test]
    fn kafka_4_0_has_its_own_table() {
        use UpdateMode::*;
        let old = ConfigClasses::for_version("4.0.2");
        assert_eq!(old.table_version(), "4.0");
        assert!(!old.is_fallback());
        let new = ConfigClasses::for_version("4.1.2");
        assert_eq!(new.table_version(), "4.1");
        // No key changed its mode from 4.0 to 4.1; the key sets differ: 4.1 dropped the
        // share-group limit and added the streams-group and OAuth assertion configs.
        assert_eq!(old.lookup("group.share.max.groups"), Some(ReadOnly));
        assert_eq!(new.lookup("group.share.max.groups"), None);
        assert_eq!(old.lookup("group.streams.session.timeout.ms"), None);
        assert_eq!(
            new.lookup("group.streams.session.timeout.ms"),
            Some(ReadOnly)
        );
        assert_eq!(old.lookup("transaction.two.phase.commit.enable"), None);
        for key in [
            "log.retention.ms",
            "num.io.threads",
            "max.connections.per.ip",
        ] {
            assert_eq!(old.lookup(key), Some(ClusterWide), "{key}");
        }
        for key in ["listeners", "ssl.keystore.location", "sasl.jaas.config"] {
            assert_eq!(old.lookup(key), Some(PerBroker), "{key}");
        }
        assert_eq!(old.lookup("advertised.listeners"), Some(ReadOnly));
        assert_eq!(
            old.lookup("listener.name.external.ssl.keystore.location"),
            Some(PerBroker)
        );
        assert_eq!(
            old.lookup("listener.name.external.max.connections"),
            Some(ClusterWide)
        );
        // Every key the two share has one mode.
        let changed: Vec<&str> = old
            .entries()
            .filter(|(k, m)| new.lookup(k).is_some_and(|n| n != *m))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(changed, Vec::<&str>::new(), "modes changed from 4.0 to 4.1");
        // Any 4.0 patch finds the 4.0 table; a version older than every table falls back.
        assert_eq!(ConfigClasses::for_version("4.0.0").table_version(), "4.0");
        assert!(ConfigClasses::for_version("3.9.1").is_fallback());
    }

    #[test]
    fn versions_match_on_major_minor_and_fall_back_to_the_newest() {
        let exact = ConfigClasses::for_version("4.1.2");
        assert_eq!(exact.table_version(), "4.1");
        assert!(!exact.is_fallback());
        assert!(!ConfigClasses::for_version("4.1").is_fallback());
        let other = ConfigClasses::for_version("9.0.0");
        assert!(other.is_fallback());
        assert_eq!(
            other.table_version(),
            ConfigClasses::newest().table_version()
        );
        assert!(ConfigClasses::for_version("garbage").is_fallback());
        assert_eq!(major_minor("4.1.2-rc1"), Some((4, 1)));
        assert_eq!(major_minor("4"), None);
    }

    #[test]
    fn lookup_knows_kafkas_modes() {
        let c = ConfigClasses::for_version("4.1.2");
        let mode = |k: &str| c.lookup(k);
        use UpdateMode::*;
        assert_eq!(mode("log.retention.hours"), Some(ReadOnly));
        assert_eq!(mode("log.retention.ms"), Some(ClusterWide));
        assert_eq!(mode("min.insync.replicas"), Some(ClusterWide));
        assert_eq!(mode("num.io.threads"), Some(ClusterWide));
        assert_eq!(mode("node.id"), Some(ReadOnly));
        assert_eq!(mode("process.roles"), Some(ReadOnly));
        assert_eq!(mode("log.dirs"), Some(ReadOnly));
        assert_eq!(mode("ssl.keystore.location"), Some(PerBroker));
        assert_eq!(mode("listeners"), Some(PerBroker));
        assert_eq!(mode("sasl.jaas.config"), Some(PerBroker));
        // Kafka 4 no longer updates advertised listeners live.
        assert_eq!(mode("advertised.listeners"), Some(ReadOnly));
        assert_eq!(mode("log.cleaner.threads"), Some(ClusterWide));
        assert_eq!(mode("max.connections.per.ip"), Some(ClusterWide));
        assert_eq!(mode("com.example.plugin.setting"), None);
        assert_eq!(mode("log.retention.msx"), None);
    }

    #[test]
    fn listener_prefixed_keys() {
        let c = ConfigClasses::for_version("4.1.2");
        let mode = |k: &str| c.lookup(k);
        use UpdateMode::*;
        assert_eq!(
            mode("listener.name.external.ssl.keystore.location"),
            Some(PerBroker)
        );
        assert_eq!(
            mode("listener.name.internal.ssl.truststore.password"),
            Some(PerBroker)
        );
        assert_eq!(
            mode("listener.name.sasl_ssl.plain.sasl.jaas.config"),
            Some(PerBroker)
        );
        assert_eq!(
            mode("listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config"),
            Some(PerBroker)
        );
        assert_eq!(
            mode("listener.name.external.max.connections"),
            Some(ClusterWide)
        );
        assert_eq!(
            mode("listener.name.external.num.network.threads"),
            Some(ClusterWide)
        );
        // Kafka refuses any other prefixed key at the cluster default.
        assert_eq!(
            mode("listener.name.external.log.retention.ms"),
            Some(PerBroker)
        );
        assert_eq!(mode("listener.name.external.node.id"), Some(ReadOnly));
        assert_eq!(
            mode("listener.name.sasl_ssl.oauthbearer.connections.max.reauth.ms"),
            Some(ReadOnly),
            "read-only bare"
        );
        assert_eq!(mode("listener.name.external.no.such.key"), None);
        assert_eq!(mode("listener.name.external.plain.no.such.key"), None);
        assert_eq!(mode("listener.name.external"), None);
        assert_eq!(mode("listener.name..ssl.keystore.location"), None);
        assert_eq!(listener_prefixed("listener.name.a.b.c"), Some(("a", "b.c")));
        assert_eq!(listener_prefixed("listener.security.protocol.map"), None);
        assert!(needs_listener_prefix("ssl.keystore.location"));
        assert!(!needs_listener_prefix("ssl.cipher.suites"));
    }

    #[test]
    fn tables_round_trip_and_reject_garbage() {
        let modes = BTreeMap::from([
            ("a".to_string(), UpdateMode::ReadOnly),
            ("b".to_string(), UpdateMode::ClusterWide),
        ]);
        let text = render_table("9.9.9", &modes);
        assert_eq!(parse_table(&text).unwrap(), modes);
        assert!(parse_table("a read-only\n").is_err());
        assert!(parse_table("a\tsometimes\n").is_err());
        assert!(parse_table("a\tread-only\na\tper-broker\n").is_err());
        for m in [
            UpdateMode::ReadOnly,
            UpdateMode::PerBroker,
            UpdateMode::ClusterWide,
        ] {
            assert_eq!(m.as_str().parse::<UpdateMode>(), Ok(m));
        }
    }
}
