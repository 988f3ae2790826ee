//! The state-of-the-world ADS protocol for one stream, without I/O: requests and snapshots go
//! in, responses (in push order) and ACK/NACK events come out.
//!
//! Rules kept here (xds_protocol.rst): every response has a version and a fresh nonce; a request
//! whose nonce is not the latest one sent for its type is stale and ignored; ACK and NACK are
//! told apart by `error_detail`; clusters and listeners are wildcard unless named; a response is
//! sent only when what the client subscribed to changed (never the same version again after a
//! NACK); pushes go clusters → endpoints → listeners, and clusters a listener update drops are
//! kept until the client has answered that listener update.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use super::session::{Output, StreamEvent};
use super::{Resource, ResourceType, Snapshot};

#[derive(Debug, Default)]
struct TypeState {
    requested: bool,
    /// The client has named resources at least once (then an empty list means "none").
    named_once: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    last_nonce: String,
    sent_version: String,
    sent: BTreeMap<String, Arc<Resource>>,
    sent_created: Option<Instant>,
    /// Send again on the next chance even if unchanged (endpoints after a cluster update: Envoy
    /// warms an updated cluster only once its endpoints arrive again).
    force: bool,
}

/// One SotW ADS stream.
#[derive(Debug, Default)]
pub struct SotwSession {
    snapshot: Option<Arc<Snapshot>>,
    types: [TypeState; 3],
    nonce: u64,
    /// Clusters dropped by a pending listener update are still being sent.
    holding_clusters: bool,
}

impl SotwSession {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new snapshot for this stream's group: push what changed.
    pub fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Output<DiscoveryResponse> {
        self.snapshot = Some(snapshot);
        let mut out = Output::default();
        for t in ResourceType::ALL {
            self.push(t, &mut out);
        }
        out
    }

