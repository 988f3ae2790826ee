//! The incremental (delta) ADS protocol for one stream, without I/O. Only resources whose
//! version differs from what the client has are sent, removals are named in
//! `removed_resources`, and a named subscription to a resource that does not exist is answered
//! with that name as removed. Ordering, ACK/NACK and the cluster hold follow the SotW session;
//! the removal of a held cluster's endpoints is held with it.
use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;

use super::session::{Output, Refused, StreamEvent};
use super::subscription::{MAX_NAME_LEN, MAX_NAMES, Reply, StreamState};
use super::wire::DeltaResponse;
use super::{Resource, ResourceType, Snapshot};

/// One delta ADS stream.
#[derive(Debug, Default)]
pub struct DeltaSession {
    state: StreamState,
    /// Newly named resources that do not exist, per type: told as removed once.
    missing: [BTreeSet<String>; 3],
}

/// What would be sent for one type.
struct Diff {
    changed: Vec<Arc<Resource>>,
    removed: Vec<String>,
}

impl Diff {
    fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }
}

impl DeltaSession {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Output<DeltaResponse> {
        self.state.set_snapshot(snapshot);
        let mut out = Output::default();
        for t in ResourceType::ALL {
            self.push(t, &mut out);
        }
        self.check_applied(&mut out.events);
        out
    }

    pub fn on_request(&mut self, req: &DeltaDiscoveryRequest) -> Output<DeltaResponse> {
        let mut out = Output::default();
        let Some(t) = ResourceType::from_type_url(&req.type_url) else {
            tracing::debug!(type_url = %req.type_url, "ignoring request for a type Pier does not serve");
            return out;
        };
        if let Err(refused) = self.on_request_of(t, req, &mut out) {
            out.refused = Some(refused);
        }
        out
    }

    fn on_request_of(
        &mut self,
        t: ResourceType,
        req: &DeltaDiscoveryRequest,
        out: &mut Output<DeltaResponse>,
    ) -> Result<(), Refused> {
        if !self.state.get(t).sub.requested() {
            // A reconnecting client says what it already has (only versions: no bodies).
            let initial = &req.initial_resource_versions;
            if initial.len() > MAX_NAMES || initial.keys().any(|n| n.len() > MAX_NAME_LEN) {
                return Err(Refused(format!(
                    "{} initial {} resource versions (at most {MAX_NAMES}, names of at most {MAX_NAME_LEN} bytes)",
                    initial.len(),
                    t.short()
                )));
            }
            if !initial.is_empty() {
                self.state.set_resumed();
            }
            self.state.get_mut(t).has = initial
                .iter()
                .map(|(name, version)| {
                    let known = Resource::known_version(name.clone(), version.clone());
                    (name.clone(), Arc::new(known))
                })
                .collect();
        }
        let error = req.error_detail.as_ref().map(|s| s.message.as_str());
        let reply = self
            .state
            .reply(t, &req.response_nonce, error, &mut out.events);
        // Subscription changes count even on a stale request.
        let change = self.state.get_mut(t).sub.update(
            t,
            &req.resource_names_subscribe,
            &req.resource_names_unsubscribe,
        )?;
        let exists = |n: &String| {
            self.state
                .snapshot()
                .is_some_and(|s| s.get(t).resources.contains_key(n))
        };
        let new_missing: Vec<String> = change
            .added
            .iter()
            .filter(|n| !exists(n))
            .cloned()
            .collect();
        let st = self.state.get_mut(t);
        let missing = &mut self.missing[t as usize];
        missing.extend(new_missing);
        for name in &change.removed {
            missing.remove(name);
            if !st.sub.is_wildcard() {
                st.has.remove(name);
            }
        }
        self.push(t, out);
        if t == ResourceType::Listener
            && matches!(reply, Reply::Ack | Reply::Initial)
            && !self.state.held().is_empty()
            && self.listeners_settled()
        {
            self.push(ResourceType::Cluster, out);
            self.push(ResourceType::Endpoint, out);
        }
        self.check_applied(&mut out.events);
        Ok(())
    }

