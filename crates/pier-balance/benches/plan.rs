//! Planning time on clusters of 10 / 100 / 1,000 brokers (RF 3, three racks and no racks):
//! adding 20% empty brokers to a balanced cluster ([`Mode::Full`]) and draining one broker
//! ([`Mode::DrainOnly`]). Prints a table; no assertions.
//!
//! `cargo bench -p pier-balance --bench plan`; `PIER_BENCH_QUICK=1` or `-- --quick` runs small
//! sizes only (a smoke test).
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use pier_balance::{BrokerInfo, Mode, PartitionInfo, Plan, Request, plan};

const RF: usize = 3;

struct Scenario {
    brokers: usize,
    partitions: usize,
}

fn main() {
    let quick = std::env::var("PIER_BENCH_QUICK").is_ok_and(|v| v == "1")
        || std::env::args().any(|a| a == "--quick");
    let sizes: &[Scenario] = if quick {
        &[
            Scenario {
                brokers: 10,
                partitions: 1_000,
            },
            Scenario {
                brokers: 100,
                partitions: 10_000,
            },
        ]
    } else {
        &[
            Scenario {
                brokers: 10,
                partitions: 1_000,
            },
            Scenario {
                brokers: 100,
                partitions: 100_000,
            },
            Scenario {
                brokers: 1_000,
                partitions: 100_000,
            },
        ]
    };
    println!(
        "{:>7} {:>10} {:>5} {:>28} {:>11} {:>13} {:>9} {:>9}",
        "brokers",
        "partitions",
        "racks",
        "scenario",
        "plan ms",
        "replica moves",
        "reorders",
        "balanced"
    );
    for s in sizes {
        for racks in [0, 3] {
            let added = (s.brokers / 5).max(1);
            let (brokers, partitions) = balanced_cluster(s.brokers, s.partitions, racks);
            let mut grown = brokers.clone();
            grown.extend((0..added).map(|i| broker(s.brokers + i, racks)));
            let none = BTreeSet::new();
            let (took, p) = time(&Request {
                brokers: &grown,
                partitions: &partitions,
                leaving: &none,
                mode: Mode::Full,
            });
            row(s, racks, &format!("add {added} brokers (Full)"), took, &p);

            let leaving = BTreeSet::from([0]);
            let (took, p) = time(&Request {
                brokers: &brokers,
                partitions: &partitions,
                leaving: &leaving,
                mode: Mode::DrainOnly,
            });
            row(s, racks, "drain 1 broker (DrainOnly)", took, &p);
        }
    }
}

fn time(req: &Request) -> (Duration, Plan) {
    let start = Instant::now();
    match plan(req) {
        Ok(p) => (start.elapsed(), p),
        Err(e) => {
            eprintln!("plan failed: {e}");
            std::process::exit(1);
        }
    }
}

fn row(s: &Scenario, racks: usize, scenario: &str, took: Duration, p: &Plan) {
    let balanced = p.replicas.is_balanced() && p.leaders.is_balanced();
    println!(
        "{:>7} {:>10} {:>5} {:>28} {:>11.1} {:>13} {:>9} {:>9}",
        s.brokers,
        s.partitions,
        racks,
        scenario,
        took.as_secs_f64() * 1e3,
        p.replicas_moved,
        p.reorders,
        balanced
    );
    for note in &p.notes {
        println!("        note: {note}");
    }
}

/// Replicas of partition `i` on `n` brokers as Kafka's `assignReplicasToBrokersRackUnaware`
/// places them (start index 0): first replica round-robin, the others at `1 + (shift + j) mod
/// (n - 1)` after it.
fn kafka_layout(i: usize, n: usize) -> Vec<i32> {
    let first = i % n;
    let shift = (i / n) % (n - 1).max(1);
    let mut replicas = vec![first as i32];
    replicas.extend((0..RF - 1).map(|j| ((first + 1 + (shift + j) % (n - 1).max(1)) % n) as i32));
    replicas
}

fn broker(id: usize, racks: usize) -> BrokerInfo {
    BrokerInfo {
        id: id as i32,
        rack: (racks > 0).then(|| format!("rack-{}", id % racks)),
    }
}

/// Brokers `0..n` (rack = id mod racks) and partitions laid out the way Kafka's rack-unaware
/// assignment does it (leaders round-robin, followers at a shift that grows every `n`
/// partitions), so every broker holds and leads the same share; then, with racks, one Full
/// plan applied so that every partition spans three racks.
fn balanced_cluster(
    n: usize,
    partitions: usize,
    racks: usize,
) -> (Vec<BrokerInfo>, Vec<PartitionInfo>) {
    let brokers: Vec<BrokerInfo> = (0..n).map(|id| broker(id, racks)).collect();
    let per_topic = 50;
    let mut parts: Vec<PartitionInfo> = (0..partitions)
        .map(|i| PartitionInfo {
            topic: format!("topic-{:05}", i / per_topic),
            partition: (i % per_topic) as i32,
            replicas: kafka_layout(i, n),
            movable: true,
        })
        .collect();
    if racks > 0 {
        let none = BTreeSet::new();
        let (_, p) = time(&Request {
            brokers: &brokers,
            partitions: &parts,
            leaving: &none,
            mode: Mode::Full,
        });
        // Moves and partitions are both sorted by (topic, partition).
        let mut moves = p.moves.into_iter().peekable();
        for part in &mut parts {
            if let Some(m) =
                moves.next_if(|m| m.topic == part.topic && m.partition == part.partition)
            {
                part.replicas = m.to;
            }
        }
    }
    (brokers, parts)
}
