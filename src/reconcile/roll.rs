//! Rolling restarts, planned: which broker (if any) to restart now, given what each broker's
//! Pod is doing and what Kafka says about partitions and the KRaft quorum. One broker at a
//! time; broken Pods first and without gates (waiting for health there deadlocks, as in
//! banzaicloud/koperator#533); healthy ones only while no partition would drop below
//! min.insync.replicas and the quorum keeps a caught-up majority; the active controller last.
//! Failed gates and late brokers count toward the failure threshold; at the threshold the roll
//! pauses and resumes by itself once the gates pass again. Pure: the controller observes and
//! acts, and keeps [`RollState`] in the KafkaCluster status.
//!
//! Invariant: Pier never takes a second broker down. Whatever the persisted [`RollState`] says
//! (it may be stale), a node whose Pod is missing or terminating, or became unready within the
//! grace period (coming back, or flapping), blocks every restart of another node; the only
//! restarts without health gates are of nodes that serve nothing already (broken, or unready
//! for longer than the grace period).
use std::collections::BTreeSet;

/// What a broker's Pod is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// No Pod (the controller creates it; not a restart).
    Missing,
    /// Being deleted.
    Terminating,
    /// Running but not ready, since this time (ms since the epoch): when its Ready condition
    /// last turned false, or when the Pod was created.
    Starting {
        since_ms: i64,
    },
    Ready,
    /// Will not get ready by waiting: terminated, crash-looping, unschedulable, bad image.
    Broken {
        reason: String,
    },
}

/// One KRaft node as the roll sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub id: i32,
    pub broker: bool,
    pub controller: bool,
    /// Why this node needs a restart, if it does.
    pub restart_due: Option<String>,
    pub pod: PodState,
}

/// One partition's replicas as Kafka reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionHealth {
    pub topic: String,
    pub partition: i32,
    /// -1 = offline.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The topic's effective min.insync.replicas.
    pub min_isr: usize,
}

/// A voter of the KRaft quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    /// When the leader last saw this voter caught up (ms since the epoch).
    pub last_caught_up_ms: Option<i64>,
}

/// The KRaft quorum (DescribeQuorum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quorum {
    /// -1 when there is no leader.
    pub leader: i32,
    pub voters: Vec<Voter>,
    /// controller.quorum.fetch.timeout.ms: a voter further behind is not caught up.
    pub fetch_timeout_ms: i64,
}

impl Quorum {
    /// Voters caught up with the leader (the leader itself counts).
    fn caught_up(&self) -> BTreeSet<i32> {
        let leader_ts = self
            .voters
            .iter()
            .find(|v| v.id == self.leader)
            .and_then(|v| v.last_caught_up_ms);
        self.voters
            .iter()
            .filter(|v| {
                v.id == self.leader
                    || match (leader_ts, v.last_caught_up_ms) {
                        (Some(l), Some(t)) => l - t < self.fetch_timeout_ms,
                        _ => false,
                    }
            })
            .map(|v| v.id)
            .collect()
    }
}

/// What Kafka said about the cluster's health.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    pub partitions: Vec<PartitionHealth>,
    pub quorum: Option<Quorum>,
    /// Brokers registered and unfenced (DescribeCluster).
    pub active_brokers: BTreeSet<i32>,
    /// Alerts tagged for rolling upgrades that fire now; each counts as a failure.
    pub firing_alerts: u32,
}

/// Durable state of the roll (kept in status).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RollState {
    /// The node restarted last, until it is back.
    pub restarting: Option<i32>,
    /// When that restart began (ms since the epoch).
    pub restart_started_ms: Option<i64>,
    pub failures: u32,
    /// When the last failure was counted (ms since the epoch).
    pub last_failure_ms: Option<i64>,
    pub paused: bool,
}

/// Rules of the roll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollPolicy {
    pub failure_threshold: u32,
    pub ready_timeout_ms: i64,
    /// A failing gate counts once per this interval, however often it is checked.
    pub failure_interval_ms: i64,
    /// A Pod unready for longer than this serves nothing: it may be restarted without gates.
    /// A Pod unready for less may be a readiness flap, or one coming back from a restart.
    pub unready_grace_ms: i64,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollAction {
    /// Nothing needs a restart.
    Idle,
    /// A restarted node is not back yet.
    Wait { id: i32, why: String },
    /// Restart this node now; `gated` is false for broken Pods restarted without health gates.
    Restart {
        id: i32,
        gated: bool,
        reason: String,
    },
    /// Restarts are due but a health gate fails (counted as a failure).
    Blocked { why: String },
    /// The failure threshold is reached; restarts wait until the gates pass.
    Paused { why: String },
    /// The roll finished with this node: preferred leaders should be restored.
    Finished,
}

