//! Edge cases of the balancer, each on a small hand-built cluster. Every plan also passes the
//! general checks in `support::check` (via `support::run`).
mod support;

use std::collections::{BTreeMap, BTreeSet};

use pier_balance::{BalanceError, Mode, Move, Note, PartitionInfo, Request};
use support::*;

fn moved_partitions(plan: &pier_balance::Plan) -> BTreeSet<i32> {
    plan.moves.iter().map(|m| m.partition).collect()
}

fn after_replicas(plan: &pier_balance::Plan, id: i32) -> usize {
    plan.brokers[&id].after.replicas
}

// === trivial inputs ===

#[test]
fn nothing_to_plan() {
    for mode in [Mode::DrainOnly, Mode::Full] {
        let plan = run(&[], &[], &[], mode).unwrap();
        assert!(plan.is_empty());
        assert!(plan.notes.is_empty(), "{:?}", plan.notes);
        let plan = run(&brokers(1..=3), &[], &[], mode).unwrap();
        assert!(plan.is_empty());
        assert_eq!(plan.brokers.len(), 3);
    }
}

#[test]
fn leaving_broker_without_replicas_needs_no_moves() {
    let parts = round_robin(&[1, 2, 3], 9, 3);
    let plan = run(&brokers(1..=4), &parts, &[4], Mode::DrainOnly).unwrap();
    assert!(plan.is_empty());
    assert!(plan.brokers[&4].leaving);
}

#[test]
fn partitions_without_replicas_are_left_alone() {
    let parts = vec![part("t", 0, &[]), part("t", 1, &[1])];
    let plan = run(&brokers(1..=2), &parts, &[1], Mode::Full).unwrap();
    assert_eq!(plan.moves.len(), 1);
    assert_eq!(plan.moves[0].to, [2]);
}

// === draining ===

#[test]
fn drain_one_broker_moves_only_its_replicas_and_spreads_them() {
    let parts = round_robin(&[1, 2, 3, 4, 5], 50, 3);
    let on_5: BTreeSet<i32> = parts
        .iter()
        .filter(|p| p.replicas.contains(&5))
        .map(|p| p.partition)
        .collect();
    let plan = run(&brokers(1..=5), &parts, &[5], Mode::DrainOnly).unwrap();
    assert_eq!(moved_partitions(&plan), on_5);
    assert_eq!(plan.replicas_moved, 30, "one copy per replica on broker 5");
    assert_eq!(after_replicas(&plan, 5), 0);
    for m in &plan.moves {
        // Only the leaving replica is replaced; the others stay.
        let kept: BTreeSet<i32> = m.from.iter().copied().filter(|b| *b != 5).collect();
        let now: BTreeSet<i32> = m.to.iter().copied().collect();
        assert!(kept.is_subset(&now), "{m:?}");
    }
    // 150 replicas over 4 brokers: 37 or 38 each.
    assert!(plan.replicas.is_balanced(), "{:?}", plan.replicas);
    assert!((37..=38).contains(&plan.replicas.min) && plan.replicas.max <= 38);
    assert!(plan.leaders.is_balanced(), "{:?}", plan.leaders);
}

#[test]
fn drain_several_brokers() {
    let ids: Vec<i32> = (1..=8).collect();
    let parts = round_robin(&ids, 80, 3);
    let plan = run(&brokers(1..=8), &parts, &[2, 5, 7], Mode::DrainOnly).unwrap();
    for id in [2, 5, 7] {
        assert_eq!(after_replicas(&plan, id), 0);
        assert_eq!(plan.brokers[&id].after.leaders, 0);
    }
    assert_eq!(plan.replicas_moved, 3 * 30);
    assert!(plan.replicas.is_balanced(), "{:?}", plan.replicas);
}

#[test]
fn drain_to_exactly_replication_factor_brokers() {
    let parts = round_robin(&[1, 2, 3, 4], 12, 3);
    let plan = run(&brokers(1..=4), &parts, &[4], Mode::DrainOnly).unwrap();
    let after = apply(&parts, &plan);
    for p in &after {
        let set: BTreeSet<i32> = p.replicas.iter().copied().collect();
        assert_eq!(set, BTreeSet::from([1, 2, 3]), "{p:?}");
    }
    assert!(plan.leaders.is_balanced(), "{:?}", plan.leaders);
}

