use std::collections::BTreeMap;

use carbon_kube_model::{CarbonIntensity, Forecast, Snapshot, Source, ZoneId, ZoneRecord, keys};

use super::*;
use crate::placement::tests::year;
use crate::zone_map::{NodeView, RegionZoneMap, ZoneResolution, node_zone};

const H: i64 = 3600;
const T0: i64 = 1_700_000_000 / H * H;
const GIB: i64 = 1 << 30;

fn zone(z: &str) -> ZoneId {
    ZoneId::parse(z).unwrap()
}

/// A record measured at `at` whose forecast starts there, one value per hour.
fn record_at(at: i64, hourly: &[f64]) -> ZoneRecord {
    let mut r = ZoneRecord::new(
        CarbonIntensity::new(hourly[0]).unwrap(),
        at,
        Source::new(Source::ELECTRICITY_MAPS),
    );
    r.forecast = Some(Forecast {
        start: at,
        step_seconds: 3600,
        values: hourly
            .iter()
            .map(|v| CarbonIntensity::new(*v).unwrap())
            .collect(),
    });
    r
}

fn snapshot(zones: &[(&str, &[f64])]) -> Snapshot {
    let mut s = Snapshot::default();
    for (z, v) in zones {
        s.zones.insert(zone(z), record_at(T0, v));
    }
    s
}

fn node(name: &str, z: &str, free_cpu: i64) -> (NodeView, ZoneResolution) {
    let mut labels = BTreeMap::new();
    labels.insert(keys::LABEL_GRID_ZONE.to_owned(), z.to_owned());
    let n = NodeView {
        name: name.to_owned(),
        labels,
        provider_id: None,
        allocatable: Resources::new(8000, 32 * GIB),
        requested: Resources::new(8000 - free_cpu, 0),
    };
    let r = node_zone(&n, &RegionZoneMap::default());
    (n, r)
}

/// A 4-CPU, 16 GiB replica (about 20 W with the default energy model).
fn pod() -> PodView {
    PodView {
        name: "web-1".into(),
        namespace: "shop".into(),
        annotations: BTreeMap::new(),
        requests: Resources::new(4000, 16 * GIB),
    }
}

struct Case {
    nodes: Vec<(NodeView, ZoneResolution)>,
    pod: PodView,
    kind: WorkloadKind,
    started_at: i64,
    remaining: Option<i64>,
    deadline: Option<i64>,
    moves: Vec<OwnerMove>,
    pod_last_moved: Option<i64>,
    replicas: u32,
}

impl Case {
    fn new() -> Self {
        Self {
            nodes: vec![
                node("de-1", "DE", 8000),
                node("fr-1", "FR", 8000),
                node("fr-2", "FR", 2000),
                node("gb-1", "GB", 8000),
            ],
            pod: pod(),
            kind: WorkloadKind::Stateless,
            started_at: T0 - 10 * H,
            remaining: None,
            deadline: None,
            moves: Vec::new(),
            pod_last_moved: None,
            replicas: 1,
        }
    }

    fn decide(&self, s: &Snapshot, cfg: &MigrationConfig) -> MigrationDecision {
        self.decide_at(T0, s, cfg)
    }

    fn decide_at(&self, now: i64, s: &Snapshot, cfg: &MigrationConfig) -> MigrationDecision {
        let candidates: Vec<Candidate<'_>> = self
            .nodes
            .iter()
            .map(|(node, zone)| Candidate { node, zone })
            .collect();
        let de = zone("DE");
        let req = MigrationRequest {
            now,
            pod: &self.pod,
            kind: self.kind,
            started_at: self.started_at,
            last_checkpoint: None,
            expected_remaining_seconds: self.remaining,
            deadline: self.deadline,
            current_node: "de-1",
            current_zone: Some(&de),
            candidates: &candidates,
            history: MoveHistory {
                pod_last_moved: self.pod_last_moved,
                owner_moves: &self.moves,
                owner_replicas: self.replicas,
            },
        };
        decide_migration(
            &req,
            s,
            &PlacementConfig::default(),
            &EnergyModel::default(),
            cfg,
        )
    }
}

fn dirty_de() -> Snapshot {
    snapshot(&[
        ("DE", &[450.0; 12]),
        ("FR", &[50.0; 12]),
        ("GB", &[200.0; 12]),
    ])
}

