//! The Kafka side of replica moves: asks Kafka what [`scaling::plan`] needs (a complete
//! [`KafkaView`], or none) and carries out its decisions: cancel, submit with throttles,
//! unregister, clear throttles, elect preferred leaders.
use std::collections::{BTreeMap, BTreeSet};

use crate::kafka::{AdminClient, ConfigOp, ConfigResource, KafkaError};
use crate::reconcile::scaling::{
    self, FOLLOWER_THROTTLED_RATE, FOLLOWER_THROTTLED_REPLICAS, KafkaView, LEADER_THROTTLED_RATE,
    LEADER_THROTTLED_REPLICAS, PartitionView, RegisteredBroker, ScalingPlan,
};

/// What the view should include beyond partitions and brokers.
pub struct Ask<'a> {
    /// Brokers that left the spec (their bytes and the topics' min.insync.replicas are asked
    /// when there are any).
    pub leaving: &'a BTreeSet<i32>,
    /// Look for throttles a crashed operator may have left.
    pub stale_throttles: bool,
}

/// Why there is no view.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("no broker is reachable")]
    NoBroker,
    #[error("{0}")]
    Kafka(#[from] KafkaError),
    #[error("topic {topic:?} could not be described (error code {code}); its replicas are unknown")]
    Topic { topic: String, code: i16 },
}

/// Every partition with its move in flight, the registered brokers, and what `ask` wants.
pub async fn observe(admin: &AdminClient, ask: Ask<'_>) -> Result<KafkaView, ViewError> {
    if admin.nodes().is_empty() {
        return Err(ViewError::NoBroker);
    }
    // Reassignments first, then metadata: a move that ends between the two answers is then seen
    // as still moving (its listed replicas win), never as a settled partition that holds old and
    // new replicas at once, which would be planned again with a replication factor too high.
    let ongoing: BTreeMap<(String, i32), crate::kafka::OngoingReassignment> = admin
        .list_partition_reassignments()
        .await?
        .into_iter()
        .map(|r| ((r.topic.clone(), r.partition), r))
        .collect();
    let md = admin.metadata(None).await?;
    if let Some(t) = md.topics.iter().find(|t| t.error_code != 0) {
        return Err(ViewError::Topic {
            topic: t.name.clone(),
            code: t.error_code,
        });
    }
    let mut partitions = Vec::new();
    for t in &md.topics {
        for p in &t.partitions {
            let mut view = PartitionView {
                topic: t.name.clone(),
                partition: p.index,
                replicas: p.replicas.clone(),
                ..Default::default()
            };
            if let Some(r) = ongoing.get(&(t.name.clone(), p.index)) {
                view.replicas = r.replicas.clone();
                view.adding = r.adding.clone();
                view.removing = r.removing.clone();
            }
            partitions.push(view);
        }
    }
    let registered = admin
        .describe_cluster()
        .await?
        .brokers
        .into_iter()
        .map(|b| {
            (
                b.id,
                RegisteredBroker {
                    rack: b.rack,
                    fenced: b.fenced,
                },
            )
        })
        .collect();
    let mut view = KafkaView {
        partitions,
        registered,
        ..Default::default()
    };
    let holding: Vec<i32> = ask
        .leaving
        .iter()
        .copied()
        .filter(|id| view.partitions.iter().any(|p| p.involves(*id)))
        .collect();
    if holding.is_empty() && !ask.stale_throttles {
        return Ok(view);
    }
    let topics: Vec<String> = md.topics.iter().map(|t| t.name.clone()).collect();
    let keys = [
        "min.insync.replicas",
        LEADER_THROTTLED_REPLICAS,
        FOLLOWER_THROTTLED_REPLICAS,
    ]
    .map(String::from);
    let configs = if topics.is_empty() {
        BTreeMap::new()
    } else {
        admin.describe_topic_configs(&topics, &keys).await?
    };
    let value = |entries: &[crate::kafka::ConfigEntry], key: &str| {
        entries
            .iter()
            .find(|e| e.name == key)
            .and_then(|e| e.value.clone())
            .filter(|v| !v.is_empty())
    };
    if !holding.is_empty() {
        view.min_insync = Some(
            configs
                .iter()
                .filter_map(|(t, entries)| {
                    Some((
                        t.clone(),
                        value(entries, "min.insync.replicas")?.parse().ok()?,
                    ))
                })
                .collect(),
        );
        for id in &holding {
            // Progress only: a broker that does not answer just has no byte count.
            if !admin.nodes().contains_key(id) {
                continue;
            }
            match admin.describe_log_dirs(*id).await {
                Ok(dirs) => {
                    let bytes = dirs
                        .iter()
                        .flat_map(|d| d.replicas.iter())
                        .filter(|r| !r.future)
                        .map(|r| r.size.max(0))
                        .sum();
                    view.bytes_on.insert(*id, bytes);
                }
                Err(e) => tracing::debug!(broker = id, error = %e, "no log dir sizes"),
            }
        }
    }
    if ask.stale_throttles {
        view.throttled_topics = Some(
            configs
                .iter()
                .filter(|(_, entries)| {
                    value(entries, LEADER_THROTTLED_REPLICAS).is_some()
                        || value(entries, FOLLOWER_THROTTLED_REPLICAS).is_some()
                })
                .map(|(t, _)| t.clone())
                .collect(),
        );
    }
    Ok(view)
}

