use super::*;
use crate::deferral::{
    CapacityLedger, DeferralConfig, DeferralRequest, ReleaseReason, plan_release,
};
use crate::zone_map::Resources;
use carbon_kube_model::{CarbonIntensity, Forecast, Snapshot, Source, ZoneId, ZoneRecord};

const H: i64 = 3600;

fn ts(s: &str) -> UnixSeconds {
    s.parse::<jiff::Timestamp>().unwrap().as_second()
}

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn day(start: &str, grams: f64) -> DayUsage {
    DayUsage {
        day_start: ts(start),
        operational_grams: grams * 0.7,
        idle_grams: grams * 0.2,
        embodied_grams: grams * 0.1,
        ..DayUsage::default()
    }
}

fn doc(generated_at: &str, ns: &str, days: Vec<DayUsage>) -> UsageDocument {
    UsageDocument {
        generated_at: ts(generated_at),
        namespaces: BTreeMap::from([(ns.to_owned(), days)]),
    }
}

// ---------------------------------------------------------------------------
// Periods

#[test]
fn day_and_week_bounds() {
    let now = ts("2026-12-09T13:45:00Z"); // a Wednesday
    assert_eq!(
        BudgetPeriod::Day.bounds(now),
        (ts("2026-12-09T00:00:00Z"), ts("2026-12-10T00:00:00Z"))
    );
    assert_eq!(
        BudgetPeriod::Week.bounds(now),
        (ts("2026-12-07T00:00:00Z"), ts("2026-12-14T00:00:00Z"))
    );
    // Monday 00:00 starts a week; Sunday 23:59:59 still ends the last one.
    let monday = ts("2026-12-14T00:00:00Z");
    assert_eq!(BudgetPeriod::Week.bounds(monday).0, monday);
    assert_eq!(BudgetPeriod::Week.bounds(monday - 1).1, monday);
    // A week across a year end (ISO week 2026-W53 starts on 28 December).
    assert_eq!(
        BudgetPeriod::Week.bounds(ts("2027-01-01T12:00:00Z")),
        (ts("2026-12-28T00:00:00Z"), ts("2027-01-04T00:00:00Z"))
    );
    // Before 1970 too.
    assert_eq!(
        BudgetPeriod::Day.bounds(-1),
        (-86_400, 0),
        "the second before the epoch is on 1969-12-31"
    );
}

#[test]
fn month_bounds_across_month_ends_and_leap_years() {
    for (now, start, end) in [
        (
            "2024-02-29T23:59:59Z",
            "2024-02-01T00:00:00Z",
            "2024-03-01T00:00:00Z",
        ),
        (
            "2024-03-01T00:00:00Z",
            "2024-03-01T00:00:00Z",
            "2024-04-01T00:00:00Z",
        ),
        (
            "2023-02-15T08:00:00Z",
            "2023-02-01T00:00:00Z",
            "2023-03-01T00:00:00Z",
        ),
        (
            "2000-02-29T12:00:00Z",
            "2000-02-01T00:00:00Z",
            "2000-03-01T00:00:00Z",
        ),
        (
            "2100-02-28T12:00:00Z",
            "2100-02-01T00:00:00Z",
            "2100-03-01T00:00:00Z",
        ),
        (
            "2026-12-31T23:59:59Z",
            "2026-12-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
        ),
        (
            "2027-01-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
            "2027-02-01T00:00:00Z",
        ),
        (
            "2026-04-30T10:00:00Z",
            "2026-04-01T00:00:00Z",
            "2026-05-01T00:00:00Z",
        ),
    ] {
        assert_eq!(
            BudgetPeriod::Month.bounds(ts(now)),
            (ts(start), ts(end)),
            "month of {now}"
        );
    }
    // Lengths: 29 days in February 2024 and 2000, 28 in 2023 and 2100.
    for (now, days) in [
        ("2024-02-10T00:00:00Z", 29),
        ("2000-02-10T00:00:00Z", 29),
        ("2023-02-10T00:00:00Z", 28),
        ("2100-02-10T00:00:00Z", 28),
    ] {
        let (s, e) = BudgetPeriod::Month.bounds(ts(now));
        assert_eq!((e - s) / 86_400, days, "{now}");
    }
}

