//! The Secrets a KafkaCluster references (`configFrom`, SCRAM users' passwords): read once per
//! reconcile (a GET each, for their version and values), and watched by metadata only (no value
//! is cached) so that a change wakes the clusters that reference them. Values are never logged,
//! put in an Event, a status or an object Pier writes.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use super::{Context, call};
use crate::api::KafkaCluster;
use crate::reconcile::secret_refs::{self, Fetched, SecretData};

/// Reads every Secret `kc` references. One that cannot be read is an entry saying why (not
/// found, forbidden…), never an error of the reconcile: what reads it waits, nothing else does.
pub async fn read(ctx: &Context, kc: &KafkaCluster) -> Fetched {
    let ns = kc.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut out = Fetched::new();
    for name in secret_refs::referenced_secrets(kc) {
        let got = call(format!("reading Secret {name}"), api.get_opt(&name)).await;
        let entry = match got {
            Ok(Some(secret)) => Ok(SecretData {
                version: secret.resource_version().unwrap_or_default(),
                data: secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect(),
            }),
            Ok(None) => Err("no such Secret".to_string()),
            Err(e) => {
                tracing::info!(secret = %name, error = %e, "cannot read a referenced Secret");
                Err(e.to_string())
            }
        };
        out.insert(name, entry);
    }
    out
}

/// The versions a plan renders: those read now, and for a Secret that cannot be read the one
/// the running broker Pods started with.
pub fn versions(fetched: &Fetched, pods: &[Pod]) -> BTreeMap<String, String> {
    let read: BTreeMap<String, String> = fetched
        .iter()
        .filter_map(|(name, s)| Some((name.clone(), s.as_ref().ok()?.version.clone())))
        .collect();
    secret_refs::versions_for_plan(
        &read,
        pods.iter().filter_map(|p| {
            p.annotations()
                .get(secret_refs::SECRET_VERSIONS_ANNOTATION)
                .map(String::as_str)
        }),
    )
}

/// Metadata-only changes of the Secrets in `namespace` (all when `None`).
pub fn changes(
    client: &Client,
    namespace: Option<&str>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static
{
    // An `Api` of metadata makes metadata-only requests: no Secret value is ever listed.
    let api: Api<PartialObjectMeta<Secret>> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    watcher(api, watcher::Config::default())
        .default_backoff()
        .touched_objects()
}

/// The clusters (in `clusters`) that reference a changed Secret.
pub fn referencing(
    clusters: Store<KafkaCluster>,
) -> impl Fn(PartialObjectMeta<Secret>) -> Vec<ObjectRef<KafkaCluster>> + Send + Sync + 'static {
    move |secret| {
        let ns = secret.namespace();
        let name = secret.name_any();
        clusters
            .state()
            .iter()
            .filter(|kc| {
                kc.namespace() == ns && secret_refs::referenced_secrets(kc).contains(&name)
            })
            .map(|kc| ObjectRef::from_obj(kc.as_ref()))
            .collect()
    }
}
