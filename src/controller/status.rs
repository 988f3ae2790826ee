//! Writing the KafkaCluster status, computed by `reconcile::status`: the one writer, and the
//! report of reconciles that keep failing.
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

use super::events::Reason;
use super::{Context, Error, call};
use crate::api::{KafkaCluster, KafkaClusterStatus};
use crate::reconcile::status::{apply_failed, keep_transition_times};

/// The address a cloud (or the dev node agent) gave the external LoadBalancer Service.
pub fn load_balancer_address(svc: &Service) -> Option<String> {
    let ingress = svc
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?;
    ingress
        .iter()
        .find_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
}

/// Why the status was not written.
#[derive(Debug)]
pub enum WriteError {
    /// The KafkaCluster changed since it was read: plan again with what is there now.
    Conflict,
    Other(Error),
}

impl From<Error> for WriteError {
    fn from(e: Error) -> Self {
        WriteError::Other(e)
    }
}

impl From<WriteError> for Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Conflict => Error::Conflict,
            WriteError::Other(e) => e,
        }
    }
}

/// The one place the KafkaCluster status is written: only when it differs from what was read
/// (a condition that keeps its status keeps its transition time), and only if the object is
/// still at the resourceVersion it was read at, so a stale copy never overwrites a newer
/// status (a roll's `restarting` above all).
pub async fn write(
    kc: &KafkaCluster,
    ctx: &Context,
    mut new: KafkaClusterStatus,
) -> Result<(), WriteError> {
    let old = kc.status.clone().unwrap_or_default();
    keep_transition_times(&old, &mut new);
    if new == old {
        return Ok(());
    }
    let api: Api<KafkaCluster> =
        Api::namespaced(ctx.client.clone(), &kc.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": kc.resource_version()},
        "status": merge_patch(&old, &new)?,
    });
    let written = call(
        format!("writing the status of {}", kc.name_any()),
        api.patch_status(
            &kc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        ),
    )
    .await;
    match written {
        Ok(_) => {
            ctx.wrote();
            tracing::debug!(patch = %patch["status"], "status written");
            Ok(())
        }
        Err(Error::Kube {
            source: kube::Error::Api(e),
            ..
        }) if e.code == 409 => Err(WriteError::Conflict),
        Err(e) => Err(e.into()),
    }
}

/// Reconciles keep failing: say why in status (`Degraded`, `ApplyFailed`, with the API
/// server's message) and in a Warning Event, so nobody has to read the operator's log.
pub async fn report_failure(kc: &KafkaCluster, ctx: &Context, error: &Error) {
    if matches!(error, Error::Conflict) {
        return;
    }
    let message = error.to_string();
    ctx.events
        .problem(ctx, kc, Reason::ApplyFailed, Some(&message))
        .await;
    match write(kc, ctx, apply_failed(kc, &message)).await {
        Ok(()) | Err(WriteError::Conflict) => {}
        Err(WriteError::Other(e)) => {
            tracing::warn!(error = %e, "cannot report the failure in status");
        }
    }
}

/// The status as a JSON merge patch over `old`: fields `new` no longer has, at any depth of
/// nested objects (a finished roll, a broker no longer restarting, cleared notices), become
/// `null`, since a merge patch keeps whatever it does not mention. Arrays are replaced whole.
/// The JSON merge patch from `old` to `new`: fields `new` lacks become null (removed).
pub(crate) fn merge_patch<T: serde::Serialize>(
    old: &T,
    new: &T,
) -> Result<serde_json::Value, Error> {
    let mut patch = serde_json::to_value(new)?;
    null_removed(&serde_json::to_value(old)?, &mut patch);
    Ok(patch)
}

fn null_removed(old: &serde_json::Value, new: &mut serde_json::Value) {
    if let (serde_json::Value::Object(old), serde_json::Value::Object(new)) = (old, new) {
        for (key, old_value) in old {
            match new.get_mut(key) {
                Some(new_value) => null_removed(old_value, new_value),
                None => {
                    new.insert(key.clone(), serde_json::Value::Null);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RollingUpgradeStatus;

    #[test]
    fn fields_gone_from_the_status_are_nulled_in_the_patch() {
        let old = KafkaClusterStatus {
            rolling_upgrade: Some(RollingUpgradeStatus {
                restarting: Some(2),
                ..Default::default()
            }),
            config_notices: vec!["x".into()],
            broker_count: 3,
            ..Default::default()
        };
        let new = KafkaClusterStatus {
            broker_count: 3,
            ..Default::default()
        };
        let patch = merge_patch(&old, &new).unwrap();
        assert_eq!(patch["rollingUpgrade"], serde_json::Value::Null);
        let still_rolling = KafkaClusterStatus {
            rolling_upgrade: Some(RollingUpgradeStatus {
                failures: 1,
                ..Default::default()
            }),
            ..new.clone()
        };
        let patch = merge_patch(&old, &still_rolling).unwrap();
        assert_eq!(
            patch["rollingUpgrade"]["restarting"],
            serde_json::Value::Null
        );
        assert_eq!(patch["rollingUpgrade"]["failures"], 1);
        assert_eq!(patch["configNotices"], serde_json::Value::Null);
        assert_eq!(patch["brokerCount"], 3);
    }
}
