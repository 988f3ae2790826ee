//! The HTTP client for Cruise Control's REST API (`<base>/kafkacruisecontrol/<endpoint>`).
//!
//! Every call adds `json=true`. Executing calls add `dryrun=false` (CC's default is a dry run),
//! check CC's `state` first and refuse to POST while CC's executor is busy or its load monitor
//! has no windows, and return CC's `User-Task-ID` for the caller to persist. Task status is read
//! from `user_tasks`, never by re-POSTing: a re-POST without the task id would start another
//! computation.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, HeaderValue, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use url::Url;

use crate::error::{Error, classify};
use crate::reply::{
    self, CruiseControlState, Readiness, Submission, SubmissionPhase, TaskStatus, UserTasksReply,
    error_message, excerpt, looks_like_uuid, parse, proposal_summary,
};
use crate::tls;
use crate::tracker::{BrokerDisk, Observation, Operation, OperationKind};

const API_PATH: &str = "kafkacruisecontrol";
const USER_TASK_HEADER: &str = "User-Task-ID";
/// CC answers an executing POST after at most `webserver.request.maxBlockTimeMs` (10 s by
/// default) with a 202, so the timeout must be well above that.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Replies are read whole; a non-verbose reply is far smaller than this.
const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;
/// CC rejects a longer `reason` (`ParameterUtils.MAX_REASON_LENGTH`).
const MAX_REASON_CHARS: usize = 50;

/// HTTP Basic credentials for CC's `BasicSecurityProvider`.
#[derive(Clone)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Settings sent with every executing request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionOptions {
    /// `reason` (CC requires one when `request.reason.required=true`); cut to 50 characters.
    pub reason: Option<String>,
    /// `concurrent_partition_movements_per_broker` (CC's default: 5).
    pub concurrent_partition_movements_per_broker: Option<u32>,
    /// `replication_throttle` in bytes per second for the replicas moved (CC's default: none).
    pub replication_throttle_bytes_per_second: Option<u64>,
}

/// Builds a [`CruiseControl`].
#[derive(Debug, Clone)]
pub struct CruiseControlBuilder {
    base_url: String,
    auth: Option<BasicAuth>,
    request_timeout: Duration,
    ca_pem: Option<Vec<u8>>,
    options: ExecutionOptions,
    min_monitored_windows: u32,
}

impl CruiseControlBuilder {
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some(BasicAuth {
            user: user.into(),
            password: password.into(),
        });
        self
    }

    /// The timeout of one request (default 30 s; keep it above CC's 10 s block time).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// PEM CA certificates to trust for an `https` URL instead of the system's roots.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    pub fn execution_options(mut self, options: ExecutionOptions) -> Self {
        self.options = options;
        self
    }

    /// Monitored metric windows required before executing (default 1).
    pub fn min_monitored_windows(mut self, windows: u32) -> Self {
        self.min_monitored_windows = windows;
        self
    }

    pub fn build(self) -> Result<CruiseControl, Error> {
        let base = Url::parse(&self.base_url)
            .map_err(|e| Error::Config(format!("base URL {:?}: {e}", self.base_url)))?;
        let https = match base.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(Error::Config(format!(
                    "base URL {:?}: scheme {other:?} is neither http nor https",
                    self.base_url
                )));
            }
        };
        if base.host_str().is_none() {
            return Err(Error::Config(format!(
                "base URL {:?} has no host",
                self.base_url
            )));
        }
        if self.request_timeout.is_zero() {
            return Err(Error::Config("request timeout is zero".to_string()));
        }
        let tls = tls::client_config(self.ca_pem.as_deref(), https)?;
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT.min(self.request_timeout)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let http = Client::builder(TokioExecutor::new()).build(connector);
        let authorization = match &self.auth {
            Some(auth) => Some(auth.header_value()?),
            None => None,
        };
        Ok(CruiseControl {
            http,
            base,
            authorization,
            request_timeout: self.request_timeout,
            options: self.options,
            min_monitored_windows: self.min_monitored_windows,
        })
    }
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for one Cruise Control. Cheap to clone (connections are shared).
#[derive(Clone)]
pub struct CruiseControl {
    http: HttpClient,
    base: Url,
    /// `Basic ...`, marked sensitive.
    authorization: Option<HeaderValue>,
    request_timeout: Duration,
    options: ExecutionOptions,
    min_monitored_windows: u32,
}

