//! A stand-in for Cruise Control's REST API, speaking CC 2.5's documented JSON (the OpenAPI
//! files under `cruise-control/src/main/resources/yaml` and the servlet's behaviour). CC's jars
//! are not in any registry these tests can reach, so a real CC cannot run here.
//!
//! What it does like CC: `/kafkacruisecontrol/{state,user_tasks,add_broker,remove_broker,
//! rebalance,remove_disks,stop_proposal_execution,admin}`; unknown parameters, a missing
//! `json=true` or an executing POST without `dryrun=false` are refused; an executing POST answers
//! `202` + `User-Task-ID` (or `200` when told to answer at once) and the task then moves through
//! a script of statuses, one step per `user_tasks` poll that lists it; one execution at a time
//! ("Cannot start a new execution ..."); `NotEnoughValidWindowsException` while it has no
//! windows; tasks live in memory, so [`StandIn::restart`] forgets them all.
//!
//! Knobs ([`World`]) inject what a real CC does at its worst: CC's scanner showing Completed
//! before the execution began, CompletedWithError, a given error reply, malformed JSON, Basic
//! auth, a request that never answers.
#![allow(dead_code)] // Each test binary uses a different part.

use std::collections::{BTreeMap, HashSet};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A task's status as `user_tasks` shows it, with what CC's executor does meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Computing the proposal; the executor is `GENERATING_PROPOSALS_FOR_EXECUTION`.
    Active,
    /// `user_tasks` shows Completed while the executor is still `STARTING_EXECUTION` for it
    /// (CC's task scanner runs before `markTaskExecutionBegan`).
    CompletedEarly,
    InExecution,
    Completed,
    CompletedWithError,
}

impl Phase {
    fn status(self) -> &'static str {
        match self {
            Phase::Active => "Active",
            Phase::CompletedEarly | Phase::Completed => "Completed",
            Phase::InExecution => "InExecution",
            Phase::CompletedWithError => "CompletedWithError",
        }
    }

    /// The executor state while the task is in this phase; `None` once it let go.
    fn executor(self) -> Option<&'static str> {
        match self {
            Phase::Active => Some("GENERATING_PROPOSALS_FOR_EXECUTION"),
            Phase::CompletedEarly => Some("STARTING_EXECUTION"),
            Phase::InExecution => Some("INTER_BROKER_REPLICA_MOVEMENT_TASK_IN_PROGRESS"),
            Phase::Completed | Phase::CompletedWithError => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub endpoint: String,
    pub params: Vec<(String, String)>,
    pub phase: Phase,
    /// Phases still to come, one per poll.
    pub script: Vec<Phase>,
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub endpoint: String,
    pub params: Vec<(String, String)>,
}

impl Seen {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The stand-in's memory and knobs.
#[derive(Debug)]
pub struct World {
    pub tasks: Vec<Task>,
    pub seen: Vec<Seen>,
    /// Tasks created so far (task ids count up).
    pub next_id: u64,
    /// `state` requests answered so far.
    pub state_polls: u32,
    /// The statuses a new task goes through, one per `user_tasks` poll (the last one stays).
    pub script: Vec<Phase>,
    /// Executing POSTs answer `200` (proposal computed) instead of `202`.
    pub answer_at_once: bool,
    /// `state` shows no metric window (and executing POSTs fail with
    /// `NotEnoughValidWindowsException`) until this many `state` requests were answered.
    pub windows_after_state_polls: u32,
    /// Answer the next executing POST with this status and `errorMessage`.
    pub next_post_error: Option<(u16, String)>,
    /// Endpoints answering a body that is not the JSON CC sends.
    pub garbage: HashSet<&'static str>,
    /// Endpoints that never answer.
    pub hang: HashSet<&'static str>,
    /// Credentials required (CC's BasicSecurityProvider).
    pub basic_auth: Option<(String, String)>,
    /// `originalResponse` of a CompletedWithError task under `fetch_completed_task=true`.
    pub failure_message: String,
    pub recently_removed_brokers: Vec<i32>,
}

impl Default for World {
    fn default() -> Self {
        World {
            tasks: Vec::new(),
            seen: Vec::new(),
            next_id: 0,
            state_polls: 0,
            script: vec![Phase::Active, Phase::InExecution, Phase::Completed],
            answer_at_once: false,
            windows_after_state_polls: 0,
            next_post_error: None,
            garbage: HashSet::new(),
            hang: HashSet::new(),
            basic_auth: None,
            failure_message: "CompletedWithError".to_string(),
            recently_removed_brokers: Vec::new(),
        }
    }
}

impl World {
    /// The task CC's executor works for, if any.
    fn executing(&self) -> Option<&Task> {
        self.tasks.iter().find(|t| t.phase.executor().is_some())
    }

