//! The leader's mark on its own Pod: the label [`LEADER_LABEL`], which the xDS Service of the
//! Helm chart selects, so Envoys reach the replica that has their config while every replica
//! stays Ready (a stand-by is Ready too: rolling updates, PodDisruptionBudgets and not-ready
//! alerts all count on that). The leader marks itself once it leads and unmarks any other
//! replica still marked (one that died leading); a replica that stops leading unmarks itself.
//! Without `POD_NAME` and `POD_NAMESPACE` (not in a Pod) nothing is marked.
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// The label the leading replica's Pod carries (value `"true"`).
pub const LEADER_LABEL: &str = "kafka.pier.dev/leader";

/// This replica's Pod, to mark and unmark.
#[derive(Clone)]
pub struct LeaderPod {
    api: Api<Pod>,
    name: String,
}

impl LeaderPod {
    /// This replica's Pod, from the downward API's `POD_NAME` and `POD_NAMESPACE`.
    pub fn from_env(client: &Client) -> Option<Self> {
        let name = std::env::var("POD_NAME").ok().filter(|n| !n.is_empty())?;
        let namespace = std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())?;
        Some(Self {
            api: Api::namespaced(client.clone(), &namespace),
            name,
        })
    }

    async fn set(&self, pod: &str, leading: bool) -> Result<(), kube::Error> {
        let value = if leading { json!("true") } else { json!(null) };
        let patch = json!({ "metadata": { "labels": { LEADER_LABEL: value } } });
        self.api
            .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    /// Marks this Pod, then unmarks every other Pod of the namespace still marked.
    pub async fn mark(&self) -> Result<(), kube::Error> {
        self.set(&self.name, true).await?;
        let marked = self
            .api
            .list(&ListParams::default().labels(&format!("{LEADER_LABEL}=true")))
            .await?;
        for pod in marked.items.iter().filter(|p| p.name_any() != self.name) {
            tracing::info!(pod = %pod.name_any(), "unmarking a replica that no longer leads");
            match self.set(&pod.name_any(), false).await {
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Marks this Pod, retrying until it works; gives up only if the Pod does not exist.
    pub async fn keep_trying_to_mark(&self) {
        let mut delay = Duration::from_millis(500);
        loop {
            match self.mark().await {
                Ok(()) => {
                    tracing::info!(pod = %self.name, label = LEADER_LABEL, "marked this replica's Pod as the leader");
                    return;
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    tracing::warn!(pod = %self.name, "no Pod of this name: the xDS Service cannot select this replica");
                    return;
                }
                Err(e) => {
                    tracing::warn!(pod = %self.name, error = %e, retry_in = ?delay, "cannot mark this replica's Pod as the leader");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Removes this Pod's mark (when it stops leading).
    pub async fn unmark(&self) -> Result<(), kube::Error> {
        match self.set(&self.name, false).await {
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            other => other,
        }
    }
}
