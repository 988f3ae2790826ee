//! The client and the tracker against the stand-in Cruise Control (`stand_in`): the operator's
//! poll loop (`drive`) from submission to done or failed, CC restarts, CC's error replies,
//! malformed replies, auth, TLS. Every wait has a deadline; nothing sleeps.

mod stand_in;

use std::sync::Arc;
use std::time::Duration;

use pier_cruise_control::{
    BrokerDisk, CruiseControl, Error, NotReady, Observation, Operation, Readiness, RetryPolicy,
    Step, SubmissionPhase, TaskAnswer, TaskStatus, Waiting, next_step,
};
use stand_in::{Phase, StandIn, World, params_map};

const DEADLINE: Duration = Duration::from_secs(30);

fn client(stand_in: &StandIn) -> CruiseControl {
    CruiseControl::builder(&stand_in.url)
        .request_timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// The operator's loop for one operation, until Done or Failed: observe, decide, act. A
/// transient submission error is retried on the next round. `between` runs after every step,
/// with the steps so far (it may restart the stand-in, say). Returns every step taken.
async fn drive(
    cc: &CruiseControl,
    op: &mut Operation,
    policy: RetryPolicy,
    mut between: impl FnMut(&[Step]),
) -> Vec<Step> {
    let rounds = async {
        let mut steps = Vec::new();
        loop {
            let seen = cc.observe(op).await;
            let step = next_step(op, &seen, &policy);
            steps.push(step.clone());
            match &step {
                Step::Submit | Step::Resubmit { .. } => match cc.submit(op).await {
                    Ok(submission) => op.record_submission(submission.task_id, 0),
                    Err(e) if e.is_transient() => {}
                    Err(e) => panic!("submission failed for good: {e}"),
                },
                Step::Wait(_) => {}
                Step::Done | Step::Failed(_) => return steps,
            }
            between(&steps);
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(DEADLINE, rounds)
        .await
        .expect("operation neither done nor failed before the deadline")
}

#[tokio::test]
async fn drain_is_submitted_once_and_done_after_cc_completes_it() {
    let cc_stand_in = StandIn::start().await;
    let cc = client(&cc_stand_in);
    let mut op = Operation::remove_brokers([4, 3]);

    let steps = drive(&cc, &mut op, RetryPolicy::default(), |_| {}).await;

    assert_eq!(
        steps,
        [
            Step::Submit,
            Step::Wait(Waiting::Computing),
            Step::Wait(Waiting::Executing),
            Step::Done
        ]
    );
    assert_eq!(op.attempts, 1);
    let world = cc_stand_in.world();
    let executions = world.executions();
    assert_eq!(executions.len(), 1);
    let request = params_map(executions[0]);
    assert_eq!(executions[0].method, "POST");
    assert_eq!(executions[0].endpoint, "remove_broker");
    for (key, value) in [
        ("json", "true"),
        ("dryrun", "false"),
        ("brokerid", "3,4"),
        ("skip_hard_goal_check", "false"),
        ("exclude_recently_removed_brokers", "true"),
    ] {
        assert_eq!(request.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert_eq!(op.task_id.as_deref(), Some(world.tasks[0].id.as_str()));
    // Every request asked for JSON; status came from user_tasks, never from a re-POST.
    assert!(world.seen.iter().all(|s| s.param("json") == Some("true")));
}

#[tokio::test]
async fn a_200_starts_the_execution_but_is_not_done() {
    let cc_stand_in = StandIn::start_with(World {
        answer_at_once: true,
        script: vec![Phase::InExecution, Phase::Completed],
        ..World::default()
    })
    .await;
    let cc = client(&cc_stand_in);

    let submission = cc.rebalance().await.unwrap();
    match &submission.phase {
        SubmissionPhase::ProposalReady {
            summary: Some(summary),
        } => assert_eq!(summary.num_replica_movements, Some(12)),
        other => panic!("{other:?}"),
    }
    let mut op = Operation::rebalance();
    op.record_submission(submission.task_id, 0);
    let steps = drive(&cc, &mut op, RetryPolicy::default(), |_| {}).await;
    assert_eq!(steps, [Step::Wait(Waiting::Executing), Step::Done]);
}

#[tokio::test]
async fn completed_before_the_execution_began_is_not_done() {
    let cc_stand_in = StandIn::start_with(World {
        script: vec![
            Phase::Active,
            Phase::CompletedEarly,
            Phase::InExecution,
            Phase::Completed,
        ],
        ..World::default()
    })
    .await;
    let cc = client(&cc_stand_in);
    let mut op = Operation::add_brokers([5]);

    let steps = drive(&cc, &mut op, RetryPolicy::default(), |_| {}).await;

    assert_eq!(
        steps,
        [
            Step::Submit,
            Step::Wait(Waiting::Computing),
            Step::Wait(Waiting::ExecutionStarting),
            Step::Wait(Waiting::Executing),
            Step::Done
        ]
    );
}

#[tokio::test]
async fn completed_with_error_fails_with_cc_message() {
    let cc_stand_in = StandIn::start_with(World {
        script: vec![Phase::Active, Phase::InExecution, Phase::CompletedWithError],
        failure_message: serde_json::json!({
            "errorMessage": "Error processing POST request '/remove_broker' due to: \
                'java.lang.IllegalArgumentException: Broker [9] does not exist.'.",
            "stackTrace": "...",
            "version": 1,
        })
        .to_string(),
        ..World::default()
    })
    .await;
    let cc = client(&cc_stand_in);
    let mut op = Operation::remove_brokers([9]);

    let steps = drive(&cc, &mut op, RetryPolicy::default(), |_| {}).await;

    match steps.last() {
        Some(Step::Failed(message)) => {
            assert!(message.contains("Broker [9] does not exist."), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!steps.contains(&Step::Done));
    assert_eq!(
        cc_stand_in.world().executions().len(),
        1,
        "no retry of a failed task"
    );
}

#[tokio::test]
async fn cc_error_replies_are_typed_with_cc_message() {
    let cc_stand_in = StandIn::start().await;
    let cc = client(&cc_stand_in);

    cc_stand_in.world().next_post_error = Some((
        500,
        "Error processing POST request '/rebalance' due to: 'java.lang.RuntimeException: \
         Something unexpected'."
            .into(),
    ));
    match cc.rebalance().await {
        Err(Error::Http {
            endpoint: "rebalance",
            status: 500,
            message,
        }) => assert!(message.contains("Something unexpected"), "{message}"),
        other => panic!("{other:?}"),
    }

    cc_stand_in.world().next_post_error = Some((
        500,
        "Error processing POST request '/add_broker' due to: 'com.linkedin.kafka.cruisecontrol.\
         exception.KafkaCruiseControlException: java.lang.IllegalArgumentException: Broker [3] \
         does not exist.'."
            .into(),
    ));
    let e = cc.add_broker(&[3]).await.unwrap_err();
    assert!(matches!(e, Error::UnknownBrokers { .. }), "{e:?}");
    assert!(!e.is_transient());
}

#[tokio::test]
async fn not_enough_valid_windows_is_not_ready_until_cc_has_windows() {
    let cc_stand_in = StandIn::start_with(World {
        windows_after_state_polls: 2,
        ..World::default()
    })
    .await;
    let cc = client(&cc_stand_in);

    // `state` shows no window yet: refused before any POST.
    let e = cc.remove_broker(&[3]).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotReady {
                reason: NotReady::TooFewWindows {
                    monitored: 0,
                    required: 1
                },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_transient());
    assert!(matches!(
        cc.readiness().await.unwrap(),
        Readiness::NotReady(NotReady::TooFewWindows { .. })
    ));
    assert!(cc_stand_in.world().executions().is_empty());

    // Windows now, but CC counts too few valid ones: its own refusal.
    cc_stand_in.world().next_post_error = Some((
        500,
        "Error processing POST request '/remove_broker' due to: 'com.linkedin.kafka.\
         cruisecontrol.exception.KafkaCruiseControlException: com.linkedin.cruisecontrol.\
         exception.NotEnoughValidWindowsException: There is no window available in range'."
            .into(),
    ));
    let e = cc.remove_broker(&[3]).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotReady {
                reason: NotReady::NotEnoughValidWindows { .. },
                ..
            }
        ),
        "{e:?}"
    );

    // The operator keeps trying and gets there once CC is ready.
    let mut op = Operation::remove_brokers([3]);
    let steps = drive(&cc, &mut op, RetryPolicy::default(), |_| {}).await;
    assert_eq!(steps.last(), Some(&Step::Done));
    assert_eq!(op.attempts, 1);
}

#[tokio::test]
async fn another_execution_in_progress_refuses_a_second_one() {
    let cc_stand_in = StandIn::start().await;
    let cc = client(&cc_stand_in);

    let first = cc.remove_broker(&[3]).await.unwrap();
    assert_eq!(first.phase, SubmissionPhase::Computing);
    // CC's executor is busy: refused before POSTing.
    let e = cc.rebalance().await.unwrap_err();
    match &e {
        Error::ExecutionInProgress { message, .. } => {
            assert!(message.contains(&first.task_id), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_transient());
    assert!(matches!(
        cc.readiness().await.unwrap(),
        Readiness::Busy { task_id: Some(id), .. } if id == first.task_id
    ));
    assert_eq!(cc_stand_in.world().executions().len(), 1);

    // CC refuses itself when Kafka has reassignments it did not start.
    cc_stand_in.restart();
    cc_stand_in.world().next_post_error = Some((
        500,
        "Error processing POST request '/rebalance' due to: 'java.lang.IllegalStateException: \
         Cannot execute new proposals while there are ongoing partition reassignments initiated \
         by external agent: [orders-3]'."
            .into(),
    ));
    let e = cc.rebalance().await.unwrap_err();
    assert!(matches!(e, Error::ExecutionInProgress { .. }), "{e:?}");
}

#[tokio::test]
async fn cc_restart_loses_the_task_which_is_resubmitted_never_done() {
    let cc_stand_in = StandIn::start().await;
    let cc = client(&cc_stand_in);
    let policy = RetryPolicy::default();
    let mut op = Operation::remove_brokers([3, 4]);

    let submission = cc.submit(&op).await.unwrap();
    op.record_submission(submission.task_id.clone(), 1_000);
    assert_eq!(
        next_step(&op, &cc.observe(&op).await, &policy),
        Step::Wait(Waiting::Computing)
    );

    // CC restarts mid-drain: user_tasks no longer lists the task.
    cc_stand_in.restart();
    let seen = cc.observe(&op).await;
    assert_eq!(seen, Observation::task(TaskStatus::Unknown, false));
    // While Kafka still moves the lost execution's replicas, wait.
    assert_eq!(
        next_step(&op, &seen.clone().with_kafka_reassigning(true), &policy),
        Step::Wait(Waiting::LostWhileKafkaReassigning)
    );
    assert_eq!(
        next_step(&op, &seen, &policy),
        Step::Resubmit {
            lost_task_id: submission.task_id.clone()
        }
    );

    let steps = drive(&cc, &mut op, policy, |_| {}).await;
    assert_eq!(
        steps.first(),
        Some(&Step::Resubmit {
            lost_task_id: submission.task_id.clone()
        })
    );
    assert_eq!(steps.last(), Some(&Step::Done));
    assert_eq!(op.attempts, 2);
    assert_ne!(op.task_id.as_deref(), Some(submission.task_id.as_str()));

    let world = cc_stand_in.world();
    let executions = world.executions();
    assert_eq!(executions.len(), 2);
    assert_eq!(
        params_map(executions[0]),
        params_map(executions[1]),
        "the same request again"
    );
}

#[tokio::test]
async fn a_task_lost_on_every_attempt_fails_after_the_last() {
    let cc_stand_in = StandIn::start().await;
    let cc = client(&cc_stand_in);
    let mut op = Operation::remove_brokers([3]);

    // CC restarts right after every submission it accepts.
    let steps = drive(&cc, &mut op, RetryPolicy { max_attempts: 3 }, |steps| {
        if matches!(steps.last(), Some(Step::Submit | Step::Resubmit { .. })) {
            cc_stand_in.restart();
        }
    })
    .await;

    assert_eq!(
        steps
            .iter()
            .filter(|s| matches!(s, Step::Resubmit { .. }))
            .count(),
        2
    );
    match steps.last() {
        Some(Step::Failed(message)) => assert!(message.contains("lost"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(!steps.contains(&Step::Done));
    assert_eq!(cc_stand_in.world().executions().len(), 3);
}

#[tokio::test]
async fn persisted_operation_resumes_with_a_new_client() {
    let cc_stand_in = StandIn::start().await;
    let mut op = Operation::remove_disks([
        BrokerDisk::new(1, "/var/lib/kafka/data-1"),
        BrokerDisk::new(2, "/var/lib/kafka/data-1"),
    ]);
    let submission = client(&cc_stand_in).submit(&op).await.unwrap();
    op.record_submission(submission.task_id, 1_767_225_600_000);
    let status = serde_json::to_string(&op).unwrap();

    // The operator restarts: a new client, the operation read back from the status.
    let mut resumed: Operation = serde_json::from_str(&status).unwrap();
    let steps = drive(
        &client(&cc_stand_in),
        &mut resumed,
        RetryPolicy::default(),
        |_| {},
    )
    .await;
    assert_eq!(steps.last(), Some(&Step::Done));
    assert_eq!(resumed.attempts, 1);
    let world = cc_stand_in.world();
    let request = params_map(world.executions()[0]);
    assert_eq!(world.executions()[0].endpoint, "remove_disks");
    assert_eq!(
        request.get("brokerid_and_logdirs").map(String::as_str),
        Some("1-/var/lib/kafka/data-1,2-/var/lib/kafka/data-1")
    );
}

#[tokio::test]
async fn malformed_replies_are_typed_errors() {
    let cc_stand_in = StandIn::start().await;
    let cc = client(&cc_stand_in);
    let mut op = Operation::rebalance_disks();
    op.record_submission(cc.rebalance_disks().await.unwrap().task_id, 0);
    assert_eq!(
        cc_stand_in.world().executions()[0].param("rebalance_disk"),
        Some("true")
    );

    cc_stand_in.world().garbage.insert("user_tasks");
    let task_id = op.task_id.clone().unwrap();
    let e = cc.user_task(&task_id).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::MalformedReply {
                endpoint: "user_tasks",
                ..
            }
        ),
        "{e:?}"
    );
    // The tracker waits on a reply it cannot read: neither done nor re-submitted.
    let seen = cc.observe(&op).await;
    assert!(
        matches!(seen.answer, TaskAnswer::NoAnswer { .. }),
        "{seen:?}"
    );
    assert!(matches!(
        next_step(&op, &seen, &RetryPolicy::default()),
        Step::Wait(Waiting::NoAnswer(_))
    ));

    cc_stand_in.world().garbage.insert("state");
    let e = cc.state().await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::MalformedReply {
                endpoint: "state",
                ..
            }
        ),
        "{e:?}"
    );

    // A proxy's page instead of CC's answer to a POST: no task id, so a typed error.
    cc_stand_in.restart();
    cc_stand_in.world().garbage.remove("state");
    cc_stand_in.world().garbage.insert("remove_broker");
    let e = cc.remove_broker(&[2]).await.unwrap_err();
    match e {
        Error::MalformedReply {
            endpoint: "remove_broker",
            detail,
        } => assert!(detail.contains("User-Task-ID"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn basic_auth_is_sent_and_a_refusal_is_typed() {
    let cc_stand_in = StandIn::start_with(World {
        basic_auth: Some(("pier".into(), "s3cret".into())),
        ..World::default()
    })
    .await;
    let good = CruiseControl::builder(&cc_stand_in.url)
        .basic_auth("pier", "s3cret")
        .build()
        .unwrap();
    assert!(good.state().await.is_ok());

    for bad in [
        CruiseControl::builder(&cc_stand_in.url)
            .basic_auth("pier", "wrong")
            .build()
            .unwrap(),
        client(&cc_stand_in),
    ] {
        match bad.state().await {
            Err(e @ Error::Http { status: 401, .. }) => assert!(!e.is_transient()),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn unreachable_and_silent_cc_are_unreachable() {
    // Nothing listens on a port just released.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let cc = CruiseControl::builder(format!("http://{closed}"))
        .build()
        .unwrap();
    let e = cc.state().await.unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e:?}");
    assert!(e.is_transient());
    assert!(matches!(
        cc.observe(&{
            let mut op = Operation::rebalance();
            op.record_submission("5f0ce5a2-3a4b-4c1e-9f57-000000000001", 0);
            op
        })
        .await
        .answer,
        TaskAnswer::NoAnswer { .. }
    ));

    let cc_stand_in = StandIn::start_with(World {
        hang: ["state"].into_iter().collect(),
        ..World::default()
    })
    .await;
    let impatient = CruiseControl::builder(&cc_stand_in.url)
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    match tokio::time::timeout(DEADLINE, impatient.state()).await {
        Ok(Err(
            e @ Error::Timeout {
                endpoint: "state", ..
            },
        )) => assert!(e.is_transient()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn stopped_execution_fails_the_operation() {
    let cc_stand_in = StandIn::start().await;
    let cc = client(&cc_stand_in);
    let mut op = Operation::remove_brokers([3]);
    op.record_submission(cc.submit(&op).await.unwrap().task_id, 0);
    assert_eq!(
        next_step(&op, &cc.observe(&op).await, &RetryPolicy::default()),
        Step::Wait(Waiting::Computing)
    );

    cc.stop_proposal_execution().await.unwrap();

    let steps = drive(&cc, &mut op, RetryPolicy::default(), |_| {}).await;
    assert!(matches!(steps.as_slice(), [Step::Failed(_)]), "{steps:?}");
    assert_eq!(cc_stand_in.world().executions().len(), 1);
}

#[tokio::test]
async fn a_returning_broker_id_is_dropped_from_recently_removed_first() {
    let cc_stand_in = StandIn::start().await;
    let cc = client(&cc_stand_in);
    let mut drain = Operation::remove_brokers([3]);
    drive(&cc, &mut drain, RetryPolicy::default(), |_| {}).await;
    assert_eq!(
        cc.state().await.unwrap().executor.recently_removed_brokers,
        [3]
    );

    cc.add_broker(&[3]).await.unwrap();

    let world = cc_stand_in.world();
    let posts: Vec<&str> = world
        .seen
        .iter()
        .filter(|s| s.method == "POST")
        .map(|s| s.endpoint.as_str())
        .collect();
    assert_eq!(posts, ["remove_broker", "admin", "add_broker"]);
    let admin = world.seen.iter().find(|s| s.endpoint == "admin").unwrap();
    assert_eq!(admin.param("drop_recently_removed_brokers"), Some("3"));
    assert!(world.recently_removed_brokers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_trusts_the_given_ca_only() {
    let (ca_pem, server_tls) = test_pki();
    let cc_stand_in = StandIn::start_tls(World::default(), server_tls).await;

    let trusting = CruiseControl::builder(&cc_stand_in.url)
        .ca_pem(ca_pem.clone())
        .build()
        .unwrap();
    assert!(trusting.state().await.is_ok());

    let (other_ca, _) = test_pki();
    for untrusting in [
        CruiseControl::builder(&cc_stand_in.url)
            .ca_pem(other_ca)
            .build()
            .unwrap(),
        // The system's roots do not include a test CA.
        CruiseControl::builder(&cc_stand_in.url).build().unwrap(),
    ] {
        let e = untrusting.state().await.unwrap_err();
        assert!(matches!(e, Error::Unreachable { .. }), "{e:?}");
    }
}

/// A CA (PEM) and a server configuration with a certificate it issued for `localhost`.
fn test_pki() -> (String, rustls::ServerConfig) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();

    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    (ca.pem(), server)
}
