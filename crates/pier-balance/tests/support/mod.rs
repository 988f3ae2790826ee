//! Builders for clusters and the checks every plan must pass, shared by the edge-case tests
//! (`plan.rs`) and the property tests (`properties.rs`).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use pier_balance::{
    BalanceError, BrokerInfo, BrokerSummary, Load, Mode, Note, PartitionInfo, Plan, Request,
};

pub fn broker(id: i32) -> BrokerInfo {
    BrokerInfo { id, rack: None }
}

pub fn racked(id: i32, rack: &str) -> BrokerInfo {
    BrokerInfo {
        id,
        rack: Some(rack.to_string()),
    }
}

pub fn brokers(ids: impl IntoIterator<Item = i32>) -> Vec<BrokerInfo> {
    ids.into_iter().map(broker).collect()
}

pub fn part(topic: &str, partition: i32, replicas: &[i32]) -> PartitionInfo {
    PartitionInfo {
        topic: topic.to_string(),
        partition,
        replicas: replicas.to_vec(),
        movable: true,
    }
}

pub fn unmovable(topic: &str, partition: i32, replicas: &[i32]) -> PartitionInfo {
    PartitionInfo {
        movable: false,
        ..part(topic, partition, replicas)
    }
}

/// Partitions of topic `t` whose replicas are consecutive ids from a rotating start over
/// `ids`: every broker holds and leads the same share.
pub fn round_robin(ids: &[i32], partitions: usize, rf: usize) -> Vec<PartitionInfo> {
    (0..partitions)
        .map(|i| {
            let replicas: Vec<i32> = (0..rf).map(|j| ids[(i + j) % ids.len()]).collect();
            part("t", i as i32, &replicas)
        })
        .collect()
}

/// Runs the planner and checks the plan against the request ([`check`]); panics with the
/// reason when it fails.
pub fn run(
    brokers: &[BrokerInfo],
    partitions: &[PartitionInfo],
    leaving: &[i32],
    mode: Mode,
) -> Result<Plan, BalanceError> {
    let leaving: BTreeSet<i32> = leaving.iter().copied().collect();
    let req = Request {
        brokers,
        partitions,
        leaving: &leaving,
        mode,
    };
    let plan = pier_balance::plan(&req)?;
    if let Err(e) = check(&req, &plan) {
        panic!("{e}\nplan: {plan:#?}");
    }
    Ok(plan)
}

/// The partitions once every move in `plan` is done.
pub fn apply(partitions: &[PartitionInfo], plan: &Plan) -> Vec<PartitionInfo> {
    let moves: BTreeMap<(&str, i32), &Vec<i32>> = plan
        .moves
        .iter()
        .map(|m| ((m.topic.as_str(), m.partition), &m.to))
        .collect();
    partitions
        .iter()
        .map(|p| match moves.get(&(p.topic.as_str(), p.partition)) {
            Some(to) => PartitionInfo {
                replicas: (*to).clone(),
                ..p.clone()
            },
            None => p.clone(),
        })
        .collect()
}

/// Replicas and leaders per broker id.
pub fn loads(partitions: &[PartitionInfo]) -> BTreeMap<i32, Load> {
    let mut out: BTreeMap<i32, Load> = BTreeMap::new();
    for p in partitions {
        for (i, b) in p.replicas.iter().enumerate() {
            let l = out.entry(*b).or_default();
            l.replicas += 1;
            if i == 0 {
                l.leaders += 1;
            }
        }
    }
    out
}

/// `[lo, hi]`: the counts within ±1 of `total / n`.
pub fn band(total: usize, n: usize) -> (usize, usize) {
    let floor = total / n;
    if total.is_multiple_of(n) {
        (floor.saturating_sub(1), floor + 1)
    } else {
        (floor, floor + 1)
    }
}

/// Remaining (registered, not leaving) broker ids.
pub fn remaining(brokers: &[BrokerInfo], leaving: &BTreeSet<i32>) -> BTreeSet<i32> {
    brokers
        .iter()
        .map(|b| b.id)
        .filter(|id| !leaving.contains(id))
        .collect()
}

