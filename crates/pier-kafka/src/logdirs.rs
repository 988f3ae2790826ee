//! A broker's log directories (JBOD): what it reports (DescribeLogDirs: where each replica
//! lives and how big it is), moving replicas between its directories (AlterReplicaLogDirs), and
//! the pure planning of emptying some directories before the broker is rolled without them.
use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::alter_replica_log_dirs_request::{
    AlterReplicaLogDir, AlterReplicaLogDirTopic,
};
use kafka_protocol::messages::{AlterReplicaLogDirsRequest, DescribeLogDirsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{BrokerConnection, KafkaError, METADATA_TOPIC};

/// One replica in one log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirReplica {
    pub topic: String,
    pub partition: i32,
    /// Bytes on disk.
    pub size: i64,
    /// How far it is behind its leader's log end (a future replica: behind the current one).
    pub offset_lag: i64,
    /// A copy being filled by a move between directories of this broker.
    pub future: bool,
}

/// One log directory of a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDir {
    pub path: String,
    /// The directory's Kafka error code, 0 when it is online (e.g. 56 KAFKA_STORAGE_ERROR for
    /// an offline dir).
    pub error_code: i16,
    pub replicas: Vec<LogDirReplica>,
    /// Capacity and free space (-1 when the broker does not report them).
    pub total_bytes: i64,
    pub usable_bytes: i64,
}

/// One replica to put into another directory of the same broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirMove {
    pub topic: String,
    pub partition: i32,
    /// Absolute path of the destination directory.
    pub dest: String,
    /// Bytes still to copy (0 when the move only cancels a copy into a leaving directory).
    pub bytes: i64,
}

/// What emptying some log directories of a broker takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogDirPlan {
    /// Sorted by topic and partition.
    pub moves: Vec<LogDirMove>,
    /// Bytes to copy in all.
    pub bytes: i64,
}

impl LogDirPlan {
    /// The moves as [`BrokerConnection::alter_replica_log_dirs`] takes them:
    /// `(destination dir, topic, partition)`.
    pub fn requests(&self) -> Vec<(String, String, i32)> {
        self.moves
            .iter()
            .map(|m| (m.dest.clone(), m.topic.clone(), m.partition))
            .collect()
    }
}

