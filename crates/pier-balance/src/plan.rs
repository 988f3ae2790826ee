//! [`plan`]: the phases in order, and the [`Plan`] they add up to.
use std::collections::BTreeMap;

use crate::error::BalanceError;
use crate::model::{BrokerSummary, Load, Mode, Move, Note, Plan, Request, Spread};
use crate::state::{Cluster, State, band};
use crate::{leaders, placement, replicas};

/// How many partitions a [`Note::RackSpreadShort`] names.
const NOTE_EXAMPLES: usize = 10;

/// Plans new replica lists for `req`: drains the leaving brokers and, in [`Mode::Full`],
/// balances racks, replicas and leaders (see the crate documentation for goals and
/// algorithm). Deterministic: the same brokers, partitions (in any order), leaving set and
/// mode give the same plan.
///
/// Fails on malformed input (a broker or partition listed twice, a broker twice in one
/// partition, a replica on a broker neither registered nor leaving) and when a partition that
/// must move has more replicas than there are remaining brokers.
pub fn plan(req: &Request) -> Result<Plan, BalanceError> {
    let cluster = Cluster::new(req.brokers, req.leaving)?;
    let mut st = State::new(cluster, req.partitions)?;
    let before = per_broker(&st);
    placement::place(&mut st, req.partitions, req.mode)?;
    if req.mode == Mode::Full {
        st.index_hosted();
        replicas::balance(&mut st);
    }
    leaders::balance(&mut st, req.mode);
    Ok(summarize(&st, req, &before))
}

fn per_broker(st: &State) -> Vec<Load> {
    st.loads
        .replicas
        .iter()
        .zip(&st.loads.leaders)
        .map(|(r, l)| Load {
            replicas: *r as usize,
            leaders: *l as usize,
        })
        .collect()
}

fn summarize(st: &State, req: &Request, before: &[Load]) -> Plan {
    let cluster = &st.cluster;
    let after = per_broker(st);
    let mut moves = Vec::new();
    let (mut replicas_moved, mut reorders) = (0, 0);
    let mut short_spread = Vec::new();
    for part in &st.parts {
        let info = &req.partitions[part.input];
        if part.movable
            && cluster.distinct_racks(&part.replicas) < cluster.rack_target(part.replicas.len())
        {
            short_spread.push((info.topic.clone(), info.partition));
        }
        if !part.touched {
            continue;
        }
        let to: Vec<i32> = part
            .replicas
            .iter()
            .map(|b| cluster.ids[*b as usize])
            .collect();
        if to == info.replicas {
            continue;
        }
        let m = Move {
            topic: info.topic.clone(),
            partition: info.partition,
            from: info.replicas.clone(),
            to,
        };
        let added = m.added().count();
        replicas_moved += added;
        if added == 0 {
            reorders += 1;
        }
        moves.push(m);
    }
    let brokers: BTreeMap<i32, BrokerSummary> = cluster
        .ids
        .iter()
        .enumerate()
        .map(|(b, id)| {
            let summary = BrokerSummary {
                leaving: req.leaving.contains(id),
                before: before[b],
                after: after[b],
            };
            (*id, summary)
        })
        .collect();
    let replicas = spread(cluster, after.iter().map(|l| l.replicas));
    let leaders = spread(cluster, after.iter().map(|l| l.leaders));

    let mut notes = Vec::new();
    let stranded: BTreeMap<i32, usize> = cluster
        .ids
        .iter()
        .zip(&after)
        .zip(&cluster.live)
        .filter(|((_, load), live)| !**live && load.replicas > 0)
        .map(|((id, load), _)| (*id, load.replicas))
        .collect();
    if !stranded.is_empty() {
        notes.push(Note::LeavingStillHosts { brokers: stranded });
    }
    if !short_spread.is_empty() {
        notes.push(Note::RackSpreadShort {
            partitions: short_spread.len(),
            examples: short_spread.into_iter().take(NOTE_EXAMPLES).collect(),
        });
    }
    if !replicas.is_balanced() {
        notes.push(Note::ReplicasUnbalanced(replicas.clone()));
    }
    if !leaders.is_balanced() {
        notes.push(Note::LeadersUnbalanced(leaders.clone()));
    }
    Plan {
        moves,
        brokers,
        replicas,
        leaders,
        replicas_moved,
        reorders,
        notes,
    }
}

/// How `counts` (one per broker index) spread over the live brokers.
fn spread(cluster: &Cluster, counts: impl Iterator<Item = usize>) -> Spread {
    let live: Vec<(i32, usize)> = counts
        .enumerate()
        .filter(|(b, _)| cluster.live[*b])
        .map(|(b, c)| (cluster.ids[b], c))
        .collect();
    let total: usize = live.iter().map(|(_, c)| c).sum();
    let (lo, hi) = band(total as u64, live.len() as u64);
    Spread {
        brokers: live.len(),
        total,
        min: live.iter().map(|(_, c)| *c).min().unwrap_or(0),
        max: live.iter().map(|(_, c)| *c).max().unwrap_or(0),
        outside: live
            .iter()
            .filter(|(_, c)| (*c as u64) < lo || (*c as u64) > hi)
            .map(|(id, _)| *id)
            .collect(),
    }
}