/// Carries out the plan's Kafka operations; each failure is one line (the next reconcile
/// plans again from what Kafka then says).
pub async fn act(admin: &AdminClient, plan: &ScalingPlan) -> Vec<String> {
    let mut failures = Vec::new();
    let mut fail = |what: &str, e: KafkaError| {
        tracing::warn!(error = %e, "{what} failed");
        failures.push(format!("{what}: {e}"));
    };
    if !plan.cancel.is_empty()
        && let Err(e) = admin.cancel_partition_reassignments(&plan.cancel).await
    {
        fail("cancelling partition moves", e);
    }
    if let Some(t) = &plan.throttles {
        // Throttles first, so no byte moves unthrottled.
        if let Err(e) = set_throttles(admin, t).await {
            fail("setting replication throttles", e);
            return failures;
        }
    }
    if !plan.submit.is_empty() {
        match admin.alter_partition_reassignments(&plan.submit).await {
            Ok(()) => tracing::info!(partitions = plan.submit.len(), "partition moves submitted"),
            Err(e) => fail("submitting partition moves", e),
        }
    }
    for id in &plan.unregister {
        match admin.unregister_broker(*id).await {
            Ok(_) => tracing::info!(broker = id, "broker unregistered"),
            Err(e) => fail(&format!("unregistering broker {id}"), e),
        }
    }
    if let Some(c) = &plan.clear_throttles {
        for topic in &c.topics {
            let ops = [
                ConfigOp::delete(LEADER_THROTTLED_REPLICAS),
                ConfigOp::delete(FOLLOWER_THROTTLED_REPLICAS),
            ];
            let resource = ConfigResource::Topic(topic.clone());
            if let Err(e) = admin
                .incremental_alter_configs(&resource, &ops, false)
                .await
            {
                fail(&format!("removing the throttles of topic {topic}"), e);
            }
        }
        for id in &c.brokers {
            let ops = [
                ConfigOp::delete(LEADER_THROTTLED_RATE),
                ConfigOp::delete(FOLLOWER_THROTTLED_RATE),
            ];
            if let Err(e) = admin
                .incremental_alter_configs(&ConfigResource::Broker(*id), &ops, false)
                .await
            {
                fail(&format!("removing the throttle rates of broker {id}"), e);
            }
        }
    }
    if plan.elect_leaders
        && let Err(e) = admin.elect_preferred_leaders().await
    {
        fail("electing preferred leaders", e);
    }
    failures
}

/// Appends the moving replicas to each topic's throttled lists and sets both rates on every
/// broker that sends or receives.
pub(crate) async fn set_throttles(
    admin: &AdminClient,
    t: &scaling::Throttles,
) -> Result<(), KafkaError> {
    let topics: BTreeSet<&String> = t.leader.keys().chain(t.follower.keys()).collect();
    for topic in topics {
        let mut ops = Vec::new();
        for (key, lists) in [
            (LEADER_THROTTLED_REPLICAS, &t.leader),
            (FOLLOWER_THROTTLED_REPLICAS, &t.follower),
        ] {
            // One op per key (Kafka refuses a key twice in one request); APPEND adds each
            // list element that is not there yet.
            if let Some(entries) = lists.get(topic).filter(|e| !e.is_empty()) {
                ops.push(ConfigOp::append(key, entries.join(",")));
            }
        }
        admin
            .incremental_alter_configs(&ConfigResource::Topic(topic.clone()), &ops, false)
            .await?;
    }
    for id in &t.brokers {
        let ops = [
            ConfigOp::set(LEADER_THROTTLED_RATE, t.rate.to_string()),
            ConfigOp::set(FOLLOWER_THROTTLED_RATE, t.rate.to_string()),
        ];
        admin
            .incremental_alter_configs(&ConfigResource::Broker(*id), &ops, false)
            .await?;
    }
    Ok(())
}
