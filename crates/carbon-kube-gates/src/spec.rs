//! A pod's deferral request, read from its annotations and validated once.
//!
//! A pod asks to be deferred with `carbon-kube.io/deadline` (RFC 3339: the
//! time by which it must have *finished*) or `carbon-kube.io/max-delay` (a
//! duration after creation, e.g. `6h`), and may say how long it runs with
//! `carbon-kube.io/expected-duration` (default: the controller's
//! `--default-expected-duration`). With both a deadline and a max delay the
//! earlier wins. Durations are written `90m`, `2h30m`, `1d`, or ISO 8601
//! (`PT2H`).
//!
//! Every problem is reported with the annotation it is about, so the
//! controller can explain it in an Event and release the pod at once.

use std::collections::BTreeMap;
use std::fmt;

use carbon_kube_model::{UnixSeconds, keys};

/// Controller-wide settings that shape a pod's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecDefaults {
    /// Expected run time of a pod without `carbon-kube.io/expected-duration`.
    pub expected_duration_seconds: i64,
    /// No pod is held longer than this after its creation, whatever its
    /// deadline says (the deadline is moved earlier).
    pub max_deferral_seconds: i64,
}

impl Default for SpecDefaults {
    fn default() -> Self {
        Self {
            expected_duration_seconds: 3600,
            max_deferral_seconds: 7 * 86_400,
        }
    }
}

/// A valid deferral request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeferralSpec {
    /// When the pod was created.
    pub created: UnixSeconds,
    /// The time by which the pod must have finished (after the cap).
    pub deadline: UnixSeconds,
    /// How long the pod is expected to run, seconds (positive).
    pub expected_duration_seconds: i64,
    /// Whether the deadline was moved earlier by the controller's
    /// `--max-deferral`.
    pub capped: bool,
}

impl DeferralSpec {
    /// The latest start that still meets the deadline.
    pub fn latest_start(&self) -> UnixSeconds {
        self.deadline - self.expected_duration_seconds
    }
}

/// One thing wrong with a pod's deferral annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecProblem {
    /// The annotation concerned.
    pub annotation: &'static str,
    /// Its value as written.
    pub value: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}: {}", self.annotation, self.value, self.message)
    }
}