impl fmt::Debug for CruiseControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CruiseControl")
            .field("base", &self.base.as_str())
            .field("basic_auth", &self.authorization.is_some())
            .field("request_timeout", &self.request_timeout)
            .field("options", &self.options)
            .field("min_monitored_windows", &self.min_monitored_windows)
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    fn header_value(&self) -> Result<HeaderValue, Error> {
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password));
        let mut value = HeaderValue::from_str(&format!("Basic {credentials}"))
            .map_err(|e| Error::Config(format!("Basic auth header: {e}")))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// A reply read whole.
struct Reply {
    status: u16,
    task_id: Option<String>,
    body: Vec<u8>,
}

impl CruiseControl {
    /// `base_url` is CC's server root, e.g. `http://cruise-control.kafka.svc:9090` (a path
    /// prefix in front of `/kafkacruisecontrol` is kept).
    pub fn builder(base_url: impl Into<String>) -> CruiseControlBuilder {
        CruiseControlBuilder {
            base_url: base_url.into(),
            auth: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            ca_pem: None,
            options: ExecutionOptions::default(),
            min_monitored_windows: 1,
        }
    }

    /// CC's monitor, executor and analyzer state; see [`CruiseControlState::readiness`].
    pub async fn state(&self) -> Result<CruiseControlState, Error> {
        self.get_json(
            "state",
            &[("substates", "executor,monitor,analyzer".to_string())],
        )
        .await
    }

    /// Whether CC can execute now, as configured (`min_monitored_windows`).
    pub async fn readiness(&self) -> Result<Readiness, Error> {
        Ok(self.state().await?.readiness(self.min_monitored_windows))
    }

    /// Moves replicas onto `brokers`.
    pub async fn add_broker(&self, brokers: &[i32]) -> Result<Submission, Error> {
        self.submit(&Operation::add_brokers(brokers.iter().copied()))
            .await
    }

    /// Moves every replica off `brokers` (all at once: CC plans one batch better than several).
    pub async fn remove_broker(&self, brokers: &[i32]) -> Result<Submission, Error> {
        self.submit(&Operation::remove_brokers(brokers.iter().copied()))
            .await
    }

    /// Balances the cluster with CC's default goals.
    pub async fn rebalance(&self) -> Result<Submission, Error> {
        self.submit(&Operation::rebalance()).await
    }

    /// Balances the disks within each broker (`rebalance_disk=true`), e.g. after adding one.
    pub async fn rebalance_disks(&self) -> Result<Submission, Error> {
        self.submit(&Operation::rebalance_disks()).await
    }

    /// Moves every replica off the given log dirs onto the brokers' other disks.
    pub async fn remove_disks(&self, disks: &[BrokerDisk]) -> Result<Submission, Error> {
        self.submit(&Operation::remove_disks(disks.iter().cloned()))
            .await
    }

    /// Submits `op`'s request: checks CC's state, then POSTs. Persist the returned task id with
    /// [`Operation::record_submission`] before doing anything else.
    pub async fn submit(&self, op: &Operation) -> Result<Submission, Error> {
        if let Some(reason) = op.invalid_reason() {
            return Err(Error::InvalidRequest(reason));
        }
        let (endpoint, params) = execution_request(op, &self.options);
        let state = self.state().await?;
        match state.readiness(self.min_monitored_windows) {
            Readiness::Ready => {}
            Readiness::Busy { state, task_id } => {
                return Err(Error::ExecutionInProgress {
                    endpoint,
                    message: match task_id {
                        Some(id) => format!("executor is {state} for task {id}"),
                        None => format!("executor is {state}"),
                    },
                });
            }
            Readiness::NotReady(reason) => return Err(Error::NotReady { endpoint, reason }),
        }
        if op.kind == OperationKind::AddBroker {
            // CC keeps removed ids for two weeks and, with exclude_recently_removed_brokers,
            // would move nothing onto a broker id that comes back.
            let returning: Vec<i32> = op
                .brokers
                .iter()
                .copied()
                .filter(|id| state.executor.recently_removed_brokers.contains(id))
                .collect();
            if !returning.is_empty() {
                self.drop_recently_removed_brokers(&returning).await?;
            }
        }
        self.execute(endpoint, &params).await
    }