#[test]
fn not_enough_brokers_is_an_error() {
    let parts = vec![part("small", 0, &[1, 2]), part("big", 3, &[1, 2, 3])];
    let err = run(&brokers(1..=3), &parts, &[3], Mode::DrainOnly).unwrap_err();
    assert_eq!(
        err,
        BalanceError::NotEnoughBrokers {
            topic: "big".into(),
            partition: 3,
            replication_factor: 3,
            available: 2,
        }
    );
    let text = err.to_string();
    assert!(text.contains("big-3") && text.contains("3 replicas") && text.contains("only 2"));
    // A partition that has to move nothing does not count.
    let plan = run(&brokers(1..=3), &parts[..1], &[3], Mode::DrainOnly).unwrap();
    assert!(plan.is_empty());
}

#[test]
fn draining_every_broker_is_an_error() {
    let parts = round_robin(&[1, 2], 2, 1);
    let err = run(&brokers(1..=2), &parts, &[1, 2], Mode::Full).unwrap_err();
    assert!(
        matches!(err, BalanceError::NotEnoughBrokers { available: 0, .. }),
        "{err}"
    );
}

#[test]
fn drain_prefers_the_least_loaded_brokers() {
    // Broker 4 is new and empty; broker 3 leaves: its replicas go to 4 first.
    let parts = round_robin(&[1, 2, 3], 30, 2);
    let plan = run(&brokers(1..=4), &parts, &[3], Mode::DrainOnly).unwrap();
    assert_eq!(after_replicas(&plan, 4), 20);
    assert_eq!(plan.replicas_moved, 20);
    assert!(plan.replicas.is_balanced(), "{:?}", plan.replicas);
}

#[test]
fn drain_only_leaves_other_imbalance_alone() {
    // Every partition is led by broker 1 and broker 4 is empty; nothing leaves.
    let parts: Vec<PartitionInfo> = (0..9).map(|i| part("t", i, &[1, 2, 3])).collect();
    let plan = run(&brokers(1..=4), &parts, &[], Mode::DrainOnly).unwrap();
    assert!(plan.is_empty());
    assert!(
        plan.notes
            .iter()
            .any(|n| matches!(n, Note::ReplicasUnbalanced(_)))
    );
    assert!(
        plan.notes
            .iter()
            .any(|n| matches!(n, Note::LeadersUnbalanced(_)))
    );
}

#[test]
fn replicas_on_an_unregistered_leaving_broker_are_moved() {
    let parts = vec![part("t", 0, &[9, 1]), part("t", 1, &[1, 2])];
    let plan = run(&brokers(1..=3), &parts, &[9], Mode::DrainOnly).unwrap();
    assert_eq!(plan.moves.len(), 1);
    assert!(!plan.moves[0].to.contains(&9));
    assert_eq!(
        plan.moves[0].to,
        [3, 1],
        "the least loaded broker takes the slot"
    );
    assert!(plan.brokers[&9].leaving);
}

// === racks ===

fn three_racks(per_rack: i32) -> Vec<pier_balance::BrokerInfo> {
    (0..3 * per_rack)
        .map(|i| racked(i + 1, ["a", "b", "c"][(i % 3) as usize]))
        .collect()
}

#[test]
fn drain_keeps_a_partition_on_three_racks() {
    // Brokers 1,4,7 in a; 2,5,8 in b; 3,6,9 in c. Consecutive replicas span all racks.
    let bs = three_racks(3);
    let ids: Vec<i32> = (1..=9).collect();
    let parts = round_robin(&ids, 90, 3);
    let plan = run(&bs, &parts, &[4], Mode::DrainOnly).unwrap();
    for m in &plan.moves {
        let new: Vec<i32> =
            m.to.iter()
                .copied()
                .filter(|b| !m.from.contains(b))
                .collect();
        assert!(
            new.iter().all(|b| [1, 7].contains(b)),
            "rack a replaces rack a: {m:?}"
        );
    }
    let after = apply(&parts, &plan);
    racks_spread(&bs, &BTreeSet::from([4]), &after).unwrap();
    // Rack a has a broker fewer but must hold one replica of each partition: its brokers
    // carry more, and the plan says so.
    assert_eq!(after_replicas(&plan, 1), 45);
    assert_eq!(after_replicas(&plan, 7), 45);
    assert!(
        plan.notes
            .iter()
            .any(|n| matches!(n, Note::ReplicasUnbalanced(_)))
    );
}