    fn has_windows(&self) -> bool {
        self.state_polls > self.windows_after_state_polls
    }

    /// The executing requests received, in order.
    pub fn executions(&self) -> Vec<&Seen> {
        self.seen
            .iter()
            .filter(|s| EXECUTING.contains(&s.endpoint.as_str()))
            .collect()
    }
}

type Shared = Arc<Mutex<World>>;

/// A running stand-in. The server stops when this is dropped.
pub struct StandIn {
    pub url: String,
    world: Shared,
    server: JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl StandIn {
    pub async fn start() -> StandIn {
        StandIn::start_with(World::default()).await
    }

    pub async fn start_with(world: World) -> StandIn {
        let world: Shared = Arc::new(Mutex::new(world));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = StandIn::router(world.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).into_future().await;
        });
        StandIn {
            url: format!("http://{addr}"),
            world,
            server,
        }
    }

    /// The same stand-in over TLS with the given server configuration; the URL names
    /// `localhost`.
    pub async fn start_tls(world: World, tls: rustls::ServerConfig) -> StandIn {
        let world: Shared = Arc::new(Mutex::new(world));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = StandIn::router(world.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let server = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    // A client that rejects the certificate ends the handshake: not our error.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        StandIn {
            url: format!("https://localhost:{}", addr.port()),
            world,
            server,
        }
    }

    /// The stand-in's routes, for serving it elsewhere (over TLS).
    pub fn router(world: Shared) -> Router {
        Router::new().fallback(handle).with_state(world)
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }

    pub fn shared(&self) -> Shared {
        self.world.clone()
    }

    /// CC restarts: every task and the executor's memory are gone.
    pub fn restart(&self) {
        let mut world = self.world();
        world.tasks.clear();
        world.recently_removed_brokers.clear();
    }
}

// === the API ===

const STATE: &str = "state";
const USER_TASKS: &str = "user_tasks";
const STOP: &str = "stop_proposal_execution";
const ADMIN: &str = "admin";
/// Endpoints that execute; tasks come from these.
const EXECUTING: &[&str] = &["add_broker", "remove_broker", "rebalance", "remove_disks"];

/// Parameters each endpoint accepts (CC refuses others), from CC's OpenAPI files.
fn known_params(endpoint: &str) -> Vec<&'static str> {
    const COMMON: &[&str] = &["json", "get_response_schema", "doAs", "reason"];
    const GOAL_BASED: &[&str] = &[
        "dryrun",
        "goals",
        "allow_capacity_estimation",
        "concurrent_partition_movements_per_broker",
        "max_partition_movements_in_cluster",
        "concurrent_leader_movements",
        "skip_hard_goal_check",
        "excluded_topics",
        "kafka_assigner",
        "use_ready_default_goals",
        "verbose",
        "exclude_recently_demoted_brokers",
        "exclude_recently_removed_brokers",
        "replica_movement_strategies",
        "execution_progress_check_interval_ms",
        "stop_ongoing_execution",
        "review_id",
        "data_from",
        "replication_throttle",
        "fast_mode",
    ];
    let own: &[&str] = match endpoint {
        STATE => &["substates", "verbose", "super_verbose"],
        USER_TASKS => &[
            "client_ids",
            "endpoints",
            "entries",
            "types",
            "user_task_ids",
            "fetch_completed_task",
        ],
        "add_broker" => &["brokerid", "throttle_added_broker"],
        "remove_broker" => &[
            "brokerid",
            "throttle_removed_broker",
            "destination_broker_ids",
        ],
        "rebalance" => &[
            "rebalance_disk",
            "ignore_proposal_cache",
            "destination_broker_ids",
            "concurrent_intra_broker_partition_movements",
            "broker_concurrent_leader_movements",
            "intra_broker_replication_throttle",
        ],
        "remove_disks" => &[
            "brokerid_and_logdirs",
            "dryrun",
            "stop_ongoing_execution",
            "verbose",
            "allow_capacity_estimation",
        ],
        STOP => &["force_stop", "stop_external_agent", "review_id"],
        ADMIN => &[
            "drop_recently_removed_brokers",
            "drop_recently_demoted_brokers",
            "concurrent_partition_movements_per_broker",
        ],
        _ => &[],
    };
    own.iter()
        .chain(COMMON)
        .chain(
            if matches!(endpoint, "add_broker" | "remove_broker" | "rebalance") {
                GOAL_BASED
            } else {
                &[]
            },
        )
        .copied()
        .collect()
}

