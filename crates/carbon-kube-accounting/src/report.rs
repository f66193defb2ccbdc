//! `carbon-kube report`: the usage and details documents summed per
//! namespace over a period of UTC days, as a table, JSON or CSV.
//!
//! Savings are the counterfactual grams minus the actual grams of the pods
//! Carbon-Kube deferred (their zone's intensity when they were created
//! versus when they ran) and placed (the cluster's capacity-weighted mean
//! intensity versus the chosen zone's); see `docs/accounting.md` for the
//! method and its limits.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

use anyhow::Context as _;
use carbon_kube_model::UnixSeconds;
use carbon_kube_model::accounting::{ACCOUNTING_SHARD_LABEL, DataQuality, UsageDocument};
use carbon_kube_model::accounting_details::{DetailsDocument, Savings};
use carbon_kube_policy::accounting::day_start;
use k8s_openapi::api::core::v1::ConfigMap;
use serde::Serialize;

use crate::args::ReportArgs;
use crate::controller::{documents_from_configmaps, read_shard_configmaps, shards_of};
use crate::metrics::quality_label;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned text columns.
    Table,
    /// One JSON object.
    Json,
    /// Comma-separated values with a header.
    Csv,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Self::Table),
            "json" => Ok(Self::Json),
            "csv" => Ok(Self::Csv),
            _ => Err(format!("{s:?}: expected table, json or csv")),
        }
    }
}

/// A period of UTC days.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Period {
    /// The last N days, today included.
    LastDays(i64),
    /// Yesterday.
    Yesterday,
    /// This calendar month.
    Month,
    /// Everything in the document.
    All,
    /// From the first to the last day (both included), day starts.
    Range(UnixSeconds, UnixSeconds),
}

fn parse_day(s: &str) -> Result<UnixSeconds, String> {
    let d: jiff::civil::Date = s.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    d.to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp().as_second())
        .map_err(|e| format!("{s:?}: {e}"))
}

impl FromStr for Period {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "today" => return Ok(Self::LastDays(1)),
            "yesterday" => return Ok(Self::Yesterday),
            "month" => return Ok(Self::Month),
            "all" => return Ok(Self::All),
            _ => {}
        }
        if let Some((a, b)) = s.split_once("..") {
            let (a, b) = (parse_day(a)?, parse_day(b)?);
            if b < a {
                return Err(format!("{s:?}: the end is before the start"));
            }
            return Ok(Self::Range(a, b));
        }
        if let Some(n) = s.strip_suffix('d')
            && let Ok(n) = n.parse::<i64>()
            && n >= 1
        {
            return Ok(Self::LastDays(n));
        }
        Err(format!(
            "{s:?}: expected today, yesterday, Nd, month, all or YYYY-MM-DD..YYYY-MM-DD"
        ))
    }
}

impl Period {
    /// The first and last day start covered at `now`.
    pub fn days(&self, now: UnixSeconds) -> (UnixSeconds, UnixSeconds) {
        let today = day_start(now);
        match self {
            Self::LastDays(n) => (today - (n - 1) * 86_400, today),
            Self::Yesterday => (today - 86_400, today - 86_400),
            Self::Month => {
                let first = jiff::Timestamp::from_second(today)
                    .ok()
                    .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date().first_of_month())
                    .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
                    .map_or(today, |z| z.timestamp().as_second());
                (first, today)
            }
            Self::All => (UnixSeconds::MIN, UnixSeconds::MAX),
            Self::Range(a, b) => (*a, *b),
        }
    }
}

/// One namespace's totals over the period.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// Namespace (`(unallocated)` for capacity no pod requested, `(total)`).
    pub namespace: String,
    /// Days with data.
    pub days: usize,
    /// Energy (own + idle share), kWh.
    pub energy_kwh: f64,
    /// Operational grams of the pods' own energy.
    pub operational_grams: f64,
    /// Grams of the idle share.
    pub idle_grams: f64,
    /// Embodied grams.
    pub embodied_grams: f64,
    /// Operational + idle + embodied.
    pub total_grams: f64,
    /// `measured` if every day was measured, else `modelled`.
    pub quality: String,
    /// Part of operational + idle computed from marginal signals.
    pub marginal_grams: f64,
    /// Deferred pods: actual and counterfactual grams.
    pub deferred: Savings,
    /// Deferred pods: counterfactual minus actual.
    pub deferred_saved_grams: f64,
    /// Placed pods: actual and counterfactual grams.
    pub placed: Savings,
    /// Placed pods: counterfactual minus actual.
    pub placed_saved_grams: f64,
}

