//! The snapshot cache: the current snapshot of every node group, fanned out to that group's
//! streams through a `tokio::sync::watch` channel (one update reaches any number of streams
//! without a lock held across an await), and what every Envoy node said about it.
//!
//! A snapshot that an Envoy NACKed is marked rejected: streams that connect afterwards get the
//! group's last snapshot that was fully ACKed instead, so a bad config never reaches a fresh
//! Envoy that has nothing to fall back to. The next snapshot clears the mark.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::watch;

use super::metrics::{GroupLabels, XdsMetrics};
use super::session::StreamEvent;
use super::{ResourceType, Snapshot};

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

/// One Envoy node (by `node.id`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeStatus {
    pub node_id: String,
    pub group: String,
    /// `sotw` or `delta`.
    pub protocol: &'static str,
    /// Open streams of this node (0: disconnected).
    pub streams: u32,
    pub types: BTreeMap<&'static str, TypeStatus>,
}

/// A node group's config and whether its Envoys took it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupStatus {
    pub group: String,
    /// Version of the current snapshot, if any.
    pub version: Option<String>,
    /// Every connected node ACKed the current snapshot's version of every type it receives.
    pub all_acked: bool,
    /// The latest NACK of the current snapshot, if any.
    pub rejected: Option<Rejection>,
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
    last_good: Option<Arc<Snapshot>>,
    rejected: Option<Rejection>,
    acked_types: BTreeSet<ResourceType>,
}

impl GroupEntry {
    fn new() -> Self {
        Self {
            tx: watch::Sender::new(None),
            last_good: None,
            rejected: None,
            acked_types: BTreeSet::new(),
        }
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        self.tx.borrow().clone()
    }
}

