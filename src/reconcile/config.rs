//! Which broker configuration goes where. Every key of the spec is classified by Kafka's own
//! update mode (the table in `kafka::config_classes`), whatever section of the spec it sits in:
//! read-only keys (and keys the table does not know) are rendered into `server.properties`
//! and change by a rolling restart; cluster-wide keys are set live on the cluster default;
//! per-broker keys are set live on each broker. Dynamic keys are never rendered into the file,
//! so deleting one live falls back to Kafka's default and not to a stale file value. Also the
//! diff of desired against live dynamic configuration, as IncrementalAlterConfigs operations.
//!
//! Values read from Secrets (`configFrom`) are classified the same way; the plan holds their
//! references, never their values (see [`super::secret_refs`]): a read-only one is rendered as
//! a Kafka config-provider reference to the mounted Secret, a dynamic one is resolved and set
//! live by the controller.
use std::collections::BTreeMap;

use super::broker::EffectiveBroker;
use super::secret_refs;
use crate::api::{KafkaCluster, SecretKeyRef};
use crate::kafka::{ConfigClasses, UpdateMode};

/// Dynamic keys other tools own (Cruise Control's and kafka-reassign-partitions' throttles):
/// never deleted because the spec lacks them.
pub const EXTERNALLY_MANAGED: &[&str] = &[
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
    "replica.alter.log.dirs.io.max.bytes.per.second",
];

/// Where a spec section's key ended up, when that is not what the section promises.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Notice {
    /// Not in Kafka's table for this version: treated as read-only (restart).
    Unknown { key: String },
    /// Read-only in Kafka, though given in a dynamic section: applied by a restart.
    ReadOnlyInDynamicSection { key: String },
    /// No table for this image's Kafka version: the newest table is used.
    NoTableForImage { image: String, table: String },
    /// A referenced Secret (or its key) cannot be read: what reads it is left as it is.
    SecretUnavailable {
        /// What reads it: `clusterWideConfig key x`, `broker 1 config key x`, `SCRAM user u`…
        what: String,
        secret: String,
        key: String,
        why: String,
    },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Unknown { key } => write!(
                f,
                "{key:?} is not a known Kafka broker config: treated as read-only (applied by a rolling restart)"
            ),
            Notice::ReadOnlyInDynamicSection { key } => write!(
                f,
                "{key:?} is read-only in Kafka: applied by a rolling restart, not live"
            ),
            Notice::NoTableForImage { image, table } => write!(
                f,
                "no config table for the Kafka version of image {image:?}: classified with Kafka {table}'s"
            ),
            Notice::SecretUnavailable {
                what,
                secret,
                key,
                why,
            } => write!(
                f,
                "{what}: Secret {secret:?} key {key:?} cannot be read ({why}); left as it is until it can"
            ),
        }
    }
}

/// One broker's configuration, split by how it is applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Rendered into server.properties (restart to change).
    pub file: BTreeMap<String, String>,
    /// Set live on this broker's BROKER resource.
    pub live: BTreeMap<String, String>,
    /// Keys of `file` whose value is a reference to a mounted Secret's key (the value in
    /// `file` is the config-provider reference, see [`secret_refs::file_reference`]).
    pub file_from: BTreeMap<String, SecretKeyRef>,
    /// Set live on this broker's BROKER resource, the value read from a Secret.
    pub live_from: BTreeMap<String, SecretKeyRef>,
}

/// The whole cluster's configuration, split by how it is applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigPlan {
    /// Set live on the cluster default (BROKER resource "").
    pub cluster_default: BTreeMap<String, String>,
    /// Set live on the cluster default, the value read from a Secret.
    pub cluster_default_from: BTreeMap<String, SecretKeyRef>,
    pub brokers: BTreeMap<i32, BrokerConfig>,
    pub notices: Vec<Notice>,
}

/// The Kafka version of an image reference (`repo/kafka:4.1.2` → `4.1.2`); the newest table is
/// used when the tag says nothing.
pub fn kafka_version(image: &str) -> &str {
    let tag = super::upgrade::image_tag(image);
    // Tags like "4.1.2-scala" or "4.1": the leading digits and dots.
    let end = tag
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(tag.len());
    &tag[..end]
}

