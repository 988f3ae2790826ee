//! The bookkeeping of one ADS stream that the SotW and delta sessions share. Per resource type:
//! what the client subscribed to, the nonce of the response it may answer, whether it ACKed or
//! NACKed that response, and what it has. Across types: the clusters held for listeners the
//! client may still run, and whether the stream has applied its snapshot.
//!
//! The cluster hold: a cluster the new config drops (with its endpoints) stays with the client
//! while its listeners are not settled — a listener update is still to be sent, unanswered or
//! NACKed. Envoy applies a listener update per listener and keeps the previous version of one
//! it rejects, so after a NACK it may still route through the dropped clusters. The hold ends
//! when the client ACKs a listener response that leaves nothing to send.
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use super::session::{Refused, StreamEvent};
use super::{Resource, ResourceType, Snapshot};

/// Most names one stream may subscribe to (or say it has) per type. Pier's groups have a few
/// resources per broker; this only stops a client from growing a stream's state without bound.
pub const MAX_NAMES: usize = 10_000;
/// Longest resource name a client may subscribe to.
pub const MAX_NAME_LEN: usize = 1024;

/// What the client asked for of one type.
#[derive(Debug, Default)]
pub struct Subscription {
    requested: bool,
    /// Legacy wildcard: the first request of a wildcard type named nothing; it holds until the
    /// client names something (xds_protocol.rst, "How the client specifies what resources to
    /// return").
    legacy: bool,
    wildcard: bool,
    names: BTreeSet<String>,
}

/// How a request changed a subscription.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Change {
    /// The first request of this type on the stream.
    pub first: bool,
    /// Names the client did not subscribe to before.
    pub added: Vec<String>,
    /// Names the client no longer subscribes to.
    pub removed: Vec<String>,
    /// Wildcard was switched on.
    pub wildcard_on: bool,
}

impl Change {
    /// The client now wants something it did not want before.
    pub fn grew(&self) -> bool {
        self.first || self.wildcard_on || !self.added.is_empty()
    }
}

fn check_names<'a>(names: impl IntoIterator<Item = &'a String>) -> Result<(), Refused> {
    match names.into_iter().find(|n| n.len() > MAX_NAME_LEN) {
        Some(n) => Err(Refused(format!(
            "resource name of {} bytes (at most {MAX_NAME_LEN})",
            n.len()
        ))),
        None => Ok(()),
    }
}

impl Subscription {
    pub fn requested(&self) -> bool {
        self.requested
    }

    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    pub fn names(&self) -> &BTreeSet<String> {
        &self.names
    }

    /// Whether the client wants the resource `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// SotW: the request's list is the whole subscription.
    pub fn set(&mut self, t: ResourceType, list: &[String]) -> Result<Change, Refused> {
        // The usual request repeats the subscription (an ACK of endpoints names every cluster
        // again): in name order, it changes nothing, without building a set.
        if self.requested && !list.is_empty() && list.iter().eq(self.names.iter()) {
            self.legacy = false;
            self.wildcard = false;
            return Ok(Change::default());
        }
        check_names(list)?;
        let mut names: BTreeSet<String> = list.iter().cloned().collect();
        let star = names.remove("*");
        if names.len() > MAX_NAMES {
            return Err(too_many(t, names.len()));
        }
        let first = !self.requested;
        self.requested = true;
        if first {
            self.legacy = list.is_empty() && t.wildcard_by_default();
        } else if !list.is_empty() {
            self.legacy = false;
        }
        let wildcard = self.legacy || star;
        let change = Change {
            first,
            added: names.difference(&self.names).cloned().collect(),
            removed: self.names.difference(&names).cloned().collect(),
            wildcard_on: wildcard && !self.wildcard,
        };
        self.wildcard = wildcard;
        self.names = names;
        Ok(change)
    }

