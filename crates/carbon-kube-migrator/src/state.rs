//! The migrator's state, kept on objects so that a restart (or a new
//! leader) loses and repeats nothing: the `carbon-kube.io/migrations`
//! annotation on each pod's owner (ReplicaSet, StatefulSet, Job) lists the
//! owner's recent moves. Annotating the owner's metadata does not touch its
//! pod template, so nothing rolls. The record's type and codec live in
//! `carbon_kube_model::migration` (the gate webhook reads it too); this
//! module re-exports them.
//!
//! A move is written *before* the eviction (`evicted: false`), marked
//! `evicted: true` once the Eviction API accepted it, and removed if the
//! eviction was refused (PDB) or the pod was already gone. A failure without
//! an answer (connection lost, API server restarted) may have evicted the
//! pod: the move stays pending. A move found with `evicted: false` on a later
//! cycle or after a restart is finished (the same pod evicted, never another
//! one) if its pod still exists, and marked evicted if the pod is gone. Once the
//! replacement pod is bound, `landed` says whether it landed in the planned
//! zone.
//!
//! **Reservation.** Each move also carries the target zone's node labels
//! (`zoneSelector`) and `reserveUntil` (decision time + the landing
//! timeout), and while any move's replacement has not landed the owner
//! carries the label `carbon-kube.io/migration-pending=true`. The gate
//! webhook watches the labelled owners and prefers the planned zone and
//! nodes for one replacement per reserved move.

use carbon_kube_policy::migration::OwnerMove;

pub use carbon_kube_model::migration::{Landing, MoveRecord, OwnerState, ZoneSelector};

/// The moves the policy's memory counts (accepted evictions).
pub fn history(state: &OwnerState) -> Vec<OwnerMove> {
    state
        .moves
        .iter()
        .filter(|m| m.evicted)
        .map(|m| OwnerMove {
            at: m.at,
            from: m.from.clone(),
            to: m.to.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbon_kube_model::ZoneId;

    #[test]
    fn only_accepted_evictions_count_in_the_history() {
        let rec = |at: i64, evicted: bool| MoveRecord {
            at,
            pod: "web-1".into(),
            uid: format!("u{at}"),
            from: ZoneId::parse("DE").unwrap(),
            to: ZoneId::parse("FR").unwrap(),
            nodes: Vec::new(),
            zone_selector: ZoneSelector::default(),
            reserve_until: None,
            net_grams: 1.0,
            evicted,
            landed: None,
        };
        let s = OwnerState {
            moves: vec![rec(100, true), rec(200, false)],
        };
        let h = history(&s);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].at, 100);
    }
}