/// Every 7 hours from 1999 to 2101, the month and week bounds agree with
/// jiff's calendar.
#[test]
fn bounds_agree_with_a_calendar_library() {
    let utc = jiff::tz::TimeZone::UTC;
    let mut t = ts("1999-01-01T00:00:00Z");
    let stop = ts("2101-01-01T00:00:00Z");
    while t < stop {
        let z = jiff::Timestamp::from_second(t)
            .unwrap()
            .to_zoned(utc.clone());
        let first = z.date().first_of_month();
        let start = first.to_zoned(utc.clone()).unwrap().timestamp().as_second();
        let end = first
            .checked_add(jiff::Span::new().months(1))
            .unwrap()
            .to_zoned(utc.clone())
            .unwrap()
            .timestamp()
            .as_second();
        assert_eq!(BudgetPeriod::Month.bounds(t), (start, end), "t = {t}");
        let (ws, we) = BudgetPeriod::Week.bounds(t);
        let wz = jiff::Timestamp::from_second(ws)
            .unwrap()
            .to_zoned(utc.clone());
        assert_eq!(wz.weekday(), jiff::civil::Weekday::Monday, "t = {t}");
        assert!(ws <= t && t < we && we - ws == 7 * 86_400, "t = {t}");
        t += 7 * H;
    }
}

// ---------------------------------------------------------------------------
// Annotations

#[test]
fn budgets_parse_with_a_default_period() {
    assert_eq!(parse_budget(&annotations(&[])), Ok(None));
    assert_eq!(
        parse_budget(&annotations(&[(ANNOTATION_BUDGET_GRAMS, " 25000 ")])),
        Ok(Some(NamespaceBudget {
            grams: 25_000.0,
            period: BudgetPeriod::Month
        }))
    );
    assert_eq!(
        parse_budget(&annotations(&[
            (ANNOTATION_BUDGET_GRAMS, "2.5e3"),
            (ANNOTATION_BUDGET_PERIOD, "Week"),
        ])),
        Ok(Some(NamespaceBudget {
            grams: 2500.0,
            period: BudgetPeriod::Week
        }))
    );
}

#[test]
fn every_bad_annotation_is_named_with_its_value() {
    for bad in ["-5", "0", "abc", "NaN", "inf", "", "10kg"] {
        let e = parse_budget(&annotations(&[(ANNOTATION_BUDGET_GRAMS, bad)])).unwrap_err();
        assert_eq!(
            e,
            vec![BudgetError::Grams {
                value: bad.to_owned()
            }]
        );
        let text = e[0].to_string();
        assert!(
            text.contains(ANNOTATION_BUDGET_GRAMS) && text.contains(&format!("{bad:?}")),
            "{text}"
        );
    }
    let e = parse_budget(&annotations(&[
        (ANNOTATION_BUDGET_GRAMS, "lots"),
        (ANNOTATION_BUDGET_PERIOD, "fortnight"),
    ]))
    .unwrap_err();
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].to_string().contains("\"fortnight\""), "{e:?}");
    assert!(e[1].to_string().contains("\"lots\""), "{e:?}");
    let e = parse_budget(&annotations(&[(ANNOTATION_BUDGET_PERIOD, "day")])).unwrap_err();
    assert_eq!(
        e,
        vec![BudgetError::PeriodWithoutGrams {
            value: "day".into()
        }]
    );
}

// ---------------------------------------------------------------------------
// Usage, burn rate, exhaustion, state

#[test]
fn usage_counts_only_the_days_of_the_current_period() {
    let d = doc(
        "2026-12-02T12:00:00Z",
        "team-a",
        vec![
            day("2026-11-30T00:00:00Z", 1000.0),
            day("2026-12-01T00:00:00Z", 100.0),
            day("2026-12-02T00:00:00Z", 50.0),
        ],
    );
    let budget = NamespaceBudget {
        grams: 10_000.0,
        period: BudgetPeriod::Month,
    };
    let now = ts("2026-12-02T12:10:00Z");
    let s = assess("team-a", &budget, Some(&d), now, &BudgetConfig::default()).unwrap();
    assert!((s.used_grams - 150.0).abs() < 1e-9, "{s:?}");
    assert_eq!(
        (s.period_start, s.period_end),
        (ts("2026-12-01T00:00:00Z"), ts("2027-01-01T00:00:00Z"))
    );
    // The day period sees today only.
    let daily = NamespaceBudget {
        grams: 10_000.0,
        period: BudgetPeriod::Day,
    };
    let s = assess("team-a", &daily, Some(&d), now, &BudgetConfig::default()).unwrap();
    assert!((s.used_grams - 50.0).abs() < 1e-9, "{s:?}");
    // A namespace the document does not list has used nothing.
    let s = assess("team-b", &budget, Some(&d), now, &BudgetConfig::default()).unwrap();
    assert_eq!(
        (s.used_grams, s.burn_rate_grams_per_hour, s.state),
        (0.0, 0.0, BudgetState::Under)
    );
    assert_eq!(s.exhaustion_at, None);
}

