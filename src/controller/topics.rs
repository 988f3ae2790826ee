//! The KafkaTopic controller: asks Kafka what `reconcile::topic` needs, carries its plan out,
//! writes each KafkaTopic's status, and deletes the topic in Kafka through a finalizer that
//! never hangs.
//!
//! Kafka is asked per cluster, not per topic: one snapshot (Metadata of every topic, the
//! configs of all managed topics in one DescribeConfigs, the reassignments in flight) serves
//! every KafkaTopic of a cluster for [`SNAPSHOT_MAX_AGE`]; a topic Pier just changed is marked
//! and asked about alone on its next reconcile. Thousands of KafkaTopics are then a handful of
//! requests per period, and a topic in sync costs no request at all.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use super::{Context, member, scoped};
use crate::api::{
    DeletionPolicy, KafkaCluster, KafkaTopic, KafkaTopicStatus, Role, TOPIC_FINALIZER,
};
use crate::kafka::{
    AdminClient, ConfigResource, ConfigSource, KafkaError, PartitionIncrease, codes, uuid_to_text,
};
use crate::reconcile::topic::{self, ObservedTopic, TopicInput, TopicPlan, reasons};

/// How old a cluster's snapshot may be before a reconcile asks Kafka again.
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(10);
/// A topic as the spec says is looked at again after this long (drift made in Kafka).
const RESYNC: Duration = Duration::from_secs(300);
/// While something is in progress (a move, a creation settling).
const PROGRESS: Duration = Duration::from_secs(3);
/// A deletion Kafka keeps failing is given up after this long: the finalizer goes, the topic
/// stays, a Warning Event says so (a finalizer must never hold a namespace forever).
const DELETE_GIVE_UP: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("{0}")]
    Kube(#[from] super::Error),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("deleting topic {topic} in Kafka: {source}")]
    Delete {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// What Kafka holds, for every KafkaTopic of one cluster.
#[derive(Debug, Default)]
struct Snapshot {
    fetched: Option<Instant>,
    /// Managed topics that exist, by name.
    topics: BTreeMap<String, ObservedTopic>,
    /// Live brokers with the replicas each holds.
    replicas: BTreeMap<i32, usize>,
    /// Topic config names Kafka listed for some topic.
    known_configs: BTreeSet<String>,
    /// Topics with a partition being reassigned.
    moving: BTreeSet<String>,
    /// Topics changed since they were asked about: asked again before being planned again.
    dirty: BTreeSet<String>,
    /// Topics whose change is being made now: an answer about them may be from before it, so
    /// they stay dirty until their change is made and they are asked after it.
    changing: BTreeSet<String>,
}

/// The controller's state beside the shared [`Context`].
pub struct Topics {
    ctx: Arc<Context>,
    clusters: Store<KafkaCluster>,
    topics: Store<KafkaTopic>,
    snapshots: dashmap::DashMap<String, Arc<tokio::sync::Mutex<Snapshot>>>,
    /// Wakes a cluster's reconcile (it tracks the moves a topic started: throttles cleared
    /// and leaders restored when they end).
    wake_cluster: futures::channel::mpsc::UnboundedSender<ObjectRef<KafkaCluster>>,
    failures: dashmap::DashMap<String, u32>,
}

impl Topics {
    /// Marks `name` as being changed (`true`: before the change is made; it is also dirty
    /// from then on) or as changed (`false`: asked about again by the next reconcile that
    /// refreshes).
    async fn changing(&self, kt: &KafkaTopic, name: &str, starting: bool) {
        let Some(snapshot) = self
            .snapshots
            .get(&member::cluster_key(kt))
            .map(|s| s.clone())
        else {
            return;
        };
        let mut snap = snapshot.lock().await;
        if starting {
            snap.dirty.insert(name.to_string());
            snap.changing.insert(name.to_string());
        } else {
            snap.changing.remove(name);
        }
    }
}

/// Runs the KafkaTopic controller for `namespace` (all when `None`) until the stream ends.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    clusters: Store<KafkaCluster>,
    wake_cluster: futures::channel::mpsc::UnboundedSender<ObjectRef<KafkaCluster>>,
) {
    // A topic looked at before the clusters' cache is filled would find no cluster and say so
    // in its status (a write, undone a moment later).
    if clusters.wait_until_ready().await.is_err() {
        return;
    }
    let api = scoped::<KafkaTopic>(&ctx.client, namespace.as_deref());
    let controller = Controller::new(api, watcher::Config::default());
    let state = Arc::new(Topics {
        ctx,
        clusters,
        topics: controller.store(),
        snapshots: dashmap::DashMap::new(),
        wake_cluster,
        failures: dashmap::DashMap::new(),
    });
    controller
        .run(reconcile, error_policy, state)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "topic reconcile failed");
            }
        })
        .await;
}