    fn diff(&self, t: ResourceType) -> Diff {
        let Some(snapshot) = self.state.snapshot() else {
            return Diff {
                changed: Vec::new(),
                removed: Vec::new(),
            };
        };
        let st = self.state.get(t);
        let changed = self
            .state
            .desired(t)
            .into_values()
            .filter(|r| st.has.get(&r.name).map(|h| &h.version) != Some(&r.version))
            .collect();
        let all = &snapshot.get(t).resources;
        let mut removed: BTreeSet<String> = st
            .has
            .keys()
            .filter(|n| !all.contains_key(*n) && !self.state.is_held(t, n))
            .cloned()
            .collect();
        removed.extend(
            self.missing[t as usize]
                .iter()
                .filter(|n| !all.contains_key(*n) && !self.state.is_held(t, n))
                .cloned(),
        );
        Diff {
            changed,
            removed: removed.into_iter().collect(),
        }
    }

    /// Whether [`DeltaSession::diff`] has something for `t`; without building it unless
    /// clusters are held (asked several times per request and snapshot on every stream).
    fn pending(&self, t: ResourceType) -> bool {
        let Some(snapshot) = self.state.snapshot() else {
            return false;
        };
        let Some(changed) = self.state.any_changed(t) else {
            return !self.diff(t).is_empty();
        };
        // Nothing held: whatever the client has or named that the snapshot lacks is removed.
        let all = &snapshot.get(t).resources;
        changed
            || self.state.get(t).has.keys().any(|n| !all.contains_key(n))
            || self.missing[t as usize]
                .iter()
                .any(|n| !all.contains_key(n))
    }

    fn listeners_settled(&self) -> bool {
        let pending = self.pending(ResourceType::Listener);
        self.state.listeners_settled(pending)
    }

    fn check_applied(&mut self, events: &mut Vec<StreamEvent>) {
        let pending = ResourceType::ALL.map(|t| self.pending(t));
        self.state.check_applied(pending, events);
    }

