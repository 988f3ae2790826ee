//! Pier's `AdminClient` against real KRaft clusters for what the KafkaTopic and KafkaUser
//! controllers need: ACLs (on a 3-node cluster with the StandardAuthorizer), client quotas
//! and growing topics with CreatePartitions; and the SECURITY_DISABLED answer of a cluster
//! without an authorizer (a second, 1-node cluster, started by its own test in parallel).
//!
//! The listeners are PLAINTEXT, so every client (Pier, kcat, the brokers and controllers
//! among themselves) is `User:ANONYMOUS`, made a super user: nothing is denied to it.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;
use pier::kafka::{
    AclBinding, AclFilter, AclOperation, AclPatternFilter, AclPatternType, AclPermission,
    AclResourceType, AdminClient, AdminOptions, CLUSTER_RESOURCE, NewTopic, PartitionIncrease,
    codes, quota_keys,
};
use pier_testenv::kafka::KafkaOptions;
use pier_testenv::{KafkaCluster, LogDir, wait_for};

const WAIT: Duration = Duration::from_secs(30);
const EVERY: Duration = Duration::from_millis(200);

fn options() -> AdminOptions {
    AdminOptions {
        call_timeout: Duration::from_secs(10),
        max_attempts: 4,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        deadline: Duration::from_secs(30),
        ..AdminOptions::default()
    }
}

fn admin_for(cluster: &KafkaCluster) -> AdminClient {
    AdminClient::new(
        cluster.nodes().iter().map(|n| (n.id, n.broker_addr())),
        options(),
    )
}

/// An admin client of one node only: what that broker's copy of the metadata says.
fn admin_of_node(cluster: &KafkaCluster, id: i32) -> anyhow::Result<AdminClient> {
    Ok(AdminClient::new(
        [(id, cluster.node(id)?.broker_addr())],
        options(),
    ))
}

fn authorizer_properties() -> Vec<(String, String)> {
    vec![
        (
            "authorizer.class.name".into(),
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer".into(),
        ),
        // Brokers, controllers and Pier all connect as ANONYMOUS over PLAINTEXT; the
        // controllers' and brokers' own requests (CLUSTER_ACTION) need it as much as Pier.
        ("super.users".into(), "User:ANONYMOUS".into()),
    ]
}

#[tokio::test]
async fn acls_quotas_and_partitions_against_a_real_cluster() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("kafka-acls")?;
    let cluster = KafkaCluster::start_with(
        &logs,
        KafkaOptions {
            nodes: 3,
            properties: authorizer_properties(),
            ..KafkaOptions::default()
        },
    )
    .await?;
    let admin = admin_for(&cluster);

    acls(&admin, &cluster).await.context("ACLs")?;
    quotas(&admin, &cluster).await.context("client quotas")?;
    partitions(&admin).await.context("CreatePartitions")?;
    Ok(())
}

/// Waits until `admin` describes exactly `want` for `filter`.
async fn wait_for_acls(
    admin: &AdminClient,
    filter: &AclFilter,
    want: &BTreeSet<AclBinding>,
) -> anyhow::Result<()> {
    let last = std::sync::Mutex::new(None);
    let what = format!("the ACLs of filter {filter} to be {want:#?}");
    let found = wait_for(&what, WAIT, EVERY, || {
        let last = &last;
        async move {
            let got: BTreeSet<AclBinding> = admin
                .describe_acls(filter)
                .await
                .ok()?
                .into_iter()
                .collect();
            let done = &got == want;
            *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(got);
            done.then_some(())
        }
    })
    .await;
    found.with_context(|| format!("last described: {:#?}", last.lock().ok()))
}