/// A value of the spec: inline, or read from a Secret's key.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Inline(&'a str),
    Secret(&'a SecretKeyRef),
}

impl BrokerConfig {
    fn set_file(&mut self, key: &str, value: Value<'_>) {
        self.remove(key);
        match value {
            Value::Inline(v) => {
                self.file.insert(key.into(), v.into());
            }
            Value::Secret(r) => {
                self.file.insert(key.into(), secret_refs::file_reference(r));
                self.file_from.insert(key.into(), r.clone());
            }
        }
    }

    fn set_live(&mut self, key: &str, value: Value<'_>) {
        self.remove(key);
        match value {
            Value::Inline(v) => {
                self.live.insert(key.into(), v.into());
            }
            Value::Secret(r) => {
                self.live_from.insert(key.into(), r.clone());
            }
        }
    }

    fn remove(&mut self, key: &str) {
        self.file.remove(key);
        self.live.remove(key);
        self.file_from.remove(key);
        self.live_from.remove(key);
    }
}

/// One level's keys (the cluster's, or a broker's own): the read-only section, then the
/// dynamic one, then `configFrom` (later wins). The flag says whether the key sits in the
/// dynamic section (for [`Notice::ReadOnlyInDynamicSection`]).
fn level<'a>(
    read_only: &'a BTreeMap<String, String>,
    dynamic: &'a BTreeMap<String, String>,
    from: Option<&'a BTreeMap<String, crate::api::ConfigValueFrom>>,
) -> BTreeMap<&'a str, (Value<'a>, bool)> {
    let mut out = BTreeMap::new();
    for (section_dynamic, section) in [(false, read_only), (true, dynamic)] {
        for (k, v) in section {
            out.insert(k.trim(), (Value::Inline(v.as_str()), section_dynamic));
        }
    }
    for (k, v) in from.into_iter().flatten() {
        out.insert(k.trim(), (Value::Secret(&v.secret_key_ref), false));
    }
    out
}

/// Splits every broker's configuration by update mode.
pub fn plan_config(kc: &KafkaCluster, brokers: &[EffectiveBroker]) -> ConfigPlan {
    let mut plan = ConfigPlan::default();
    let mut notices = std::collections::BTreeSet::new();
    let cluster = level(
        &kc.spec.kafka.read_only_config,
        &kc.spec.kafka.cluster_wide_config,
        Some(&kc.spec.kafka.config_from),
    );
    for b in brokers {
        let classes = ConfigClasses::for_version(kafka_version(&b.image));
        if classes.is_fallback() {
            notices.insert(Notice::NoTableForImage {
                image: b.image.clone(),
                table: classes.table_version().to_string(),
            });
        }
        let mut out = BrokerConfig::default();
        let mut note = |key: &str, mode: Option<UpdateMode>, in_dynamic_section: bool| match mode {
            None => {
                notices.insert(Notice::Unknown { key: key.into() });
            }
            Some(UpdateMode::ReadOnly) if in_dynamic_section => {
                notices.insert(Notice::ReadOnlyInDynamicSection { key: key.into() });
            }
            _ => {}
        };
        for (&k, &(v, dynamic_section)) in &cluster {
            let mode = classes.lookup(k);
            note(k, mode, dynamic_section);
            match mode {
                Some(UpdateMode::ClusterWide) => match v {
                    Value::Inline(v) => {
                        plan.cluster_default.insert(k.into(), v.into());
                    }
                    Value::Secret(r) => {
                        plan.cluster_default_from.insert(k.into(), r.clone());
                    }
                },
                // Kafka refuses per-broker keys at the cluster default: set them on each broker.
                // Controller-only nodes cannot be reached through a broker listener: file.
                Some(UpdateMode::PerBroker) if b.is_broker() => out.set_live(k, v),
                _ => out.set_file(k, v),
            }
        }
        let from = kc
            .spec
            .brokers
            .iter()
            .find(|s| s.id == b.id)
            .map(|s| &s.config_from);
        let own = level(&b.read_only_config, &b.config, from);
        for (k, (v, dynamic_section)) in own {
            let mode = classes.lookup(k);
            note(k, mode, dynamic_section);
            // The broker's own value overrides the cluster's, wherever that went.
            match mode {
                Some(UpdateMode::ClusterWide | UpdateMode::PerBroker) if b.is_broker() => {
                    out.set_live(k, v)
                }
                _ => out.set_file(k, v),
            }
        }
        // A cluster-wide value in the file would be shadowed by the default anyway; a broker's
        // own read-only value of a cluster-wide key (controller-only node) stays in its file.
        if !out.file_from.is_empty() {
            secret_refs::add_provider(&mut out.file);
        }
        plan.brokers.insert(b.id, out);
    }
    plan.notices = notices.into_iter().collect();
    plan
}

