//! Limits on how much the migrator moves: per node and per namespace in one
//! cycle, per owner (a share of its replicas in flight at once), per cycle
//! and per hour, cluster-wide. The hour and the owner counts come from the
//! owners' annotations, so a restart does not reset them.

use std::collections::HashMap;

/// The configured limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CapsConfig {
    /// Evictions per node per cycle.
    pub per_node: u32,
    /// Evictions per namespace per cycle.
    pub per_namespace: u32,
    /// Share of an owner's replicas that may be in flight at once (0–1);
    /// at least one pod.
    pub owner_fraction: f64,
    /// Evictions per cycle, cluster-wide.
    pub per_cycle: u32,
    /// Evictions per rolling hour, cluster-wide.
    pub per_hour: u32,
}

impl Default for CapsConfig {
    fn default() -> Self {
        Self {
            per_node: 1,
            per_namespace: 5,
            owner_fraction: 0.25,
            per_cycle: 10,
            per_hour: 30,
        }
    }
}

/// Which cap stopped a move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capped {
    /// `per_node`.
    Node,
    /// `per_namespace`.
    Namespace,
    /// `owner_fraction`.
    Owner,
    /// `per_cycle`.
    Cycle,
    /// `per_hour`.
    Hour,
}

impl std::fmt::Display for Capped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Node => "the per-node cap (--max-per-node)",
            Self::Namespace => "the per-namespace cap (--max-per-namespace)",
            Self::Owner => "the per-owner cap (--max-owner-fraction of its replicas in flight)",
            Self::Cycle => "the per-cycle cap (--max-per-cycle)",
            Self::Hour => "the hourly cap (--max-per-hour)",
        })
    }
}

/// The counts of one cycle.
#[derive(Debug)]
pub struct CycleCaps {
    cfg: CapsConfig,
    hour_so_far: u32,
    cycle: u32,
    nodes: HashMap<String, u32>,
    namespaces: HashMap<String, u32>,
    owners: HashMap<String, u32>,
}

impl CycleCaps {
    /// A cycle's counts, starting from the evictions of the past hour.
    pub fn new(cfg: CapsConfig, evictions_past_hour: u32) -> Self {
        Self {
            cfg,
            hour_so_far: evictions_past_hour,
            cycle: 0,
            nodes: HashMap::new(),
            namespaces: HashMap::new(),
            owners: HashMap::new(),
        }
    }

    /// How many of an owner's `replicas` may be in flight at once.
    pub fn owner_limit(&self, replicas: u32) -> u32 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = (f64::from(replicas) * self.cfg.owner_fraction).floor() as u32;
        n.max(1)
    }

    /// Checks every cap for one move; `in_flight` is the owner's moves not
    /// yet landed (from its annotation).
    pub fn check(
        &self,
        node: &str,
        namespace: &str,
        owner: &str,
        replicas: u32,
        in_flight: u32,
    ) -> Result<(), Capped> {
        if self.hour_so_far >= self.cfg.per_hour {
            return Err(Capped::Hour);
        }
        if self.cycle >= self.cfg.per_cycle {
            return Err(Capped::Cycle);
        }
        if self.nodes.get(node).copied().unwrap_or(0) >= self.cfg.per_node {
            return Err(Capped::Node);
        }
        if self.namespaces.get(namespace).copied().unwrap_or(0) >= self.cfg.per_namespace {
            return Err(Capped::Namespace);
        }
        let owner_now = in_flight + self.owners.get(owner).copied().unwrap_or(0);
        if owner_now >= self.owner_limit(replicas) {
            return Err(Capped::Owner);
        }
        Ok(())
    }

    /// Counts a move (an accepted eviction, or one about to be tried).
    pub fn record(&mut self, node: &str, namespace: &str, owner: &str) {
        self.hour_so_far += 1;
        self.cycle += 1;
        *self.nodes.entry(node.to_owned()).or_default() += 1;
        *self.namespaces.entry(namespace.to_owned()).or_default() += 1;
        *self.owners.entry(owner.to_owned()).or_default() += 1;
    }

    /// Takes back a move that did not happen (PDB, error).
    pub fn unrecord(&mut self, node: &str, namespace: &str, owner: &str) {
        self.hour_so_far = self.hour_so_far.saturating_sub(1);
        self.cycle = self.cycle.saturating_sub(1);
        for (map, key) in [
            (&mut self.nodes, node),
            (&mut self.namespaces, namespace),
            (&mut self.owners, owner),
        ] {
            if let Some(v) = map.get_mut(key) {
                *v = v.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cap_binds() {
        let cfg = CapsConfig {
            per_node: 1,
            per_namespace: 2,
            owner_fraction: 0.5,
            per_cycle: 3,
            per_hour: 10,
        };
        let mut c = CycleCaps::new(cfg, 0);
        assert_eq!(c.check("n1", "a", "rs1", 4, 0), Ok(()));
        c.record("n1", "a", "rs1");
        assert_eq!(c.check("n1", "a", "rs1", 4, 0), Err(Capped::Node));
        assert_eq!(c.check("n2", "a", "rs1", 4, 0), Ok(()));
        // Two of four replicas in flight: the owner is full.
        assert_eq!(c.check("n2", "a", "rs1", 4, 1), Err(Capped::Owner));
        c.record("n2", "a", "rs1");
        assert_eq!(c.check("n3", "a", "rs2", 4, 0), Err(Capped::Namespace));
        c.record("n3", "b", "rs3");
        assert_eq!(c.check("n4", "c", "rs4", 4, 0), Err(Capped::Cycle));
        c.unrecord("n3", "b", "rs3");
        assert_eq!(c.check("n4", "c", "rs4", 4, 0), Ok(()));
        // A single replica may still move, one at a time.
        assert_eq!(c.owner_limit(1), 1);
        assert_eq!(
            CycleCaps::new(cfg, 10).check("n", "a", "o", 4, 0),
            Err(Capped::Hour)
        );
    }
}