fn json_reply(status: StatusCode, body: Value, task_id: Option<&str>) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(id) = task_id {
        response
            .headers_mut()
            .insert("User-Task-ID", HeaderValue::from_str(id).unwrap());
    }
    response
}

/// CC's error body, its message worded like CC's servlet.
fn cc_error(status: StatusCode, method: &Method, endpoint: &str, cause: &str) -> Response {
    json_reply(
        status,
        json!({
            "errorMessage": format!("Error processing {method} request '/{endpoint}' due to: '{cause}'."),
            "stackTrace": format!("{cause}\n\tat com.linkedin.kafka.cruisecontrol.servlet.KafkaCruiseControlServlet.doGetOrPost"),
            "version": 1,
        }),
        None,
    )
}

async fn handle(
    State(world): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let (response, hang) = {
        let mut world = world.lock().unwrap();
        answer(&mut world, &method, &uri, &headers)
    };
    if hang {
        std::future::pending::<()>().await;
    }
    response
}

/// The reply to one request, and whether to never send it.
fn answer(world: &mut World, method: &Method, uri: &Uri, headers: &HeaderMap) -> (Response, bool) {
    let Some(endpoint) = uri.path().strip_prefix("/kafkacruisecontrol/") else {
        return (StatusCode::NOT_FOUND.into_response(), false);
    };
    let endpoint = endpoint.to_string();
    let params: Vec<(String, String)> = url::Url::parse(&format!("http://x{uri}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    world.seen.push(Seen {
        method: method.to_string(),
        endpoint: endpoint.clone(),
        params: params.clone(),
    });
    if let Some((user, password)) = &world.basic_auth {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&expected) {
            let mut response = (StatusCode::UNAUTHORIZED, "").into_response();
            response.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Basic realm=\"cruise-control\""),
            );
            return (response, false);
        }
    }
    let hang = world.hang.contains(endpoint.as_str());
    let response = respond(world, method, &endpoint, &params, headers);
    (response, hang)
}

