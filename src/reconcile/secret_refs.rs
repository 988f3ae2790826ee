//! Values read from Secrets (`configFrom`, `spec.sasl.scramUsers`), planned purely. The spec
//! and the plan hold references, never values; neither a ConfigMap nor a Pod spec ever holds a
//! value.
//!
//! - A key Kafka reads only at start (or a per-broker key of a controller-only node) is
//!   rendered into `server.properties` as a reference Kafka's `DirectoryConfigProvider`
//!   resolves when the node starts (`${pierdir:<dir>:<key>}`), the Secret mounted read-only at
//!   `<dir>` (only the keys used). Kafka 4.1 resolves it without any system property: the
//!   `org.apache.kafka.automatic.config.providers` allow-list applies only when set. Each such
//!   Secret's resourceVersion is in the broker Pod's [`SECRET_VERSIONS_ANNOTATION`], hence in its
//!   restart hash: a changed Secret restarts the brokers that read it from the file.
//! - A dynamic key is resolved by the controller and set live (cluster default or broker), and
//!   set again whenever the Secret's resourceVersion differs from the one recorded in
//!   `status.appliedSecrets` — Kafka never reveals a sensitive value, so comparing values
//!   cannot tell. A Secret that cannot be read leaves the key as it is (never deleted) and is
//!   a notice naming the Secret and key.
//! - `status.appliedSecrets` keys: `cluster/<key>`, `broker/<id>/<key>`, `scram/<user>`;
//!   values `<secret>@<resourceVersion>`.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{KeyToPath, Pod, SecretVolumeSource, Volume, VolumeMount};
use kube::ResourceExt;

use super::config::{ConfigChange, ConfigPlan, Notice, cluster_default_changes, config_changes};
use crate::api::{KafkaCluster, SecretKeyRef};

/// The name of Pier's config provider in `server.properties`.
pub const PROVIDER: &str = "pierdir";
/// Kafka's provider that reads a directory's files (one value per file).
pub const PROVIDER_CLASS: &str = "org.apache.kafka.common.config.provider.DirectoryConfigProvider";
/// Where referenced Secrets are mounted, one directory each. Not under the ConfigMap's
/// `/etc/pier`: a kubelet mounts ConfigMap volumes read-only, and the container runtime cannot
/// create a mount point inside one.
pub const SECRETS_DIR: &str = "/etc/pier-secrets";
/// On a broker Pod: `<secret>@<resourceVersion>,…` of the Secrets its file reads.
pub const SECRET_VERSIONS_ANNOTATION: &str = "kafka.pier.dev/secret-versions";
/// The version recorded for a Secret that does not exist (its Pod cannot start until it does).
pub const MISSING: &str = "missing";

/// Where Secret `name` is mounted.
pub fn mount_dir(name: &str) -> String {
    format!("{SECRETS_DIR}/{name}")
}

/// The `server.properties` value that makes Kafka read `r` from the mounted Secret.
pub fn file_reference(r: &SecretKeyRef) -> String {
    format!("${{{PROVIDER}:{}:{}}}", mount_dir(&r.name), r.key)
}

