//! Phase 3: leader counts, by reordering replicas only. A broker leading a reorderable
//! partition can hand the lead to one of its followers; a breadth-first search over those
//! hand-overs finds the shortest chain from a broker with at least 2 more leaders to the one
//! below the band (or from the one above the band to a broker with at least 2 fewer), and the
//! chain is applied: only its ends change count. Each chain lowers the sum of squared leader
//! counts, so the loop ends; a broker for which no chain exists is set aside.
use std::collections::BTreeSet;

use crate::model::Mode;
use crate::state::{State, band};

pub(crate) fn balance(st: &mut State, mode: Mode) {
    let n = st.cluster.ids.len();
    // Per broker: the reorderable partitions it holds. In DrainOnly only partitions that
    // change anyway may be reordered.
    let mut adjacent: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (p, part) in st.parts.iter().enumerate() {
        let reorderable =
            part.movable && part.replicas.len() > 1 && (mode == Mode::Full || part.touched);
        if reorderable {
            for &b in &part.replicas {
                adjacent[b as usize].push(p as u32);
            }
        }
    }
    let live: Vec<u32> = (0..n as u32)
        .filter(|b| st.cluster.live[*b as usize])
        .collect();
    let total: u64 = live
        .iter()
        .map(|b| u64::from(st.loads.leaders[*b as usize]))
        .sum();
    let (lo, hi) = band(total, live.len() as u64);
    let mut by_leaders: BTreeSet<(u32, u32)> = live
        .iter()
        .map(|b| (st.loads.leaders[*b as usize], *b))
        .collect();
    let mut search = Search::new(st);
    // A broker without a chain is set aside for the round; chains found later may open one
    // for it, so another round runs while the last one changed anything.
    for _ in 0..MAX_ROUNDS {
        if !round(st, &adjacent, &mut by_leaders, &mut search, lo, hi) {
            return;
        }
    }
}

/// Upper bound on [`round`]s; a round that changes nothing ends the phase earlier.
const MAX_ROUNDS: usize = 32;

/// Applies chains until every broker outside `[lo, hi]` is set aside; true if it applied any.
fn round(
    st: &mut State,
    adjacent: &[Vec<u32>],
    by_leaders: &mut BTreeSet<(u32, u32)>,
    search: &mut Search,
    lo: u64,
    hi: u64,
) -> bool {
    let n = st.cluster.ids.len();
    let mut stuck_low = vec![false; n];
    let mut stuck_high = vec![false; n];
    let mut changed = false;
    loop {
        let low = by_leaders
            .iter()
            .find(|(_, b)| !stuck_low[*b as usize])
            .copied();
        if let Some((count, r)) = low
            && u64::from(count) < lo
        {
            match search.chain(st, adjacent, r, Direction::Toward) {
                Some(chain) => {
                    apply(st, by_leaders, search, &chain);
                    changed = true;
                }
                None => stuck_low[r as usize] = true,
            }
            continue;
        }
        let high = by_leaders
            .iter()
            .rev()
            .find(|(_, b)| !stuck_high[*b as usize])
            .copied();
        if let Some((count, d)) = high
            && u64::from(count) > hi
        {
            match search.chain(st, adjacent, d, Direction::From) {
                Some(chain) => {
                    apply(st, by_leaders, search, &chain);
                    changed = true;
                }
                None => stuck_high[d as usize] = true,
            }
            continue;
        }
        return changed;
    }
}

/// A chain of hand-overs: (partition, broker that becomes its leader), plus the two ends
/// whose counts change.
struct Chain {
    hops: Vec<(u32, u32)>,
    loses: u32,
    gains: u32,
}

