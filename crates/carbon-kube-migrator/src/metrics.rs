//! Prometheus metrics of the migrator.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set with one `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The result.
    pub result: String,
}

/// The migrator's metrics.
#[derive(Clone)]
pub struct MigratorMetrics {
    /// `carbon_kube_migrations_total{result}`: one per decision about an
    /// eligible pod per cycle (`migrated`, `dry_run`, `skipped_no_target`,
    /// `skipped_not_worth_it`, `skipped_dwell`, `skipped_ping_pong`,
    /// `skipped_stale_data`, `blocked_pdb`, `capped`, `failed`).
    pub migrations: Family<ResultLabels, Counter>,
    /// `carbon_kube_migration_expected_savings_grams_total`: expected net
    /// saving (saving − cost) of accepted evictions, grams CO2e.
    pub expected_savings_grams: Counter<f64, AtomicU64>,
    /// `carbon_kube_migration_landings_total{result}`: where replacements
    /// landed (`planned`, `elsewhere`, `not_seen`).
    pub landings: Family<ResultLabels, Counter>,
    /// `carbon_kube_migrator_leader`: 1 on the replica that acts.
    pub leader: Gauge,
    /// `carbon_kube_migrator_cycles_total`: completed cycles.
    pub cycles: Counter,
    /// `carbon_kube_migrator_snapshot_errors_total{error}` (`unreadable`,
    /// `bad_zone`): problems in the snapshot ConfigMap.
    pub snapshot_errors: carbon_kube_k8s::SnapshotErrors,
    /// `carbon_kube_migrator_setting{setting,source}` and
    /// `carbon_kube_migrator_override_errors_total` (see [`crate::overrides`]).
    pub overrides: crate::overrides::OverrideMetrics,
}

impl MigratorMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            migrations: Family::default(),
            expected_savings_grams: Counter::default(),
            landings: Family::default(),
            leader: Gauge::default(),
            cycles: Counter::default(),
            snapshot_errors: carbon_kube_k8s::SnapshotErrors::register(
                registry,
                "carbon_kube_migrator_snapshot_errors",
            ),
            overrides: crate::overrides::OverrideMetrics::register(registry),
        };
        registry.register(
            "carbon_kube_migrations",
            "Migration decisions about eligible pods, by result (migrated, dry_run, skipped_*, blocked_pdb, capped, failed)",
            m.migrations.clone(),
        );
        registry.register(
            "carbon_kube_migration_expected_savings_grams",
            "Expected net saving (saving minus restart, lost work and disruption cost) of accepted evictions, grams CO2e",
            m.expected_savings_grams.clone(),
        );
        registry.register(
            "carbon_kube_migration_landings",
            "Replacements of migrated pods by where they landed (planned zone, elsewhere, not_seen within the landing timeout)",
            m.landings.clone(),
        );
        registry.register(
            "carbon_kube_migrator_leader",
            "1 if this migrator replica holds the lease and acts",
            m.leader.clone(),
        );
        registry.register(
            "carbon_kube_migrator_cycles",
            "Completed migrator cycles",
            m.cycles.clone(),
        );
        for r in [
            "migrated",
            "skipped_no_target",
            "skipped_not_worth_it",
            "blocked_pdb",
            "capped",
            "failed",
        ] {
            let _ = m.migrations.get_or_create(&ResultLabels {
                result: r.to_owned(),
            });
        }
        for r in ["planned", "elsewhere", "not_seen"] {
            let _ = m.landings.get_or_create(&ResultLabels {
                result: r.to_owned(),
            });
        }
        m
    }

    /// Counts one decision.
    pub fn migration(&self, result: &str) {
        self.migrations
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts one landing.
    pub fn landing(&self, result: &str) {
        self.landings
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}