/// The report.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// First UTC day (YYYY-MM-DD), or `None` for no bound.
    pub from: Option<String>,
    /// Last UTC day (YYYY-MM-DD), or `None` for no bound.
    pub to: Option<String>,
    /// When the controller last wrote the documents (unix seconds).
    pub generated_at: UnixSeconds,
    /// One row per namespace, by name.
    pub namespaces: Vec<Row>,
    /// Node idle power and embodied emissions no pod requested (only
    /// without a namespace filter).
    pub unallocated: Option<Row>,
    /// Sum of the namespace rows (and the unallocated row).
    pub total: Row,
}

fn day_name(t: UnixSeconds) -> Option<String> {
    jiff::Timestamp::from_second(t)
        .ok()
        .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date().to_string())
}

fn add_row(total: &mut Row, r: &Row) {
    total.days = total.days.max(r.days);
    total.energy_kwh += r.energy_kwh;
    total.operational_grams += r.operational_grams;
    total.idle_grams += r.idle_grams;
    total.embodied_grams += r.embodied_grams;
    total.total_grams += r.total_grams;
    total.marginal_grams += r.marginal_grams;
    total.deferred.add(&r.deferred);
    total.placed.add(&r.placed);
    total.deferred_saved_grams = total.deferred.saved_grams();
    total.placed_saved_grams = total.placed.saved_grams();
    if r.quality == "modelled" {
        total.quality = "modelled".into();
    }
}

/// Sums the documents per namespace over `period` at `now`; `namespaces`
/// empty means all.
pub fn build_report(
    usage: &UsageDocument,
    details: &DetailsDocument,
    namespaces: &[String],
    period: &Period,
    now: UnixSeconds,
) -> Report {
    let (first, last) = period.days(now);
    let within = |d: UnixSeconds| d >= first && d <= last;
    let wanted = |ns: &str| namespaces.is_empty() || namespaces.iter().any(|n| n == ns);
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for (ns, days) in usage.namespaces.iter().filter(|(ns, _)| wanted(ns)) {
        let row = rows.entry(ns.clone()).or_insert_with(|| Row {
            namespace: ns.clone(),
            quality: "measured".into(),
            ..Row::default()
        });
        for d in days.iter().filter(|d| within(d.day_start)) {
            row.days += 1;
            row.energy_kwh += d.energy_joules / 3.6e6;
            row.operational_grams += d.operational_grams;
            row.idle_grams += d.idle_grams;
            row.embodied_grams += d.embodied_grams;
            row.total_grams += d.total_grams();
            if d.quality == DataQuality::Modelled {
                row.quality = quality_label(DataQuality::Modelled).into();
            }
        }
    }
    for (ns, days) in details.namespaces.iter().filter(|(ns, _)| wanted(ns)) {
        let Some(row) = rows.get_mut(ns) else {
            continue;
        };
        for d in days.iter().filter(|d| within(d.day_start)) {
            row.marginal_grams += d.marginal_grams;
            row.deferred.add(&d.deferred);
            row.placed.add(&d.placed);
        }
        row.deferred_saved_grams = row.deferred.saved_grams();
        row.placed_saved_grams = row.placed.saved_grams();
    }
    rows.retain(|_, r| r.days > 0);
    let mut total = Row {
        namespace: "(total)".into(),
        quality: "measured".into(),
        ..Row::default()
    };
    for r in rows.values() {
        add_row(&mut total, r);
    }
    let unallocated = namespaces.is_empty().then(|| {
        let mut r = Row {
            namespace: "(unallocated)".into(),
            quality: "modelled".into(),
            ..Row::default()
        };
        for d in details.unallocated.iter().filter(|d| within(d.day_start)) {
            r.days += 1;
            r.energy_kwh += d.energy_joules / 3.6e6;
            r.idle_grams += d.idle_grams;
            r.embodied_grams += d.embodied_grams;
            r.total_grams += d.idle_grams + d.embodied_grams;
        }
        r
    });
    if let Some(u) = unallocated.as_ref().filter(|u| u.days > 0) {
        add_row(&mut total, u);
    }
    if rows.is_empty() {
        total.quality = "none".into();
    }
    Report {
        from: (first != UnixSeconds::MIN)
            .then(|| day_name(first))
            .flatten(),
        to: (last != UnixSeconds::MAX).then(|| day_name(last)).flatten(),
        generated_at: usage.generated_at,
        namespaces: rows.into_values().collect(),
        unallocated: unallocated.filter(|u| u.days > 0),
        total,
    }
}

