//! Plays the cloud's LoadBalancer provider: every Service of type LoadBalancer gets the ingress
//! address 127.0.0.1, where the Envoy Pods this node runs listen (their listeners bind all
//! local addresses). One node, one address: enough for a dev cluster.
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

pub const INGRESS_IP: &str = "127.0.0.1";

pub async fn provide_load_balancers(client: kube::Client) -> anyhow::Result<()> {
    let services: Api<Service> = Api::all(client.clone());
    let mut stream = watcher(services, watcher::Config::default())
        .applied_objects()
        .boxed();
    while let Some(svc) = stream.try_next().await? {
        let is_lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
        let has_ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .is_some_and(|i| !i.is_empty());
        if !is_lb || has_ingress {
            continue;
        }
        let api: Api<Service> =
            Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default());
        let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": INGRESS_IP}]}}});
        match api
            .patch_status(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(status),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(service = %svc.name_any(), ip = INGRESS_IP, "load balancer address assigned")
            }
            Err(e) => {
                tracing::warn!(service = %svc.name_any(), error = %e, "cannot set the load balancer address")
            }
        }
    }
    Ok(())
}
