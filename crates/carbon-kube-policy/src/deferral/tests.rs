use super::*;
use std::collections::BTreeMap;

use carbon_kube_model::{CarbonIntensity, Forecast, Source, ZoneRecord};

const H: i64 = 3600;
const T0: i64 = 1_700_000_000 / H * H; // on the hour

fn zone(z: &str) -> ZoneId {
    ZoneId::parse(z).unwrap()
}

/// A record measured at `T0` whose forecast starts at `T0` with one value per hour.
fn record(hourly: &[f64]) -> ZoneRecord {
    let mut r = ZoneRecord::new(
        CarbonIntensity::new(hourly[0]).unwrap(),
        T0,
        Source::new(Source::ELECTRICITY_MAPS),
    );
    r.forecast = Some(Forecast {
        start: T0,
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
        s.zones.insert(zone(z), record(v));
    }
    s
}

fn request(deadline_h: i64, duration_h: i64) -> DeferralRequest<'static> {
    DeferralRequest {
        now: T0,
        deadline: T0 + deadline_h * H,
        expected_duration_seconds: duration_h * H,
        zones: &[],
        requests: Resources::new(1000, 1 << 30),
        nodes: &[],
        budget: crate::budget::BudgetPressure::None,
    }
}

/// 300 g/kWh, with a dip to 100 at hours `dip..dip+3`.
fn with_dip(len: usize, dip: usize) -> Vec<f64> {
    (0..len)
        .map(|h| {
            if (dip..dip + 3).contains(&h) {
                100.0
            } else {
                300.0
            }
        })
        .collect()
}

#[test]
fn defers_to_the_green_window_before_the_deadline() {
    let s = snapshot(&[("DE", &with_dip(24, 5))]);
    let plan = plan_release(
        &request(12, 2),
        &s,
        &CapacityLedger::new(H),
        &DeferralConfig::default(),
    );
    assert_eq!(plan.reason, ReleaseReason::GreenWindow);
    assert_eq!(plan.release_at, T0 + 5 * H);
    assert_eq!(plan.zone, Some(zone("DE")));
    assert_eq!(plan.expected_g_per_kwh, Some(100.0));
    assert_eq!(plan.now_g_per_kwh, Some(300.0));
    assert!(!plan.is_due(T0 + 5 * H - 1) && plan.is_due(T0 + 5 * H));
    assert!((plan.expected_saving_fraction() - 2.0 / 3.0).abs() < 1e-9);
    assert!(
        plan.explain()
            .starts_with("deferred until 2023-11-15 03:00 UTC: "),
        "{}",
        plan.explain()
    );
    assert!(
        plan.explain()
            .contains("forecast 100 g/kWh in DE vs 300 now")
    );
}

#[test]
fn never_plans_past_the_latest_start() {
    // The dip starts at hour 10, but a 4 h job due at hour 12 must start by hour 8.
    let s = snapshot(&[("DE", &with_dip(24, 10))]);
    let cfg = DeferralConfig::default();
    let plan = plan_release(&request(12, 4), &s, &CapacityLedger::new(H), &cfg);
    assert!(plan.release_at <= plan.latest_start - cfg.start_safety_seconds);
    assert_eq!(plan.latest_start, T0 + 8 * H);
    // A window straddling the latest start is taken partly (hour 7 start
    // catches two hours of the dip) or not at all, never after it.
    for deadline in 1..20 {
        let p = plan_release(&request(deadline, 2), &s, &CapacityLedger::new(H), &cfg);
        assert!(
            p.release_at <= (T0 + (deadline - 2) * H - cfg.start_safety_seconds).max(T0),
            "deadline {deadline}: {p:?}"
        );
    }
}

#[test]
fn releases_for_the_deadline_whatever_the_data_says() {
    let s = snapshot(&[("DE", &with_dip(24, 5))]);
    // Latest start is now: release now for the deadline.
    let plan = plan_release(
        &request(2, 2),
        &s,
        &CapacityLedger::new(H),
        &DeferralConfig::default(),
    );
    assert_eq!(plan.reason, ReleaseReason::Deadline);
    assert_eq!(plan.release_at, T0);
    // A deadline in the past too.
    let plan = plan_release(
        &request(-5, 2),
        &s,
        &CapacityLedger::new(H),
        &DeferralConfig::default(),
    );
    assert_eq!(plan.reason, ReleaseReason::Deadline);
    assert!(plan.explain().starts_with("released for its deadline"));
}

#[test]
fn fails_open_without_fresh_data() {
    let cfg = DeferralConfig::default();
    let plan = plan_release(
        &request(12, 2),
        &Snapshot::default(),
        &CapacityLedger::new(H),
        &cfg,
    );
    assert_eq!((plan.reason, plan.release_at), (ReleaseReason::NoData, T0));
    assert_eq!(plan.reason.metric_label(), "no_data");
    // Stale data is no data.
    let s = snapshot(&[("DE", &with_dip(24, 5))]);
    let mut req = request(60, 2);
    req.now = T0 + cfg.max_data_age_seconds + 1;
    let plan = plan_release(&req, &s, &CapacityLedger::new(H), &cfg);
    assert_eq!(plan.reason, ReleaseReason::NoData);
    // Data only for zones the pod may not use is no data either.
    let only_gb = [zone("GB")];
    let mut req = request(12, 2);
    req.zones = &only_gb;
    assert_eq!(
        plan_release(&req, &s, &CapacityLedger::new(H), &cfg).reason,
        ReleaseReason::NoData
    );
}

