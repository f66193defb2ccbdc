//! Namespace carbon budgets: how much CO2eq a namespace may emit per period,
//! how fast it is burning it, and what that does to deferrable work.
//!
//! A namespace opts in with two annotations (see
//! [`carbon_kube_model::accounting`]): `carbon-kube.io/budget-grams` (grams
//! of CO2eq per period, a positive number) and `carbon-kube.io/budget-period`
//! (`day`, `week` or `month`, UTC; default `month`). [`parse_budget`] reads
//! them and names every bad value; a bad annotation only disables that
//! namespace's budget.
//!
//! [`assess`] compares the budget with the accounting controller's
//! [`UsageDocument`] (per namespace, per UTC day):
//!
//! - **period**: [`BudgetPeriod::bounds`]: the UTC day; the ISO week from
//!   Monday 00:00 UTC; the calendar month from the 1st 00:00 UTC. Start
//!   included, end excluded.
//! - **used**: the sum of [`DayUsage::total_grams`] (operational, idle share
//!   and embodied) of the days that start inside the current period. Periods
//!   start on UTC days, so every day bucket is in or out, never split.
//! - **burn rate**: grams per hour over the *burn window*: the usage day the
//!   document was written in (up to its `generatedAt`) and the
//!   [`BudgetConfig::burn_window_days`]` − 1` whole days before it (48 to
//!   72 hours by default), shortened to the namespace's first recorded day,
//!   and never shorter than one hour. Days the document does not list count
//!   as zero.
//! - **projected exhaustion**: `generatedAt + (budget − used) / burn rate`;
//!   none while nothing burns.
//! - **state** ([`BudgetState`]): `exhausted` when used ≥ budget; `at_risk`
//!   when the projected exhaustion comes before the period's end; `under`
//!   otherwise.
//!
//! **The deferral effect** ([`BudgetPressure`], passed to
//! [`plan_release`](crate::deferral::plan_release) in
//! [`DeferralRequest::budget`](crate::deferral::DeferralRequest::budget)):
//! deferrable work of a namespace at risk must show half the usual minimum
//! saving to be released now; of an exhausted namespace, it waits for the
//! greenest window before its latest release (after the margin for forecast
//! error), however small the gain. The planner's candidate windows and its
//! deadline release are untouched, so a budget never moves a release past
//! the latest start: **deadlines are sacred**.
//!
//! **Fail open**: no usage document, a stale one (older than
//! [`BudgetConfig::max_usage_age_seconds`]), or a bad annotation gives no
//! assessment ([`UsageUnavailable`]) and [`BudgetPressure::None`]: the
//! budget never holds a pod on data it does not have.
//!
//! Pure: no IO, no clock (`now` is an argument).

use std::collections::BTreeMap;

use carbon_kube_model::UnixSeconds;
use carbon_kube_model::accounting::{
    ANNOTATION_BUDGET_GRAMS, ANNOTATION_BUDGET_PERIOD, DataQuality, DayUsage, UsageDocument,
};
use serde::{Deserialize, Serialize};

use crate::deferral::fmt_utc;

const DAY: i64 = 86_400;

/// The period a namespace budget applies to, in UTC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    /// The UTC day.
    Day,
    /// The ISO week, from Monday 00:00 UTC.
    Week,
    /// The calendar month, from the 1st 00:00 UTC.
    #[default]
    Month,
}

impl BudgetPeriod {
    /// Parses `day`, `week` or `month` (case and surrounding blanks ignored).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            "month" => Some(Self::Month),
            _ => None,
        }
    }

    /// The value as written in the annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    /// The period containing `now`: `(start, end)`, start included, end
    /// excluded, unix seconds.
    pub fn bounds(self, now: UnixSeconds) -> (UnixSeconds, UnixSeconds) {
        let day = now.div_euclid(DAY);
        match self {
            Self::Day => (day * DAY, (day + 1) * DAY),
            Self::Week => {
                // 1970-01-01 was a Thursday: Monday-based weekday index 3.
                let monday = day - (day + 3).rem_euclid(7);
                (monday * DAY, (monday + 7) * DAY)
            }
            Self::Month => {
                let (y, m, _) = civil_from_days(day);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (
                    days_from_civil(y, m, 1) * DAY,
                    days_from_civil(ny, nm, 1) * DAY,
                )
            }
        }
    }
}