/// Whether every remaining broker's count (replicas or leaders) is within ±1 of the mean.
pub fn balanced(
    brokers: &[BrokerInfo],
    leaving: &BTreeSet<i32>,
    partitions: &[PartitionInfo],
    leaders: bool,
) -> Result<(), String> {
    let live = remaining(brokers, leaving);
    if live.is_empty() {
        return Ok(());
    }
    let loads = loads(partitions);
    let count = |id: &i32| {
        let l = loads.get(id).copied().unwrap_or_default();
        if leaders { l.leaders } else { l.replicas }
    };
    let total: usize = live.iter().map(count).sum();
    let (lo, hi) = band(total, live.len());
    let outside: Vec<(i32, usize)> = live
        .iter()
        .map(|id| (*id, count(id)))
        .filter(|(_, c)| *c < lo || *c > hi)
        .collect();
    if outside.is_empty() {
        Ok(())
    } else {
        let what = if leaders { "leaders" } else { "replicas" };
        Err(format!("{what} outside [{lo}, {hi}]: {outside:?}"))
    }
}

/// Racks (registered brokers' racks; `None` is one group) of `replicas`; ids without a
/// registered broker count as a rack each.
pub fn distinct_racks(brokers: &[BrokerInfo], replicas: &[i32]) -> usize {
    let racks: BTreeMap<i32, Option<&str>> =
        brokers.iter().map(|b| (b.id, b.rack.as_deref())).collect();
    let mut seen: BTreeSet<Result<Option<&str>, i32>> = BTreeSet::new();
    for id in replicas {
        seen.insert(racks.get(id).copied().ok_or(*id));
    }
    seen.len()
}

/// Racks among the remaining brokers.
pub fn live_racks(brokers: &[BrokerInfo], leaving: &BTreeSet<i32>) -> usize {
    brokers
        .iter()
        .filter(|b| !leaving.contains(&b.id))
        .map(|b| b.rack.as_deref())
        .collect::<BTreeSet<_>>()
        .len()
}

/// Goal 3 for every movable partition: it spans `min(RF, racks)` racks.
pub fn racks_spread(
    brokers: &[BrokerInfo],
    leaving: &BTreeSet<i32>,
    partitions: &[PartitionInfo],
) -> Result<(), String> {
    let racks = live_racks(brokers, leaving);
    for p in partitions.iter().filter(|p| p.movable) {
        let want = p.replicas.len().min(racks);
        let got = distinct_racks(brokers, &p.replicas);
        if got < want {
            return Err(format!(
                "{}-{} {:?} spans {got} racks, wants {want}",
                p.topic, p.partition, p.replicas
            ));
        }
    }
    Ok(())
}

