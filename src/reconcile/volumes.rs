//! A broker's volumes (JBOD) over time: which claim backs which mount path, where the KRaft
//! metadata log lives, and what removing or adding a volume takes.
//!
//! - Claims are keyed by mount path, never by position: an existing claim keeps its name (the
//!   `kafka.pier.dev/mount-path` annotation says which volume it is), a new volume gets the
//!   lowest `…-data-<n>` name no claim of the broker has (so a fresh cluster's names are
//!   `data-0`, `data-1`, … as they always were).
//! - The metadata log stays where it is: the dir the broker's ConfigMap says
//!   (`metadata.log.dir`, else the first of `log.dirs`, which is where Kafka put it), written
//!   explicitly. Removing its volume is refused and the volume stays.
//! - A volume that left the spec stays mounted and in `log.dirs` until DescribeLogDirs shows
//!   its dir empty ([`plan_removal`] moves the replicas out with AlterReplicaLogDirs); only then
//!   does the plan drop it, which makes the broker's restart due.
//! - A volume added to a running broker gets new partitions by itself (Kafka puts a new replica
//!   in the dir with the fewest); with `spec.rebalance.onBrokerAdd` [`plan_spread`] moves
//!   replicas onto it once.
use std::collections::{BTreeMap, BTreeSet};

use crate::api::{KafkaCluster, VolumeRemovalStatus};
use crate::kafka::{LogDir, METADATA_TOPIC, plan_log_dir_moves};

use super::broker::EffectiveBroker;
use super::names;

/// The subdirectory of a volume that is the Kafka log dir (a fresh volume may hold
/// `lost+found`).
const LOG_SUBDIR: &str = "/kafka";

/// The log dir on a volume mounted at `mount_path`.
pub fn log_dir(mount_path: &str) -> String {
    format!("{}{LOG_SUBDIR}", mount_path.trim_end_matches('/'))
}

/// The mount path of a log dir Pier configured.
pub fn mount_of(dir: &str) -> &str {
    dir.strip_suffix(LOG_SUBDIR).unwrap_or(dir)
}

/// What the controller observed of one broker's volumes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedVolumes {
    /// The broker's claims: mount path → claim name.
    pub claims: BTreeMap<String, String>,
    /// `log.dirs` of the broker's ConfigMap, in order (the dirs in use).
    pub log_dirs: Vec<String>,
    /// Where the metadata log is: the ConfigMap's `metadata.log.dir`, else its first log dir.
    pub metadata_dir: Option<String>,
    /// Leaving dirs DescribeLogDirs showed empty in this reconcile.
    pub emptied: BTreeSet<String>,
}

impl ObservedVolumes {
    /// Reads `log.dirs` and the metadata dir from a rendered `server.properties`.
    pub fn read_properties(&mut self, text: &str) {
        let mut metadata = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("log.dirs=") {
                self.log_dirs = v
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(String::from)
                    .collect();
            } else if let Some(v) = line.strip_prefix("metadata.log.dir=") {
                metadata = Some(v.to_string());
            }
        }
        self.metadata_dir = metadata.or_else(|| self.log_dirs.first().cloned());
    }
}

/// One volume mounted in a broker's Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_path: String,
    pub claim: String,
    /// The volume's name in the Pod.
    pub volume: String,
    /// Left the spec; mounted until its dir is empty.
    pub leaving: bool,
}

/// Where a broker's volumes go.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    /// In `log.dirs` order.
    pub mounts: Vec<Mount>,
    /// The metadata log dir.
    pub metadata_dir: String,
    /// Why a removal is refused (the volume holding the metadata log left the spec).
    pub refused: Option<String>,
}

/// What the Kafka side of volumes found in one reconcile, for the status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeOutcome {
    /// Brokers whose leaving volumes are not empty yet.
    pub removals: BTreeMap<i32, VolumeRemovalStatus>,
    /// The log dirs each broker answered for is known to have (configured paths).
    pub known_log_dirs: BTreeMap<i32, Vec<String>>,
}