/// Days since 1970-01-01 → (year, month 1–12, day 1–31), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month 1–12, day 1–31) → days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A namespace's budget, as read from its annotations.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceBudget {
    /// Grams of CO2eq the namespace may emit per period (positive, finite).
    pub grams: f64,
    /// The period.
    pub period: BudgetPeriod,
}

/// A bad budget annotation, naming the annotation and the value.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BudgetError {
    /// The grams are not a positive, finite number.
    #[error("annotation {ANNOTATION_BUDGET_GRAMS}: {value:?} is not a positive number of grams")]
    Grams {
        /// The annotation's value.
        value: String,
    },
    /// The period is not `day`, `week` or `month`.
    #[error("annotation {ANNOTATION_BUDGET_PERIOD}: {value:?} is not one of day, week, month")]
    Period {
        /// The annotation's value.
        value: String,
    },
    /// A period without grams.
    #[error(
        "annotation {ANNOTATION_BUDGET_PERIOD} is {value:?} but {ANNOTATION_BUDGET_GRAMS} is missing"
    )]
    PeriodWithoutGrams {
        /// The period annotation's value.
        value: String,
    },
}

/// Reads a namespace's budget from its annotations: `Ok(None)` when it has
/// none, every problem when an annotation is bad (the namespace then has no
/// budget; other namespaces are unaffected).
pub fn parse_budget(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<NamespaceBudget>, Vec<BudgetError>> {
    let grams = annotations.get(ANNOTATION_BUDGET_GRAMS);
    let period = annotations.get(ANNOTATION_BUDGET_PERIOD);
    let mut errors = Vec::new();
    let parsed_period = match period {
        None => Some(BudgetPeriod::default()),
        Some(v) => BudgetPeriod::parse(v).or_else(|| {
            errors.push(BudgetError::Period { value: v.clone() });
            None
        }),
    };
    let Some(grams) = grams else {
        if let Some(v) = period {
            errors.push(BudgetError::PeriodWithoutGrams { value: v.clone() });
        }
        return if errors.is_empty() {
            Ok(None)
        } else {
            Err(errors)
        };
    };
    let parsed_grams = grams
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|g| g.is_finite() && *g > 0.0);
    if parsed_grams.is_none() {
        errors.push(BudgetError::Grams {
            value: grams.clone(),
        });
    }
    match (parsed_grams, parsed_period) {
        (Some(grams), Some(period)) if errors.is_empty() => {
            Ok(Some(NamespaceBudget { grams, period }))
        }
        _ => Err(errors),
    }
}

/// Tunables of budget assessment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// A usage document older than this is ignored (no assessment, no
    /// effect on deferral).
    pub max_usage_age_seconds: i64,
    /// Days in the burn window: the document's current day and the whole
    /// days before it (at least 1).
    pub burn_window_days: i64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            max_usage_age_seconds: 3600,
            burn_window_days: 3,
        }
    }
}

impl BudgetConfig {
    /// Checks ranges; returns every problem with its field name.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if self.max_usage_age_seconds <= 0 {
            errs.push("maxUsageAgeSeconds: must be positive".to_owned());
        }
        if !(1..=30).contains(&self.burn_window_days) {
            errs.push("burnWindowDays: must be from 1 to 30".to_owned());
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}

/// Where a namespace stands against its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetState {
    /// Projected to last past the period's end.
    Under,
    /// Projected to be exhausted before the period's end at the current burn rate.
    AtRisk,
    /// Used up for this period.
    Exhausted,
}

impl BudgetState {
    /// The name used in logs and docs (`under`, `at_risk`, `exhausted`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Under => "under",
            Self::AtRisk => "at_risk",
            Self::Exhausted => "exhausted",
        }
    }

    /// The value of the `carbon_kube_budget_state` gauge: 0 under, 1 at
    /// risk, 2 exhausted (−1, no assessment, is the caller's).
    pub fn metric_value(self) -> i64 {
        match self {
            Self::Under => 0,
            Self::AtRisk => 1,
            Self::Exhausted => 2,
        }
    }

    /// What the state does to the namespace's deferrable work.
    pub fn pressure(self) -> BudgetPressure {
        match self {
            Self::Under => BudgetPressure::None,
            Self::AtRisk => BudgetPressure::AtRisk,
            Self::Exhausted => BudgetPressure::Exhausted,
        }
    }
}

