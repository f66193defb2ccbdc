//! The migrator's record of a workload's moves, kept in the
//! `carbon-kube.io/migrations` annotation on the pod's owner (ReplicaSet,
//! StatefulSet, Job), and the reservation it carries for the replacement.
//!
//! Two components read it, so it lives here (one codec, no arrow up):
//!
//! - the migrator writes it (its restart-safe state: see
//!   `carbon_kube_migrator::state`) and, while a move's replacement has not
//!   landed, puts the label [`crate::keys::LABEL_MIGRATION_PENDING`] on the
//!   owner;
//! - the gate webhook watches only the labelled owners and, when such an
//!   owner creates a pod while a move is reserved ([`OwnerState::reserved`]),
//!   prefers the move's planned zone and nodes for it (a preferred node
//!   affinity: it never makes the pod unschedulable).
//!
//! Pure data: times are unix seconds passed in by the caller.

use serde::{Deserialize, Serialize};

use crate::{UnixSeconds, ZoneId};

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

/// Which node labels select the nodes of a zone, as the migrator saw them
/// when it planned the move. Nodes whose zone comes from the
/// `carbon-kube.io/grid-zone` label are selected by its values; nodes whose
/// zone comes from their region (`topology.kubernetes.io/region`, through
/// the operator's map or a cloud table) by the region's values, among nodes
/// without the grid-zone label. The same two shapes as the gate
/// controller's zone affinity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneSelector {
    /// Values of `carbon-kube.io/grid-zone` that name the zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grid_zone_values: Vec<String>,
    /// Values of `topology.kubernetes.io/region` that map to the zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub region_values: Vec<String>,
}

impl ZoneSelector {
    /// Whether it selects nothing.
    pub fn is_empty(&self) -> bool {
        self.grid_zone_values.is_empty() && self.region_values.is_empty()
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
    /// The node labels that select the target zone (for the webhook's
    /// preferred affinity); absent in records written before reservations.
    #[serde(default, skip_serializing_if = "ZoneSelector::is_empty")]
    pub zone_selector: ZoneSelector,
    /// Until when (unix seconds) the replacement is steered to the target
    /// (the decision time plus the migrator's landing timeout); `None`: no
    /// reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_until: Option<UnixSeconds>,
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

impl MoveRecord {
    /// Whether the replacement is still to be steered at `now`: not landed
    /// (nor timed out) and within its reservation.
    pub fn reserved_at(&self, now: UnixSeconds) -> bool {
        self.landed.is_none() && self.reserve_until.is_some_and(|t| now < t)
    }
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
    /// Reads the annotation; `None` is an empty state.
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

    /// Whether any move's replacement has not landed yet: the owner carries
    /// [`crate::keys::LABEL_MIGRATION_PENDING`] exactly then.
    pub fn awaits_landing(&self) -> bool {
        self.moves.iter().any(|m| m.landed.is_none())
    }

    /// The moves whose replacement is still reserved at `now`, oldest first.
    /// A move written but not yet confirmed evicted counts: the owner's
    /// controller may create the replacement before the migrator confirms.
    pub fn reserved(&self, now: UnixSeconds) -> impl Iterator<Item = &MoveRecord> {
        self.moves.iter().filter(move |m| m.reserved_at(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at: i64, evicted: bool, landed: Option<Landing>) -> MoveRecord {
        MoveRecord {
            at,
            pod: "web-1".into(),
            uid: format!("u{at}"),
            from: ZoneId::parse("DE").unwrap(),
            to: ZoneId::parse("FR").unwrap(),
            nodes: vec!["fr-1".into()],
            zone_selector: ZoneSelector::default(),
            reserve_until: None,
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
        // Nothing written for an empty selector and no reservation: records
        // stay as small as before.
        assert!(!json.contains("zoneSelector") && !json.contains("reserveUntil"));
        let back = OwnerState::parse(Some(&json)).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.in_flight(), 1);
        assert_eq!(back.moves_since(150), 1);
        assert_eq!(back.pending().map(|m| m.at), Some(300));
        assert!(back.awaits_landing());
        assert_eq!(OwnerState::parse(None).unwrap(), OwnerState::default());
        assert!(OwnerState::parse(Some("nonsense")).is_err());
    }

    #[test]
    fn a_move_is_reserved_until_it_lands_or_its_reservation_ends() {
        let mut m = rec(100, false, None);
        assert!(!m.reserved_at(100), "no reservation written: none");
        m.reserve_until = Some(700);
        assert!(m.reserved_at(100) && m.reserved_at(699));
        assert!(!m.reserved_at(700));
        m.landed = Some(Landing::Elsewhere);
        assert!(!m.reserved_at(200));
        let mut landed = rec(50, true, Some(Landing::Planned));
        landed.reserve_until = Some(650);
        let mut open = rec(100, true, None);
        open.reserve_until = Some(700);
        let s = OwnerState {
            moves: vec![landed, open],
        };
        let uids: Vec<_> = s.reserved(200).map(|m| m.uid.as_str()).collect();
        assert_eq!(uids, ["u100"]);
    }

    #[test]
    fn the_reservation_fields_round_trip() {
        let mut m = rec(100, true, None);
        m.zone_selector = ZoneSelector {
            grid_zone_values: vec!["FR".into()],
            region_values: vec!["eu-west-3".into()],
        };
        m.reserve_until = Some(700);
        let s = OwnerState { moves: vec![m] };
        let json = s.to_json();
        assert!(
            json.contains(
                r#""zoneSelector":{"gridZoneValues":["FR"],"regionValues":["eu-west-3"]}"#
            ),
            "{json}"
        );
        assert!(json.contains(r#""reserveUntil":700"#), "{json}");
        assert_eq!(OwnerState::parse(Some(&json)).unwrap(), s);
    }

    #[test]
    fn forgetting_keeps_what_is_in_flight() {
        let mut s = OwnerState {
            moves: vec![rec(0, true, Some(Landing::Planned)), rec(0, true, None)],
        };
        s.forget_before(10_000, 3600);
        assert_eq!(s.moves.len(), 1);
        assert_eq!(s.moves[0].landed, None);
        assert!(s.awaits_landing());
    }
}