fn respond(
    world: &mut World,
    method: &Method,
    endpoint: &str,
    params: &[(String, String)],
    headers: &HeaderMap,
) -> Response {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let expected_method = if matches!(endpoint, STATE | USER_TASKS) {
        Method::GET
    } else {
        Method::POST
    };
    if *method != expected_method {
        return cc_error(
            StatusCode::NOT_FOUND,
            method,
            endpoint,
            "com.linkedin.kafka.cruisecontrol.servlet.UserRequestException: Unsupported method",
        );
    }
    let known = known_params(endpoint);
    let unknown: Vec<&str> = params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !known.iter().any(|n| n.eq_ignore_ascii_case(k)))
        .collect();
    if !unknown.is_empty() {
        return cc_error(
            StatusCode::BAD_REQUEST,
            method,
            endpoint,
            &format!(
                "com.linkedin.kafka.cruisecontrol.servlet.UserRequestException: \
                 Unrecognized endpoint parameters in {endpoint} {method} request: {unknown:?}"
            ),
        );
    }
    if param("json") != Some("true") {
        // CC answers in plain text then, which Pier never wants.
        return (StatusCode::OK, "plain text, not JSON").into_response();
    }
    if headers.contains_key("User-Task-ID") {
        return cc_error(
            StatusCode::BAD_REQUEST,
            method,
            endpoint,
            "com.linkedin.kafka.cruisecontrol.servlet.UserRequestException: Unexpected header \
             User-Task-ID in the request",
        );
    }
    if world.garbage.contains(endpoint) {
        let body = match endpoint {
            STATE => {
                r#"{"MonitorState":{"state":"RUNNING"},"ExecutorState":{"state":7},"version":1}"#
            }
            USER_TASKS => r#"{"userTasks":[{"UserTaskId":"#,
            _ => "<html><body>Bad Gateway</body></html>",
        };
        return (StatusCode::OK, body).into_response();
    }
    match endpoint {
        STATE => {
            world.state_polls += 1;
            state_reply(world)
        }
        USER_TASKS => {
            user_tasks_reply(world, param("user_task_ids"), param("fetch_completed_task"))
        }
        STOP => {
            if let Some(task) = world
                .tasks
                .iter_mut()
                .find(|t| t.phase.executor().is_some())
            {
                task.phase = Phase::CompletedWithError;
                task.script.clear();
            }
            json_reply(
                StatusCode::OK,
                json!({"message": "Proposal execution stopped.", "version": 1}),
                None,
            )
        }
        ADMIN => {
            let dropped: Vec<i32> = param("drop_recently_removed_brokers")
                .unwrap_or("")
                .split(',')
                .filter_map(|id| id.trim().parse().ok())
                .collect();
            world
                .recently_removed_brokers
                .retain(|id| !dropped.contains(id));
            json_reply(
                StatusCode::OK,
                json!({"selfHealingEnabledBefore": {}, "selfHealingEnabledAfter": {},
                       "ongoingConcurrencyChangeRequest": "", "version": 1}),
                None,
            )
        }
        e if EXECUTING.contains(&e) => execute(world, method, e, params),
        _ => cc_error(StatusCode::NOT_FOUND, method, endpoint, "Unknown endpoint"),
    }
}

fn state_reply(world: &World) -> Response {
    let windows = if world.has_windows() { 5 } else { 0 };
    let mut executor = json!({"state": "NO_TASK_IN_PROGRESS"});
    if let Some(task) = world.executing() {
        executor = json!({
            "state": task.phase.executor(),
            "triggeredUserTaskId": task.id,
            "triggeredSelfHealingTaskId": "",
            "triggeredTaskReason": "No reason provided",
            "numTotalPartitionMovements": 20,
            "numFinishedPartitionMovements": 5,
            "numInProgressPartitionMovements": 5,
            "numPendingPartitionMovements": 10,
            "finishedDataMovement": 20,
            "totalDataToMove": 100,
        });
    }
    if !world.recently_removed_brokers.is_empty() {
        executor["recentlyRemovedBrokers"] = json!(world.recently_removed_brokers);
    }
    json_reply(
        StatusCode::OK,
        json!({
            "MonitorState": {
                "state": "RUNNING",
                "trained": false,
                "trainingPct": 20.0,
                "numMonitoredWindows": windows,
                "numValidPartitions": 65,
                "numTotalPartitions": 65,
                "monitoringCoveragePct": 100.0,
                "numFlawedPartitions": 0,
                "reasonOfLatestPauseOrResume": "N/A",
            },
            "ExecutorState": executor,
            "AnalyzerState": {"isProposalReady": windows > 0, "readyGoals": []},
            "version": 1,
        }),
        None,
    )
}

fn user_tasks_reply(
    world: &mut World,
    ids: Option<&str>,
    fetch_completed: Option<&str>,
) -> Response {
    let wanted: Option<Vec<String>> =
        ids.map(|ids| ids.split(',').map(|id| id.trim().to_lowercase()).collect());
    let fetch_completed = fetch_completed == Some("true");
    let mut listed = Vec::new();
    for task in world.tasks.iter_mut() {
        if wanted
            .as_ref()
            .is_some_and(|wanted| !wanted.contains(&task.id))
        {
            continue;
        }
        let mut entry = json!({
            "UserTaskId": task.id,
            "RequestURL": format!("POST /kafkacruisecontrol/{}", task.endpoint),
            "ClientIdentity": "127.0.0.1",
            "StartMs": "1767225600000",
            "Status": task.phase.status(),
        });
        if fetch_completed && task.phase != Phase::Active {
            entry["originalResponse"] = match task.phase {
                Phase::CompletedWithError => Value::String(world.failure_message.clone()),
                _ => Value::String(optimization_result().to_string()),
            };
        }
        listed.push(entry);
        // One step of the task's script per poll.
        if !fetch_completed && !task.script.is_empty() {
            task.phase = task.script.remove(0);
        }
    }
    json_reply(
        StatusCode::OK,
        json!({"userTasks": listed, "version": 1}),
        None,
    )
}