#[test]
fn a_replica_in_a_dirty_zone_moves_to_the_cleanest_feasible_zone() {
    let d = Case::new().decide(&dirty_de(), &MigrationConfig::default());
    let MigrationDecision::Migrate(plan) = &d else {
        panic!("{}", d.explain())
    };
    assert_eq!(plan.target_zone, zone("FR"));
    // fr-2 has 2 CPUs free: no room for a 4-CPU pod.
    assert_eq!(plan.target_nodes, ["fr-1"]);
    let n = &plan.numbers;
    // 4 vCPUs × (1.135 + 0.5 × 3.205) W + 17.18 GB × 0.392 W, × PUE 1.135.
    assert!((n.pod_kw - 0.02006).abs() < 1e-4, "{}", n.pod_kw);
    assert_eq!(n.counted_seconds, 6 * H);
    assert!((n.saving_grams - 400.0 * n.pod_kw * 6.0).abs() < 1e-9);
    assert!((n.restart_grams - n.pod_kw * (120.0 / 3600.0) * 50.0).abs() < 1e-9);
    assert_eq!(n.lost_work_grams, 0.0);
    assert_eq!(d.metric_label(), "migrated");
    let text = d.explain();
    assert!(
        text.starts_with("move DE → FR: saving 48.2 g over 6h (450 → 50 g/kWh"),
        "{text}"
    );
}

/// Regression (scale bench, 50,000 pods, 2,500 target nodes): a plan named
/// five nodes but kept the buffer of the whole zone's ranking, so the plans
/// of one cycle held 2.9 GiB.
#[test]
fn a_plan_holds_room_for_its_few_target_nodes_only() {
    let mut case = Case::new();
    for i in 0..2000 {
        case.nodes.push(node(&format!("fr-big-{i}"), "FR", 8000));
    }
    let d = case.decide(&dirty_de(), &MigrationConfig::default());
    let MigrationDecision::Migrate(plan) = &d else {
        panic!("{}", d.explain())
    };
    assert_eq!(plan.target_nodes.len(), MAX_TARGET_NODES);
    assert!(
        plan.target_nodes.capacity() <= MAX_TARGET_NODES,
        "capacity {}",
        plan.target_nodes.capacity()
    );
}

#[test]
fn a_small_pod_whose_move_does_not_pay_stays() {
    let mut c = Case::new();
    c.pod.requests = Resources::new(100, 128 << 20);
    let d = c.decide(&dirty_de(), &MigrationConfig::default());
    assert!(
        matches!(
            d,
            MigrationDecision::Skip {
                reason: SkipReason::NotWorthIt,
                ..
            }
        ),
        "{}",
        d.explain()
    );
    assert_eq!(d.metric_label(), "skipped_not_worth_it");
    assert!(d.explain().contains("does not pay"), "{}", d.explain());
    // The same pod with no disruption penalty pays.
    let cfg = MigrationConfig {
        disruption_penalty_grams: 0.0,
        min_net_saving_grams: 0.0,
        ..MigrationConfig::default()
    };
    assert!(matches!(
        c.decide(&dirty_de(), &cfg),
        MigrationDecision::Migrate(_)
    ));
}

#[test]
fn a_batch_pod_pays_for_the_work_it_would_redo() {
    let mut c = Case::new();
    c.kind = WorkloadKind::Batch;
    c.remaining = Some(H);
    // Ten hours of work lost (no checkpoint), redone at 50 g/kWh, against
    // one hour of saving 400 g/kWh.
    let d = c.decide(&dirty_de(), &MigrationConfig::default());
    assert!(
        matches!(
            d,
            MigrationDecision::Skip {
                reason: SkipReason::NotWorthIt,
                ..
            }
        ),
        "{}",
        d.explain()
    );
    assert!(d.numbers().lost_work_grams > d.numbers().saving_grams);
    // Started 10 minutes ago (past a zero dwell): pays.
    c.started_at = T0 - 600;
    let cfg = MigrationConfig {
        min_dwell_seconds: 0,
        ..MigrationConfig::default()
    };
    assert!(matches!(
        c.decide(&dirty_de(), &cfg),
        MigrationDecision::Migrate(_)
    ));
}

