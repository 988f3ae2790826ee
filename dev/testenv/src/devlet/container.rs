//! One container's life as a kubelet reports it: the crash-loop back-off between restarts
//! (kubelet's `flowcontrol.Backoff`: the first restart at once, then 10 s doubling to 5 min,
//! reset once a run lasted twice the maximum), how a run ended (`lastState.terminated` with
//! exit code, reason and the `FallbackToLogsOnError` message) and the container's status entry.
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The kubelet's termination message limits for `FallbackToLogsOnError`.
const MESSAGE_LINES: usize = 80;
const MESSAGE_BYTES: usize = 2048;

/// The crash-loop back-off of one container (kubelet's `IsInBackOffSince` / `Next`).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// The current delay; `None` until the first restart.
    delay: Option<Duration>,
    /// When the last restart happened.
    last_restart: Option<Instant>,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            delay: None,
            last_restart: None,
        }
    }

    /// When a container that exited at `finished` may be started again; `finished` itself
    /// means at once. A back-off not renewed for twice its maximum has expired.
    pub fn restart_at(&self, finished: Instant) -> Instant {
        match (self.delay, self.last_restart) {
            (Some(delay), Some(last))
                if finished.saturating_duration_since(last) <= self.max * 2 =>
            {
                finished + delay
            }
            _ => finished,
        }
    }

    /// The delay a container waits now (for the `back-off 20s` message).
    pub fn delay(&self) -> Duration {
        self.delay.unwrap_or(Duration::ZERO)
    }

    /// Records a restart at `now` of a run that ended at `finished`: the delay doubles (up to
    /// the maximum), or starts over when that run lasted more than twice the maximum.
    pub fn restarted(&mut self, finished: Instant, now: Instant) {
        self.delay = Some(match (self.delay, self.last_restart) {
            (Some(delay), Some(last))
                if finished.saturating_duration_since(last) <= self.max * 2 =>
            {
                (delay * 2).min(self.max)
            }
            _ => self.initial,
        });
        self.last_restart = Some(now);
    }
}

/// How one run of a container ended, as `containerStatuses[].lastState.terminated`.
#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled` or `StartError`.
    pub reason: String,
    pub message: String,
    pub started_at: String,
    pub finished_at: String,
}

impl Terminated {
    /// A run that exited with `status`. `oom_killed` says the kernel's OOM killer fired while
    /// it ran; `log_tail` is the run's log, used as the message when the policy falls back to
    /// logs and the run failed.
    pub fn exited(
        status: ExitStatus,
        oom_killed: bool,
        fallback_to_logs: bool,
        log_tail: impl FnOnce() -> String,
        started_at: &str,
    ) -> Self {
        // A signal shows as 128 + its number, as container runtimes report it.
        let exit_code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        let reason = if status.signal() == Some(libc::SIGKILL) && oom_killed {
            "OOMKilled"
        } else if exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let message = if fallback_to_logs && exit_code != 0 {
            log_tail()
        } else {
            String::new()
        };
        Self {
            exit_code,
            signal: status.signal(),
            reason: reason.into(),
            message,
            started_at: started_at.into(),
            finished_at: now_rfc3339(),
        }
    }

    /// A run that could not even start (exit code 128, as runc reports it).
    pub fn start_error(message: String) -> Self {
        let now = now_rfc3339();
        Self {
            exit_code: 128,
            signal: None,
            reason: "StartError".into(),
            message,
            started_at: now.clone(),
            finished_at: now,
        }
    }

    pub fn to_json(&self) -> Value {
        let mut t = json!({
            "exitCode": self.exit_code, "reason": self.reason,
            "startedAt": self.started_at, "finishedAt": self.finished_at,
        });
        if let Some(s) = self.signal {
            t["signal"] = json!(s);
        }
        if !self.message.is_empty() {
            t["message"] = json!(self.message);
        }
        t
    }
}

/// What a container is doing now.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Running {
        started_at: String,
    },
    /// Exited at `finished`; restarts at `until` (CrashLoopBackOff while that is later).
    BackOff {
        until: Instant,
        delay: Duration,
        finished: Instant,
    },
    /// Exited for good (restartPolicy said so).
    Terminated,
}

/// The `containerStatuses[]` entry of a container.
pub fn status_json(
    name: &str,
    image: &str,
    pod: &str,
    state: &State,
    ready: bool,
    restarts: u32,
    last: Option<&Terminated>,
) -> Value {
    let (state, started) = match state {
        State::Running { started_at } => (json!({"running": {"startedAt": started_at}}), true),
        State::BackOff { delay, .. } => (
            json!({"waiting": {
                "reason": "CrashLoopBackOff",
                "message": format!(
                    "back-off {}s restarting failed container={name} pod={pod}",
                    delay.as_secs()
                ),
            }}),
            false,
        ),
        State::Terminated => (
            json!({"terminated": last.map(Terminated::to_json).unwrap_or_else(|| json!({}))}),
            false,
        ),
    };
    let last_state = match (last, &state.get("terminated")) {
        (Some(t), None) => json!({"terminated": t.to_json()}),
        _ => json!({}),
    };
    json!({
        "name": name, "image": image, "imageID": "", "containerID": "",
        "ready": ready && started, "started": started,
        "restartCount": restarts, "state": state, "lastState": last_state,
    })
}

