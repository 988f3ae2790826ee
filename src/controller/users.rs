//! The KafkaUser controller: the user's Secret (a certificate from the cluster's clients CA,
//! or a SCRAM password), its SCRAM credential, ACLs and quotas in Kafka, each diffed against
//! what Kafka holds so a user in sync costs no write; a finalizer removes them all from Kafka
//! before the resource goes (and never hangs: a cluster gone releases it at once).
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::{Context, call, member, scoped};
use crate::api::{AuthenticationType, KafkaCluster, KafkaUser, KafkaUserStatus, USER_FINALIZER};
use crate::kafka::{AclBinding, AclFilter, AdminClient, KafkaError, ScramMechanism, codes};
use crate::reconcile::names;
use crate::reconcile::user::{self as plan, principal, user_name};

/// A user in sync is looked at again after this long (drift made in Kafka is undone then).
const RESYNC: Duration = Duration::from_secs(300);
/// Length of a generated password (letters and digits).
const PASSWORD_LEN: usize = 32;
/// Keys of the user's Secret.
pub const USER_CRT: &str = "user.crt";
pub const USER_KEY: &str = "user.key";
pub const CA_CRT: &str = "ca.crt";
pub const PASSWORD: &str = "password";
/// On the user's Secret: the certificate's serial and expiry (unix seconds).
const NOT_AFTER_ANNOTATION: &str = "kafka.pier.dev/not-after";

/// Condition reasons of a KafkaUser.
pub mod reasons {
    pub const READY: &str = "Ready";
    pub const PROGRESSING: &str = "Progressing";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
    pub const CLUSTER_NOT_READY: &str = "ClusterNotReady";
    pub const AUTHORIZER_PENDING: &str = "AuthorizerPending";
    pub const KAFKA_ERROR: &str = "KafkaError";
    pub const SECRET_UNAVAILABLE: &str = "SecretUnavailable";
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Kube(#[from] super::Error),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// The controller's state beside the shared [`Context`].
pub struct Users {
    ctx: Arc<Context>,
    clusters: Store<KafkaCluster>,
    failures: dashmap::DashMap<String, u32>,
}

/// Runs the KafkaUser controller for `namespace` (all when `None`) until the stream ends.
/// `secret_changes`: the Secrets (metadata) that changed, from the cluster controller's watch.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    clusters: Store<KafkaCluster>,
    secret_changes: impl futures::Stream<Item = PartialObjectMeta<Secret>> + Send + 'static,
) {
    // A user looked at before the clusters' cache is filled would find no cluster and say so
    // in its status (a write, undone a moment later).
    if clusters.wait_until_ready().await.is_err() {
        return;
    }
    let api = scoped::<KafkaUser>(&ctx.client, namespace.as_deref());
    let state = Arc::new(Users {
        ctx,
        clusters,
        failures: dashmap::DashMap::new(),
    });
    let controller = Controller::new(api, watcher::Config::default());
    // A changed credential Secret (a new password in a referenced one, the user's own Secret
    // edited or deleted) is applied at once, not at the next resync.
    let users = controller.store();
    let reading = move |secret: PartialObjectMeta<Secret>| {
        let (ns, name) = (secret.namespace(), secret.name_any());
        users
            .state()
            .iter()
            .filter(|u| u.namespace() == ns && plan::credential_secret(u) == Some(name.as_str()))
            .map(|u| ObjectRef::from_obj(u.as_ref()))
            .collect::<Vec<_>>()
    };
    controller
        .watches_stream(secret_changes.map(Ok::<_, watcher::Error>), reading)
        .run(reconcile, error_policy, state)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "user reconcile failed");
            }
        })
        .await;
}

fn error_policy(u: Arc<KafkaUser>, err: &UserError, state: Arc<Users>) -> Action {
    member::retry(u.as_ref(), err, &state.failures)
}

async fn reconcile(u: Arc<KafkaUser>, state: Arc<Users>) -> Result<Action, UserError> {
    member::reconcile(
        &state.ctx,
        USER_FINALIZER,
        u,
        &state.failures,
        |u| {
            let state = state.clone();
            async move { apply(&u, &state).await }
        },
        |u| {
            let state = state.clone();
            async move { cleanup(&u, &state).await }
        },
        UserError::Finalizer,
    )
    .await
}