/// Snapshots per node group, and the status of every node.
#[derive(Default)]
pub struct SnapshotCache {
    groups: DashMap<String, GroupEntry>,
    nodes: DashMap<String, NodeStatus>,
    metrics: Arc<XdsMetrics>,
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
            groups: DashMap::new(),
            nodes: DashMap::new(),
            metrics,
        }
    }

    pub fn metrics(&self) -> &Arc<XdsMetrics> {
        &self.metrics
    }

    /// Makes `snapshot` the group's config and pushes it to the group's streams. A snapshot
    /// with the same versions as the current one changes nothing. Returns the current snapshot.
    pub fn set_snapshot(&self, group: &str, snapshot: Snapshot) -> Arc<Snapshot> {
        let mut entry = self
            .groups
            .entry(group.to_string())
            .or_insert_with(GroupEntry::new);
        if let Some(current) = entry.current()
            && current.version() == snapshot.version()
        {
            return current;
        }
        let snapshot = Arc::new(snapshot);
        entry.rejected = None;
        entry.acked_types.clear();
        entry.tx.send_replace(Some(snapshot.clone()));
        self.metrics
            .snapshot_updates
            .get_or_create(&GroupLabels {
                group: group.to_string(),
            })
            .inc();
        tracing::info!(group, version = %snapshot.version(), serial = snapshot.serial, "snapshot updated");
        snapshot
    }

    /// Forgets a group's config (its cluster is gone). Connected Envoys keep what they have.
    pub fn remove_group(&self, group: &str) {
        if self.groups.remove(group).is_some() {
            tracing::info!(group, "node group removed");
        }
    }

    /// The group's current snapshot.
    pub fn snapshot(&self, group: &str) -> Option<Arc<Snapshot>> {
        self.groups.get(group).and_then(|e| e.current())
    }

    /// For a new stream: the snapshot to start with (the last good one while the current one is
    /// rejected) and a receiver of later snapshots.
    pub fn subscribe(
        &self,
        group: &str,
    ) -> (
        Option<Arc<Snapshot>>,
        watch::Receiver<Option<Arc<Snapshot>>>,
    ) {
        let entry = self
            .groups
            .entry(group.to_string())
            .or_insert_with(GroupEntry::new);
        let mut rx = entry.tx.subscribe();
        rx.mark_unchanged();
        let start = match (&entry.rejected, &entry.last_good) {
            (Some(_), Some(good)) => Some(good.clone()),
            _ => entry.current(),
        };
        (start, rx)
    }

    /// A stream of `node_id` opened; the returned guard closes it when dropped.
    pub fn open_stream(
        self: &Arc<Self>,
        node_id: &str,
        group: &str,
        protocol: &'static str,
    ) -> StreamGuard {
        let mut node = self
            .nodes
            .entry(node_id.to_string())
            .or_insert_with(|| NodeStatus {
                node_id: node_id.to_string(),
                group: group.to_string(),
                protocol,
                streams: 0,
                types: BTreeMap::new(),
            });
        node.streams += 1;
        node.group = group.to_string();
        node.protocol = protocol;
        self.metrics
            .connected_streams
            .get_or_create(&GroupLabels {
                group: group.to_string(),
            })
            .inc();
        StreamGuard {
            cache: self.clone(),
            node_id: node_id.to_string(),
            group: group.to_string(),
        }
    }

    /// Records what a stream of `node_id` sent or heard.
    pub fn record(&self, node_id: &str, group: &str, event: &StreamEvent) {
        let labels = |t: ResourceType| XdsMetrics::type_labels(t);
        if let Some(mut node) = self.nodes.get_mut(node_id) {
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
                } => {
                    node.types.entry(type_.short()).or_default().nacked = Some(Nack {
                        version: version.clone(),
                        error: error.clone(),
                    });
                }
            }
        }
        match event {
            StreamEvent::Sent { type_, .. } => {
                self.metrics.responses.get_or_create(&labels(*type_)).inc();
            }
            StreamEvent::Acked {
                type_,
                version,
                snapshot_created,
            } => {
                self.metrics.acks.get_or_create(&labels(*type_)).inc();
                if let Some(created) = snapshot_created {
                    self.metrics
                        .ack_latency
                        .get_or_create(&labels(*type_))
                        .observe(created.elapsed().as_secs_f64());
                }
                tracing::debug!(node = node_id, group, type_ = type_.short(), version, "ACK");
                if let Some(mut entry) = self.groups.get_mut(group)
                    && let Some(current) = entry.current()
                    && current.get(*type_).version == *version
                {
                    entry.acked_types.insert(*type_);
                    if entry.acked_types.len() == ResourceType::ALL.len() {
                        entry.last_good = Some(current);
                    }
                }
            }
            StreamEvent::Nacked {
                type_,
                version,
                error,
            } => {
                self.metrics.nacks.get_or_create(&labels(*type_)).inc();
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
                    && version.starts_with(&current.get(*type_).version)
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

    pub fn node_status(&self, node_id: &str) -> Option<NodeStatus> {
        self.nodes.get(node_id).map(|n| n.clone())
    }

    pub fn group_status(&self, group: &str) -> GroupStatus {
        let (current, rejected) = match self.groups.get(group) {
            Some(e) => (e.current(), e.rejected.clone()),
            None => (None, None),
        };
        let mut nodes: Vec<NodeStatus> = self
            .nodes
            .iter()
            .filter(|n| n.group == group)
            .map(|n| n.clone())
            .collect();
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let connected: Vec<&NodeStatus> = nodes.iter().filter(|n| n.streams > 0).collect();
        let all_acked = current.as_ref().is_some_and(|snap| {
            !connected.is_empty()
                && connected.iter().all(|n| {
                    ResourceType::ALL
                        .iter()
                        .all(|t| match n.types.get(t.short()) {
                            None => *t == ResourceType::Endpoint,
                            Some(s) => {
                                s.acked_version.as_deref() == Some(snap.get(*t).version.as_str())
                            }
                        })
                })
        });
        GroupStatus {
            group: group.to_string(),
            version: current.map(|s| s.version()),
            all_acked,
            rejected,
            nodes,
        }
    }

    /// Every group with a snapshot or a node.
    pub fn groups(&self) -> Vec<String> {
        let mut g: BTreeSet<String> = self.groups.iter().map(|e| e.key().clone()).collect();
        g.extend(self.nodes.iter().map(|n| n.group.clone()));
        g.into_iter().collect()
    }
}

/// Marks a stream closed when dropped.
pub struct StreamGuard {
    cache: Arc<SnapshotCache>,
    node_id: String,
    group: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(mut node) = self.cache.nodes.get_mut(&self.node_id) {
            node.streams = node.streams.saturating_sub(1);
        }
        self.cache
            .metrics
            .connected_streams
            .get_or_create(&GroupLabels {
                group: self.group.clone(),
            })
            .dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::per_port;
    use crate::xds::translate;

    fn snap(ids: &[i32]) -> Snapshot {
        Snapshot::new(translate(&[per_port(ids)]).unwrap())
    }

    fn ack_all(cache: &SnapshotCache, node: &str, s: &Snapshot) {
        for t in ResourceType::ALL {
            let version = s.get(t).version.clone();
            cache.record(
                node,
                "g",
                &StreamEvent::Sent {
                    type_: t,
                    version: version.clone(),
                },
            );
            cache.record(
                node,
                "g",
                &StreamEvent::Acked {
                    type_: t,
                    version,
                    snapshot_created: Some(s.created),
                },
            );
        }
    }

    #[test]
    fn setting_the_same_config_twice_changes_nothing() {
        let cache = Arc::new(SnapshotCache::default());
        let a = cache.set_snapshot("g", snap(&[0]));
        let (_, rx) = cache.subscribe("g");
        let b = cache.set_snapshot("g", snap(&[0]));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!rx.has_changed().unwrap());
        cache.set_snapshot("g", snap(&[0, 1]));
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn group_status_follows_acks_and_nacks() {
        let cache = Arc::new(SnapshotCache::default());
        let good = cache.set_snapshot("g", snap(&[0]));
        assert!(!cache.group_status("g").all_acked, "nobody connected");
        let guard = cache.open_stream("envoy-0", "g", "sotw");
        ack_all(&cache, "envoy-0", &good);
        let status = cache.group_status("g");
        assert!(status.all_acked);
        assert_eq!(status.version, Some(good.version()));
        assert_eq!(status.nodes[0].streams, 1);

        let bad = cache.set_snapshot("g", snap(&[0, 1]));
        let version = bad.get(ResourceType::Listener).version.clone();
        cache.record(
            "envoy-0",
            "g",
            &StreamEvent::Nacked {
                type_: ResourceType::Listener,
                version: version.clone(),
                error: "boom".into(),
            },
        );
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
                version,
                error: "boom".into()
            })
        );
        // A new Envoy gets the last good config, not the rejected one.
        let (start, _) = cache.subscribe("g");
        assert!(Arc::ptr_eq(&start.unwrap(), &good));

        // The next config clears the rejection.
        let fixed = cache.set_snapshot("g", snap(&[0, 2]));
        let (start, _) = cache.subscribe("g");
        assert!(Arc::ptr_eq(&start.unwrap(), &fixed));
        assert!(cache.group_status("g").rejected.is_none());

        drop(guard);
        assert_eq!(cache.node_status("envoy-0").unwrap().streams, 0);
        assert!(!cache.group_status("g").all_acked, "no connected node");
    }
}
