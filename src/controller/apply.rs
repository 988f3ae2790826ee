//! Writing plans: server-side apply of objects whose applied hash differs, creation of objects
//! that must never be rewritten (Pods, PVCs), and deletion of what is no longer wanted.
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Context, Error, FIELD_MANAGER};
use crate::reconcile::names::APPLIED_HASH_ANNOTATION;

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
    pub ctx: &'a Context,
    pub namespace: &'a str,
    /// Selects the cluster's objects.
    pub selector: ListParams,
    pub changes: Vec<String>,
}

impl Writer<'_> {
    /// Makes the cluster's objects of kind `K` what `desired` says: applies what is missing or
    /// (in `Update` mode) planned differently from what was last applied, then deletes owned
    /// objects the plan no longer has, unless `keep_others` (the plan is incomplete).
    pub async fn converge<K: Owned>(
        &mut self,
        desired: &[K],
        mode: Mode,
        keep_others: bool,
    ) -> Result<(), Error> {
        let api: Api<K> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        let existing = by_name(api.list(&self.selector).await?.items);
        let kind = K::kind(&());
        for obj in desired {
            let mut obj = obj.clone();
            let name = obj.name_any();
            let hash = crate::hash::hex(&serde_json::to_vec(&obj)?);
            let current = existing.get(&name);
            if let Some(cur) = current {
                let applied = cur.annotations().get(APPLIED_HASH_ANNOTATION);
                if mode == Mode::CreateOnly || applied == Some(&hash) {
                    continue;
                }
            }
            obj.annotations_mut()
                .insert(APPLIED_HASH_ANNOTATION.into(), hash);
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await?;
            self.ctx.wrote();
            let verb = if current.is_some() {
                "updated"
            } else {
                "created"
            };
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
            if wanted.contains(&name) || !owned || obj.meta().deletion_timestamp.is_some() {
                continue;
            }
            api.delete(&name, &DeleteParams::default()).await?;
            self.ctx.wrote();
            tracing::info!(%kind, %name, "deleted");
            self.changes.push(format!("deleted {kind} {name}"));
        }
        Ok(())
    }
}

/// Objects by name, for diffing.
fn by_name<K: Resource>(items: Vec<K>) -> std::collections::BTreeMap<String, K> {
    items
        .into_iter()
        .map(|o| (o.meta().name.clone().unwrap_or_default(), o))
        .collect()
}
