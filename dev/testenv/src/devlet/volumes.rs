//! A local-directory volume provisioner for the StorageClass `pier-dev-local`: every pending
//! claim of that class gets a PersistentVolume (a directory under the devlet's root, hostPath,
//! reclaim policy Retain) pre-bound to it; kube-controller-manager's PV binder completes the
//! binding. Data survives a Pod's deletion and re-creation, as with real disks.
use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use super::DevletOptions;

pub const STORAGE_CLASS: &str = "pier-dev-local";
const PROVISIONER: &str = "pier.dev/local";

/// Creates the StorageClass (the cluster's default) if it is missing.
pub async fn ensure_storage_class(client: &kube::Client) -> anyhow::Result<()> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    let class = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        // The default class: claims that name none (like the examples') get local volumes.
        "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Retain",
        // Bound once the scheduler chose a node: with several devlets (zones) the volume is
        // made by the devlet of the node the Pod goes to.
        "volumeBindingMode": "WaitForFirstConsumer",
    });
    classes
        .patch(
            STORAGE_CLASS,
            &PatchParams::apply("pier-devlet"),
            &Patch::Apply(&class),
        )
        .await
        .context("creating StorageClass pier-dev-local")?;
    Ok(())
}

/// Watches claims and provisions a volume for each pending one of our class.
pub async fn provision_volumes(client: kube::Client, o: DevletOptions) -> anyhow::Result<()> {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let mut stream = watcher(claims, watcher::Config::default())
        .applied_objects()
        .boxed();
    while let Some(claim) = stream.try_next().await? {
        if let Err(e) = provision(&volumes, &claim, &o).await {
            tracing::warn!(claim = %claim.name_any(), error = %e, "cannot provision a volume");
        }
    }
    Ok(())
}

/// The PV name of a claim: stable, so a retried provisioning finds its own volume.
pub fn volume_name(claim: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", claim.metadata.uid.clone().unwrap_or_default())
}

async fn provision(
    volumes: &Api<PersistentVolume>,
    claim: &PersistentVolumeClaim,
    o: &DevletOptions,
) -> anyhow::Result<()> {
    let Some(spec) = &claim.spec else {
        return Ok(());
    };
    if spec.storage_class_name.as_deref() != Some(STORAGE_CLASS) || spec.volume_name.is_some() {
        return Ok(());
    }
    if claim.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    // The scheduler names the node (WaitForFirstConsumer); another devlet's claims are its own.
    let selected = claim
        .annotations()
        .get("volume.kubernetes.io/selected-node")
        .cloned();
    if selected.as_deref() != Some(o.node_name.as_str()) {
        return Ok(());
    }
    let name = volume_name(claim);
    if volumes.get_opt(&name).await?.is_some() {
        return Ok(());
    }
    let dir = o.root.join("volumes").join(&name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned())
        .map(|q| q.0)
        .unwrap_or_else(|| "1Gi".into());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {"node.pier.dev/devlet": o.node_name},
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": STORAGE_CLASS,
            "hostPath": {"path": dir.display().to_string(), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": claim.namespace(), "name": claim.name_any(), "uid": claim.metadata.uid,
            },
            // The directory is on this node: Pods using it must run here.
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [o.node_name]}
            ]}]}},
        },
    }))?;
    volumes.create(&PostParams::default(), &pv).await?;
    tracing::info!(claim = %claim.name_any(), volume = %name, dir = %dir.display(), "provisioned");
    Ok(())
}