    /// Delta: names are added and removed; `*` switches wildcard on and off.
    pub fn update(
        &mut self,
        t: ResourceType,
        subscribe: &[String],
        unsubscribe: &[String],
    ) -> Result<Change, Refused> {
        check_names(subscribe.iter().chain(unsubscribe))?;
        let first = !self.requested;
        self.requested = true;
        let mut change = Change {
            first,
            ..Change::default()
        };
        if first && subscribe.is_empty() && t.wildcard_by_default() {
            change.wildcard_on = !self.wildcard;
            self.wildcard = true;
        }
        for name in subscribe {
            if name == "*" {
                change.wildcard_on |= !self.wildcard;
                self.wildcard = true;
            } else if self.names.insert(name.clone()) {
                change.added.push(name.clone());
            }
        }
        for name in unsubscribe {
            if name == "*" {
                self.wildcard = false;
            } else if self.names.remove(name) {
                change.removed.push(name.clone());
            }
        }
        if self.names.len() > MAX_NAMES {
            return Err(too_many(t, self.names.len()));
        }
        Ok(change)
    }
}

fn too_many(t: ResourceType, n: usize) -> Refused {
    Refused(format!(
        "{n} {} names in one subscription (at most {MAX_NAMES})",
        t.short()
    ))
}

/// Where the latest response of a type stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Answer {
    /// Nothing sent yet.
    #[default]
    Unsent,
    /// Sent, not answered yet.
    Pending,
    Acked,
    Nacked,
}

/// What a request says about the responses sent before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// No nonce: the client starts (or restarts) its subscription.
    Initial,
    /// The nonce of a response other than the latest: ignored as an answer.
    Stale,
    /// The latest response was answered before; this request only changes the subscription.
    Update,
    Ack,
    Nack,
}

/// One resource type of one stream.
#[derive(Debug, Default)]
pub struct TypeState {
    pub sub: Subscription,
    /// What the client has: name → resource (for a delta client that reconnects, a resource
    /// whose body is unknown; only its version counts then).
    pub has: BTreeMap<String, Arc<Resource>>,
    last_nonce: String,
    answer: Answer,
    sent_version: String,
    sent_snapshot: Option<String>,
    sent_created: Option<Instant>,
}

impl TypeState {
    pub fn answer(&self) -> Answer {
        self.answer
    }
}

/// The bookkeeping of one stream, for every type.
#[derive(Debug, Default)]
pub struct StreamState {
    snapshot: Option<Arc<Snapshot>>,
    types: [TypeState; 3],
    nonce: u64,
    /// Clusters (and their endpoints) dropped by the config but kept for listeners the client
    /// may still run.
    held: BTreeSet<String>,
    /// The snapshot this stream last told as applied.
    applied: Option<String>,
    /// The client resumed with resources it already had (delta `initial_resource_versions`):
    /// it may run listeners the stream has not heard of yet.
    resumed: bool,
    /// [`StreamState::differs`] per type, as last computed; cleared by every change of the
    /// snapshot, a type's state or the held clusters. A request or snapshot asks it several
    /// times per type (push, pending, settled listeners, applied).
    differs_memo: Cell<[Option<bool>; 3]>,
}

impl StreamState {
    pub fn snapshot(&self) -> Option<&Arc<Snapshot>> {
        self.snapshot.as_ref()
    }

    pub fn set_snapshot(&mut self, snapshot: Arc<Snapshot>) {
        self.snapshot = Some(snapshot);
        self.forget_differs();
    }

    fn forget_differs(&mut self) {
        *self.differs_memo.get_mut() = [None; 3];
    }

    pub fn get(&self, t: ResourceType) -> &TypeState {
        &self.types[t as usize]
    }

    pub fn get_mut(&mut self, t: ResourceType) -> &mut TypeState {
        self.forget_differs();
        &mut self.types[t as usize]
    }

    pub fn held(&self) -> &BTreeSet<String> {
        &self.held
    }

    /// The client said it already has resources (a delta client reconnecting).
    pub fn set_resumed(&mut self) {
        self.resumed = true;
    }

