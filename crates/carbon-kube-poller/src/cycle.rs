//! One poll cycle: fetch every zone, then merge the results into the snapshot.

use carbon_kube_model::{MergeOutcome, Snapshot, Source, UnixSeconds, ZoneId, ZoneRecord};
use carbon_kube_signals::{Signals, ZoneFetch};
use futures::future::join_all;

/// How complete the published data is after a cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completeness {
    /// Every zone got fresh provider data this cycle (or keeps a still-valid
    /// provider value over a fallback that arrived).
    Complete,
    /// Every zone got a value this cycle, but for at least one it is only a
    /// fallback: a weather estimate or a static annual average.
    Fallback,
    /// Some zones got nothing: they keep their last value (stale) or have none.
    Partial,
    /// No zone got anything this cycle.
    Absent,
}

impl Completeness {
    /// Process exit code for `--once`: 0 complete, 4 fallback only for some
    /// zones, 2 partial, 3 absent (1 is left for errors).
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Complete => 0,
            Self::Partial => 2,
            Self::Absent => 3,
            Self::Fallback => 4,
        }
    }
}

/// What kind of value a zone published: provider data, or a fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceQuality {
    /// From a grid data provider (Electricity Maps, WattTime, UK Carbon
    /// Intensity), including a provider's own estimates.
    Provider,
    /// Estimated by Carbon-Kube from a weather forecast (NOAA, Open-Meteo).
    WeatherEstimate,
    /// The zone's static annual average.
    StaticAverage,
}

impl SourceQuality {
    /// The quality of a record, from its source.
    pub fn of(record: &ZoneRecord) -> Self {
        match record.source.as_str() {
            Source::STATIC => Self::StaticAverage,
            Source::NOAA_ESTIMATE | Source::OPEN_METEO_ESTIMATE => Self::WeatherEstimate,
            _ => Self::Provider,
        }
    }

    /// Whether this is a fallback rather than provider data.
    pub fn is_fallback(self) -> bool {
        self != Self::Provider
    }

    /// A short label for logs and the summary line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provider => "provider data",
            Self::WeatherEstimate => "weather estimate (fallback)",
            Self::StaticAverage => "static annual average (fallback)",
        }
    }
}

/// What happened to one zone in a cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ZoneOutcome {
    /// A new value was published from `source`.
    Updated {
        /// The provider that answered.
        source: String,
        /// True when it was not the first provider of the chain that answered.
        fell_back: bool,
        /// Provider data, or a weather estimate or static average.
        quality: SourceQuality,
    },
    /// A value arrived but the published one is better and still valid.
    KeptBetter {
        /// The provider of the value that was not used.
        rejected_source: String,
        /// The quality of the value kept.
        kept: SourceQuality,
    },
    /// Every provider failed; the last good value stays, aging.
    KeptStale {
        /// Why every provider failed.
        error: String,
    },
    /// Every provider failed and there is no earlier value.
    Missing {
        /// Why every provider failed.
        error: String,
    },
}

/// The outcome of a cycle, per zone.
#[derive(Clone, Debug)]
pub struct PollReport {
    /// Per-zone outcomes in zone order.
    pub zones: Vec<(ZoneId, ZoneOutcome)>,
    /// Overall completeness.
    pub completeness: Completeness,
}

impl PollReport {
    /// Logs one line per zone and a summary.
    pub fn log(&self) {
        for (zone, outcome) in &self.zones {
            match outcome {
                ZoneOutcome::Updated {
                    source,
                    fell_back,
                    quality,
                } if quality.is_fallback() => {
                    tracing::warn!(%zone, %source, fell_back, quality = quality.as_str(), "zone updated with a fallback, not provider data");
                }
                ZoneOutcome::Updated {
                    source,
                    fell_back,
                    quality,
                } => {
                    tracing::info!(%zone, %source, fell_back, quality = quality.as_str(), "zone updated");
                }
                ZoneOutcome::KeptBetter {
                    rejected_source,
                    kept,
                } => tracing::info!(
                    %zone, %rejected_source, kept = kept.as_str(),
                    "kept the published value: it is still valid and better than the new one"
                ),
                ZoneOutcome::KeptStale { error } => {
                    tracing::warn!(%zone, %error, "every provider failed; keeping the last good value");
                }
                ZoneOutcome::Missing { error } => {
                    tracing::error!(%zone, %error, "every provider failed; zone has no data");
                }
            }
        }
        tracing::info!(completeness = ?self.completeness, zones = self.zones.len(), "poll cycle done");
    }