#[test]
fn full_moves_a_replica_out_of_a_crowded_rack() {
    let bs = three_racks(2);
    // Partition 0 has two replicas in rack a (1 and 4); the others are spread.
    let mut parts = vec![part("t", 0, &[1, 4, 2])];
    parts
        .extend((1..6).map(|i| part("t", i, &[(i % 6) + 1, ((i + 1) % 6) + 1, ((i + 2) % 6) + 1])));
    let plan = run(&bs, &parts, &[], Mode::Full).unwrap();
    let after = apply(&parts, &plan);
    racks_spread(&bs, &BTreeSet::new(), &after).unwrap();
    assert!(
        !plan
            .notes
            .iter()
            .any(|n| matches!(n, Note::RackSpreadShort { .. }))
    );
    // DrainOnly leaves it alone and says so.
    let plan = run(&bs, &parts, &[], Mode::DrainOnly).unwrap();
    assert!(plan.is_empty());
    let short = plan.notes.iter().find_map(|n| match n {
        Note::RackSpreadShort {
            partitions,
            examples,
        } => Some((*partitions, examples.clone())),
        _ => None,
    });
    assert_eq!(short, Some((1, vec![("t".to_string(), 0)])));
}

#[test]
fn unequal_racks_keep_spread_before_balance() {
    // Rack a: one broker; b and c: two each. RF 3 on three racks puts every partition on 1.
    let bs = vec![
        racked(1, "a"),
        racked(2, "b"),
        racked(3, "b"),
        racked(4, "c"),
        racked(5, "c"),
    ];
    // Every partition has two replicas in b and none in a: rack spread is short.
    let parts: Vec<PartitionInfo> = (0..20)
        .map(|i| part("t", i, if i % 2 == 0 { &[2, 4, 3] } else { &[3, 5, 2] }))
        .collect();
    let plan = run(&bs, &parts, &[], Mode::Full).unwrap();
    let after = apply(&parts, &plan);
    racks_spread(&bs, &BTreeSet::new(), &after).unwrap();
    assert_eq!(after_replicas(&plan, 1), 20);
    for id in 2..=5 {
        assert_eq!(after_replicas(&plan, id), 10, "broker {id}");
    }
    assert!(
        plan.notes
            .iter()
            .any(|n| matches!(n, Note::ReplicasUnbalanced(_)))
    );
}

#[test]
fn brokers_without_rack_form_one_group() {
    let bs = vec![racked(1, "a"), racked(2, "a"), broker(3), broker(4)];
    // RF 2 on racks {a, none}: each partition needs one of 1/2 and one of 3/4.
    let parts: Vec<PartitionInfo> = (0..8).map(|i| part("t", i, &[1, 2])).collect();
    let plan = run(&bs, &parts, &[], Mode::Full).unwrap();
    let after = apply(&parts, &plan);
    for p in &after {
        let in_a = p.replicas.iter().filter(|b| **b <= 2).count();
        assert_eq!(in_a, 1, "{p:?}");
    }
    assert!(
        plan.replicas.is_balanced() && plan.leaders.is_balanced(),
        "{plan:?}"
    );
}

#[test]
fn new_rack_receives_its_share() {
    let mut bs = three_racks(2);
    let ids: Vec<i32> = (1..=6).collect();
    let parts = round_robin(&ids, 60, 3);
    bs.push(racked(7, "d"));
    bs.push(racked(8, "d"));
    let plan = run(&bs, &parts, &[], Mode::Full).unwrap();
    let after = apply(&parts, &plan);
    racks_spread(&bs, &BTreeSet::new(), &after).unwrap();
    assert!(plan.replicas.is_balanced(), "{:?}", plan.replicas);
    assert!(plan.leaders.is_balanced(), "{:?}", plan.leaders);
    // 180 replicas over 8 brokers: 22 or 23; exactly the new brokers' share was copied.
    assert_eq!(
        plan.replicas_moved,
        after_replicas(&plan, 7) + after_replicas(&plan, 8)
    );
}

// === balance ===