    /// Classifies a request's nonce and records its ACK or NACK (`error`: the NACK's message).
    /// The answer to a response counts once: later requests with the same nonce (Envoy sends
    /// them when its subscription changes) are updates, not ACKs.
    pub fn reply(
        &mut self,
        t: ResourceType,
        nonce: &str,
        error: Option<&str>,
        events: &mut Vec<StreamEvent>,
    ) -> Reply {
        let st = &mut self.types[t as usize];
        if nonce.is_empty() {
            return Reply::Initial;
        }
        if nonce != st.last_nonce {
            tracing::trace!(type_ = t.short(), nonce, "stale nonce");
            return Reply::Stale;
        }
        if st.answer != Answer::Pending {
            return Reply::Update;
        }
        match error {
            Some(error) => {
                st.answer = Answer::Nacked;
                events.push(StreamEvent::Nacked {
                    type_: t,
                    version: st.sent_version.clone(),
                    error: error.to_string(),
                    snapshot: st.sent_snapshot.clone(),
                });
                Reply::Nack
            }
            None => {
                st.answer = Answer::Acked;
                events.push(StreamEvent::Acked {
                    type_: t,
                    version: st.sent_version.clone(),
                    snapshot_created: st.sent_created,
                });
                Reply::Ack
            }
        }
    }

    /// A fresh nonce for the next response.
    pub fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        self.nonce.to_string()
    }

    /// Records a response of type `t` after which the client has `has`.
    pub fn sent(
        &mut self,
        t: ResourceType,
        nonce: String,
        version: String,
        has: BTreeMap<String, Arc<Resource>>,
        events: &mut Vec<StreamEvent>,
    ) {
        self.forget_differs();
        let snapshot = self.snapshot.as_ref();
        let st = &mut self.types[t as usize];
        st.last_nonce = nonce;
        st.answer = Answer::Pending;
        st.sent_version = version.clone();
        st.sent_snapshot = snapshot.map(|s| s.version());
        st.sent_created = snapshot.map(|s| s.created);
        st.has = has;
        events.push(StreamEvent::Sent { type_: t, version });
    }

    /// Whether `name` of type `t` is held back (clusters and their endpoints only).
    pub fn is_held(&self, t: ResourceType, name: &str) -> bool {
        t != ResourceType::Listener && self.held.contains(name)
    }

    /// What the client should have of type `t`: the snapshot's resources it subscribes to, and
    /// the held ones it has.
    pub fn desired(&self, t: ResourceType) -> BTreeMap<String, Arc<Resource>> {
        if self.snapshot.is_none() {
            return BTreeMap::new();
        }
        let st = &self.types[t as usize];
        let mut desired: BTreeMap<String, Arc<Resource>> = self
            .subscribed(t)
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        for (name, r) in &st.has {
            if self.is_held(t, name) && st.sub.contains(name) && !desired.contains_key(name) {
                desired.insert(name.clone(), r.clone());
            }
        }
        desired
    }

    /// The snapshot's resources of type `t` the client subscribed to, in name order: what it
    /// should have unless clusters are held (see [`StreamState::desired`]).
    fn subscribed(
        &self,
        t: ResourceType,
    ) -> Box<dyn Iterator<Item = (&String, &Arc<Resource>)> + '_> {
        let Some(snapshot) = &self.snapshot else {
            return Box::new(std::iter::empty());
        };
        let all = &snapshot.get(t).resources;
        let sub = &self.types[t as usize].sub;
        if sub.is_wildcard() {
            Box::new(all.iter())
        } else {
            Box::new(sorted_join(sub.names().iter(), all))
        }
    }

    /// Held clusters change what the client should have of type `t` beyond its subscription.
    fn holds_back(&self, t: ResourceType) -> bool {
        t != ResourceType::Listener && !self.held.is_empty()
    }

    /// The client's resources of type `t` differ from [`StreamState::desired`]. Asked several
    /// times per request and snapshot on every stream, so without building the desired map
    /// unless clusters are held.
    pub fn differs(&self, t: ResourceType) -> bool {
        let mut memo = self.differs_memo.get();
        if let Some(differs) = memo[t as usize] {
            return differs;
        }
        let has = &self.types[t as usize].has;
        let differs = if self.holds_back(t) {
            !same(&self.desired(t), has)
        } else {
            !same_entries(self.subscribed(t), has)
        };
        memo[t as usize] = Some(differs);
        self.differs_memo.set(memo);
        differs
    }

    /// Delta: whether some resource the client should have of type `t` is missing from what it
    /// has or differs in version, without building the desired map; `None` while clusters are
    /// held (ask [`StreamState::desired`] then).
    pub fn any_changed(&self, t: ResourceType) -> Option<bool> {
        if self.holds_back(t) {
            return None;
        }
        let has = &self.types[t as usize].has;
        Some(self.subscribed(t).any(|(n, r)| {
            has.get(n)
                .is_none_or(|h| !(Arc::ptr_eq(h, r) || h.version == r.version))
        }))
    }

    /// The client runs only listeners of the current config: it has none (a fresh client that
    /// has not subscribed to listeners yet), or it ACKed the latest listener response and
    /// nothing is left to send (`pending`). A resumed client that has not subscribed to
    /// listeners yet may run any: not settled.
    pub fn listeners_settled(&self, pending: bool) -> bool {
        let l = &self.types[ResourceType::Listener as usize];
        if !l.sub.requested() {
            return !self.resumed;
        }
        (l.answer == Answer::Acked || (l.answer == Answer::Unsent && self.resumed)) && !pending
    }

    /// Before clusters are computed: while listeners are not settled, every cluster the client
    /// has that the config drops is held; once they are, nothing is.
    pub fn update_hold(&mut self, listeners_settled: bool) {
        if listeners_settled {
            if !self.held.is_empty() {
                tracing::debug!(clusters = ?self.held, "listeners settled: held clusters released");
                self.held.clear();
                self.forget_differs();
            }
            return;
        }
        let Some(snapshot) = &self.snapshot else {
            return;
        };
        let clusters = &snapshot.get(ResourceType::Cluster).resources;
        let before = self.held.len();
        self.held.retain(|n| !clusters.contains_key(n));
        let has = self.types[ResourceType::Cluster as usize].has.keys();
        let mut changed = self.held.len() != before;
        for name in sorted_missing(has, clusters) {
            if self.held.insert(name.clone()) {
                changed = true;
                tracing::debug!(cluster = %name, "cluster held until the listeners are settled");
            }
        }
        if changed {
            self.forget_differs();
        }
    }

    /// Tells `Applied` once per snapshot when the stream is in sync with it: it subscribes to
    /// clusters and listeners, every type it subscribes to has nothing `pending` and its latest
    /// response ACKed (or needed none), and nothing is held. A config without EDS clusters is
    /// in sync without endpoints.
    pub fn check_applied(&mut self, pending: [bool; 3], events: &mut Vec<StreamEvent>) {
        let Some(snapshot) = &self.snapshot else {
            return;
        };
        if self.applied.as_deref() == Some(snapshot.version_str()) {
            return;
        }
        let needed = [ResourceType::Cluster, ResourceType::Listener];
        let in_sync = self.held.is_empty()
            && needed
                .iter()
                .all(|t| self.types[*t as usize].sub.requested())
            && ResourceType::ALL.iter().all(|t| {
                let st = &self.types[*t as usize];
                !st.sub.requested()
                    || (!pending[*t as usize]
                        && matches!(st.answer, Answer::Acked | Answer::Unsent))
            });
        if in_sync {
            let version = snapshot.version();
            self.applied = Some(version.clone());
            events.push(StreamEvent::Applied { snapshot: version });
        }
    }
}

