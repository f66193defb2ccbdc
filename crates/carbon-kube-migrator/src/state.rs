//! The migrator's state, kept on objects so that a restart (or a new
//! leader) loses and repeats nothing: the `carbon-kube.io/migrations`
//! annotation on each pod's owner (ReplicaSet, StatefulSet, Job) lists the
//! owner's recent moves. Annotating the owner's metadata does not touch its
//! pod template, so nothing rolls.
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

use carbon_kube_model::{UnixSeconds, ZoneId};
use carbon_kube_policy::migration::OwnerMove;
use serde::{Deserialize, Serialize};

/// Where a replacement landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Landing {
    /// In the planned zone.
    Planned,
    /// Somewhere else.
    Elsewhere,
    /// No replacement was bound within the landing timeout.
    NotSeen,
}

impl Landing {
    /// The `result` label of `carbon_kube_migration_landings_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Planned => "planned",
            Self::Elsewhere => "elsewhere",
            Self::NotSeen => "not_seen",
        }
    }
}

/// One move of one of the owner's pods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoveRecord {
    /// When it was decided (unix seconds).
    pub at: UnixSeconds,
    /// The evicted pod's name.
    pub pod: String,
    /// The evicted pod's uid.
    pub uid: String,
    /// The zone it left.
    pub from: ZoneId,
    /// The zone it was sent to.
    pub to: ZoneId,
    /// The planned target nodes, best first.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Expected net saving, grams CO2e.
    #[serde(default)]
    pub net_grams: f64,
    /// The Eviction API accepted it.
    #[serde(default)]
    pub evicted: bool,
    /// Where the replacement landed, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landed: Option<Landing>,
}

/// The owner's annotation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerState {
    /// Recent moves, oldest first.
    #[serde(default)]
    pub moves: Vec<MoveRecord>,
}

impl OwnerState {
    /// Reads the annotation; an unreadable one counts as empty (and is
    /// logged by the caller) rather than blocking the owner forever.
    pub fn parse(value: Option<&str>) -> Result<Self, serde_json::Error> {
        value.map_or_else(|| Ok(Self::default()), serde_json::from_str)
    }

    /// The annotation's value.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Drops moves older than `keep_seconds` that are settled (evicted and
    /// landed, or never evicted).
    pub fn forget_before(&mut self, now: UnixSeconds, keep_seconds: i64) {
        self.moves
            .retain(|m| now - m.at < keep_seconds || (m.evicted && m.landed.is_none()));
    }

    /// The moves the policy's memory counts (accepted evictions).
    pub fn history(&self) -> Vec<OwnerMove> {
        self.moves
            .iter()
            .filter(|m| m.evicted)
            .map(|m| OwnerMove {
                at: m.at,
                from: m.from.clone(),
                to: m.to.clone(),
            })
            .collect()
    }

    /// Moves evicted whose replacement has not landed yet: in flight.
    pub fn in_flight(&self) -> usize {
        self.moves
            .iter()
            .filter(|m| m.evicted && m.landed.is_none())
            .count()
    }

    /// Accepted moves since `t`.
    pub fn moves_since(&self, t: UnixSeconds) -> usize {
        self.moves.iter().filter(|m| m.evicted && m.at >= t).count()
    }

    /// A move written but not yet confirmed evicted (a restart between the
    /// two writes).
    pub fn pending(&self) -> Option<&MoveRecord> {
        self.moves.iter().find(|m| !m.evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at: i64, evicted: bool, landed: Option<Landing>) -> MoveRecord {
        MoveRecord {
            at,
            pod: "web-1".into(),
            uid: "u1".into(),
            from: ZoneId::parse("DE").unwrap(),
            to: ZoneId::parse("FR").unwrap(),
            nodes: vec!["fr-1".into()],
            net_grams: 12.5,
            evicted,
            landed,
        }
    }

    #[test]
    fn round_trips_and_counts() {
        let s = OwnerState {
            moves: vec![
                rec(100, true, Some(Landing::Planned)),
                rec(200, true, None),
                rec(300, false, None),
            ],
        };
        let json = s.to_json();
        assert!(json.contains(r#""landed":"planned""#), "{json}");
        let back = OwnerState::parse(Some(&json)).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.in_flight(), 1);
        assert_eq!(back.history().len(), 2);
        assert_eq!(back.moves_since(150), 1);
        assert_eq!(back.pending().map(|m| m.at), Some(300));
        assert_eq!(OwnerState::parse(None).unwrap(), OwnerState::default());
        assert!(OwnerState::parse(Some("nonsense")).is_err());
    }

    #[test]
    fn forgetting_keeps_what_is_in_flight() {
        let mut s = OwnerState {
            moves: vec![rec(0, true, Some(Landing::Planned)), rec(0, true, None)],
        };
        s.forget_before(10_000, 3600);
        assert_eq!(s.moves.len(), 1);
        assert_eq!(s.moves[0].landed, None);
    }
}
