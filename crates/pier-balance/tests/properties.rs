//! Property tests on random clusters: the hard goals always hold, rack spread and balance hold
//! whenever racks allow them, DrainOnly touches only what it must, and plans do not depend on
//! input order. Clusters are built from a seed (`support::SeedRng`), so proptest shrinks the shape
//! (brokers, partitions, racks, ...) rather than 100,000 replica lists.
mod support;

use std::collections::BTreeSet;

use pier_balance::{BalanceError, BrokerInfo, Mode, Note, PartitionInfo, Request};
use proptest::prelude::*;
use support::*;

#[derive(Debug, Clone, Copy)]
enum Racks {
    None,
    /// The remaining brokers spread evenly over this many racks (leaving ones anywhere).
    Equal(usize),
    /// Each broker in one of this many racks, or in none, at random.
    Random(usize),
}

#[derive(Debug, Clone)]
struct Shape {
    /// Registered brokers that stay.
    staying: usize,
    /// Registered brokers that leave.
    leaving: usize,
    /// Leaving ids that are not registered (brokers gone for good) but hold replicas.
    gone: usize,
    /// Staying brokers that hold nothing yet (new brokers).
    empty: usize,
    partitions: usize,
    /// Replication factor of every partition, or of each at random up to it.
    rf: usize,
    uniform_rf: bool,
    racks: Racks,
    unmovable_percent: u64,
    mode: Mode,
    seed: u64,
}

struct Cluster {
    brokers: Vec<BrokerInfo>,
    partitions: Vec<PartitionInfo>,
    leaving: BTreeSet<i32>,
}

impl Cluster {
    fn request(&self, mode: Mode) -> Request<'_> {
        Request {
            brokers: &self.brokers,
            partitions: &self.partitions,
            leaving: &self.leaving,
            mode,
        }
    }
}

fn build(s: &Shape) -> Cluster {
    let mut rng = SeedRng::new(s.seed);
    // Ids are neither contiguous nor in rack order.
    let id = |i: usize| (i * 7 % 1009) as i32 + 1;
    let registered = s.staying + s.leaving;
    let mut brokers: Vec<BrokerInfo> = (0..registered)
        .map(|i| BrokerInfo {
            id: id(i),
            rack: match s.racks {
                Racks::None => None,
                Racks::Equal(k) if i < s.staying => Some(format!("rack-{}", i % k)),
                Racks::Equal(k) | Racks::Random(k) => {
                    let r = rng.below(k + 1);
                    (r < k).then(|| format!("rack-{r}"))
                }
            },
        })
        .collect();
    let leaving: BTreeSet<i32> = (s.staying..registered)
        .map(id)
        .chain((0..s.gone).map(|g| 5000 + g as i32))
        .collect();
    // New brokers (the last staying ones) hold nothing yet.
    let holders: Vec<i32> = (0..s.staying.saturating_sub(s.empty))
        .chain(s.staying..registered)
        .map(id)
        .chain((0..s.gone).map(|g| 5000 + g as i32))
        .collect();
    let topics = 1 + s.partitions / 50;
    let partitions = (0..s.partitions)
        .map(|i| {
            let rf = if s.uniform_rf {
                s.rf
            } else {
                1 + rng.below(s.rf)
            };
            PartitionInfo {
                topic: format!("topic-{}", rng.below(topics)),
                partition: i as i32,
                replicas: rng.pick(&holders, rf),
                movable: !rng.chance(s.unmovable_percent),
            }
        })
        .collect();
    rng.shuffle(&mut brokers);
    Cluster {
        brokers,
        partitions,
        leaving,
    }
}

fn racks() -> impl Strategy<Value = Racks> {
    prop_oneof![
        Just(Racks::None),
        (1usize..=5).prop_map(Racks::Equal),
        (2usize..=6).prop_map(Racks::Random),
    ]
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::DrainOnly), Just(Mode::Full)]
}

