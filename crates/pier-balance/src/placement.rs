//! Phase 1: replicas that must move. Every replica on a leaving broker gets a new home and, in
//! [`Mode::Full`], every partition spanning too few racks gets one replica per missing rack.
//! A new home is the least loaded broker in a rack the partition lacks (while it lacks one),
//! else the least loaded broker not holding the partition.
use std::collections::BTreeSet;

use crate::error::BalanceError;
use crate::model::{Mode, PartitionInfo};
use crate::state::State;

pub(crate) fn place(
    st: &mut State,
    partitions: &[PartitionInfo],
    mode: Mode,
) -> Result<(), BalanceError> {
    for p in 0..st.parts.len() {
        if !st.parts[p].movable {
            continue;
        }
        let rf = st.parts[p].replicas.len();
        let leaving_slots: Vec<usize> = (0..rf)
            .filter(|&s| !st.cluster.live[st.parts[p].replicas[s] as usize])
            .collect();
        let (info, available) = (&partitions[st.parts[p].input], st.cluster.n_live);
        let not_enough = || BalanceError::NotEnoughBrokers {
            topic: info.topic.clone(),
            partition: info.partition,
            replication_factor: rf,
            available,
        };
        if !leaving_slots.is_empty() && rf > available {
            return Err(not_enough());
        }
        for slot in leaving_slots {
            let to = new_home(st, p).ok_or_else(not_enough)?;
            st.replace(p, slot, to);
        }
        if mode == Mode::Full {
            spread_racks(st, p);
        }
    }
    Ok(())
}

/// The broker to receive one more replica of partition `p`: its live replicas stay, so the
/// choice only needs them. `None` only when every remaining broker holds it already.
fn new_home(st: &State, p: usize) -> Option<u32> {
    let cluster = &st.cluster;
    let replicas = &st.parts[p].replicas;
    let kept: Vec<u32> = replicas
        .iter()
        .copied()
        .filter(|b| cluster.live[*b as usize])
        .collect();
    if cluster.distinct_racks(&kept) < cluster.rack_target(replicas.len()) {
        // A rack the partition lacks: its least loaded broker cannot hold the partition.
        let used: Vec<u32> = kept.iter().map(|b| cluster.rack[*b as usize]).collect();
        if let Some((_, k)) = st.loads.rack_min.iter().find(|(_, k)| !used.contains(k)) {
            return least_loaded(st, &st.loads.by_rack[*k as usize], &kept);
        }
    }
    least_loaded(st, &st.loads.all, &kept)
}

/// How many brokers with the least load [`least_loaded`] compares by leaders.
const TIE_LOOKAHEAD: usize = 64;

/// The least loaded broker in `candidates` (sorted by (replicas, broker)) that is not in
/// `exclude`; among equally loaded ones the one leading the fewest partitions, so that new
/// replicas (which may take the lead when their partition is reordered) go where leaders are
/// scarce.
fn least_loaded(st: &State, candidates: &BTreeSet<(u32, u32)>, exclude: &[u32]) -> Option<u32> {
    let mut eligible = candidates.iter().filter(|(_, b)| !exclude.contains(b));
    let &(load, first) = eligible.next()?;
    let leaders = |b: u32| st.loads.leaders[b as usize];
    let best = eligible
        .take(TIE_LOOKAHEAD)
        .take_while(|(l, _)| *l == load)
        .fold(
            first,
            |best, &(_, b)| if leaders(b) < leaders(best) { b } else { best },
        );
    Some(best)
}

/// Moves replicas of `p` out of its most crowded rack until it spans `min(RF, racks)` racks.
fn spread_racks(st: &mut State, p: usize) {
    let rf = st.parts[p].replicas.len();
    let target = st.cluster.rack_target(rf);
    while st.cluster.distinct_racks(&st.parts[p].replicas) < target {
        let replicas = &st.parts[p].replicas;
        let racks: Vec<u32> = replicas
            .iter()
            .map(|b| st.cluster.rack[*b as usize])
            .collect();
        let count = |k: u32| racks.iter().filter(|r| **r == k).count();
        // The most crowded rack (lowest index on ties), then its most loaded broker (the later
        // slot on ties, so a leader moves last).
        let Some(crowded) = racks
            .iter()
            .copied()
            .max_by_key(|k| (count(*k), u32::MAX - k))
        else {
            return;
        };
        let Some(slot) = (0..rf)
            .filter(|s| racks[*s] == crowded)
            .max_by_key(|s| (st.loads.replicas[replicas[*s] as usize], *s))
        else {
            return;
        };
        let Some(to) = st
            .loads
            .rack_min
            .iter()
            .find(|(_, k)| !racks.contains(k))
            .and_then(|(_, k)| least_loaded(st, &st.loads.by_rack[*k as usize], &[]))
        else {
            return;
        };
        st.replace(p, slot, to);
    }
}
