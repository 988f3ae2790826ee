//! Phase 2 ([`crate::Mode::Full`]): replica counts. First between racks, each rack's load
//! against its share (a replica moves to another rack only if its partition keeps its rack
//! spread), then between the brokers of each rack (such a move never changes rack spread).
//! Every move goes from a more to a less loaded side and strictly lowers the sum of squared
//! loads, so both loops end; they stop as soon as every broker can be within ±1 of the mean.
use std::cmp::Ordering;
use std::collections::BTreeSet;

use crate::state::{State, band};

/// How many partitions a broker-to-broker pick looks at for one with the leader preference
/// before it takes the first that fits.
const PICK_LOOKAHEAD: usize = 16;

pub(crate) fn balance(st: &mut State) {
    let n_live = st.cluster.n_live as u64;
    let live_total: u64 = st.loads.rack_total.iter().sum();
    let (lo, hi) = band(live_total, n_live);
    // Leading replicas stay on live brokers as they move, so the leader band is fixed too.
    let live_leaders: u64 = (0..st.cluster.ids.len())
        .filter(|b| st.cluster.live[*b])
        .map(|b| u64::from(st.loads.leaders[b]))
        .sum();
    let leader_band = band(live_leaders, n_live);
    let mut cursors = Cursors(vec![(0, 0); st.cluster.ids.len()]);
    if st.cluster.n_racks() > 1 {
        between_racks(st, &mut cursors, lo, hi);
    }
    for k in 0..st.cluster.n_racks() {
        within_rack(st, &mut cursors, k, (lo, hi), leader_band);
    }
}

/// Per broker, where the last scan of its partitions stopped: the next scan starts there
/// (wrapping around), so partitions passed over are not looked at again on every move.
struct Cursors(Vec<(u32, u32)>);

impl Cursors {
    /// Broker `d`'s movable partitions, from its cursor on.
    fn scan<'a>(&self, st: &'a State, d: u32) -> impl Iterator<Item = (u32, u32)> + 'a {
        let set = &st.hosted[d as usize];
        let at = self.0[d as usize];
        set.range(at..).chain(set.range(..at)).copied()
    }
}

/// A rack's replicas per broker, compared exactly.
#[derive(Clone, Copy, Debug)]
struct PerBroker {
    replicas: u64,
    brokers: u64,
}