/// Any cluster: some brokers leave, some are new, some partitions are being reassigned.
fn any_shape(max_brokers: usize, max_partitions: usize) -> impl Strategy<Value = Shape> {
    (
        (1..=max_brokers, 0usize..=3, 0usize..=2, 0usize..=3),
        (0..=max_partitions, 1usize..=4, any::<bool>()),
        (
            racks(),
            prop_oneof![Just(0u64), 1u64..=20],
            mode(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (staying, leaving, gone, empty),
                (partitions, rf, uniform_rf),
                (racks, unmovable, mode, seed),
            )| Shape {
                staying,
                leaving,
                gone,
                empty: empty.min(staying),
                partitions,
                rf,
                uniform_rf,
                racks,
                unmovable_percent: unmovable,
                mode,
                seed,
            },
        )
}

/// A cluster in which every goal can be met: all partitions movable, one replication factor,
/// no racks or racks of equal size among the remaining brokers; planned in Full mode.
fn balanceable_shape(max_per_rack: usize, max_partitions: usize) -> impl Strategy<Value = Shape> {
    (
        (1usize..=4, 1..=max_per_rack, 0usize..=3, 0usize..=3),
        (0..=max_partitions, 1usize..=4),
        any::<u64>(),
    )
        .prop_map(
            |((racks, per_rack, leaving, empty), (partitions, rf), seed)| {
                let staying = racks * per_rack;
                Shape {
                    staying,
                    leaving,
                    gone: 0,
                    empty: empty.min(staying),
                    partitions,
                    rf: rf.min(staying),
                    uniform_rf: true,
                    racks: if racks == 1 {
                        Racks::None
                    } else {
                        Racks::Equal(racks)
                    },
                    unmovable_percent: 0,
                    mode: Mode::Full,
                    seed,
                }
            },
        )
}

/// Goals 1 and 2 always (via `support::check`), the error exactly when it must be, rack
/// spread in Full mode, and DrainOnly touching only partitions on leaving brokers.
fn check_invariants(s: &Shape) -> Result<(), TestCaseError> {
    let c = build(s);
    let req = c.request(s.mode);
    let remaining = remaining(&c.brokers, &c.leaving);
    let impossible = c.partitions.iter().find(|p| {
        p.movable
            && p.replicas.iter().any(|b| c.leaving.contains(b))
            && p.replicas.len() > remaining.len()
    });
    let plan = match (pier_balance::plan(&req), impossible) {
        (Ok(plan), None) => plan,
        (Err(BalanceError::NotEnoughBrokers { .. }), Some(_)) => return Ok(()),
        (result, impossible) => {
            return Err(TestCaseError::fail(format!(
                "{result:?} while the impossible partition is {impossible:?}"
            )));
        }
    };
    check(&req, &plan).map_err(TestCaseError::fail)?;
    let after = apply(&c.partitions, &plan);
    match s.mode {
        Mode::Full => racks_spread(&c.brokers, &c.leaving, &after).map_err(TestCaseError::fail)?,
        Mode::DrainOnly => {
            let racks = live_racks(&c.brokers, &c.leaving);
            let mut copies = 0;
            for m in &plan.moves {
                prop_assert!(
                    m.from.iter().any(|b| c.leaving.contains(b)),
                    "DrainOnly moved {m:?} without a leaving replica"
                );
                // The remaining replicas stay; only leaving ones are replaced.
                let kept: BTreeSet<i32> = m
                    .from
                    .iter()
                    .copied()
                    .filter(|b| !c.leaving.contains(b))
                    .collect();
                prop_assert!(kept.iter().all(|b| m.to.contains(b)), "{m:?}");
                copies += m.from.iter().filter(|b| c.leaving.contains(b)).count();
                // Rack spread never drops below what the partition had (up to the target).
                let want =
                    m.to.len()
                        .min(racks)
                        .min(distinct_racks(&c.brokers, &m.from));
                prop_assert!(distinct_racks(&c.brokers, &m.to) >= want, "{m:?}");
            }
            prop_assert_eq!(plan.replicas_moved, copies);
        }
    }
    Ok(())
}

/// Goals 3, 4 and 5 when racks allow: rack spread, replicas and leaders within ±1 of the mean,
/// no notes; planning the result again changes nothing.
fn check_balance(s: &Shape) -> Result<(), TestCaseError> {
    let c = build(s);
    let plan = pier_balance::plan(&c.request(Mode::Full))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(plan.notes.is_empty(), "notes: {:?}", plan.notes);
    let after = apply(&c.partitions, &plan);
    if matches!(s.racks, Racks::None) && s.leaving == 0 {
        // Every copy brings a broker outside the band closer to it (goal 6).
        let before = loads(&c.partitions);
        let count = |id: &i32| before.get(id).map_or(0, |l| l.replicas);
        let total: usize = c.brokers.iter().map(|b| count(&b.id)).sum();
        let (lo, hi) = band(total, c.brokers.len());
        let off: usize = c
            .brokers
            .iter()
            .map(|b| count(&b.id).saturating_sub(hi) + lo.saturating_sub(count(&b.id)))
            .sum();
        prop_assert!(
            plan.replicas_moved <= off,
            "{} copies for {off} off the band",
            plan.replicas_moved
        );
    }
    balanced(&c.brokers, &c.leaving, &after, false).map_err(TestCaseError::fail)?;
    balanced(&c.brokers, &c.leaving, &after, true).map_err(TestCaseError::fail)?;
    racks_spread(&c.brokers, &c.leaving, &after).map_err(TestCaseError::fail)?;
    let staying: Vec<BrokerInfo> = c
        .brokers
        .iter()
        .filter(|b| !c.leaving.contains(&b.id))
        .cloned()
        .collect();
    let none = BTreeSet::new();
    let again = pier_balance::plan(&Request {
        brokers: &staying,
        partitions: &after,
        leaving: &none,
        mode: Mode::Full,
    })
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(again.is_empty(), "a second plan moves {:?}", again.moves);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hard_goals_hold_on_small_clusters(s in any_shape(40, 400)) {
        check_invariants(&s)?;
    }

    #[test]
    fn balanced_when_racks_allow_on_small_clusters(s in balanceable_shape(12, 400)) {
        check_balance(&s)?;
    }

    #[test]
    fn plan_does_not_depend_on_input_order(s in any_shape(20, 200), shuffle in any::<u64>()) {
        let c = build(&s);
        let first = pier_balance::plan(&c.request(s.mode));
        let mut rng = SeedRng::new(shuffle);
        let (mut brokers, mut partitions) = (c.brokers.clone(), c.partitions.clone());
        rng.shuffle(&mut brokers);
        rng.shuffle(&mut partitions);
        let shuffled = Cluster { brokers, partitions, leaving: c.leaving.clone() };
        prop_assert_eq!(first, pier_balance::plan(&shuffled.request(s.mode)));
    }
}

proptest! {
    // Up to 100 brokers × 100,000 partitions: few cases, they take a while in debug builds.
    #![proptest_config(ProptestConfig { cases: 3, max_shrink_iters: 16, ..ProptestConfig::default() })]

    #[test]
    fn hard_goals_hold_on_large_clusters(
        s in any_shape(100, 100_000).prop_filter("large", |s| s.partitions >= 10_000)
    ) {
        check_invariants(&s)?;
    }

    #[test]
    fn balanced_when_racks_allow_on_large_clusters(
        s in balanceable_shape(25, 100_000).prop_filter("large", |s| s.partitions >= 10_000)
    ) {
        check_balance(&s)?;
    }
}

#[test]
fn notes_name_what_is_off() {
    // Unequal racks: rack a's single broker must hold a replica of every partition.
    let s = Shape {
        staying: 5,
        leaving: 0,
        gone: 0,
        empty: 0,
        partitions: 100,
        rf: 3,
        uniform_rf: true,
        racks: Racks::None,
        unmovable_percent: 0,
        mode: Mode::Full,
        seed: 1,
    };
    let mut c = build(&s);
    for (i, b) in c.brokers.iter_mut().enumerate() {
        b.rack = Some(["a", "b", "b", "c", "c"][i].to_string());
    }
    let plan = pier_balance::plan(&c.request(Mode::Full)).unwrap();
    check(&c.request(Mode::Full), &plan).unwrap();
    assert!(
        plan.notes
            .iter()
            .any(|n| matches!(n, Note::ReplicasUnbalanced(s) if s.max == 100)),
        "{:?}",
        plan.notes
    );
}
