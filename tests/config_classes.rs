//! The config update-mode tables
//! (`crates/pier-kafka/src/config-classes/kafka-<major.minor>.tsv`), one per Kafka major.minor,
//! are derived from real KRaft brokers and must equal the checked-in files: one broker per
//! installed Kafka (each `kafka-node-<version>` launcher `dev/setup` put next to `kafka-node`;
//! the newest patch of each major.minor), one after the other. A version without a table
//! fails with the rewrite hint. With `PIER_WRITE_CONFIG_CLASSES=1` the files are rewritten
//! instead.
//!
//! Derivation, per key the broker reports for its own BROKER resource (Kafka 4.x
//! `DynamicBrokerConfig` semantics):
//! - `read_only` in DescribeConfigs → read-only (not dynamically updatable under that name);
//! - else an IncrementalAlterConfigs validate_only SET at the cluster default (BROKER "") with
//!   the key's current value (harmless values when it is null or sensitive): accepted →
//!   cluster-wide; "broker id must be specified" → per-broker; "only per-listener using the
//!   listener prefix" → per-broker (and listed in `LISTENER_PREFIX_ONLY`).
//!
//! It also checks the rules `ConfigClasses::lookup` applies to `listener.name.<l>.<key>` keys
//! against the same broker.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context, bail, ensure};
use pier::kafka::{
    AdminClient, AdminOptions, ConfigClasses, ConfigOp, ConfigResource, KafkaError,
    LISTENER_PREFIX_ONLY, TABLE_DIR, UpdateMode, major_minor, parse_table, render_table,
    table_file_name,
};
use pier_testenv::kafka::KafkaOptions;
use pier_testenv::paths::cache_dir;
use pier_testenv::{KafkaCluster, LogDir, program};

/// What the cluster default said to a validate-only SET.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Accepted,
    PerBroker,
    ListenerPrefixOnly,
    Refused(String),
}

/// The Kafka version the test support runs: `<kafka>/libs/kafka-clients-<version>.jar` next
/// to the `kafka-node` launcher.
fn kafka_version(launcher: &str) -> anyhow::Result<String> {
    let launcher = std::fs::canonicalize(program(launcher)?)?;
    let libs = launcher
        .parent()
        .and_then(|bin| bin.parent())
        .context("kafka-node is not in <kafka>/bin")?
        .join("libs");
    for entry in std::fs::read_dir(&libs).with_context(|| format!("{}", libs.display()))? {
        let name = entry?.file_name().to_string_lossy().to_string();
        if let Some(v) = name
            .strip_prefix("kafka-clients-")
            .and_then(|n| n.strip_suffix(".jar"))
        {
            return Ok(v.to_string());
        }
    }
    bail!("no kafka-clients-<version>.jar in {}", libs.display())
}