    /// One line per zone saying what it published and how good it is, e.g.
    /// `DE: static (static annual average (fallback))`, then the overall
    /// completeness and exit code. Printed to stderr by `--once`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (zone, outcome) in &self.zones {
            let line = match outcome {
                ZoneOutcome::Updated {
                    source, quality, ..
                } => format!("{zone}: {source} ({})", quality.as_str()),
                ZoneOutcome::KeptBetter {
                    rejected_source,
                    kept,
                } => format!(
                    "{zone}: kept the still-valid value, {} (ignored {rejected_source})",
                    kept.as_str()
                ),
                ZoneOutcome::KeptStale { .. } => {
                    format!("{zone}: every provider failed; last value kept (stale)")
                }
                ZoneOutcome::Missing { .. } => {
                    format!("{zone}: every provider failed; no data")
                }
            };
            out.push_str(&line);
            out.push('\n');
        }
        let what = match self.completeness {
            Completeness::Complete => "complete: every zone has provider data",
            Completeness::Fallback => {
                "fallback: every zone has a value, some only a weather estimate or static average"
            }
            Completeness::Partial => "partial: some zones got no value this cycle",
            Completeness::Absent => "absent: no zone got a value this cycle",
        };
        out.push_str(&format!(
            "{what} (exit code {})\n",
            self.completeness.exit_code()
        ));
        out
    }
}

/// Fetches every zone concurrently (the providers bound the concurrency).
pub async fn fetch_all(signals: &Signals, zones: &[ZoneId], now: UnixSeconds) -> Vec<ZoneFetch> {
    join_all(zones.iter().map(|z| signals.fetch_zone(z, now))).await
}

/// Merges fetched records into `snapshot` (see [`Snapshot::merge`]): pure, so
/// tests need neither network nor cluster.
pub fn apply(
    snapshot: &mut Snapshot,
    fetches: &[ZoneFetch],
    now: UnixSeconds,
    max_age_seconds: i64,
) -> PollReport {
    let mut zones = Vec::with_capacity(fetches.len());
    let mut fresh = 0;
    let mut fallbacks = 0;
    for fetch in fetches {
        let outcome = match &fetch.record {
            Some(record) => {
                fresh += 1;
                let source = record.source.to_string();
                match snapshot.merge(fetch.zone.clone(), record.clone(), now, max_age_seconds) {
                    MergeOutcome::Added | MergeOutcome::Replaced => {
                        let quality = SourceQuality::of(record);
                        if quality.is_fallback() {
                            fallbacks += 1;
                        }
                        ZoneOutcome::Updated {
                            fell_back: !fetch
                                .attempts
                                .first()
                                .is_some_and(|a| a.outcome.is_success()),
                            source,
                            quality,
                        }
                    }
                    MergeOutcome::KeptBetter => {
                        let kept = snapshot
                            .get(&fetch.zone)
                            .map_or(SourceQuality::StaticAverage, SourceQuality::of);
                        if kept.is_fallback() {
                            fallbacks += 1;
                        }
                        ZoneOutcome::KeptBetter {
                            rejected_source: source,
                            kept,
                        }
                    }
                }
            }
            None => {
                let error = summarize_errors(fetch);
                if snapshot.get(&fetch.zone).is_some() {
                    snapshot.mark_failed(&fetch.zone, &error);
                    ZoneOutcome::KeptStale { error }
                } else {
                    ZoneOutcome::Missing { error }
                }
            }
        };
        zones.push((fetch.zone.clone(), outcome));
    }
    let completeness = match fresh {
        0 => Completeness::Absent,
        n if n == fetches.len() && fallbacks == 0 => Completeness::Complete,
        n if n == fetches.len() => Completeness::Fallback,
        _ => Completeness::Partial,
    };
    PollReport {
        zones,
        completeness,
    }
}

