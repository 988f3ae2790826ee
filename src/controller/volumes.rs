//! The Kafka side of a broker's volumes, before planning: what each broker's claims and
//! ConfigMap say is in use, and for a broker with volumes that left the spec, DescribeLogDirs
//! and AlterReplicaLogDirs until they are empty ([`volumes::plan_removal`]); for a broker with a
//! new volume and `spec.rebalance.onBrokerAdd`, one spread of its replicas onto it
//! ([`volumes::plan_spread`]). The plan keeps a leaving volume mounted until this says it is
//! empty, and the roll checks again right before the restart ([`still_holding`]).
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use kube::ResourceExt;

use super::{Stores, cluster_objects_shared};
use crate::api::KafkaCluster;
use crate::kafka::AdminClient;
use crate::reconcile::names::{self, BROKER_ID_LABEL, MOUNT_PATH_ANNOTATION};
use crate::reconcile::volumes::{
    self, ObservedVolumes, RemovalStep, VolumeOutcome, log_dir, mount_of,
};
use crate::reconcile::{EffectiveBroker, effective_brokers};

/// What one look at the brokers' volumes found and did.
#[derive(Debug, Default)]
pub struct VolumesView {
    pub observed: BTreeMap<i32, ObservedVolumes>,
    pub outcome: VolumeOutcome,
    /// What was started (LogDirMoves Events).
    pub events: Vec<String>,
    /// What failed (LogDirMoveFailed Events).
    pub failures: Vec<String>,
}

/// Reads every spec broker's volumes and moves replicas between its log dirs where a volume
/// left the spec or was added.
pub async fn observe_and_move(
    kc: &KafkaCluster,
    stores: &Stores,
    admin: &AdminClient,
    pods: &[Pod],
) -> VolumesView {
    let ns = kc.namespace().unwrap_or_default();
    let name = kc.name_any();
    let claims = cluster_objects_shared::<PersistentVolumeClaim>(stores, &ns, &name);
    let config_maps = cluster_objects_shared::<ConfigMap>(stores, &ns, &name);
    // An invalid spec is reported by the plan; nothing to look at here.
    let brokers = effective_brokers(kc).unwrap_or_default();
    let mut view = VolumesView::default();
    for b in &brokers {
        let mut o = ObservedVolumes::default();
        for c in claims
            .iter()
            .filter(|c| c.labels().get(BROKER_ID_LABEL) == Some(&b.id.to_string()))
        {
            if let Some(m) = c.annotations().get(MOUNT_PATH_ANNOTATION) {
                o.claims.insert(m.clone(), c.name_any());
            }
        }
        let config = names::broker_config(kc, b.id);
        if let Some(text) = config_maps
            .iter()
            .find(|c| c.name_any() == config)
            .and_then(|c| c.data.as_ref()?.get("server.properties"))
        {
            o.read_properties(text);
        }
        // The dirs the running Pod mounts: one the config dropped may have got a partition
        // since it was emptied, and is emptied again (the roll waits for it). They never put
        // a volume back into the plan: only the config's dirs do.
        let mounted = dropped_dirs(super::live_config::broker_pod(kc, pods, b.id), None);
        look_at_broker(kc, admin, b, &mounted, &mut o, &mut view).await;
        view.observed.insert(b.id, o);
    }
    view
}