async fn apply(u: &KafkaUser, state: &Users) -> Result<Action, UserError> {
    let name = user_name(u).to_string();
    let prior = member::prior_status(&state.ctx, u);
    let mut status = KafkaUserStatus {
        principal: Some(principal(u)),
        ..prior.clone()
    };
    let Some(cluster) = member::live_cluster(u, &state.clusters) else {
        let message = format!(
            "KafkaCluster {} not found in this namespace",
            u.spec.cluster_ref.name
        );
        let s = member::with_ready(u, status, false, reasons::CLUSTER_NOT_FOUND, &message);
        member::write_status(&state.ctx, u, s).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    if let Some(message) = plan::reserved_name(&cluster.name_any(), &name) {
        let s = member::with_ready(u, status, false, reasons::INVALID_SPEC, &message);
        member::write_status(&state.ctx, u, s).await?;
        return Ok(Action::await_change());
    }
    let Some(admin) = member::admin(&state.ctx, u) else {
        // The cluster's first reconcile in this process comes first (it points the client at
        // the brokers); status keeps what it says meanwhile.
        return Ok(Action::requeue(Duration::from_secs(2)));
    };
    if admin.nodes().is_empty() {
        let s = member::with_ready(
            u,
            status,
            false,
            reasons::CLUSTER_NOT_READY,
            "waiting for the cluster's brokers to be reachable",
        );
        member::write_status(&state.ctx, u, s).await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    }

    state.ctx.user_reconciles.inc();
    let mut done = Vec::new();
    // 1. Credentials.
    let auth = u.spec.authentication.as_ref().map(|a| a.type_);
    let credential = match auth {
        Some(AuthenticationType::Tls) => certificate(u, &cluster, state, &mut status).await,
        Some(AuthenticationType::ScramSha512) => {
            scram(u, &admin, state, &mut status, &mut done).await
        }
        None => Ok(()),
    };
    if let Err((reason, message)) = credential {
        let s = member::with_ready(u, status, false, reason, &message);
        member::write_status(&state.ctx, u, s).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    if auth != Some(AuthenticationType::ScramSha512) {
        // A SCRAM credential left from an earlier spec goes.
        remove_scram(&admin, &name).await?;
        status.credential_version = None;
    }
    if auth.is_none() {
        status.secret = None;
        status.certificate_not_after = None;
    }

    // 2. ACLs: exactly those of the spec for the principal.
    let desired = plan::desired_acls(u);
    match admin
        .describe_acls(&AclFilter::principal(principal(u)))
        .await
    {
        Ok(current) => {
            let current: BTreeSet<AclBinding> = current.into_iter().collect();
            let changes = plan::acl_changes(&desired, &current);
            if !changes.delete.is_empty() {
                admin.delete_acls(&changes.delete).await?;
                done.push(format!("{} ACLs deleted", changes.delete.len()));
            }
            if !changes.create.is_empty() {
                admin.create_acls(&changes.create).await?;
                done.push(format!("{} ACLs created", changes.create.len()));
            }
            status.acls = desired.iter().map(ToString::to_string).collect();
        }
        Err(e) if e.is_security_disabled() && desired.is_empty() => status.acls.clear(),
        Err(e) if e.is_security_disabled() => {
            let s = member::with_ready(
                u,
                status,
                false,
                reasons::AUTHORIZER_PENDING,
                "waiting for the brokers to run the authorizer (a rolling restart adds it)",
            );
            member::write_status(&state.ctx, u, s).await?;
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
        Err(e) => return Err(e.into()),
    }

    // 3. Quotas.
    let desired = plan::desired_quotas(u.spec.quotas.as_ref());
    let current = admin.describe_client_quotas(&name).await?;
    let (set, remove) = plan::quota_changes(&desired, &current);
    if !set.is_empty() || !remove.is_empty() {
        admin.alter_client_quotas(&name, &set, &remove).await?;
        done.push("quotas changed".into());
    }

    if !done.is_empty() {
        member::publish(
            &state.ctx,
            u,
            EventType::Normal,
            "Applied",
            &done.join("; "),
        )
        .await;
    }
    let mut s = member::with_ready(
        u,
        status,
        true,
        reasons::READY,
        "Kafka has the user as the spec says",
    );
    s.observed_generation = u.metadata.generation;
    member::write_status(&state.ctx, u, s).await?;
    Ok(Action::requeue(RESYNC))
}

/// The user's certificate `CN=<user>` from the clients CA in its Secret, issued when missing,
/// issued by another CA, or within the renewal window.
async fn certificate(
    u: &KafkaUser,
    cluster: &KafkaCluster,
    state: &Users,
    status: &mut KafkaUserStatus,
) -> Result<(), (&'static str, String)> {
    let ns = u.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(state.ctx.client.clone(), &ns);
    let get = |name: String| {
        let secrets = secrets.clone();
        async move { call(format!("reading Secret {name}"), secrets.get_opt(&name)).await }
    };
    let unavailable = |m: String| (reasons::SECRET_UNAVAILABLE, m);
    let ca_name = cluster
        .spec
        .tls
        .clients_ca
        .secret_ref
        .as_ref()
        .map(|r| r.name.clone())
        .unwrap_or_else(|| names::ca_secret(cluster, "clients"));
    let ca = get(ca_name.clone())
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .ok_or_else(|| {
            unavailable(format!(
                "the clients CA Secret {ca_name} does not exist (a cluster without a TLS listener has none)"
            ))
        })?;
    let text = |s: &Secret, k: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(k))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let material = pier_pki::CaMaterial {
        cert_pem: text(&ca, pier_pki::CA_CRT).unwrap_or_default(),
        key_pem: text(&ca, pier_pki::CA_KEY).unwrap_or_default(),
    };
    let cluster_ca_name = names::ca_cert_secret(cluster, "cluster");
    let trust = get(cluster_ca_name.clone())
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .and_then(|s| text(&s, pier_pki::CA_CRT))
        .ok_or_else(|| {
            unavailable(format!(
                "the cluster CA Secret {cluster_ca_name} is not there yet"
            ))
        })?;
    let name = user_name(u).to_string();
    status.secret = Some(name.clone());
    let existing = get(name.clone())
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let renew_before = i64::from(cluster.spec.tls.certificates.renew_before_days) * pier_pki::DAY;
    let current = existing.as_ref().and_then(|s| {
        let crt = text(s, USER_CRT)?;
        let info = pier_pki::CertInfo::parse(&crt).ok()?;
        let fresh = info.not_after - renew_before > now
            && pier_pki::issued_by(&crt, &material.cert_pem)
            && text(s, CA_CRT).as_deref() == Some(trust.as_str());
        fresh.then_some(info)
    });
    let info = match current {
        Some(info) => info,
        None => {
            let issuer = pier_pki::Issuer::load(&material)
                .map_err(|e| unavailable(format!("the clients CA: {e}")))?;
            let leaf = issuer
                .issue(
                    &pier_pki::LeafRequest {
                        common_name: name.clone(),
                        client: true,
                        ..Default::default()
                    },
                    u32::try_from(cluster.spec.tls.certificates.validity_days).unwrap_or(365),
                    now,
                )
                .map_err(|e| unavailable(format!("issuing the certificate: {e}")))?;
            let info = pier_pki::CertInfo::parse(&leaf.cert_pem)
                .map_err(|e| unavailable(e.to_string()))?;
            let data = BTreeMap::from([
                (USER_CRT.to_string(), leaf.chain_pem),
                (USER_KEY.to_string(), leaf.key_pem),
                (CA_CRT.to_string(), trust.clone()),
            ]);
            write_secret(u, state, &name, data, Some(info.not_after))
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            member::publish(
                &state.ctx,
                u,
                EventType::Normal,
                "CertificateIssued",
                &format!("certificate CN={name} issued into Secret {name}"),
            )
            .await;
            info
        }
    };
    status.certificate_not_after = k8s_openapi::jiff::Timestamp::from_second(info.not_after)
        .ok()
        .map(|t| t.to_string());
    Ok(())
}

/// The SCRAM-SHA-512 credential: from the referenced Secret, or a password Pier generated
/// into the user's Secret; set again when that Secret's version changes or Kafka lacks it.
async fn scram(
    u: &KafkaUser,
    admin: &AdminClient,
    state: &Users,
    status: &mut KafkaUserStatus,
    done: &mut Vec<String>,
) -> Result<(), (&'static str, String)> {
    let ns = u.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(state.ctx.client.clone(), &ns);
    let unavailable = |m: String| (reasons::SECRET_UNAVAILABLE, m);
    let name = user_name(u).to_string();
    let reference = u
        .spec
        .authentication
        .as_ref()
        .and_then(|a| a.password.as_ref())
        .map(|p| p.value_from.secret_key_ref.clone());
    let (secret_name, key) = match &reference {
        Some(r) => (r.name.clone(), r.key.clone()),
        None => (name.clone(), PASSWORD.to_string()),
    };
    let mut secret = call(
        format!("reading Secret {secret_name}"),
        secrets.get_opt(&secret_name),
    )
    .await
    .map_err(|e| unavailable(e.to_string()))?;
    if secret.is_none() && reference.is_none() {
        let password = generate_password().map_err(unavailable)?;
        write_secret(
            u,
            state,
            &name,
            BTreeMap::from([(PASSWORD.to_string(), password)]),
            None,
        )
        .await
        .map_err(|e| unavailable(e.to_string()))?;
        secret = call(
            format!("reading Secret {secret_name}"),
            secrets.get_opt(&secret_name),
        )
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    }
    let secret = secret.ok_or_else(|| unavailable(format!("Secret {secret_name} not found")))?;
    let password = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| unavailable(format!("Secret {secret_name} has no key {key}")))?;
    let version = format!(
        "{secret_name}@{}",
        secret.resource_version().unwrap_or_default()
    );
    status.secret = Some(secret_name.clone());
    let held = admin
        .describe_user_scram_credentials(Some(&[name.as_str()][..]))
        .await
        .map(|c| {
            c.get(&name)
                .is_some_and(|i| i.iter().any(|i| i.mechanism == ScramMechanism::Sha512))
        })
        .map_err(|e| (reasons::KAFKA_ERROR, e.to_string()))?;
    if !held || status.credential_version.as_deref() != Some(version.as_str()) {
        admin
            .upsert_user_scram_credential(
                &name,
                ScramMechanism::Sha512,
                &password,
                super::secrets::SCRAM_ITERATIONS,
            )
            .await
            .map_err(|e| {
                (
                    reasons::KAFKA_ERROR,
                    format!("setting the SCRAM credential: {e}"),
                )
            })?;
        done.push(format!(
            "SCRAM-SHA-512 credential set from Secret {version}"
        ));
        status.credential_version = Some(version);
    }
    Ok(())
}

async fn remove_scram(admin: &AdminClient, name: &str) -> Result<(), KafkaError> {
    let held = admin
        .describe_user_scram_credentials(Some(&[name][..]))
        .await?
        .get(name)
        .is_some_and(|i| !i.is_empty());
    if held {
        match admin
            .delete_user_scram_credential(name, ScramMechanism::Sha512)
            .await
        {
            Ok(()) => {}
            Err(e) if e.code() == Some(codes::RESOURCE_NOT_FOUND) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn generate_password() -> Result<String, String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // Bytes at or above the largest multiple of the alphabet's size are skipped: every
    // character is then equally likely.
    let limit = 256 - 256 % ALPHABET.len();
    let mut password = String::with_capacity(PASSWORD_LEN);
    while password.len() < PASSWORD_LEN {
        let mut bytes = [0u8; PASSWORD_LEN];
        crate::random::fill(&mut bytes)
            .map_err(|e| format!("no randomness for a password: {e}"))?;
        password.extend(
            bytes
                .iter()
                .map(|b| usize::from(*b))
                .filter(|b| *b < limit)
                .map(|b| ALPHABET[b % ALPHABET.len()] as char)
                .take(PASSWORD_LEN - password.len()),
        );
    }
    Ok(password)
}

/// Creates or replaces the user's own Secret, owned by the KafkaUser (it goes with it).
async fn write_secret(
    u: &KafkaUser,
    state: &Users,
    name: &str,
    data: BTreeMap<String, String>,
    not_after: Option<i64>,
) -> Result<(), super::Error> {
    let ns = u.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(state.ctx.client.clone(), &ns);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "pier".to_string(),
                ),
                ("kafka.pier.dev/user".to_string(), name.to_string()),
            ])),
            annotations: not_after
                .map(|t| BTreeMap::from([(NOT_AFTER_ANNOTATION.to_string(), t.to_string())])),
            owner_references: u.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    call(
        format!("writing Secret {name}"),
        secrets.patch(
            name,
            &PatchParams::apply("pier").force(),
            &Patch::Apply(&secret),
        ),
    )
    .await?;
    state.ctx.wrote();
    Ok(())
}