/// Joins problems into one sentence for an Event or a warning.
pub fn describe_problems(problems: &[SpecProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a pod's annotations say about deferral.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecOutcome {
    /// Neither `deadline` nor `max-delay` is set: the pod did not ask.
    NotRequested,
    /// A valid request.
    Valid(DeferralSpec),
    /// The pod asked, but the annotations are wrong.
    Invalid(Vec<SpecProblem>),
}

impl SpecOutcome {
    /// Whether the pod asked to be deferred (validly or not).
    pub fn requested(&self) -> bool {
        !matches!(self, Self::NotRequested)
    }
}

/// Reads and validates the deferral annotations of a pod created at `created`.
pub fn read_spec(
    annotations: &BTreeMap<String, String>,
    created: UnixSeconds,
    defaults: &SpecDefaults,
) -> SpecOutcome {
    let deadline_raw = annotations.get(keys::ANNOTATION_DEADLINE);
    let max_delay_raw = annotations.get(keys::ANNOTATION_MAX_DELAY);
    if deadline_raw.is_none() && max_delay_raw.is_none() {
        return SpecOutcome::NotRequested;
    }
    let mut problems = Vec::new();
    let mut deadline: Option<UnixSeconds> = None;
    if let Some(raw) = deadline_raw {
        match parse_time(raw) {
            Ok(t) if t <= created => problems.push(SpecProblem {
                annotation: keys::ANNOTATION_DEADLINE,
                value: raw.clone(),
                message: "deadline is not after the pod's creation".to_owned(),
            }),
            Ok(t) => deadline = Some(t),
            Err(message) => problems.push(SpecProblem {
                annotation: keys::ANNOTATION_DEADLINE,
                value: raw.clone(),
                message,
            }),
        }
    }
    if let Some(raw) = max_delay_raw {
        match parse_duration(raw) {
            Ok(d) => {
                let t = created.saturating_add(d);
                deadline = Some(deadline.map_or(t, |x| x.min(t)));
            }
            Err(message) => problems.push(SpecProblem {
                annotation: keys::ANNOTATION_MAX_DELAY,
                value: raw.clone(),
                message,
            }),
        }
    }
    let mut expected = defaults.expected_duration_seconds.max(1);
    if let Some(raw) = annotations.get(keys::ANNOTATION_EXPECTED_DURATION) {
        match parse_duration(raw) {
            Ok(d) => expected = d,
            Err(message) => problems.push(SpecProblem {
                annotation: keys::ANNOTATION_EXPECTED_DURATION,
                value: raw.clone(),
                message,
            }),
        }
    }
    match deadline {
        Some(deadline) if problems.is_empty() => {
            let cap = created.saturating_add(defaults.max_deferral_seconds.max(0));
            SpecOutcome::Valid(DeferralSpec {
                created,
                deadline: deadline.min(cap),
                expected_duration_seconds: expected,
                capped: deadline > cap,
            })
        }
        _ => SpecOutcome::Invalid(problems),
    }
}

/// Parses an RFC 3339 time to unix seconds.
pub fn parse_time(raw: &str) -> Result<UnixSeconds, String> {
    raw.trim()
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .map_err(|e| format!("not an RFC 3339 time such as 2026-05-02T20:00:00Z ({e})"))
}

/// Formats unix seconds as RFC 3339 in UTC (`2026-05-02T14:00:00Z`).
pub fn format_time(t: UnixSeconds) -> String {
    jiff::Timestamp::from_second(t).map_or_else(|_| t.to_string(), |ts| ts.to_string())
}

/// Parses a positive duration (`90m`, `2h30m`, `1d`, `PT2H`) to seconds.
pub fn parse_duration(raw: &str) -> Result<i64, String> {
    let text = raw.trim();
    if text.starts_with('-') {
        return Err("duration is negative".to_owned());
    }
    let seconds = match humantime::parse_duration(text) {
        Ok(d) => i64::try_from(d.as_secs()).map_err(|_| "duration is too long".to_owned())?,
        Err(human) => match text.parse::<jiff::SignedDuration>() {
            Ok(d) if d.is_negative() => return Err("duration is negative".to_owned()),
            Ok(d) => d.as_secs(),
            Err(_) => {
                return Err(format!(
                    "not a duration such as 90m, 2h30m, 1d or PT2H ({human})"
                ));
            }
        },
    };
    if seconds <= 0 {
        return Err("duration must be at least one second".to_owned());
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_777_716_000; // 2026-05-02T10:00:00Z

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn valid(outcome: SpecOutcome) -> DeferralSpec {
        match outcome {
            SpecOutcome::Valid(s) => s,
            other => panic!("expected a valid spec, got {other:?}"),
        }
    }

    fn problems(outcome: SpecOutcome) -> Vec<SpecProblem> {
        match outcome {
            SpecOutcome::Invalid(p) => p,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn a_pod_without_deadline_or_max_delay_did_not_ask() {
        let d = SpecDefaults::default();
        assert_eq!(read_spec(&ann(&[]), T0, &d), SpecOutcome::NotRequested);
        let only_duration = ann(&[(keys::ANNOTATION_EXPECTED_DURATION, "2h")]);
        assert!(!read_spec(&only_duration, T0, &d).requested());
    }

    #[test]
    fn deadline_and_expected_duration() {
        let spec = valid(read_spec(
            &ann(&[
                (keys::ANNOTATION_DEADLINE, "2026-05-02T20:00:00Z"),
                (keys::ANNOTATION_EXPECTED_DURATION, "2h"),
            ]),
            T0,
            &SpecDefaults::default(),
        ));
        assert_eq!(spec.deadline, T0 + 10 * 3600);
        assert_eq!(spec.expected_duration_seconds, 7200);
        assert_eq!(spec.latest_start(), T0 + 8 * 3600);
        assert!(!spec.capped);
        // Offsets are honoured.
        let spec = valid(read_spec(
            &ann(&[(keys::ANNOTATION_DEADLINE, "2026-05-02T22:00:00+02:00")]),
            T0,
            &SpecDefaults::default(),
        ));
        assert_eq!(spec.deadline, T0 + 10 * 3600);
        assert_eq!(spec.expected_duration_seconds, 3600);
    }

    #[test]
    fn max_delay_counts_from_creation_and_the_earlier_limit_wins() {
        let d = SpecDefaults::default();
        let spec = valid(read_spec(
            &ann(&[(keys::ANNOTATION_MAX_DELAY, "6h")]),
            T0,
            &d,
        ));
        assert_eq!(spec.deadline, T0 + 6 * 3600);
        let spec = valid(read_spec(
            &ann(&[
                (keys::ANNOTATION_MAX_DELAY, "6h"),
                (keys::ANNOTATION_DEADLINE, "2026-05-02T12:00:00Z"),
            ]),
            T0,
            &d,
        ));
        assert_eq!(spec.deadline, T0 + 2 * 3600);
    }

    #[test]
    fn durations_in_several_spellings() {
        assert_eq!(parse_duration("90m"), Ok(5400));
        assert_eq!(parse_duration("2h30m"), Ok(9000));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        assert_eq!(parse_duration("PT2H"), Ok(7200));
        assert_eq!(parse_duration(" 45s "), Ok(45));
        assert!(parse_duration("-1h").unwrap_err().contains("negative"));
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("at least one second")
        );
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
    }

    #[test]
    fn the_controller_caps_very_long_deferrals() {
        let d = SpecDefaults {
            max_deferral_seconds: 86_400,
            ..SpecDefaults::default()
        };
        let spec = valid(read_spec(
            &ann(&[(keys::ANNOTATION_MAX_DELAY, "30d")]),
            T0,
            &d,
        ));
        assert_eq!(spec.deadline, T0 + 86_400);
        assert!(spec.capped);
    }

    #[test]
    fn bad_annotations_are_each_named() {
        let d = SpecDefaults::default();
        let p = problems(read_spec(
            &ann(&[(keys::ANNOTATION_DEADLINE, "tomorrow evening")]),
            T0,
            &d,
        ));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].annotation, keys::ANNOTATION_DEADLINE);
        assert!(p[0].message.contains("RFC 3339"), "{}", p[0]);
        let p = problems(read_spec(
            &ann(&[(keys::ANNOTATION_DEADLINE, "2026-05-01T10:00:00Z")]),
            T0,
            &d,
        ));
        assert!(p[0].message.contains("not after the pod's creation"));
        let p = problems(read_spec(
            &ann(&[
                (keys::ANNOTATION_MAX_DELAY, "6h"),
                (keys::ANNOTATION_EXPECTED_DURATION, "-2h"),
            ]),
            T0,
            &d,
        ));
        assert_eq!(p[0].annotation, keys::ANNOTATION_EXPECTED_DURATION);
        assert!(p[0].message.contains("negative"));
        // Every problem is reported, not just the first.
        let p = problems(read_spec(
            &ann(&[
                (keys::ANNOTATION_DEADLINE, "never"),
                (keys::ANNOTATION_MAX_DELAY, "a while"),
                (keys::ANNOTATION_EXPECTED_DURATION, "long"),
            ]),
            T0,
            &d,
        ));
        assert_eq!(p.len(), 3);
        let text = describe_problems(&p);
        assert!(text.contains("carbon-kube.io/deadline=\"never\""), "{text}");
        assert!(
            text.contains("carbon-kube.io/max-delay=\"a while\""),
            "{text}"
        );
    }

    #[test]
    fn times_round_trip() {
        assert_eq!(format_time(T0), "2026-05-02T10:00:00Z");
        assert_eq!(parse_time(&format_time(T0)), Ok(T0));
    }
}