async fn look_at_broker(
    kc: &KafkaCluster,
    admin: &AdminClient,
    b: &EffectiveBroker,
    mounted: &[String],
    o: &mut ObservedVolumes,
    view: &mut VolumesView,
) {
    let spec_dirs: Vec<String> = b.storage.iter().map(|s| log_dir(&s.mount_path)).collect();
    let in_spec = |d: &str| {
        let m = mount_of(d).trim_end_matches('/');
        b.storage
            .iter()
            .any(|s| s.mount_path.trim_end_matches('/') == m)
    };
    let mut leaving: Vec<String> = o
        .log_dirs
        .iter()
        .filter(|d| !in_spec(d) && o.metadata_dir.as_ref() != Some(*d))
        .cloned()
        .collect();
    for d in mounted {
        if !in_spec(d) && !leaving.contains(d) && o.metadata_dir.as_ref() != Some(d) {
            leaving.push(d.clone());
        }
    }
    let prior_known: Vec<String> = kc
        .status
        .as_ref()
        .and_then(|s| s.brokers.iter().find(|p| p.id == b.id))
        .map(|p| p.known_log_dirs.clone())
        .unwrap_or_default();
    let known_settled = {
        let mut k = prior_known.clone();
        let mut s = spec_dirs.clone();
        k.sort();
        s.sort();
        !k.is_empty() && k == s
    };
    if leaving.is_empty() && known_settled {
        return;
    }
    // Only the broker itself can say what its dirs hold.
    let dirs = match admin.describe_log_dirs(b.id).await {
        Ok(d) => d,
        Err(e) => {
            if !leaving.is_empty() {
                tracing::info!(broker = b.id, error = %e, "cannot describe log dirs; volumes stay");
                view.outcome.removals.insert(
                    b.id,
                    crate::api::VolumeRemovalStatus {
                        dirs: leaving,
                        partitions_left: 0,
                        bytes_left: 0,
                        message: Some(format!("cannot describe the broker's log dirs: {e}")),
                    },
                );
            }
            return;
        }
    };
    if !leaving.is_empty() {
        match volumes::plan_removal(&dirs, &leaving) {
            RemovalStep::Empty => {
                tracing::info!(broker = b.id, dirs = ?leaving, "leaving log dirs are empty");
                o.emptied.extend(leaving);
            }
            RemovalStep::Move {
                moves,
                started,
                status,
            } => {
                let failed = submit(admin, b.id, &moves, view).await;
                if started > 0 && failed == 0 {
                    view.events.push(format!(
                        "broker {}: moving {} replicas ({} bytes) off {} to its other log dirs",
                        b.id,
                        status.partitions_left,
                        status.bytes_left,
                        status.dirs.join(", ")
                    ));
                }
                view.outcome.removals.insert(b.id, status);
            }
            RemovalStep::Failed { status } => {
                let why = status.message.clone().unwrap_or_default();
                view.failures.push(format!(
                    "broker {}: cannot empty {}: {why}",
                    b.id,
                    status.dirs.join(", ")
                ));
                view.outcome.removals.insert(b.id, status);
            }
        }
        // Adding waits until removing is done.
        return;
    }
    // The dirs the broker has of those the spec lists.
    let present: Vec<String> = volumes::reported_dirs(&dirs, &spec_dirs)
        .into_keys()
        .collect();
    let added: Vec<String> = present
        .iter()
        .filter(|d| !prior_known.contains(d))
        .cloned()
        .collect();
    // Known for the first time (a new broker, or one from before this was recorded): nothing
    // to spread, only to remember.
    if !prior_known.is_empty() && !added.is_empty() && kc.spec.rebalance.on_broker_add {
        let moves = volumes::plan_spread(&dirs, &added);
        if !moves.is_empty() {
            if submit(admin, b.id, &moves, view).await > 0 {
                // Tried again on the next reconcile.
                return;
            }
            view.events.push(format!(
                "broker {}: spreading {} replicas onto its new log dirs {}",
                b.id,
                moves.len(),
                added.join(", ")
            ));
        }
    }
    view.outcome.known_log_dirs.insert(b.id, present);
}

/// Sends the moves to the broker; returns how many failed (each one a failure line).
async fn submit(
    admin: &AdminClient,
    id: i32,
    moves: &[(String, String, i32)],
    view: &mut VolumesView,
) -> usize {
    match admin.alter_replica_log_dirs(id, moves).await {
        Ok(results) => {
            let mut failed = 0;
            for (topic, partition, r) in results {
                if let Err(e) = r {
                    failed += 1;
                    tracing::warn!(broker = id, %topic, partition, error = %e, "log dir move failed");
                    view.failures
                        .push(format!("broker {id}: moving {topic}-{partition}: {e}"));
                }
            }
            failed
        }
        Err(e) => {
            tracing::warn!(broker = id, error = %e, "AlterReplicaLogDirs failed");
            view.failures.push(format!(
                "broker {id}: moving replicas between log dirs: {e}"
            ));
            moves.len().max(1)
        }
    }
}