/// The decision and the state to persist with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollPlan {
    pub action: RollAction,
    pub state: RollState,
}

/// Decides the next step of the roll. `health` is `None` when Kafka could not be asked.
pub fn plan_roll(
    nodes: &[NodeState],
    health: Option<&Health>,
    prior: &RollState,
    policy: RollPolicy,
    now_ms: i64,
) -> RollPlan {
    let mut state = prior.clone();

    // 1. A restart in flight: wait until that node is back before anything else.
    if let Some(id) = prior.restarting {
        match nodes.iter().find(|n| n.id == id) {
            // Removed from the spec meanwhile: nothing to wait for.
            None => {
                state.restarting = None;
                state.restart_started_ms = None;
            }
            // Its new spec is already outdated and it is not running well: the broken-first
            // rule below restarts it again (a fixed spec must not wait for a broken Pod).
            Some(node) if node.restart_due.is_some() && !matches!(node.pod, PodState::Ready) => {
                state.restarting = None;
                state.restart_started_ms = None;
            }
            Some(node) => match back(node, health) {
                Ok(()) => {
                    // Progress: the failure count starts over.
                    state.restarting = None;
                    state.restart_started_ms = None;
                    state.failures = 0;
                    state.last_failure_ms = None;
                    state.paused = false;
                }
                Err(why) => {
                    let started = prior.restart_started_ms.unwrap_or(now_ms);
                    if now_ms - started > policy.ready_timeout_ms {
                        // Late: count it, and count again after another timeout.
                        state.failures = state.failures.saturating_add(1);
                        state.last_failure_ms = Some(now_ms);
                        state.restart_started_ms = Some(now_ms);
                        state.paused = state.failures >= policy.failure_threshold;
                        let why = format!(
                            "broker {id} is not back after {} s: {why}",
                            policy.ready_timeout_ms / 1000
                        );
                        return RollPlan {
                            action: if state.paused {
                                RollAction::Paused { why }
                            } else {
                                RollAction::Wait { id, why }
                            },
                            state,
                        };
                    }
                    return RollPlan {
                        action: RollAction::Wait { id, why },
                        state,
                    };
                }
            },
        }
    }

    let due: Vec<&NodeState> = nodes.iter().filter(|n| n.restart_due.is_some()).collect();
    if due.is_empty() {
        let finished = prior.restarting.is_some() && state.restarting.is_none();
        state = RollState::default();
        return RollPlan {
            action: if finished {
                RollAction::Finished
            } else {
                RollAction::Idle
            },
            state,
        };
    }

    // 2. The invariant: a Pod being replaced, or one not back yet, holds every restart. The
    // state persisted above may be stale; the Pods are not.
    if let Some(n) = nodes
        .iter()
        .find(|n| matches!(n.pod, PodState::Missing | PodState::Terminating))
    {
        return RollPlan {
            action: RollAction::Wait {
                id: n.id,
                why: format!("broker {} has no running Pod yet", n.id),
            },
            state,
        };
    }
    let starting = |n: &NodeState| matches!(n.pod, PodState::Starting { .. });
    let just_unready = |n: &NodeState| matches!(n.pod, PodState::Starting { since_ms } if now_ms - since_ms <= policy.unready_grace_ms);

    // 3. Nodes due for a restart that serve nothing already go first, without gates: broken
    // ones, and ones unready for longer than the grace period (a readiness flap is not that).
    // Waiting for health there would wait forever: the new spec may be what fixes them. Only
    // while no other node just became unready (it may be coming back from a restart).
    let serves_nothing = |n: &&&NodeState| match n.pod {
        PodState::Broken { .. } => true,
        PodState::Starting { .. } => !just_unready(n),
        _ => false,
    };
    if let Some(n) = due
        .iter()
        .find(|n| matches!(n.pod, PodState::Broken { .. }))
        .or_else(|| due.iter().find(serves_nothing))
        .filter(|c| !nodes.iter().any(|n| n.id != c.id && just_unready(n)))
    {
        let why = match &n.pod {
            PodState::Broken { reason } => format!("Pod is broken: {reason}"),
            _ => format!(
                "Pod has not been ready for over {} s",
                policy.unready_grace_ms / 1000
            ),
        };
        let reason = format!(
            "{} ({why}; restarted without health gates)",
            n.restart_due.clone().unwrap_or_default()
        );
        return restart(state, n.id, false, reason, now_ms);
    }

    // 4. Healthy nodes, one at a time, only when every gate passes.
    let health = match health {
        Some(h) => h,
        None => {
            return blocked(
                state,
                policy,
                "cannot read the cluster's health from Kafka".into(),
                now_ms,
            );
        }
    };
    let mut reasons = Vec::new();
    if health.firing_alerts > 0 {
        reasons.push(format!(
            "{} alert(s) tagged for rolling upgrades are firing",
            health.firing_alerts
        ));
    }
    let offline: Vec<String> = health
        .partitions
        .iter()
        .filter(|p| p.leader < 0)
        .map(|p| format!("{}-{}", p.topic, p.partition))
        .collect();
    if !offline.is_empty() {
        reasons.push(format!("offline partitions: {}", list(&offline)));
    }
    let not_ready: Vec<i32> = nodes.iter().filter(|n| starting(n)).map(|n| n.id).collect();
    if !not_ready.is_empty() {
        reasons.push(format!("brokers not ready: {not_ready:?}"));
    }
    if reasons.is_empty() {
        let leader = health.quorum.as_ref().map(|q| q.leader);
        let mut order = due.clone();
        // Controllers first (controller-only ones before combined nodes), then brokers, by
        // id; the active controller last. An upgrade thus reaches the quorum before the
        // brokers that depend on it, and costs one leader election.
        order.sort_by_key(|n| (Some(n.id) == leader, !n.controller, n.broker, n.id));
        for n in order {
            match gates(n, health) {
                Ok(()) => {
                    let reason = n.restart_due.clone().unwrap_or_default();
                    return restart(state, n.id, true, reason, now_ms);
                }
                Err(why) => reasons.push(format!("broker {}: {why}", n.id)),
            }
        }
    }
    blocked(state, policy, reasons.join("; "), now_ms)
}