async fn acls(admin: &AdminClient, cluster: &KafkaCluster) -> anyhow::Result<()> {
    use AclOperation as Op;
    use AclPatternType as Pat;
    use AclPermission as Perm;
    use AclResourceType as Res;

    let alice = "User:alice";
    let alices = BTreeSet::from([
        AclBinding::new(
            alice,
            Perm::Allow,
            Op::Write,
            Res::Topic,
            "orders",
            Pat::Literal,
        ),
        AclBinding::new(
            alice,
            Perm::Allow,
            Op::Describe,
            Res::Topic,
            "orders",
            Pat::Literal,
        ),
        AclBinding::new(
            alice,
            Perm::Allow,
            Op::Read,
            Res::Topic,
            "logs-",
            Pat::Prefixed,
        ),
        AclBinding::new(
            alice,
            Perm::Deny,
            Op::Read,
            Res::Topic,
            "logs-secret",
            Pat::Literal,
        )
        .with_host("10.1.2.3"),
        AclBinding::new(
            alice,
            Perm::Allow,
            Op::Read,
            Res::Group,
            "app-",
            Pat::Prefixed,
        ),
        AclBinding::new(
            alice,
            Perm::Allow,
            Op::Write,
            Res::TransactionalId,
            "tx-",
            Pat::Prefixed,
        ),
        AclBinding::new(
            alice,
            Perm::Allow,
            Op::IdempotentWrite,
            Res::Cluster,
            CLUSTER_RESOURCE,
            Pat::Literal,
        ),
    ]);
    let bobs = BTreeSet::from([
        AclBinding::new(
            "User:bob",
            Perm::Allow,
            Op::Read,
            Res::Topic,
            "*",
            Pat::Literal,
        ),
        AclBinding::new(
            "User:bob",
            Perm::Deny,
            Op::Alter,
            Res::Topic,
            "orders",
            Pat::Literal,
        ),
    ]);
    let everything: BTreeSet<AclBinding> = alices.union(&bobs).cloned().collect();

    assert_eq!(admin.describe_acls(&AclFilter::any()).await?, []);
    let all: Vec<AclBinding> = everything.iter().cloned().collect();
    admin.create_acls(&all).await?;
    // Again: no error, and no second copy.
    admin.create_acls(&all).await?;
    admin.create_acls(&all[..2]).await?;
    for node in [1, 2, 3] {
        // Every broker's authorizer gets them from the metadata log.
        let one = admin_of_node(cluster, node)?;
        wait_for_acls(&one, &AclFilter::any(), &everything)
            .await
            .with_context(|| format!("node {node}"))?;
    }
    wait_for_acls(admin, &AclFilter::principal(alice), &alices).await?;

    // Kafka's filters select what AclFilter::matches says they select.
    let filters = [
        AclFilter::any().with_resource(Res::Topic, Some("logs-app"), AclPatternFilter::Match),
        AclFilter::any().with_resource(Res::Topic, Some("orders"), AclPatternFilter::Match),
        AclFilter::any().with_resource(Res::Topic, Some("orders"), AclPatternFilter::Any),
        AclFilter::any().with_resource(Res::Topic, None, Pat::Prefixed.into()),
        AclFilter::any().with_permission(Perm::Deny),
        AclFilter::any().with_operation(Op::Read).with_host("*"),
        AclFilter::principal(alice).with_resource(Res::Cluster, None, AclPatternFilter::Any),
        AclFilter::principal("User:nobody"),
    ];
    for filter in &filters {
        let got = admin.describe_acls(filter).await?;
        let want: Vec<AclBinding> = everything
            .iter()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect();
        assert_eq!(got, want, "filter {filter}");
    }
    let matched = admin
        .describe_acls(&AclFilter::any().with_resource(
            Res::Topic,
            Some("logs-app"),
            AclPatternFilter::Match,
        ))
        .await?;
    let shown: Vec<String> = matched.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "User:bob ALLOW READ on TOPIC:* (LITERAL) from *",
            "User:alice ALLOW READ on TOPIC:logs- (PREFIXED) from *",
        ],
        "what applies to topic logs-app, sorted by resource"
    );

    // Delete one ACL exactly, then everything else of alice's by principal.
    let deny = alices
        .iter()
        .find(|b| b.permission == Perm::Deny)
        .context("alice's DENY")?
        .clone();
    let deleted = admin.delete_acls(&[AclFilter::exact(&deny)]).await?;
    assert_eq!(deleted, std::slice::from_ref(&deny));
    let mut rest = alices.clone();
    rest.remove(&deny);
    wait_for_acls(admin, &AclFilter::principal(alice), &rest).await?;
    let deleted = admin
        .delete_acls(&[AclFilter::principal(alice), AclFilter::principal(alice)])
        .await?;
    assert_eq!(
        deleted,
        rest.iter().cloned().collect::<Vec<_>>(),
        "two filters selecting the same ACLs return each once"
    );
    wait_for_acls(admin, &AclFilter::principal(alice), &BTreeSet::new()).await?;
    wait_for_acls(admin, &AclFilter::any(), &bobs).await?;
    assert_eq!(
        admin.delete_acls(&[AclFilter::principal(alice)]).await?,
        [],
        "nothing left to delete"
    );
    let deleted = admin.delete_acls(&[AclFilter::any()]).await?;
    assert_eq!(deleted, bobs.iter().cloned().collect::<Vec<_>>());
    wait_for_acls(admin, &AclFilter::any(), &BTreeSet::new()).await?;
    Ok(())
}