/// A change to one dynamic config resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    Set { key: String, value: String },
    Delete { key: String },
}

/// The changes that make the live dynamic configs of one resource (`current`: key → value as
/// DescribeConfigs reports it, `None` for sensitive values Kafka does not reveal) what the spec
/// says. Keys the spec lacks are deleted, except those other tools own. Sensitive values cannot
/// be compared and are set only when absent.
pub fn config_changes(
    desired: &BTreeMap<String, String>,
    current: &BTreeMap<String, Option<String>>,
) -> Vec<ConfigChange> {
    let mut changes = Vec::new();
    for (k, v) in desired {
        let same = match current.get(k) {
            Some(None) => true,
            Some(Some(cur)) => same_value(cur, v),
            None => false,
        };
        if !same {
            changes.push(ConfigChange::Set {
                key: k.clone(),
                value: v.clone(),
            });
        }
    }
    for k in current.keys() {
        if !desired.contains_key(k) && !EXTERNALLY_MANAGED.contains(&k.as_str()) {
            changes.push(ConfigChange::Delete { key: k.clone() });
        }
    }
    changes
}

/// Cluster-wide keys Kafka keeps on its own: with Eligible Leader Replicas (on by default
/// since Kafka 4.1) the cluster-level `min.insync.replicas` cannot be removed, so a spec that
/// does not set it leaves Kafka's value instead of failing to delete it forever.
pub const KAFKA_KEEPS_CLUSTER_WIDE: &[&str] = &["min.insync.replicas"];

/// [`config_changes`] for the cluster-wide default resource.
pub fn cluster_default_changes(
    desired: &BTreeMap<String, String>,
    current: &BTreeMap<String, Option<String>>,
) -> Vec<ConfigChange> {
    config_changes(desired, current)
        .into_iter()
        .filter(|c| !matches!(c, ConfigChange::Delete { key } if KAFKA_KEEPS_CLUSTER_WIDE.contains(&key.as_str())))
        .collect()
}