/// How a namespace's budget bears on the release planner. Only ever makes
/// it stricter about releasing *before* the latest release; never later.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPressure {
    /// No budget, under budget, or no (fresh) usage data: the planner as usual.
    #[default]
    None,
    /// Projected to run out this period: half the usual minimum saving holds a pod.
    AtRisk,
    /// Used up: any greener window before the latest release holds the pod
    /// (the greenest one wins).
    Exhausted,
}

impl BudgetPressure {
    /// The minimum saving (fraction of releasing now) that holds a pod,
    /// given the planner's usual `base`.
    pub fn min_saving_fraction(self, base: f64) -> f64 {
        match self {
            Self::None => base,
            Self::AtRisk => base / 2.0,
            Self::Exhausted => 0.0,
        }
    }
}

/// Why a budget could not be assessed (the budget then has no effect).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum UsageUnavailable {
    /// The accounting controller's document has not been read (absent,
    /// unreadable, or not yet synced).
    #[error("no usage document from the accounting controller")]
    NoDocument,
    /// The document is older than the allowed age.
    #[error(
        "the usage document is {age_seconds} s old (written {}; at most {max_seconds} s allowed)",
        fmt_utc(*generated_at)
    )]
    Stale {
        /// When it was written.
        generated_at: UnixSeconds,
        /// Its age at `now`, seconds.
        age_seconds: i64,
        /// The allowed age, seconds.
        max_seconds: i64,
    },
}

/// A namespace's budget against its usage, at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStatus {
    /// The budget.
    pub budget: NamespaceBudget,
    /// Start of the current period (included).
    pub period_start: UnixSeconds,
    /// End of the current period (excluded).
    pub period_end: UnixSeconds,
    /// Grams used in the current period, as of `usage_at`.
    pub used_grams: f64,
    /// Grams per hour over the burn window.
    pub burn_rate_grams_per_hour: f64,
    /// Length of the burn window, hours.
    pub burn_window_hours: f64,
    /// When the usage figures were written (the document's `generatedAt`,
    /// at most `now`).
    pub usage_at: UnixSeconds,
    /// When the budget is projected to run out: `usage_at` when already
    /// exhausted; `None` while nothing burns.
    pub exhaustion_at: Option<UnixSeconds>,
    /// The state.
    pub state: BudgetState,
    /// Modelled if any figure in the period was.
    pub quality: DataQuality,
}

impl BudgetStatus {
    /// Seconds from `now` to the projected exhaustion (0 when exhausted or
    /// overdue); `None` while nothing burns.
    pub fn seconds_to_exhaustion(&self, now: UnixSeconds) -> Option<i64> {
        self.exhaustion_at.map(|t| (t - now).max(0))
    }

    /// What the status does to the namespace's deferrable work.
    pub fn pressure(&self) -> BudgetPressure {
        self.state.pressure()
    }

    /// One sentence, e.g. "namespace team-a has used 12500 g of its 10000 g
    /// month budget (2026-12-01 00:00 UTC to 2027-01-01 00:00 UTC; modelled),
    /// burning 42 g/h over the last 72 h: exhausted".
    pub fn explain(&self, namespace: &str) -> String {
        let quality = match self.quality {
            DataQuality::Measured => "measured",
            DataQuality::Modelled => "modelled",
        };
        let head = format!(
            "namespace {namespace} has used {:.0} g of its {:.0} g {} budget ({} to {}; {quality}), burning {:.1} g/h over the last {:.0} h",
            self.used_grams,
            self.budget.grams,
            self.budget.period.as_str(),
            fmt_utc(self.period_start),
            fmt_utc(self.period_end),
            self.burn_rate_grams_per_hour,
            self.burn_window_hours,
        );
        match (self.state, self.exhaustion_at) {
            (BudgetState::Exhausted, _) => {
                format!(
                    "{head}: exhausted; deferrable pods wait for the greenest window before their deadlines"
                )
            }
            (BudgetState::AtRisk, Some(t)) => format!(
                "{head}: at risk, projected to run out at {}, before the period ends; deferrable pods wait for clearly greener windows",
                fmt_utc(t)
            ),
            (_, Some(t)) => format!(
                "{head}: under budget, projected to last past the period's end (exhausted at {} at this rate)",
                fmt_utc(t)
            ),
            (_, None) => format!("{head}: under budget, nothing burning"),
        }
    }
}