/// Waits until `admin` describes exactly `want` as `user`'s quotas.
async fn wait_for_quotas(
    admin: &AdminClient,
    user: &str,
    want: &BTreeMap<String, f64>,
) -> anyhow::Result<()> {
    let what = format!("the quotas of user {user} to be {want:?}");
    wait_for(&what, WAIT, EVERY, || async move {
        let got = admin.describe_client_quotas(user).await.ok()?;
        (&got == want).then_some(())
    })
    .await
}

async fn quotas(admin: &AdminClient, cluster: &KafkaCluster) -> anyhow::Result<()> {
    let user = "alice";
    assert!(admin.describe_client_quotas(user).await?.is_empty());
    let both = BTreeMap::from([
        (quota_keys::PRODUCER_BYTE_RATE.to_string(), 1_048_576.0),
        (quota_keys::REQUEST_PERCENTAGE.to_string(), 50.0),
    ]);
    admin.alter_client_quotas(user, &both, &[]).await?;
    for node in [1, 2, 3] {
        let one = admin_of_node(cluster, node)?;
        wait_for_quotas(&one, user, &both)
            .await
            .with_context(|| format!("node {node}"))?;
    }
    // Another user's quotas are not alice's, and hers are not bob's.
    let bobs = BTreeMap::from([(quota_keys::CONSUMER_BYTE_RATE.to_string(), 2048.0)]);
    admin.alter_client_quotas("bob", &bobs, &[]).await?;
    wait_for_quotas(admin, "bob", &bobs).await?;
    assert_eq!(admin.describe_client_quotas(user).await?, both);

    // Remove one, change the other in the same request.
    let changed = BTreeMap::from([(quota_keys::PRODUCER_BYTE_RATE.to_string(), 2_097_152.0)]);
    admin
        .alter_client_quotas(
            user,
            &changed,
            &[quota_keys::REQUEST_PERCENTAGE.to_string()],
        )
        .await?;
    wait_for_quotas(admin, user, &changed).await?;

    // Kafka refuses keys it does not know, with its reason.
    let bogus = BTreeMap::from([("bogus_rate".to_string(), 1.0)]);
    let err = admin
        .alter_client_quotas(user, &bogus, &[])
        .await
        .expect_err("an unknown quota key");
    assert_eq!(err.code(), Some(codes::INVALID_REQUEST), "{err}");
    assert!(err.to_string().contains("user alice"), "{err}");

    // Removing every key leaves none (and removing a key that is not set is no error).
    let all: Vec<String> = quota_keys::ALL.iter().map(|k| k.to_string()).collect();
    admin
        .alter_client_quotas(user, &BTreeMap::new(), &all)
        .await?;
    wait_for_quotas(admin, user, &BTreeMap::new()).await?;
    assert_eq!(admin.describe_client_quotas("bob").await?, bobs);
    Ok(())
}

/// Waits until Metadata shows `topic` with `count` partitions, each with a leader, and
/// returns each partition's replicas.
async fn wait_for_partitions(
    admin: &AdminClient,
    topic: &str,
    count: usize,
) -> anyhow::Result<Vec<Vec<i32>>> {
    let what = format!("topic {topic} with {count} partitions, each led");
    wait_for(&what, WAIT, EVERY, || async move {
        let md = admin.metadata(Some(&[topic])).await.ok()?;
        let t = md.topic(topic)?;
        (t.partitions.len() == count && t.partitions.iter().all(|p| p.leader >= 0))
            .then(|| t.partitions.iter().map(|p| p.replicas.clone()).collect())
    })
    .await
}

