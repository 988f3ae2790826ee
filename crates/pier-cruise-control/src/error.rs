//! The ways a call to Cruise Control fails, and the reading of CC's error messages into them.

use std::fmt;

/// Why Cruise Control cannot compute a proposal yet. Waiting is the remedy: CC needs metric
/// windows (about 25 minutes with the defaults after it or the brokers start) and a running
/// load monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// CC's load monitor is not sampling (not started, loading samples, bootstrapping, training).
    MonitorNotRunning { state: String },
    /// `state` shows fewer monitored windows than required.
    TooFewWindows { monitored: u32, required: u32 },
    /// CC refused with `NotEnoughValidWindowsException` (its message).
    NotEnoughValidWindows { message: String },
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReady::MonitorNotRunning { state } => {
                write!(f, "load monitor is {state}, not running")
            }
            NotReady::TooFewWindows {
                monitored,
                required,
            } => write!(
                f,
                "{monitored} of {required} required metric windows monitored"
            ),
            NotReady::NotEnoughValidWindows { message } => {
                write!(f, "not enough valid metric windows: {message}")
            }
        }
    }
}

/// A failed call to Cruise Control. `endpoint` is CC's endpoint name (`remove_broker`, ...).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be built (bad URL, unreadable CA certificates).
    #[error("invalid Cruise Control client configuration: {0}")]
    Config(String),
    /// Pier asked for something CC would reject or misread (no brokers, a comma in a log dir).
    #[error("invalid Cruise Control request: {0}")]
    InvalidRequest(String),
    /// No HTTP answer: connection refused, DNS, TLS, a reply cut short.
    #[error("Cruise Control at {url} is unreachable: {detail}")]
    Unreachable {
        url: String,
        detail: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No complete answer within the request timeout. A POST that timed out may still have been
    /// accepted: CC's state shows its executor busy then.
    #[error("Cruise Control did not answer {endpoint} within {after:?}")]
    Timeout {
        endpoint: &'static str,
        after: std::time::Duration,
    },
    /// CC cannot compute a proposal yet; retry later.
    #[error("Cruise Control is not ready ({endpoint}): {reason}")]
    NotReady {
        endpoint: &'static str,
        reason: NotReady,
    },
    /// CC executes one thing at a time and something (another task, or reassignments started
    /// outside CC) is running. Retry after it ends; stopping it is a separate decision.
    #[error("Cruise Control is busy with another execution ({endpoint}): {message}")]
    ExecutionInProgress {
        endpoint: &'static str,
        message: String,
    },
    /// CC does not know some of the brokers: not yet registered after a start, or already gone.
    /// Only Kafka's own metadata says which.
    #[error("Cruise Control does not know some brokers ({endpoint}): {message}")]
    UnknownBrokers {
        endpoint: &'static str,
        message: String,
    },
    /// CC holds `max.active.user.tasks` tasks already; retry later.
    #[error("Cruise Control has too many active tasks ({endpoint}): {message}")]
    TooManyUserTasks {
        endpoint: &'static str,
        message: String,
    },
    /// Any other error reply, with CC's `errorMessage` (or the start of the body).
    #[error("Cruise Control answered {endpoint} with HTTP {status}: {message}")]
    Http {
        endpoint: &'static str,
        status: u16,
        message: String,
    },
    /// A reply Pier cannot read: not JSON, missing fields, a missing `User-Task-ID`.
    #[error("malformed reply from Cruise Control's {endpoint}: {detail}")]
    MalformedReply {
        endpoint: &'static str,
        detail: String,
    },
}

impl Error {
    /// Whether the same call may succeed later without anyone changing anything.
    /// `UnknownBrokers` is not: whether the broker is coming or gone is Kafka's to say.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. }
            | Error::Timeout { .. }
            | Error::NotReady { .. }
            | Error::ExecutionInProgress { .. }
            | Error::TooManyUserTasks { .. }
            | Error::MalformedReply { .. } => true,
            Error::Http { status, .. } => *status >= 500 || *status == 429,
            Error::Config(_) | Error::InvalidRequest(_) | Error::UnknownBrokers { .. } => false,
        }
    }
}

