//! What a broker's Pod says, read purely: readiness, the roll's [`PodState`], whether a
//! restart is due, a crash loop, and the roll's state to and from the KafkaCluster status.
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::names;
use super::roll::{PodState, RollState};
use crate::api::RollingUpgradeStatus;

/// Container restarts after which a broker that is not running counts as crash-looping.
pub const CRASH_LOOP_RESTARTS: i32 = 3;
/// At most this much of a container's last termination message goes into status.
const CRASH_MESSAGE_MAX: usize = 1024;

/// The Pod's Ready condition is true.
pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What a broker's Pod is doing, for the roll.
pub fn pod_state(pod: Option<&Pod>, now_ms: i64) -> PodState {
    let Some(pod) = pod else {
        return PodState::Missing;
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return PodState::Terminating;
    }
    let status = pod.status.clone().unwrap_or_default();
    if status.phase.as_deref() == Some("Failed") {
        return PodState::Broken {
            reason: status
                .message
                .or(status.reason)
                .unwrap_or_else(|| "Pod failed".into()),
        };
    }
    for cs in status.container_statuses.iter().flatten() {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            if matches!(
                reason.as_str(),
                "CrashLoopBackOff"
                    | "ImagePullBackOff"
                    | "ErrImagePull"
                    | "InvalidImageName"
                    | "CreateContainerConfigError"
                    | "CreateContainerError"
            ) {
                return PodState::Broken { reason };
            }
        }
    }
    if status.conditions.iter().flatten().any(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    }) {
        return PodState::Broken {
            reason: "Unschedulable".into(),
        };
    }
    if pod_ready(pod) {
        return PodState::Ready;
    }
    // Unready since the Ready condition last changed (a Pod that was ready and flapped), or
    // since it was created.
    let since_ms = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.last_transition_time.as_ref())
        .or(pod.metadata.creation_timestamp.as_ref())
        .map(|t| t.0.as_millisecond())
        .unwrap_or(now_ms);
    PodState::Starting { since_ms }
}

/// Why a broker needs a restart, comparing the planned Pod with the running one.
pub fn restart_due(planned: Option<&Pod>, running: Option<&Pod>) -> Option<String> {
    let running = running?;
    if running.metadata.deletion_timestamp.is_some() {
        return None;
    }
    if let Some(token) = running.annotations().get(names::RESTART_ANNOTATION) {
        return Some(format!("restart requested on its Pod ({token})"));
    }
    let planned = planned?;
    let want = planned.annotations().get(names::RESTART_HASH_ANNOTATION);
    let have = running.annotations().get(names::RESTART_HASH_ANNOTATION);
    (want != have).then(|| "its Pod spec or read-only configuration changed".to_string())
}

/// A container of the Pod keeps terminating: how often, and the end of what it last said
/// (the kubelet's termination message, e.g. the log tail with `FallbackToLogsOnError`).
pub fn crash_loop(pod: &Pod) -> Option<String> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    status.container_statuses.iter().flatten().find_map(|cs| {
        let running = cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some();
        if cs.restart_count < CRASH_LOOP_RESTARTS || (running && cs.ready) {
            return None;
        }
        let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        let detail = last
            .map(|t| {
                let what = t.reason.clone().unwrap_or_else(|| "terminated".into());
                let said = t.message.as_deref().map(tail).unwrap_or_default();
                if said.is_empty() {
                    format!("{what} (exit code {})", t.exit_code)
                } else {
                    format!("{what} (exit code {}): {said}", t.exit_code)
                }
            })
            .unwrap_or_else(|| "no termination reason reported".into());
        Some(format!(
            "container {} restarted {} times; last: {detail}",
            cs.name, cs.restart_count
        ))
    })
}

/// The last [`CRASH_MESSAGE_MAX`] bytes of `message`, cut at a character boundary, trimmed.
fn tail(message: &str) -> String {
    let message = message.trim();
    let mut start = message.len().saturating_sub(CRASH_MESSAGE_MAX);
    while !message.is_char_boundary(start) {
        start += 1;
    }
    message[start..].trim().to_string()
}

pub fn parse_ms(rfc3339: &str) -> Option<i64> {
    rfc3339
        .parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

pub fn format_ms(ms: i64) -> Option<String> {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.to_string())
}

/// The roll's state as persisted in status.
pub fn roll_state(s: &RollingUpgradeStatus) -> RollState {
    RollState {
        restarting: s.restarting,
        restart_started_ms: s.restart_started_at.as_deref().and_then(parse_ms),
        failures: u32::try_from(s.failures).unwrap_or(0),
        last_failure_ms: s.last_failure_at.as_deref().and_then(parse_ms),
        paused: s.paused,
    }
}