#[test]
fn balanced_cluster_needs_no_moves() {
    let ids: Vec<i32> = (1..=6).collect();
    let parts = round_robin(&ids, 60, 3);
    let plan = run(&brokers(1..=6), &parts, &[], Mode::Full).unwrap();
    assert!(plan.is_empty(), "{:?}", plan.moves);
    assert!(plan.notes.is_empty(), "{:?}", plan.notes);
    let plan = run(&three_racks(2), &parts, &[], Mode::Full).unwrap();
    assert!(plan.is_empty(), "{:?}", plan.moves);
    assert!(plan.notes.is_empty(), "{:?}", plan.notes);
}

#[test]
fn within_one_of_the_mean_is_balanced_enough() {
    // Mean 10: loads 9, 10, 11 are left alone.
    let mut parts = Vec::new();
    for (b, n) in [(1, 9), (2, 10), (3, 11)] {
        parts.extend((0..n).map(|i| part(&format!("b{b}"), i, &[b])));
    }
    let plan = run(&brokers(1..=3), &parts, &[], Mode::Full).unwrap();
    assert!(plan.is_empty(), "{:?}", plan.moves);
}

#[test]
fn overloaded_broker_sheds_only_its_excess() {
    // RF 1, loads 12, 6, 6: mean 8, band [7, 9]; three copies are enough.
    let mut parts = Vec::new();
    for (b, n) in [(1, 12), (2, 6), (3, 6)] {
        parts.extend((0..n).map(|i| part(&format!("b{b}"), i, &[b])));
    }
    let plan = run(&brokers(1..=3), &parts, &[], Mode::Full).unwrap();
    assert_eq!(plan.replicas_moved, 3);
    assert_eq!(plan.reorders, 0);
    assert!(
        plan.replicas.is_balanced() && plan.leaders.is_balanced(),
        "{plan:?}"
    );
}

#[test]
fn new_empty_brokers_get_their_share() {
    let ids: Vec<i32> = (1..=6).collect();
    let parts = round_robin(&ids, 100, 3);
    let plan = run(&brokers(1..=8), &parts, &[], Mode::Full).unwrap();
    // 300 replicas over 8 brokers: 37 or 38 each; 100 leaders: 12 or 13 each.
    for id in 1..=8 {
        let after = plan.brokers[&id].after;
        assert!(
            (37..=38).contains(&after.replicas),
            "broker {id}: {after:?}"
        );
        assert!((12..=13).contains(&after.leaders), "broker {id}: {after:?}");
    }
    assert_eq!(
        plan.replicas_moved,
        after_replicas(&plan, 7) + after_replicas(&plan, 8),
        "only the new brokers' share is copied"
    );
    assert!(plan.notes.is_empty(), "{:?}", plan.notes);
}

#[test]
fn leaders_balance_by_reordering_only() {
    // Replicas are spread evenly but broker 1 leads everything.
    let parts: Vec<PartitionInfo> = (0..12)
        .map(|i| {
            let others = [[2, 3], [3, 4], [4, 2]][(i % 3) as usize];
            part("t", i, &[1, others[0], others[1]])
        })
        .chain((12..16).map(|i| part("u", i, &[2, 3, 4])))
        .collect();
    let plan = run(&brokers(1..=4), &parts, &[], Mode::Full).unwrap();
    assert_eq!(plan.replicas_moved, 0, "{:?}", plan.moves);
    assert_eq!(plan.reorders, plan.moves.len());
    assert!(plan.moves.iter().all(Move::is_reorder));
    assert!(plan.leaders.is_balanced(), "{:?}", plan.leaders);
    for m in &plan.moves {
        // The old leader stays as the second choice.
        assert_eq!(m.to[1], m.from[0], "{m:?}");
    }
}

#[test]
fn drain_hands_leadership_to_a_follower_or_the_replacement() {
    let ids: Vec<i32> = (1..=6).collect();
    let parts = round_robin(&ids, 60, 3);
    let plan = run(&brokers(1..=6), &parts, &[1], Mode::DrainOnly).unwrap();
    assert!(plan.leaders.is_balanced(), "{:?}", plan.leaders);
    assert_eq!(plan.reorders, 0, "only partitions on broker 1 change");
}

// === unmovable partitions ===