/// What every successful plan must satisfy, whatever the mode: moves are well formed and
/// sorted, only movable partitions move, replication factors stay, no broker twice in a
/// partition, nothing movable left on a leaving broker, and the summary matches the moves.
pub fn check(req: &Request, plan: &Plan) -> Result<(), String> {
    let by_key: BTreeMap<(&str, i32), &PartitionInfo> = req
        .partitions
        .iter()
        .map(|p| ((p.topic.as_str(), p.partition), p))
        .collect();
    let registered: BTreeSet<i32> = req.brokers.iter().map(|b| b.id).collect();
    let mut previous: Option<(&str, i32)> = None;
    let (mut moved, mut reorders) = (0, 0);
    for m in &plan.moves {
        let key = (m.topic.as_str(), m.partition);
        if previous.is_some_and(|p| p >= key) {
            return Err(format!("moves not sorted or repeated at {key:?}"));
        }
        previous = Some(key);
        let p = by_key
            .get(&key)
            .ok_or_else(|| format!("move for unknown partition {key:?}"))?;
        if !p.movable {
            return Err(format!("unmovable partition {key:?} moved"));
        }
        if m.from != p.replicas {
            return Err(format!("{key:?}: from {:?} != {:?}", m.from, p.replicas));
        }
        if m.to == m.from {
            return Err(format!("{key:?}: a move that changes nothing"));
        }
        if m.to.len() != m.from.len() {
            return Err(format!(
                "{key:?}: replication factor {:?} -> {:?}",
                m.from, m.to
            ));
        }
        if m.to.iter().collect::<BTreeSet<_>>().len() != m.to.len() {
            return Err(format!("{key:?}: a broker twice in {:?}", m.to));
        }
        if let Some(b) =
            m.to.iter()
                .find(|b| !registered.contains(b) || req.leaving.contains(b))
        {
            return Err(format!(
                "{key:?}: target {b} not a remaining broker in {:?}",
                m.to
            ));
        }
        let added = m.to.iter().filter(|b| !m.from.contains(b)).count();
        moved += added;
        if added == 0 {
            reorders += 1;
        }
    }
    if (moved, reorders) != (plan.replicas_moved, plan.reorders) {
        return Err(format!(
            "counted {moved} copies and {reorders} reorders, plan says {} and {}",
            plan.replicas_moved, plan.reorders
        ));
    }
    let after = apply(req.partitions, plan);
    let mut stranded = BTreeMap::new();
    for p in &after {
        for b in p.replicas.iter().filter(|b| req.leaving.contains(b)) {
            if p.movable {
                return Err(format!(
                    "{}-{} still on leaving broker {b}",
                    p.topic, p.partition
                ));
            }
            *stranded.entry(*b).or_insert(0usize) += 1;
        }
    }
    let has_stranded_note = plan
        .notes
        .iter()
        .any(|n| matches!(n, Note::LeavingStillHosts { brokers } if *brokers == stranded));
    if stranded.is_empty() == has_stranded_note {
        return Err(format!(
            "stranded replicas {stranded:?} vs notes {:?}",
            plan.notes
        ));
    }
    let (before_loads, after_loads) = (loads(req.partitions), loads(&after));
    let summary: BTreeMap<i32, BrokerSummary> = registered
        .iter()
        .chain(req.leaving.iter())
        .map(|id| {
            let s = BrokerSummary {
                leaving: req.leaving.contains(id),
                before: before_loads.get(id).copied().unwrap_or_default(),
                after: after_loads.get(id).copied().unwrap_or_default(),
            };
            (*id, s)
        })
        .collect();
    if summary != plan.brokers {
        return Err(format!(
            "summary {:?} != computed {summary:?}",
            plan.brokers
        ));
    }
    let live = remaining(req.brokers, req.leaving);
    let replicas_total: usize = live.iter().map(|id| summary[id].after.replicas).sum();
    if plan.replicas.total != replicas_total || plan.replicas.brokers != live.len() {
        return Err(format!("replica spread {:?} wrong", plan.replicas));
    }
    let unbalanced_note = plan
        .notes
        .iter()
        .any(|n| matches!(n, Note::ReplicasUnbalanced(_)));
    let balanced_now = balanced(req.brokers, req.leaving, &after, false).is_ok();
    if balanced_now == unbalanced_note || balanced_now != plan.replicas.is_balanced() {
        return Err(format!(
            "replica balance {balanced_now} vs notes {:?}",
            plan.notes
        ));
    }
    let leaders_note = plan
        .notes
        .iter()
        .any(|n| matches!(n, Note::LeadersUnbalanced(_)));
    let leaders_now = balanced(req.brokers, req.leaving, &after, true).is_ok();
    if leaders_now == leaders_note || leaders_now != plan.leaders.is_balanced() {
        return Err(format!(
            "leader balance {leaders_now} vs notes {:?}",
            plan.notes
        ));
    }
    let spread_note = plan
        .notes
        .iter()
        .any(|n| matches!(n, Note::RackSpreadShort { .. }));
    if racks_spread(req.brokers, req.leaving, &after).is_ok() == spread_note {
        return Err(format!("rack spread vs notes {:?}", plan.notes));
    }
    Ok(())
}

/// A small deterministic random generator (SplitMix64) for building clusters from a seed.
pub struct SeedRng(u64);

impl SeedRng {
    pub fn new(seed: u64) -> SeedRng {
        SeedRng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent / 100`.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// `k` distinct items of `items`, in random order.
    pub fn pick<T: Copy>(&mut self, items: &[T], k: usize) -> Vec<T> {
        let mut pool = items.to_vec();
        let k = k.min(pool.len());
        for i in 0..k {
            let j = i + self.below(pool.len() - i);
            pool.swap(i, j);
        }
        pool.truncate(k);
        pool
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}
