//! The incremental (delta) ADS protocol for one stream, without I/O. Only resources whose
//! version differs from what the client has are sent, removals are named in
//! `removed_resources`, and a named subscription to a resource that does not exist is answered
//! with that name as removed. Ordering, ACK/NACK and the cluster hold follow the SotW session.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as PbResource,
};

use super::session::{Output, StreamEvent};
use super::{ResourceType, Snapshot};

#[derive(Debug, Default)]
struct TypeState {
    requested: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    /// name → version the client has.
    known: BTreeMap<String, String>,
    /// Newly named resources that do not exist: told as removed once.
    missing: BTreeSet<String>,
    last_nonce: String,
    sent_version: String,
    sent_created: Option<Instant>,
}

/// One delta ADS stream.
#[derive(Debug, Default)]
pub struct DeltaSession {
    snapshot: Option<Arc<Snapshot>>,
    types: [TypeState; 3],
    nonce: u64,
    holding_clusters: bool,
}

/// What would be sent for one type.
struct Diff {
    changed: Vec<PbResource>,
    removed: Vec<String>,
}

impl DeltaSession {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Output<DeltaDiscoveryResponse> {
        self.snapshot = Some(snapshot);
        let mut out = Output::default();
        for t in ResourceType::ALL {
            self.push(t, &mut out);
        }
        out
    }

    pub fn on_request(&mut self, req: &DeltaDiscoveryRequest) -> Output<DeltaDiscoveryResponse> {
        let mut out = Output::default();
        let Some(t) = ResourceType::from_type_url(&req.type_url) else {
            tracing::debug!(type_url = %req.type_url, "ignoring request for a type Pier does not serve");
            return out;
        };
        let snapshot = self.snapshot.clone();
        let st = &mut self.types[t as usize];
        let first = !st.requested;
        if first {
            // A reconnecting client says what it already has.
            st.known = req
                .initial_resource_versions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        let stale = !req.response_nonce.is_empty() && req.response_nonce != st.last_nonce;
        let mut release_clusters = false;
        if !req.response_nonce.is_empty() && !stale {
            match &req.error_detail {
                Some(status) => out.events.push(StreamEvent::Nacked {
                    type_: t,
                    version: st.sent_version.clone(),
                    error: status.message.clone(),
                }),
                None => out.events.push(StreamEvent::Acked {
                    type_: t,
                    version: st.sent_version.clone(),
                    snapshot_created: st.sent_created,
                }),
            }
            release_clusters = t == ResourceType::Listener && self.holding_clusters;
        }
        // Subscription changes count even on a stale request.
        if first && req.resource_names_subscribe.is_empty() && t.wildcard_by_default() {
            st.wildcard = true;
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                st.wildcard = true;
            } else if st.names.insert(name.clone()) {
                let exists = snapshot
                    .as_ref()
                    .is_some_and(|s| s.get(t).resources.contains_key(name));
                if !exists {
                    st.missing.insert(name.clone());
                }
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                st.wildcard = false;
            } else {
                st.names.remove(name);
                st.missing.remove(name);
                if !st.wildcard {
                    st.known.remove(name);
                }
            }
        }
        st.requested = true;
        self.push(t, &mut out);
        if release_clusters {
            self.holding_clusters = false;
            self.push(ResourceType::Cluster, &mut out);
        }
        out
    }

    fn diff(&self, t: ResourceType) -> Diff {
        let st = &self.types[t as usize];
        let Some(snapshot) = &self.snapshot else {
            return Diff {
                changed: Vec::new(),
                removed: Vec::new(),
            };
        };
        let all = &snapshot.get(t).resources;
        let in_scope = |n: &String| st.wildcard || st.names.contains(n);
        let changed = all
            .iter()
            .filter(|(n, r)| in_scope(n) && st.known.get(*n) != Some(&r.version))
            .map(|(n, r)| PbResource {
                name: n.clone(),
                version: r.version.clone(),
                resource: Some(r.body.clone()),
                ..Default::default()
            })
            .collect();
        let mut removed: BTreeSet<String> = st
            .known
            .keys()
            .filter(|n| !all.contains_key(*n))
            .cloned()
            .collect();
        removed.extend(st.missing.iter().filter(|n| !all.contains_key(*n)).cloned());
        Diff {
            changed,
            removed: removed.into_iter().collect(),
        }
    }