async fn partitions(admin: &AdminClient) -> anyhow::Result<()> {
    let topic = "grow";
    admin.create_topic(&NewTopic::new(topic, 2, 2)).await?;
    wait_for_partitions(admin, topic, 2).await?;

    let out = admin
        .create_partitions(&[PartitionIncrease::new(topic, 5)])
        .await?;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].name, topic);
    out[0].result.clone()?;
    wait_for_partitions(admin, topic, 5).await?;

    // The new partition placed as asked, preferred leader first.
    let out = admin
        .create_partitions(&[PartitionIncrease::new(topic, 6).with_assignments(vec![vec![3, 1]])])
        .await?;
    out[0].result.clone()?;
    let replicas = wait_for_partitions(admin, topic, 6).await?;
    assert_eq!(replicas[5], [3, 1], "{replicas:?}");

    // Shrinking, staying and unknown topics fail per topic, with Kafka's reason.
    let out = admin
        .create_partitions(&[
            PartitionIncrease::new(topic, 3),
            PartitionIncrease::new("no-such-topic", 4),
        ])
        .await?;
    let names: Vec<&str> = out.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, [topic, "no-such-topic"]);
    let shrink = out[0].result.as_ref().expect_err("shrinking");
    assert_eq!(shrink.code(), Some(codes::INVALID_PARTITIONS), "{shrink}");
    let text = shrink.to_string();
    for part in ["CreatePartitions", "InvalidPartitions", "topic grow", "6"] {
        assert!(text.contains(part), "{text}");
    }
    let unknown = out[1].result.as_ref().expect_err("an unknown topic");
    assert_eq!(
        unknown.code(),
        Some(codes::UNKNOWN_TOPIC_OR_PARTITION),
        "{unknown}"
    );
    let out = admin
        .create_partitions(&[PartitionIncrease::new(topic, 6)])
        .await?;
    let same = out[0].result.as_ref().expect_err("as many as it has");
    assert_eq!(same.code(), Some(codes::INVALID_PARTITIONS), "{same}");
    // A wrong number of assignments for the partitions added.
    let out = admin
        .create_partitions(&[PartitionIncrease::new(topic, 8).with_assignments(vec![vec![1, 2]])])
        .await?;
    let err = out[0]
        .result
        .as_ref()
        .expect_err("one assignment for two partitions");
    assert_eq!(err.code(), Some(codes::INVALID_REPLICA_ASSIGNMENT), "{err}");
    wait_for_partitions(admin, topic, 6).await?;
    Ok(())
}

#[tokio::test]
async fn a_cluster_without_an_authorizer_says_so() -> anyhow::Result<()> {
    let logs = LogDir::for_current_test("kafka-no-authorizer")?;
    let cluster = KafkaCluster::start(&logs, 1).await?;
    let admin = admin_for(&cluster);

    let err = admin
        .describe_acls(&AclFilter::any())
        .await
        .expect_err("no authorizer");
    assert!(err.is_security_disabled(), "{err}");
    assert!(!err.is_retriable(), "{err}");
    assert!(err.to_string().contains("no authorizer"), "{err}");

    let binding = AclBinding::new(
        "User:alice",
        AclPermission::Allow,
        AclOperation::Read,
        AclResourceType::Topic,
        "orders",
        AclPatternType::Literal,
    );
    let err = admin
        .create_acls(std::slice::from_ref(&binding))
        .await
        .expect_err("no authorizer");
    assert!(err.is_security_disabled(), "{err}");
    assert!(err.to_string().contains(&binding.to_string()), "{err}");

    let err = admin
        .delete_acls(&[AclFilter::principal("User:alice")])
        .await
        .expect_err("no authorizer");
    assert!(err.is_security_disabled(), "{err}");
    assert!(err.to_string().contains("filter User:alice"), "{err}");

    // Quotas need no authorizer.
    let quota = BTreeMap::from([(quota_keys::PRODUCER_BYTE_RATE.to_string(), 1024.0)]);
    admin.alter_client_quotas("alice", &quota, &[]).await?;
    wait_for_quotas(&admin, "alice", &quota).await?;
    Ok(())
}