/// Each of `names` (in order, no duplicates) with its entry in `map`, if any: one walk of both,
/// instead of a lookup per name.
fn sorted_lookup<'a, V>(
    names: impl Iterator<Item = &'a String> + 'a,
    map: &'a BTreeMap<String, V>,
) -> impl Iterator<Item = (&'a String, Option<&'a V>)> + 'a {
    let mut entries = map.iter().peekable();
    names.map(move |name| {
        while let Some((key, _)) = entries.peek() {
            match key.as_str().cmp(name.as_str()) {
                std::cmp::Ordering::Less => {
                    entries.next();
                }
                std::cmp::Ordering::Equal => return (name, entries.next().map(|(_, v)| v)),
                std::cmp::Ordering::Greater => break,
            }
        }
        (name, None)
    })
}

/// The entries of `map` that `names` (in order, no duplicates) lists, in name order.
fn sorted_join<'a, V>(
    names: impl Iterator<Item = &'a String> + 'a,
    map: &'a BTreeMap<String, V>,
) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
    sorted_lookup(names, map).filter_map(|(name, v)| Some((name, v?)))
}

/// The names of `names` (in order, no duplicates) that `map` lacks.
fn sorted_missing<'a, V>(
    names: impl Iterator<Item = &'a String> + 'a,
    map: &'a BTreeMap<String, V>,
) -> impl Iterator<Item = &'a String> + 'a {
    sorted_lookup(names, map).filter_map(|(name, v)| v.is_none().then_some(name))
}