    fn listener_update_pending(&self) -> bool {
        let d = self.diff(ResourceType::Listener);
        self.types[ResourceType::Listener as usize].requested
            && (!d.changed.is_empty() || !d.removed.is_empty())
    }

    fn push(&mut self, t: ResourceType, out: &mut Output<DeltaDiscoveryResponse>) {
        let Some(snapshot) = self.snapshot.clone() else {
            return;
        };
        if !self.types[t as usize].requested {
            return;
        }
        let mut diff = self.diff(t);
        if t == ResourceType::Cluster
            && !diff.removed.is_empty()
            && (self.holding_clusters || self.listener_update_pending())
        {
            // Keep the clusters until the listeners that used them are gone.
            diff.removed.clear();
            self.holding_clusters = true;
        }
        if diff.changed.is_empty() && diff.removed.is_empty() {
            return;
        }
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let version = snapshot.get(t).version.clone();
        let st = &mut self.types[t as usize];
        for r in &diff.changed {
            st.known.insert(r.name.clone(), r.version.clone());
        }
        for n in &diff.removed {
            st.known.remove(n);
            st.missing.remove(n);
        }
        st.last_nonce = nonce.clone();
        st.sent_version = version.clone();
        st.sent_created = Some(snapshot.created);
        let changed_clusters: Vec<String> = if t == ResourceType::Cluster {
            diff.changed.iter().map(|r| r.name.clone()).collect()
        } else {
            Vec::new()
        };
        out.responses.push(DeltaDiscoveryResponse {
            system_version_info: version.clone(),
            resources: diff.changed,
            type_url: t.type_url().to_string(),
            removed_resources: diff.removed,
            nonce,
            ..Default::default()
        });
        out.events.push(StreamEvent::Sent { type_: t, version });
        // Envoy warms an added or updated cluster only once its endpoints arrive (again).
        let eds = &mut self.types[ResourceType::Endpoint as usize];
        for name in changed_clusters {
            eds.known.remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::per_port;
    use crate::xds::translate;
    use envoy_types::pb::google::rpc::Status;

    fn snap(ids: &[i32]) -> Arc<Snapshot> {
        Arc::new(Snapshot::new(translate(&[per_port(ids)]).unwrap()))
    }

    fn sub(t: ResourceType, names: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: t.type_url().into(),
            resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn ack(r: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        sub(
            ResourceType::from_type_url(&r.type_url).unwrap(),
            &[],
            &r.nonce,
        )
    }

    fn types_of(out: &Output<DeltaDiscoveryResponse>) -> Vec<ResourceType> {
        out.responses
            .iter()
            .map(|r| ResourceType::from_type_url(&r.type_url).unwrap())
            .collect()
    }

    fn names(r: &DeltaDiscoveryResponse) -> Vec<String> {
        r.resources.iter().map(|r| r.name.clone()).collect()
    }

    const B: &str = "pier/kafka/demo/external";

    fn started(ids: &[i32]) -> DeltaSession {
        let mut s = DeltaSession::new();
        s.on_snapshot(snap(ids));
        let out = s.on_request(&sub(ResourceType::Cluster, &[], ""));
        let clusters = names(&out.responses[0]);
        s.on_request(&ack(&out.responses[0]));
        let refs: Vec<&str> = clusters.iter().map(String::as_str).collect();
        let out = s.on_request(&sub(ResourceType::Endpoint, &refs, ""));
        assert_eq!(names(&out.responses[0]), clusters);
        s.on_request(&ack(&out.responses[0]));
        let out = s.on_request(&sub(ResourceType::Listener, &[], ""));
        assert_eq!(out.responses.len(), 1);
        assert!(s.on_request(&ack(&out.responses[0])).responses.is_empty());
        s
    }

    #[test]
    fn only_changes_are_sent() {
        let mut s = started(&[0, 1]);
        let out = s.on_snapshot(snap(&[0, 1, 2]));
        assert_eq!(
            types_of(&out),
            [
                ResourceType::Cluster,
                ResourceType::Endpoint,
                ResourceType::Listener
            ]
        );
        assert_eq!(names(&out.responses[0]), [format!("{B}/broker-2")]);
        // The bootstrap listener is unchanged (its cluster's endpoints changed, not it).
        assert_eq!(names(&out.responses[2]), [format!("{B}/broker-2")]);
        assert!(out.responses.iter().all(|r| r.removed_resources.is_empty()));
        assert!(s.on_snapshot(snap(&[0, 1, 2])).responses.is_empty());
    }

    #[test]
    fn removals_come_after_the_listener_update() {
        let mut s = started(&[0, 1]);
        let out = s.on_snapshot(snap(&[0]));
        assert_eq!(
            types_of(&out),
            [ResourceType::Endpoint, ResourceType::Listener]
        );
        let lds = &out.responses[1];
        assert_eq!(lds.removed_resources, [format!("{B}/broker-1")]);
        let out = s.on_request(&ack(lds));
        assert_eq!(types_of(&out), [ResourceType::Cluster]);
        assert_eq!(
            out.responses[0].removed_resources,
            [format!("{B}/broker-1")]
        );
        assert!(out.responses[0].resources.is_empty());
    }

    #[test]
    fn a_reconnecting_client_gets_only_what_it_lacks() {
        let full = snap(&[0, 1]);
        let mut s = DeltaSession::new();
        s.on_snapshot(full.clone());
        let mut req = sub(ResourceType::Listener, &[], "");
        for (n, r) in &full.get(ResourceType::Listener).resources {
            req.initial_resource_versions
                .insert(n.clone(), r.version.clone());
        }
        req.initial_resource_versions
            .insert(format!("{B}/broker-9"), "gone".into());
        let out = s.on_request(&req);
        assert_eq!(out.responses.len(), 1);
        assert!(out.responses[0].resources.is_empty());
        assert_eq!(
            out.responses[0].removed_resources,
            [format!("{B}/broker-9")]
        );
    }

    #[test]
    fn a_named_missing_resource_is_answered_as_removed_once() {
        let mut s = DeltaSession::new();
        s.on_snapshot(snap(&[0]));
        let out = s.on_request(&sub(ResourceType::Endpoint, &["nope"], ""));
        assert_eq!(out.responses[0].removed_resources, ["nope"]);
        let out = s.on_request(&ack(&out.responses[0]));
        assert!(out.responses.is_empty());
    }

    #[test]
    fn nack_is_an_event_and_nothing_is_resent() {
        let mut s = started(&[0]);
        let out = s.on_snapshot(snap(&[0, 1]));
        let lds = out.responses[2].clone();
        let mut n = ack(&lds);
        n.error_detail = Some(Status {
            code: 3,
            message: "bad".into(),
            details: vec![],
        });
        let out = s.on_request(&n);
        assert!(out.responses.is_empty());
        assert!(matches!(&out.events[..], [StreamEvent::Nacked { error, .. }] if error == "bad"));
    }

    #[test]
    fn stale_nonce_is_not_an_ack_but_subscriptions_count() {
        let mut s = DeltaSession::new();
        s.on_snapshot(snap(&[0, 1]));
        let out = s.on_request(&sub(
            ResourceType::Endpoint,
            &[&format!("{B}/broker-0")],
            "",
        ));
        let first = out.responses[0].clone();
        let out = s.on_request(&sub(
            ResourceType::Endpoint,
            &[&format!("{B}/broker-1")],
            "99",
        ));
        assert!(
            out.events
                .iter()
                .all(|e| matches!(e, StreamEvent::Sent { .. }))
        );
        assert_eq!(names(&out.responses[0]), [format!("{B}/broker-1")]);
        assert_ne!(first.nonce, out.responses[0].nonce);
    }

    #[test]
    fn an_updated_cluster_gets_its_endpoints_again() {
        let mut s = started(&[0]);
        let mut a = per_port(&[0]);
        a.brokers[0].port = 9999; // endpoint change only
        let out = s.on_snapshot(Arc::new(Snapshot::new(translate(&[a]).unwrap())));
        assert_eq!(types_of(&out), [ResourceType::Endpoint]);
        let mut a = per_port(&[0]);
        a.brokers[0].host = "kafka-0.example".into(); // cluster change (DNS)
        let out = s.on_snapshot(Arc::new(Snapshot::new(translate(&[a]).unwrap())));
        assert_eq!(types_of(&out)[0], ResourceType::Cluster);
    }
}
