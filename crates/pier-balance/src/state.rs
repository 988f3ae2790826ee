//! The planner's working state: brokers and racks as dense indices, partitions as index lists,
//! and the loads kept sorted so the least or most loaded broker is a set lookup away. Every
//! change to a replica list goes through [`State::replace`] or [`State::make_leader`], which
//! keep the indices in step.
use std::collections::{BTreeMap, BTreeSet};

use crate::error::BalanceError;
use crate::model::{BrokerInfo, PartitionInfo};

/// Rack index of a broker that is not remaining (leaving, or not registered).
pub(crate) const NO_RACK: u32 = u32::MAX;

/// Brokers and racks. Broker index = position in `ids` (sorted), so index order is id order
/// and every tie broken by index is broken by id.
pub(crate) struct Cluster {
    /// Registered and leaving broker ids, sorted.
    pub ids: Vec<i32>,
    /// Registered and not leaving.
    pub live: Vec<bool>,
    /// Rack index of a live broker; [`NO_RACK`] otherwise. Racks are numbered in name order
    /// (no rack first) over live brokers only.
    pub rack: Vec<u32>,
    /// Live brokers per rack.
    pub rack_sizes: Vec<u32>,
    pub n_live: usize,
}

impl Cluster {
    pub fn new(brokers: &[BrokerInfo], leaving: &BTreeSet<i32>) -> Result<Cluster, BalanceError> {
        let mut registered: BTreeMap<i32, Option<&str>> = BTreeMap::new();
        for b in brokers {
            if registered.insert(b.id, b.rack.as_deref()).is_some() {
                return Err(BalanceError::DuplicateBroker { id: b.id });
            }
        }
        let ids: Vec<i32> = registered
            .keys()
            .chain(leaving.iter())
            .copied()
            .collect::<BTreeSet<i32>>()
            .into_iter()
            .collect();
        let live: Vec<bool> = ids
            .iter()
            .map(|id| registered.contains_key(id) && !leaving.contains(id))
            .collect();
        let rack_names: BTreeSet<Option<&str>> = ids
            .iter()
            .zip(&live)
            .filter(|(_, l)| **l)
            .filter_map(|(id, _)| registered.get(id).copied())
            .collect();
        let rack_index: BTreeMap<Option<&str>, u32> = rack_names
            .iter()
            .enumerate()
            .map(|(i, r)| (*r, i as u32))
            .collect();
        let mut rack_sizes = vec![0u32; rack_index.len()];
        let rack: Vec<u32> = ids
            .iter()
            .zip(&live)
            .map(
                |(id, l)| match (l, registered.get(id).and_then(|r| rack_index.get(r))) {
                    (true, Some(&k)) => {
                        rack_sizes[k as usize] += 1;
                        k
                    }
                    _ => NO_RACK,
                },
            )
            .collect();
        let n_live = live.iter().filter(|l| **l).count();
        Ok(Cluster {
            ids,
            live,
            rack,
            rack_sizes,
            n_live,
        })
    }

    pub fn index(&self, id: i32) -> Option<u32> {
        self.ids.binary_search(&id).ok().map(|i| i as u32)
    }

    pub fn n_racks(&self) -> usize {
        self.rack_sizes.len()
    }

    /// Racks a partition with `rf` replicas should span.
    pub fn rack_target(&self, rf: usize) -> usize {
        rf.min(self.n_racks())
    }

    /// Distinct racks of the live brokers among `replicas`.
    pub fn distinct_racks(&self, replicas: &[u32]) -> usize {
        let mut racks: Vec<u32> = replicas
            .iter()
            .map(|b| self.rack[*b as usize])
            .filter(|r| *r != NO_RACK)
            .collect();
        racks.sort_unstable();
        racks.dedup();
        racks.len()
    }
}

/// One partition as the planner works on it.
pub(crate) struct Part {
    /// Broker indices in preference order.
    pub replicas: Vec<u32>,
    pub movable: bool,
    /// The plan changed this partition (replicas or order).
    pub touched: bool,
    /// Position in the request's partitions.
    pub input: usize,
}

/// Replica and leader counts per broker, with sorted views of the live brokers' replica
/// counts: per rack, over the cluster, and each rack's least count.
pub(crate) struct Loads {
    pub replicas: Vec<u32>,
    pub leaders: Vec<u32>,
    /// Per rack: (replicas, broker) of its live brokers.
    pub by_rack: Vec<BTreeSet<(u32, u32)>>,
    /// (replicas, broker) of every live broker.
    pub all: BTreeSet<(u32, u32)>,
    /// (least replicas of a broker in the rack, rack).
    pub rack_min: BTreeSet<(u32, u32)>,
    /// Replicas per rack.
    pub rack_total: Vec<u64>,
}

