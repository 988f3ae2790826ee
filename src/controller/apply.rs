//! Writing plans: server-side apply of objects whose applied hash differs, creation of objects
//! that must never be rewritten (Pods, PVCs), and deletion of what is no longer wanted.
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Context, Error, FIELD_MANAGER, by_name};
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

/// What a reconcile did, for Events.
#[derive(Debug, Default)]
pub struct Changes {
    pub lines: Vec<String>,
}

/// Applies every object of `desired` that is missing or (in `Update` mode) planned differently
/// from what was last applied.
pub async fn sync<K>(
    ctx: &Context,
    ns: &str,
    lp: &ListParams,
    desired: Vec<K>,
    changes: &mut Changes,
    mode: Mode,
) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    if desired.is_empty() {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let existing = by_name(api.list(lp).await?.items);
    for mut obj in desired {
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
        ctx.wrote();
        let verb = if current.is_some() {
            "updated"
        } else {
            "created"
        };
        let kind = K::kind(&());
        tracing::info!(%kind, %name, verb, "applied");
        changes.lines.push(format!("{verb} {kind} {name}"));
    }
    Ok(())
}

/// Deletes objects of this cluster that the plan no longer has. Only objects the cluster owns
/// are touched. `skip` leaves everything in place (used while the plan is incomplete).
pub async fn remove_unwanted<K>(
    ctx: &Context,
    ns: &str,
    lp: &ListParams,
    desired: &[K],
    changes: &mut Changes,
    skip: bool,
) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    if skip {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let wanted: std::collections::BTreeSet<String> = desired.iter().map(|o| o.name_any()).collect();
    for obj in api.list(lp).await?.items {
        let name = obj.name_any();
        let owned = obj
            .owner_references()
            .iter()
            .any(|o| o.kind == "KafkaCluster" && o.controller == Some(true));
        if wanted.contains(&name) || !owned || obj.meta().deletion_timestamp.is_some() {
            continue;
        }
        api.delete(&name, &DeleteParams::default()).await?;
        ctx.wrote();
        let kind = K::kind(&());
        tracing::info!(%kind, %name, "deleted");
        changes.lines.push(format!("deleted {kind} {name}"));
    }
    Ok(())
}

/// PVCs of removed brokers are deleted only when they are owned (`deleteClaimOnRemoval`);
/// others keep the data.
pub async fn remove_owned_claims(
    ctx: &Context,
    ns: &str,
    lp: &ListParams,
    desired: &[PersistentVolumeClaim],
    changes: &mut Changes,
) -> Result<(), Error> {
    remove_unwanted(ctx, ns, lp, desired, changes, false).await
}