#[test]
fn a_move_never_pushes_a_pod_past_its_deadline() {
    // A Job's pod 10 minutes in, 2 h left: a replacement restarts (120 s),
    // redoes the 10 minutes and runs the 2 h.
    let mut c = Case::new();
    c.kind = WorkloadKind::Batch;
    c.started_at = T0 - 600;
    c.remaining = Some(2 * H);
    let cfg = MigrationConfig {
        min_dwell_seconds: 0,
        ..MigrationConfig::default()
    };
    let finish = T0 + 120 + 600 + 2 * H;
    c.deadline = Some(finish);
    assert!(matches!(
        c.decide(&dirty_de(), &cfg),
        MigrationDecision::Migrate(_)
    ));
    // One second less and the move would miss it.
    c.deadline = Some(finish - 1);
    let d = c.decide(&dirty_de(), &cfg);
    assert_eq!(
        d,
        MigrationDecision::Skip {
            reason: SkipReason::Deadline {
                would_finish: Some(finish),
                deadline: finish - 1
            },
            numbers: d.numbers().clone()
        }
    );
    assert_eq!(d.metric_label(), "skipped_deadline");
    assert!(
        d.explain().contains("after its deadline"),
        "{}",
        d.explain()
    );
    // A deadline without an expected remaining run: never moved.
    c.remaining = None;
    c.deadline = Some(T0 + 100 * H);
    let d = c.decide(&dirty_de(), &cfg);
    assert!(
        matches!(
            d,
            MigrationDecision::Skip {
                reason: SkipReason::Deadline {
                    would_finish: None,
                    ..
                },
                ..
            }
        ),
        "{}",
        d.explain()
    );
}

#[test]
fn young_or_recently_moved_pods_stay_for_the_dwell() {
    let mut c = Case::new();
    c.started_at = T0 - 600;
    let d = c.decide(&dirty_de(), &MigrationConfig::default());
    assert_eq!(
        d,
        MigrationDecision::Skip {
            reason: SkipReason::Dwell {
                until: T0 - 600 + 3600
            },
            numbers: d.numbers().clone()
        }
    );
    c.started_at = T0 - 10 * H;
    c.pod_last_moved = Some(T0 - 60);
    assert!(matches!(
        c.decide(&dirty_de(), &MigrationConfig::default()),
        MigrationDecision::Skip {
            reason: SkipReason::Dwell { .. },
            ..
        }
    ));
}

#[test]
fn stale_or_missing_source_data_never_moves_anything() {
    let c = Case::new();
    let cfg = MigrationConfig::default();
    // One hour later with records measured at T0: older than 30 min.
    let d = c.decide_at(T0 + H, &dirty_de(), &cfg);
    assert!(
        matches!(
            d,
            MigrationDecision::Skip {
                reason: SkipReason::StaleData,
                ..
            }
        ),
        "{}",
        d.explain()
    );
    assert_eq!(d.metric_label(), "skipped_stale_data");
    let no_de = snapshot(&[("FR", &[50.0; 12])]);
    assert!(matches!(
        c.decide(&no_de, &cfg),
        MigrationDecision::Skip {
            reason: SkipReason::StaleData,
            ..
        }
    ));
    // A stale target is not a target.
    let mut s = dirty_de();
    s.zones
        .insert(zone("FR"), record_at(T0 - 2 * H, &[50.0; 12]));
    s.zones.remove(&zone("GB"));
    let d = c.decide(&s, &cfg);
    assert!(
        matches!(
            d,
            MigrationDecision::Skip {
                reason: SkipReason::NoTarget { .. },
                ..
            }
        ),
        "{}",
        d.explain()
    );
}

#[test]
fn no_target_when_nothing_is_strictly_greener_or_has_room() {
    let c = Case::new();
    let cfg = MigrationConfig::default();
    let close = snapshot(&[
        ("DE", &[300.0; 12]),
        ("FR", &[290.0; 12]),
        ("GB", &[295.0; 12]),
    ]);
    let d = c.decide(&close, &cfg);
    assert!(
        matches!(
            d,
            MigrationDecision::Skip {
                reason: SkipReason::NoTarget { .. },
                ..
            }
        ),
        "{}",
        d.explain()
    );
    assert_eq!(d.metric_label(), "skipped_no_target");
    let mut full = Case::new();
    full.nodes = vec![node("de-1", "DE", 8000), node("fr-2", "FR", 2000)];
    assert!(matches!(
        full.decide(&dirty_de(), &cfg),
        MigrationDecision::Skip {
            reason: SkipReason::NoTarget { .. },
            ..
        }
    ));
}