    fn push(&mut self, t: ResourceType, out: &mut Output<DeltaResponse>) {
        let Some(snapshot) = self.state.snapshot().cloned() else {
            return;
        };
        if !self.state.get(t).sub.requested() {
            return;
        }
        if t == ResourceType::Cluster {
            let settled = self.listeners_settled();
            self.state.update_hold(settled);
        }
        // Most pushes (one per ACK) find nothing to send: tell so without building the diff.
        if !self.pending(t) {
            return;
        }
        let diff = self.diff(t);
        if diff.is_empty() {
            return;
        }
        let nonce = self.state.next_nonce();
        let version = snapshot.get(t).version.clone();
        // What the client will have: what it has, changed in place (`sent` puts it back).
        let mut has = std::mem::take(&mut self.state.get_mut(t).has);
        for r in &diff.changed {
            has.insert(r.name.clone(), r.clone());
        }
        for n in &diff.removed {
            has.remove(n);
            self.missing[t as usize].remove(n);
        }
        if t == ResourceType::Cluster {
            // Envoy warms an added or updated cluster only once its endpoints arrive (again).
            let eds = &mut self.state.get_mut(ResourceType::Endpoint).has;
            for r in &diff.changed {
                eds.remove(&r.name);
            }
        }
        out.responses.push(DeltaResponse {
            system_version_info: version.clone(),
            resources: diff.changed,
            type_url: t.type_url(),
            removed_resources: diff.removed,
            nonce: nonce.clone(),
        });
        self.state.sent(t, nonce, version, has, &mut out.events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::per_port;
    use crate::translate;
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

    fn ack(r: &DeltaResponse) -> DeltaDiscoveryRequest {
        sub(
            ResourceType::from_type_url(r.type_url).unwrap(),
            &[],
            &r.nonce,
        )
    }

    fn types_of(out: &Output<DeltaResponse>) -> Vec<ResourceType> {
        out.responses
            .iter()
            .map(|r| ResourceType::from_type_url(r.type_url).unwrap())
            .collect()
    }

    fn names(r: &DeltaResponse) -> Vec<String> {
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
        assert!(
            out.responses[0].removed_resources.is_empty(),
            "endpoint removals are held with their clusters"
        );
        let lds = &out.responses[1];
        assert_eq!(lds.removed_resources, [format!("{B}/broker-1")]);
        let out = s.on_request(&ack(lds));
        assert_eq!(
            types_of(&out),
            [ResourceType::Cluster, ResourceType::Endpoint]
        );
        for r in &out.responses {
            assert_eq!(r.removed_resources, [format!("{B}/broker-1")]);
            assert!(r.resources.is_empty());
        }
    }

    fn nack_of(r: &DeltaResponse) -> DeltaDiscoveryRequest {
        let mut n = ack(r);
        n.error_detail = Some(Status {
            code: 3,
            message: "bad listener".into(),
            details: vec![],
        });
        n
    }

    #[test]
    fn a_nacked_listener_update_keeps_clusters_and_endpoints_held() {
        let mut s = started(&[0, 1]);
        let out = s.on_snapshot(snap(&[0]));
        let lds = out.responses[1].clone();
        let out = s.on_request(&nack_of(&lds));
        assert!(out.responses.is_empty(), "nothing released on a NACK");
        assert!(
            !out.events
                .iter()
                .any(|e| matches!(e, StreamEvent::Applied { .. }))
        );
        // A later config is ACKed: then the removals go out.
        let out = s.on_snapshot(snap(&[0, 2]));
        let lds = out
            .responses
            .iter()
            .find(|r| r.type_url == ResourceType::Listener.type_url())
            .unwrap()
            .clone();
        assert!(
            out.responses
                .iter()
                .all(|r| !r.removed_resources.contains(&format!("{B}/broker-1"))
                    || r.type_url == ResourceType::Listener.type_url())
        );
        for r in &out.responses {
            if r.type_url != ResourceType::Listener.type_url() {
                s.on_request(&ack(r));
            }
        }
        let out = s.on_request(&ack(&lds));
        let removed: Vec<(ResourceType, Vec<String>)> = out
            .responses
            .iter()
            .map(|r| {
                (
                    ResourceType::from_type_url(r.type_url).unwrap(),
                    r.removed_resources.clone(),
                )
            })
            .collect();
        assert_eq!(
            removed,
            [
                (ResourceType::Cluster, vec![format!("{B}/broker-1")]),
                (ResourceType::Endpoint, vec![format!("{B}/broker-1")])
            ]
        );
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

    #[test]
    fn a_resumed_client_keeps_clusters_until_its_listeners_are_known() {
        let old = snap(&[0, 1]);
        let mut s = DeltaSession::new();
        s.on_snapshot(snap(&[0]));
        let mut cds = sub(ResourceType::Cluster, &[], "");
        for (n, r) in &old.get(ResourceType::Cluster).resources {
            cds.initial_resource_versions
                .insert(n.clone(), r.version.clone());
        }
        let out = s.on_request(&cds);
        assert!(
            out.responses.is_empty(),
            "broker-1's cluster is not removed before the listeners are known"
        );
        // The client already has the current listeners: nothing to send, the hold ends.
        let mut lds = sub(ResourceType::Listener, &[], "");
        for (n, r) in &snap(&[0]).get(ResourceType::Listener).resources {
            lds.initial_resource_versions
                .insert(n.clone(), r.version.clone());
        }
        let out = s.on_request(&lds);
        assert_eq!(types_of(&out), [ResourceType::Cluster]);
        assert_eq!(
            out.responses[0].removed_resources,
            [format!("{B}/broker-1")]
        );
    }
}