/// Assesses a namespace's budget against the accounting controller's
/// document at `now`. A namespace the (fresh) document does not list has
/// used nothing. See the module documentation for the figures.
pub fn assess(
    namespace: &str,
    budget: &NamespaceBudget,
    usage: Option<&UsageDocument>,
    now: UnixSeconds,
    cfg: &BudgetConfig,
) -> Result<BudgetStatus, UsageUnavailable> {
    let doc = usage.ok_or(UsageUnavailable::NoDocument)?;
    let age = now.saturating_sub(doc.generated_at);
    if age > cfg.max_usage_age_seconds {
        return Err(UsageUnavailable::Stale {
            generated_at: doc.generated_at,
            age_seconds: age,
            max_seconds: cfg.max_usage_age_seconds,
        });
    }
    // A clock running ahead of the controller's: the figures are as of now.
    let usage_at = doc.generated_at.min(now);
    let days: &[DayUsage] = doc.namespaces.get(namespace).map_or(&[], Vec::as_slice);
    let (period_start, period_end) = budget.period.bounds(now);
    let in_period = days
        .iter()
        .filter(|d| d.day_start >= period_start && d.day_start < period_end);
    let used_grams: f64 = in_period.clone().map(finite_grams).sum();
    let quality = if in_period
        .clone()
        .any(|d| d.quality == DataQuality::Modelled)
    {
        DataQuality::Modelled
    } else if in_period.count() > 0 {
        DataQuality::Measured
    } else {
        DataQuality::default()
    };
    let (burn_rate_grams_per_hour, burn_window_hours) =
        burn_rate(days, usage_at, cfg.burn_window_days);
    let remaining = budget.grams - used_grams;
    let exhaustion_at = if remaining <= 0.0 {
        Some(usage_at)
    } else if burn_rate_grams_per_hour > 0.0 {
        let secs = (remaining / burn_rate_grams_per_hour * 3600.0).min(1e15);
        Some(usage_at.saturating_add(secs.ceil() as i64))
    } else {
        None
    };
    let state = if remaining <= 0.0 {
        BudgetState::Exhausted
    } else if exhaustion_at.is_some_and(|t| t < period_end) {
        BudgetState::AtRisk
    } else {
        BudgetState::Under
    };
    Ok(BudgetStatus {
        budget: *budget,
        period_start,
        period_end,
        used_grams,
        burn_rate_grams_per_hour,
        burn_window_hours,
        usage_at,
        exhaustion_at,
        state,
        quality,
    })
}

/// A day's grams, with non-finite or negative figures (a broken writer)
/// counted as zero.
fn finite_grams(d: &DayUsage) -> f64 {
    let g = d.total_grams();
    if g.is_finite() && g > 0.0 { g } else { 0.0 }
}

/// Grams per hour over the burn window ending at `usage_at`, and the
/// window's length in hours. See the module documentation.
pub fn burn_rate(days: &[DayUsage], usage_at: UnixSeconds, window_days: i64) -> (f64, f64) {
    let today = usage_at.div_euclid(DAY) * DAY;
    let mut start = today - (window_days.max(1) - 1) * DAY;
    if let Some(first) = days
        .iter()
        .map(|d| d.day_start)
        .filter(|t| *t <= usage_at)
        .min()
    {
        start = start.max(first);
    }
    let hours = ((usage_at - start) as f64 / 3600.0).max(1.0);
    let grams: f64 = days
        .iter()
        .filter(|d| d.day_start >= start && d.day_start <= usage_at)
        .map(finite_grams)
        .sum();
    (grams / hours, hours)
}

#[cfg(test)]
mod tests;
