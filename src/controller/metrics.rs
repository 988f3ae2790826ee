//! Per-cluster operator metrics, from each status the controller writes: brokers by phase, the
//! roll's progress, replica moves left, alert actions by result; and whether this replica leads.
//! Every series a cluster has is created on its first reconcile (at zero), so dashboards and
//! alert rules find them before anything happens.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::ClusterLabels;
use crate::api::{AlertActionState, BrokerPhase, KafkaClusterStatus};
// The built-in actions' series exist from the start.
use crate::reconcile::alerts::BUILT_IN_ACTIONS;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub namespace: String,
    pub cluster: String,
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LogDirLabels {
    pub namespace: String,
    pub cluster: String,
    pub broker_id: String,
    pub log_dir: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertActionLabels {
    pub namespace: String,
    pub cluster: String,
    pub action: String,
    pub result: &'static str,
}

const PHASES: [(BrokerPhase, &str); 4] = [
    (BrokerPhase::Pending, "pending"),
    (BrokerPhase::Running, "running"),
    (BrokerPhase::Draining, "draining"),
    (BrokerPhase::Removed, "removed"),
];

/// What happened to an alert action, as the metric says it.
pub fn result_label(state: AlertActionState) -> &'static str {
    match state {
        AlertActionState::Pending => "recorded",
        AlertActionState::Applied => "applied",
        AlertActionState::DryRun => "dryRun",
        AlertActionState::Refused => "refused",
        AlertActionState::Failed => "failed",
    }
}

/// Results counted for every action (a duplicate is an alert already in the log).
const RESULTS: [&str; 6] = [
    "recorded",
    "applied",
    "dryRun",
    "refused",
    "failed",
    "duplicate",
];

#[derive(Default)]
pub struct ClusterMetrics {
    brokers: Family<PhaseLabels, Gauge>,
    roll_paused: Family<ClusterLabels, Gauge>,
    roll_pending: Family<ClusterLabels, Gauge>,
    moves_left: Family<ClusterLabels, Gauge>,
    alert_actions: Family<AlertActionLabels, Counter>,
    log_dir_usable: Family<LogDirLabels, Gauge>,
    log_dir_total: Family<LogDirLabels, Gauge>,
    /// 1 while this replica leads (reconciles), else 0.
    pub leader: Gauge,
}

fn labels(namespace: &str, cluster: &str) -> ClusterLabels {
    ClusterLabels {
        namespace: namespace.to_string(),
        cluster: cluster.to_string(),
    }
}

impl ClusterMetrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "pier_leader",
            "1 while this operator replica leads (reconciles), else 0",
            self.leader.clone(),
        );
        registry.register(
            "pier_cluster_brokers",
            "Brokers of a cluster by phase (pending, running, draining, removed)",
            self.brokers.clone(),
        );
        registry.register(
            "pier_roll_paused",
            "1 while a cluster's rolling restart is paused at its failure threshold",
            self.roll_paused.clone(),
        );
        registry.register(
            "pier_roll_brokers_pending",
            "Brokers a cluster's rolling restart still has to restart",
            self.roll_pending.clone(),
        );
        registry.register(
            "pier_replica_moves_partitions_left",
            "Partitions a cluster's replica move (drain or rebalance) still has to move",
            self.moves_left.clone(),
        );
        registry.register(
            "pier_log_dir_usable_bytes",
            "Free bytes of a broker's log dir, as the broker reports them (DescribeLogDirs)",
            self.log_dir_usable.clone(),
        );
        registry.register(
            "pier_log_dir_total_bytes",
            "Capacity of a broker's log dir, as the broker reports it (DescribeLogDirs)",
            self.log_dir_total.clone(),
        );
        registry.register(
            "pier_alert_actions",
            "Alert actions by cluster, action and result (recorded, applied, dryRun, refused, failed, duplicate)",
            self.alert_actions.clone(),
        );
    }

    /// Sets a cluster's gauges from the status just computed; `roll_pending` is the number of
    /// brokers whose restart is due.
    pub fn observe(
        &self,
        namespace: &str,
        cluster: &str,
        status: &KafkaClusterStatus,
        roll_pending: usize,
    ) {
        for (phase, name) in PHASES {
            let count = status.brokers.iter().filter(|b| b.phase == phase).count();
            self.brokers
                .get_or_create(&PhaseLabels {
                    namespace: namespace.to_string(),
                    cluster: cluster.to_string(),
                    phase: name,
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let key = labels(namespace, cluster);
        let paused = status.rolling_upgrade.as_ref().is_some_and(|r| r.paused);
        self.roll_paused.get_or_create(&key).set(i64::from(paused));
        self.roll_pending
            .get_or_create(&key)
            .set(i64::try_from(roll_pending).unwrap_or(i64::MAX));
        let left = status
            .replica_moves
            .as_ref()
            .map_or(0, |m| i64::from(m.partitions_left));
        self.moves_left.get_or_create(&key).set(left);
        for action in BUILT_IN_ACTIONS {
            for result in RESULTS {
                // Creates the series at zero.
                let _ = self.alert_actions.get_or_create(&AlertActionLabels {
                    namespace: namespace.to_string(),
                    cluster: cluster.to_string(),
                    action: action.to_string(),
                    result,
                });
            }
        }
    }

    /// A broker's log dirs as it reports them (dirs that report no sizes are left out).
    pub fn log_dirs(
        &self,
        namespace: &str,
        cluster: &str,
        broker: i32,
        dirs: &[crate::kafka::LogDir],
    ) {
        for d in dirs.iter().filter(|d| d.total_bytes >= 0) {
            let labels = LogDirLabels {
                namespace: namespace.to_string(),
                cluster: cluster.to_string(),
                broker_id: broker.to_string(),
                log_dir: d.path.clone(),
            };
            self.log_dir_usable
                .get_or_create(&labels)
                .set(d.usable_bytes);
            self.log_dir_total.get_or_create(&labels).set(d.total_bytes);
        }
    }

    /// Counts an alert action's result.
    pub fn alert_action(&self, namespace: &str, cluster: &str, action: &str, result: &'static str) {
        self.alert_actions
            .get_or_create(&AlertActionLabels {
                namespace: namespace.to_string(),
                cluster: cluster.to_string(),
                action: action.to_string(),
                result,
            })
            .inc();
    }

    /// Drops a deleted cluster's series.
    pub fn forget(&self, namespace: &str, cluster: &str) {
        for (_, phase) in PHASES {
            self.brokers.remove(&PhaseLabels {
                namespace: namespace.to_string(),
                cluster: cluster.to_string(),
                phase,
            });
        }
        let key = labels(namespace, cluster);
        self.roll_paused.remove(&key);
        self.roll_pending.remove(&key);
        self.moves_left.remove(&key);
        // A Family cannot list one cluster's series: all are dropped, the other clusters' come back
        // with their next reconcile.
        self.log_dir_usable.clear();
        self.log_dir_total.clear();
        // Counters of declared actions are not enumerable here; built-ins are dropped.
        for action in BUILT_IN_ACTIONS {
            for result in RESULTS {
                self.alert_actions.remove(&AlertActionLabels {
                    namespace: namespace.to_string(),
                    cluster: cluster.to_string(),
                    action: action.to_string(),
                    result,
                });
            }
        }
    }
}