#[test]
fn burn_rate_is_over_the_current_day_and_the_days_before() {
    let days = vec![
        day("2026-12-01T00:00:00Z", 9999.0), // outside the 3-day window
        day("2026-12-02T00:00:00Z", 240.0),
        day("2026-12-03T00:00:00Z", 240.0),
        day("2026-12-04T00:00:00Z", 120.0),
    ];
    // 600 g over 48 + 12 hours.
    let (rate, hours) = burn_rate(&days, ts("2026-12-04T12:00:00Z"), 3);
    assert!(
        (hours - 60.0).abs() < 1e-9 && (rate - 10.0).abs() < 1e-9,
        "{rate} {hours}"
    );
    // One day: today's 120 g over 12 h.
    let (rate, hours) = burn_rate(&days, ts("2026-12-04T12:00:00Z"), 1);
    assert!(
        (hours - 12.0).abs() < 1e-9 && (rate - 10.0).abs() < 1e-9,
        "{rate} {hours}"
    );
    // A namespace first seen today: its 120 g over the 12 h it has existed.
    let (rate, hours) = burn_rate(&days[3..], ts("2026-12-04T12:00:00Z"), 3);
    assert!(
        (hours - 12.0).abs() < 1e-9 && (rate - 10.0).abs() < 1e-9,
        "{rate} {hours}"
    );
    // A missing day in the window counts as zero: 360 g over 60 h.
    let gap = [days[1].clone(), days[3].clone()];
    let (rate, _) = burn_rate(&gap, ts("2026-12-04T12:00:00Z"), 3);
    assert!((rate - 6.0).abs() < 1e-9, "{rate}");
    // Never shorter than an hour: 10 g in the first minutes of a day is 10 g/h.
    let (rate, hours) = burn_rate(
        &[day("2026-12-04T00:00:00Z", 10.0)],
        ts("2026-12-04T00:05:00Z"),
        3,
    );
    assert_eq!((rate, hours), (10.0, 1.0));
    // A broken writer's NaN or negative figures count as nothing.
    let broken = [
        day("2026-12-04T00:00:00Z", f64::NAN),
        day("2026-12-03T00:00:00Z", -50.0),
    ];
    assert_eq!(burn_rate(&broken, ts("2026-12-04T12:00:00Z"), 3).0, 0.0);
}

#[test]
fn exhaustion_is_projected_at_the_burn_rate_and_sets_the_state() {
    let budget = NamespaceBudget {
        grams: 1000.0,
        period: BudgetPeriod::Month,
    };
    let cfg = BudgetConfig::default();
    // 10 g/h, 600 g used by 2026-12-04 12:00: 400 g left last 40 h, until
    // 2026-12-06 04:00, well before the month ends: at risk.
    let d = doc(
        "2026-12-04T12:00:00Z",
        "ns",
        vec![
            day("2026-12-02T00:00:00Z", 240.0),
            day("2026-12-03T00:00:00Z", 240.0),
            day("2026-12-04T00:00:00Z", 120.0),
        ],
    );
    let now = ts("2026-12-04T12:30:00Z");
    let s = assess("ns", &budget, Some(&d), now, &cfg).unwrap();
    assert_eq!(s.exhaustion_at, Some(ts("2026-12-06T04:00:00Z")));
    assert_eq!(s.seconds_to_exhaustion(now), Some(39 * H + 1800));
    assert_eq!(
        (s.state, s.pressure()),
        (BudgetState::AtRisk, BudgetPressure::AtRisk)
    );
    assert!(
        s.explain("ns")
            .contains("at risk, projected to run out at 2026-12-06 04:00 UTC"),
        "{}",
        s.explain("ns")
    );
    // A bigger budget lasts past the month's end: under, no effect.
    let big = NamespaceBudget {
        grams: 100_000.0,
        ..budget
    };
    let s = assess("ns", &big, Some(&d), now, &cfg).unwrap();
    assert_eq!(
        (s.state, s.pressure()),
        (BudgetState::Under, BudgetPressure::None)
    );
    assert!(s.exhaustion_at.unwrap() > s.period_end);
    // Used up: exhausted, now.
    let small = NamespaceBudget {
        grams: 500.0,
        ..budget
    };
    let s = assess("ns", &small, Some(&d), now, &cfg).unwrap();
    assert_eq!(s.state, BudgetState::Exhausted);
    assert_eq!(s.seconds_to_exhaustion(now), Some(0));
    assert_eq!(s.state.metric_value(), 2);
    let text = s.explain("ns");
    assert!(
        text.starts_with("namespace ns has used 600 g of its 500 g month budget")
            && text.contains("exhausted"),
        "{text}"
    );
}

