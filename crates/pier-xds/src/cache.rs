//! The snapshot cache: the node groups Pier serves, the current snapshot of each, fanned out to
//! that group's streams through a `tokio::sync::watch` channel (one update reaches any number of
//! streams without a lock held across an await), and what every connected Envoy node said
//! about it.
//!
//! Only declared groups are served ([`SnapshotCache::declare_group`], or a snapshot set for
//! it): what a client names cannot create state. A node is forgotten when its last stream
//! closes.
//!
//! "Last good config", per group: a snapshot is good once some node applied it (ACKed all of it,
//! whatever types it uses — a DNS-only config has no endpoints) and no node rejected it; a NACK
//! from any node takes that back, whatever others ACKed. While the current snapshot is
//! rejected, streams that connect get the last good one instead, so a bad config never reaches
//! a fresh Envoy that has nothing to fall back to. The next snapshot clears the mark.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::{Notify, watch};

use super::Snapshot;
use super::metrics::{GroupLabels, XdsMetrics};
use super::session::StreamEvent;

/// What one Envoy node said about one resource type.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TypeStatus {
    pub sent_version: Option<String>,
    pub acked_version: Option<String>,
    pub nacked: Option<Nack>,
}

/// A rejected config.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Nack {
    pub version: String,
    pub error: String,
}

/// Which node a stream belongs to: its node group and `node.id`. Two Envoys may use the same
/// `node.id` in different groups (two namespaces, or `pier xds` users choosing ids); each is its
/// own node. Built once per stream, so recording an event allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeKey {
    group: String,
    node_id: String,
}

impl NodeKey {
    pub fn new(group: &str, node_id: &str) -> Self {
        Self {
            group: group.to_string(),
            node_id: node_id.to_string(),
        }
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }
}

/// One connected Envoy node (by node group and `node.id`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeStatus {
    pub node_id: String,
    pub group: String,
    /// `sotw` or `delta`.
    pub protocol: &'static str,
    /// Open streams of this node.
    pub streams: u32,
    /// The snapshot version this node last applied in full.
    pub applied_version: Option<String>,
    pub types: BTreeMap<&'static str, TypeStatus>,
}

/// A node group's config and whether its Envoys took it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupStatus {
    pub group: String,
    /// Version of the current snapshot, if any.
    pub version: Option<String>,
    /// When the current snapshot was set (wall clock, microseconds since the Unix epoch): the
    /// start of its fan-out, to compare with when Envoys applied it.
    pub set_at_unix_micros: Option<u64>,
    /// Every connected node applied the current snapshot (some node is connected).
    pub all_acked: bool,
    /// The latest NACK of the current snapshot, if any.
    pub rejected: Option<Rejection>,
    /// Version of the snapshot new streams start from while the current one is rejected.
    pub last_good_version: Option<String>,
    pub nodes: Vec<NodeStatus>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rejection {
    pub node_id: String,
    pub r#type: &'static str,
    pub version: String,
    pub error: String,
}

struct GroupEntry {
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    /// When the current snapshot was set.
    set_at: Option<SystemTime>,
    /// The last good snapshot before the current one.
    previous_good: Option<Arc<Snapshot>>,
    /// Some node applied the current snapshot.
    current_applied: bool,
    rejected: Option<Rejection>,
}

impl GroupEntry {
    fn new() -> Self {
        Self {
            tx: watch::Sender::new(None),
            set_at: None,
            previous_good: None,
            current_applied: false,
            rejected: None,
        }
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        self.tx.borrow().clone()
    }

    fn last_good(&self) -> Option<Arc<Snapshot>> {
        match self.current() {
            Some(current) if self.current_applied && self.rejected.is_none() => Some(current),
            _ => self.previous_good.clone(),
        }
    }
}