/// The last 80 lines of a log, at most 2 KiB (the end kept), from byte `from` on: the kubelet's
/// `FallbackToLogsOnError` message for this run of the container.
pub fn log_tail(path: &Path, from: u64) -> String {
    let mut text = Vec::new();
    let read = std::fs::File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(from))?;
        f.read_to_end(&mut text)
    });
    if read.is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(MESSAGE_LINES)..].join("\n");
    if tail.len() <= MESSAGE_BYTES {
        return tail;
    }
    let mut cut = tail.len() - MESSAGE_BYTES;
    while !tail.is_char_boundary(cut) {
        cut += 1;
    }
    tail[cut..].to_string()
}

/// The kernel's OOM-kill count of this process's memory cgroup (v2 `memory.events`, v1
/// `memory.oom_control`); containers run in the devlet's cgroup, so a SIGKILL that coincides
/// with a rise of this count is taken as an OOM kill. `None` where it cannot be read.
pub fn oom_kills() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut candidates = Vec::new();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.is_empty() {
            candidates.push(Path::new("/sys/fs/cgroup").join(path).join("memory.events"));
        } else if controllers.split(',').any(|c| c == "memory") {
            let base = Path::new("/sys/fs/cgroup/memory");
            candidates.push(base.join(path).join("memory.oom_control"));
            // Inside a cgroup namespace the own group is the mount's root.
            candidates.push(base.join("memory.oom_control"));
        }
    }
    candidates.iter().find_map(|p| {
        let text = std::fs::read_to_string(p).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    })
}

pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn back_off_follows_the_kubelet() {
        let mut b = Backoff::new(10 * S, 300 * S);
        let t0 = Instant::now();
        // First crash: at once.
        assert_eq!(b.restart_at(t0), t0);
        b.restarted(t0, t0);
        // Then 10 s, doubling up to 5 min.
        let mut now = t0;
        for want in [10, 20, 40, 80, 160, 300, 300] {
            let finished = now + S;
            let at = b.restart_at(finished);
            assert_eq!(at - finished, want * S);
            b.restarted(finished, at);
            now = at;
        }
        // A run of more than 10 min starts over: at once, then 10 s.
        let finished = now + 601 * S;
        assert_eq!(b.restart_at(finished), finished);
        b.restarted(finished, finished);
        assert_eq!(b.delay(), 10 * S);
        // A run of 9 min does not.
        let finished2 = finished + 540 * S;
        assert_eq!(b.restart_at(finished2) - finished2, 10 * S);
    }

    #[test]
    fn termination_reason_code_and_message() {
        let exit = |code: i32| ExitStatus::from_raw(code << 8);
        let killed = ExitStatus::from_raw(libc::SIGKILL);
        let t = Terminated::exited(exit(1), false, true, || "boom".into(), "t0");
        assert_eq!(
            (t.exit_code, t.reason.as_str(), t.message.as_str()),
            (1, "Error", "boom")
        );
        let t = Terminated::exited(exit(0), false, true, || "boom".into(), "t0");
        assert_eq!(
            (t.exit_code, t.reason.as_str(), t.message.as_str()),
            (0, "Completed", "")
        );
        let t = Terminated::exited(exit(1), false, false, || "boom".into(), "t0");
        assert_eq!(t.message, "", "policy File: no log fallback");
        let t = Terminated::exited(killed, true, false, String::new, "t0");
        assert_eq!((t.exit_code, t.reason.as_str()), (137, "OOMKilled"));
        let t = Terminated::exited(killed, false, false, String::new, "t0");
        assert_eq!((t.exit_code, t.reason.as_str()), (137, "Error"));
    }

    #[test]
    fn log_tail_is_the_last_80_lines_within_2_kib_of_this_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let earlier = "earlier run\n";
        let lines: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, format!("{earlier}{lines}")).unwrap();
        let tail = log_tail(&path, earlier.len() as u64);
        assert!(
            tail.starts_with("line 20\n") && tail.ends_with("line 99"),
            "{tail}"
        );
        let long: String = (0..50)
            .map(|i| format!("{i:03}{}\n", "x".repeat(96)))
            .collect();
        std::fs::write(&path, &long).unwrap();
        let tail = log_tail(&path, 0);
        assert_eq!(tail.len(), MESSAGE_BYTES);
        assert!(tail.ends_with(&format!("049{}", "x".repeat(96))));
    }

    #[test]
    fn status_entries() {
        let last = Terminated::exited(
            ExitStatus::from_raw(3 << 8),
            false,
            true,
            || "bad".into(),
            "t0",
        );
        let s = status_json(
            "c",
            "img",
            "p_ns(uid)",
            &State::BackOff {
                until: Instant::now(),
                delay: 20 * S,
                finished: Instant::now(),
            },
            true,
            2,
            Some(&last),
        );
        assert_eq!(s["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert!(
            s["state"]["waiting"]["message"]
                .as_str()
                .unwrap()
                .contains("back-off 20s")
        );
        assert_eq!(s["ready"], false);
        assert_eq!(s["restartCount"], 2);
        assert_eq!(s["lastState"]["terminated"]["exitCode"], 3);
        assert_eq!(s["lastState"]["terminated"]["message"], "bad");
        let s = status_json("c", "img", "p", &State::Terminated, false, 0, Some(&last));
        assert_eq!(s["state"]["terminated"]["reason"], "Error");
        assert_eq!(s["lastState"], json!({}));
    }
}