fn restart(mut state: RollState, id: i32, gated: bool, reason: String, now_ms: i64) -> RollPlan {
    state.restarting = Some(id);
    state.restart_started_ms = Some(now_ms);
    state.paused = false;
    RollPlan {
        action: RollAction::Restart { id, gated, reason },
        state,
    }
}

fn blocked(mut state: RollState, policy: RollPolicy, why: String, now_ms: i64) -> RollPlan {
    let due = state
        .last_failure_ms
        .is_none_or(|last| now_ms - last >= policy.failure_interval_ms);
    if due {
        state.failures = state.failures.saturating_add(1);
        state.last_failure_ms = Some(now_ms);
    }
    state.paused = state.failures >= policy.failure_threshold;
    RollPlan {
        action: if state.paused {
            RollAction::Paused {
                why: format!(
                    "paused after {} failures (threshold {}): {why}",
                    state.failures, policy.failure_threshold
                ),
            }
        } else {
            RollAction::Blocked { why }
        },
        state,
    }
}

/// Whether a restarted node is back: Pod ready, broker registered and unfenced and in the ISR
/// of every partition it holds, controller caught up with the quorum.
fn back(node: &NodeState, health: Option<&Health>) -> Result<(), String> {
    match &node.pod {
        PodState::Ready => {}
        PodState::Broken { reason } => return Err(format!("its Pod is broken: {reason}")),
        PodState::Missing | PodState::Terminating => return Err("its Pod is being replaced".into()),
        PodState::Starting { .. } => return Err("its Pod is not ready".into()),
    }
    let health = health.ok_or("cannot read the cluster's health from Kafka")?;
    if node.broker {
        if !health.active_brokers.contains(&node.id) {
            return Err("not registered or still fenced".into());
        }
        let behind: Vec<String> = health
            .partitions
            .iter()
            .filter(|p| p.replicas.contains(&node.id) && !p.isr.contains(&node.id))
            .map(|p| format!("{}-{}", p.topic, p.partition))
            .collect();
        if !behind.is_empty() {
            return Err(format!("not in the ISR of {}", list(&behind)));
        }
    }
    if node.controller
        && let Some(q) = &health.quorum
        && !q.caught_up().contains(&node.id)
    {
        return Err("not caught up with the KRaft quorum".into());
    }
    Ok(())
}

/// The health gates for restarting a healthy node.
fn gates(node: &NodeState, health: &Health) -> Result<(), String> {
    if node.broker {
        let mut at_risk = Vec::new();
        for p in health
            .partitions
            .iter()
            .filter(|p| p.replicas.contains(&node.id))
        {
            // Replication factor at or below min ISR can never be restarted safely: waiting
            // would block forever (strimzi/strimzi-kafka-operator#2964), so it does not gate.
            if p.replicas.len() <= p.min_isr {
                continue;
            }
            let in_isr = p.isr.contains(&node.id);
            if p.isr.len() < p.min_isr || (in_isr && p.isr.len() == p.min_isr) {
                at_risk.push(format!(
                    "{}-{} (ISR {:?}, min.insync.replicas {})",
                    p.topic, p.partition, p.isr, p.min_isr
                ));
            }
        }
        if !at_risk.is_empty() {
            return Err(format!(
                "restarting it would leave partitions under min.insync.replicas: {}",
                list(&at_risk)
            ));
        }
    }
    if node.controller {
        let q = health
            .quorum
            .as_ref()
            .ok_or("the KRaft quorum could not be described")?;
        if q.leader < 0 {
            return Err("the KRaft quorum has no leader".into());
        }
        let voters = q.voters.len();
        // A quorum of one or two voters loses its majority with any voter down, however
        // caught up the others are: gating would block the roll forever (as replication
        // factor ≤ min ISR for partitions), so it does not gate.
        let can_keep_majority = voters > voters / 2 + 1;
        if can_keep_majority && q.voters.iter().any(|v| v.id == node.id) {
            let others = q
                .caught_up()
                .into_iter()
                .filter(|id| *id != node.id)
                .count();
            let majority = voters / 2 + 1;
            if others < majority {
                return Err(format!(
                    "only {others} other voter(s) are caught up; the quorum of {voters} needs {majority}"
                ));
            }
        }
    }
    Ok(())
}