/// Removes what Kafka holds for the user: its SCRAM credential, its ACLs, its quotas. The
/// user's Secret goes with the resource (owner reference).
async fn cleanup(u: &KafkaUser, state: &Users) -> Result<Action, UserError> {
    if member::live_cluster(u, &state.clusters).is_none() {
        return Ok(Action::await_change());
    }
    let name = user_name(u).to_string();
    let Some(admin) = member::admin(&state.ctx, u).filter(|a| !a.nodes().is_empty()) else {
        return Err(UserError::Kafka(KafkaError::NoNodes {
            api: "DeleteAcls".into(),
        }));
    };
    remove_scram(&admin, &name).await?;
    match admin
        .delete_acls(&[AclFilter::principal(principal(u))])
        .await
    {
        Ok(_) => {}
        Err(e) if e.is_security_disabled() => {}
        Err(e) => return Err(e.into()),
    }
    let held = admin.describe_client_quotas(&name).await?;
    if !held.is_empty() {
        let keys: Vec<String> = held.keys().cloned().collect();
        admin
            .alter_client_quotas(&name, &BTreeMap::new(), &keys)
            .await?;
    }
    tracing::info!(user = %name, "KafkaUser deleted: credential, ACLs and quotas removed");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_long_alphanumeric_and_differ() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), PASSWORD_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }
}