/// The Pod volume name of a claim of broker `id`: the claim's name without the broker prefix
/// (`data-0` for `<cluster>-broker-<id>-data-0`).
fn volume_name(kc: &KafkaCluster, id: i32, claim: &str) -> String {
    let prefix = format!("{}-", names::broker_pod(kc, id));
    let name = claim.strip_prefix(&prefix).unwrap_or(claim);
    name.chars().take(63).collect()
}

/// Where broker `b`'s volumes go, from its spec and what exists (`None`: nothing yet).
pub fn layout(
    kc: &KafkaCluster,
    b: &EffectiveBroker,
    observed: Option<&ObservedVolumes>,
) -> Layout {
    let empty = ObservedVolumes::default();
    let o = observed.unwrap_or(&empty);
    let spec: Vec<&str> = b
        .storage
        .iter()
        .map(|s| s.mount_path.trim_end_matches('/'))
        .collect();
    let claim_of = |m: &str| -> Option<&String> {
        o.claims
            .iter()
            .find(|(path, _)| path.trim_end_matches('/') == m)
            .map(|(_, c)| c)
    };
    // Claim names: existing ones kept, new ones the lowest free index.
    let mut taken: BTreeSet<String> = o.claims.values().cloned().collect();
    let mut claims: BTreeMap<&str, String> = BTreeMap::new();
    for m in &spec {
        if let Some(c) = claim_of(m) {
            claims.insert(m, c.clone());
        }
    }
    let mut next = 0usize;
    for m in &spec {
        if claims.contains_key(m) {
            continue;
        }
        let name = loop {
            let n = names::broker_claim(kc, b.id, next);
            next += 1;
            if !taken.contains(&n) {
                break n;
            }
        };
        taken.insert(name.clone());
        claims.insert(m, name);
    }
    let metadata_in_use = o
        .metadata_dir
        .as_deref()
        .filter(|d| o.log_dirs.iter().any(|l| l == d));
    // Dirs in use that left the spec stay while they may hold data, and the metadata one stays.
    let mut refused = None;
    let mut kept: Vec<&str> = Vec::new();
    for d in &o.log_dirs {
        let m = mount_of(d).trim_end_matches('/');
        if spec.contains(&m) {
            continue;
        }
        let metadata = metadata_in_use == Some(d.as_str());
        if metadata {
            refused = Some(format!(
                "broker {}: volume {m} holds the KRaft metadata log (metadata.log.dir={d}); it \
                 cannot be removed, so it stays mounted",
                b.id
            ));
        }
        if (metadata || !o.emptied.contains(d)) && claim_of(m).is_some() {
            kept.push(m);
        }
    }
    // The order in use first (an unchanged broker renders the same), then new volumes.
    let mut order: Vec<&str> = o
        .log_dirs
        .iter()
        .map(|d| mount_of(d).trim_end_matches('/'))
        .filter(|m| spec.contains(m) || kept.contains(m))
        .collect();
    for m in &spec {
        if !order.contains(m) {
            order.push(m);
        }
    }
    let mounts: Vec<Mount> = order
        .iter()
        .filter_map(|m| {
            let leaving = !spec.contains(m);
            let claim = if leaving {
                claim_of(m)?.clone()
            } else {
                claims.get(m)?.clone()
            };
            // The spec's spelling of the mount path (a trailing slash kept as written).
            let mount_path = b
                .storage
                .iter()
                .find(|s| s.mount_path.trim_end_matches('/') == *m)
                .map_or_else(|| m.to_string(), |s| s.mount_path.clone());
            Some(Mount {
                volume: volume_name(kc, b.id, &claim),
                mount_path,
                claim,
                leaving,
            })
        })
        .collect();
    let metadata_dir = metadata_in_use
        .map(String::from)
        .or_else(|| mounts.first().map(|m| log_dir(&m.mount_path)))
        .unwrap_or_default();
    Layout {
        mounts,
        metadata_dir,
        refused,
    }
}

/// Whether `reported` (a path as the broker reports it) is the log dir Pier configured as
/// `configured`: the same, or the same under another root (a broker that sees its container's
/// filesystem under a prefix, as the local test environment's do).
pub fn same_dir(reported: &str, configured: &str) -> bool {
    let (r, c) = (
        reported.trim_end_matches('/'),
        configured.trim_end_matches('/'),
    );
    r == c || (c.starts_with('/') && r.ends_with(c))
}

