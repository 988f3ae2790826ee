//! Leader election with a coordination.k8s.io Lease, done as client-go's `leaderelection` does
//! it, so several operator replicas can run and exactly one acts:
//!
//! - every replica has a unique identity (its Pod name, else hostname + random suffix);
//! - a follower judges expiry by its own monotonic clock, from the moment it *observed* the
//!   Lease change, never by comparing its wall clock with the holder's `renewTime`;
//! - every write carries the `resourceVersion` it read, so of two racing replicas one wins;
//! - the leader must renew within `renew_deadline` (< `lease_duration`) of its last successful
//!   renewal, or [`Elector::lead`] drops the work it guards: the leader stops acting at least
//!   `lease_duration - renew_deadline` before any follower can take over;
//! - [`Elector::release`] hands the Lease over on shutdown (no holder, 1 s duration), so a
//!   follower, which also watches the Lease, takes over at once.
use std::future::Future;
use std::pin::pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::time::Instant;

/// Who competes for what, and the timing (client-go's defaults: 15 s, 10 s, 2 s).
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity; unique among replicas (see [`default_identity`]).
    pub identity: String,
    /// How long a follower waits, after it last saw the Lease change, before taking it.
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews and a follower retries.
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: "pier-operator".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// The timing guarantees one leader only if the leader gives up (renew deadline) before a
    /// follower may take over (lease duration), and retries at least once before giving up.
    pub fn validate(&self) -> Result<(), LeaderError> {
        let bad = |why: &str| Err(LeaderError::Config(why.to_string()));
        if self.identity.is_empty() {
            return bad("the identity is empty");
        }
        if self.retry_period.is_zero() {
            return bad("the retry period must be positive");
        }
        if self.lease_duration <= self.renew_deadline {
            return bad("the lease duration must be longer than the renew deadline");
        }
        if self.renew_deadline <= self.retry_period.mul_f64(1.2) {
            return bad("the renew deadline must be longer than 1.2 × the retry period");
        }
        if self.lease_duration.as_secs() < 1 || self.lease_duration.subsec_nanos() != 0 {
            return bad("the lease duration must be whole seconds (the Lease stores seconds)");
        }
        Ok(())
    }
}

/// `$POD_NAME` if set, else hostname + random suffix: unique even where every replica has the
/// same PID (1, in containers) or the same hostname.
pub fn default_identity() -> String {
    let pod = std::env::var("POD_NAME").ok();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok());
    identity_from(pod, host, &random_suffix())
}

fn identity_from(pod_name: Option<String>, hostname: Option<String>, suffix: &str) -> String {
    if let Some(pod) = pod_name.filter(|p| !p.trim().is_empty()) {
        return pod.trim().to_string();
    }
    let host = hostname
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pier".into());
    format!("{host}_{suffix}")
}

/// 16 hex digits from the kernel's random source; time and PID if that cannot be read.
fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    if crate::random::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = (nanos as u64 ^ u64::from(std::process::id()).rotate_left(32)).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why this replica is not (or no longer) leading.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("invalid leader election settings: {0}")]
    Config(String),
    #[error("Lease {lease}: {holder} took it over")]
    Taken { lease: String, holder: String },
    #[error("Lease {lease}: not renewed within the renew deadline ({deadline:?}); stopped acting")]
    DeadlinePassed { lease: String, deadline: Duration },
    #[error("Lease {lease}: {source}")]
    Kube {
        lease: String,
        #[source]
        source: kube::Error,
    },
    #[error("Lease {lease}: no answer within {timeout:?}")]
    Timeout { lease: String, timeout: Duration },
}