#[test]
fn the_error_margin_keeps_a_slightly_better_far_window_from_winning() {
    // 5 % cleaner, 20 hours ahead.
    let mut v = vec![300.0; 30];
    v[20] = 285.0;
    v[21] = 285.0;
    let s = snapshot(&[("DE", &v)]);
    let strict = DeferralConfig::default();
    let p = plan_release(&request(29, 2), &s, &CapacityLedger::new(H), &strict);
    assert_eq!(p.reason, ReleaseReason::NowIsBest);
    assert_eq!(p.reason.metric_label(), "green_window");
    let trusting = DeferralConfig {
        error_margin_per_hour: 0.0,
        min_saving_fraction: 0.01,
        ..DeferralConfig::default()
    };
    let p = plan_release(&request(29, 2), &s, &CapacityLedger::new(H), &trusting);
    assert_eq!(
        (p.reason, p.release_at),
        (ReleaseReason::GreenWindow, T0 + 20 * H)
    );
}

#[test]
fn picks_the_cleanest_allowed_zone() {
    let s = snapshot(&[
        ("DE", &[300.0; 24]),
        ("FR", &[50.0; 24]),
        ("GB", &with_dip(24, 3)),
    ]);
    let cfg = DeferralConfig::default();
    let p = plan_release(&request(12, 2), &s, &CapacityLedger::new(H), &cfg);
    assert_eq!(
        (p.reason, p.zone.clone()),
        (ReleaseReason::NowIsBest, Some(zone("FR")))
    );
    let allowed = [zone("DE"), zone("GB")];
    let mut req = request(12, 2);
    req.zones = &allowed;
    let p = plan_release(&req, &s, &CapacityLedger::new(H), &cfg);
    assert_eq!(
        (p.reason, p.zone, p.release_at),
        (ReleaseReason::GreenWindow, Some(zone("GB")), T0 + 3 * H)
    );
}

#[test]
fn promised_capacity_spreads_a_crowd_over_windows() {
    // Two dips; each hour of zone DE can take 10 cores (9 after headroom).
    let mut v = vec![400.0; 48];
    for h in [5, 6, 7] {
        v[h] = 100.0;
    }
    for h in [20, 21, 22] {
        v[h] = 150.0;
    }
    let s = snapshot(&[("DE", &v)]);
    let cfg = DeferralConfig::default();
    let mut ledger = CapacityLedger::new(H);
    ledger.set_capacity(zone("DE"), 11_250);
    let mut per_start: BTreeMap<i64, u32> = BTreeMap::new();
    for _ in 0..100 {
        let p = plan_release(&request(40, 1), &s, &ledger, &cfg);
        if p.reason == ReleaseReason::GreenWindow {
            ledger.promise(
                &zone("DE"),
                p.release_at,
                H,
                Resources::new(1000, 0),
                p.latest_start,
                &[],
            );
        }
        *per_start.entry(p.release_at).or_default() += 1;
    }
    // Nine per dip hour, then the second dip, then the rest released now.
    for h in [5, 6, 7, 20, 21, 22] {
        assert_eq!(
            per_start.get(&(T0 + h * H)),
            Some(&9),
            "hour {h}: {per_start:?}"
        );
    }
    assert_eq!(per_start.get(&T0), Some(&(100 - 54)));
    for t in per_start.keys() {
        assert!(ledger.cpu_used_at(&zone("DE"), *t) <= 9000);
    }
}

#[test]
fn revision_needs_a_clear_improvement() {
    let s = snapshot(&[("DE", &with_dip(24, 5))]);
    let cfg = DeferralConfig::default();
    let standing = plan_release(&request(12, 2), &s, &CapacityLedger::new(H), &cfg);
    let mut fresh = standing.clone();
    fresh.expected_g_per_kwh = Some(98.0);
    assert!(!should_revise(&standing, &fresh, &cfg));
    fresh.expected_g_per_kwh = Some(80.0);
    assert!(should_revise(&standing, &fresh, &cfg));
    fresh.reason = ReleaseReason::Deadline;
    assert!(should_revise(&standing, &fresh, &cfg));
}

#[test]
fn config_validation_names_fields() {
    let bad = DeferralConfig {
        capacity_headroom: 0.0,
        min_saving_fraction: 1.5,
        ..DeferralConfig::default()
    };
    let errs = bad.validate().unwrap_err();
    assert!(errs.iter().any(|e| e.starts_with("capacityHeadroom")));
    assert!(errs.iter().any(|e| e.starts_with("minSavingFraction")));
    assert!(DeferralConfig::default().validate().is_ok());
}

#[test]
fn formats_times() {
    assert_eq!(fmt_utc(0), "1970-01-01 00:00 UTC");
    assert_eq!(fmt_utc(1_709_210_400), "2024-02-29 12:40 UTC");
}