/// The log dirs the running Pod of a broker mounts that its planned Pod does not: the volumes
/// its restart removes. Data volumes only (claims): not the config, TLS, Secret or metrics
/// agent mounts.
pub fn dropped_dirs(running: Option<&Pod>, planned: Option<&Pod>) -> Vec<String> {
    let mounts = |p: Option<&Pod>| -> Vec<String> {
        let Some(spec) = p.and_then(|p| p.spec.as_ref()) else {
            return Vec::new();
        };
        let claimed: Vec<&str> = spec
            .volumes
            .iter()
            .flatten()
            .filter(|v| v.persistent_volume_claim.is_some())
            .map(|v| v.name.as_str())
            .collect();
        spec.containers
            .first()
            .and_then(|c| c.volume_mounts.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|m| claimed.contains(&m.name.as_str()))
            .map(|m| log_dir(&m.mount_path))
            .collect()
    };
    let keep = mounts(planned);
    mounts(running)
        .into_iter()
        .filter(|d| !keep.contains(d))
        .collect()
}

/// Why broker `id` must not restart yet: its `dropped` dirs still hold something (a partition
/// created since they were emptied), or the broker cannot say.
pub async fn still_holding(admin: &AdminClient, id: i32, dropped: &[String]) -> Option<String> {
    if dropped.is_empty() {
        return None;
    }
    match admin.describe_log_dirs(id).await {
        Ok(dirs) => match volumes::plan_removal(&dirs, dropped) {
            RemovalStep::Empty => None,
            RemovalStep::Move { status, .. } | RemovalStep::Failed { status } => Some(format!(
                "{} replicas are still in {}",
                status.partitions_left,
                dropped.join(", ")
            )),
        },
        Err(e) => Some(format!(
            "cannot check that {} are empty: {e}",
            dropped.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapVolumeSource, Container, EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource,
        PodSpec, Volume, VolumeMount,
    };

    /// A broker Pod mounting its config, the metrics agent's emptyDir and a claim at each of
    /// `data`.
    fn pod(data: &[&str]) -> Pod {
        let mut volumes = vec![
            Volume {
                name: "config".into(),
                config_map: Some(ConfigMapVolumeSource::default()),
                ..Default::default()
            },
            Volume {
                name: "metrics-agent".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
        ];
        let mut mounts = vec![
            VolumeMount {
                name: "config".into(),
                mount_path: "/etc/pier".into(),
                ..Default::default()
            },
            VolumeMount {
                name: "metrics-agent".into(),
                mount_path: "/opt/pier-agent".into(),
                ..Default::default()
            },
        ];
        for (i, m) in data.iter().enumerate() {
            volumes.push(Volume {
                name: format!("data-{i}"),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: format!("claim-{m}"),
                    read_only: None,
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: format!("data-{i}"),
                mount_path: m.to_string(),
                ..Default::default()
            });
        }
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    volume_mounts: Some(mounts),
                    ..Default::default()
                }],
                volumes: Some(volumes),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn dropped_dirs_are_the_data_mounts_the_planned_pod_lacks() {
        let running = pod(&["/a", "/b"]);
        let planned = pod(&["/a"]);
        assert_eq!(dropped_dirs(Some(&running), Some(&planned)), ["/b/kafka"]);
        assert_eq!(dropped_dirs(Some(&running), None), ["/a/kafka", "/b/kafka"]);
        assert!(dropped_dirs(Some(&planned), Some(&running)).is_empty());
        assert!(dropped_dirs(None, Some(&planned)).is_empty());
    }
}