const COLUMNS: [&str; 11] = [
    "namespace",
    "days",
    "energy_kwh",
    "operational_g",
    "idle_g",
    "embodied_g",
    "total_g",
    "quality",
    "marginal_g",
    "deferred_saved_g",
    "placed_saved_g",
];

fn cells(r: &Row) -> [String; 11] {
    [
        r.namespace.clone(),
        r.days.to_string(),
        format!("{:.3}", r.energy_kwh),
        format!("{:.1}", r.operational_grams),
        format!("{:.1}", r.idle_grams),
        format!("{:.1}", r.embodied_grams),
        format!("{:.1}", r.total_grams),
        r.quality.clone(),
        format!("{:.1}", r.marginal_grams),
        format!("{:.1}", r.deferred_saved_grams),
        format!("{:.1}", r.placed_saved_grams),
    ]
}

impl Report {
    fn rows(&self) -> impl Iterator<Item = &Row> {
        self.namespaces
            .iter()
            .chain(self.unallocated.iter())
            .chain(std::iter::once(&self.total))
    }

    /// Renders the report in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => serde_json::to_string_pretty(self).unwrap_or_default() + "\n",
            Format::Csv => {
                let mut out = COLUMNS.join(",") + "\n";
                for r in self.rows() {
                    out += &(cells(r).join(",") + "\n");
                }
                out
            }
            Format::Table => {
                let rows: Vec<[String; 11]> = self.rows().map(cells).collect();
                let mut width = COLUMNS.map(str::len);
                for r in &rows {
                    for (w, c) in width.iter_mut().zip(r) {
                        *w = (*w).max(c.len());
                    }
                }
                let mut out = format!(
                    "Carbon-Kube emissions, UTC days {} to {} (grams CO2eq; savings against carbon-agnostic scheduling)\n",
                    self.from.as_deref().unwrap_or("(first)"),
                    self.to.as_deref().unwrap_or("(last)")
                );
                let line = |cells: &[String]| {
                    let mut l = String::new();
                    for (i, (c, w)) in cells.iter().zip(width).enumerate() {
                        if i == 0 || i == 7 {
                            let _ = write!(l, "{c:<w$}  ");
                        } else {
                            let _ = write!(l, "{c:>w$}  ");
                        }
                    }
                    l.trim_end().to_owned() + "\n"
                };
                out += &line(&COLUMNS.map(str::to_owned));
                for r in &rows {
                    out += &line(r);
                }
                out
            }
        }
    }
}

/// The accounting ConfigMaps in a file: a list (`kubectl get configmap -l
/// carbon-kube.io/accounting-shard -o json`) or one ConfigMap. A single
/// shard 0 that names more shards is refused (the report would be partial).
pub fn configmaps_from_json(text: &str) -> Result<Vec<ConfigMap>, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let maps: Vec<ConfigMap> = match value.get("items") {
        Some(items) => serde_json::from_value(items.clone()).map_err(|e| e.to_string())?,
        None => vec![serde_json::from_value(value).map_err(|e| e.to_string())?],
    };
    if maps.is_empty() {
        return Err("no ConfigMap in the list".to_owned());
    }
    if let [only] = maps.as_slice()
        && shards_of(only) > 1
    {
        return Err(format!(
            "ConfigMap {} says the documents are split across {} shards: pass all of them (kubectl get configmap -l {ACCOUNTING_SHARD_LABEL} -o json)",
            only.metadata.name.as_deref().unwrap_or("?"),
            shards_of(only)
        ));
    }
    Ok(maps)
}