/// At most ten items, then a count.
fn list(items: &[String]) -> String {
    if items.len() <= 10 {
        items.join(", ")
    } else {
        format!("{} and {} more", items[..10].join(", "), items.len() - 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RollPolicy = RollPolicy {
        failure_threshold: 3,
        ready_timeout_ms: 60_000,
        failure_interval_ms: 10_000,
        unready_grace_ms: 30_000,
    };

    fn node(id: i32, due: bool) -> NodeState {
        NodeState {
            id,
            broker: true,
            controller: true,
            restart_due: due.then(|| "read-only config changed".to_string()),
            pod: PodState::Ready,
        }
    }

    fn part(name: &str, replicas: &[i32], isr: &[i32], min_isr: usize) -> PartitionHealth {
        PartitionHealth {
            topic: name.into(),
            partition: 0,
            leader: isr.first().copied().unwrap_or(-1),
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            min_isr,
        }
    }

    fn healthy(leader: i32) -> Health {
        Health {
            partitions: vec![part("t", &[1, 2, 3], &[1, 2, 3], 2)],
            quorum: Some(Quorum {
                leader,
                voters: (1..=3)
                    .map(|id| Voter {
                        id,
                        last_caught_up_ms: Some(1_000),
                    })
                    .collect(),
                fetch_timeout_ms: 2_000,
            }),
            active_brokers: [1, 2, 3].into(),
            firing_alerts: 0,
        }
    }

    fn plan(nodes: &[NodeState], h: Option<&Health>, prior: &RollState) -> RollPlan {
        plan_roll(nodes, h, prior, POLICY, 100_000)
    }

    #[test]
    fn nothing_due_is_idle_and_clears_failures() {
        let prior = RollState {
            failures: 2,
            paused: true,
            ..Default::default()
        };
        let p = plan(&[node(1, false), node(2, false)], None, &prior);
        assert_eq!(p.action, RollAction::Idle);
        assert_eq!(p.state, RollState::default());
    }

    #[test]
    fn healthy_cluster_restarts_lowest_id_and_active_controller_last() {
        let nodes = [node(1, true), node(2, true), node(3, true)];
        let p = plan(&nodes, Some(&healthy(1)), &RollState::default());
        assert!(matches!(
            p.action,
            RollAction::Restart {
                id: 2,
                gated: true,
                ..
            }
        ));
        assert_eq!(p.state.restarting, Some(2));
        assert_eq!(p.state.restart_started_ms, Some(100_000));
        // Only the leader left: now it goes.
        let nodes = [node(1, true), node(2, false), node(3, false)];
        let p = plan(&nodes, Some(&healthy(1)), &RollState::default());
        assert!(matches!(p.action, RollAction::Restart { id: 1, .. }));
    }

    #[test]
    fn controller_only_nodes_go_before_brokers() {
        let mut c = node(9, true);
        c.broker = false;
        let nodes = [node(1, true), c];
        let mut h = healthy(1);
        h.quorum.as_mut().unwrap().voters.push(Voter {
            id: 9,
            last_caught_up_ms: Some(1_000),
        });
        let p = plan(&nodes, Some(&h), &RollState::default());
        assert!(matches!(p.action, RollAction::Restart { id: 9, .. }));
    }

    #[test]
    fn a_quorum_of_two_never_keeps_its_majority_so_it_does_not_gate() {
        let mut h = healthy(1);
        h.quorum.as_mut().unwrap().voters.truncate(2);
        // Voter 2 is the one that restarts; voter 1 is all that is left either way.
        let nodes = [node(1, false), node(2, true), node(3, false)];
        let p = plan(&nodes, Some(&h), &RollState::default());
        assert!(
            matches!(p.action, RollAction::Restart { id: 2, .. }),
            "{p:?}"
        );
        // Three voters with one behind: the gate holds.
        let mut behind = healthy(1);
        behind.quorum.as_mut().unwrap().voters[2].last_caught_up_ms = None;
        let p = plan(&nodes, Some(&behind), &RollState::default());
        assert!(matches!(p.action, RollAction::Blocked { .. }), "{p:?}");
    }

    #[test]
    fn controllers_go_before_broker_only_nodes_and_the_leader_last() {
        // 1 broker-only, 2 combined, 3 combined and leader, 9 controller-only.
        let mut broker_only = node(1, true);
        broker_only.controller = false;
        let mut controller_only = node(9, true);
        controller_only.broker = false;
        let mut h = healthy(3);
        h.quorum.as_mut().unwrap().voters.push(Voter {
            id: 9,
            last_caught_up_ms: Some(1_000),
        });
        let mut nodes = vec![broker_only, node(2, true), node(3, true), controller_only];
        let mut order = Vec::new();
        for _ in 0..4 {
            let p = plan(&nodes, Some(&h), &RollState::default());
            let RollAction::Restart { id, .. } = p.action else {
                panic!("{p:?}")
            };
            order.push(id);
            nodes.iter_mut().find(|n| n.id == id).unwrap().restart_due = None;
        }
        assert_eq!(order, [9, 2, 1, 3]);
    }

    #[test]
    fn waits_for_the_restarted_broker_to_be_back_in_sync() {
        let prior = RollState {
            restarting: Some(2),
            restart_started_ms: Some(90_000),
            failures: 1,
            paused: false,
            ..Default::default()
        };
        let nodes = [node(1, true), node(2, false), node(3, true)];
        let mut h = healthy(1);
        h.partitions = vec![part("t", &[1, 2, 3], &[1, 3], 2)];
        let p = plan(&nodes, Some(&h), &prior);
        assert!(
            matches!(&p.action, RollAction::Wait { id: 2, why } if why.contains("ISR of t-0")),
            "{p:?}"
        );
        assert_eq!(p.state, prior);

        // Pod not ready yet.
        let mut starting = nodes.clone();
        starting[1].pod = PodState::Starting { since_ms: 95_000 };
        let p = plan(&starting, Some(&healthy(1)), &prior);
        assert!(matches!(p.action, RollAction::Wait { id: 2, .. }));

        // Fenced.
        let mut fenced = healthy(1);
        fenced.active_brokers.remove(&2);
        let p = plan(&nodes, Some(&fenced), &prior);
        assert!(matches!(&p.action, RollAction::Wait { why, .. } if why.contains("fenced")));
    }

    #[test]
    fn a_broker_back_in_sync_resets_failures_and_the_next_one_goes() {
        let prior = RollState {
            restarting: Some(2),
            restart_started_ms: Some(90_000),
            failures: 2,
            paused: false,
            ..Default::default()
        };
        let nodes = [node(1, true), node(2, false), node(3, true)];
        let p = plan(&nodes, Some(&healthy(1)), &prior);
        assert!(matches!(p.action, RollAction::Restart { id: 3, .. }));
        assert_eq!(p.state.failures, 0);
        assert_eq!(p.state.restarting, Some(3));
    }

    #[test]
    fn the_last_broker_back_finishes_the_roll() {
        let prior = RollState {
            restarting: Some(1),
            restart_started_ms: Some(90_000),
            ..Default::default()
        };
        let nodes = [node(1, false), node(2, false)];
        let p = plan(&nodes, Some(&healthy(1)), &prior);
        assert_eq!(p.action, RollAction::Finished);
        assert_eq!(p.state, RollState::default());
    }

    #[test]
    fn a_late_broker_counts_once_per_timeout_and_can_pause() {
        let prior = RollState {
            restarting: Some(2),
            restart_started_ms: Some(30_000),
            failures: 2,
            paused: false,
            ..Default::default()
        };
        let mut nodes = [node(1, true), node(2, false)];
        nodes[1].pod = PodState::Starting { since_ms: 30_000 };
        let p = plan(&nodes, Some(&healthy(1)), &prior);
        assert!(
            matches!(&p.action, RollAction::Paused { why } if why.contains("not back after 60 s"))
        );
        assert_eq!(p.state.failures, 3);
        assert!(p.state.paused);
        assert_eq!(p.state.restart_started_ms, Some(100_000));
        assert_eq!(p.state.restarting, Some(2), "still waiting for it");
    }

    #[test]
    fn a_restarted_broker_crashing_with_an_outdated_spec_is_restarted_again() {
        let prior = RollState {
            restarting: Some(2),
            restart_started_ms: Some(90_000),
            ..Default::default()
        };
        let mut nodes = [node(1, false), node(2, true)];
        nodes[1].pod = PodState::Broken {
            reason: "CrashLoopBackOff".into(),
        };
        let p = plan(&nodes, None, &prior);
        assert!(matches!(
            p.action,
            RollAction::Restart {
                id: 2,
                gated: false,
                ..
            }
        ));
    }

    #[test]
    fn a_restarted_node_removed_from_the_spec_is_not_waited_for() {
        let prior = RollState {
            restarting: Some(7),
            restart_started_ms: Some(1),
            ..Default::default()
        };
        let p = plan(&[node(1, true)], Some(&healthy(1)), &prior);
        assert!(matches!(p.action, RollAction::Restart { id: 1, .. }));
    }

    #[test]
    fn broken_pods_go_first_without_gates() {
        // Broker 3 crash-loops with the old config; the cluster is unhealthy because of it.
        let mut nodes = [node(1, true), node(2, true), node(3, true)];
        nodes[2].pod = PodState::Broken {
            reason: "CrashLoopBackOff".into(),
        };
        let mut h = healthy(1);
        h.partitions = vec![part("t", &[1, 2, 3], &[1, 2], 2)];
        h.active_brokers.remove(&3);
        let p = plan(&nodes, Some(&h), &RollState::default());
        assert!(
            matches!(&p.action, RollAction::Restart { id: 3, gated: false, reason } if reason.contains("CrashLoopBackOff")),
            "{p:?}"
        );
        // Even without any health information.
        let p = plan(&nodes, None, &RollState::default());
        assert!(matches!(p.action, RollAction::Restart { id: 3, .. }));
    }

    #[test]
    fn a_broken_pod_that_needs_no_restart_blocks_by_its_partitions() {
        // koperator#533: an unrelated broker died. It does not need a restart, so it cannot be
        // fixed by the roll; the gates block until it is back, then the roll resumes.
        let nodes = [node(1, true), node(2, true), node(3, false)];
        let mut h = healthy(1);
        h.partitions = vec![part("t", &[1, 2, 3], &[1, 2], 2)];
        let p = plan(&nodes, Some(&h), &RollState::default());
        assert!(
            matches!(&p.action, RollAction::Blocked { why } if why.contains("broker 2") && why.contains("under min.insync.replicas")),
            "{p:?}"
        );
        assert_eq!(p.state.failures, 1);
        let p = plan(&nodes, Some(&healthy(1)), &p.state);
        assert!(matches!(p.action, RollAction::Restart { id: 2, .. }));
        assert_eq!(
            p.state.failures, 1,
            "failures reset only once a broker is back"
        );
    }

    #[test]
    fn min_isr_gate_follows_strimzi_rules() {
        let n = node(1, true);
        let h = |p: PartitionHealth| Health {
            partitions: vec![p],
            quorum: healthy(1).quorum,
            ..healthy(1)
        };
        // ISR above min: fine.
        assert!(gates(&n, &h(part("a", &[1, 2, 3], &[1, 2, 3], 2))).is_ok());
        // ISR at min and the node in it: would stall acks=all producers.
        assert!(gates(&n, &h(part("a", &[1, 2, 3], &[1, 2], 2))).is_err());
        // ISR at min without the node: restarting it changes nothing.
        assert!(gates(&n, &h(part("a", &[1, 2, 3], &[2, 3], 2))).is_ok());
        // ISR below min: block (the node may be the one to catch up).
        assert!(gates(&n, &h(part("a", &[1, 2, 3], &[2], 2))).is_err());
        // Replication factor at or below min ISR can never be safe: ignored.
        assert!(gates(&n, &h(part("a", &[1, 2], &[1, 2], 2))).is_ok());
        assert!(gates(&n, &h(part("a", &[1], &[1], 1))).is_ok());
        // Partitions elsewhere do not matter.
        assert!(gates(&n, &h(part("a", &[2, 3, 4], &[2], 2))).is_ok());
    }

    #[test]
    fn quorum_gate_needs_a_caught_up_majority_without_the_node() {
        let n = node(2, true);
        let mut h = healthy(1);
        assert!(gates(&n, &h).is_ok());
        // Voter 3 is behind by more than the fetch timeout: only the leader is left.
        h.quorum.as_mut().unwrap().voters[2].last_caught_up_ms = Some(-5_000);
        let err = gates(&n, &h).unwrap_err();
        assert!(err.contains("only 1 other voter"), "{err}");
        // No leader at all.
        h.quorum.as_mut().unwrap().leader = -1;
        assert!(gates(&n, &h).unwrap_err().contains("no leader"));
        // A single voter may restart (nothing better is possible).
        let single = Health {
            quorum: Some(Quorum {
                leader: 2,
                voters: vec![Voter {
                    id: 2,
                    last_caught_up_ms: Some(1),
                }],
                fetch_timeout_ms: 2_000,
            }),
            ..Health::default()
        };
        assert!(gates(&n, &single).is_ok());
    }

    #[test]
    fn offline_partitions_and_firing_alerts_block() {
        let nodes = [node(1, true), node(2, true)];
        let mut h = healthy(1);
        h.partitions.push(PartitionHealth {
            leader: -1,
            ..part("gone", &[4], &[], 1)
        });
        let p = plan(&nodes, Some(&h), &RollState::default());
        assert!(
            matches!(&p.action, RollAction::Blocked { why } if why.contains("offline partitions: gone-0"))
        );
        let mut h = healthy(1);
        h.firing_alerts = 2;
        let p = plan(&nodes, Some(&h), &RollState::default());
        assert!(matches!(&p.action, RollAction::Blocked { why } if why.contains("2 alert(s)")));
    }

    #[test]
    fn failures_reach_the_threshold_pause_and_resume_when_healthy() {
        let nodes = [node(1, true), node(2, true)];
        let mut sick = healthy(1);
        sick.partitions = vec![part("t", &[1, 2, 3], &[1, 2], 2)];
        let mut state = RollState::default();
        let mut actions = Vec::new();
        for i in 0..4 {
            let p = plan_roll(&nodes, Some(&sick), &state, POLICY, 100_000 + i * 10_000);
            actions.push(std::mem::discriminant(&p.action));
            state = p.state;
        }
        let blocked = std::mem::discriminant(&RollAction::Blocked { why: String::new() });
        let paused = std::mem::discriminant(&RollAction::Paused { why: String::new() });
        assert_eq!(actions, [blocked, blocked, paused, paused]);
        assert_eq!(state.failures, 4);
        assert!(state.paused);
        // Checked again within the interval: not counted again (no status write, no hot loop).
        let p = plan_roll(&nodes, Some(&sick), &state, POLICY, 135_000);
        assert_eq!(p.state, state);
        // Persisted state survives an operator restart: a fresh plan from it stays paused.
        let p = plan_roll(&nodes, Some(&sick), &state, POLICY, 140_000);
        assert!(matches!(&p.action, RollAction::Paused { why } if why.contains("threshold 3")));
        assert_eq!(p.state.failures, 5);
        // Healthy again: resumes by itself.
        let p = plan_roll(&nodes, Some(&healthy(1)), &state, POLICY, 141_000);
        assert!(matches!(p.action, RollAction::Restart { id: 2, .. }));
        assert!(!p.state.paused);
    }

    #[test]
    fn unknown_health_blocks_healthy_restarts() {
        let p = plan(&[node(1, true)], None, &RollState::default());
        assert!(matches!(&p.action, RollAction::Blocked { why } if why.contains("cannot read")));
    }

    #[test]
    fn missing_or_starting_pods_hold_the_roll() {
        let mut nodes = [node(1, true), node(2, false)];
        nodes[1].pod = PodState::Missing;
        let p = plan(&nodes, Some(&healthy(1)), &RollState::default());
        assert!(matches!(p.action, RollAction::Wait { id: 2, .. }));
        nodes[1].pod = PodState::Starting { since_ms: 1 };
        let p = plan(&nodes, Some(&healthy(1)), &RollState::default());
        assert!(matches!(&p.action, RollAction::Blocked { why } if why.contains("not ready")));
    }

    #[test]
    fn pods_unready_past_the_ready_timeout_go_first_without_gates() {
        let mut nodes = [node(1, true), node(2, true)];
        nodes[1].pod = PodState::Starting { since_ms: 1 };
        let p = plan(&nodes, None, &RollState::default());
        assert!(
            matches!(&p.action, RollAction::Restart { id: 2, gated: false, reason } if reason.contains("not been ready")),
            "{p:?}"
        );
    }

    #[test]
    fn a_readiness_flap_does_not_bypass_the_gates() {
        // Broker 2 turned unready a moment ago: it may well be serving; gates decide.
        let mut nodes = [node(1, true), node(2, true), node(3, false)];
        nodes[1].pod = PodState::Starting {
            since_ms: 100_000 - 5_000,
        };
        let p = plan(&nodes, Some(&healthy(1)), &RollState::default());
        assert!(
            matches!(&p.action, RollAction::Blocked { why } if why.contains("not ready")),
            "{p:?}"
        );
    }

    #[test]
    fn a_stale_roll_state_never_restarts_a_second_broker() {
        // The status lost `restarting` (a stale write), but broker 1's Pod is still going away
        // or coming back: nothing else may restart, gated or not, whatever the others look like.
        let stale = RollState::default();
        for down in [
            PodState::Terminating,
            PodState::Missing,
            PodState::Starting { since_ms: 99_000 },
        ] {
            let mut nodes = [node(1, false), node(2, true), node(3, true)];
            nodes[0].pod = down.clone();
            nodes[2].pod = PodState::Broken {
                reason: "CrashLoopBackOff".into(),
            };
            let p = plan(&nodes, Some(&healthy(2)), &stale);
            assert!(
                !matches!(p.action, RollAction::Restart { .. }),
                "{down:?}: {p:?}"
            );
            let mut nodes = [node(1, false), node(2, true)];
            nodes[0].pod = down.clone();
            nodes[1].pod = PodState::Starting { since_ms: 1 };
            let p = plan(&nodes, None, &stale);
            assert!(
                !matches!(p.action, RollAction::Restart { .. }),
                "{down:?}: {p:?}"
            );
        }
    }

    #[test]
    fn restarting_the_same_broken_broker_again_is_allowed() {
        // Only the broker that is down anyway may be restarted again: that never adds a
        // second broker down.
        let mut nodes = [node(1, false), node(2, true)];
        nodes[1].pod = PodState::Broken {
            reason: "Error".into(),
        };
        let p = plan(&nodes, Some(&healthy(1)), &RollState::default());
        assert!(matches!(p.action, RollAction::Restart { id: 2, .. }));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const NOW: i64 = 1_000_000;

        fn pod_state() -> impl Strategy<Value = PodState> {
            prop_oneof![
                Just(PodState::Missing),
                Just(PodState::Terminating),
                Just(PodState::Ready),
                Just(PodState::Ready),
                Just(PodState::Broken {
                    reason: "CrashLoopBackOff".into()
                }),
                (0i64..120_000).prop_map(|ago| PodState::Starting {
                    since_ms: NOW - ago
                }),
            ]
        }

        fn nodes() -> impl Strategy<Value = Vec<NodeState>> {
            prop::collection::vec((pod_state(), any::<bool>(), any::<bool>()), 1..6).prop_map(|v| {
                v.into_iter()
                    .enumerate()
                    .map(|(i, (pod, due, controller))| NodeState {
                        id: i as i32,
                        broker: true,
                        controller,
                        restart_due: due.then(|| "changed".to_string()),
                        pod,
                    })
                    .collect()
            })
        }

        fn health(n: usize) -> impl Strategy<Value = Option<Health>> {
            let ids: Vec<i32> = (0..n as i32).collect();
            proptest::option::of(
                (
                    prop::collection::btree_set(0..n as i32, 0..=n),
                    prop::collection::vec(prop::collection::btree_set(0..n as i32, 1..=n), 0..4),
                    1usize..3,
                )
                    .prop_map(move |(active, isrs, min_isr)| Health {
                        partitions: isrs
                            .into_iter()
                            .enumerate()
                            .map(|(i, isr)| PartitionHealth {
                                topic: "t".into(),
                                partition: i as i32,
                                leader: *isr.iter().next().unwrap_or(&-1),
                                replicas: ids.clone(),
                                isr: isr.into_iter().collect(),
                                min_isr,
                            })
                            .collect(),
                        quorum: None,
                        active_brokers: active,
                        firing_alerts: 0,
                    }),
            )
        }

        fn case() -> impl Strategy<Value = (Vec<NodeState>, Option<Health>, RollState)> {
            nodes().prop_flat_map(|nodes| {
                let n = nodes.len();
                (
                    Just(nodes),
                    health(n),
                    (proptest::option::of(0..n as i32 + 1), 0u32..4).prop_map(
                        |(restarting, failures)| RollState {
                            restarting,
                            restart_started_ms: restarting.map(|_| NOW - 5_000),
                            failures,
                            ..Default::default()
                        },
                    ),
                )
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

            /// Whatever the persisted state says, a restart never takes down a second broker:
            /// no other node is being replaced or just became unready, and a gated restart is
            /// of a ready node.
            #[test]
            fn never_two_brokers_down((nodes, health, prior) in case()) {
                let plan = plan_roll(&nodes, health.as_ref(), &prior, POLICY, NOW);
                if let RollAction::Restart { id, gated, .. } = plan.action {
                    for n in nodes.iter().filter(|n| n.id != id) {
                        let down = match n.pod {
                            PodState::Missing | PodState::Terminating => true,
                            PodState::Starting { since_ms } => NOW - since_ms <= POLICY.unready_grace_ms,
                            _ => false,
                        };
                        prop_assert!(!down, "restarted {id} while {n:?}");
                    }
                    let me = nodes.iter().find(|n| n.id == id).unwrap();
                    prop_assert!(me.restart_due.is_some());
                    if gated {
                        prop_assert_eq!(&me.pod, &PodState::Ready);
                        prop_assert!(health.is_some());
                    }
                    prop_assert_eq!(plan.state.restarting, Some(id));
                }
            }

            /// Planning the same inputs twice gives the same plan.
            #[test]
            fn deterministic((nodes, health, prior) in case()) {
                prop_assert_eq!(
                    plan_roll(&nodes, health.as_ref(), &prior, POLICY, NOW),
                    plan_roll(&nodes, health.as_ref(), &prior, POLICY, NOW)
                );
            }
        }
    }
}