impl Loads {
    fn new(cluster: &Cluster, replicas: Vec<u32>, leaders: Vec<u32>) -> Loads {
        let mut by_rack = vec![BTreeSet::new(); cluster.n_racks()];
        let mut all = BTreeSet::new();
        let mut rack_total = vec![0u64; cluster.n_racks()];
        for (b, &k) in cluster.rack.iter().enumerate() {
            if k != NO_RACK {
                by_rack[k as usize].insert((replicas[b], b as u32));
                all.insert((replicas[b], b as u32));
                rack_total[k as usize] += u64::from(replicas[b]);
            }
        }
        let rack_min = by_rack
            .iter()
            .enumerate()
            .filter_map(|(k, set)| set.first().map(|(load, _)| (*load, k as u32)))
            .collect();
        Loads {
            replicas,
            leaders,
            by_rack,
            all,
            rack_min,
            rack_total,
        }
    }

    /// Adds `delta` replicas to broker `b` (rack `k`, or [`NO_RACK`]).
    fn add_replicas(&mut self, b: u32, k: u32, delta: i32) {
        let old = self.replicas[b as usize];
        let new = old.saturating_add_signed(delta);
        self.replicas[b as usize] = new;
        if k == NO_RACK {
            return;
        }
        let set = &mut self.by_rack[k as usize];
        let old_min = set.first().map(|(l, _)| *l);
        set.remove(&(old, b));
        set.insert((new, b));
        let new_min = set.first().map(|(l, _)| *l);
        if old_min != new_min {
            if let Some(m) = old_min {
                self.rack_min.remove(&(m, k));
            }
            if let Some(m) = new_min {
                self.rack_min.insert((m, k));
            }
        }
        self.all.remove(&(old, b));
        self.all.insert((new, b));
        let total = &mut self.rack_total[k as usize];
        *total = total.saturating_add_signed(i64::from(delta));
    }
}

/// Everything the phases work on.
pub(crate) struct State {
    pub cluster: Cluster,
    /// Partitions sorted by (topic, partition), so processing order never depends on the
    /// request's order.
    pub parts: Vec<Part>,
    pub loads: Loads,
    /// Per broker: the movable partitions it holds, keyed by a scrambled partition index so
    /// that scanning a broker's partitions spreads picks over topics instead of taking the
    /// alphabetically first ones. Empty until [`State::index_hosted`].
    pub hosted: Vec<BTreeSet<(u32, u32)>>,
}

