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

/// The versions a plan renders: those read now, and for a Secret that cannot be read (or
/// lacks a key the spec reads) the one the running broker Pods started with.
pub fn versions(kc: &KafkaCluster, fetched: &Fetched, pods: &[Pod]) -> BTreeMap<String, String> {
    let read = secret_refs::complete_versions(kc, fetched);
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

/// Iterations of the SCRAM credentials Pier sets (Kafka accepts 4096..=16384).
pub(super) const SCRAM_ITERATIONS: u32 = 8192;

/// Makes Kafka's SCRAM-SHA-512 credentials what `spec.sasl.scramUsers` says
/// ([`secret_refs::scram_steps`]), recording each applied Secret version in `applied`
/// (`status.appliedSecrets`) and dropping the entry of a deleted user. Returns the failures,
/// naming users, never passwords.
pub async fn scram_users(
    kc: &KafkaCluster,
    ctx: &Context,
    admin: &crate::kafka::AdminClient,
    fetched: &Fetched,
    applied: &mut BTreeMap<String, String>,
) -> Vec<String> {
    let users = &kc.spec.sasl.scram_users;
    let managed = secret_refs::managed_scram_users(applied);
    if (users.is_empty() && managed.is_empty()) || admin.nodes().is_empty() {
        return Vec::new();
    }
    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    let in_kafka = if names.is_empty() {
        None
    } else {
        match admin.describe_user_scram_credentials(Some(&names)).await {
            Ok(credentials) => Some(
                credentials
                    .into_iter()
                    .filter(|(_, infos)| {
                        infos
                            .iter()
                            .any(|i| i.mechanism == crate::kafka::ScramMechanism::Sha512)
                    })
                    .map(|(user, _)| user)
                    .collect(),
            ),
            Err(e) => {
                tracing::info!(error = %e, "cannot describe SCRAM credentials; Secret versions decide");
                None
            }
        }
    };
    let mut failures = Vec::new();
    for step in secret_refs::scram_steps(kc, fetched, applied, in_kafka.as_ref()) {
        match step {
            secret_refs::ScramStep::Upsert {
                user,
                version,
                password,
            } => {
                let result = admin
                    .upsert_user_scram_credential(
                        &user,
                        crate::kafka::ScramMechanism::Sha512,
                        &password,
                        SCRAM_ITERATIONS,
                    )
                    .await;
                match result {
                    Ok(()) => {
                        tracing::info!(%user, %version, "SCRAM credential set");
                        let note = format!(
                            "SCRAM user {user}: SCRAM-SHA-512 credential set from Secret {version}"
                        );
                        ctx.events
                            .did(ctx, kc, super::events::Reason::ScramUsers, &note)
                            .await;
                        applied.insert(secret_refs::applied_scram(&user), version);
                    }
                    Err(e) => failures.push(format!("SCRAM user {user}: {e}")),
                }
            }
            secret_refs::ScramStep::Delete { user } => {
                let result = admin
                    .delete_user_scram_credential(&user, crate::kafka::ScramMechanism::Sha512)
                    .await;
                match result {
                    Ok(()) => {}
                    Err(e) if e.code() == Some(crate::kafka::codes::RESOURCE_NOT_FOUND) => {}
                    Err(e) => {
                        failures.push(format!("SCRAM user {user}: deleting: {e}"));
                        continue;
                    }
                }
                tracing::info!(%user, "SCRAM credential deleted");
                let note = format!("SCRAM user {user}: removed from the spec, credential deleted");
                ctx.events
                    .did(ctx, kc, super::events::Reason::ScramUsers, &note)
                    .await;
                applied.remove(&secret_refs::applied_scram(&user));
            }
        }
    }
    failures
}