/// The roll's state for status, with what it is doing now.
pub fn roll_status(s: &RollState, message: Option<String>) -> RollingUpgradeStatus {
    RollingUpgradeStatus {
        restarting: s.restarting,
        restart_started_at: s.restart_started_ms.and_then(format_ms),
        last_failure_at: s.last_failure_ms.and_then(format_ms),
        failures: i32::try_from(s.failures).unwrap_or(i32::MAX),
        paused: s.paused,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use std::collections::BTreeMap;

    fn pod_with(annotations: &[(&str, &str)], status: PodStatus) -> Pod {
        Pod {
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..Default::default()
            },
            status: Some(status),
            ..Default::default()
        }
    }

    fn time(ms: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_millisecond(ms).unwrap())
    }

    #[test]
    fn restart_is_due_on_hash_change_or_pod_annotation() {
        let hashed = |h| pod_with(&[(names::RESTART_HASH_ANNOTATION, h)], PodStatus::default());
        let planned = hashed("a");
        let asked = pod_with(
            &[
                (names::RESTART_HASH_ANNOTATION, "a"),
                (names::RESTART_ANNOTATION, "now"),
            ],
            PodStatus::default(),
        );
        assert_eq!(restart_due(Some(&planned), Some(&hashed("a"))), None);
        assert!(restart_due(Some(&planned), Some(&hashed("b"))).is_some());
        assert!(
            restart_due(Some(&planned), Some(&asked))
                .unwrap()
                .contains("now")
        );
        assert_eq!(
            restart_due(Some(&planned), None),
            None,
            "missing Pods are created, not restarted"
        );
    }

    #[test]
    fn pod_states_from_pod_status() {
        assert_eq!(pod_state(None, 0), PodState::Missing);
        let crash = PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("CrashLoopBackOff".into()),
                        message: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(
            pod_state(Some(&pod_with(&[], crash)), 0),
            PodState::Broken {
                reason: "CrashLoopBackOff".into()
            }
        );
        let failed = PodStatus {
            phase: Some("Failed".into()),
            message: Some("image unknown".into()),
            ..Default::default()
        };
        assert!(
            matches!(pod_state(Some(&pod_with(&[], failed)), 0), PodState::Broken { reason } if reason == "image unknown")
        );
        assert_eq!(
            pod_state(Some(&pod_with(&[], PodStatus::default())), 7),
            PodState::Starting { since_ms: 7 }
        );
    }

    #[test]
    fn an_unready_pod_is_unready_since_its_ready_condition_changed() {
        let flapped = PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "False".into(),
                last_transition_time: Some(time(5_000)),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let mut pod = pod_with(&[], flapped);
        pod.metadata.creation_timestamp = Some(time(1_000));
        assert_eq!(
            pod_state(Some(&pod), 9_000),
            PodState::Starting { since_ms: 5_000 }
        );
    }

    #[test]
    fn a_container_restarting_again_and_again_is_a_crash_loop_with_its_last_words() {
        let status = |restarts, running: bool, ready| PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "kafka".into(),
                restart_count: restarts,
                ready,
                state: Some(ContainerState {
                    running: running.then(ContainerStateRunning::default),
                    ..Default::default()
                }),
                last_state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 1,
                        reason: Some("Error".into()),
                        message: Some(format!(
                            "{}\nERROR node.id is set twice\n",
                            "x".repeat(5000)
                        )),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let looping = crash_loop(&pod_with(&[], status(5, false, false))).unwrap();
        assert!(
            looping.contains("restarted 5 times")
                && looping.contains("Error (exit code 1)")
                && looping.ends_with("node.id is set twice"),
            "{looping}"
        );
        assert!(looping.len() < CRASH_MESSAGE_MAX + 100);
        assert_eq!(crash_loop(&pod_with(&[], status(1, false, false))), None);
        assert_eq!(
            crash_loop(&pod_with(&[], status(5, true, true))),
            None,
            "restarted long ago, serving now"
        );
    }

    #[test]
    fn roll_state_round_trips_through_status() {
        let s = RollState {
            restarting: Some(2),
            restart_started_ms: Some(1_764_000_000_123),
            failures: 3,
            last_failure_ms: Some(1_764_000_000_456),
            paused: true,
        };
        let status = roll_status(&s, Some("x".into()));
        assert_eq!(roll_state(&status), s);
        assert_eq!(
            roll_state(&RollingUpgradeStatus::default()),
            RollState::default()
        );
    }
}