/// Where one partition's replica and the copy being filled of it are on one broker:
/// (dir, bytes).
#[derive(Default)]
struct Placement<'a> {
    current: Option<(&'a str, i64)>,
    future: Option<(&'a str, i64)>,
}

/// Moves every replica out of the `leaving` directories of one broker (`dirs`, as
/// [`BrokerConnection::describe_log_dirs`] reports them) into its other online directories.
///
/// A replica goes to the remaining online directory with the most room (usable bytes minus
/// what this plan already sends there; largest replicas first, so several spread), unless a
/// copy of it into a remaining directory is already running (kept, not restarted). A copy
/// running *into* a leaving directory is cancelled by moving the partition to the directory
/// its replica is in. Fails when a leaving directory is not one of the broker's, when replicas
/// must move but no online directory remains, when a leaving directory is offline (nothing
/// can be moved off it), when a replica does not fit in the room the broker reports, or for
/// the KRaft metadata log (never moved this way: `metadata.log.dir`).
pub fn plan_log_dir_moves(dirs: &[LogDir], leaving: &[String]) -> Result<LogDirPlan, String> {
    let leaving: BTreeSet<&str> = leaving.iter().map(String::as_str).collect();
    if let Some(unknown) = leaving.iter().find(|l| !dirs.iter().any(|d| d.path == **l)) {
        let known: Vec<&str> = dirs.iter().map(|d| d.path.as_str()).collect();
        return Err(format!(
            "log dir {unknown} is not one of the broker's ({})",
            known.join(", ")
        ));
    }
    // An offline directory lists nothing, so nothing could be shown to have left it.
    if let Some(d) = dirs
        .iter()
        .find(|d| d.error_code != 0 && leaving.contains(d.path.as_str()))
    {
        return Err(format!(
            "log dir {} is offline (error code {}): its replicas cannot be moved off it",
            d.path, d.error_code
        ));
    }
    let mut placements: BTreeMap<(&str, i32), Placement> = BTreeMap::new();
    for d in dirs {
        for r in &d.replicas {
            let p = placements.entry((&r.topic, r.partition)).or_default();
            let at = Some((d.path.as_str(), r.size));
            if r.future {
                p.future = at;
            } else {
                p.current = at;
            }
        }
    }
    // Room left in each remaining online directory as the plan fills it.
    let mut room: BTreeMap<&str, i64> = dirs
        .iter()
        .filter(|d| d.error_code == 0 && !leaving.contains(d.path.as_str()))
        .map(|d| (d.path.as_str(), d.usable_bytes))
        .collect();
    let reports_room: BTreeMap<&str, bool> = dirs
        .iter()
        .map(|d| (d.path.as_str(), d.usable_bytes >= 0))
        .collect();
    let mut moves = Vec::new();
    // (bytes, topic, partition) of the replicas that need a new directory.
    let mut homeless: Vec<(i64, &str, i32)> = Vec::new();
    for ((topic, partition), p) in &placements {
        let in_leaving = |at: Option<(&str, i64)>| at.is_some_and(|(dir, _)| leaving.contains(dir));
        if !in_leaving(p.current) && !in_leaving(p.future) {
            continue;
        }
        if *topic == METADATA_TOPIC {
            return Err(format!(
                "{topic}-{partition} is in a leaving log dir: the metadata log is not moved \
                 between log dirs; set metadata.log.dir to a directory that stays"
            ));
        }
        let size = p.current.or(p.future).map_or(0, |(_, size)| size);
        match (p.current, p.future) {
            // Moving already, into a directory that stays: let that copy finish.
            (Some((cur, _)), Some((fut, copied)))
                if leaving.contains(cur) && room.contains_key(fut) =>
            {
                let rest = (size - copied).max(0);
                if let Some(r) = room.get_mut(fut) {
                    *r -= rest;
                }
                moves.push(LogDirMove {
                    topic: topic.to_string(),
                    partition: *partition,
                    dest: fut.to_string(),
                    bytes: rest,
                });
            }
            // Copying into a leaving directory from one that stays: cancel the copy.
            (Some((cur, _)), _) if !leaving.contains(cur) => moves.push(LogDirMove {
                topic: topic.to_string(),
                partition: *partition,
                dest: cur.to_string(),
                bytes: 0,
            }),
            _ => homeless.push((size, topic, *partition)),
        }
    }
    if !homeless.is_empty() && room.is_empty() {
        let leaving: Vec<&str> = leaving.into_iter().collect();
        return Err(format!(
            "no online log dir remains for the {} replicas in {}",
            homeless.len(),
            leaving.join(", ")
        ));
    }
    homeless.sort_by(|a, b| b.0.cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    for (size, topic, partition) in homeless {
        // The most room; the first path on a tie.
        let (dest, left) = room
            .iter_mut()
            .max_by(|a, b| (*a.1).cmp(&*b.1).then(b.0.cmp(a.0)))
            .ok_or_else(|| "no online log dir remains".to_string())?;
        if reports_room.get(dest).copied().unwrap_or(false) && *left < size {
            return Err(format!(
                "{topic}-{partition} ({size} bytes) does not fit: the most room left is \
                 {left} bytes in {dest}"
            ));
        }
        *left -= size;
        moves.push(LogDirMove {
            topic: topic.to_string(),
            partition,
            dest: dest.to_string(),
            bytes: size,
        });
    }
    moves.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let bytes = moves.iter().map(|m| m.bytes).sum();
    Ok(LogDirPlan { moves, bytes })
}

/// Whether the `leaving` directories hold nothing any more: no replica and no copy being
/// filled. A directory the broker no longer reports holds nothing; an offline one (non-zero
/// error code) lists nothing but cannot be shown empty, so it is not.
pub fn dirs_empty(dirs: &[LogDir], leaving: &[String]) -> bool {
    dirs.iter()
        .filter(|d| leaving.contains(&d.path))
        .all(|d| d.error_code == 0 && d.replicas.is_empty())
}

impl BrokerConnection {
    /// Moves replicas of this broker into other log directories of it:
    /// `(destination dir, absolute; topic; partition)`. The broker copies each into a
    /// `-future` replica in the destination and swaps it in when caught up; asking again for
    /// the same destination does not restart a running copy, another destination abandons it.
    /// Must be sent to the broker that holds the replicas. One outcome per partition, sorted
    /// (e.g. LOG_DIR_NOT_FOUND, KAFKA_STORAGE_ERROR for an offline destination,
    /// REPLICA_NOT_AVAILABLE for a replica the broker does not hold yet).
    pub async fn alter_replica_log_dirs(
        &mut self,
        moves: &[(String, String, i32)],
    ) -> Result<Vec<(String, i32, Result<(), KafkaError>)>, KafkaError> {
        let api = "AlterReplicaLogDirs";
        // (topic, partition) → destination, and destination → topic → partitions.
        let mut asked: BTreeMap<(String, i32), &str> = BTreeMap::new();
        let mut by_dir: BTreeMap<&str, BTreeMap<&str, Vec<i32>>> = BTreeMap::new();
        for (dir, topic, partition) in moves {
            if asked.insert((topic.clone(), *partition), dir).is_some() {
                return Err(KafkaError::Encode {
                    api: api.to_string(),
                    message: format!("{topic}-{partition} is asked to move more than once"),
                });
            }
            by_dir
                .entry(dir)
                .or_default()
                .entry(topic)
                .or_default()
                .push(*partition);
        }
        if moves.is_empty() {
            return Ok(Vec::new());
        }
        let request = AlterReplicaLogDirsRequest::default().with_dirs(
            by_dir
                .into_iter()
                .map(|(dir, topics)| {
                    AlterReplicaLogDir::default()
                        .with_path(StrBytes::from_string(dir.to_string()))
                        .with_topics(
                            topics
                                .into_iter()
                                .map(|(topic, mut partitions)| {
                                    partitions.sort_unstable();
                                    AlterReplicaLogDirTopic::default()
                                        .with_name(TopicName(StrBytes::from_string(
                                            topic.to_string(),
                                        )))
                                        .with_partitions(partitions)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
        let response = self.send(&request).await?;
        let mut out = Vec::new();
        for t in response.results {
            let topic = t.topic_name.0.to_string();
            for p in t.partitions {
                // An answer for something not asked is ignored.
                let Some(dir) = asked.remove(&(topic.clone(), p.partition_index)) else {
                    continue;
                };
                let result = match p.error_code {
                    0 => Ok(()),
                    code => Err(KafkaError::broker(
                        self.addr(),
                        api,
                        code,
                        Some(format!("{topic}-{} to {dir}", p.partition_index)),
                    )),
                };
                out.push((topic.clone(), p.partition_index, result));
            }
        }
        for ((topic, partition), dir) in asked {
            let message = format!("no answer for {topic}-{partition} to {dir}");
            let missing = KafkaError::malformed(self.addr(), api, message);
            out.push((topic, partition, Err(missing)));
        }
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Ok(out)
    }

    /// Every log directory of the broker this connection is to, with every replica in it.
    pub async fn describe_log_dirs(&mut self) -> Result<Vec<LogDir>, KafkaError> {
        let api = "DescribeLogDirs";
        // `topics: None` asks for every replica.
        let request = DescribeLogDirsRequest::default().with_topics(None);
        let response = self.send(&request).await?;
        KafkaError::check(self.addr(), api, response.error_code, None)?;
        let mut dirs: Vec<LogDir> = response
            .results
            .into_iter()
            .map(|r| {
                let mut replicas: Vec<LogDirReplica> = r
                    .topics
                    .into_iter()
                    .flat_map(|t| {
                        let topic = t.name.0.to_string();
                        t.partitions.into_iter().map(move |p| LogDirReplica {
                            topic: topic.clone(),
                            partition: p.partition_index,
                            size: p.partition_size,
                            offset_lag: p.offset_lag,
                            future: p.is_future_key,
                        })
                    })
                    .collect();
                replicas.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
                LogDir {
                    path: r.log_dir.to_string(),
                    error_code: r.error_code,
                    replicas,
                    total_bytes: r.total_bytes,
                    usable_bytes: r.usable_bytes,
                }
            })
            .collect();
        dirs.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(dirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::testing::fake_broker;
    use crate::error::codes;
    use kafka_protocol::messages::alter_replica_log_dirs_response::{
        AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
    };
    use kafka_protocol::messages::{AlterReplicaLogDirsResponse, ApiKey};
    use proptest::prelude::*;

    use crate::ConnectOptions;

    fn replica(topic: &str, partition: i32, size: i64, future: bool) -> LogDirReplica {
        LogDirReplica {
            topic: topic.into(),
            partition,
            size,
            offset_lag: 0,
            future,
        }
    }

    /// An online dir with `usable` bytes free holding these (topic, partition, size) replicas.
    fn dir(path: &str, usable: i64, replicas: &[(&str, i32, i64)]) -> LogDir {
        LogDir {
            path: path.into(),
            error_code: 0,
            replicas: replicas
                .iter()
                .map(|(t, p, s)| replica(t, *p, *s, false))
                .collect(),
            total_bytes: usable.max(0) * 2,
            usable_bytes: usable,
        }
    }

    fn with_future(mut d: LogDir, topic: &str, partition: i32, size: i64) -> LogDir {
        d.replicas.push(replica(topic, partition, size, true));
        d
    }

    fn offline(path: &str) -> LogDir {
        LogDir {
            error_code: codes::KAFKA_STORAGE_ERROR,
            ..dir(path, -1, &[])
        }
    }

    fn leaving(paths: &[&str]) -> Vec<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    /// (topic, partition, dest, bytes) of each move.
    fn moves(plan: &LogDirPlan) -> Vec<(&str, i32, &str, i64)> {
        plan.moves
            .iter()
            .map(|m| (m.topic.as_str(), m.partition, m.dest.as_str(), m.bytes))
            .collect()
    }

    const GB: i64 = 1 << 30;

    #[test]
    fn nothing_leaving_is_an_empty_plan() {
        let dirs = [dir("/a", GB, &[("t", 0, 10)]), dir("/b", GB, &[])];
        assert_eq!(
            plan_log_dir_moves(&dirs, &[]).unwrap(),
            LogDirPlan::default()
        );
    }

    #[test]
    fn an_empty_leaving_dir_needs_no_moves_even_with_no_dir_left() {
        let dirs = [dir("/a", GB, &[])];
        assert_eq!(
            plan_log_dir_moves(&dirs, &leaving(&["/a"])).unwrap(),
            LogDirPlan::default()
        );
    }

    #[test]
    fn every_replica_of_a_leaving_dir_moves_to_the_dir_that_stays() {
        let dirs = [
            dir("/a", GB, &[("t", 0, 10), ("t", 2, 30), ("u", 0, 5)]),
            dir("/b", GB, &[("t", 1, 20)]),
        ];
        let plan = plan_log_dir_moves(&dirs, &leaving(&["/a"])).unwrap();
        assert_eq!(
            moves(&plan),
            [("t", 0, "/b", 10), ("t", 2, "/b", 30), ("u", 0, "/b", 5)]
        );
        assert_eq!(plan.bytes, 45);
        assert_eq!(
            plan.requests(),
            [
                ("/b".to_string(), "t".to_string(), 0),
                ("/b".to_string(), "t".to_string(), 2),
                ("/b".to_string(), "u".to_string(), 0),
            ]
        );
    }

    #[test]
    fn the_dir_with_the_most_usable_bytes_is_chosen() {
        let dirs = [
            dir("/a", GB, &[("t", 0, 10)]),
            dir("/b", 2 * GB, &[]),
            dir("/c", 5 * GB, &[]),
        ];
        let plan = plan_log_dir_moves(&dirs, &leaving(&["/a"])).unwrap();
        assert_eq!(moves(&plan), [("t", 0, "/c", 10)]);
    }

    #[test]
    fn replicas_spread_by_the_bytes_already_assigned() {
        // Equal room: the four equal replicas split two and two (ties go to the first path).
        let dirs = [
            dir(
                "/a",
                GB,
                &[("t", 0, 100), ("t", 1, 100), ("t", 2, 100), ("t", 3, 100)],
            ),
            dir("/b", 1000, &[]),
            dir("/c", 1000, &[]),
        ];
        let plan = plan_log_dir_moves(&dirs, &leaving(&["/a"])).unwrap();
        assert_eq!(
            moves(&plan),
            [
                ("t", 0, "/b", 100),
                ("t", 1, "/c", 100),
                ("t", 2, "/b", 100),
                ("t", 3, "/c", 100)
            ]
        );
        // Largest first: the big one takes /b, the small ones fill /c until it has less room.
        let dirs = [
            dir(
                "/a",
                GB,
                &[("t", 0, 10), ("t", 1, 10), ("t", 2, 10), ("t", 3, 60)],
            ),
            dir("/b", 1000, &[]),
            dir("/c", 990, &[]),
        ];
        let plan = plan_log_dir_moves(&dirs, &leaving(&["/a"])).unwrap();
        assert_eq!(
            moves(&plan),
            [
                ("t", 0, "/c", 10),
                ("t", 1, "/c", 10),
                ("t", 2, "/c", 10),
                ("t", 3, "/b", 60)
            ]
        );
        assert_eq!(plan.bytes, 90);
    }

    #[test]
    fn never_to_a_leaving_or_offline_dir() {
        let dirs = [
            dir("/a", GB, &[("t", 0, 10)]),
            dir("/b", 9 * GB, &[("t", 1, 10)]),
            dir("/c", GB, &[]),
            offline("/d"),
        ];
        let plan = plan_log_dir_moves(&dirs, &leaving(&["/a", "/b"])).unwrap();
        assert_eq!(moves(&plan), [("t", 0, "/c", 10), ("t", 1, "/c", 10)]);
    }

    #[test]
    fn no_online_dir_left_is_an_error() {
        let dirs = [
            dir("/a", GB, &[("t", 0, 10)]),
            dir("/b", GB, &[("t", 1, 10)]),
            offline("/c"),
        ];
        let err = plan_log_dir_moves(&dirs, &leaving(&["/a", "/b"])).unwrap_err();
        assert!(err.contains("no online log dir"), "{err}");
        assert!(
            err.contains("2 replicas") && err.contains("/a, /b"),
            "{err}"
        );
    }

    #[test]
    fn an_offline_leaving_dir_is_an_error() {
        let dirs = [dir("/a", GB, &[]), offline("/b")];
        let err = plan_log_dir_moves(&dirs, &leaving(&["/b"])).unwrap_err();
        assert!(err.contains("/b is offline"), "{err}");
    }

    #[test]
    fn an_unknown_leaving_dir_is_an_error() {
        let dirs = [dir("/a", GB, &[]), dir("/b", GB, &[])];
        let err = plan_log_dir_moves(&dirs, &leaving(&["/x"])).unwrap_err();
        assert!(err.contains("/x") && err.contains("/a, /b"), "{err}");
    }

    #[test]
    fn a_replica_that_does_not_fit_is_an_error() {
        let dirs = [
            dir("/a", GB, &[("t", 0, 600), ("t", 1, 600)]),
            dir("/b", 1000, &[]),
        ];
        let err = plan_log_dir_moves(&dirs, &leaving(&["/a"])).unwrap_err();
        assert!(
            err.contains("t-1") && err.contains("400 bytes in /b"),
            "{err}"
        );
    }

    #[test]
    fn without_reported_room_replicas_balance_by_assigned_bytes_alone() {
        let dirs = [
            dir("/a", -1, &[("t", 0, 600), ("t", 1, 500), ("t", 2, 200)]),
            dir("/b", -1, &[]),
            dir("/c", -1, &[]),
        ];
        let plan = plan_log_dir_moves(&dirs, &leaving(&["/a"])).unwrap();
        assert_eq!(
            moves(&plan),
            [
                ("t", 0, "/b", 600),
                ("t", 1, "/c", 500),
                ("t", 2, "/c", 200)
            ]
        );
    }

    #[test]
    fn a_copy_already_running_into_a_staying_dir_is_kept() {
        // t-0 is being copied into /c (40 of 100 bytes done); /b has more room but the copy
        // goes on, and only what is left counts.
        let dirs = [
            dir("/a", GB, &[("t", 0, 100)]),
            dir("/b", 9 * GB, &[]),
            with_future(dir("/c", GB, &[]), "t", 0, 40),
        ];
        let plan = plan_log_dir_moves(&dirs, &leaving(&["/a"])).unwrap();
        assert_eq!(moves(&plan), [("t", 0, "/c", 60)]);
        assert_eq!(plan.bytes, 60);
    }

    #[test]
    fn a_copy_running_into_a_leaving_dir_is_cancelled() {
        let dirs = [
            with_future(dir("/a", GB, &[]), "t", 0, 40),
            dir("/b", GB, &[("t", 0, 100)]),
        ];
        let plan = plan_log_dir_moves(&dirs, &leaving(&["/a"])).unwrap();
        assert_eq!(moves(&plan), [("t", 0, "/b", 0)], "back to where it is");
        assert_eq!(plan.bytes, 0);
    }

    #[test]
    fn a_copy_between_two_leaving_dirs_is_redirected() {
        let dirs = [
            dir("/a", GB, &[("t", 0, 100)]),
            with_future(dir("/b", GB, &[]), "t", 0, 40),
            dir("/c", GB, &[]),
        ];
        let plan = plan_log_dir_moves(&dirs, &leaving(&["/a", "/b"])).unwrap();
        assert_eq!(moves(&plan), [("t", 0, "/c", 100)]);
    }

    #[test]
    fn a_copy_without_a_listed_replica_moves_too() {
        // Its replica is in an offline dir, which lists nothing.
        let dirs = [
            with_future(dir("/a", GB, &[]), "t", 0, 40),
            dir("/b", GB, &[]),
            offline("/c"),
        ];
        let plan = plan_log_dir_moves(&dirs, &leaving(&["/a"])).unwrap();
        assert_eq!(moves(&plan), [("t", 0, "/b", 40)]);
    }

    #[test]
    fn replicas_of_staying_dirs_are_left_alone() {
        let dirs = [
            dir("/a", GB, &[("t", 0, 10)]),
            with_future(dir("/b", GB, &[("t", 1, 10)]), "t", 2, 5),
            dir("/c", GB, &[("t", 2, 10)]),
        ];
        let plan = plan_log_dir_moves(&dirs, &leaving(&["/a"])).unwrap();
        assert_eq!(moves(&plan).len(), 1);
        assert_eq!(plan.moves[0].partition, 0);
    }

    #[test]
    fn the_metadata_log_is_never_moved() {
        let dirs = [
            dir("/a", GB, &[(METADATA_TOPIC, 0, 10)]),
            dir("/b", GB, &[]),
        ];
        let err = plan_log_dir_moves(&dirs, &leaving(&["/a"])).unwrap_err();
        assert!(err.contains("metadata.log.dir"), "{err}");
        // In a dir that stays it does not matter.
        assert!(plan_log_dir_moves(&dirs, &leaving(&["/b"])).is_ok());
    }

    #[test]
    fn dirs_are_empty_without_replicas_or_copies() {
        let l = leaving(&["/a"]);
        assert!(dirs_empty(
            &[dir("/a", GB, &[]), dir("/b", GB, &[("t", 0, 1)])],
            &l
        ));
        assert!(!dirs_empty(&[dir("/a", GB, &[("t", 0, 1)])], &l));
        assert!(
            !dirs_empty(&[with_future(dir("/a", GB, &[]), "t", 0, 1)], &l),
            "a copy being filled"
        );
        assert!(
            dirs_empty(&[dir("/b", GB, &[])], &l),
            "not reported any more"
        );
        assert!(
            !dirs_empty(&[offline("/a"), dir("/b", GB, &[])], &l),
            "offline cannot be shown empty"
        );
        assert!(dirs_empty(&[dir("/a", GB, &[("t", 0, 1)])], &[]));
        let both = leaving(&["/a", "/b"]);
        assert!(!dirs_empty(
            &[dir("/a", GB, &[]), dir("/b", GB, &[("t", 0, 1)])],
            &both
        ));
    }

    /// A broker's dirs: up to 4, some offline; replicas of 3 topics × 6 partitions, each in
    /// one online dir, some with a copy into another.
    fn arb_dirs() -> impl Strategy<Value = Vec<LogDir>> {
        let dir_count = 1..5usize;
        dir_count.prop_flat_map(|n| {
            (
                proptest::collection::vec((any::<bool>(), -1..10_000i64), n),
                proptest::collection::vec((0..n, proptest::option::of(0..n), 0..1000i64), 0..18),
            )
                .prop_map(move |(flags, placed)| {
                    let mut dirs: Vec<LogDir> = flags
                        .iter()
                        .enumerate()
                        .map(|(i, (up, usable))| {
                            let path = format!("/d{i}");
                            if *up || i == 0 {
                                dir(&path, *usable, &[])
                            } else {
                                offline(&path)
                            }
                        })
                        .collect();
                    for (k, (at, copy, size)) in placed.into_iter().enumerate() {
                        let (topic, partition) = (format!("t{}", k % 3), (k / 3) as i32);
                        if dirs[at].error_code != 0 {
                            continue;
                        }
                        dirs[at]
                            .replicas
                            .push(replica(&topic, partition, size, false));
                        if let Some(c) = copy.filter(|c| *c != at && dirs[*c].error_code == 0) {
                            dirs[c]
                                .replicas
                                .push(replica(&topic, partition, size / 2, true));
                        }
                    }
                    dirs
                })
        })
    }

    proptest! {
        #[test]
        fn a_plan_empties_the_leaving_dirs(
            dirs in arb_dirs(),
            leave in proptest::collection::vec(any::<bool>(), 4),
        ) {
            let leaving: Vec<String> = dirs
                .iter()
                .zip(&leave)
                .filter(|(_, l)| **l)
                .map(|(d, _)| d.path.clone())
                .collect();
            let Ok(plan) = plan_log_dir_moves(&dirs, &leaving) else {
                return Ok(());
            };
            // Apply the plan as the broker would once the copies are done.
            let mut after = dirs.clone();
            for d in &mut after {
                d.replicas.retain(|r| !r.future);
            }
            for m in &plan.moves {
                let dest = dirs.iter().find(|d| d.path == m.dest).unwrap();
                prop_assert!(!leaving.contains(&m.dest), "into a leaving dir: {m:?}");
                prop_assert_eq!(dest.error_code, 0, "into an offline dir: {:?}", m);
                let mut moved = None;
                for d in &mut after {
                    if let Some(i) = d
                        .replicas
                        .iter()
                        .position(|r| r.topic == m.topic && r.partition == m.partition)
                    {
                        moved = Some(d.replicas.remove(i));
                    }
                }
                let moved = moved.unwrap_or_else(|| replica(&m.topic, m.partition, 0, false));
                after.iter_mut().find(|d| d.path == m.dest).unwrap().replicas.push(moved);
            }
            prop_assert!(dirs_empty(&after, &leaving), "{:?}", after);
            let mut seen = BTreeSet::new();
            for m in &plan.moves {
                prop_assert!(seen.insert((&m.topic, m.partition)), "twice: {:?}", m);
            }
            prop_assert_eq!(plan.bytes, plan.moves.iter().map(|m| m.bytes).sum::<i64>());
        }

        #[test]
        fn with_room_to_spare_a_plan_fails_only_without_a_dir_to_go_to_or_from(
            dirs in arb_dirs(),
            leave in proptest::collection::vec(any::<bool>(), 4),
        ) {
            let mut dirs = dirs;
            for d in &mut dirs {
                d.usable_bytes = GB;
            }
            let leaving: Vec<String> = dirs
                .iter()
                .zip(&leave)
                .filter(|(_, l)| **l)
                .map(|(d, _)| d.path.clone())
                .collect();
            let stays = dirs
                .iter()
                .any(|d| d.error_code == 0 && !leaving.contains(&d.path));
            let something_to_move = dirs
                .iter()
                .any(|d| leaving.contains(&d.path) && !d.replicas.is_empty());
            let offline_leaving = dirs
                .iter()
                .any(|d| d.error_code != 0 && leaving.contains(&d.path));
            let plan = plan_log_dir_moves(&dirs, &leaving);
            prop_assert_eq!(
                plan.is_ok(),
                !offline_leaving && (stays || !something_to_move),
                "{:?}",
                plan
            );
        }
    }

    #[tokio::test]
    async fn alter_replica_log_dirs_groups_by_dir_and_reports_each_partition() {
        let broker = fake_broker(&[(ApiKey::AlterReplicaLogDirs, 2)], |req| {
            let request: AlterReplicaLogDirsRequest = req.decode();
            let asked: Vec<(String, String, Vec<i32>)> = request
                .dirs
                .iter()
                .flat_map(|d| {
                    d.topics.iter().map(|t| {
                        (
                            d.path.to_string(),
                            t.name.0.to_string(),
                            t.partitions.clone(),
                        )
                    })
                })
                .collect();
            assert_eq!(
                asked,
                [
                    ("/b".to_string(), "t".to_string(), vec![0, 2]),
                    ("/b".to_string(), "u".to_string(), vec![0]),
                    ("/nowhere".to_string(), "t".to_string(), vec![1]),
                ]
            );
            let part = |p, code| {
                AlterReplicaLogDirPartitionResult::default()
                    .with_partition_index(p)
                    .with_error_code(code)
            };
            // u-0 is not answered; v-9 was never asked.
            req.respond(&AlterReplicaLogDirsResponse::default().with_results(vec![
                AlterReplicaLogDirTopicResult::default()
                    .with_topic_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![
                        part(2, 0),
                        part(1, codes::LOG_DIR_NOT_FOUND),
                        part(0, 0),
                    ]),
                AlterReplicaLogDirTopicResult::default()
                    .with_topic_name(TopicName(StrBytes::from_static_str("v")))
                    .with_partitions(vec![part(9, 0)]),
            ]))
        })
        .await;
        let mut conn = BrokerConnection::connect(&broker.addr, ConnectOptions::default())
            .await
            .unwrap();
        let moves = [
            ("/b".to_string(), "t".to_string(), 2),
            ("/nowhere".to_string(), "t".to_string(), 1),
            ("/b".to_string(), "u".to_string(), 0),
            ("/b".to_string(), "t".to_string(), 0),
        ];
        let out = conn.alter_replica_log_dirs(&moves).await.unwrap();
        let summary: Vec<(&str, i32, Option<i16>, bool)> = out
            .iter()
            .map(|(t, p, r)| {
                let code = r.as_ref().err().and_then(KafkaError::code);
                (t.as_str(), *p, code, r.is_ok())
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("t", 0, None, true),
                ("t", 1, Some(codes::LOG_DIR_NOT_FOUND), false),
                ("t", 2, None, true),
                ("u", 0, None, false),
            ]
        );
        let text = out[1].2.as_ref().unwrap_err().to_string();
        assert!(text.contains("t-1 to /nowhere"), "{text}");
        let text = out[3].2.as_ref().unwrap_err().to_string();
        assert!(text.contains("no answer for u-0"), "{text}");

        let twice = [
            ("/b".to_string(), "t".to_string(), 0),
            ("/c".to_string(), "t".to_string(), 0),
        ];
        let err = conn.alter_replica_log_dirs(&twice).await.unwrap_err();
        assert!(err.to_string().contains("t-0"), "{err}");
        assert!(conn.alter_replica_log_dirs(&[]).await.unwrap().is_empty());
        assert_eq!(broker.requests(), 1, "nothing sent for bad or empty moves");
    }
}