/// A fixed bijective 32-bit mix (Chris Wellons' lowbias32): a deterministic "random" order.
fn scramble(p: u32) -> u32 {
    let mut x = p;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

impl State {
    pub fn new(cluster: Cluster, partitions: &[PartitionInfo]) -> Result<State, BalanceError> {
        let mut order: Vec<usize> = (0..partitions.len()).collect();
        order.sort_by(|a, b| {
            let (a, b) = (&partitions[*a], &partitions[*b]);
            (&a.topic, a.partition).cmp(&(&b.topic, b.partition))
        });
        let mut parts = Vec::with_capacity(partitions.len());
        let mut replicas = vec![0u32; cluster.ids.len()];
        let mut leaders = vec![0u32; cluster.ids.len()];
        let mut previous: Option<&PartitionInfo> = None;
        for input in order {
            let info = &partitions[input];
            if let Some(prev) = previous
                && prev.topic == info.topic
                && prev.partition == info.partition
            {
                return Err(BalanceError::DuplicatePartition {
                    topic: info.topic.clone(),
                    partition: info.partition,
                });
            }
            previous = Some(info);
            let mut list = Vec::with_capacity(info.replicas.len());
            for &id in &info.replicas {
                let b = cluster
                    .index(id)
                    .ok_or_else(|| BalanceError::UnknownBroker {
                        topic: info.topic.clone(),
                        partition: info.partition,
                        broker: id,
                    })?;
                if list.contains(&b) {
                    return Err(BalanceError::DuplicateReplica {
                        topic: info.topic.clone(),
                        partition: info.partition,
                        broker: id,
                        replicas: info.replicas.clone(),
                    });
                }
                replicas[b as usize] += 1;
                list.push(b);
            }
            if let Some(&first) = list.first() {
                leaders[first as usize] += 1;
            }
            parts.push(Part {
                replicas: list,
                movable: info.movable,
                touched: false,
                input,
            });
        }
        let loads = Loads::new(&cluster, replicas, leaders);
        Ok(State {
            cluster,
            parts,
            loads,
            hosted: Vec::new(),
        })
    }

    /// Builds [`State::hosted`] for the live brokers from the movable partitions.
    pub fn index_hosted(&mut self) {
        let mut hosted = vec![Vec::new(); self.cluster.ids.len()];
        for (p, part) in self.parts.iter().enumerate() {
            if !part.movable {
                continue;
            }
            for &b in &part.replicas {
                if self.cluster.live[b as usize] {
                    hosted[b as usize].push((scramble(p as u32), p as u32));
                }
            }
        }
        // Collecting sorts and builds each set in bulk, much faster than inserting one by one.
        self.hosted = hosted.into_iter().map(BTreeSet::from_iter).collect();
    }

    /// Puts broker `to` in place of the replica at `slot` of partition `p`.
    pub fn replace(&mut self, p: usize, slot: usize, to: u32) {
        let from = self.parts[p].replicas[slot];
        let (from_rack, to_rack) = (
            self.cluster.rack[from as usize],
            self.cluster.rack[to as usize],
        );
        self.loads.add_replicas(from, from_rack, -1);
        self.loads.add_replicas(to, to_rack, 1);
        if slot == 0 {
            self.loads.leaders[from as usize] -= 1;
            self.loads.leaders[to as usize] += 1;
        }
        if !self.hosted.is_empty() {
            let key = (scramble(p as u32), p as u32);
            self.hosted[from as usize].remove(&key);
            self.hosted[to as usize].insert(key);
        }
        let part = &mut self.parts[p];
        part.replicas[slot] = to;
        part.touched = true;
    }

    /// Moves the replica at `pos` of partition `p` to the front (the others keep their
    /// order): that broker becomes the preferred leader.
    pub fn make_leader(&mut self, p: usize, pos: usize) {
        if pos == 0 {
            return;
        }
        let part = &mut self.parts[p];
        let (old, new) = (part.replicas[0], part.replicas[pos]);
        part.replicas[..=pos].rotate_right(1);
        part.touched = true;
        self.loads.leaders[old as usize] -= 1;
        self.loads.leaders[new as usize] += 1;
    }
}

/// The counts a broker may have: within ±1 of `total / brokers`, as `[lo, hi]`.
pub(crate) fn band(total: u64, brokers: u64) -> (u64, u64) {
    if brokers == 0 {
        return (0, u64::MAX);
    }
    let floor = total / brokers;
    if total.is_multiple_of(brokers) {
        (floor.saturating_sub(1), floor + 1)
    } else {
        (floor, floor + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_is_mean_plus_minus_one() {
        assert_eq!(band(30, 3), (9, 11));
        assert_eq!(band(31, 3), (10, 11));
        assert_eq!(band(0, 3), (0, 1));
        assert_eq!(band(2, 3), (0, 1));
        assert_eq!(band(5, 0), (0, u64::MAX));
    }

    #[test]
    fn scramble_is_a_permutation_of_small_ranges() {
        let mut seen: Vec<u32> = (0..10_000).map(scramble).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 10_000);
    }

    #[test]
    fn loads_keep_rack_minimum_in_step() {
        let brokers: Vec<BrokerInfo> = (1..=4)
            .map(|id| BrokerInfo {
                id,
                rack: Some(if id <= 2 { "a" } else { "b" }.to_string()),
            })
            .collect();
        let cluster = Cluster::new(&brokers, &BTreeSet::new()).unwrap();
        let mut loads = Loads::new(&cluster, vec![0; 4], vec![0; 4]);
        loads.add_replicas(0, 0, 2);
        assert_eq!(
            loads.rack_min.iter().copied().collect::<Vec<_>>(),
            [(0, 0), (0, 1)]
        );
        loads.add_replicas(1, 0, 1);
        assert_eq!(
            loads.rack_min.iter().copied().collect::<Vec<_>>(),
            [(0, 1), (1, 0)]
        );
        assert_eq!(loads.rack_total, [3, 0]);
        assert_eq!(loads.all.last(), Some(&(2, 0)));
    }
}