/// Kafka normalises values it stores: compare numbers numerically and lists without spaces.
fn same_value(live: &str, wanted: &str) -> bool {
    let (a, b) = (live.trim(), wanted.trim());
    if a == b {
        return true;
    }
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        return x == y;
    }
    let norm = |s: &str| {
        s.split(',')
            .map(|p| p.trim().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{KafkaSpec, Role};
    use crate::reconcile::effective_brokers;
    use crate::reconcile::tests::{broker, cluster, map};

    #[test]
    fn versions_come_from_image_tags() {
        assert_eq!(kafka_version("apache/kafka:4.1.2"), "4.1.2");
        assert_eq!(kafka_version("registry:5000/kafka:4.0.1-rc1"), "4.0.1");
        assert_eq!(kafka_version("apache/kafka@sha256:abcd"), "");
        assert_eq!(kafka_version("apache/kafka"), "");
        assert_eq!(kafka_version("registry:5000/kafka"), "");
        assert_eq!(kafka_version("apache/kafka:latest"), "");
    }

    #[test]
    fn keys_go_where_kafka_can_apply_them_whatever_the_section() {
        let kafka = KafkaSpec {
            read_only_config: map(&[
                ("num.partitions", "6"),
                ("log.retention.ms", "1000"), // cluster-wide, though in readOnlyConfig
            ]),
            cluster_wide_config: map(&[
                ("min.insync.replicas", "2"),
                ("auto.create.topics.enable", "false"), // read-only
                ("com.example.plugin.key", "x"),        // unknown
            ]),
            ..Default::default()
        };
        let mut b1 = broker(1, &[Role::Broker, Role::Controller]);
        b1.config = map(&[
            ("listener.name.internal.ssl.keystore.location", "/k"),
            ("min.insync.replicas", "3"),
        ]);
        b1.read_only_config = map(&[("num.partitions", "9")]);
        let b2 = broker(2, &[Role::Broker]);
        let kc = cluster(kafka, vec![b1, b2]);
        let plan = plan_config(&kc, &effective_brokers(&kc).unwrap());

        assert_eq!(
            plan.cluster_default,
            map(&[("log.retention.ms", "1000"), ("min.insync.replicas", "2")])
        );
        let one = &plan.brokers[&1];
        assert_eq!(
            one.file,
            map(&[
                ("auto.create.topics.enable", "false"),
                ("com.example.plugin.key", "x"),
                ("num.partitions", "9"),
            ])
        );
        assert_eq!(
            one.live,
            map(&[
                ("listener.name.internal.ssl.keystore.location", "/k"),
                ("min.insync.replicas", "3"),
            ])
        );
        assert_eq!(plan.brokers[&2].live, BTreeMap::new());
        assert_eq!(plan.brokers[&2].file["num.partitions"], "6");
        assert_eq!(
            plan.notices,
            vec![
                Notice::Unknown {
                    key: "com.example.plugin.key".into()
                },
                Notice::ReadOnlyInDynamicSection {
                    key: "auto.create.topics.enable".into()
                },
            ]
        );
    }

    #[test]
    fn per_broker_keys_of_cluster_sections_go_to_each_broker_and_controllers_use_files() {
        let kafka = KafkaSpec {
            cluster_wide_config: map(&[("listener.name.internal.ssl.keystore.location", "/k")]),
            ..Default::default()
        };
        let mut controller = broker(9, &[Role::Controller]);
        controller.config = map(&[("num.io.threads", "4")]);
        let kc = cluster(kafka, vec![broker(1, &[Role::Broker]), controller]);
        let plan = plan_config(&kc, &effective_brokers(&kc).unwrap());
        assert!(plan.cluster_default.is_empty());
        assert_eq!(
            plan.brokers[&1].live,
            map(&[("listener.name.internal.ssl.keystore.location", "/k")])
        );
        assert_eq!(
            plan.brokers[&9].file,
            map(&[
                ("listener.name.internal.ssl.keystore.location", "/k"),
                ("num.io.threads", "4"),
            ])
        );
        assert!(plan.brokers[&9].live.is_empty());
    }

    #[test]
    fn an_image_without_a_table_is_classified_with_the_newest_and_said_so() {
        let mut kc = cluster(
            KafkaSpec::default(),
            vec![broker(1, &[Role::Broker, Role::Controller])],
        );
        kc.spec.kafka.image = "example/kafka:latest".into();
        let plan = plan_config(&kc, &effective_brokers(&kc).unwrap());
        assert!(matches!(
            plan.notices.as_slice(),
            [Notice::NoTableForImage { image, .. }] if image == "example/kafka:latest"
        ));
    }

    #[test]
    fn changes_set_what_differs_and_delete_what_the_spec_dropped() {
        let desired = map(&[("a", "1"), ("b", "2"), ("c", "x,y"), ("secret", "s")]);
        let current: BTreeMap<String, Option<String>> = [
            ("a", Some("1.0")),
            ("b", Some("3")),
            ("c", Some("x, y")),
            ("secret", None),
            ("old", Some("1")),
            ("leader.replication.throttled.rate", Some("100")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect();
        assert_eq!(
            config_changes(&desired, &current),
            vec![
                ConfigChange::Set {
                    key: "b".into(),
                    value: "2".into()
                },
                ConfigChange::Delete { key: "old".into() },
            ]
        );
        assert!(config_changes(&BTreeMap::new(), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn the_cluster_level_min_isr_kafka_keeps_is_not_deleted() {
        let current = BTreeMap::from([
            ("min.insync.replicas".to_string(), Some("1".to_string())),
            ("log.cleaner.threads".to_string(), Some("2".to_string())),
        ]);
        let changes = cluster_default_changes(&BTreeMap::new(), &current);
        assert_eq!(
            changes,
            [ConfigChange::Delete {
                key: "log.cleaner.threads".into()
            }]
        );
        let set = BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]);
        assert_eq!(
            cluster_default_changes(&set, &current).len(),
            2,
            "a spec that sets it still changes it"
        );
    }
}