/// Declares Pier's config provider in a broker's file configuration, keeping providers the
/// spec declares.
pub fn add_provider(file: &mut BTreeMap<String, String>) {
    let mut providers: Vec<String> = file
        .get("config.providers")
        .map(|v| {
            v.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if !providers.iter().any(|p| p == PROVIDER) {
        providers.push(PROVIDER.into());
    }
    file.insert("config.providers".into(), providers.join(","));
    file.insert(
        format!("config.providers.{PROVIDER}.class"),
        PROVIDER_CLASS.into(),
    );
}

/// Every Secret the spec references: `configFrom` of the cluster and of each broker, SCRAM
/// users' passwords.
pub fn referenced_secrets(kc: &KafkaCluster) -> BTreeSet<String> {
    let spec = &kc.spec;
    spec.kafka
        .config_from
        .values()
        .chain(spec.brokers.iter().flat_map(|b| b.config_from.values()))
        .map(|v| v.secret_key_ref.name.clone())
        .chain(
            spec.sasl
                .scram_users
                .iter()
                .map(|u| u.password_secret_ref.name.clone()),
        )
        .collect()
}

/// A Pod volume name for Secret `name` (a DNS label, whatever the Secret's name).
fn volume_name(name: &str) -> String {
    format!("secret-{}", crate::hash::hex(name.as_bytes()))
}

/// The Secret volumes and mounts a broker whose file reads `file_from` needs: one per Secret,
/// read-only, with only the keys used.
pub fn volumes(file_from: &BTreeMap<String, SecretKeyRef>) -> Vec<(Volume, VolumeMount)> {
    let mut keys: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in file_from.values() {
        keys.entry(&r.name).or_default().insert(&r.key);
    }
    keys.into_iter()
        .map(|(name, keys)| {
            let volume = Volume {
                name: volume_name(name),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(name.to_string()),
                    items: Some(
                        keys.into_iter()
                            .map(|k| KeyToPath {
                                key: k.into(),
                                path: k.into(),
                                mode: None,
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let mount = VolumeMount {
                name: volume_name(name),
                mount_path: mount_dir(name),
                read_only: Some(true),
                ..Default::default()
            };
            (volume, mount)
        })
        .collect()
}

/// Mounts the Secrets a broker's file reads into its Pod (the `kafka` container) and records
/// their versions in [`SECRET_VERSIONS_ANNOTATION`]; nothing without any.
pub fn mount(
    pod: &mut Pod,
    file_from: &BTreeMap<String, SecretKeyRef>,
    versions: &BTreeMap<String, String>,
) {
    let Some(annotation) = versions_annotation(file_from, versions) else {
        return;
    };
    pod.annotations_mut()
        .insert(SECRET_VERSIONS_ANNOTATION.into(), annotation);
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    for (volume, mount) in volumes(file_from) {
        spec.volumes.get_or_insert_with(Vec::new).push(volume);
        if let Some(c) = spec.containers.iter_mut().find(|c| c.name == "kafka") {
            c.volume_mounts.get_or_insert_with(Vec::new).push(mount);
        }
    }
}

/// The value of [`SECRET_VERSIONS_ANNOTATION`] for a broker whose file reads `file_from`
/// (`versions`: Secret name → resourceVersion); `None` when it reads none.
pub fn versions_annotation(
    file_from: &BTreeMap<String, SecretKeyRef>,
    versions: &BTreeMap<String, String>,
) -> Option<String> {
    let names: BTreeSet<&str> = file_from.values().map(|r| r.name.as_str()).collect();
    (!names.is_empty()).then(|| {
        names
            .into_iter()
            .map(|n| format!("{n}@{}", versions.get(n).map_or(MISSING, String::as_str)))
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// Secret name → resourceVersion, from a [`SECRET_VERSIONS_ANNOTATION`] value.
pub fn parse_versions_annotation(value: &str) -> BTreeMap<String, String> {
    value
        .split(',')
        .filter_map(|e| e.rsplit_once('@'))
        .filter(|(_, v)| *v != MISSING)
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// The versions of the referenced Secrets that hold every key the spec reads from them: a
/// Secret that lost a key the file of a broker reads would give it a Pod that cannot start,
/// so it is treated as unreadable ([`versions_for_plan`] keeps the running version).
pub fn complete_versions(kc: &KafkaCluster, fetched: &Fetched) -> BTreeMap<String, String> {
    let spec = &kc.spec;
    let refs: Vec<&SecretKeyRef> = spec
        .kafka
        .config_from
        .values()
        .chain(spec.brokers.iter().flat_map(|b| b.config_from.values()))
        .map(|v| &v.secret_key_ref)
        .collect();
    fetched
        .iter()
        .filter_map(|(name, s)| {
            let s = s.as_ref().ok()?;
            refs.iter()
                .filter(|r| &r.name == name)
                .all(|r| s.data.contains_key(&r.key))
                .then(|| (name.clone(), s.version.clone()))
        })
        .collect()
}

/// The Secret versions a plan renders: those read now, and for a Secret that cannot be read,
/// the version a running broker started with (`running`: its Pods' annotations), so that a
/// deleted Secret does not restart a broker into a Pod that cannot start.
pub fn versions_for_plan<'a>(
    read: &BTreeMap<String, String>,
    running: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for annotation in running {
        for (name, version) in parse_versions_annotation(annotation) {
            out.entry(name).or_insert(version);
        }
    }
    out.extend(read.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// A Secret as the controller read it: its version and data. Values stay in memory only.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretData {
    pub version: String,
    pub data: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretData")
            .field("version", &self.version)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Every referenced Secret: its data, or why it cannot be read.
pub type Fetched = BTreeMap<String, Result<SecretData, String>>;

/// One Secret key read: `<secret>@<version>` and the value, or why it cannot be read.
pub fn read_key(fetched: &Fetched, r: &SecretKeyRef) -> Result<(String, String), String> {
    let secret = match fetched.get(&r.name) {
        Some(Ok(s)) => s,
        Some(Err(why)) => return Err(why.clone()),
        None => return Err("not read".into()),
    };
    let bytes = secret
        .data
        .get(&r.key)
        .ok_or_else(|| "the Secret has no such key".to_string())?;
    let value =
        String::from_utf8(bytes.clone()).map_err(|_| "the value is not UTF-8".to_string())?;
    Ok((format!("{}@{}", r.name, secret.version), value))
}

/// `status.appliedSecrets` key of a cluster-wide key set live on the cluster default.
pub fn applied_cluster(key: &str) -> String {
    format!("cluster/{key}")
}

/// `status.appliedSecrets` key of a key set live on broker `id`.
pub fn applied_broker(id: i32, key: &str) -> String {
    format!("broker/{id}/{key}")
}

/// `status.appliedSecrets` key of a SCRAM user.
pub fn applied_scram(user: &str) -> String {
    format!("scram/{user}")
}

/// The SCRAM users Pier manages according to `status.appliedSecrets`.
pub fn managed_scram_users(applied: &BTreeMap<String, String>) -> BTreeSet<String> {
    applied
        .keys()
        .filter_map(|k| k.strip_prefix("scram/"))
        .map(str::to_string)
        .collect()
}

/// One config resource's live configuration with its Secret values resolved. Its `Debug`
/// shows keys, never values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LiveDesired {
    /// Every key to set, inline values and Secret values.
    pub values: BTreeMap<String, String>,
    /// Keys to set even when the diff sees no difference: their Secret's version differs from
    /// the one last applied (Kafka does not reveal sensitive values to compare).
    pub reapply: BTreeSet<String>,
    /// Keys whose Secret cannot be read: left as they are live, never deleted.
    pub keep: BTreeSet<String>,
    /// `status.appliedSecrets` entries to record once applied: what → `<secret>@<version>`.
    pub versions: BTreeMap<String, String>,
    /// Keys of `values` read from Secrets.
    pub from_secrets: BTreeSet<String>,
}

impl LiveDesired {
    /// `message` (a Kafka error, say) with every value read from a Secret hidden.
    pub fn scrub(&self, message: &str) -> String {
        let mut out = message.to_string();
        for key in &self.from_secrets {
            if let Some(v) = self.values.get(key).filter(|v| !v.is_empty()) {
                out = out.replace(v.as_str(), "[hidden]");
            }
        }
        out
    }
}

impl std::fmt::Debug for LiveDesired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveDesired")
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .field("reapply", &self.reapply)
            .field("keep", &self.keep)
            .field("versions", &self.versions)
            .finish()
    }
}

/// Resolves one resource's live configuration: `inline` as is, `from` read from `fetched`.
/// `what` names a key's `status.appliedSecrets` entry, `label` a key in notices.
pub fn resolve(
    inline: &BTreeMap<String, String>,
    from: &BTreeMap<String, SecretKeyRef>,
    fetched: &Fetched,
    applied: &BTreeMap<String, String>,
    what: impl Fn(&str) -> String,
    label: impl Fn(&str) -> String,
) -> (LiveDesired, Vec<Notice>) {
    let mut out = LiveDesired {
        values: inline.clone(),
        ..Default::default()
    };
    let mut notices = Vec::new();
    for (key, r) in from {
        match read_key(fetched, r) {
            Ok((version, value)) => {
                out.values.insert(key.clone(), value);
                out.from_secrets.insert(key.clone());
                let what = what(key);
                if applied.get(&what) != Some(&version) {
                    out.reapply.insert(key.clone());
                }
                out.versions.insert(what, version);
            }
            Err(why) => {
                out.values.remove(key);
                out.keep.insert(key.clone());
                notices.push(Notice::SecretUnavailable {
                    what: label(key),
                    secret: r.name.clone(),
                    key: r.key.clone(),
                    why,
                });
            }
        }
    }
    (out, notices)
}

/// The changes that make one resource's live configuration `desired`: the plain diff
/// ([`config_changes`], or [`cluster_default_changes`] for the cluster default) without
/// deleting a key whose Secret cannot be read, plus a set of every key whose Secret changed
/// since it was last applied.
pub fn live_changes(
    desired: &LiveDesired,
    current: &BTreeMap<String, Option<String>>,
    cluster_default: bool,
) -> Vec<ConfigChange> {
    let diff = if cluster_default {
        cluster_default_changes(&desired.values, current)
    } else {
        config_changes(&desired.values, current)
    };
    let mut changes: Vec<ConfigChange> = diff
        .into_iter()
        .filter(|c| !matches!(c, ConfigChange::Delete { key } if desired.keep.contains(key)))
        .collect();
    for key in &desired.reapply {
        let set = changes
            .iter()
            .any(|c| matches!(c, ConfigChange::Set { key: k, .. } if k == key));
        if let (false, Some(value)) = (set, desired.values.get(key)) {
            changes.push(ConfigChange::Set {
                key: key.clone(),
                value: value.clone(),
            });
        }
    }
    changes
}

/// Notices for every Secret key the plan reads that cannot be read. A live key is left as it
/// is; a broker's Pod whose file reads one cannot start until it can (a running broker is not
/// restarted for it).
pub fn notices(kc: &KafkaCluster, plan: &ConfigPlan, fetched: &Fetched) -> Vec<Notice> {
    let mut out = BTreeSet::new();
    for u in &kc.spec.sasl.scram_users {
        if let Err(why) = read_key(fetched, &u.password_secret_ref) {
            out.insert(Notice::SecretUnavailable {
                what: format!("SCRAM user {}", u.name),
                secret: u.password_secret_ref.name.clone(),
                key: u.password_secret_ref.key.clone(),
                why,
            });
        }
    }
    for (key, r) in &plan.cluster_default_from {
        if let Err(why) = read_key(fetched, r) {
            out.insert(Notice::SecretUnavailable {
                what: format!("cluster-wide key {key}"),
                secret: r.name.clone(),
                key: r.key.clone(),
                why,
            });
        }
    }
    for (id, b) in &plan.brokers {
        for (key, r) in &b.live_from {
            if let Err(why) = read_key(fetched, r) {
                out.insert(Notice::SecretUnavailable {
                    what: format!("broker {id} key {key}"),
                    secret: r.name.clone(),
                    key: r.key.clone(),
                    why,
                });
            }
        }
        for (key, r) in &b.file_from {
            if let Err(why) = read_key(fetched, r) {
                out.insert(Notice::SecretUnavailable {
                    what: format!("broker {id} server.properties key {key}"),
                    secret: r.name.clone(),
                    key: r.key.clone(),
                    why,
                });
            }
        }
    }
    out.into_iter().collect()
}

/// What to do with one SCRAM user's SCRAM-SHA-512 credential. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub enum ScramStep {
    /// Create or replace it with the password read from the Secret at `version`
    /// (`<secret>@<resourceVersion>`, recorded once done).
    Upsert {
        user: String,
        version: String,
        password: String,
    },
    /// Delete it: the user left the spec, and Pier created it.
    Delete { user: String },
}

impl std::fmt::Debug for ScramStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScramStep::Upsert { user, version, .. } => f
                .debug_struct("Upsert")
                .field("user", user)
                .field("version", version)
                .finish(),
            ScramStep::Delete { user } => f.debug_struct("Delete").field("user", user).finish(),
        }
    }
}

/// The SCRAM steps that make Kafka's credentials what `spec.sasl.scramUsers` says: a user's
/// credential is (re)set when its Secret's version differs from the one applied
/// (`status.appliedSecrets["scram/<user>"]`) or Kafka lacks it (`in_kafka`: the spec's users
/// that have a SCRAM-SHA-512 credential, `None` when Kafka could not say); a user Pier manages
/// (an `appliedSecrets` entry) and the spec no longer lists is deleted. Users others created
/// are never touched. A password that cannot be read leaves its user as it is.
pub fn scram_steps(
    kc: &KafkaCluster,
    fetched: &Fetched,
    applied: &BTreeMap<String, String>,
    in_kafka: Option<&BTreeSet<String>>,
) -> Vec<ScramStep> {
    let users = &kc.spec.sasl.scram_users;
    let mut steps = Vec::new();
    for u in users {
        let Ok((version, password)) = read_key(fetched, &u.password_secret_ref) else {
            continue;
        };
        let changed = applied.get(&applied_scram(&u.name)) != Some(&version);
        let missing = in_kafka.is_some_and(|k| !k.contains(&u.name));
        if changed || missing {
            steps.push(ScramStep::Upsert {
                user: u.name.clone(),
                version,
                password,
            });
        }
    }
    let listed: BTreeSet<&str> = users.iter().map(|u| u.name.as_str()).collect();
    for user in managed_scram_users(applied) {
        if !listed.contains(user.as_str()) {
            steps.push(ScramStep::Delete { user });
        }
    }
    steps
}

/// Every `status.appliedSecrets` key the plan sets live from a Secret.
pub fn live_whats(plan: &ConfigPlan) -> BTreeSet<String> {
    plan.cluster_default_from
        .keys()
        .map(|k| applied_cluster(k))
        .chain(plan.brokers.iter().flat_map(|(id, b)| {
            b.live_from
                .keys()
                .map(move |k| applied_broker(*id, k))
                .collect::<Vec<_>>()
        }))
        .collect()
}

/// `status.appliedSecrets` after a reconcile: the versions applied now, the prior entries of
/// what is still wanted but was not applied now (a broker not reachable, a refused change),
/// nothing of what is no longer wanted.
pub fn applied_after(
    prior: &BTreeMap<String, String>,
    wanted: &BTreeSet<String>,
    applied_now: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = prior
        .iter()
        .filter(|(k, _)| wanted.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.extend(applied_now.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConfigValueFrom, KafkaSpec, Role, SaslSpec, ScramUser};
    use crate::reconcile::config::plan_config;
    use crate::reconcile::effective_brokers;
    use crate::reconcile::tests::{broker, cluster, map};

    fn r(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: name.into(),
            key: key.into(),
        }
    }

    fn from(pairs: &[(&str, &str, &str)]) -> BTreeMap<String, ConfigValueFrom> {
        pairs
            .iter()
            .map(|(k, s, key)| {
                (
                    k.to_string(),
                    ConfigValueFrom {
                        secret_key_ref: r(s, key),
                    },
                )
            })
            .collect()
    }

    type Entry<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

    fn fetched(entries: &[Entry<'_>]) -> Fetched {
        entries
            .iter()
            .map(|(name, version, data)| {
                (
                    name.to_string(),
                    Ok(SecretData {
                        version: version.to_string(),
                        data: data
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                            .collect(),
                    }),
                )
            })
            .collect()
    }

    #[test]
    fn secret_keys_are_classified_like_the_others_and_the_brokers_own_win() {
        let kafka = KafkaSpec {
            cluster_wide_config: map(&[("log.cleaner.threads", "1")]),
            config_from: from(&[
                ("log.cleaner.threads", "s", "threads"), // cluster-wide: wins over the inline one
                ("num.partitions", "s", "partitions"),   // read-only: file reference
                ("listener.name.internal.ssl.keystore.password", "tls", "pw"), // per-broker
                ("com.example.plugin.password", "s", "plugin"), // unknown: file, said so
            ]),
            ..Default::default()
        };
        let mut b1 = broker(1, &[Role::Broker, Role::Controller]);
        b1.config_from = from(&[("num.partitions", "own", "n")]);
        b1.config = map(&[("listener.name.internal.ssl.keystore.password", "inline")]);
        let controller = broker(9, &[Role::Controller]);
        let kc = cluster(kafka, vec![b1, broker(2, &[Role::Broker]), controller]);
        let plan = plan_config(&kc, &effective_brokers(&kc).unwrap());

        assert!(plan.cluster_default.is_empty());
        assert_eq!(
            plan.cluster_default_from,
            BTreeMap::from([("log.cleaner.threads".to_string(), r("s", "threads"))])
        );
        let one = &plan.brokers[&1];
        assert_eq!(
            one.file["num.partitions"],
            "${pierdir:/etc/pier-secrets/own:n}"
        );
        assert_eq!(one.file_from["num.partitions"], r("own", "n"));
        // The broker's inline value of the per-broker key wins over the cluster's Secret.
        assert_eq!(
            one.live["listener.name.internal.ssl.keystore.password"],
            "inline"
        );
        assert!(one.live_from.is_empty());
        let two = &plan.brokers[&2];
        assert_eq!(
            two.live_from,
            BTreeMap::from([(
                "listener.name.internal.ssl.keystore.password".to_string(),
                r("tls", "pw")
            )])
        );
        assert_eq!(
            two.file["num.partitions"],
            "${pierdir:/etc/pier-secrets/s:partitions}"
        );
        assert_eq!(two.file["config.providers"], "pierdir");
        assert_eq!(two.file["config.providers.pierdir.class"], PROVIDER_CLASS);
        // A controller-only node reads the per-broker key from its file.
        let nine = &plan.brokers[&9];
        assert_eq!(
            nine.file["listener.name.internal.ssl.keystore.password"],
            "${pierdir:/etc/pier-secrets/tls:pw}"
        );
        assert!(nine.live_from.is_empty() && nine.live.is_empty());
        assert!(
            plan.notices.contains(&Notice::Unknown {
                key: "com.example.plugin.password".into()
            }),
            "{:?}",
            plan.notices
        );
        assert_eq!(live_whats(&plan).len(), 2);
        assert!(
            live_whats(&plan).contains("broker/2/listener.name.internal.ssl.keystore.password")
        );
        assert!(live_whats(&plan).contains("cluster/log.cleaner.threads"));
    }

    #[test]
    fn no_secret_no_provider_and_the_specs_own_providers_are_kept() {
        let kc = cluster(
            KafkaSpec {
                read_only_config: map(&[("num.partitions", "3")]),
                ..Default::default()
            },
            vec![broker(1, &[Role::Broker, Role::Controller])],
        );
        let plan = plan_config(&kc, &effective_brokers(&kc).unwrap());
        assert!(!plan.brokers[&1].file.contains_key("config.providers"));

        let mut file = map(&[("config.providers", "env, file")]);
        add_provider(&mut file);
        assert_eq!(file["config.providers"], "env,file,pierdir");
        add_provider(&mut file);
        assert_eq!(file["config.providers"], "env,file,pierdir");
    }

    #[test]
    fn the_rendered_properties_hold_references_never_values() {
        let mut kc = cluster(
            KafkaSpec {
                config_from: from(&[("num.partitions", "s", "k")]),
                ..Default::default()
            },
            vec![broker(1, &[Role::Broker, Role::Controller])],
        );
        kc.spec.brokers[0].storage = vec![crate::api::StorageSpec {
            mount_path: "/data".into(),
            size: "1Gi".into(),
            ..Default::default()
        }];
        let observed = crate::reconcile::Observed {
            cluster_id: Some("id".into()),
            external_address: Some("203.0.113.7".into()),
            secret_versions: BTreeMap::from([("s".to_string(), "42".to_string())]),
            ..Default::default()
        };
        let d = crate::reconcile::plan(&kc, &observed, &Default::default()).unwrap();
        let props = &d
            .config_maps
            .iter()
            .find(|c| {
                c.metadata
                    .name
                    .as_deref()
                    .unwrap()
                    .ends_with("-broker-1-config")
            })
            .unwrap()
            .data
            .as_ref()
            .unwrap()["server.properties"];
        assert!(props.contains("num.partitions=${pierdir:/etc/pier-secrets/s:k}\n"));
        assert!(props.contains("config.providers=pierdir\n"));
        let pod = &d.pods[0];
        let spec = pod.spec.as_ref().unwrap();
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.secret.is_some())
            .unwrap();
        let source = volume.secret.as_ref().unwrap();
        assert_eq!(source.secret_name.as_deref(), Some("s"));
        assert_eq!(source.items.as_ref().unwrap()[0].key, "k");
        let mount = spec.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume.name)
            .unwrap();
        assert_eq!(mount.mount_path, "/etc/pier-secrets/s");
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(
            pod.metadata.annotations.as_ref().unwrap()[SECRET_VERSIONS_ANNOTATION],
            "s@42"
        );

        // A new version of the Secret restarts the broker; an unrelated one does not.
        let hash = |versions: &[(&str, &str)]| {
            let observed = crate::reconcile::Observed {
                secret_versions: versions
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..observed.clone()
            };
            let d = crate::reconcile::plan(&kc, &observed, &Default::default()).unwrap();
            d.pods[0].metadata.annotations.as_ref().unwrap()
                [crate::reconcile::names::RESTART_HASH_ANNOTATION]
                .clone()
        };
        assert_eq!(hash(&[("s", "42")]), hash(&[("s", "42"), ("other", "1")]));
        assert_ne!(hash(&[("s", "42")]), hash(&[("s", "43")]));
    }

    #[test]
    fn a_cluster_without_secrets_renders_as_before() {
        let mut kc = cluster(
            KafkaSpec::default(),
            vec![broker(1, &[Role::Broker, Role::Controller])],
        );
        kc.spec.brokers[0].storage = vec![crate::api::StorageSpec {
            mount_path: "/data".into(),
            size: "1Gi".into(),
            ..Default::default()
        }];
        let observed = crate::reconcile::Observed {
            cluster_id: Some("id".into()),
            external_address: Some("203.0.113.7".into()),
            ..Default::default()
        };
        let d = crate::reconcile::plan(&kc, &observed, &Default::default()).unwrap();
        let pod = &d.pods[0];
        assert!(
            !pod.metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key(SECRET_VERSIONS_ANNOTATION)
        );
        assert!(
            pod.spec
                .as_ref()
                .unwrap()
                .volumes
                .iter()
                .flatten()
                .all(|v| v.secret.is_none())
        );
    }

    #[test]
    fn versions_of_unreadable_secrets_come_from_the_running_pods() {
        let read = map(&[("a", "5")]);
        let v = versions_for_plan(&read, ["a@4,b@7", "b@6,c@missing"]);
        assert_eq!(v, map(&[("a", "5"), ("b", "7")]));
        let file_from = BTreeMap::from([
            ("x".to_string(), r("b", "k")),
            ("y".to_string(), r("c", "k")),
            ("z".to_string(), r("b", "j")),
        ]);
        assert_eq!(
            versions_annotation(&file_from, &v).as_deref(),
            Some("b@7,c@missing")
        );
        assert_eq!(versions_annotation(&BTreeMap::new(), &v), None);
    }

    #[test]
    fn a_secret_missing_a_key_the_spec_reads_keeps_the_running_version() {
        let kc = cluster(
            KafkaSpec {
                config_from: from(&[("num.partitions", "s", "k"), ("x", "t", "k")]),
                ..Default::default()
            },
            vec![broker(1, &[Role::Broker, Role::Controller])],
        );
        let mut f = fetched(&[("s", "5", &[("other", "1")]), ("t", "6", &[("k", "1")])]);
        f.insert("u".into(), Err("no such Secret".into()));
        let read = complete_versions(&kc, &f);
        assert_eq!(read, map(&[("t", "6")]));
        assert_eq!(
            versions_for_plan(&read, ["s@4"]),
            map(&[("s", "4"), ("t", "6")])
        );
    }

    #[test]
    fn volume_names_are_dns_labels_whatever_the_secret_name() {
        let long = "a".repeat(253);
        let file_from = BTreeMap::from([
            ("x".to_string(), r(&long, "k")),
            ("y".to_string(), r("my.secret", "k2")),
            ("z".to_string(), r("my.secret", "k1")),
        ]);
        let v = volumes(&file_from);
        assert_eq!(v.len(), 2);
        for (volume, mount) in &v {
            assert!(volume.name.len() <= 63 && !volume.name.contains('.'));
            assert_eq!(volume.name, mount.name);
        }
        let keys: Vec<_> = v[1]
            .0
            .secret
            .as_ref()
            .unwrap()
            .items
            .as_ref()
            .unwrap()
            .iter()
            .map(|i| i.key.as_str())
            .collect();
        assert_eq!(keys, ["k1", "k2"]);
    }

    #[test]
    fn secret_values_resolve_and_are_set_again_when_the_secret_changes() {
        let inline = map(&[("a", "1")]);
        let from_refs = BTreeMap::from([
            ("pw".to_string(), r("s", "pw")),
            ("gone".to_string(), r("missing", "k")),
            ("nokey".to_string(), r("s", "nope")),
        ]);
        let mut f = fetched(&[("s", "7", &[("pw", "hunter2")])]);
        f.insert("missing".into(), Err("not found".into()));
        let applied = map(&[("cluster/pw", "s@6")]);
        let (d, notices) = resolve(&inline, &from_refs, &f, &applied, applied_cluster, |k| {
            format!("key {k}")
        });
        assert_eq!(d.values, map(&[("a", "1"), ("pw", "hunter2")]));
        assert_eq!(d.reapply, BTreeSet::from(["pw".to_string()]));
        assert_eq!(
            d.keep,
            BTreeSet::from(["gone".to_string(), "nokey".to_string()])
        );
        assert_eq!(d.versions, map(&[("cluster/pw", "s@7")]));
        assert_eq!(notices.len(), 2);
        let text: Vec<String> = notices.iter().map(|n| n.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("\"missing\"") && t.contains("not found"))
        );
        assert!(
            text.iter()
                .any(|t| t.contains("\"nope\"") && t.contains("no such key"))
        );
        assert!(
            !format!("{d:?}").contains("hunter2"),
            "Debug never shows values"
        );
        assert_eq!(
            d.scrub("Invalid value hunter2 for pw"),
            "Invalid value [hidden] for pw"
        );

        // Kafka hides the sensitive value: the diff sees nothing, the new version sets it.
        let current: BTreeMap<String, Option<String>> = [
            ("a", Some("1")),
            ("pw", None),
            ("gone", None),
            ("nokey", Some("x")),
            ("old", Some("1")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect();
        assert_eq!(
            live_changes(&d, &current, false),
            vec![
                ConfigChange::Delete { key: "old".into() },
                ConfigChange::Set {
                    key: "pw".into(),
                    value: "hunter2".into()
                },
            ]
        );
        // Applied at this version: nothing more to do.
        let (d, _) = resolve(
            &inline,
            &from_refs,
            &f,
            &map(&[("cluster/pw", "s@7")]),
            applied_cluster,
            |k| k.to_string(),
        );
        assert!(d.reapply.is_empty());
        let current: BTreeMap<String, Option<String>> =
            current.into_iter().filter(|(k, _)| k != "old").collect();
        assert!(live_changes(&d, &current, true).is_empty());
        // A value Kafka reveals and that differs is set by the diff, once.
        let current = BTreeMap::from([("pw".to_string(), Some("other".to_string()))]);
        let (d, _) = resolve(
            &BTreeMap::new(),
            &from_refs,
            &f,
            &BTreeMap::new(),
            applied_cluster,
            |k| k.to_string(),
        );
        assert_eq!(live_changes(&d, &current, false).len(), 1);
    }

    #[test]
    fn values_that_are_not_utf8_are_unavailable() {
        let mut f: Fetched = BTreeMap::new();
        f.insert(
            "s".into(),
            Ok(SecretData {
                version: "1".into(),
                data: BTreeMap::from([("k".to_string(), vec![0xff, 0xfe])]),
            }),
        );
        assert_eq!(
            read_key(&f, &r("s", "k")).unwrap_err(),
            "the value is not UTF-8"
        );
        assert_eq!(read_key(&f, &r("t", "k")).unwrap_err(), "not read");
    }

    #[test]
    fn applied_entries_carry_over_until_their_key_leaves_the_spec() {
        let prior = map(&[
            ("cluster/a", "s@1"),
            ("broker/1/b", "s@1"),
            ("cluster/gone", "s@1"),
            ("scram/alice", "p@3"),
        ]);
        let wanted = BTreeSet::from([
            "cluster/a".to_string(),
            "broker/1/b".to_string(),
            "scram/alice".to_string(),
        ]);
        let now = map(&[("cluster/a", "s@2")]);
        assert_eq!(
            applied_after(&prior, &wanted, &now),
            map(&[
                ("broker/1/b", "s@1"),
                ("cluster/a", "s@2"),
                ("scram/alice", "p@3")
            ])
        );
        assert_eq!(
            managed_scram_users(&prior),
            BTreeSet::from(["alice".to_string()])
        );
    }

    #[test]
    fn scram_credentials_follow_their_secrets_and_only_piers_users_are_deleted() {
        let mut kc = cluster(
            KafkaSpec::default(),
            vec![broker(1, &[Role::Broker, Role::Controller])],
        );
        let user = |name: &str, secret: &str| ScramUser {
            name: name.into(),
            password_secret_ref: r(secret, "password"),
        };
        kc.spec.sasl = SaslSpec {
            scram_users: vec![
                user("alice", "alice-pw"),
                user("bob", "bob-pw"),
                user("carol", "gone"),
            ],
        };
        let f = fetched(&[
            ("alice-pw", "3", &[("password", "a-secret")]),
            ("bob-pw", "9", &[("password", "b-secret")]),
        ]);
        let applied = map(&[
            ("scram/alice", "alice-pw@3"),
            ("scram/bob", "bob-pw@8"),
            ("scram/dave", "dave-pw@1"),
            ("cluster/x", "s@1"),
        ]);
        let in_kafka = BTreeSet::from(["alice".to_string(), "bob".to_string()]);
        let steps = scram_steps(&kc, &f, &applied, Some(&in_kafka));
        assert_eq!(
            steps,
            vec![
                ScramStep::Upsert {
                    user: "bob".into(),
                    version: "bob-pw@9".into(),
                    password: "b-secret".into()
                },
                ScramStep::Delete {
                    user: "dave".into()
                },
            ]
        );
        assert!(!format!("{steps:?}").contains("b-secret"));
        // Kafka lost alice's credential (or never had it): set again, same version.
        let steps = scram_steps(&kc, &f, &applied, Some(&BTreeSet::new()));
        assert!(
            steps
                .iter()
                .any(|s| matches!(s, ScramStep::Upsert { user, .. } if user == "alice"))
        );
        // Kafka could not say: versions decide.
        let steps = scram_steps(&kc, &f, &applied, None);
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s, ScramStep::Upsert { user, .. } if user == "alice"))
        );
        // An unreadable password is a notice; its user is left alone, never deleted.
        let plan = plan_config(&kc, &effective_brokers(&kc).unwrap());
        let n = notices(&kc, &plan, &f);
        assert_eq!(n.len(), 1);
        assert!(
            n[0].to_string()
                .starts_with("SCRAM user carol: Secret \"gone\"")
        );
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s, ScramStep::Delete { user } if user == "carol"))
        );
    }

    #[test]
    fn every_referenced_secret_is_read() {
        let mut b = broker(1, &[Role::Broker, Role::Controller]);
        b.config_from = from(&[("x", "own", "k")]);
        let mut kc = cluster(
            KafkaSpec {
                config_from: from(&[("y", "shared", "k"), ("z", "shared", "j")]),
                ..Default::default()
            },
            vec![b],
        );
        kc.spec.sasl = SaslSpec {
            scram_users: vec![ScramUser {
                name: "alice".into(),
                password_secret_ref: r("alice-pw", "password"),
            }],
        };
        assert_eq!(
            referenced_secrets(&kc),
            BTreeSet::from(["alice-pw".into(), "own".into(), "shared".into()])
        );
    }

    #[test]
    fn unreadable_secrets_are_notices() {
        let kc = cluster(
            KafkaSpec {
                config_from: from(&[("num.partitions", "s", "k")]),
                ..Default::default()
            },
            vec![broker(1, &[Role::Broker, Role::Controller])],
        );
        let plan = plan_config(&kc, &effective_brokers(&kc).unwrap());
        assert!(notices(&kc, &plan, &fetched(&[("s", "1", &[("k", "3")])])).is_empty());
        let n = notices(&kc, &plan, &fetched(&[("s", "1", &[])]));
        assert_eq!(n.len(), 1);
        assert!(
            n[0].to_string()
                .contains("broker 1 server.properties key num.partitions")
        );
        let kc = cluster(
            KafkaSpec {
                config_from: from(&[("log.cleaner.threads", "gone", "k")]),
                ..Default::default()
            },
            vec![broker(1, &[Role::Broker, Role::Controller])],
        );
        let plan = plan_config(&kc, &effective_brokers(&kc).unwrap());
        let n = notices(&kc, &plan, &BTreeMap::new());
        assert_eq!(
            n[0].to_string(),
            "cluster-wide key log.cleaner.threads: Secret \"gone\" key \"k\" cannot be read (not read); left as it is until it can"
        );
    }
}