#[test]
fn the_forecast_over_the_remaining_run_decides_not_the_current_value() {
    // FR is clean now but dirty for the next five hours: a 6-hour run stays.
    let mut fr = vec![50.0];
    fr.extend([600.0; 11]);
    let s = snapshot(&[("DE", &[450.0; 12]), ("FR", &fr)]);
    let mut c = Case::new();
    c.nodes.pop();
    let d = c.decide(&s, &MigrationConfig::default());
    assert!(
        matches!(
            d,
            MigrationDecision::Skip {
                reason: SkipReason::NoTarget { .. },
                ..
            }
        ),
        "{}",
        d.explain()
    );
}

#[test]
fn an_owner_never_goes_back_to_a_zone_it_left_within_its_memory() {
    let mut c = Case::new();
    c.moves = vec![OwnerMove {
        at: T0 - 2 * H,
        from: zone("FR"),
        to: zone("DE"),
    }];
    // GB is still a target.
    let d = c.decide(&dirty_de(), &MigrationConfig::default());
    let MigrationDecision::Migrate(plan) = &d else {
        panic!("{}", d.explain())
    };
    assert_eq!(plan.target_zone, zone("GB"));
    // Without GB, FR is excluded: ping-pong.
    c.nodes.pop();
    let d = c.decide(&dirty_de(), &MigrationConfig::default());
    assert!(
        matches!(&d, MigrationDecision::Skip { reason: SkipReason::PingPong { zone: Some(z), .. }, .. } if *z == zone("FR")),
        "{}",
        d.explain()
    );
    // Forgotten after the memory.
    c.moves[0].at = T0 - 7 * H;
    assert!(matches!(
        c.decide(&dirty_de(), &MigrationConfig::default()),
        MigrationDecision::Migrate(_)
    ));
    // Too many moves lately.
    c.moves = (0..3)
        .map(|i| OwnerMove {
            at: T0 - i * H,
            from: zone("GB"),
            to: zone("DE"),
        })
        .collect();
    assert!(matches!(
        c.decide(&dirty_de(), &MigrationConfig::default()),
        MigrationDecision::Skip {
            reason: SkipReason::PingPong { zone: None, .. },
            ..
        }
    ));
    // The budget is per replica: a Deployment of two may move six times.
    c.replicas = 2;
    assert!(matches!(
        c.decide(&dirty_de(), &MigrationConfig::default()),
        MigrationDecision::Migrate(_)
    ));
}

#[test]
fn eligibility_rules() {
    let ok = PodFacts {
        namespace: "shop".into(),
        owner: Some(OwnerKind::ReplicaSet),
        opted_in: true,
        ..PodFacts::default()
    };
    assert_eq!(eligibility(&ok), Ok(WorkloadKind::Stateless));
    let with = |f: &dyn Fn(&mut PodFacts)| {
        let mut p = ok.clone();
        f(&mut p);
        eligibility(&p)
    };
    assert_eq!(with(&|p| p.opted_in = false), Err(Ineligible::NotOptedIn));
    assert_eq!(with(&|p| p.owner = None), Err(Ineligible::BarePod));
    assert_eq!(
        with(&|p| p.owner = Some(OwnerKind::DaemonSet)),
        Err(Ineligible::DaemonSet)
    );
    assert_eq!(with(&|p| p.mirror = true), Err(Ineligible::MirrorOrStatic));
    assert_eq!(
        with(&|p| p.owner = Some(OwnerKind::Node)),
        Err(Ineligible::MirrorOrStatic)
    );
    assert_eq!(
        with(&|p| p.namespace = "kube-system".into()),
        Err(Ineligible::KubeSystem)
    );
    assert_eq!(
        with(&|p| p.system_critical = true),
        Err(Ineligible::SystemCritical)
    );
    assert_eq!(
        with(&|p| p.local_storage = true),
        Err(Ineligible::LocalStorage)
    );
    assert_eq!(
        with(&|p| p.owner = Some(OwnerKind::StatefulSet)),
        Err(Ineligible::StatefulWithoutOptIn)
    );
    assert_eq!(
        with(&|p| {
            p.owner = Some(OwnerKind::StatefulSet);
            p.stateful_opt_in = true;
        }),
        Ok(WorkloadKind::Stateful)
    );
    assert_eq!(
        with(&|p| p.owner = Some(OwnerKind::Job)),
        Err(Ineligible::JobWouldNotRecreate)
    );
    assert_eq!(
        with(&|p| {
            p.owner = Some(OwnerKind::Job);
            p.job_recreates = true;
        }),
        Ok(WorkloadKind::Batch)
    );
    assert_eq!(with(&|p| p.opted_out = true), Err(Ineligible::OptedOut));
    assert_eq!(with(&|p| p.not_running = true), Err(Ineligible::NotRunning));
}