fn error_policy(kt: Arc<KafkaTopic>, err: &TopicError, state: Arc<Topics>) -> Action {
    member::retry(kt.as_ref(), err, &state.failures)
}

async fn reconcile(kt: Arc<KafkaTopic>, state: Arc<Topics>) -> Result<Action, TopicError> {
    member::reconcile(
        &state.ctx,
        TOPIC_FINALIZER,
        kt,
        &state.failures,
        |kt| {
            let state = state.clone();
            async move { apply(&kt, &state).await }
        },
        |kt| {
            let state = state.clone();
            async move { cleanup(&kt, &state).await }
        },
        TopicError::Finalizer,
    )
    .await
}

/// Another KafkaTopic of the same cluster names the same topic and came first: this one
/// touches nothing.
fn conflicting(kt: &KafkaTopic, state: &Topics) -> Option<String> {
    let ns = kt.namespace().unwrap_or_default();
    let mine = (kt.metadata.creation_timestamp.clone(), kt.name_any());
    state
        .topics
        .state()
        .into_iter()
        .filter(|o| {
            o.namespace().unwrap_or_default() == ns
                && o.name_any() != kt.name_any()
                && o.spec.cluster_ref == kt.spec.cluster_ref
                && o.topic_name() == kt.topic_name()
        })
        .filter(|o| (o.metadata.creation_timestamp.clone(), o.name_any()) < mine)
        .map(|o| o.name_any())
        .next()
}