    /// Removes broker ids from CC's "recently removed" list so replicas may move onto them.
    pub async fn drop_recently_removed_brokers(&self, brokers: &[i32]) -> Result<(), Error> {
        let reply = self
            .send(
                Method::POST,
                "admin",
                &[("drop_recently_removed_brokers", join_ids(brokers))],
            )
            .await?;
        expect_ok("admin", &reply)
    }

    /// The status of one task. A task CC does not list (or an id that is not CC's) is
    /// [`TaskStatus::Unknown`]; for `CompletedWithError`, CC's message when it can be had.
    pub async fn user_task(&self, task_id: &str) -> Result<TaskStatus, Error> {
        if !looks_like_uuid(task_id) {
            tracing::warn!(
                task_id,
                "persisted Cruise Control task id is not a UUID; treating the task as unknown"
            );
            return Ok(TaskStatus::Unknown);
        }
        let reply: UserTasksReply = self
            .get_json("user_tasks", &[("user_task_ids", task_id.to_string())])
            .await?;
        let status = reply::task_status("user_tasks", &reply, task_id)?;
        if let TaskStatus::CompletedWithError { .. } = status {
            let message = self.completed_task_error(task_id).await;
            return Ok(TaskStatus::CompletedWithError { message });
        }
        Ok(status)
    }