/// Tries the values in turn until the broker's answer classifies the key.
async fn probe(admin: &AdminClient, key: &str, values: &[String]) -> anyhow::Result<Verdict> {
    let mut refused = Vec::new();
    for value in values {
        let op = ConfigOp::set(key, value.clone());
        match admin
            .incremental_alter_configs(&ConfigResource::BrokerDefault, &[op], true)
            .await
        {
            Ok(()) => return Ok(Verdict::Accepted),
            Err(e @ KafkaError::Broker { .. }) => {
                let message = e.broker_message().unwrap_or_default();
                if message.contains("broker id must be specified") {
                    return Ok(Verdict::PerBroker);
                }
                if message.contains("only per-listener using the listener prefix") {
                    return Ok(Verdict::ListenerPrefixOnly);
                }
                refused.push(format!("{value:?}: {message}"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Verdict::Refused(refused.join("; ")))
}

/// Values to try for a key: its current value, else harmless values of each config type
/// (Kafka checks the type before it checks where the key may be set).
fn candidates(value: Option<&str>, sensitive: bool) -> Vec<String> {
    match value {
        Some(v) if !sensitive => vec![v.to_string()],
        _ => ["", "1", "pier-probe", "java.lang.Object"]
            .map(String::from)
            .to_vec(),
    }
}

fn table_path(major_minor: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(TABLE_DIR)
        .join(table_file_name(major_minor))
}

/// Every installed Kafka, by major.minor: the `kafka-node-<version>` launchers in the program
/// directory, the newest patch of each major.minor (a table is per major.minor).
fn installed_kafkas() -> anyhow::Result<BTreeMap<(u32, u32), String>> {
    let bin = cache_dir().join("bin");
    let mut newest: BTreeMap<(u32, u32), String> = BTreeMap::new();
    for entry in std::fs::read_dir(&bin).with_context(|| format!("{}", bin.display()))? {
        let name = entry?.file_name().to_string_lossy().to_string();
        let Some(version) = name.strip_prefix("kafka-node-") else {
            continue;
        };
        let Some(key) = major_minor(version) else {
            bail!("{name} in {}: not a Kafka version", bin.display());
        };
        // The launcher must resolve (a dangling link is a broken install, not "no version").
        program(&name)?;
        let newer = newest
            .get(&key)
            .is_none_or(|seen| version_order(version) > version_order(seen));
        if newer {
            newest.insert(key, version.to_string());
        }
    }
    Ok(newest)
}

/// `4.1.10` → [4, 1, 10], so patches order numerically; a part that is not a number ends it.
fn version_order(version: &str) -> Vec<u32> {
    version
        .split(['.', '-'])
        .map_while(|part| part.parse().ok())
        .collect()
}

#[tokio::test]
async fn config_classes_match_every_installed_kafka() -> anyhow::Result<()> {
    let kafkas = installed_kafkas()?;
    ensure!(
        !kafkas.is_empty(),
        "no kafka-node-<version> in {}: run dev/setup",
        cache_dir().join("bin").display()
    );
    // One broker at a time (2 cores), each with its own logs.
    for version in kafkas.values() {
        check_one_kafka(version)
            .await
            .with_context(|| format!("Kafka {version}"))?;
    }
    Ok(())
}

/// Derives the table of one installed Kafka from a broker of it and checks it against the
/// checked-in one.
async fn check_one_kafka(installed: &str) -> anyhow::Result<()> {
    let launcher = format!("kafka-node-{installed}");
    let version = kafka_version(&launcher)?;
    ensure!(
        version == installed,
        "{launcher} runs Kafka {version}, not {installed}"
    );
    let (major, minor) = major_minor(&version).context("Kafka version")?;
    let cluster = KafkaCluster::start_with(
        &LogDir::named(&format!("config_classes-kafka-{version}"))?,
        KafkaOptions {
            nodes: 1,
            launcher,
            ..KafkaOptions::default()
        },
    )
    .await?;
    let node = &cluster.nodes()[0];
    let admin = AdminClient::new([(node.id, node.broker_addr())], AdminOptions::default());

    let entries = admin
        .describe_configs(&ConfigResource::Broker(node.id))
        .await?;
    let mut modes = BTreeMap::new();
    let mut prefix_only = BTreeSet::new();
    let mut unclassified = Vec::new();
    let mut probes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &entries {
        if e.read_only {
            modes.insert(e.name.clone(), UpdateMode::ReadOnly);
            continue;
        }
        let values = candidates(e.value.as_deref(), e.sensitive);
        let mode = match probe(&admin, &e.name, &values).await? {
            Verdict::Accepted => UpdateMode::ClusterWide,
            Verdict::PerBroker => UpdateMode::PerBroker,
            Verdict::ListenerPrefixOnly => {
                prefix_only.insert(e.name.clone());
                UpdateMode::PerBroker
            }
            Verdict::Refused(why) => {
                unclassified.push(format!("{}: {why}", e.name));
                continue;
            }
        };
        probes.insert(e.name.clone(), values);
        modes.insert(e.name.clone(), mode);
    }
    assert!(
        unclassified.is_empty(),
        "keys the broker neither accepted nor classified:\n{}",
        unclassified.join("\n")
    );
    let expected_prefix_only: BTreeSet<String> =
        LISTENER_PREFIX_ONLY.iter().map(|k| k.to_string()).collect();
    assert_eq!(
        prefix_only, expected_prefix_only,
        "keys Kafka updates only under a listener prefix"
    );

    // The listener-prefix rules of ConfigClasses::lookup, against the broker: every dynamic
    // key under a listener prefix is per-broker unless the cluster default takes it.
    let derived_classes = ConfigClasses::from_table(&version, modes.clone());
    let mut prefix_mismatches = Vec::new();
    for (key, values) in &probes {
        let prefixed = format!("listener.name.plaintext.{key}");
        let derived = match probe(&admin, &prefixed, values).await? {
            Verdict::Accepted => UpdateMode::ClusterWide,
            Verdict::PerBroker => UpdateMode::PerBroker,
            other => {
                prefix_mismatches.push(format!("{prefixed}: broker said {other:?}"));
                continue;
            }
        };
        let rule = derived_classes.lookup(&prefixed);
        if rule != Some(derived) {
            prefix_mismatches.push(format!("{prefixed}: broker {derived}, lookup {rule:?}"));
        }
    }
    assert!(
        prefix_mismatches.is_empty(),
        "listener-prefixed keys:\n{}",
        prefix_mismatches.join("\n")
    );

    let path = table_path(&format!("{major}.{minor}"));
    let rendered = render_table(&version, &modes);
    if std::env::var_os("PIER_WRITE_CONFIG_CLASSES").is_some_and(|v| v == "1") {
        std::fs::write(&path, &rendered).with_context(|| format!("{}", path.display()))?;
        eprintln!("wrote {} ({} keys)", path.display(), modes.len());
        return Ok(());
    }
    let checked_in = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is missing: run PIER_WRITE_CONFIG_CLASSES=1 cargo test --test config_classes",
            path.display()
        )
    })?;
    let old = parse_table(&checked_in).map_err(anyhow::Error::msg)?;
    let mut diff = Vec::new();
    for (k, m) in &modes {
        match old.get(k) {
            None => diff.push(format!("+ {k}\t{m}")),
            Some(o) if o != m => diff.push(format!("~ {k}\t{o} -> {m}")),
            _ => {}
        }
    }
    diff.extend(
        old.keys()
            .filter(|k| !modes.contains_key(*k))
            .map(|k| format!("- {k}")),
    );
    assert!(
        diff.is_empty(),
        "{} differs from Kafka {version} (rewrite with PIER_WRITE_CONFIG_CLASSES=1):\n{}",
        path.display(),
        diff.join("\n")
    );
    assert_eq!(
        checked_in,
        rendered,
        "header or layout of {}",
        path.display()
    );

    // What the operator reads is what was derived.
    let classes = ConfigClasses::for_version(&version);
    assert!(
        !classes.is_fallback(),
        "{} is not in TABLE_FILES of crates/pier-kafka/src/config_classes.rs",
        path.display()
    );
    for (k, m) in &modes {
        assert_eq!(classes.lookup(k), Some(*m), "{k}");
    }
    Ok(())
}
