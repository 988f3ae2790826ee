//! Leader election with a coordination.k8s.io Lease, so two operator replicas can run and only
//! one reconciles. The leader renews the Lease; a replica takes it over once it has not been
//! renewed for its duration. A leader that cannot renew in time stops leading (the caller exits,
//! and a restarted replica campaigns again), so two leaders never act for long.
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

/// Who competes for what.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (its Pod name in a cluster).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: "pier-operator".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

/// Waits until this replica holds the Lease.
pub async fn acquire(client: &Client, config: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    loop {
        match try_acquire(&api, config).await {
            Ok(true) => {
                tracing::info!(identity = %config.identity, lease = %config.name, "became leader");
                return;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election: cannot read or write the Lease"),
        }
        tokio::time::sleep(config.renew_every).await;
    }
}

/// Renews the Lease until a renewal fails for a whole lease duration or another replica holds
/// it; then returns (the caller must stop acting as leader).
pub async fn keep(client: &Client, config: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(config.renew_every).await;
        match try_acquire(&api, config).await {
            Ok(true) => last_renewed = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::error!(identity = %config.identity, "lost the leader Lease to another replica");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the leader Lease");
                if last_renewed.elapsed() >= config.lease_duration {
                    tracing::error!("leader Lease expired without renewal");
                    return;
                }
            }
        }
    }
}

/// Takes or renews the Lease if it is free, expired or ours. The write carries the read's
/// resourceVersion, so of two replicas racing for it only one wins.
async fn try_acquire(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let duration_s = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let current = api.get_opt(&config.name).await?;
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(duration_s),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let ours = spec.holder_identity.as_deref() == Some(config.identity.as_str());
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(MicroTime(renewed)), Some(d)) => {
            now.duration_since(*renewed).as_secs_f64() > f64::from(d)
        }
        _ => true,
    };
    if !ours && !expired {
        return Ok(false);
    }
    if !ours {
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(duration_s);
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