fn apply(
    st: &mut State,
    by_leaders: &mut BTreeSet<(u32, u32)>,
    search: &mut Search,
    chain: &Chain,
) {
    for b in [chain.loses, chain.gains] {
        by_leaders.remove(&(st.loads.leaders[b as usize], b));
    }
    for &(p, new_leader) in &chain.hops {
        let p = p as usize;
        if let Some(pos) = st.parts[p].replicas.iter().position(|b| *b == new_leader) {
            st.make_leader(p, pos);
            search.lead[p] = new_leader;
            search.touched[p] = true;
        }
    }
    for b in [chain.loses, chain.gains] {
        by_leaders.insert((st.loads.leaders[b as usize], b));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Find leaders for the start broker.
    Toward,
    /// Find takers for the start broker's leaders.
    From,
}

/// Partitions a search still looks at, once it found an end, for a better one.
const LOOK_FURTHER: usize = 64;

/// Breadth-first search state, reused across searches (generation stamps instead of
/// clearing), with each partition's leader and touched flag in flat arrays: a search reads
/// them for thousands of partitions, and these stay in cache where the partitions do not.
struct Search {
    lead: Vec<u32>,
    touched: Vec<bool>,
    generation: u32,
    seen: Vec<u32>,
    depth: Vec<u32>,
    /// Broker → (neighbour one step closer to the start, partition handed over between them).
    parent: Vec<(u32, u32)>,
}

impl Search {
    fn new(st: &State) -> Search {
        let n = st.cluster.ids.len();
        Search {
            lead: st
                .parts
                .iter()
                .map(|p| p.replicas.first().copied().unwrap_or(u32::MAX))
                .collect(),
            touched: st.parts.iter().map(|p| p.touched).collect(),
            generation: 0,
            seen: vec![0; n],
            depth: vec![0; n],
            parent: vec![(0, 0); n],
        }
    }

    /// The shortest chain between `start` and a broker whose count differs from it by 2 or
    /// more in the right direction (the most extreme such broker at that distance). Among
    /// partitions linking the same two brokers, one the plan changes anyway is preferred, so
    /// fewer untouched partitions get reordered.
    fn chain(
        &mut self,
        st: &State,
        adjacent: &[Vec<u32>],
        start: u32,
        direction: Direction,
    ) -> Option<Chain> {
        self.generation += 1;
        let generation = self.generation;
        let leaders = &st.loads.leaders;
        let start_count = leaders[start as usize];
        self.seen[start as usize] = generation;
        self.depth[start as usize] = 0;
        let mut frontier = vec![start];
        let mut depth = 0;
        while !frontier.is_empty() {
            depth += 1;
            let mut next = Vec::new();
            let mut best: Option<u32> = None;
            // Once an end is found, only this many more partitions are looked at for a
            // better one: a full level can be most of the cluster.
            let mut budget = LOOK_FURTHER;
            'level: for &x in &frontier {
                for &p in &adjacent[x as usize] {
                    if best.is_some() {
                        if budget == 0 {
                            break 'level;
                        }
                        budget -= 1;
                    }
                    let leader = self.lead[p as usize];
                    let touched = self.touched[p as usize];
                    // Toward: x takes the lead of p from its leader. From: x hands its lead
                    // of p to one of p's followers.
                    let others: &[u32] = match direction {
                        Direction::Toward if leader != x => &self.lead[p as usize..=p as usize],
                        Direction::From if leader == x => &st.parts[p as usize].replicas[1..],
                        _ => &[],
                    };
                    for &y in others {
                        let yi = y as usize;
                        if self.seen[yi] == generation {
                            let (_, via) = self.parent[yi];
                            if self.depth[yi] == depth && touched && !self.touched[via as usize] {
                                self.parent[yi] = (x, p);
                            }
                            continue;
                        }
                        self.seen[yi] = generation;
                        self.depth[yi] = depth;
                        self.parent[yi] = (x, p);
                        next.push(y);
                        let count = leaders[yi];
                        let fits = match direction {
                            Direction::Toward => count >= start_count + 2,
                            Direction::From => count + 2 <= start_count,
                        };
                        let better = best.is_none_or(|b| match direction {
                            Direction::Toward => count > leaders[b as usize],
                            Direction::From => count < leaders[b as usize],
                        });
                        if fits && better {
                            best = Some(y);
                            // A hand-over of a partition the plan changes anyway costs
                            // nothing extra: take it without looking further.
                            if touched {
                                return Some(self.unwind(start, y, direction));
                            }
                        }
                    }
                }
            }
            if let Some(end) = best {
                return Some(self.unwind(start, end, direction));
            }
            frontier = next;
        }
        None
    }

    fn unwind(&self, start: u32, end: u32, direction: Direction) -> Chain {
        let mut hops = Vec::new();
        let mut cur = end;
        while cur != start {
            let (x, p) = self.parent[cur as usize];
            // Toward: cur leads p and hands it to x. From: x leads p and hands it to cur.
            let new_leader = match direction {
                Direction::Toward => x,
                Direction::From => cur,
            };
            hops.push((p, new_leader));
            cur = x;
        }
        match direction {
            Direction::Toward => Chain {
                hops,
                loses: end,
                gains: start,
            },
            Direction::From => Chain {
                hops,
                loses: start,
                gains: end,
            },
        }
    }
}