#[test]
fn unmovable_partitions_are_never_changed_but_count_as_load() {
    // Broker 2 holds 10 unmovable replicas; broker 3 leaves with 6 movable ones.
    let mut parts: Vec<PartitionInfo> = (0..10).map(|i| unmovable("busy", i, &[2])).collect();
    parts.extend((0..6).map(|i| part("t", i, &[3])));
    parts.push(unmovable("stuck", 0, &[3, 1]));
    let plan = run(&brokers(1..=3), &parts, &[3], Mode::Full).unwrap();
    assert!(
        plan.moves.iter().all(|m| m.topic == "t"),
        "{:?}",
        plan.moves
    );
    // Broker 1 has 1, broker 2 has 10: the drained replicas go to 1.
    assert_eq!(after_replicas(&plan, 1), 7);
    assert_eq!(after_replicas(&plan, 2), 10);
    let stranded = plan.notes.iter().find_map(|n| match n {
        Note::LeavingStillHosts { brokers } => Some(brokers.clone()),
        _ => None,
    });
    assert_eq!(stranded, Some(BTreeMap::from([(3, 1)])));
    assert!(
        plan.notes
            .iter()
            .any(|n| n.to_string().contains("plan again"))
    );
}

// === determinism ===

#[test]
fn same_input_same_plan_whatever_the_order() {
    let bs = three_racks(4);
    let mut rng = SeedRng::new(7);
    let ids: Vec<i32> = (1..=12).collect();
    let parts: Vec<PartitionInfo> = (0..300)
        .map(|i| part(&format!("t{}", i % 7), i, &rng.pick(&ids, 3)))
        .collect();
    let leaving = [3, 8];
    for mode in [Mode::DrainOnly, Mode::Full] {
        let first = run(&bs, &parts, &leaving, mode).unwrap();
        let again = run(&bs, &parts, &leaving, mode).unwrap();
        assert_eq!(first, again);
        let (mut bs2, mut parts2) = (bs.clone(), parts.clone());
        rng.shuffle(&mut bs2);
        rng.shuffle(&mut parts2);
        let shuffled = run(&bs2, &parts2, &leaving, mode).unwrap();
        assert_eq!(first, shuffled);
    }
}

// === malformed input ===

#[test]
fn malformed_input_is_refused() {
    let leaving = BTreeSet::new();
    let plan = |bs: &[pier_balance::BrokerInfo], ps: &[PartitionInfo]| {
        pier_balance::plan(&Request {
            brokers: bs,
            partitions: ps,
            leaving: &leaving,
            mode: Mode::Full,
        })
    };
    let twice = vec![broker(1), racked(1, "a")];
    assert_eq!(
        plan(&twice, &[]),
        Err(BalanceError::DuplicateBroker { id: 1 })
    );
    let bs = brokers(1..=3);
    let dup_part = vec![part("t", 0, &[1]), part("t", 0, &[2])];
    assert_eq!(
        plan(&bs, &dup_part),
        Err(BalanceError::DuplicatePartition {
            topic: "t".into(),
            partition: 0
        })
    );
    let dup_replica = vec![part("t", 0, &[1, 2, 1])];
    let err = plan(&bs, &dup_replica).unwrap_err();
    assert!(
        matches!(err, BalanceError::DuplicateReplica { broker: 1, .. }),
        "{err}"
    );
    let unknown = vec![unmovable("t", 0, &[1, 7])];
    let err = plan(&bs, &unknown).unwrap_err();
    assert_eq!(
        err,
        BalanceError::UnknownBroker {
            topic: "t".into(),
            partition: 0,
            broker: 7
        }
    );
    assert!(err.to_string().contains("list it as leaving"), "{err}");
}

// === output helpers ===

#[test]
fn move_helpers_and_note_text() {
    let m = Move {
        topic: "t".into(),
        partition: 0,
        from: vec![1, 2, 3],
        to: vec![4, 2, 1],
    };
    assert_eq!(m.added().collect::<Vec<_>>(), [4]);
    assert!(!m.is_reorder());
    let r = Move {
        to: vec![2, 1, 3],
        ..m.clone()
    };
    assert!(r.is_reorder());

    let parts: Vec<PartitionInfo> = (0..9).map(|i| part("t", i, &[1, 2])).collect();
    let plan = run(&brokers(1..=3), &parts, &[], Mode::DrainOnly).unwrap();
    let text: Vec<String> = plan.notes.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "replicas per broker range 0..=9 around a mean of 6.00; brokers outside mean ± 1: [1, 2, 3]",
            "leaders per broker range 0..=9 around a mean of 3.00; brokers outside mean ± 1: [1, 2, 3]",
        ]
    );
}