fn optimization_result() -> Value {
    json!({
        "summary": {
            "numReplicaMovements": 12,
            "numIntraBrokerReplicaMovements": 0,
            "numLeaderMovements": 3,
            "dataToMoveMB": 340,
            "intraBrokerDataToMoveMB": 0,
            "recentWindows": 5,
            "monitoredPartitionsPercentage": 100.0,
            "provisionStatus": "RIGHT_SIZED",
        },
        "goalSummary": [],
        "loadAfterOptimization": {},
        "version": 1,
    })
}

fn execute(
    world: &mut World,
    method: &Method,
    endpoint: &str,
    params: &[(String, String)],
) -> Response {
    let dryrun = params
        .iter()
        .find(|(k, _)| k == "dryrun")
        .map(|(_, v)| v.as_str());
    if dryrun != Some("false") {
        // CC would answer a dry run; Pier never wants one.
        return cc_error(
            StatusCode::BAD_REQUEST,
            method,
            endpoint,
            "stand-in: dryrun=false is required",
        );
    }
    if let Some((status, message)) = world.next_post_error.take() {
        return json_reply(
            StatusCode::from_u16(status).unwrap(),
            json!({"errorMessage": message, "stackTrace": "...", "version": 1}),
            None,
        );
    }
    if world.executing().is_some() {
        return cc_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            method,
            endpoint,
            "java.lang.IllegalStateException: Cannot start a new execution while there is an \
             ongoing execution. Please use stop_ongoing_execution=true to stop ongoing execution \
             and start a new one.",
        );
    }
    if !world.has_windows() {
        return cc_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            method,
            endpoint,
            "com.linkedin.kafka.cruisecontrol.exception.KafkaCruiseControlException: \
             com.linkedin.cruisecontrol.exception.NotEnoughValidWindowsException: There is no \
             window available in range [-1, 1767225600000] (index [1, -1]). Window index \
             (current: 0, oldest: 0).",
        );
    }
    world.next_id += 1;
    let id = format!("5f0ce5a2-3a4b-4c1e-9f57-{:012x}", world.next_id);
    let mut script = world.script.clone();
    let phase = if script.is_empty() {
        Phase::Completed
    } else {
        script.remove(0)
    };
    // CC's executor remembers removed brokers (for two weeks by default).
    if let Some((_, ids)) = params
        .iter()
        .find(|(k, _)| endpoint == "remove_broker" && k == "brokerid")
    {
        let removed = ids
            .split(',')
            .filter_map(|id| id.trim().parse::<i32>().ok());
        world.recently_removed_brokers.extend(removed);
    }
    world.tasks.push(Task {
        id: id.clone(),
        endpoint: endpoint.to_string(),
        params: params.to_vec(),
        phase,
        script,
    });
    if world.answer_at_once {
        json_reply(StatusCode::OK, optimization_result(), Some(&id))
    } else {
        json_reply(
            StatusCode::ACCEPTED,
            json!({
                "progress": [{
                    "operation": "Rebalance",
                    "operationProgress": [{
                        "step": "WAITING_FOR_CLUSTER_MODEL",
                        "description": "The job requires a cluster model and it is waiting to get the cluster model lock.",
                        "time-in-ms": 3,
                        "completionPercentage": 0.0,
                    }],
                }],
                "version": 1,
            }),
            Some(&id),
        )
    }
}

/// Parameters of a request as a map, for assertions.
pub fn params_map(seen: &Seen) -> BTreeMap<String, String> {
    seen.params.iter().cloned().collect()
}