impl PartialEq for PerBroker {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for PerBroker {}
impl PartialOrd for PerBroker {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PerBroker {
    fn cmp(&self, other: &Self) -> Ordering {
        (u128::from(self.replicas) * u128::from(other.brokers))
            .cmp(&(u128::from(other.replicas) * u128::from(self.brokers)))
    }
}

fn between_racks(st: &mut State, cursors: &mut Cursors, lo: u64, hi: u64) {
    let sizes: Vec<u64> = st
        .cluster
        .rack_sizes
        .iter()
        .map(|s| u64::from(*s))
        .collect();
    let equal_sizes = sizes.windows(2).all(|w| w[0] == w[1]);
    let key = |st: &State, k: u32| {
        (
            PerBroker {
                replicas: st.loads.rack_total[k as usize],
                brokers: sizes[k as usize],
            },
            k,
        )
    };
    let mut order: BTreeSet<(PerBroker, u32)> =
        (0..sizes.len() as u32).map(|k| key(st, k)).collect();
    let mut failed: BTreeSet<(u32, u32)> = BTreeSet::new();
    loop {
        let total = |k: u32| st.loads.rack_total[k as usize];
        let over = |k: u32| total(k) > sizes[k as usize] * hi;
        let under = |k: u32| total(k) < sizes[k as usize] * lo;
        // Moving one replica from rack x to rack y lowers sum(total²/size) iff
        // 2·Tx·Sy − 2·Ty·Sx > Sx + Sy.
        let improving = |x: u32, y: u32| {
            let (tx, ty, sx, sy) = (
                u128::from(total(x)),
                u128::from(total(y)),
                u128::from(sizes[x as usize]),
                u128::from(sizes[y as usize]),
            );
            2 * tx * sy > 2 * ty * sx + sx + sy
        };
        let mut chosen = None;
        'search: for &(y_ratio, y) in order.iter() {
            for &(x_ratio, x) in order.iter().rev() {
                if x_ratio <= y_ratio {
                    break;
                }
                if !improving(x, y) {
                    if equal_sizes {
                        break;
                    }
                    continue;
                }
                if !(over(x) || under(y)) || failed.contains(&(x, y)) {
                    continue;
                }
                match cross_rack_move(st, cursors, x, y) {
                    Some(m) => {
                        chosen = Some(m);
                        break 'search;
                    }
                    None => {
                        failed.insert((x, y));
                    }
                }
            }
        }
        let Some((p, slot, to)) = chosen else {
            return;
        };
        let from = st.parts[p].replicas[slot];
        let (x, y) = (st.cluster.rack[from as usize], st.cluster.rack[to as usize]);
        order.remove(&key(st, x));
        order.remove(&key(st, y));
        st.replace(p, slot, to);
        order.insert(key(st, x));
        order.insert(key(st, y));
    }
}

/// A replica in rack `x` that may move to rack `y` without its partition losing rack spread,
/// from the most loaded broker of `x` that has one, to the least loaded broker of `y` not
/// holding the partition: (partition, slot, new broker).
fn cross_rack_move(
    st: &State,
    cursors: &mut Cursors,
    x: u32,
    y: u32,
) -> Option<(usize, usize, u32)> {
    for &(_, d) in st.loads.by_rack[x as usize].iter().rev() {
        for (key, p) in cursors.scan(st, d) {
            let replicas = &st.parts[p as usize].replicas;
            let racks = replicas.iter().map(|b| st.cluster.rack[*b as usize]);
            let in_x = racks.clone().filter(|k| *k == x).count();
            let in_y = racks.filter(|k| *k == y).count();
            // Only leaving the last replica in x for a rack already used loses a rack.
            if in_x == 1 && in_y > 0 {
                let target = st.cluster.rack_target(replicas.len());
                if st.cluster.distinct_racks(replicas) <= target {
                    continue;
                }
            }
            let Some(&(_, to)) = st.loads.by_rack[y as usize]
                .iter()
                .find(|(_, b)| !replicas.contains(b))
            else {
                continue;
            };
            let slot = replicas.iter().position(|b| *b == d)?;
            cursors.0[d as usize] = (key, p);
            return Some((p as usize, slot, to));
        }
    }
    None
}

fn within_rack(
    st: &mut State,
    cursors: &mut Cursors,
    k: usize,
    (lo, hi): (u64, u64),
    leader_band: (u64, u64),
) {
    let mut failed: BTreeSet<(u32, u32)> = BTreeSet::new();
    loop {
        let set = &st.loads.by_rack[k];
        let (Some(&(min, _)), Some(&(max, _))) = (set.first(), set.last()) else {
            return;
        };
        let (min, max) = (u64::from(min), u64::from(max));
        if max < min + 2 || (min >= lo && max <= hi) {
            return;
        }
        let mut chosen = None;
        'search: for &(r_load, r) in set.iter() {
            let r_load = u64::from(r_load);
            if r_load + 2 > max {
                break;
            }
            for &(d_load, d) in set.iter().rev() {
                let d_load = u64::from(d_load);
                if d_load < r_load + 2 {
                    break;
                }
                // Only moves that bring an out-of-band broker closer count.
                if r_load >= lo && d_load <= hi {
                    break;
                }
                if failed.contains(&(d, r)) {
                    continue;
                }
                match pick(st, cursors, d, r, leader_band) {
                    Some(m) => {
                        chosen = Some(m);
                        break 'search;
                    }
                    None => {
                        failed.insert((d, r));
                    }
                }
            }
        }
        let Some((p, slot, to)) = chosen else {
            return;
        };
        st.replace(p, slot, to);
    }
}

/// A movable partition on `d` that `r` does not hold: (partition, slot, `r`). Prefers one `d`
/// leads when the leadership moving along keeps both within the leader band and brings them
/// closer (less work for the leader phase), else one it follows.
fn pick(
    st: &State,
    cursors: &mut Cursors,
    d: u32,
    r: u32,
    (leaders_lo, leaders_hi): (u64, u64),
) -> Option<(usize, usize, u32)> {
    let (ld, lr) = (
        u64::from(st.loads.leaders[d as usize]),
        u64::from(st.loads.leaders[r as usize]),
    );
    let want_leader = ld > lr + 1 && ld > leaders_lo && lr < leaders_hi;
    let mut first = None;
    let mut seen = 0;
    for (key, p) in cursors.scan(st, d) {
        let replicas = &st.parts[p as usize].replicas;
        if replicas.contains(&r) {
            continue;
        }
        let Some(slot) = replicas.iter().position(|b| *b == d) else {
            continue;
        };
        if (slot == 0) == want_leader {
            cursors.0[d as usize] = (key, p);
            return Some((p as usize, slot, r));
        }
        first.get_or_insert(((key, p), slot));
        seen += 1;
        if seen >= PICK_LOOKAHEAD {
            break;
        }
    }
    let ((key, p), slot) = first?;
    cursors.0[d as usize] = (key, p);
    Some((p as usize, slot, r))
}