fn summarize_errors(fetch: &ZoneFetch) -> String {
    let parts: Vec<String> = fetch
        .attempts
        .iter()
        .map(|a| match &a.error {
            Some(e) => format!("{}: {e}", a.provider),
            None => format!("{}: {}", a.provider, a.outcome.as_label()),
        })
        .collect();
    if parts.is_empty() {
        "no provider configured for this zone".to_owned()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbon_kube_model::{CarbonIntensity, Source, ZoneRecord};
    use carbon_kube_signals::{Attempt, ErrorKind, Outcome};

    const NOW: UnixSeconds = 1_700_000_000;

    fn zone(z: &str) -> ZoneId {
        ZoneId::parse(z).unwrap()
    }

    fn record(v: f64, source: &str, estimated: bool) -> ZoneRecord {
        let mut r = ZoneRecord::new(CarbonIntensity::new(v).unwrap(), NOW, Source::new(source));
        r.estimated = estimated;
        r.valid_until = Some(NOW + 3600);
        r
    }

    fn fetched(z: &str, record: Option<ZoneRecord>, failures: &[&'static str]) -> ZoneFetch {
        let mut attempts: Vec<Attempt> = failures
            .iter()
            .map(|p| Attempt {
                provider: p,
                outcome: Outcome::Error(ErrorKind::ServerError(503)),
                error: Some(format!("{p}: HTTP 503 after 3 attempts")),
                warnings: vec![],
            })
            .collect();
        if let Some(r) = &record {
            attempts.push(Attempt {
                provider: "electricity_maps",
                outcome: Outcome::Success,
                error: None,
                warnings: vec![],
            });
            let _ = r;
        }
        ZoneFetch {
            zone: zone(z),
            record,
            attempts,
        }
    }

    #[test]
    fn every_zone_fresh_is_complete() {
        let mut s = Snapshot::default();
        let r = apply(
            &mut s,
            &[
                fetched("DE", Some(record(300.0, "electricity_maps", false)), &[]),
                fetched(
                    "GB",
                    Some(record(120.0, "electricity_maps", false)),
                    &["watttime"],
                ),
            ],
            NOW,
            1800,
        );
        assert_eq!(r.completeness, Completeness::Complete);
        assert_eq!(s.zones.len(), 2);
        assert_eq!(
            r.zones[1].1,
            ZoneOutcome::Updated {
                source: "electricity_maps".into(),
                fell_back: true,
                quality: SourceQuality::Provider,
            }
        );
    }

    #[test]
    fn a_failed_zone_keeps_its_last_value_and_does_not_block_others() {
        let mut s = Snapshot::default();
        apply(
            &mut s,
            &[fetched(
                "DE",
                Some(record(300.0, "electricity_maps", false)),
                &[],
            )],
            NOW,
            1800,
        );
        let r = apply(
            &mut s,
            &[
                fetched("DE", None, &["electricity_maps", "watttime"]),
                fetched("GB", Some(record(120.0, "uk_carbon_intensity", false)), &[]),
                fetched("FR", None, &["electricity_maps"]),
            ],
            NOW + 600,
            1800,
        );
        assert_eq!(r.completeness, Completeness::Partial);
        assert!(matches!(r.zones[0].1, ZoneOutcome::KeptStale { .. }));
        assert!(matches!(r.zones[2].1, ZoneOutcome::Missing { .. }));
        let de = s.get(&zone("DE")).unwrap();
        assert_eq!(de.carbon_intensity.g_per_kwh(), 300.0);
        assert_eq!(
            de.timestamp, NOW,
            "the kept value keeps its own timestamp, so its age shows"
        );
        assert!(de.last_error.as_deref().unwrap().contains("watttime"));
        assert!(s.get(&zone("FR")).is_none());
        assert!(s.get(&zone("GB")).is_some());
    }

    /// Issue 18: a static average or a weather estimate published as the
    /// zone's value exited 0, like fresh provider data.
    #[test]
    fn a_fallback_value_is_not_complete() {
        let mut s = Snapshot::default();
        let r = apply(
            &mut s,
            &[
                fetched("DE", Some(record(300.0, "electricity_maps", false)), &[]),
                fetched(
                    "FR",
                    Some(record(33.0, "static", true)),
                    &["electricity_maps"],
                ),
            ],
            NOW,
            1800,
        );
        assert_eq!(r.completeness, Completeness::Fallback);
        assert_eq!(r.completeness.exit_code(), 4);
        let summary = r.summary();
        assert!(
            summary.contains("DE: electricity_maps (provider data)"),
            "{summary}"
        );
        assert!(
            summary.contains("FR: static (static annual average (fallback))"),
            "{summary}"
        );
        assert!(summary.ends_with("(exit code 4)\n"), "{summary}");
        let r = apply(
            &mut Snapshot::default(),
            &[fetched(
                "DE",
                Some(record(280.0, "noaa_estimate", true)),
                &["electricity_maps"],
            )],
            NOW,
            1800,
        );
        assert_eq!(r.completeness, Completeness::Fallback);
        assert!(r.summary().contains("weather estimate"), "{}", r.summary());
        // A missing zone is worse than a fallback: partial.
        let r = apply(
            &mut Snapshot::default(),
            &[
                fetched("DE", Some(record(280.0, "static", true)), &[]),
                fetched("FR", None, &["static"]),
            ],
            NOW,
            1800,
        );
        assert_eq!(r.completeness, Completeness::Partial);
    }

    #[test]
    fn a_kept_provider_value_over_a_fallback_is_complete() {
        let mut s = Snapshot::default();
        apply(
            &mut s,
            &[fetched(
                "DE",
                Some(record(300.0, "electricity_maps", false)),
                &[],
            )],
            NOW,
            1800,
        );
        let r = apply(
            &mut s,
            &[fetched(
                "DE",
                Some(record(420.0, "static", true)),
                &["electricity_maps"],
            )],
            NOW + 60,
            1800,
        );
        assert_eq!(r.completeness, Completeness::Complete);
        assert!(
            r.summary()
                .contains("kept the still-valid value, provider data"),
            "{}",
            r.summary()
        );
    }

    #[test]
    fn nothing_fresh_is_absent() {
        let mut s = Snapshot::default();
        let r = apply(&mut s, &[fetched("DE", None, &["static"])], NOW, 1800);
        assert_eq!(r.completeness, Completeness::Absent);
        assert_eq!(r.completeness.exit_code(), 3);
    }

    #[test]
    fn a_static_fallback_does_not_replace_a_valid_measurement() {
        let mut s = Snapshot::default();
        apply(
            &mut s,
            &[fetched(
                "DE",
                Some(record(300.0, "electricity_maps", false)),
                &[],
            )],
            NOW,
            1800,
        );
        let r = apply(
            &mut s,
            &[fetched(
                "DE",
                Some(record(420.0, "static", true)),
                &["electricity_maps"],
            )],
            NOW + 60,
            1800,
        );
        assert_eq!(
            r.zones[0].1,
            ZoneOutcome::KeptBetter {
                rejected_source: "static".into(),
                kept: SourceQuality::Provider,
            }
        );
        assert_eq!(
            s.get(&zone("DE")).unwrap().carbon_intensity.g_per_kwh(),
            300.0
        );
    }
}
