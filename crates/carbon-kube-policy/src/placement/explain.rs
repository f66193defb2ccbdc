//! Did carbon change where a pod landed? A compact, owned summary of a
//! filter and score decision, kept until the pod is bound, answers that and
//! writes the sentence for the pod's Event ("placed in DE at 120 g/kWh over
//! US-TEX-ERCO at 410 g/kWh").
//!
//! Carbon changed the outcome when the pod landed in a zone with usable data
//! and some other candidate zone was dirtier and either was filtered out by
//! the threshold, or had a node with at least as much free capacity as the
//! best node of the chosen zone (so a capacity-only ranking would have
//! picked it, or tied).

use carbon_kube_model::{CarbonIntensity, ZoneId};

use super::{FilterOutcome, ScoreOutcome, Verdict};

/// One candidate zone in a [`DecisionSummary`].
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneSummary {
    /// The zone.
    pub zone: ZoneId,
    /// Its intensity, when its data counted.
    pub intensity: Option<CarbonIntensity>,
    /// Every candidate node of the zone was filtered out by the threshold.
    pub filtered: bool,
    /// Best free capacity (0–1) among the zone's scored nodes, if scored.
    pub best_performance: Option<f64>,
}

/// What carbon did for one pod, kept until the pod is bound.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecisionSummary {
    /// Candidate zones with known ids.
    pub zones: Vec<ZoneSummary>,
    /// The threshold that applied, when the filter ran.
    pub threshold: Option<CarbonIntensity>,
}

/// Why carbon changed a pod's landing zone.
#[derive(Clone, Debug, PartialEq)]
pub struct Landing {
    /// The zone the pod landed in.
    pub zone: ZoneId,
    /// Its intensity.
    pub intensity: CarbonIntensity,
    /// The dirtier zone it was placed over.
    pub over: ZoneId,
    /// That zone's intensity.
    pub over_intensity: CarbonIntensity,
    /// The dirtier zone was filtered out by the threshold (rather than
    /// outscored).
    pub over_filtered: bool,
    /// The threshold, when the filter ran.
    pub threshold: Option<CarbonIntensity>,
}

impl std::fmt::Display for Landing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "placed in {} at {} over {} at {}",
            self.zone, self.intensity, self.over, self.over_intensity
        )?;
        match (self.over_filtered, self.threshold) {
            (true, Some(t)) => write!(f, " (above the threshold of {t})"),
            _ => Ok(()),
        }
    }
}

impl DecisionSummary {
    fn entry(&mut self, zone: &ZoneId, intensity: Option<CarbonIntensity>) -> &mut ZoneSummary {
        let i = match self.zones.iter().position(|z| z.zone == *zone) {
            Some(i) => i,
            None => {
                self.zones.push(ZoneSummary {
                    zone: zone.clone(),
                    intensity,
                    filtered: false,
                    best_performance: None,
                });
                self.zones.len() - 1
            }
        };
        let e = &mut self.zones[i];
        if intensity.is_some() {
            e.intensity = intensity;
        }
        e
    }

    /// Records a filter decision. Returns `false` (and records nothing) when
    /// carbon was not applied.
    pub fn record_filter(&mut self, outcome: &FilterOutcome<'_>) -> bool {
        if outcome.not_applied.is_some() {
            return false;
        }
        self.threshold = outcome.rule.shared_limit();
        let mut any_kept = vec![false; outcome.zones.len()];
        for v in &outcome.verdicts {
            if v.verdict.passes() {
                any_kept[v.zone] = true;
            }
        }
        for (i, z) in outcome.zones.iter().enumerate() {
            if let Some(zone) = z.zone {
                let intensity = z.intensity();
                let filtered = !any_kept[i]
                    && outcome
                        .verdicts
                        .iter()
                        .any(|v| v.zone == i && v.verdict == Verdict::AboveThreshold);
                self.entry(zone, intensity).filtered |= filtered;
            }
        }
        true
    }

    /// Records a score decision. Returns `false` (and records nothing) when
    /// carbon was not applied.
    pub fn record_scores(&mut self, outcome: &ScoreOutcome<'_>) -> bool {
        if outcome.not_applied.is_some() {
            return false;
        }
        // Best free capacity per candidate zone first (zones appear in
        // `outcome.zones` in the order of their first score), then one
        // summary entry per zone.
        let mut best: Vec<Option<f64>> = vec![None; outcome.zones.len()];
        for s in &outcome.scores {
            if let Some(b) = best.get_mut(s.zone) {
                *b = Some(b.map_or(s.performance, |b| b.max(s.performance)));
            }
        }
        for (z, best) in outcome.zones.iter().zip(best) {
            if let (Some(zone), Some(best)) = (z.zone, best) {
                let e = self.entry(zone, z.intensity());
                e.best_performance = Some(e.best_performance.map_or(best, |b| b.max(best)));
            }
        }
        true
    }

    /// Whether carbon changed the outcome for a pod that landed in `zone`,
    /// and how.
    pub fn landing(&self, zone: Option<&ZoneId>) -> Option<Landing> {
        let chosen = self.zones.iter().find(|z| Some(&z.zone) == zone)?;
        let intensity = chosen.intensity?;
        let chosen_perf = chosen.best_performance.unwrap_or(0.0);
        let dirtier = self
            .zones
            .iter()
            .filter(|z| z.zone != chosen.zone)
            .filter_map(|z| z.intensity.map(|i| (z, i)))
            .filter(|(_, i)| i.g_per_kwh() > intensity.g_per_kwh());
        // Prefer a zone that was outscored despite as much room (the clearest
        // case of carbon deciding), the roomiest first; else the cleanest
        // zone that was filtered out.
        let mut outscored: Option<(&ZoneSummary, CarbonIntensity, f64)> = None;
        let mut filtered: Option<(&ZoneSummary, CarbonIntensity)> = None;
        for (z, i) in dirtier {
            if let Some(p) = z.best_performance
                && p + 1e-9 >= chosen_perf
                && outscored.is_none_or(|(_, _, best)| p > best)
            {
                outscored = Some((z, i, p));
            }
            if z.filtered && filtered.is_none_or(|(_, f)| i.g_per_kwh() < f.g_per_kwh()) {
                filtered = Some((z, i));
            }
        }
        let (over, over_intensity, over_filtered) = match (outscored, filtered) {
            (Some((z, i, _)), _) => (z, i, false),
            (None, Some((z, i))) => (z, i, true),
            (None, None) => return None,
        };
        Some(Landing {
            zone: chosen.zone.clone(),
            intensity,
            over: over.zone.clone(),
            over_intensity,
            over_filtered,
            threshold: self.threshold,
        })
    }
}