async fn apply(kt: &KafkaTopic, state: &Topics) -> Result<Action, TopicError> {
    let name = kt.topic_name().to_string();
    let prior = member::prior_status(&state.ctx, kt);
    let mut status = KafkaTopicStatus {
        topic_name: Some(name.clone()),
        ..prior.clone()
    };
    let Some(cluster) = member::live_cluster(kt, &state.clusters) else {
        let message = format!(
            "KafkaCluster {} not found in this namespace",
            kt.spec.cluster_ref.name
        );
        member::write_status(
            &state.ctx,
            kt,
            member::with_ready(kt, status, false, reasons::CLUSTER_NOT_FOUND, &message),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    if let Some(first) = conflicting(kt, state) {
        let message = format!("KafkaTopic {first} manages topic {name} of this cluster already");
        if !member::has_reason::<KafkaTopic>(&prior, reasons::CONFLICT) {
            member::publish(&state.ctx, kt, EventType::Warning, "Conflict", &message).await;
        }
        member::write_status(
            &state.ctx,
            kt,
            member::with_ready(kt, status, false, reasons::CONFLICT, &message),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    let Some(admin) = member::admin(&state.ctx, kt) else {
        // The cluster's first reconcile in this process comes first; status keeps what it
        // says (a restarted operator writes nothing for topics in sync).
        return Ok(Action::requeue(Duration::from_secs(2)));
    };
    if admin.nodes().is_empty() {
        let message = "waiting for the cluster's brokers to be reachable";
        member::write_status(
            &state.ctx,
            kt,
            member::with_ready(kt, status, false, reasons::CLUSTER_NOT_READY, message),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    };

    let snapshot = state
        .snapshots
        .entry(member::cluster_key(kt))
        .or_default()
        .clone();
    let mut snap = snapshot.lock().await;
    if let Err(e) = refresh(&mut snap, &admin, kt, state).await {
        drop(snap);
        let message = format!("cannot read the topic from Kafka: {e}");
        member::write_status(
            &state.ctx,
            kt,
            member::with_ready(kt, status, false, reasons::KAFKA_ERROR, &message),
        )
        .await?;
        return Err(e.into());
    }
    state.ctx.topic_reconciles.inc();
    let observed = snap.topics.get(&name).cloned();
    let brokers: BTreeMap<i32, usize> = snap
        .replicas
        .iter()
        .filter(|(id, _)| {
            cluster
                .spec
                .brokers
                .iter()
                .any(|b| b.id == **id && b.roles.contains(&Role::Broker))
        })
        .map(|(id, n)| (*id, *n))
        .collect();
    let known = snap.known_configs.clone();
    let cluster_moving = !snap.moving.is_empty();
    drop(snap);

    let input = TopicInput {
        spec: &kt.spec,
        name: &name,
        observed: observed.as_ref(),
        brokers: &brokers,
        known_configs: &known,
        cluster_moving,
    };
    let plan = topic::plan(&input);
    if prior.topic_id.is_none()
        && observed.is_some()
        && !prior.adopted
        && !member::has_reason::<KafkaTopic>(&prior, reasons::CREATING)
    {
        // Pier did not create it: an existing topic is taken over.
        status.adopted = true;
        member::publish(
            &state.ctx,
            kt,
            EventType::Normal,
            "Adopted",
            &format!("topic {name} existed in Kafka: managing it from now on"),
        )
        .await;
    }
    if let Some(o) = &observed {
        status.topic_id = o.id.clone();
        status.partitions = Some(i32::try_from(o.partitions.len()).unwrap_or(i32::MAX));
        status.replication_factor = Some(i32::try_from(o.replication_factor()).unwrap_or(0));
    }
    let (ready, reason, message) = topic::readiness(&input, &plan);
    if let Some(r) = plan.refused.first()
        && !member::has_reason::<KafkaTopic>(&prior, r.reason)
    {
        member::publish(&state.ctx, kt, EventType::Warning, r.reason, &r.message).await;
    }

    let failed = if plan.writes() {
        state.changing(kt, &name, true).await;
        let failed = carry_out(kt, state, &admin, &cluster, &name, &plan).await;
        state.changing(kt, &name, false).await;
        failed
    } else {
        None
    };
    let status = match &failed {
        Some(e) => member::with_ready(kt, status, false, reasons::KAFKA_ERROR, e),
        None => {
            let mut s = member::with_ready(kt, status, ready, reason, &message);
            if ready {
                s.observed_generation = kt.metadata.generation;
            }
            s
        }
    };
    member::write_status(&state.ctx, kt, status).await?;
    Ok(if failed.is_some() {
        let n = state
            .failures
            .get(&member::key(kt))
            .map(|n| *n)
            .unwrap_or(0)
            + 1;
        state.failures.insert(member::key(kt), n);
        Action::requeue(super::retry_delay(n))
    } else if plan.writes() || plan.waiting.is_some() || observed.is_none() {
        Action::requeue(PROGRESS)
    } else {
        Action::requeue(RESYNC)
    })
}

/// Makes the snapshot fresh enough for `kt`: the whole cluster when it is old, the topic alone
/// when Pier changed it since.
async fn refresh(
    snap: &mut Snapshot,
    admin: &AdminClient,
    kt: &KafkaTopic,
    state: &Topics,
) -> Result<(), KafkaError> {
    let name = kt.topic_name().to_string();
    let stale = snap
        .fetched
        .is_none_or(|at| at.elapsed() > SNAPSHOT_MAX_AGE);
    if stale {
        let managed: BTreeSet<String> = state
            .topics
            .state()
            .iter()
            .filter(|o| {
                o.namespace() == kt.namespace() && o.spec.cluster_ref == kt.spec.cluster_ref
            })
            .map(|o| o.topic_name().to_string())
            .collect();
        let fresh = fetch(admin, Some(&managed), None).await?;
        let dirty = std::mem::take(&mut snap.dirty);
        let kept: BTreeMap<String, ObservedTopic> = dirty
            .iter()
            .filter_map(|t| snap.topics.get(t).map(|o| (t.clone(), o.clone())))
            .collect();
        let changing = std::mem::take(&mut snap.changing);
        *snap = fresh;
        // A topic changed while the snapshot was asked for may be answered from before the
        // change: it stays marked and is asked again.
        snap.topics.extend(kept);
        snap.dirty = dirty;
        snap.changing = changing;
    }
    if snap.dirty.contains(&name) {
        // Every changed topic is asked about in one go (a burst of creations costs one
        // Metadata and one DescribeConfigs, not one of each per topic), except those whose
        // change is still being made. `name` is not among them: a topic's reconciles never
        // overlap, so its own change is done.
        let asked: BTreeSet<String> = snap
            .dirty
            .iter()
            .filter(|t| **t == name || !snap.changing.contains(*t))
            .cloned()
            .collect();
        let fresh = fetch(admin, None, Some(&asked)).await?;
        for t in &asked {
            match fresh.topics.get(t) {
                Some(o) => snap.topics.insert(t.clone(), o.clone()),
                None => snap.topics.remove(t),
            };
            snap.dirty.remove(t);
        }
        snap.moving = fresh.moving;
        snap.known_configs.extend(fresh.known_configs);
    }
    Ok(())
}

/// Asks Kafka: all topics' metadata and the configs of `managed` ones, or only the topics
/// `only` names.
async fn fetch(
    admin: &AdminClient,
    managed: Option<&BTreeSet<String>>,
    only: Option<&BTreeSet<String>>,
) -> Result<Snapshot, KafkaError> {
    let moving: BTreeSet<String> = admin
        .list_partition_reassignments()
        .await?
        .into_iter()
        .map(|r| r.topic)
        .collect();
    let md = match only {
        Some(names) => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            admin.metadata(Some(&names)).await?
        }
        None => admin.metadata(None).await?,
    };
    let mut replicas: BTreeMap<i32, usize> = md.brokers.iter().map(|b| (b.id, 0)).collect();
    let mut topics = BTreeMap::new();
    for t in &md.topics {
        if t.error_code == codes::UNKNOWN_TOPIC_OR_PARTITION {
            continue;
        }
        for p in &t.partitions {
            for r in &p.replicas {
                if let Some(n) = replicas.get_mut(r) {
                    *n += 1;
                }
            }
        }
        let wanted = match (managed, only) {
            (Some(m), _) => m.contains(&t.name),
            (None, Some(o)) => o.contains(&t.name),
            (None, None) => false,
        };
        if wanted {
            topics.insert(
                t.name.clone(),
                ObservedTopic {
                    id: (!t.id.is_nil()).then(|| uuid_to_text(&t.id)),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| (p.index, p.replicas.clone()))
                        .collect(),
                    moving: moving.contains(&t.name),
                    overrides: BTreeMap::new(),
                },
            );
        }
    }
    let mut known_configs = BTreeSet::new();
    let names: Vec<String> = topics.keys().cloned().collect();
    if !names.is_empty() {
        for (name, entries) in admin.describe_topic_configs(&names, &[]).await? {
            known_configs.extend(entries.iter().map(|e| e.name.clone()));
            if let Some(t) = topics.get_mut(&name) {
                t.overrides = entries
                    .into_iter()
                    .filter(|e| e.source == ConfigSource::DynamicTopicConfig)
                    .filter_map(|e| Some((e.name, e.value?)))
                    .collect();
            }
        }
    }
    Ok(Snapshot {
        fetched: Some(Instant::now()),
        topics,
        // With some topics asked, the brokers' loads are not known: placement waits for the
        // next full snapshot (an empty map refuses nothing: moves wait for it).
        replicas: if only.is_some() {
            BTreeMap::new()
        } else {
            replicas
        },
        known_configs,
        moving,
        dirty: BTreeSet::new(),
        changing: BTreeSet::new(),
    })
}

/// Does what the plan says; the first failure, for status.
async fn carry_out(
    kt: &KafkaTopic,
    state: &Topics,
    admin: &AdminClient,
    cluster: &KafkaCluster,
    name: &str,
    plan: &TopicPlan,
) -> Option<String> {
    if let Some(new) = &plan.create {
        match admin.create_topic(new).await {
            Ok(()) => {
                let note = format!(
                    "created topic {name}: {} partitions, replication factor {}",
                    new.partitions, new.replication_factor
                );
                member::publish(&state.ctx, kt, EventType::Normal, "Created", &note).await;
            }
            // Created by a call whose answer was lost, or by someone else meanwhile: the next
            // reconcile sees it.
            Err(e) if e.code() == Some(codes::TOPIC_ALREADY_EXISTS) => {}
            Err(e) => return Some(format!("creating topic {name}: {e}")),
        }
        return None;
    }
    if !plan.config_ops.is_empty() {
        let resource = ConfigResource::Topic(name.to_string());
        match admin
            .incremental_alter_configs(&resource, &plan.config_ops, false)
            .await
        {
            Ok(()) => {
                let keys: Vec<&str> = plan.config_ops.iter().map(|o| o.key.as_str()).collect();
                member::publish(
                    &state.ctx,
                    kt,
                    EventType::Normal,
                    "ConfigChanged",
                    &format!("topic {name}: changed {}", keys.join(", ")),
                )
                .await;
            }
            Err(e) => return Some(format!("changing the config of topic {name}: {e}")),
        }
    }
    if let Some(total) = plan.add_partitions {
        let increase = PartitionIncrease {
            topic: name.to_string(),
            total,
            assignments: None,
        };
        let outcome = admin
            .create_partitions(std::slice::from_ref(&increase))
            .await
            .and_then(|mut o| o.pop().map(|o| o.result).unwrap_or(Ok(())));
        match outcome {
            Ok(()) => {
                member::publish(
                    &state.ctx,
                    kt,
                    EventType::Normal,
                    "PartitionsAdded",
                    &format!("topic {name}: {total} partitions"),
                )
                .await;
            }
            Err(e) => return Some(format!("adding partitions to topic {name}: {e}")),
        }
    }
    if !plan.moves.is_empty() {
        return move_replicas(kt, state, admin, cluster, name, plan).await;
    }
    None
}

/// Submits the moves of a new replication factor with throttles, like a rebalance, and wakes
/// the cluster's reconcile, which tracks them to the end (throttles removed, leaders restored).
async fn move_replicas(
    kt: &KafkaTopic,
    state: &Topics,
    admin: &AdminClient,
    cluster: &KafkaCluster,
    name: &str,
    plan: &TopicPlan,
) -> Option<String> {
    // Asked again right before: another move may have started since the snapshot.
    match admin.list_partition_reassignments().await {
        Ok(ongoing) if ongoing.is_empty() => {}
        Ok(_) => return None,
        Err(e) => return Some(format!("listing partition moves: {e}")),
    }
    let throttles = crate::reconcile::scaling::throttles_for(
        cluster.spec.rebalance.throttle_bytes_per_second,
        &plan.moves,
    );
    if let Err(e) = super::scaling::set_throttles(admin, &throttles).await {
        return Some(format!("setting replication throttles: {e}"));
    }
    let moves: Vec<_> = plan.moves.iter().map(|(_, m)| m.clone()).collect();
    if let Err(e) = admin.alter_partition_reassignments(&moves).await {
        return Some(format!("moving replicas of topic {name}: {e}"));
    }
    let _ = state
        .wake_cluster
        .unbounded_send(ObjectRef::from_obj(cluster));
    member::publish(&state.ctx, kt,
        EventType::Normal,
        "ReplicationFactorChanging",
        &format!(
            "topic {name}: moving replicas of {} partitions for replication factor {} (throttled at {} B/s)",
            moves.len(),
            kt.spec.replication_factor,
            throttles.rate
        ),
    )
    .await;
    None
}

/// Deletes the topic in Kafka unless the policy keeps it, the cluster is gone, or another
/// KafkaTopic manages it; gives up (with a Warning) after [`DELETE_GIVE_UP`].
async fn cleanup(kt: &KafkaTopic, state: &Topics) -> Result<Action, TopicError> {
    let name = kt.topic_name().to_string();
    if kt.spec.deletion_policy == DeletionPolicy::Retain {
        tracing::info!(topic = %name, "KafkaTopic deleted; the topic stays in Kafka (retain)");
        return Ok(Action::await_change());
    }
    if member::live_cluster(kt, &state.clusters).is_none() {
        // The cluster and its data are going anyway.
        return Ok(Action::await_change());
    }
    if conflicting(kt, state).is_some() {
        return Ok(Action::await_change());
    }
    let given_up = || {
        kt.metadata.deletion_timestamp.as_ref().is_some_and(|t| {
            let since = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
            since.as_secs() >= DELETE_GIVE_UP.as_secs() as i64
        })
    };
    let Some(admin) = member::admin(&state.ctx, kt).filter(|a| !a.nodes().is_empty()) else {
        if given_up() {
            let note = format!(
                "topic {name} was not deleted: the cluster's brokers were unreachable for {} minutes",
                DELETE_GIVE_UP.as_secs() / 60
            );
            member::publish(&state.ctx, kt, EventType::Warning, "DeleteFailed", &note).await;
            return Ok(Action::await_change());
        }
        return Err(TopicError::Delete {
            topic: name,
            source: KafkaError::NoNodes {
                api: "DeleteTopics".into(),
            },
        });
    };
    let outcome = admin
        .delete_topics(&[name.as_str()])
        .await
        .and_then(|mut o| o.pop().map(|o| o.result).unwrap_or(Ok(())));
    match outcome {
        Ok(()) => {
            if let Some(s) = state
                .snapshots
                .get(&member::cluster_key(kt))
                .map(|s| s.clone())
            {
                s.lock().await.topics.remove(&name);
            }
            member::publish(
                &state.ctx,
                kt,
                EventType::Normal,
                "Deleted",
                &format!("topic {name} deleted"),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(e) if e.code() == Some(codes::UNKNOWN_TOPIC_OR_PARTITION) => Ok(Action::await_change()),
        Err(e) if given_up() => {
            let note = format!("topic {name} was not deleted, giving up: {e}");
            member::publish(&state.ctx, kt, EventType::Warning, "DeleteFailed", &note).await;
            Ok(Action::await_change())
        }
        Err(source) => Err(TopicError::Delete {
            topic: name,
            source,
        }),
    }
}