#[test]
fn config_validation_names_every_bad_field() {
    assert_eq!(MigrationConfig::default().validate(), Ok(()));
    let bad = MigrationConfig {
        margin: -1.0,
        max_owner_moves: 0,
        horizon_seconds: 0,
        ..MigrationConfig::default()
    };
    let errs = bad.validate().unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(errs[0].starts_with("margin:"));
    let parsed: MigrationConfig =
        serde_json::from_str(r#"{"minDwellSeconds": 60, "margin": 1.0}"#).unwrap();
    assert_eq!(parsed.min_dwell_seconds, 60);
    assert!(serde_json::from_str::<MigrationConfig>(r#"{"dwell": 1}"#).is_err());
}

/// A year of real hourly data (Electricity Maps 2023, California and Texas,
/// whose intensities cross about 300 times), with the actual values as a
/// perfect forecast: every move the rule makes must save more than it costs
/// in the actual data, it must move some of the time, and a replica never
/// moves within the dwell nor more than `maxOwnerMoves` times within the
/// owner's memory.
#[test]
fn on_a_real_year_every_move_pays_and_none_loops() {
    let ca = year("US-CAL-CISO");
    let tx = year("US-TEX-ERCO");
    let energy = EnergyModel::default();
    let cfg = MigrationConfig::default();
    let nodes = [
        node("ca-1", "US-CAL-CISO", 8000),
        node("tx-1", "US-TEX-ERCO", 8000),
    ];
    let candidates: Vec<Candidate<'_>> = nodes
        .iter()
        .map(|(node, zone)| Candidate { node, zone })
        .collect();
    let p = pod();
    let mut current = 0usize; // index into nodes
    let mut started = ca[0].time - 10 * H;
    let mut moves: Vec<OwnerMove> = Vec::new();
    let mut migrated = 0;
    let mut net_actual = 0.0;
    for i in 0..ca.len() - 6 {
        let now = ca[i].time;
        let mut s = Snapshot::default();
        for (z, hours) in [("US-CAL-CISO", &ca), ("US-TEX-ERCO", &tx)] {
            let window: Vec<f64> = hours[i..i + 6].iter().map(|h| h.direct).collect();
            s.zones.insert(zone(z), record_at(now, &window));
        }
        let here = nodes[current].1.zone.clone().unwrap();
        let req = MigrationRequest {
            now,
            pod: &p,
            kind: WorkloadKind::Stateless,
            started_at: started,
            last_checkpoint: None,
            expected_remaining_seconds: None,
            deadline: None,
            current_node: &nodes[current].0.name,
            current_zone: Some(&here),
            candidates: &candidates,
            history: MoveHistory {
                pod_last_moved: None,
                owner_moves: &moves,
                owner_replicas: 1,
            },
        };
        let d = decide_migration(&req, &s, &PlacementConfig::default(), &energy, &cfg);
        if let MigrationDecision::Migrate(plan) = d {
            assert!(now - started >= cfg.min_dwell_seconds);
            let n = &plan.numbers;
            assert!(n.saving_grams >= n.cost_grams() * 1.5, "{n:?}");
            // Perfect forecast: the actual saving over the counted run.
            let (src, dst) = if current == 0 { (&ca, &tx) } else { (&tx, &ca) };
            let actual: f64 = (i..i + 6)
                .map(|k| (src[k].direct - dst[k].direct) * n.pod_kw)
                .sum();
            assert!((actual - n.saving_grams).abs() < 1e-6, "{actual} vs {n:?}");
            net_actual += actual - n.cost_grams();
            moves.push(OwnerMove {
                at: now,
                from: here.clone(),
                to: plan.target_zone.clone(),
            });
            current = 1 - current;
            started = now;
            migrated += 1;
        }
    }
    assert!(migrated > 10, "{migrated} moves in a year");
    assert!(net_actual > 0.0);
    // Never more than maxOwnerMoves within the owner memory.
    for w in moves.windows(cfg.max_owner_moves as usize + 1) {
        assert!(w[w.len() - 1].at - w[0].at >= cfg.owner_memory_seconds);
    }
}
