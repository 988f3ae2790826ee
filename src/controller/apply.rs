//! Writing plans: server-side apply of objects that are missing, planned differently from what
//! was last applied, or changed by someone else in a field Pier sets (drift: a `kubectl edit`
//! is undone); creation of objects that must never be rewritten (Pods, PVCs); deletion of what
//! is no longer wanted. Existing objects are read from the watch caches, so a reconcile with
//! nothing to change makes no API call at all.
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;

use super::{Cached, Context, Error, FIELD_MANAGER, Stores, call, cluster_objects_shared};
use crate::reconcile::claims::{Resize, plan_resize, storage_class};
use crate::reconcile::names::{APPLIED_HASH_ANNOTATION, BROKER_ID_LABEL};

/// How an existing object is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Re-apply when the plan changed.
    Update,
    /// Create when missing, never touch afterwards (Pod specs and PVC specs are immutable;
    /// replacing a broker's Pod is the rolling restart's decision).
    CreateOnly,
}

/// The object kinds a KafkaCluster owns: namespaced, typed, serialisable.
pub trait Owned:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
{
}
impl<K> Owned for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
{
}

/// Writes one cluster's plan, kind by kind, and remembers what it did.
pub struct Writer<'a> {
    ctx: &'a Context,
    stores: &'a Stores,
    namespace: &'a str,
    cluster: &'a str,
    /// Brokers no longer planned whose objects stay (they still hold replicas).
    retained: &'a std::collections::BTreeSet<i32>,
    changes: Vec<String>,
}

impl<'a> Writer<'a> {
    pub fn new(
        ctx: &'a Context,
        stores: &'a Stores,
        namespace: &'a str,
        cluster: &'a str,
        retained: &'a std::collections::BTreeSet<i32>,
    ) -> Self {
        Self {
            ctx,
            stores,
            namespace,
            cluster,
            retained,
            changes: Vec::new(),
        }
    }

    /// What was created, updated and deleted, one line each.
    pub fn into_changes(self) -> Vec<String> {
        self.changes
    }

    /// Makes the cluster's objects of kind `K` what `desired` says: applies what is missing or
    /// (in `Update` mode) planned differently from what was last applied or drifted from it,
    /// then deletes owned objects the plan no longer has, unless `keep_others` (the plan is
    /// incomplete) or they belong to a retained broker.
    pub async fn converge<K: Cached>(
        &mut self,
        desired: &[K],
        mode: Mode,
        keep_others: bool,
    ) -> Result<(), Error> {
        let api: Api<K> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        let existing = by_name(cluster_objects_shared::<K>(
            self.stores,
            self.namespace,
            self.cluster,
        ));
        let kind = K::kind(&());
        for planned_obj in desired {
            let name = planned_obj.name_any();
            let planned = serde_json::to_value(planned_obj)?;
            let hash = crate::hash::hex(&serde_json::to_vec(planned_obj)?);
            let current = existing.get(&name);
            let mut verb = "created";
            if let Some(cur) = current {
                if mode == Mode::CreateOnly {
                    continue;
                }
                let applied = cur.annotations().get(APPLIED_HASH_ANNOTATION);
                let drifted = !contains(&serde_json::to_value(cur.as_ref())?, &planned);
                if applied == Some(&hash) && !drifted {
                    continue;
                }
                verb = if applied == Some(&hash) {
                    tracing::info!(%kind, %name, "changed by someone else; restoring it");
                    "restored"
                } else {
                    "updated"
                };
            }
            // Copied only to be sent.
            let mut obj = planned_obj.clone();
            obj.annotations_mut()
                .insert(APPLIED_HASH_ANNOTATION.into(), hash);
            call(
                format!("applying {kind} {}/{name}", self.namespace),
                api.patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&obj),
                ),
            )
            .await?;
            self.ctx.wrote();
            tracing::info!(%kind, %name, verb, "applied");
            self.changes.push(format!("{verb} {kind} {name}"));
        }
        if keep_others {
            return Ok(());
        }
        let wanted: std::collections::BTreeSet<String> =
            desired.iter().map(|o| o.name_any()).collect();
        for (name, obj) in existing {
            // Only what the KafkaCluster itself owns: PVCs kept on removal are not owned, and
            // the Envoy Deployment's Pods belong to their ReplicaSet.
            let owned = obj
                .owner_references()
                .iter()
                .any(|o| o.kind == "KafkaCluster" && o.controller == Some(true));
            let retained = obj
                .labels()
                .get(BROKER_ID_LABEL)
                .and_then(|id| id.parse::<i32>().ok())
                .is_some_and(|id| self.retained.contains(&id));
            if wanted.contains(&name)
                || !owned
                || retained
                || obj.meta().deletion_timestamp.is_some()
            {
                continue;
            }
            call(
                format!("deleting {kind} {}/{name}", self.namespace),
                api.delete(&name, &DeleteParams::default()),
            )
            .await?;
            self.ctx.wrote();
            tracing::info!(%kind, %name, "deleted");
            self.changes.push(format!("deleted {kind} {name}"));
        }
        Ok(())
    }
}

