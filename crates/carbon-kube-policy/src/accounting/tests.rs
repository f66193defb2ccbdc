use super::*;
use carbon_kube_model::{CarbonIntensity, Forecast, Source};

const GB: i64 = 1_000_000_000;

fn zone(z: &str) -> ZoneId {
    ZoneId::parse(z).expect("zone")
}

fn node(name: &str, z: &str, cpu_millis: i64) -> NodeUse {
    NodeUse {
        name: name.into(),
        zone: Some(zone(z)),
        allocatable: Resources::new(cpu_millis, 16 * GB),
    }
}

fn pod(name: &str, node: &str, cpu_millis: i64, mem_gb: i64) -> PodUse {
    PodUse {
        namespace: "team-a".into(),
        name: name.into(),
        workload: Workload {
            kind: "Deployment".into(),
            name: "web".into(),
        },
        node: node.into(),
        requests: Resources::new(cpu_millis, mem_gb * GB),
        ..PodUse::default()
    }
}

fn flat(z: &str, g: f64) -> BTreeMap<ZoneId, ZoneInterval> {
    BTreeMap::from([(
        zone(z),
        ZoneInterval {
            g_per_kwh: g,
            signal: Signal::Average,
            stale: false,
        },
    )])
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn a_pod_that_requests_the_whole_node_costs_what_the_simulator_charges() {
    // One pod requests all 4 vCPUs and 16 GB for an hour, no usage known:
    // own + idle energy is exactly the simulator's job power for that hour.
    let cfg = AccountingConfig::default();
    let a = account_interval(
        &cfg,
        &[node("n1", "DE", 4000)],
        &[pod("p", "n1", 4000, 16)],
        &flat("DE", 400.0),
        &IntensityHistory::default(),
        0,
        3600,
    );
    let p = &a.pods[0];
    let sim_joules = cfg.energy.job_kw(4.0, 16.0) * 1000.0 * 3600.0;
    assert!(close(p.energy_joules + p.idle_joules, sim_joules), "{p:?}");
    assert_eq!(p.quality, DataQuality::Modelled);
    assert!(close(
        p.operational_grams + p.idle_grams,
        sim_joules / 3.6e6 * 400.0
    ));
    // Embodied: 4 vCPU-hours.
    assert!(close(p.embodied_grams, 4.0 * EMBODIED_G_PER_VCPU_HOUR));
    assert!(a.unallocated.is_empty(), "{:?}", a.unallocated);
}

#[test]
fn measured_joules_win_over_the_model_and_get_the_pue() {
    let cfg = AccountingConfig::default();
    let mut p = pod("p", "n1", 1000, 1);
    p.measured_joules = Some(3600.0);
    p.cpu_usage_cores = Some(3.0);
    let a = account_interval(
        &cfg,
        &[node("n1", "DE", 4000)],
        &[p],
        &flat("DE", 100.0),
        &IntensityHistory::default(),
        0,
        600,
    );
    let p = &a.pods[0];
    assert_eq!(p.quality, DataQuality::Measured);
    assert!(close(p.energy_joules, 3600.0 * cfg.energy.pue));
    assert!(close(
        p.operational_grams,
        3600.0 * cfg.energy.pue / 3.6e6 * 100.0
    ));
}

#[test]
fn usage_replaces_the_default_utilisation() {
    let cfg = AccountingConfig::default();
    let mut busy = pod("busy", "n1", 1000, 0);
    busy.cpu_usage_cores = Some(1.0);
    let mut idle = pod("idle", "n1", 1000, 0);
    idle.cpu_usage_cores = Some(0.0);
    let a = account_interval(
        &cfg,
        &[node("n1", "DE", 4000)],
        &[busy, idle],
        &flat("DE", 100.0),
        &IntensityHistory::default(),
        0,
        3600,
    );
    assert!(close(
        a.pods[0].energy_joules,
        cfg.energy.dynamic_cpu_kw(1.0) * 1000.0 * 3600.0
    ));
    assert_eq!(a.pods[1].energy_joules, 0.0);
    // Same requests, same idle share, whatever the usage.
    assert!(close(a.pods[0].idle_joules, a.pods[1].idle_joules));
}

#[test]
fn idle_and_embodied_split_by_requests_and_the_rest_is_unallocated() {
    let cfg = AccountingConfig::default();
    let n = node("n1", "DE", 8000);
    let a = account_interval(
        &cfg,
        &[n],
        &[pod("a", "n1", 1000, 0), pod("b", "n1", 3000, 0)],
        &flat("DE", 200.0),
        &IntensityHistory::default(),
        0,
        3600,
    );
    let node_idle = cfg.energy.idle_kw(8.0) * 1000.0 * 3600.0;
    let node_embodied = 8.0 * EMBODIED_G_PER_VCPU_HOUR;
    assert!(close(a.pods[0].idle_joules, node_idle / 8.0));
    assert!(close(a.pods[1].idle_joules, node_idle * 3.0 / 8.0));
    assert_eq!(a.unallocated.len(), 1);
    let rest = &a.unallocated[0];
    assert!(close(rest.idle_joules, node_idle / 2.0));
    let total_embodied = a.pods.iter().map(|p| p.embodied_grams).sum::<f64>() + rest.embodied_grams;
    assert!(close(total_embodied, node_embodied));
    assert!(close(rest.idle_grams, rest.idle_joules / 3.6e6 * 200.0));
}

#[test]
fn an_overcommitted_node_splits_all_of_its_idle_power() {
    let cfg = AccountingConfig::default();
    let a = account_interval(
        &cfg,
        &[node("n1", "DE", 2000)],
        &[pod("a", "n1", 2000, 0), pod("b", "n1", 2000, 0)],
        &flat("DE", 200.0),
        &IntensityHistory::default(),
        0,
        3600,
    );
    let node_idle = cfg.energy.idle_kw(2.0) * 1000.0 * 3600.0;
    assert!(close(
        a.pods[0].idle_joules + a.pods[1].idle_joules,
        node_idle
    ));
    assert!(a.unallocated.is_empty());
}

#[test]
fn no_intensity_keeps_the_energy_and_counts_no_grams() {
    let cfg = AccountingConfig::default();
    let mut n = node("n1", "DE", 4000);
    n.zone = None;
    let a = account_interval(
        &cfg,
        &[n],
        &[pod("p", "n1", 1000, 1), pod("orphan", "gone", 1000, 1)],
        &flat("DE", 200.0),
        &IntensityHistory::default(),
        0,
        60,
    );
    for p in &a.pods {
        assert!(p.energy_joules > 0.0);
        assert_eq!(p.intensity, None);
        assert_eq!(p.operational_grams, 0.0);
    }
    // A pod on an unknown node carries no idle or embodied share.
    assert_eq!(a.pods[1].idle_joules, 0.0);
    assert_eq!(a.pods[1].embodied_grams, 0.0);
    let mut usage = UsageDocument::default();
    let mut details = DetailsDocument::default();
    fold_into_documents(&a, &mut usage, &mut details);
    let d = &details.namespaces["team-a"][0];
    let energy: f64 = a.pods.iter().map(|p| p.energy_joules + p.idle_joules).sum();
    assert!(close(d.unknown_intensity_joules, energy));
}

fn record(g: f64, timestamp: UnixSeconds) -> ZoneRecord {
    ZoneRecord::new(
        CarbonIntensity::new(g).expect("intensity"),
        timestamp,
        Source::new(Source::ELECTRICITY_MAPS),
    )
}

#[test]
fn the_interval_intensity_weights_forecast_steps_and_falls_back_to_the_current_value() {
    let mut r = record(300.0, 0);
    r.forecast = Some(Forecast {
        start: 0,
        step_seconds: 3600,
        values: vec![
            CarbonIntensity::new(100.0).expect("ci"),
            CarbonIntensity::new(200.0).expect("ci"),
        ],
    });
    // Half in the first step, half in the second.
    let i = interval_intensity(&r, 1800, 5400, 1800);
    assert!(close(i.g_per_kwh, 150.0), "{i:?}");
    assert!(!i.stale);
    // Half in the second step, half past the forecast: the current value,
    // which is stale by then.
    let i = interval_intensity(&r, 5400, 9000, 1800);
    assert!(close(i.g_per_kwh, 250.0), "{i:?}");
    assert!(i.stale);
    // No forecast, fresh.
    let i = interval_intensity(&record(80.0, 100), 100, 160, 1800);
    assert!(close(i.g_per_kwh, 80.0) && !i.stale);
}

#[test]
fn a_marginal_record_is_labelled_marginal() {
    let mut r = record(500.0, 0);
    r.signal = Signal::Marginal;
    let snap = Snapshot {
        zones: BTreeMap::from([(zone("DE"), r)]),
    };
    let map = zone_intensities(&snap, [&zone("DE"), &zone("FR")], 0, 60, 1800);
    assert_eq!(map.len(), 1);
    assert_eq!(map[&zone("DE")].signal, Signal::Marginal);
    let a = account_interval(
        &AccountingConfig::default(),
        &[node("n1", "DE", 4000)],
        &[pod("p", "n1", 1000, 1)],
        &map,
        &IntensityHistory::default(),
        0,
        60,
    );
    let (mut usage, mut details) = (UsageDocument::default(), DetailsDocument::default());
    fold_into_documents(&a, &mut usage, &mut details);
    let p = &a.pods[0];
    assert!(close(
        details.namespaces["team-a"][0].marginal_grams,
        p.operational_grams + p.idle_grams
    ));
}

#[test]
fn history_means_hours_and_needs_half_the_interval() {
    let mut h = IntensityHistory::new(3);
    let de = zone("DE");
    h.observe(&de, 0, 3600, 100.0);
    h.observe(&de, 3600, 5400, 300.0);
    assert!(close(h.mean(&de, 0, 3600).expect("mean"), 100.0));
    assert!(close(h.mean(&de, 1800, 5400).expect("mean"), 200.0));
    // Only a third of [5400, 10800) was observed (hour 1 is half observed,
    // but its mean stands for the whole hour: 1800 s of 5400 s overlap).
    assert_eq!(h.mean(&de, 5400, 10800), None);
    assert_eq!(h.mean(&zone("FR"), 0, 3600), None);
    // Bounded: three hours back from the last observation.
    h.observe(&de, 5 * 3600, 5 * 3600 + 60, 50.0);
    assert_eq!(h.mean(&de, 0, 3600), None);
    let (back, bad) = IntensityHistory::from_document(&h.to_document(), 3);
    assert!(bad.is_empty());
    assert_eq!(back, h);
}

#[test]
fn a_deferred_pod_is_compared_with_its_zone_at_creation() {
    let de = zone("DE");
    let mut history = IntensityHistory::default();
    history.observe(&de, 0, 3600, 500.0);
    let mut p = pod("p", "n1", 4000, 0);
    p.deferred_seconds = Some(3 * 3600);
    let a = account_interval(
        &AccountingConfig::default(),
        &[node("n1", "DE", 4000)],
        &[p],
        &flat("DE", 100.0),
        &history,
        3 * 3600,
        4 * 3600,
    );
    let p = &a.pods[0];
    let s = p.savings.deferred.expect("deferred counterfactual");
    assert!(close(s.actual_grams, p.operational_grams + p.idle_grams));
    assert!(close(s.counterfactual_grams, s.actual_grams * 5.0));
    assert!(s.saved_grams() > 0.0);
    assert_eq!(p.savings.placed, None);
}

#[test]
fn a_placed_pod_is_compared_with_the_capacity_weighted_cluster_mean() {
    let mut intensities = flat("DE", 400.0);
    intensities.extend(flat("FR", 50.0));
    let mut p = pod("p", "fr", 1000, 0);
    p.carbon_placed = true;
    let a = account_interval(
        &AccountingConfig::default(),
        &[node("de", "DE", 12000), node("fr", "FR", 4000)],
        &[p, pod("q", "de", 1000, 0)],
        &intensities,
        &IntensityHistory::default(),
        0,
        3600,
    );
    let s = a.pods[0].savings.placed.expect("placed counterfactual");
    // Mean = (12 × 400 + 4 × 50) / 16 = 312.5 g/kWh.
    assert!(close(s.counterfactual_grams / s.actual_grams, 312.5 / 50.0));
    assert_eq!(a.pods[1].savings, PodSavings::default());
}

#[test]
fn documents_collect_days_and_keep_a_bounded_history() {
    let cfg = AccountingConfig::default();
    let (mut usage, mut details) = (UsageDocument::default(), DetailsDocument::default());
    let mut measured = pod("m", "n1", 1000, 0);
    measured.measured_joules = Some(100.0);
    for day in 0..40 {
        let from = day * 86_400 + 3600;
        let a = account_interval(
            &cfg,
            &[node("n1", "DE", 4000)],
            &[measured.clone()],
            &flat("DE", 100.0),
            &IntensityHistory::default(),
            from,
            from + 60,
        );
        fold_into_documents(&a, &mut usage, &mut details);
    }
    let days = &usage.namespaces["team-a"];
    assert_eq!(days.len(), USAGE_HISTORY_DAYS);
    assert_eq!(days[0].day_start, 5 * 86_400);
    assert!(days.windows(2).all(|w| w[0].day_start < w[1].day_start));
    assert_eq!(days[0].quality, DataQuality::Measured);
    assert!(days[0].total_grams() > 0.0);
    assert_eq!(details.unallocated.len(), USAGE_HISTORY_DAYS);
    // A modelled pod the same day makes the day modelled.
    let a = account_interval(
        &cfg,
        &[node("n1", "DE", 4000)],
        &[pod("x", "n1", 1000, 0)],
        &flat("DE", 100.0),
        &IntensityHistory::default(),
        39 * 86_400 + 7200,
        39 * 86_400 + 7260,
    );
    fold_into_documents(&a, &mut usage, &mut details);
    let last = usage.namespaces["team-a"].last().expect("day");
    assert_eq!(last.quality, DataQuality::Modelled);
    let d = details.namespaces["team-a"].last().expect("day");
    assert!(d.measured_joules > 0.0 && d.modelled_joules > 0.0);
}

/// The embodied coefficient is what Cloud Carbon Footprint's data gives:
/// the mean over AWS instance types of platform embodied kgCO2eq over a
/// 4-year life and the platform's vCPUs.
#[test]
fn the_embodied_coefficient_is_derived_from_ccf_data() {
    let dir = crate::shared_data().join("coefficients/cloud_carbon_footprint");
    let embodied = std::fs::read_to_string(dir.join("output/coefficients-aws-embodied.csv"))
        .expect("CCF embodied coefficients (CARBON_KUBE_SHARED_DATA)");
    let instances =
        std::fs::read_to_string(dir.join("data/aws-instances.csv")).expect("CCF aws-instances.csv");
    // aws-instances.csv quotes decimal commas; the first four columns are plain.
    let platform_vcpus: HashMap<String, f64> = instances
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(5, ',').collect();
            Some((f.first()?.to_string(), f.get(3)?.parse().ok()?))
        })
        .collect();
    let mut per_vcpu_hour = Vec::new();
    for line in embodied.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (Some(t), Some(total)) = (f.get(1), f.last().and_then(|v| v.parse::<f64>().ok()))
        else {
            continue;
        };
        if let Some(v) = platform_vcpus.get(*t).filter(|v| **v > 0.0) {
            per_vcpu_hour.push(total * 1000.0 / (4.0 * 8760.0) / v);
        }
    }
    assert!(per_vcpu_hour.len() > 500, "{}", per_vcpu_hour.len());
    let mean = per_vcpu_hour.iter().sum::<f64>() / per_vcpu_hour.len() as f64;
    assert!(
        (mean - EMBODIED_G_PER_VCPU_HOUR).abs() < 0.005,
        "CCF data gives {mean:.4} g per vCPU-hour"
    );
}