/// Snapshots per node group, and the status of every connected node.
#[derive(Default)]
pub struct SnapshotCache {
    groups: DashMap<String, GroupEntry>,
    nodes: DashMap<NodeKey, NodeStatus>,
    metrics: Arc<XdsMetrics>,
    /// Woken when a group is declared (streams of an unknown group wait for it).
    declared: Notify,
    /// Streams waiting for their group now.
    waiting: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("groups", &self.groups.len())
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl SnapshotCache {
    pub fn new(metrics: Arc<XdsMetrics>) -> Self {
        Self {
            metrics,
            ..Self::default()
        }
    }

    pub fn metrics(&self) -> &Arc<XdsMetrics> {
        &self.metrics
    }

    /// Declares that Pier serves `group` (an operator: a KafkaCluster it reconciles, before its
    /// first snapshot exists). Envoys of the group may connect; they get config once a snapshot
    /// is set. Declaring a known group changes nothing.
    pub fn declare_group(&self, group: &str) {
        if self.groups.contains_key(group) {
            return;
        }
        self.groups
            .entry(group.to_string())
            .or_insert_with(GroupEntry::new);
        self.declared.notify_waiters();
        tracing::debug!(group, "node group declared");
    }

    /// Whether Pier serves `group`.
    pub fn is_declared(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    /// Waits until `group` is declared (at most until `deadline`). Allocates nothing per caller.
    pub async fn wait_declared(&self, group: &str, deadline: tokio::time::Instant) -> bool {
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        loop {
            let notified = self.declared.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_declared(group) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.is_declared(group);
            }
        }
    }

    /// Streams waiting for their group to be declared.
    pub fn waiting_streams(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes `snapshot` the group's config (declaring the group) and pushes it to the group's
    /// streams. A snapshot with the same versions as the current one changes nothing. Returns
    /// the current snapshot.
    pub fn set_snapshot(&self, group: &str, snapshot: Snapshot) -> Arc<Snapshot> {
        let mut new_group = false;
        let mut entry = self.groups.entry(group.to_string()).or_insert_with(|| {
            new_group = true;
            GroupEntry::new()
        });
        if let Some(current) = entry.current()
            && current.version_str() == snapshot.version_str()
        {
            return current;
        }
        let snapshot = Arc::new(snapshot);
        entry.previous_good = entry.last_good();
        entry.rejected = None;
        entry.current_applied = false;
        let set_at = SystemTime::now();
        entry.set_at = Some(set_at);
        entry.tx.send_replace(Some(snapshot.clone()));
        drop(entry);
        if new_group {
            self.declared.notify_waiters();
        }
        let labels = GroupLabels {
            group: group.to_string(),
        };
        self.metrics.snapshot_updates.get_or_create(&labels).inc();
        self.metrics.snapshot_set_time.get_or_create(&labels).set(
            set_at
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        tracing::info!(group, version = %snapshot.version(), serial = snapshot.serial, "snapshot updated");
        snapshot
    }

    /// Forgets a group (its cluster is gone, or Pier no longer serves it): its streams end,
    /// and Envoys that reconnect are refused. Envoys keep the config they have.
    pub fn remove_group(&self, group: &str) {
        if self.groups.remove(group).is_some() {
            let labels = GroupLabels {
                group: group.to_string(),
            };
            self.metrics.connected_streams.remove(&labels);
            self.metrics.snapshot_updates.remove(&labels);
            self.metrics.snapshot_set_time.remove(&labels);
            tracing::info!(group, "node group removed");
        }
    }

    /// The group's current snapshot.
    pub fn snapshot(&self, group: &str) -> Option<Arc<Snapshot>> {
        self.groups.get(group).and_then(|e| e.current())
    }

    /// For a new stream of a declared group: the snapshot to start with (the last good one
    /// while the current one is rejected) and a receiver of later snapshots. `None` if the
    /// group is not declared.
    #[allow(clippy::type_complexity)]
    pub fn subscribe(
        &self,
        group: &str,
    ) -> Option<(
        Option<Arc<Snapshot>>,
        watch::Receiver<Option<Arc<Snapshot>>>,
    )> {
        let entry = self.groups.get(group)?;
        let mut rx = entry.tx.subscribe();
        rx.mark_unchanged();
        let start = match (&entry.rejected, entry.last_good()) {
            (Some(_), Some(good)) => Some(good),
            _ => entry.current(),
        };
        Some((start, rx))
    }

    /// A stream of `node_id` in `group` opened; the returned guard closes it when dropped.
    pub fn open_stream(
        self: &Arc<Self>,
        node_id: &str,
        group: &str,
        protocol: &'static str,
    ) -> StreamGuard {
        let key = NodeKey::new(group, node_id);
        let mut node = self.nodes.entry(key.clone()).or_insert_with(|| NodeStatus {
            node_id: node_id.to_string(),
            group: group.to_string(),
            protocol,
            streams: 0,
            applied_version: None,
            types: BTreeMap::new(),
        });
        node.streams += 1;
        node.protocol = protocol;
        drop(node);
        self.metrics
            .connected_streams
            .get_or_create(&GroupLabels {
                group: group.to_string(),
            })
            .inc();
        StreamGuard {
            cache: self.clone(),
            key,
        }
    }

    /// Nodes with an open stream (the per-node map's size).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Records what a stream of node `key` sent or heard.
    pub fn record(&self, key: &NodeKey, event: &StreamEvent) {
        let (group, node_id) = (key.group(), key.node_id());
        if let Some(mut node) = self.nodes.get_mut(key) {
            match event {
                StreamEvent::Sent { type_, version } => {
                    node.types.entry(type_.short()).or_default().sent_version =
                        Some(version.clone());
                }
                StreamEvent::Acked { type_, version, .. } => {
                    node.types.entry(type_.short()).or_default().acked_version =
                        Some(version.clone());
                }
                StreamEvent::Nacked {
                    type_,
                    version,
                    error,
                    ..
                } => {
                    node.types.entry(type_.short()).or_default().nacked = Some(Nack {
                        version: version.clone(),
                        error: error.clone(),
                    });
                }
                StreamEvent::Applied { snapshot } => {
                    node.applied_version = Some(snapshot.clone());
                }
            }
        }
        match event {
            StreamEvent::Sent { type_, .. } => {
                self.metrics.of_type(*type_).responses.inc();
            }
            StreamEvent::Acked {
                type_,
                version,
                snapshot_created,
            } => {
                let series = self.metrics.of_type(*type_);
                series.acks.inc();
                if let Some(created) = snapshot_created {
                    series.ack_latency.observe(created.elapsed().as_secs_f64());
                }
                tracing::debug!(node = node_id, group, type_ = type_.short(), version, "ACK");
            }
            StreamEvent::Applied { snapshot } => {
                tracing::debug!(node = node_id, group, snapshot, "config applied");
                // Every stream tells it; only the first one needs the write lock.
                let fresh = |e: &GroupEntry| {
                    !e.current_applied
                        && e.current()
                            .is_some_and(|c| c.version_str() == snapshot.as_str())
                };
                if self.groups.get(group).is_some_and(|e| fresh(&e))
                    && let Some(mut entry) = self.groups.get_mut(group)
                    && fresh(&entry)
                {
                    entry.current_applied = true;
                }
            }
            StreamEvent::Nacked {
                type_,
                version,
                error,
                snapshot,
            } => {
                self.metrics.of_type(*type_).nacks.inc();
                tracing::warn!(
                    node = node_id,
                    group,
                    type_ = type_.short(),
                    version,
                    error,
                    "Envoy rejected config (NACK); it keeps its previous config"
                );
                if let Some(mut entry) = self.groups.get_mut(group)
                    && let Some(current) = entry.current()
                    && snapshot.as_deref() == Some(current.version_str())
                {
                    entry.rejected = Some(Rejection {
                        node_id: node_id.to_string(),
                        r#type: type_.short(),
                        version: version.clone(),
                        error: error.clone(),
                    });
                }
            }
        }
    }

    pub fn node_status(&self, group: &str, node_id: &str) -> Option<NodeStatus> {
        self.nodes
            .get(&NodeKey::new(group, node_id))
            .map(|n| n.clone())
    }

    pub fn group_status(&self, group: &str) -> GroupStatus {
        let (current, set_at, rejected, last_good) = match self.groups.get(group) {
            Some(e) => (e.current(), e.set_at, e.rejected.clone(), e.last_good()),
            None => (None, None, None, None),
        };
        let mut nodes: Vec<NodeStatus> = self
            .nodes
            .iter()
            .filter(|n| n.group == group)
            .map(|n| n.clone())
            .collect();
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let all_acked = current.as_ref().is_some_and(|snap| {
            !nodes.is_empty()
                && nodes
                    .iter()
                    .all(|n| n.applied_version.as_deref() == Some(snap.version_str()))
        });
        GroupStatus {
            group: group.to_string(),
            version: current.map(|s| s.version()),
            set_at_unix_micros: set_at
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            all_acked,
            rejected,
            last_good_version: last_good.map(|s| s.version()),
            nodes,
        }
    }

    /// Every declared group, and every group with a node.
    pub fn groups(&self) -> Vec<String> {
        let mut g: BTreeSet<String> = self.groups.iter().map(|e| e.key().clone()).collect();
        g.extend(self.nodes.iter().map(|n| n.group.clone()));
        g.into_iter().collect()
    }
}

/// Closes a stream when dropped; the node is forgotten with its last stream.
pub struct StreamGuard {
    cache: Arc<SnapshotCache>,
    key: NodeKey,
}

impl StreamGuard {
    /// The stream's node, for [`SnapshotCache::record`].
    pub fn key(&self) -> &NodeKey {
        &self.key
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(mut node) = self.cache.nodes.get_mut(&self.key) {
            node.streams = node.streams.saturating_sub(1);
        }
        self.cache.nodes.remove_if(&self.key, |_, n| n.streams == 0);
        // A removed group's gauge is gone; do not bring it back.
        let labels = GroupLabels {
            group: self.key.group.clone(),
        };
        if let Some(gauge) = self.cache.metrics.connected_streams.get(&labels) {
            gauge.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::per_port;
    use crate::{ResourceType, translate};

    fn snap(ids: &[i32]) -> Snapshot {
        Snapshot::new(translate(&[per_port(ids)]).unwrap())
    }

    /// What a stream tells once its node has all of `s`.
    fn apply(cache: &SnapshotCache, node: &str, s: &Snapshot) {
        for t in ResourceType::ALL {
            let version = s.get(t).version.clone();
            cache.record(
                &NodeKey::new("g", node),
                &StreamEvent::Sent {
                    type_: t,
                    version: version.clone(),
                },
            );
            cache.record(
                &NodeKey::new("g", node),
                &StreamEvent::Acked {
                    type_: t,
                    version,
                    snapshot_created: Some(s.created),
                },
            );
        }
        cache.record(
            &NodeKey::new("g", node),
            &StreamEvent::Applied {
                snapshot: s.version(),
            },
        );
    }

    fn nack(cache: &SnapshotCache, node: &str, s: &Snapshot) {
        cache.record(
            &NodeKey::new("g", node),
            &StreamEvent::Nacked {
                type_: ResourceType::Listener,
                version: s.get(ResourceType::Listener).version.clone(),
                error: "boom".into(),
                snapshot: Some(s.version()),
            },
        );
    }

    fn start(cache: &SnapshotCache) -> Arc<Snapshot> {
        cache.subscribe("g").unwrap().0.unwrap()
    }

    #[test]
    fn setting_the_same_config_twice_changes_nothing() {
        let cache = Arc::new(SnapshotCache::default());
        let a = cache.set_snapshot("g", snap(&[0]));
        let (_, rx) = cache.subscribe("g").unwrap();
        let b = cache.set_snapshot("g", snap(&[0]));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!rx.has_changed().unwrap());
        cache.set_snapshot("g", snap(&[0, 1]));
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn only_declared_groups_are_served() {
        let cache = Arc::new(SnapshotCache::default());
        assert!(cache.subscribe("nobody").is_none());
        assert!(cache.groups().is_empty(), "asking created nothing");
        cache.declare_group("g");
        let (start, _) = cache.subscribe("g").unwrap();
        assert!(start.is_none(), "declared before its first snapshot");
        cache.set_snapshot("h", snap(&[0]));
        assert!(cache.is_declared("h"));
        cache.remove_group("h");
        assert!(cache.subscribe("h").is_none());
    }

    #[tokio::test]
    async fn a_stream_may_wait_for_its_group() {
        let cache = Arc::new(SnapshotCache::default());
        let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(20);
        assert!(!cache.wait_declared("g", soon).await);
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move {
                let later = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
                cache.wait_declared("g", later).await
            })
        };
        tokio::task::yield_now().await;
        cache.declare_group("g");
        assert!(waiter.await.unwrap());
    }

    #[test]
    fn nodes_are_forgotten_with_their_last_stream() {
        let cache = Arc::new(SnapshotCache::default());
        cache.declare_group("g");
        let a = cache.open_stream("envoy-0", "g", "sotw");
        let b = cache.open_stream("envoy-0", "g", "sotw");
        assert_eq!(cache.node_status("g", "envoy-0").unwrap().streams, 2);
        drop(a);
        assert_eq!(cache.node_status("g", "envoy-0").unwrap().streams, 1);
        drop(b);
        assert!(cache.node_status("g", "envoy-0").is_none());
        assert_eq!(cache.node_count(), 0);
    }

    #[test]
    fn group_status_tells_when_the_current_snapshot_was_set() {
        let micros = || {
            u64::try_from(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_micros(),
            )
            .unwrap()
        };
        let cache = Arc::new(SnapshotCache::default());
        cache.declare_group("g");
        assert_eq!(cache.group_status("g").set_at_unix_micros, None);
        let before = micros();
        cache.set_snapshot("g", snap(&[0]));
        let first = cache.group_status("g").set_at_unix_micros.unwrap();
        assert!(before <= first && first <= micros());
        // The same config again is no new snapshot: the time stays.
        cache.set_snapshot("g", snap(&[0]));
        assert_eq!(cache.group_status("g").set_at_unix_micros, Some(first));
        while micros() == first {
            std::hint::spin_loop();
        }
        cache.set_snapshot("g", snap(&[0, 1]));
        let second = cache.group_status("g").set_at_unix_micros.unwrap();
        assert!(second > first);
        // The same time as a metric, in seconds.
        let labels = GroupLabels { group: "g".into() };
        let gauge = cache
            .metrics()
            .snapshot_set_time
            .get_or_create(&labels)
            .get();
        assert!(
            (gauge - second as f64 / 1e6).abs() < 1e-5,
            "{gauge} vs {second}"
        );
        cache.remove_group("g");
        assert_eq!(cache.group_status("g").set_at_unix_micros, None);
    }

    #[test]
    fn group_status_follows_applies_and_nacks() {
        let cache = Arc::new(SnapshotCache::default());
        let good = cache.set_snapshot("g", snap(&[0]));
        assert!(!cache.group_status("g").all_acked, "nobody connected");
        let guard = cache.open_stream("envoy-0", "g", "sotw");
        apply(&cache, "envoy-0", &good);
        let status = cache.group_status("g");
        assert!(status.all_acked);
        assert_eq!(status.version, Some(good.version()));
        assert_eq!(status.last_good_version, Some(good.version()));
        assert_eq!(status.nodes[0].streams, 1);

        let bad = cache.set_snapshot("g", snap(&[0, 1]));
        nack(&cache, "envoy-0", &bad);
        let status = cache.group_status("g");
        assert!(!status.all_acked);
        let rejected = status.rejected.unwrap();
        assert_eq!(
            (rejected.r#type, rejected.error.as_str()),
            ("listener", "boom")
        );
        assert_eq!(
            status.nodes[0].types["listener"].nacked,
            Some(Nack {
                version: bad.get(ResourceType::Listener).version.clone(),
                error: "boom".into()
            })
        );
        // A new Envoy gets the last good config, not the rejected one.
        assert!(Arc::ptr_eq(&start(&cache), &good));

        // The next config clears the rejection.
        let fixed = cache.set_snapshot("g", snap(&[0, 2]));
        assert!(Arc::ptr_eq(&start(&cache), &fixed));
        assert!(cache.group_status("g").rejected.is_none());

        drop(guard);
        assert!(cache.node_status("g", "envoy-0").is_none());
        assert!(!cache.group_status("g").all_acked, "no connected node");
    }

    #[test]
    fn one_nodes_ack_does_not_bless_what_another_rejected() {
        let cache = Arc::new(SnapshotCache::default());
        let _a = cache.open_stream("a", "g", "sotw");
        let _b = cache.open_stream("b", "g", "sotw");
        let good = cache.set_snapshot("g", snap(&[0]));
        apply(&cache, "a", &good);
        let bad = cache.set_snapshot("g", snap(&[0, 1]));
        apply(&cache, "a", &bad);
        assert_eq!(
            cache.group_status("g").last_good_version,
            Some(bad.version())
        );
        nack(&cache, "b", &bad);
        // Even an ACK after the NACK does not make it good again.
        apply(&cache, "a", &bad);
        let status = cache.group_status("g");
        assert_eq!(status.last_good_version, Some(good.version()));
        assert!(Arc::ptr_eq(&start(&cache), &good));
        // The next snapshot starts from the last good one.
        let next = cache.set_snapshot("g", snap(&[0, 2]));
        nack(&cache, "a", &next);
        assert!(Arc::ptr_eq(&start(&cache), &good));
    }

    #[test]
    fn a_nack_of_an_older_snapshot_does_not_mark_the_current_one() {
        let cache = Arc::new(SnapshotCache::default());
        let _a = cache.open_stream("a", "g", "sotw");
        let old = cache.set_snapshot("g", snap(&[0]));
        let current = cache.set_snapshot("g", snap(&[0, 1]));
        nack(&cache, "a", &old);
        assert!(cache.group_status("g").rejected.is_none());
        assert!(Arc::ptr_eq(&start(&cache), &current));
    }

    #[test]
    fn a_config_without_endpoints_becomes_good() {
        let cache = Arc::new(SnapshotCache::default());
        let _a = cache.open_stream("a", "g", "sotw");
        let mut access = per_port(&[0]);
        access.brokers[0].host = "kafka-0.example".into();
        let dns = cache.set_snapshot("g", Snapshot::new(translate(&[access]).unwrap()));
        assert!(dns.get(ResourceType::Endpoint).resources.is_empty());
        // The session tells Applied without any endpoint ACK.
        cache.record(
            &NodeKey::new("g", "a"),
            &StreamEvent::Applied {
                snapshot: dns.version(),
            },
        );
        let status = cache.group_status("g");
        assert!(status.all_acked);
        assert_eq!(status.last_good_version, Some(dns.version()));
    }

    #[test]
    fn the_same_node_id_in_two_groups_is_two_nodes() {
        let cache = Arc::new(SnapshotCache::default());
        let in_g = cache.open_stream("envoy-0", "g", "sotw");
        let _in_h = cache.open_stream("envoy-0", "h", "delta");
        let g = cache.set_snapshot("g", snap(&[0]));
        cache.set_snapshot("h", snap(&[1]));
        apply(&cache, "envoy-0", &g);
        assert!(cache.group_status("g").all_acked);
        assert!(
            !cache.group_status("h").all_acked,
            "h's Envoy applied nothing"
        );
        assert_eq!(cache.node_status("h", "envoy-0").unwrap().protocol, "delta");
        assert_eq!(cache.node_count(), 2);
        drop(in_g);
        assert!(cache.node_status("g", "envoy-0").is_none());
        assert!(cache.node_status("h", "envoy-0").is_some());
    }
}