/// Resizes existing claims whose planned size changed, where Kubernetes can (growth, with a
/// StorageClass that allows expansion); returns what cannot be done, for status.
pub async fn resize_claims(
    ctx: &Context,
    stores: &Stores,
    namespace: &str,
    cluster: &str,
    planned: &[PersistentVolumeClaim],
) -> Result<(Vec<String>, Vec<String>), Error> {
    let existing = by_name(cluster_objects_shared::<PersistentVolumeClaim>(
        stores, namespace, cluster,
    ));
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let (mut done, mut refused) = (Vec::new(), Vec::new());
    for want in planned {
        let Some(have) = existing.get(&want.name_any()) else {
            continue;
        };
        // Asked only when a size differs: the class decides whether a claim may grow.
        let expandable = match plan_resize(want, have, Some(true)) {
            Resize::Expand { .. } => match storage_class(have) {
                Some(name) => call(
                    format!("reading StorageClass {name}"),
                    classes.get_opt(&name),
                )
                .await?
                .map(|c| c.allow_volume_expansion == Some(true)),
                None => None,
            },
            _ => Some(true),
        };
        match plan_resize(want, have, expandable) {
            Resize::Keep => {}
            Resize::Refuse { why, .. } => refused.push(why),
            Resize::Expand { claim, size } => {
                let patch =
                    serde_json::json!({"spec": {"resources": {"requests": {"storage": size}}}});
                call(
                    format!("expanding PersistentVolumeClaim {namespace}/{claim}"),
                    claims.patch(&claim, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await?;
                ctx.wrote();
                tracing::info!(%claim, %size, "volume expansion requested");
                done.push(format!("expanded PersistentVolumeClaim {claim} to {size}"));
            }
        }
    }
    Ok((done, refused))
}

/// Whether `live` has every field `planned` sets, with the same value. Fields the API server
/// or others add are not Pier's and do not count; an empty list, map or null that Pier plans
/// may be absent. Each planned list entry must be in the live list.
pub fn contains(live: &serde_json::Value, planned: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (live, planned) {
        (_, Value::Null) => true,
        (Value::Object(live), Value::Object(planned)) => {
            planned.iter().all(|(k, p)| match live.get(k) {
                Some(l) => contains(l, p),
                None => is_empty(p),
            })
        }
        // Entries others added to a list (server-side apply keeps those of map-lists) are not
        // Pier's; each planned entry must be there.
        (Value::Array(live), Value::Array(planned)) => {
            planned.iter().all(|p| live.iter().any(|l| contains(l, p)))
        }
        (Value::Number(l), Value::Number(p)) => l.as_f64() == p.as_f64(),
        (Value::Null, p) => is_empty(p),
        (l, p) => l == p,
    }
}

fn is_empty(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Object(o) => o.values().all(is_empty),
        _ => false,
    }
}

/// Objects by name, for diffing.
fn by_name<K: Resource>(
    items: Vec<std::sync::Arc<K>>,
) -> std::collections::BTreeMap<String, std::sync::Arc<K>> {
    items
        .into_iter()
        .map(|o| (o.meta().name.clone().unwrap_or_default(), o))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::contains;
    use serde_json::json;

    #[test]
    fn fields_added_by_others_are_not_drift() {
        let planned =
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"ports": [{"port": 9092}]}});
        let live = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "uid": "u"},
            "spec": {"ports": [{"port": 9092, "protocol": "TCP"}], "clusterIP": "10.0.0.1"}});
        assert!(contains(&live, &planned));
    }

    #[test]
    fn a_changed_or_removed_field_pier_sets_is_drift() {
        let planned = json!({"data": {"server.properties": "x=1", "log4j": "y"}});
        assert!(!contains(
            &json!({"data": {"server.properties": "x=2", "log4j": "y"}}),
            &planned
        ));
        assert!(!contains(
            &json!({"data": {"server.properties": "x=1"}}),
            &planned
        ));
        let ports = json!({"spec": {"ports": [{"port": 1}, {"port": 2}]}});
        assert!(!contains(
            &json!({"spec": {"ports": [{"port": 1}]}}),
            &ports
        ));
        assert!(!contains(
            &json!({"spec": {"ports": [{"port": 1}, {"port": 3}]}}),
            &ports
        ));
        // A port someone else added is theirs.
        let more = json!({"spec": {"ports": [{"port": 3}, {"port": 2}, {"port": 1}]}});
        assert!(contains(&more, &ports));
    }

    #[test]
    fn empty_planned_values_may_be_absent_and_numbers_compare_by_value() {
        let planned = json!({"spec": {"tolerations": [], "selector": {}, "x": null, "n": 1}});
        assert!(contains(&json!({"spec": {"n": 1.0}}), &planned));
    }
}