/// The last version of the Lease this replica saw, and when (by its own clock) it first saw it.
#[derive(Debug)]
struct Observed {
    lease: Lease,
    at: Instant,
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observed>,
    /// When the request of the last successful acquire or renewal was sent.
    renewed_at: Option<Instant>,
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig) -> Result<Self, LeaderError> {
        config.validate()?;
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            renewed_at: None,
        })
    }

    /// Campaigns until this replica holds the Lease: every retry period, and at once whenever
    /// the Lease changes (a released Lease is taken within a round trip).
    pub async fn acquire(&mut self) {
        let watch = watcher(
            self.api.clone(),
            watcher::Config::default().fields(&format!("metadata.name={}", self.config.name)),
        )
        .default_backoff();
        let mut changes = Some(watch.boxed());
        loop {
            let sent = Instant::now();
            let attempt =
                tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew());
            match attempt.await {
                Ok(Ok(true)) => {
                    self.renewed_at = Some(sent);
                    tracing::info!(identity = %self.config.identity, lease = %self.config.name, "became leader");
                    return;
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, lease = %self.config.name, "leader election: cannot read or write the Lease")
                }
                Err(_) => {
                    tracing::warn!(lease = %self.config.name, "leader election: the apiserver did not answer in time")
                }
            }
            let retry = tokio::time::sleep(self.config.retry_period);
            match changes.as_mut() {
                Some(stream) => tokio::select! {
                    _ = retry => {}
                    event = stream.next() => {
                        if event.is_none() {
                            changes = None;
                        }
                    }
                },
                None => retry.await,
            }
        }
    }

    /// Runs `work` while this replica leads (call [`Elector::acquire`] first), renewing the
    /// Lease every retry period. Returns `work`'s output if it ends first; otherwise drops it as
    /// soon as another replica took the Lease or no renewal succeeded within the renew deadline.
    /// The deadline is checked before `work` is polled each time, so `work` never runs past it,
    /// not even when the whole process was frozen (SIGSTOP, a paused VM) and wakes up late.
    pub async fn lead<F: Future>(&mut self, work: F) -> Result<F::Output, LeaderError> {
        let renew_deadline = self.config.renew_deadline;
        let retry_period = self.config.retry_period;
        let lease = self.config.name.clone();
        let passed = || LeaderError::DeadlinePassed {
            lease: lease.clone(),
            deadline: renew_deadline,
        };
        let start = self.renewed_at.unwrap_or_else(Instant::now);
        let deadline = Mutex::new(start + renew_deadline);
        let current = || *deadline.lock().unwrap_or_else(|e| e.into_inner());
        let renew = async {
            loop {
                tokio::time::sleep(retry_period).await;
                let sent = Instant::now();
                match tokio::time::timeout_at(current(), self.try_acquire_or_renew()).await {
                    Ok(Ok(true)) => {
                        self.renewed_at = Some(sent);
                        *deadline.lock().unwrap_or_else(|e| e.into_inner()) = sent + renew_deadline;
                    }
                    Ok(Ok(false)) => {
                        if let Some(holder) = self.holder().filter(|h| *h != self.config.identity) {
                            return LeaderError::Taken {
                                lease: self.config.name.clone(),
                                holder: holder.to_string(),
                            };
                        }
                        tracing::warn!(lease = %self.config.name, "leader Lease renewal conflicted; retrying");
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, lease = %self.config.name, "cannot renew the leader Lease; retrying until the renew deadline")
                    }
                    Err(_) => return passed(),
                }
            }
        };
        let mut renew = pin!(renew);
        let mut work = pin!(work);
        let mut alarm = pin!(tokio::time::sleep_until(current()));
        std::future::poll_fn(|cx| {
            if Instant::now() >= current() {
                return Poll::Ready(Err(passed()));
            }
            if let Poll::Ready(lost) = renew.as_mut().poll(cx) {
                return Poll::Ready(Err(lost));
            }
            // Wake at the deadline even if nothing else happens.
            let until = current();
            if alarm.deadline() != until {
                alarm.as_mut().reset(until);
            }
            if alarm.as_mut().poll(cx).is_ready() || Instant::now() >= until {
                return Poll::Ready(Err(passed()));
            }
            work.as_mut().poll(cx).map(Ok)
        })
        .await
    }

    /// Gives the Lease up if this replica still holds it as last seen: no holder, a 1 s
    /// duration (as client-go's ReleaseOnCancel), conditional on the Lease being unchanged.
    pub async fn release(&mut self) -> Result<(), LeaderError> {
        let Some(observed) = &self.observed else {
            return Ok(());
        };
        if self.holder() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        let mut lease = observed.lease.clone();
        // Twice at most: a renewal cut short by the shutdown may have landed without being
        // observed, so a conflict is checked against a fresh read before giving up.
        for attempt in 0..2 {
            let now = MicroTime(Timestamp::now());
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            let kube_error = |source| LeaderError::Kube {
                lease: self.config.name.clone(),
                source,
            };
            match self
                .api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(released) => {
                    tracing::info!(identity = %self.config.identity, lease = %self.config.name, "released the leader Lease");
                    self.observe(released);
                    return Ok(());
                }
                Err(kube::Error::Api(e)) if e.code == 409 && attempt == 0 => {
                    let fresh = self.api.get(&self.config.name).await.map_err(kube_error)?;
                    let ours = fresh
                        .spec
                        .as_ref()
                        .and_then(|s| s.holder_identity.as_deref())
                        == Some(self.config.identity.as_str());
                    if !ours {
                        // Someone else holds it now: not ours to release any more.
                        return Ok(());
                    }
                    lease = fresh;
                }
                Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
                Err(source) => return Err(kube_error(source)),
            }
        }
        Ok(())
    }

    /// The holder of the Lease as last seen.
    fn holder(&self) -> Option<&str> {
        self.observed
            .as_ref()
            .and_then(|o| o.lease.spec.as_ref())
            .and_then(|s| s.holder_identity.as_deref())
            .filter(|h| !h.is_empty())
    }

    /// Records `lease`; the observation time moves only when the Lease changed.
    fn observe(&mut self, lease: Lease) {
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|o| o.lease.metadata.resource_version != lease.metadata.resource_version);
        if changed {
            self.observed = Some(Observed {
                lease,
                at: Instant::now(),
            });
        }
    }

    /// client-go's tryAcquireOrRenew: takes or renews the Lease if it is free, ours, or has not
    /// changed for its duration since we saw it change.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(current) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(created);
                    Ok(true)
                }
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        self.observe(current);
        let Some(observed) = &self.observed else {
            return Ok(false);
        };
        let spec = observed.lease.spec.clone().unwrap_or_default();
        if !may_take(&spec, &self.config.identity, observed.at.elapsed()) {
            return Ok(false);
        }
        let ours = spec.holder_identity.as_deref() == Some(self.config.identity.as_str());
        let mut next = observed.lease.clone();
        let next_spec = next.spec.get_or_insert_with(Default::default);
        if !ours {
            next_spec.holder_identity = Some(self.config.identity.clone());
            next_spec.acquire_time = Some(now.clone());
            next_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        next_spec.renew_time = Some(now);
        next_spec.lease_duration_seconds = Some(duration);
        // `next` carries the resourceVersion read above: a concurrent change makes this a 409.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &next)
            .await
        {
            Ok(written) => {
                self.observe(written);
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Whether `identity` may write itself in as the holder of a Lease that has looked like `spec`
/// for `unchanged_for` (by this replica's clock): it has no holder, is ours, or its holder let
/// it go unchanged for its whole duration. `renewTime` is deliberately not read: it is the
/// holder's wall clock.
fn may_take(spec: &LeaseSpec, identity: &str, unchanged_for: Duration) -> bool {
    match spec.holder_identity.as_deref().filter(|h| !h.is_empty()) {
        None => true,
        Some(holder) if holder == identity => true,
        Some(_) => {
            let duration = spec.lease_duration_seconds.unwrap_or(0).max(0);
            unchanged_for >= Duration::from_secs(duration as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_the_pod_name_else_hostname_and_suffix() {
        assert_eq!(
            identity_from(Some("pier-0".into()), Some("node".into()), "ab"),
            "pier-0"
        );
        assert_eq!(identity_from(None, Some("vm\n".into()), "ab"), "vm_ab");
        assert_eq!(identity_from(Some(" ".into()), None, "ab"), "pier_ab");
    }

    #[test]
    fn expiry_is_judged_by_the_time_the_lease_was_seen_unchanged() {
        let held = |holder: &str| LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            // The holder's clock is far behind ours: irrelevant.
            renew_time: Some(MicroTime("2000-01-01T00:00:00Z".parse().unwrap())),
            ..Default::default()
        };
        let other = held("other");
        assert!(!may_take(&other, "me", Duration::from_secs(1)));
        assert!(!may_take(&other, "me", Duration::from_millis(14_999)));
        assert!(may_take(&other, "me", Duration::from_secs(15)));
        assert!(may_take(&held("me"), "me", Duration::ZERO));
        assert!(may_take(&held(""), "me", Duration::ZERO));
        assert!(may_take(&LeaseSpec::default(), "me", Duration::ZERO));
    }

    #[test]
    fn suffixes_are_random() {
        let (a, b) = (random_suffix(), random_suffix());
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }

    #[test]
    fn timing_must_let_the_leader_stop_before_a_follower_starts() {
        let ok = LeaseConfig::new("ns", "me");
        assert!(ok.validate().is_ok());
        let mut c = ok.clone();
        c.renew_deadline = c.lease_duration;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.retry_period = Duration::from_secs(9);
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.lease_duration = Duration::from_millis(15_500);
        assert!(c.validate().is_err());
        let mut c = ok;
        c.identity.clear();
        assert!(c.validate().is_err());
    }
}