#[test]
fn no_or_stale_usage_gives_no_assessment() {
    let budget = NamespaceBudget {
        grams: 1.0,
        period: BudgetPeriod::Day,
    };
    let cfg = BudgetConfig::default();
    let now = ts("2026-12-04T12:00:00Z");
    assert_eq!(
        assess("ns", &budget, None, now, &cfg),
        Err(UsageUnavailable::NoDocument)
    );
    let d = doc(
        "2026-12-04T10:00:00Z",
        "ns",
        vec![day("2026-12-04T00:00:00Z", 1e9)],
    );
    let e = assess("ns", &budget, Some(&d), now, &cfg).unwrap_err();
    assert_eq!(
        e,
        UsageUnavailable::Stale {
            generated_at: ts("2026-12-04T10:00:00Z"),
            age_seconds: 2 * H,
            max_seconds: H
        }
    );
    assert!(e.to_string().contains("7200 s old"), "{e}");
    // Within the allowed age it counts.
    assert!(assess("ns", &budget, Some(&d), now - H, &cfg).is_ok());
    assert!(BudgetConfig::default().validate().is_ok());
    let bad = BudgetConfig {
        max_usage_age_seconds: 0,
        burn_window_days: 0,
    };
    assert_eq!(bad.validate().unwrap_err().len(), 2);
}

// ---------------------------------------------------------------------------
// The deferral effect

const T0: i64 = 1_700_000_000 / H * H;

fn snapshot(hourly: &[f64]) -> Snapshot {
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
    let mut s = Snapshot::default();
    s.zones.insert(ZoneId::parse("DE").unwrap(), r);
    s
}

fn request(now: i64, deadline_h: i64, budget: BudgetPressure) -> DeferralRequest<'static> {
    DeferralRequest {
        now,
        deadline: T0 + deadline_h * H,
        expected_duration_seconds: H,
        zones: &[],
        requests: Resources::new(1000, 1 << 30),
        nodes: &[],
        budget,
    }
}

fn cfg() -> DeferralConfig {
    DeferralConfig {
        min_saving_fraction: 0.1,
        error_margin_per_hour: 0.01,
        start_safety_seconds: 1800,
        ..DeferralConfig::default()
    }
}

/// 300 g/kWh now, 282 (6 % less) at hours 4–6, 270 (10 % less) at hours
/// 10–12: neither clears the usual 10 % minimum saving after the margin.
fn mild() -> Vec<f64> {
    (0..24)
        .map(|h| match h {
            4..=6 => 282.0,
            10..=12 => 270.0,
            _ => 300.0,
        })
        .collect()
}