/// Same names with the same versions.
pub fn same(a: &BTreeMap<String, Arc<Resource>>, b: &BTreeMap<String, Arc<Resource>>) -> bool {
    a.len() == b.len() && same_entries(a.iter(), b)
}

/// [`same`] for entries in name order, however they are stored.
fn same_entries<'a>(
    mut a: impl Iterator<Item = (&'a String, &'a Arc<Resource>)>,
    b: &BTreeMap<String, Arc<Resource>>,
) -> bool {
    let mut b = b.iter();
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some((na, ra)), Some((nb, rb))) => {
                // The same resource of the same snapshot: its name is the key of both.
                if Arc::ptr_eq(ra, rb) {
                    continue;
                }
                if na != nb || ra.version != rb.version {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::per_port;
    use crate::translate;

    fn snap(ids: &[i32]) -> Arc<Snapshot> {
        Arc::new(Snapshot::new(translate(&[per_port(ids)]).unwrap()))
    }

    fn s(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn sotw_legacy_wildcard_holds_until_a_name_is_given() {
        let mut sub = Subscription::default();
        let c = sub.set(ResourceType::Cluster, &[]).unwrap();
        assert!(c.first && c.grew() && sub.is_wildcard());
        let c = sub.set(ResourceType::Cluster, &[]).unwrap();
        assert!(!c.grew() && sub.is_wildcard());
        let c = sub.set(ResourceType::Cluster, &s(&["a"])).unwrap();
        assert!(!sub.is_wildcard() && c.added == ["a"]);
        // After naming, an empty list means "nothing".
        let c = sub.set(ResourceType::Cluster, &[]).unwrap();
        assert!(!sub.is_wildcard() && c.removed == ["a"] && !c.grew());
        let c = sub.set(ResourceType::Cluster, &s(&["*"])).unwrap();
        assert!(sub.is_wildcard() && c.wildcard_on);
    }

    #[test]
    fn endpoints_are_never_legacy_wildcard() {
        let mut sub = Subscription::default();
        sub.set(ResourceType::Endpoint, &[]).unwrap();
        assert!(!sub.is_wildcard() && sub.requested());
        let mut sub = Subscription::default();
        sub.update(ResourceType::Endpoint, &[], &[]).unwrap();
        assert!(!sub.is_wildcard());
    }

    #[test]
    fn delta_subscribe_and_unsubscribe() {
        let mut sub = Subscription::default();
        let c = sub.update(ResourceType::Listener, &[], &[]).unwrap();
        assert!(c.first && c.wildcard_on && sub.is_wildcard());
        let c = sub
            .update(ResourceType::Listener, &s(&["a", "b"]), &[])
            .unwrap();
        assert_eq!(c.added, ["a", "b"]);
        assert!(
            sub.is_wildcard(),
            "naming does not end an explicit wildcard"
        );
        let c = sub
            .update(ResourceType::Listener, &[], &s(&["a", "*", "zz"]))
            .unwrap();
        assert_eq!(c.removed, ["a"]);
        assert!(!sub.is_wildcard() && sub.contains("b") && !sub.contains("a"));
    }

    #[test]
    fn subscriptions_are_bounded() {
        let mut sub = Subscription::default();
        let many: Vec<String> = (0..=MAX_NAMES).map(|i| format!("n{i}")).collect();
        assert!(sub.set(ResourceType::Endpoint, &many).is_err());
        let mut sub = Subscription::default();
        let half = many.len() / 2;
        sub.update(ResourceType::Endpoint, &many[..half], &[])
            .unwrap();
        assert!(
            sub.update(ResourceType::Endpoint, &many[half..], &[])
                .is_err()
        );
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(
            Subscription::default()
                .set(ResourceType::Endpoint, &[long])
                .is_err()
        );
    }

    #[test]
    fn a_nonce_is_answered_once_and_stale_ones_are_ignored() {
        let mut st = StreamState::default();
        st.set_snapshot(snap(&[0]));
        let mut ev = Vec::new();
        assert_eq!(
            st.reply(ResourceType::Cluster, "", None, &mut ev),
            Reply::Initial
        );
        let n1 = st.next_nonce();
        st.sent(
            ResourceType::Cluster,
            n1.clone(),
            "v1".into(),
            BTreeMap::new(),
            &mut ev,
        );
        let n2 = st.next_nonce();
        st.sent(
            ResourceType::Cluster,
            n2.clone(),
            "v2".into(),
            BTreeMap::new(),
            &mut ev,
        );
        ev.clear();
        assert_eq!(
            st.reply(ResourceType::Cluster, &n1, Some("old"), &mut ev),
            Reply::Stale
        );
        assert!(ev.is_empty());
        assert_eq!(
            st.reply(ResourceType::Cluster, &n2, Some("bad"), &mut ev),
            Reply::Nack
        );
        assert!(matches!(
            &ev[..],
            [StreamEvent::Nacked { version, error, snapshot: Some(_), .. }]
                if version == "v2" && error == "bad"
        ));
        assert_eq!(st.get(ResourceType::Cluster).answer(), Answer::Nacked);
        // The same nonce again (a subscription change) is neither an ACK nor a NACK.
        assert_eq!(
            st.reply(ResourceType::Cluster, &n2, None, &mut ev),
            Reply::Update
        );
        assert_eq!(ev.len(), 1);
    }

    /// A state where the client has what `snapshot` gives, every type ACKed.
    fn synced(snapshot: Arc<Snapshot>) -> StreamState {
        let mut st = StreamState::default();
        st.set_snapshot(snapshot);
        let mut ev = Vec::new();
        for t in ResourceType::ALL {
            st.get_mut(t).sub.set(t, &[]).unwrap();
            if t == ResourceType::Endpoint {
                st.get_mut(t).sub.set(t, &s(&["*"])).unwrap();
            }
            let nonce = st.next_nonce();
            let has = st.desired(t);
            st.sent(t, nonce.clone(), "v".into(), has, &mut ev);
            st.reply(t, &nonce, None, &mut ev);
        }
        st
    }

    #[test]
    fn dropped_clusters_are_held_until_listeners_settle() {
        let mut st = synced(snap(&[0, 1]));
        let gone = "pier/kafka/demo/external/broker-1";
        st.set_snapshot(snap(&[0]));
        assert!(st.differs(ResourceType::Listener));
        st.update_hold(st.listeners_settled(true));
        assert_eq!(st.held().iter().collect::<Vec<_>>(), [gone]);
        assert!(st.desired(ResourceType::Cluster).contains_key(gone));
        assert!(st.desired(ResourceType::Endpoint).contains_key(gone));
        assert!(
            !st.desired(ResourceType::Listener).contains_key(gone),
            "listeners are never held"
        );

        // The listener update is sent and NACKed: still held.
        let mut ev = Vec::new();
        let nonce = st.next_nonce();
        let has = st.desired(ResourceType::Listener);
        st.sent(
            ResourceType::Listener,
            nonce.clone(),
            "l".into(),
            has,
            &mut ev,
        );
        st.reply(ResourceType::Listener, &nonce, Some("no"), &mut ev);
        assert!(!st.listeners_settled(st.differs(ResourceType::Listener)));
        st.update_hold(false);
        assert!(st.desired(ResourceType::Cluster).contains_key(gone));

        // A fixed listener update is ACKed: released.
        let nonce = st.next_nonce();
        let has = st.desired(ResourceType::Listener);
        st.sent(
            ResourceType::Listener,
            nonce.clone(),
            "l2".into(),
            has,
            &mut ev,
        );
        st.reply(ResourceType::Listener, &nonce, None, &mut ev);
        let settled = st.listeners_settled(st.differs(ResourceType::Listener));
        assert!(settled);
        st.update_hold(settled);
        assert!(st.held().is_empty());
        assert!(!st.desired(ResourceType::Cluster).contains_key(gone));
    }

    #[test]
    fn a_held_cluster_that_comes_back_is_no_longer_held() {
        let mut st = synced(snap(&[0, 1]));
        st.set_snapshot(snap(&[0]));
        st.update_hold(false);
        assert_eq!(st.held().len(), 1);
        st.set_snapshot(snap(&[0, 1]));
        st.update_hold(false);
        assert!(st.held().is_empty());
    }

    #[test]
    fn applied_is_told_once_and_only_when_in_sync() {
        let a = snap(&[0]);
        let mut st = synced(a.clone());
        let mut ev = Vec::new();
        st.check_applied([false, true, false], &mut ev);
        assert!(ev.is_empty(), "endpoints pending");
        st.check_applied([false; 3], &mut ev);
        assert_eq!(
            ev,
            [StreamEvent::Applied {
                snapshot: a.version()
            }]
        );
        st.check_applied([false; 3], &mut ev);
        assert_eq!(ev.len(), 1, "once per snapshot");
    }

    #[test]
    fn a_config_without_endpoints_is_applied_without_eds() {
        let mut st = StreamState::default();
        let mut a = per_port(&[0]);
        a.brokers[0].host = "kafka-0.example".into();
        let dns = Arc::new(Snapshot::new(translate(&[a]).unwrap()));
        st.set_snapshot(dns.clone());
        let mut ev = Vec::new();
        for t in [ResourceType::Cluster, ResourceType::Listener] {
            st.get_mut(t).sub.set(t, &[]).unwrap();
            let nonce = st.next_nonce();
            let has = st.desired(t);
            st.sent(t, nonce.clone(), "v".into(), has, &mut ev);
            st.check_applied([false; 3], &mut ev);
            assert!(!ev.iter().any(|e| matches!(e, StreamEvent::Applied { .. })));
            st.reply(t, &nonce, None, &mut ev);
        }
        st.check_applied([false; 3], &mut ev);
        assert!(ev.contains(&StreamEvent::Applied {
            snapshot: dns.version()
        }));
    }

    #[test]
    fn a_repeated_subscription_changes_nothing_in_any_order() {
        let mut sub = Subscription::default();
        sub.set(ResourceType::Endpoint, &s(&["a", "b"])).unwrap();
        // In name order (the fast path) and not.
        for list in [s(&["a", "b"]), s(&["b", "a"]), s(&["a", "b", "a"])] {
            let c = sub.set(ResourceType::Endpoint, &list).unwrap();
            assert_eq!(c, Change::default(), "{list:?}");
            assert!(!sub.is_wildcard());
        }
        // "*" with the same names switches wildcard on, and naming them alone off again.
        let c = sub
            .set(ResourceType::Endpoint, &s(&["*", "a", "b"]))
            .unwrap();
        assert!(c.wildcard_on && sub.is_wildcard());
        let c = sub.set(ResourceType::Endpoint, &s(&["a", "b"])).unwrap();
        assert!(!c.grew() && !sub.is_wildcard());
        // A longer name list still grows.
        let c = sub
            .set(ResourceType::Endpoint, &s(&["a", "b", "c"]))
            .unwrap();
        assert_eq!(c.added, ["c"]);
    }

    #[test]
    fn sorted_walks_match_lookups() {
        let map: BTreeMap<String, u8> = s(&["b", "d", "f"]).into_iter().map(|n| (n, 0)).collect();
        for names in [
            s(&[]),
            s(&["a"]),
            s(&["b"]),
            s(&["a", "b", "c", "d", "e", "f", "g"]),
            s(&["d", "g"]),
            s(&["b", "d", "f"]),
        ] {
            let joined: Vec<&String> = sorted_join(names.iter(), &map).map(|(n, _)| n).collect();
            let looked_up: Vec<&String> = names.iter().filter(|n| map.contains_key(*n)).collect();
            assert_eq!(joined, looked_up, "{names:?}");
            let missing: Vec<&String> = sorted_missing(names.iter(), &map).collect();
            let not_found: Vec<&String> = names.iter().filter(|n| !map.contains_key(*n)).collect();
            assert_eq!(missing, not_found, "{names:?}");
        }
    }
}