/// The reported dir of each configured one (exact matches first, then the longest suffix).
pub fn reported_dirs<'a>(dirs: &'a [LogDir], configured: &[String]) -> BTreeMap<String, &'a str> {
    let mut out = BTreeMap::new();
    for c in configured {
        let exact = dirs
            .iter()
            .find(|d| d.path.trim_end_matches('/') == c.trim_end_matches('/'));
        let found = exact.or_else(|| dirs.iter().find(|d| same_dir(&d.path, c)));
        if let Some(d) = found {
            out.insert(c.clone(), d.path.as_str());
        }
    }
    out
}

/// What emptying a broker's leaving dirs takes next.
#[derive(Debug, Clone, PartialEq)]
pub enum RemovalStep {
    /// Nothing is left in them: the broker may restart without them.
    Empty,
    /// Replicas are still there: these moves (as AlterReplicaLogDirs takes them:
    /// destination as the broker reports it, topic, partition) empty them; asking again for a
    /// running copy does not restart it.
    Move {
        moves: Vec<(String, String, i32)>,
        /// How many of them start a copy (the others are running already).
        started: usize,
        status: VolumeRemovalStatus,
    },
    /// They cannot be emptied (e.g. no room left); the volumes stay.
    Failed { status: VolumeRemovalStatus },
}

/// The next step of emptying `leaving` (configured log dirs) of a broker that reports `dirs`.
/// A leaving dir the broker does not report holds nothing of it.
pub fn plan_removal(dirs: &[LogDir], leaving: &[String]) -> RemovalStep {
    let reported = reported_dirs(dirs, leaving);
    let leaving_reported: Vec<String> = reported.values().map(|p| p.to_string()).collect();
    let (mut partitions, mut bytes) = (0i32, 0i64);
    for d in dirs.iter().filter(|d| leaving_reported.contains(&d.path)) {
        partitions += i32::try_from(d.replicas.len()).unwrap_or(i32::MAX);
        bytes += d.replicas.iter().map(|r| r.size.max(0)).sum::<i64>();
    }
    let mut status = VolumeRemovalStatus {
        dirs: leaving.to_vec(),
        partitions_left: partitions,
        bytes_left: bytes,
        message: None,
    };
    if crate::kafka::dirs_empty(dirs, &leaving_reported) {
        return RemovalStep::Empty;
    }
    match plan_log_dir_moves(dirs, &leaving_reported) {
        Ok(plan) => {
            let running: BTreeSet<(&str, &str, i32)> = dirs
                .iter()
                .flat_map(|d| {
                    d.replicas
                        .iter()
                        .filter(|r| r.future)
                        .map(|r| (d.path.as_str(), r.topic.as_str(), r.partition))
                })
                .collect();
            let moves = plan.requests();
            let started = moves
                .iter()
                .filter(|(dest, t, p)| !running.contains(&(dest.as_str(), t.as_str(), *p)))
                .count();
            RemovalStep::Move {
                moves,
                started,
                status,
            }
        }
        Err(why) => {
            status.message = Some(why);
            RemovalStep::Failed { status }
        }
    }
}