/// Reads CC's `errorMessage` (from an error reply, or a 200 that carries one) into a typed
/// error. The phrases are CC 2.5's own (`KafkaCruiseControl.sanityCheckDryRun`,
/// `Executor.sanityCheckOngoingMovement`, `UserTaskManager`, `sanityCheckBrokerPresence`).
pub(crate) fn classify(endpoint: &'static str, status: u16, message: String) -> Error {
    const BUSY: &[&str] = &[
        "Cannot start a new execution while there is an ongoing execution",
        "ongoing partition reassignments",
        "There are ongoing inter-broker partition movements",
        "There are ongoing intra-broker partition movements",
        "There are ongoing leadership movements",
    ];
    if message.contains("NotEnoughValidWindowsException") {
        Error::NotReady {
            endpoint,
            reason: NotReady::NotEnoughValidWindows { message },
        }
    } else if BUSY.iter().any(|phrase| message.contains(phrase)) {
        Error::ExecutionInProgress { endpoint, message }
    } else if message.contains("IllegalArgumentException") && message.contains("does not exist") {
        Error::UnknownBrokers { endpoint, message }
    } else if message.contains("which has reached the servlet capacity") {
        Error::TooManyUserTasks { endpoint, message }
    } else {
        Error::Http {
            endpoint,
            status,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classified(message: &str) -> Error {
        classify("rebalance", 500, message.to_string())
    }

    #[test]
    fn not_enough_valid_windows_is_not_ready() {
        let e = classified(
            "Error processing POST request '/rebalance' due to: 'com.linkedin.kafka.cruisecontrol.\
             exception.KafkaCruiseControlException: com.linkedin.cruisecontrol.exception.\
             NotEnoughValidWindowsException: There is no window available in range'.",
        );
        assert!(matches!(
            e,
            Error::NotReady {
                reason: NotReady::NotEnoughValidWindows { .. },
                ..
            }
        ));
        assert!(e.is_transient());
    }

    #[test]
    fn ongoing_execution_phrases_are_busy() {
        for message in [
            "java.lang.IllegalStateException: Cannot start a new execution while there is an \
             ongoing execution. Please use stop_ongoing_execution=true to stop ongoing execution \
             and start a new one.",
            "Cannot execute new proposals while there are ongoing partition reassignments \
             initiated by external agent: [t-0]",
            "OngoingExecutionException: There are ongoing inter-broker partition movements.",
        ] {
            let e = classified(message);
            assert!(
                matches!(e, Error::ExecutionInProgress { .. }),
                "{message}: {e:?}"
            );
            assert!(e.is_transient());
        }
    }

    #[test]
    fn missing_broker_is_unknown_brokers_and_not_transient() {
        let e = classified(
            "Error processing POST request '/add_broker' due to: 'com.linkedin.kafka.\
             cruisecontrol.exception.KafkaCruiseControlException: java.lang.\
             IllegalArgumentException: Broker [3] does not exist.'.",
        );
        assert!(matches!(e, Error::UnknownBrokers { .. }));
        assert!(!e.is_transient());
    }

    #[test]
    fn servlet_capacity_is_too_many_tasks() {
        let e = classified(
            "There are already 5 active user tasks, which has reached the servlet capacity.",
        );
        assert!(matches!(e, Error::TooManyUserTasks { .. }));
    }

    #[test]
    fn anything_else_keeps_status_and_message() {
        let e = classify(
            "rebalance",
            400,
            "Unrecognized endpoint parameters".to_string(),
        );
        match &e {
            Error::Http {
                endpoint,
                status,
                message,
            } => {
                assert_eq!(*endpoint, "rebalance");
                assert_eq!(*status, 400);
                assert_eq!(message, "Unrecognized endpoint parameters");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!e.is_transient());
        assert!(classify("state", 503, String::new()).is_transient());
    }
}