    /// A request from the client.
    pub fn on_request(&mut self, req: &DiscoveryRequest) -> Output<DiscoveryResponse> {
        let mut out = Output::default();
        let Some(t) = ResourceType::from_type_url(&req.type_url) else {
            tracing::debug!(type_url = %req.type_url, "ignoring request for a type Pier does not serve");
            return out;
        };
        let st = &mut self.types[t as usize];
        if !req.response_nonce.is_empty() && req.response_nonce != st.last_nonce {
            tracing::trace!(type_ = t.short(), nonce = %req.response_nonce, "stale request ignored");
            return out;
        }
        let mut release_clusters = false;
        if !req.response_nonce.is_empty() {
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

        let mut names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
        let star = names.remove("*");
        let wildcard = star || (names.is_empty() && !st.named_once);
        if !names.is_empty() {
            st.named_once = true;
        }
        let first = !st.requested;
        let changed = first || wildcard != st.wildcard || names != st.names;
        st.requested = true;
        st.wildcard = wildcard;
        st.names = names;
        // A request without a nonce starts (or restarts) a subscription: always answer it.
        if changed || req.response_nonce.is_empty() {
            st.force = true;
        }
        self.push(t, &mut out);
        if release_clusters {
            self.holding_clusters = false;
            self.push(ResourceType::Cluster, &mut out);
        }
        out
    }

    /// What the client should have of type `t` now.
    fn desired(&self, t: ResourceType) -> BTreeMap<String, Arc<Resource>> {
        let (Some(snapshot), st) = (&self.snapshot, &self.types[t as usize]) else {
            return BTreeMap::new();
        };
        let all = &snapshot.get(t).resources;
        if st.wildcard {
            all.clone()
        } else {
            st.names
                .iter()
                .filter_map(|n| all.get(n).map(|r| (n.clone(), r.clone())))
                .collect()
        }
    }

    fn listener_update_pending(&self) -> bool {
        let st = &self.types[ResourceType::Listener as usize];
        st.requested && !same(&self.desired(ResourceType::Listener), &st.sent)
    }

    fn push(&mut self, t: ResourceType, out: &mut Output<DiscoveryResponse>) {
        let Some(snapshot) = self.snapshot.clone() else {
            return;
        };
        if !self.types[t as usize].requested {
            return;
        }
        let mut desired = self.desired(t);
        let mut version = snapshot.get(t).version.clone();
        if t == ResourceType::Cluster && (self.holding_clusters || self.listener_update_pending()) {
            let st = &self.types[t as usize];
            let dropped: Vec<(String, Arc<Resource>)> = st
                .sent
                .iter()
                .filter(|(n, _)| !desired.contains_key(*n))
                .map(|(n, r)| (n.clone(), r.clone()))
                .collect();
            if !dropped.is_empty() {
                desired.extend(dropped);
                version.push_str("+held");
                self.holding_clusters = true;
            }
        }
        let st = &mut self.types[t as usize];
        if same(&desired, &st.sent) && !st.force {
            return;
        }
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let response = DiscoveryResponse {
            version_info: version.clone(),
            resources: desired.values().map(|r| r.body.clone()).collect(),
            type_url: t.type_url().to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        st.last_nonce = nonce;
        st.sent_version = version.clone();
        st.sent = desired;
        st.sent_created = Some(snapshot.created);
        st.force = false;
        out.responses.push(response);
        out.events.push(StreamEvent::Sent { type_: t, version });
        if t == ResourceType::Cluster {
            self.types[ResourceType::Endpoint as usize].force = true;
        }
    }
}

fn same(a: &BTreeMap<String, Arc<Resource>>, b: &BTreeMap<String, Arc<Resource>>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((na, ra), (nb, rb))| na == nb && ra.version == rb.version)
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

    fn req(t: ResourceType, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: t.type_url().into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn ack(r: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
        let t = ResourceType::from_type_url(&r.type_url).unwrap();
        req(t, names, &r.version_info, &r.nonce)
    }

    fn nack(r: &DiscoveryResponse, message: &str) -> DiscoveryRequest {
        let t = ResourceType::from_type_url(&r.type_url).unwrap();
        DiscoveryRequest {
            error_detail: Some(Status {
                code: 3,
                message: message.into(),
                details: vec![],
            }),
            ..req(t, &[], "", &r.nonce)
        }
    }

    fn names_of(r: &DiscoveryResponse) -> Vec<String> {
        use envoy_types::pb::envoy::config::cluster::v3::Cluster;
        use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
        use envoy_types::pb::envoy::config::listener::v3::Listener;
        use prost::Message;
        r.resources
            .iter()
            .map(
                |a| match ResourceType::from_type_url(&a.type_url).unwrap() {
                    ResourceType::Cluster => Cluster::decode(a.value.as_slice()).unwrap().name,
                    ResourceType::Endpoint => {
                        ClusterLoadAssignment::decode(a.value.as_slice())
                            .unwrap()
                            .cluster_name
                    }
                    ResourceType::Listener => Listener::decode(a.value.as_slice()).unwrap().name,
                },
            )
            .collect()
    }

    fn types_of(out: &Output<DiscoveryResponse>) -> Vec<ResourceType> {
        out.responses
            .iter()
            .map(|r| ResourceType::from_type_url(&r.type_url).unwrap())
            .collect()
    }

    const B: &str = "pier/kafka/demo/external";

    /// A session that went through Envoy's start-up dance: CDS, EDS (names), LDS, all ACKed.
    fn started(ids: &[i32]) -> (SotwSession, Vec<String>) {
        let mut s = SotwSession::new();
        assert!(
            s.on_request(&req(ResourceType::Cluster, &[], "", ""))
                .responses
                .is_empty()
        );
        let out = s.on_snapshot(snap(ids));
        assert_eq!(types_of(&out), [ResourceType::Cluster]);
        let cds = &out.responses[0];
        let clusters = names_of(cds);
        s.on_request(&ack(cds, &[]));
        let eds_names: Vec<&str> = clusters.iter().map(String::as_str).collect();
        let out = s.on_request(&req(ResourceType::Endpoint, &eds_names, "", ""));
        assert_eq!(types_of(&out), [ResourceType::Endpoint]);
        s.on_request(&ack(&out.responses[0], &eds_names));
        let out = s.on_request(&req(ResourceType::Listener, &[], "", ""));
        assert_eq!(types_of(&out), [ResourceType::Listener]);
        let acked = s.on_request(&ack(&out.responses[0], &[]));
        assert!(acked.responses.is_empty());
        (s, clusters)
    }

    #[test]
    fn startup_answers_each_type_once_and_acks_are_events() {
        let mut s = SotwSession::new();
        let out = s.on_request(&req(ResourceType::Cluster, &[], "", ""));
        assert!(out.responses.is_empty(), "nothing to say before a snapshot");
        let out = s.on_snapshot(snap(&[0, 1]));
        let cds = out.responses[0].clone();
        assert_eq!(cds.nonce, "1");
        assert!(!cds.version_info.is_empty());
        assert_eq!(names_of(&cds).len(), 3);
        let out = s.on_request(&ack(&cds, &[]));
        assert!(out.responses.is_empty());
        assert!(matches!(
            &out.events[..],
            [StreamEvent::Acked { type_: ResourceType::Cluster, version, .. }] if *version == cds.version_info
        ));
        let (_, clusters) = started(&[0, 1]);
        assert_eq!(
            clusters,
            [
                format!("{B}/bootstrap"),
                format!("{B}/broker-0"),
                format!("{B}/broker-1")
            ]
        );
    }

    #[test]
    fn an_empty_snapshot_is_still_answered() {
        let mut s = SotwSession::new();
        s.on_snapshot(snap(&[]));
        let out = s.on_request(&req(ResourceType::Listener, &[], "", ""));
        assert_eq!(out.responses.len(), 1);
        assert_eq!(names_of(&out.responses[0]), [format!("{B}/bootstrap")]);
    }

    #[test]
    fn updates_go_clusters_then_endpoints_then_listeners() {
        let (mut s, _) = started(&[0, 1]);
        let out = s.on_snapshot(snap(&[0, 1, 2]));
        assert_eq!(
            types_of(&out),
            [
                ResourceType::Cluster,
                ResourceType::Endpoint,
                ResourceType::Listener
            ]
        );
        let nonces: Vec<u64> = out
            .responses
            .iter()
            .map(|r| r.nonce.parse().unwrap())
            .collect();
        assert!(nonces.windows(2).all(|w| w[0] < w[1]), "fresh nonces");
        assert!(names_of(&out.responses[2]).contains(&format!("{B}/broker-2")));
    }

    #[test]
    fn an_unchanged_snapshot_sends_nothing() {
        let (mut s, _) = started(&[0, 1]);
        assert!(s.on_snapshot(snap(&[0, 1])).responses.is_empty());
    }

    #[test]
    fn stale_nonces_are_ignored() {
        let (mut s, _) = started(&[0]);
        let out = s.on_snapshot(snap(&[0, 1]));
        let lds = out.responses[2].clone();
        let stale = DiscoveryRequest {
            error_detail: Some(Status {
                code: 3,
                message: "old".into(),
                details: vec![],
            }),
            ..req(ResourceType::Listener, &[], "", "1")
        };
        let out = s.on_request(&stale);
        assert!(out.responses.is_empty() && out.events.is_empty());
        let out = s.on_request(&ack(&lds, &[]));
        assert_eq!(out.events.len(), 1);
    }

    #[test]
    fn a_nack_is_reported_and_the_same_config_is_not_resent() {
        let (mut s, _) = started(&[0]);
        let out = s.on_snapshot(snap(&[0, 1]));
        let lds = out.responses[2].clone();
        let out = s.on_request(&nack(&lds, "two listeners on one port"));
        assert!(out.responses.is_empty(), "no resend loop");
        assert_eq!(
            out.events,
            [StreamEvent::Nacked {
                type_: ResourceType::Listener,
                version: lds.version_info.clone(),
                error: "two listeners on one port".into()
            }]
        );
        assert!(s.on_snapshot(snap(&[0, 1])).responses.is_empty());
        let out = s.on_snapshot(snap(&[0, 1, 2]));
        assert!(
            types_of(&out).contains(&ResourceType::Listener),
            "a fix is pushed"
        );
    }

    #[test]
    fn clusters_dropped_with_a_listener_are_removed_after_the_listener_update() {
        let (mut s, _) = started(&[0, 1]);
        let out = s.on_snapshot(snap(&[0]));
        // Clusters: the held set is what Envoy already has, so nothing is sent for them yet.
        assert_eq!(
            types_of(&out),
            [ResourceType::Endpoint, ResourceType::Listener]
        );
        assert!(!names_of(&out.responses[1]).contains(&format!("{B}/broker-1")));
        let lds = out.responses[1].clone();
        let out = s.on_request(&ack(&lds, &[]));
        assert_eq!(types_of(&out), [ResourceType::Cluster]);
        assert!(!names_of(&out.responses[0]).contains(&format!("{B}/broker-1")));
        assert!(!out.responses[0].version_info.ends_with("+held"));
    }

    #[test]
    fn held_clusters_are_sent_when_other_clusters_change_too() {
        let (mut s, _) = started(&[0, 1]);
        let mut access = per_port(&[0, 2]);
        access.brokers[1].id = 2;
        let out = s.on_snapshot(Arc::new(Snapshot::new(translate(&[access]).unwrap())));
        assert_eq!(
            types_of(&out),
            [
                ResourceType::Cluster,
                ResourceType::Endpoint,
                ResourceType::Listener
            ]
        );
        let cds = &out.responses[0];
        assert!(names_of(cds).contains(&format!("{B}/broker-1")), "held");
        assert!(names_of(cds).contains(&format!("{B}/broker-2")), "added");
        assert!(cds.version_info.ends_with("+held"));
        assert!(s.on_request(&ack(cds, &[])).responses.is_empty());
        let out = s.on_request(&ack(&out.responses[2], &[]));
        assert_eq!(types_of(&out), [ResourceType::Cluster]);
        assert!(!names_of(&out.responses[0]).contains(&format!("{B}/broker-1")));
    }

    #[test]
    fn named_subscriptions_get_only_what_they_name_and_growth_is_answered() {
        let mut s = SotwSession::new();
        s.on_snapshot(snap(&[0, 1]));
        let one = format!("{B}/broker-0");
        let out = s.on_request(&req(ResourceType::Endpoint, &[&one], "", ""));
        assert_eq!(names_of(&out.responses[0]), std::slice::from_ref(&one));
        let two = format!("{B}/broker-1");
        let out = s.on_request(&ack(&out.responses[0], &[&one, &two]));
        assert_eq!(names_of(&out.responses[0]), [one.clone(), two]);
        // After naming, an empty list unsubscribes from everything.
        let out = s.on_request(&ack(&out.responses[0], &[]));
        assert_eq!(names_of(&out.responses[0]), Vec::<String>::new());
    }

    #[test]
    fn unknown_types_are_ignored() {
        let mut s = SotwSession::new();
        s.on_snapshot(snap(&[0]));
        let r = DiscoveryRequest {
            type_url: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration".into(),
            ..Default::default()
        };
        let out = s.on_request(&r);
        assert!(out.responses.is_empty() && out.events.is_empty());
    }
}