/// Moves that spread a broker's replicas onto its `added` dirs (configured paths) once: each
/// added dir is filled up to the mean replica count per online dir, taking replicas from the
/// fullest dirs (their smallest replicas first, so the least data moves). The metadata log and
/// replicas already being copied stay where they are. Moves as AlterReplicaLogDirs takes them.
pub fn plan_spread(dirs: &[LogDir], added: &[String]) -> Vec<(String, String, i32)> {
    let reported = reported_dirs(dirs, added);
    let targets: BTreeSet<&str> = reported.values().copied().collect();
    let online: Vec<&LogDir> = dirs.iter().filter(|d| d.error_code == 0).collect();
    if targets.is_empty() || online.len() < 2 {
        return Vec::new();
    }
    let copying: BTreeSet<(&str, i32)> = online
        .iter()
        .flat_map(|d| d.replicas.iter().filter(|r| r.future))
        .map(|r| (r.topic.as_str(), r.partition))
        .collect();
    let count = |d: &LogDir| {
        d.replicas
            .iter()
            .filter(|r| !r.future && r.topic != METADATA_TOPIC)
            .count()
    };
    let total: usize = online.iter().map(|d| count(d)).sum();
    let mean = total / online.len();
    let mut counts: BTreeMap<&str, usize> =
        online.iter().map(|d| (d.path.as_str(), count(d))).collect();
    // Candidates per source dir: smallest first.
    let mut sources: BTreeMap<&str, Vec<(i64, &str, i32)>> = BTreeMap::new();
    for d in &online {
        if targets.contains(d.path.as_str()) {
            continue;
        }
        let mut c: Vec<(i64, &str, i32)> = d
            .replicas
            .iter()
            .filter(|r| !r.future && r.topic != METADATA_TOPIC)
            .filter(|r| !copying.contains(&(r.topic.as_str(), r.partition)))
            .map(|r| (r.size, r.topic.as_str(), r.partition))
            .collect();
        c.sort();
        c.reverse(); // popped from the end: smallest first
        sources.insert(d.path.as_str(), c);
    }
    let mut moves = Vec::new();
    for target in &targets {
        while counts.get(target).copied().unwrap_or(0) < mean {
            // The fullest source that has something to give (the first path on a tie).
            let Some(source) = sources
                .iter()
                .filter(|(_, c)| !c.is_empty())
                .map(|(p, _)| *p)
                .filter(|p| counts.get(p).copied().unwrap_or(0) > mean)
                .max_by(|a, b| counts[a].cmp(&counts[b]).then(b.cmp(a)))
            else {
                break;
            };
            let Some((_, topic, partition)) = sources.get_mut(source).and_then(Vec::pop) else {
                break;
            };
            *counts.entry(source).or_default() -= 1;
            *counts.entry(target).or_default() += 1;
            moves.push((target.to_string(), topic.to_string(), partition));
        }
    }
    moves.sort_by(|a, b| (&a.1, a.2).cmp(&(&b.1, b.2)));
    moves
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::LogDirReplica;
    use crate::reconcile::tests::example;

    fn cluster() -> KafkaCluster {
        example("kafkacluster-jbod.yaml")
    }

    fn broker(kc: &KafkaCluster, id: i32, mounts: &[&str]) -> EffectiveBroker {
        let mut b = crate::reconcile::effective_brokers(kc)
            .unwrap()
            .into_iter()
            .find(|b| b.id == id)
            .unwrap();
        b.storage = mounts
            .iter()
            .map(|m| crate::api::StorageSpec {
                mount_path: m.to_string(),
                size: "1Gi".into(),
                ..Default::default()
            })
            .collect();
        b
    }

    fn observed(claims: &[(&str, &str)], log_dirs: &[&str]) -> ObservedVolumes {
        ObservedVolumes {
            claims: claims
                .iter()
                .map(|(m, c)| (m.to_string(), c.to_string()))
                .collect(),
            log_dirs: log_dirs.iter().map(|d| d.to_string()).collect(),
            metadata_dir: log_dirs.first().map(|d| d.to_string()),
            emptied: BTreeSet::new(),
        }
    }

    fn claims_of(l: &Layout) -> Vec<(&str, &str, &str, bool)> {
        l.mounts
            .iter()
            .map(|m| {
                (
                    m.mount_path.as_str(),
                    m.claim.as_str(),
                    m.volume.as_str(),
                    m.leaving,
                )
            })
            .collect()
    }

    fn replica(topic: &str, partition: i32, size: i64) -> LogDirReplica {
        LogDirReplica {
            topic: topic.into(),
            partition,
            size,
            offset_lag: 0,
            future: false,
        }
    }

    fn dir(path: &str, replicas: Vec<LogDirReplica>) -> LogDir {
        LogDir {
            path: path.into(),
            error_code: 0,
            replicas,
            total_bytes: -1,
            usable_bytes: -1,
        }
    }

    fn planned(kc: &KafkaCluster, volumes: Option<ObservedVolumes>) -> crate::reconcile::Desired {
        let observed = crate::reconcile::Observed {
            external_address: Some("203.0.113.7".into()),
            cluster_id: Some("MkU3OEVBNTcwNTJENDM2Qk".into()),
            volumes: volumes.into_iter().map(|v| (0, v)).collect(),
            ..Default::default()
        };
        crate::reconcile::plan(kc, &observed, &crate::reconcile::Settings::default()).unwrap()
    }

    fn pod_of(d: &crate::reconcile::Desired) -> &k8s_openapi::api::core::v1::Pod {
        d.pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some("jbod-broker-0"))
            .unwrap()
    }

    fn hash_of(d: &crate::reconcile::Desired) -> String {
        pod_of(d).metadata.annotations.as_ref().unwrap()[names::RESTART_HASH_ANNOTATION].clone()
    }

    fn properties_of(d: &crate::reconcile::Desired) -> String {
        d.config_maps
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some("jbod-broker-0-config"))
            .unwrap()
            .data
            .as_ref()
            .unwrap()["server.properties"]
            .clone()
    }

    /// What the controller reads back from a plan once it is applied.
    fn applied(d: &crate::reconcile::Desired) -> ObservedVolumes {
        let mut o = ObservedVolumes::default();
        o.read_properties(&properties_of(d));
        for c in &d.claims {
            let name = c.metadata.name.clone().unwrap();
            if name.starts_with("jbod-broker-0-") {
                let m = &c.metadata.annotations.as_ref().unwrap()[names::MOUNT_PATH_ANNOTATION];
                o.claims.insert(m.clone(), name);
            }
        }
        o
    }

    /// Broker 0 in a copy of its config group without its `index`th volume.
    fn without_volume(kc: &mut KafkaCluster, index: usize) {
        let mut group = kc.spec.broker_config_groups["brokers"].clone();
        group.storage.remove(index);
        kc.spec
            .broker_config_groups
            .insert("brokers-0".into(), group);
        let b0 = kc.spec.brokers.iter_mut().find(|b| b.id == 0).unwrap();
        b0.config_group = Some("brokers-0".into());
    }

    #[test]
    fn the_explicit_metadata_dir_restarts_no_existing_broker() {
        let kc = cluster();
        let d = planned(&kc, None);
        let text = properties_of(&d);
        assert!(
            text.contains("metadata.log.dir=/var/lib/kafka/data0/kafka\n"),
            "{text}"
        );
        // A broker rendered before the line existed has the same restart hash.
        let before: String = text
            .lines()
            .filter(|l| !l.starts_with("metadata.log.dir="))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut pod = pod_of(&d).clone();
        pod.metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(names::RESTART_HASH_ANNOTATION);
        assert_eq!(
            super::super::broker::restart_hash(&kc, &pod, &before),
            hash_of(&d)
        );
    }

    #[test]
    fn a_removed_volume_restarts_its_broker_only_once_it_is_empty() {
        let mut kc = cluster();
        let before = planned(&kc, None);
        let mut o = applied(&before);
        // data1 leaves broker 0 (its own copy of the group's volumes, without data1).
        without_volume(&mut kc, 1);
        let during = planned(&kc, Some(o.clone()));
        assert_eq!(
            hash_of(&during),
            hash_of(&before),
            "no restart while data1 holds data"
        );
        assert_eq!(properties_of(&during), properties_of(&before));
        assert!(
            !during
                .claims
                .iter()
                .any(|c| c.metadata.name.as_deref() == Some("jbod-broker-0-data-1"))
        );
        o.emptied.insert("/var/lib/kafka/data1/kafka".into());
        let after = planned(&kc, Some(o));
        assert_ne!(hash_of(&after), hash_of(&before));
        let text = properties_of(&after);
        assert!(
            text.contains("log.dirs=/var/lib/kafka/data0/kafka\n"),
            "{text}"
        );
        assert!(after.volume_refusals.is_empty());
    }

    #[test]
    fn removing_the_metadata_volume_is_refused_and_changes_nothing() {
        let mut kc = cluster();
        let before = planned(&kc, None);
        let mut o = applied(&before);
        o.emptied.insert("/var/lib/kafka/data0/kafka".into());
        without_volume(&mut kc, 0);
        let d = planned(&kc, Some(o));
        assert_eq!(hash_of(&d), hash_of(&before));
        assert_eq!(properties_of(&d), properties_of(&before));
        assert_eq!(d.volume_refusals.len(), 1, "{:?}", d.volume_refusals);
        assert!(d.volume_refusals[0].contains("metadata"));
    }

    #[test]
    fn a_fresh_broker_gets_the_names_it_always_had() {
        let kc = cluster();
        let b = broker(&kc, 0, &["/a", "/b"]);
        let l = layout(&kc, &b, None);
        assert_eq!(
            claims_of(&l),
            [
                ("/a", "jbod-broker-0-data-0", "data-0", false),
                ("/b", "jbod-broker-0-data-1", "data-1", false)
            ]
        );
        assert_eq!(l.metadata_dir, "/a/kafka");
        assert_eq!(l.refused, None);
    }

    #[test]
    fn removing_the_first_volume_does_not_rename_the_others() {
        let kc = cluster();
        let o = observed(
            &[
                ("/a", "jbod-broker-0-data-0"),
                ("/b", "jbod-broker-0-data-1"),
                ("/c", "jbod-broker-0-data-2"),
            ],
            &["/m/kafka", "/a/kafka", "/b/kafka", "/c/kafka"],
        );
        let mut o = o;
        o.claims.insert("/m".into(), "jbod-broker-0-data-9".into());
        o.emptied.insert("/a/kafka".into());
        let b = broker(&kc, 0, &["/m", "/b", "/c"]);
        let l = layout(&kc, &b, Some(&o));
        assert_eq!(
            claims_of(&l),
            [
                ("/m", "jbod-broker-0-data-9", "data-9", false),
                ("/b", "jbod-broker-0-data-1", "data-1", false),
                ("/c", "jbod-broker-0-data-2", "data-2", false)
            ]
        );
    }

    #[test]
    fn a_new_volume_takes_the_lowest_name_no_claim_has() {
        let kc = cluster();
        // /a left the spec and was emptied; its claim stays (and keeps its name).
        let mut o = observed(
            &[
                ("/a", "jbod-broker-0-data-0"),
                ("/b", "jbod-broker-0-data-1"),
            ],
            &["/b/kafka"],
        );
        o.metadata_dir = Some("/b/kafka".into());
        let b = broker(&kc, 0, &["/b", "/c", "/d"]);
        let l = layout(&kc, &b, Some(&o));
        assert_eq!(
            claims_of(&l),
            [
                ("/b", "jbod-broker-0-data-1", "data-1", false),
                ("/c", "jbod-broker-0-data-2", "data-2", false),
                ("/d", "jbod-broker-0-data-3", "data-3", false)
            ]
        );
        // Putting /a back finds its claim.
        let b = broker(&kc, 0, &["/b", "/a"]);
        let l = layout(&kc, &b, Some(&o));
        assert_eq!(l.mounts[1].claim, "jbod-broker-0-data-0");
    }

    #[test]
    fn a_leaving_volume_stays_mounted_in_place_until_it_is_emptied() {
        let kc = cluster();
        let mut o = observed(
            &[
                ("/a", "jbod-broker-0-data-0"),
                ("/b", "jbod-broker-0-data-1"),
                ("/c", "jbod-broker-0-data-2"),
            ],
            &["/a/kafka", "/b/kafka", "/c/kafka"],
        );
        let b = broker(&kc, 0, &["/a", "/c"]);
        let l = layout(&kc, &b, Some(&o));
        assert_eq!(
            claims_of(&l),
            [
                ("/a", "jbod-broker-0-data-0", "data-0", false),
                ("/b", "jbod-broker-0-data-1", "data-1", true),
                ("/c", "jbod-broker-0-data-2", "data-2", false)
            ]
        );
        o.emptied.insert("/b/kafka".into());
        let l = layout(&kc, &b, Some(&o));
        assert_eq!(
            claims_of(&l),
            [
                ("/a", "jbod-broker-0-data-0", "data-0", false),
                ("/c", "jbod-broker-0-data-2", "data-2", false)
            ]
        );
        assert_eq!(l.refused, None);
    }

    #[test]
    fn the_metadata_volume_is_never_dropped() {
        let kc = cluster();
        let mut o = observed(
            &[
                ("/a", "jbod-broker-0-data-0"),
                ("/b", "jbod-broker-0-data-1"),
            ],
            &["/a/kafka", "/b/kafka"],
        );
        o.emptied.insert("/a/kafka".into());
        let b = broker(&kc, 0, &["/b"]);
        let l = layout(&kc, &b, Some(&o));
        assert_eq!(l.metadata_dir, "/a/kafka");
        assert!(l.mounts.iter().any(|m| m.mount_path == "/a"));
        let why = l.refused.unwrap();
        assert!(why.contains("metadata") && why.contains("/a"), "{why}");
    }

    #[test]
    fn the_metadata_dir_does_not_follow_the_list_order() {
        let kc = cluster();
        let mut o = observed(
            &[
                ("/a", "jbod-broker-0-data-0"),
                ("/b", "jbod-broker-0-data-1"),
            ],
            &["/a/kafka", "/b/kafka"],
        );
        o.metadata_dir = Some("/b/kafka".into());
        // The spec lists /b first now, then /a and a new /c: the dirs in use keep their order.
        let b = broker(&kc, 0, &["/b", "/a", "/c"]);
        let l = layout(&kc, &b, Some(&o));
        let order: Vec<&str> = l.mounts.iter().map(|m| m.mount_path.as_str()).collect();
        assert_eq!(order, ["/a", "/b", "/c"]);
        assert_eq!(l.metadata_dir, "/b/kafka");
        // Removing /a (emptied) leaves the metadata dir where it is.
        o.emptied.insert("/a/kafka".into());
        let b = broker(&kc, 0, &["/b"]);
        let l = layout(&kc, &b, Some(&o));
        assert_eq!(l.metadata_dir, "/b/kafka");
        assert_eq!(l.refused, None);
    }

    #[test]
    fn properties_give_the_dirs_in_use_and_the_metadata_dir() {
        let mut o = ObservedVolumes::default();
        o.read_properties("node.id=1\nlog.dirs=/a/kafka,/b/kafka\n");
        assert_eq!(o.log_dirs, ["/a/kafka", "/b/kafka"]);
        assert_eq!(o.metadata_dir.as_deref(), Some("/a/kafka"));
        o.read_properties("log.dirs=/a/kafka,/b/kafka\nmetadata.log.dir=/b/kafka\n");
        assert_eq!(o.metadata_dir.as_deref(), Some("/b/kafka"));
    }

    #[test]
    fn reported_dirs_match_under_another_root() {
        assert!(same_dir("/a/kafka", "/a/kafka"));
        assert!(same_dir("/tmp/pod/root/a/kafka", "/a/kafka"));
        assert!(!same_dir("/tmp/xa/kafka", "/a/kafka"));
        assert!(!same_dir("/a/kafka2", "/a/kafka"));
        let dirs = [dir("/r/x/a/kafka", vec![]), dir("/x/a/kafka", vec![])];
        let m = reported_dirs(&dirs, &["/x/a/kafka".to_string(), "/a/kafka".to_string()]);
        assert_eq!(m["/x/a/kafka"], "/x/a/kafka");
        assert_eq!(m["/a/kafka"], "/r/x/a/kafka");
    }

    #[test]
    fn removal_moves_replicas_then_says_empty() {
        let leaving = vec!["/b/kafka".to_string()];
        let dirs = [
            dir("/root/a/kafka", vec![replica("t", 0, 10)]),
            dir(
                "/root/b/kafka",
                vec![replica("t", 1, 20), replica("u", 0, 5)],
            ),
        ];
        match plan_removal(&dirs, &leaving) {
            RemovalStep::Move {
                moves,
                started,
                status,
            } => {
                assert_eq!(started, 2);
                assert_eq!(
                    moves,
                    [
                        ("/root/a/kafka".to_string(), "t".to_string(), 1),
                        ("/root/a/kafka".to_string(), "u".to_string(), 0)
                    ]
                );
                assert_eq!(status.partitions_left, 2);
                assert_eq!(status.bytes_left, 25);
                assert_eq!(status.dirs, leaving);
            }
            other => panic!("{other:?}"),
        }
        let dirs = [
            dir(
                "/root/a/kafka",
                vec![replica("t", 0, 10), replica("t", 1, 20)],
            ),
            dir("/root/b/kafka", vec![]),
        ];
        assert_eq!(plan_removal(&dirs, &leaving), RemovalStep::Empty);
        // A dir the broker does not report holds nothing.
        assert_eq!(plan_removal(&dirs[..1], &leaving), RemovalStep::Empty);
    }

    #[test]
    fn a_copy_in_flight_counts_as_left() {
        let leaving = vec!["/b/kafka".to_string()];
        let mut future = replica("t", 1, 3);
        future.future = true;
        let dirs = [
            dir("/a/kafka", vec![future]),
            dir("/b/kafka", vec![replica("t", 1, 20)]),
        ];
        let RemovalStep::Move {
            moves,
            started,
            status,
        } = plan_removal(&dirs, &leaving)
        else {
            panic!()
        };
        assert_eq!(moves, [("/a/kafka".to_string(), "t".to_string(), 1)]);
        assert_eq!(started, 0, "already running");
        assert_eq!(status.partitions_left, 1);
    }

    #[test]
    fn removal_without_a_dir_to_go_to_fails_and_says_why() {
        let leaving = vec!["/a/kafka".to_string()];
        let dirs = [dir("/a/kafka", vec![replica("t", 0, 10)])];
        let RemovalStep::Failed { status } = plan_removal(&dirs, &leaving) else {
            panic!()
        };
        assert!(status.message.unwrap().contains("no online log dir"));
        let mut offline = dir("/b/kafka", vec![]);
        offline.error_code = 56;
        let dirs = [dir("/a/kafka", vec![]), offline];
        assert!(matches!(
            plan_removal(&dirs, &["/b/kafka".to_string()]),
            RemovalStep::Failed { .. }
        ));
    }

    #[test]
    fn spreading_fills_a_new_dir_up_to_the_mean_with_the_smallest_replicas() {
        let dirs = [
            dir(
                "/a/kafka",
                (0..6)
                    .map(|p| replica("t", p, 100 - i64::from(p)))
                    .collect(),
            ),
            dir("/b/kafka", (0..6).map(|p| replica("u", p, 50)).collect()),
            dir("/c/kafka", vec![]),
        ];
        let moves = plan_spread(&dirs, &["/c/kafka".to_string()]);
        assert_eq!(moves.len(), 4, "{moves:?}");
        assert!(moves.iter().all(|m| m.0 == "/c/kafka"));
        let from_t: Vec<i32> = moves.iter().filter(|m| m.1 == "t").map(|m| m.2).collect();
        let from_u = moves.iter().filter(|m| m.1 == "u").count();
        assert_eq!(from_u, 2);
        assert_eq!(from_t, [4, 5], "smallest first");
    }

    #[test]
    fn spreading_leaves_metadata_and_balanced_brokers_alone() {
        let dirs = [
            dir(
                "/a/kafka",
                vec![replica(METADATA_TOPIC, 0, 1), replica("t", 0, 1)],
            ),
            dir("/b/kafka", vec![]),
        ];
        assert_eq!(plan_spread(&dirs, &["/b/kafka".to_string()]), []);
        let dirs = [
            dir("/a/kafka", vec![replica("t", 0, 1), replica("t", 1, 1)]),
            dir("/b/kafka", vec![]),
        ];
        assert_eq!(
            plan_spread(&dirs, &["/b/kafka".to_string()]),
            [("/b/kafka".to_string(), "t".to_string(), 0)]
        );
        assert_eq!(plan_spread(&dirs[..1], &["/a/kafka".to_string()]), []);
        assert_eq!(plan_spread(&dirs, &["/nowhere/kafka".to_string()]), []);
    }
}