#[test]
fn an_exhausted_budget_holds_for_the_greenest_window_an_at_risk_one_for_half_the_saving() {
    let s = snapshot(&mild());
    let ledger = CapacityLedger::new(H);
    let p = plan_release(&request(T0, 20, BudgetPressure::None), &s, &ledger, &cfg());
    assert_eq!(p.reason, ReleaseReason::NowIsBest);
    // At risk: 5 % is enough; hour 4 (282 × 1.04 = 293.3, 2.2 % less) is
    // not, hours 10-12 (270 × 1.10 = 297) neither.
    let p = plan_release(
        &request(T0, 20, BudgetPressure::AtRisk),
        &s,
        &ledger,
        &cfg(),
    );
    assert_eq!(p.reason, ReleaseReason::NowIsBest);
    // Exhausted: the greenest window after the margin, hour 4.
    let p = plan_release(
        &request(T0, 20, BudgetPressure::Exhausted),
        &s,
        &ledger,
        &cfg(),
    );
    assert_eq!(
        (p.reason, p.release_at),
        (ReleaseReason::Budget, T0 + 4 * H),
        "{p:?}"
    );
    assert!(p.holds(T0) && p.promises_room(T0));
    assert!(
        p.explain().contains("for the namespace's carbon budget"),
        "{}",
        p.explain()
    );
    // A window that clears the usual bar is an ordinary green window, budget or not.
    let mut deep = mild();
    deep[3] = 200.0;
    let s = snapshot(&deep);
    for pressure in [
        BudgetPressure::None,
        BudgetPressure::AtRisk,
        BudgetPressure::Exhausted,
    ] {
        let p = plan_release(&request(T0, 20, pressure), &s, &ledger, &cfg());
        assert_eq!(
            (p.reason, p.release_at),
            (ReleaseReason::GreenWindow, T0 + 3 * H)
        );
    }
    // At risk with a window 7 % better after the margin: held for the budget.
    let mut seven = vec![300.0; 24];
    seven[1] = 276.0; // 276 × 1.01 = 278.8, 7.1 % less than 300
    let s = snapshot(&seven);
    let p = plan_release(&request(T0, 20, BudgetPressure::None), &s, &ledger, &cfg());
    assert_eq!(p.reason, ReleaseReason::NowIsBest);
    let p = plan_release(
        &request(T0, 20, BudgetPressure::AtRisk),
        &s,
        &ledger,
        &cfg(),
    );
    assert_eq!((p.reason, p.release_at), (ReleaseReason::Budget, T0 + H));
    assert_eq!(ReleaseReason::Budget.metric_label(), "budget");
}

#[test]
fn a_budget_never_moves_a_release_past_the_latest_start() {
    let cfg = DeferralConfig {
        max_data_age_seconds: 100 * H,
        ..cfg()
    };
    let ledger = CapacityLedger::new(H);
    // The greenest hour is the last one: a pod whose deadline comes first
    // must still go by its latest release.
    let mut falling: Vec<f64> = (0..48).map(|h| 300.0 - 2.0 * h as f64).collect();
    falling[40] = 10.0;
    let s = snapshot(&falling);
    for deadline_h in 1..30 {
        for now in (T0..T0 + deadline_h * H).step_by(900) {
            let neutral = plan_release(
                &request(now, deadline_h, BudgetPressure::None),
                &s,
                &ledger,
                &cfg,
            );
            let strict = plan_release(
                &request(now, deadline_h, BudgetPressure::Exhausted),
                &s,
                &ledger,
                &cfg,
            );
            let latest_release = strict.latest_start - cfg.start_safety_seconds;
            assert!(
                strict.release_at <= latest_release.max(now),
                "deadline {deadline_h} h, now {now}: {strict:?}"
            );
            assert_eq!(strict.latest_start, neutral.latest_start);
            assert_ne!(strict.reason, ReleaseReason::NoData);
            if now >= latest_release {
                assert_eq!(
                    (strict.reason, strict.release_at),
                    (ReleaseReason::Deadline, now)
                );
                assert_eq!(neutral.reason, ReleaseReason::Deadline);
            }
        }
    }
}

#[test]
fn without_data_the_budget_changes_nothing() {
    let mut s = snapshot(&mild());
    let ledger = CapacityLedger::new(H);
    // Stale carbon data: released now, whatever the budget.
    let late = T0 + 10 * H;
    let p = plan_release(
        &request(late, 20, BudgetPressure::Exhausted),
        &s,
        &ledger,
        &cfg(),
    );
    assert_eq!((p.reason, p.release_at), (ReleaseReason::NoData, late));
    s.zones.clear();
    let p = plan_release(
        &request(T0, 20, BudgetPressure::Exhausted),
        &s,
        &ledger,
        &cfg(),
    );
    assert_eq!(p.reason, ReleaseReason::NoData);
    assert_eq!(BudgetPressure::default(), BudgetPressure::None);
    assert_eq!(BudgetPressure::None.min_saving_fraction(0.1), 0.1);
}