    /// What CC says went wrong with a finished task, best effort: CC itself fails
    /// `fetch_completed_task` for a task whose computation threw, and then the cause is only in
    /// its stack trace.
    async fn completed_task_error(&self, task_id: &str) -> Option<String> {
        let params = [
            ("user_task_ids", task_id.to_string()),
            ("fetch_completed_task", "true".to_string()),
        ];
        let reply = match self.send(Method::GET, "user_tasks", &params).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(task_id, error = %e, "no error details for Cruise Control task");
                return None;
            }
        };
        if reply.status != 200 {
            return reply::stack_trace_cause(&reply.body).or_else(|| error_message(&reply.body));
        }
        let tasks: UserTasksReply = parse("user_tasks", &reply.body).ok()?;
        tasks
            .user_tasks
            .iter()
            .find(|t| t.id.eq_ignore_ascii_case(task_id))
            .and_then(reply::original_error)
    }

    /// What CC says about `op`'s task, for [`crate::next_step`]. Errors become
    /// [`Observation::no_answer`]. CC's executor is asked only when the task shows Completed.
    pub async fn observe(&self, op: &Operation) -> Observation {
        let Some(task_id) = op.task_id.as_deref() else {
            return Observation::no_answer("nothing submitted yet");
        };
        let status = match self.user_task(task_id).await {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(task_id, error = %e, "cannot read Cruise Control task status");
                return Observation::no_answer(e.to_string());
            }
        };
        let executor_on_task = match status {
            TaskStatus::Completed => match self.state().await {
                Ok(state) => state.executor.is_executing(task_id),
                Err(e) => {
                    return Observation::no_answer(format!(
                        "task {task_id} shows Completed but CC's executor state is unreadable: {e}"
                    ));
                }
            },
            _ => false,
        };
        Observation::task(status, executor_on_task)
    }

    /// Stops CC's ongoing execution. CC cancels the moves not started yet; reassignments already
    /// in flight in Kafka finish (linkedin/cruise-control#141).
    pub async fn stop_proposal_execution(&self) -> Result<(), Error> {
        let reply = self
            .send(Method::POST, "stop_proposal_execution", &[])
            .await?;
        expect_ok("stop_proposal_execution", &reply)
    }

    async fn execute(
        &self,
        endpoint: &'static str,
        params: &[(&'static str, String)],
    ) -> Result<Submission, Error> {
        let reply = self.send(Method::POST, endpoint, params).await?;
        if !(200..=202).contains(&reply.status) {
            return Err(error_reply(endpoint, &reply));
        }
        if let Some(message) = error_message(&reply.body) {
            return Err(classify(endpoint, reply.status, message));
        }
        let task_id = match reply.task_id {
            Some(id) if looks_like_uuid(&id) => id,
            Some(id) => {
                return Err(Error::MalformedReply {
                    endpoint,
                    detail: format!("{USER_TASK_HEADER} {id:?} is not a UUID"),
                });
            }
            None => {
                return Err(Error::MalformedReply {
                    endpoint,
                    detail: format!("HTTP {} without a {USER_TASK_HEADER} header", reply.status),
                });
            }
        };
        let phase = if reply.status == 202 {
            SubmissionPhase::Computing
        } else {
            SubmissionPhase::ProposalReady {
                summary: proposal_summary(&reply.body),
            }
        };
        tracing::info!(
            endpoint,
            task_id,
            ?phase,
            "Cruise Control accepted the request"
        );
        Ok(Submission { task_id, phase })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &'static str,
        params: &[(&'static str, String)],
    ) -> Result<T, Error> {
        let reply = self.send(Method::GET, endpoint, params).await?;
        if reply.status != 200 {
            return Err(error_reply(endpoint, &reply));
        }
        if let Some(message) = error_message(&reply.body) {
            return Err(classify(endpoint, reply.status, message));
        }
        parse(endpoint, &reply.body)
    }

    async fn send(
        &self,
        method: Method,
        endpoint: &'static str,
        params: &[(&'static str, String)],
    ) -> Result<Reply, Error> {
        let url = self.url(endpoint, params);
        let mut request = Request::builder()
            .method(method.clone())
            .uri(url.as_str())
            .header(
                USER_AGENT,
                concat!("pier-cruise-control/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| Error::InvalidRequest(format!("{method} {url}: {e}")))?;
        let started = Instant::now();
        // One deadline for the answer and its body.
        let deadline = started + self.request_timeout;
        let timeout = || Error::Timeout {
            endpoint,
            after: self.request_timeout,
        };
        let unreachable = |e: Box<dyn std::error::Error + Send + Sync>| Error::Unreachable {
            url: self.base.to_string(),
            detail: format!("{method} {endpoint}: {}", error_chain(e.as_ref())),
            source: e,
        };
        let response = tokio::time::timeout_at(deadline, self.http.request(request))
            .await
            .map_err(|_| timeout())?
            .map_err(|e| unreachable(e.into()))?;
        let status = response.status().as_u16();
        let task_id = response
            .headers()
            .get(USER_TASK_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        let limited = Limited::new(response.into_body(), MAX_REPLY_BYTES);
        let body = match tokio::time::timeout_at(deadline, limited.collect()).await {
            Err(_) => return Err(timeout()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(Error::MalformedReply {
                    endpoint,
                    detail: format!("reply longer than {MAX_REPLY_BYTES} bytes"),
                });
            }
            Ok(Err(e)) => return Err(unreachable(e)),
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        tracing::debug!(
            %method,
            endpoint,
            url = %url,
            status,
            task_id = task_id.as_deref(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Cruise Control replied"
        );
        Ok(Reply {
            status,
            task_id,
            body: body.to_vec(),
        })
    }

    fn url(&self, endpoint: &str, params: &[(&'static str, String)]) -> Url {
        let mut url = self.base.clone();
        let path = format!(
            "{}/{API_PATH}/{endpoint}",
            self.base.path().trim_end_matches('/')
        );
        url.set_path(&path);
        url.set_query(None);
        url.set_fragment(None);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("json", "true");
            for (key, value) in params {
                query.append_pair(key, value);
            }
        }
        url
    }
}

/// The endpoint and parameters (besides `json=true`) that execute `op`. CC rejects parameters
/// an endpoint does not know, so each gets only its own.
pub(crate) fn execution_request(
    op: &Operation,
    options: &ExecutionOptions,
) -> (&'static str, Vec<(&'static str, String)>) {
    let mut params = vec![("dryrun", "false".to_string())];
    let endpoint = match op.kind {
        OperationKind::AddBroker => {
            params.push(("brokerid", join_ids(&op.brokers)));
            goal_based(&mut params, options);
            "add_broker"
        }
        OperationKind::RemoveBroker => {
            params.push(("brokerid", join_ids(&op.brokers)));
            goal_based(&mut params, options);
            "remove_broker"
        }
        OperationKind::Rebalance => {
            goal_based(&mut params, options);
            if op.rebalance_disk {
                params.push(("rebalance_disk", "true".to_string()));
            }
            "rebalance"
        }
        OperationKind::RemoveDisks => {
            let pairs: Vec<String> = op
                .disks
                .iter()
                .map(|d| format!("{}-{}", d.broker_id, d.log_dir))
                .collect();
            params.push(("brokerid_and_logdirs", pairs.join(",")));
            "remove_disks"
        }
    };
    if let Some(reason) = options.reason.as_deref().filter(|r| !r.is_empty()) {
        params.push(("reason", reason.chars().take(MAX_REASON_CHARS).collect()));
    }
    (endpoint, params)
}

/// Parameters of the goal-based endpoints (`add_broker`, `remove_broker`, `rebalance`): hard
/// goals are never skipped, and no replica or leader goes to a broker being removed or demoted.
fn goal_based(params: &mut Vec<(&'static str, String)>, options: &ExecutionOptions) {
    params.push(("skip_hard_goal_check", "false".to_string()));
    params.push(("exclude_recently_removed_brokers", "true".to_string()));
    params.push(("exclude_recently_demoted_brokers", "true".to_string()));
    if let Some(n) = options.concurrent_partition_movements_per_broker {
        params.push(("concurrent_partition_movements_per_broker", n.to_string()));
    }
    if let Some(bytes) = options.replication_throttle_bytes_per_second {
        params.push(("replication_throttle", bytes.to_string()));
    }
}

fn join_ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// A 200 without an `errorMessage`, else the error.
fn expect_ok(endpoint: &'static str, reply: &Reply) -> Result<(), Error> {
    if reply.status != 200 {
        return Err(error_reply(endpoint, reply));
    }
    match error_message(&reply.body) {
        Some(message) => Err(classify(endpoint, reply.status, message)),
        None => Ok(()),
    }
}

/// The error an unsuccessful reply stands for: CC's `errorMessage` read into a type, or the
/// start of whatever else came back (a proxy's page, an empty 401).
fn error_reply(endpoint: &'static str, reply: &Reply) -> Error {
    match error_message(&reply.body) {
        Some(message) => classify(endpoint, reply.status, message),
        None => Error::Http {
            endpoint,
            status: reply.status,
            message: if reply.body.is_empty() {
                "empty body".to_string()
            } else {
                excerpt(&reply.body, 300)
            },
        },
    }
}

/// An error with its sources, for messages (hyper-util names only the outermost: "client error
/// (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params_of(op: &Operation, options: &ExecutionOptions) -> (&'static str, Vec<String>) {
        let (endpoint, params) = execution_request(op, options);
        (
            endpoint,
            params
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        )
    }

    #[test]
    fn remove_broker_request() {
        let (endpoint, params) = params_of(&Operation::remove_brokers([4, 3]), &Default::default());
        assert_eq!(endpoint, "remove_broker");
        assert_eq!(
            params,
            [
                "dryrun=false",
                "brokerid=3,4",
                "skip_hard_goal_check=false",
                "exclude_recently_removed_brokers=true",
                "exclude_recently_demoted_brokers=true"
            ]
        );
    }

    #[test]
    fn add_broker_and_rebalance_requests_carry_options() {
        let options = ExecutionOptions {
            reason: Some("Pier: scale up my-cluster in namespace production-kafka-42".into()),
            concurrent_partition_movements_per_broker: Some(2),
            replication_throttle_bytes_per_second: Some(10_000_000),
        };
        let (endpoint, params) = params_of(&Operation::add_brokers([5]), &options);
        assert_eq!(endpoint, "add_broker");
        assert!(params.contains(&"brokerid=5".to_string()));
        assert!(params.contains(&"concurrent_partition_movements_per_broker=2".to_string()));
        assert!(params.contains(&"replication_throttle=10000000".to_string()));
        let reason = params.iter().find(|p| p.starts_with("reason=")).unwrap();
        assert_eq!(reason.chars().count(), "reason=".len() + MAX_REASON_CHARS);

        let (endpoint, params) = params_of(&Operation::rebalance_disks(), &options);
        assert_eq!(endpoint, "rebalance");
        assert!(params.contains(&"rebalance_disk=true".to_string()));
        let (_, params) = params_of(&Operation::rebalance(), &Default::default());
        assert!(!params.iter().any(|p| p.starts_with("rebalance_disk")));
    }

    #[test]
    fn remove_disks_request_has_only_its_own_parameters() {
        let op = Operation::remove_disks([
            BrokerDisk::new(101, "/var/lib/kafka/data-1"),
            BrokerDisk::new(101, "/var/lib/kafka/data-0"),
            BrokerDisk::new(7, "/tmp/kafka-logs"),
        ]);
        let options = ExecutionOptions {
            concurrent_partition_movements_per_broker: Some(2),
            ..Default::default()
        };
        let (endpoint, params) = params_of(&op, &options);
        assert_eq!(endpoint, "remove_disks");
        assert_eq!(
            params,
            [
                "dryrun=false",
                "brokerid_and_logdirs=7-/tmp/kafka-logs,101-/var/lib/kafka/data-0,101-/var/lib/kafka/data-1"
            ]
        );
    }

    #[test]
    fn urls_keep_a_path_prefix_and_always_ask_for_json() {
        let cc = CruiseControl::builder("http://cc.kafka.svc:9090/proxy/")
            .build()
            .unwrap();
        let url = cc.url("user_tasks", &[("user_task_ids", "a b".to_string())]);
        assert_eq!(
            url.as_str(),
            "http://cc.kafka.svc:9090/proxy/kafkacruisecontrol/user_tasks?json=true&user_task_ids=a+b"
        );
        let cc = CruiseControl::builder("http://cc:9090").build().unwrap();
        assert_eq!(
            cc.url("state", &[]).as_str(),
            "http://cc:9090/kafkacruisecontrol/state?json=true"
        );
    }

    #[test]
    fn bad_configuration_is_an_error() {
        for url in ["", "cc:9090", "ftp://cc:21", "http://", "unix:/run/cc.sock"] {
            assert!(
                matches!(CruiseControl::builder(url).build(), Err(Error::Config(_))),
                "{url}"
            );
        }
        assert!(matches!(
            CruiseControl::builder("http://cc:9090")
                .request_timeout(Duration::ZERO)
                .build(),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            CruiseControl::builder("https://cc:9090")
                .ca_pem("nope")
                .build(),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn credentials_stay_out_of_debug_output() {
        let builder = CruiseControl::builder("http://cc:9090").basic_auth("operator", "s3cret");
        assert!(!format!("{builder:?}").contains("s3cret"));
        let cc = builder.build().unwrap();
        let shown = format!("{cc:?}");
        assert!(shown.contains("basic_auth: true"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("czNjcmV0"),
            "{shown}"
        );
    }
}