/// Runs `carbon-kube report`: reads the ConfigMaps (file or cluster: the
/// accounting ConfigMap and every shard it names), prints the report on
/// stdout.
pub async fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let maps: Vec<ConfigMap> = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            configmaps_from_json(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {e} (expected `kubectl get configmap -l {ACCOUNTING_SHARD_LABEL} -o json`, or `kubectl get configmap {} -o json`)",
                    path.display(),
                    args.accounting_configmap
                )
            })?
        }
        None => {
            let client = carbon_kube_k8s::tuner::client(args.kubeconfig.as_deref()).await?;
            let api = kube::Api::<ConfigMap>::namespaced(client, &args.accounting_namespace);
            read_shard_configmaps(&api, &args.accounting_configmap)
                .await
                .with_context(|| {
                    format!(
                        "reading ConfigMap {}/{} and its shards",
                        args.accounting_namespace, args.accounting_configmap
                    )
                })?
                .with_context(|| {
                    format!(
                        "ConfigMap {}/{} not found: is `carbon-kube accounting` running (chart value accounting.enabled)?",
                        args.accounting_namespace, args.accounting_configmap
                    )
                })?
        }
    };
    let (usage, details) = documents_from_configmaps(&maps).map_err(|e| anyhow::anyhow!(e))?;
    let report = build_report(
        &usage,
        &details,
        &args.namespaces,
        &args.period,
        jiff::Timestamp::now().as_second(),
    );
    print!("{}", report.render(args.output));
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use carbon_kube_model::accounting::DayUsage;
    use carbon_kube_model::accounting_details::DayDetails;

    const DAY: i64 = 86_400;

    fn docs() -> (UsageDocument, DetailsDocument) {
        let mut usage = UsageDocument {
            generated_at: 10 * DAY + 100,
            ..UsageDocument::default()
        };
        let mut details = DetailsDocument::default();
        for (ns, quality) in [("a", DataQuality::Measured), ("b", DataQuality::Modelled)] {
            usage.namespaces.insert(
                ns.into(),
                (8..=10)
                    .map(|d| DayUsage {
                        day_start: d * DAY,
                        energy_joules: 3.6e6,
                        operational_grams: 100.0,
                        idle_grams: 10.0,
                        embodied_grams: 1.0,
                        quality,
                    })
                    .collect(),
            );
            details.namespaces.insert(
                ns.into(),
                (8..=10)
                    .map(|d| DayDetails {
                        day_start: d * DAY,
                        deferred: Savings {
                            actual_grams: 50.0,
                            counterfactual_grams: 80.0,
                            intervals: 2,
                        },
                        ..DayDetails::default()
                    })
                    .collect(),
            );
        }
        details.unallocated.push(DayUsage {
            day_start: 10 * DAY,
            energy_joules: 7.2e6,
            idle_grams: 5.0,
            embodied_grams: 2.0,
            ..DayUsage::default()
        });
        (usage, details)
    }

    #[test]
    fn periods_parse_and_resolve_to_utc_days() {
        let now = 10 * DAY + 5;
        assert_eq!(
            "7d".parse::<Period>().unwrap().days(now),
            (4 * DAY, 10 * DAY)
        );
        assert_eq!(
            "today".parse::<Period>().unwrap().days(now),
            (10 * DAY, 10 * DAY)
        );
        assert_eq!(
            "yesterday".parse::<Period>().unwrap().days(now),
            (9 * DAY, 9 * DAY)
        );
        assert_eq!(
            "1970-01-09..1970-01-10"
                .parse::<Period>()
                .unwrap()
                .days(now),
            (8 * DAY, 9 * DAY)
        );
        assert_eq!("month".parse::<Period>().unwrap().days(now), (0, 10 * DAY));
        for bad in ["0d", "week", "1970-01-10..1970-01-09", "x..y"] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_report_sums_namespaces_days_and_savings() {
        let (usage, details) = docs();
        let r = build_report(&usage, &details, &[], &Period::LastDays(2), 10 * DAY + 5);
        assert_eq!(r.from.as_deref(), Some("1970-01-10"));
        assert_eq!(r.namespaces.len(), 2);
        let a = &r.namespaces[0];
        assert_eq!((a.days, a.quality.as_str()), (2, "measured"));
        assert!((a.total_grams - 222.0).abs() < 1e-9);
        assert!((a.deferred_saved_grams - 60.0).abs() < 1e-9);
        assert_eq!(r.namespaces[1].quality, "modelled");
        let u = r.unallocated.as_ref().unwrap();
        assert!((u.total_grams - 7.0).abs() < 1e-9);
        assert!((r.total.total_grams - (2.0 * 222.0 + 7.0)).abs() < 1e-9);
        assert_eq!(r.total.quality, "modelled");
        // A namespace filter drops the others and the unallocated row.
        let only_a = build_report(&usage, &details, &["a".into()], &Period::All, 10 * DAY);
        assert_eq!(only_a.namespaces.len(), 1);
        assert_eq!(only_a.unallocated, None);
        assert!((only_a.total.total_grams - 333.0).abs() < 1e-9);
        assert_eq!(only_a.total.quality, "measured");
    }

    #[test]
    fn the_three_formats_carry_the_same_rows() {
        let (usage, details) = docs();
        let r = build_report(&usage, &details, &[], &Period::All, 10 * DAY);
        let csv = r.render(Format::Csv);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], COLUMNS.join(","));
        assert_eq!(lines.len(), 1 + 2 + 1 + 1);
        assert_eq!(
            lines[1],
            "a,3,3.000,300.0,30.0,3.0,333.0,measured,0.0,90.0,0.0"
        );
        assert!(
            lines[3].starts_with("(unallocated),1,2.000,"),
            "{}",
            lines[3]
        );
        let table = r.render(Format::Table);
        assert!(
            table.lines().nth(1).unwrap().starts_with("namespace"),
            "{table}"
        );
        assert!(table.contains("(total)"));
        let json: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
        assert_eq!(json["namespaces"][1]["namespace"], "b");
        assert_eq!(json["total"]["deferredSavedGrams"], 180.0);
    }

    /// The file forms `--file` takes: the shards as `kubectl get configmap
    /// -l carbon-kube.io/accounting-shard -o json` prints them, or one
    /// ConfigMap; a lone shard 0 that names more shards is refused.
    #[test]
    fn a_file_holds_every_shard_or_the_only_one() {
        use crate::controller::{Accountant, AccountingSettings};
        use crate::metrics::AccountingMetrics;
        let mut registry = prometheus_client::registry::Registry::default();
        let settings = AccountingSettings::default();
        let mut acc = Accountant::new(settings, AccountingMetrics::register(&mut registry, 10));
        let (usage, details) = docs();
        acc.usage = usage.clone();
        acc.details = details;
        let one = acc.configmaps();
        assert_eq!(one.len(), 1);
        let text = serde_json::to_string(&one[0]).unwrap();
        let (u, _) = documents_from_configmaps(&configmaps_from_json(&text).unwrap()).unwrap();
        assert_eq!(u.namespaces, usage.namespaces);

        // Two shards (as the controller writes them with many namespaces).
        let mut first = one[0].clone();
        first.metadata.annotations = Some(
            [(
                carbon_kube_model::accounting::ANNOTATION_ACCOUNTING_SHARDS.to_owned(),
                "2".to_owned(),
            )]
            .into(),
        );
        let mut second = one[0].clone();
        second.metadata.name = Some("carbon-kube-accounting-1".into());
        let mut moved = usage.clone();
        moved.namespaces = [("c".to_owned(), usage.namespaces["a"].clone())].into();
        second.data.as_mut().unwrap().insert(
            carbon_kube_model::accounting::USAGE_KEY.to_owned(),
            serde_json::to_string(&moved).unwrap(),
        );
        let list =
            serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [first, second]});
        let maps = configmaps_from_json(&list.to_string()).unwrap();
        let (u, _) = documents_from_configmaps(&maps).unwrap();
        assert_eq!(
            u.namespaces.keys().collect::<Vec<_>>(),
            ["a", "b", "c"],
            "both shards read"
        );
        let e = configmaps_from_json(&serde_json::to_string(&first).unwrap()).unwrap_err();
        assert!(
            e.contains("2 shards") && e.contains(ACCOUNTING_SHARD_LABEL),
            "{e}"
        );
    }
}
