//! Static fallback: the zone's annual average from the built-in table.

use carbon_kube_model::{Source, UnixSeconds, ZoneId, ZoneRecord};

use super::{Fetched, intensity};
use crate::error::ProviderError;
use crate::zones::annual_average;

const PROVIDER: &str = Source::STATIC;

/// The zone's annual average, valid for one cache TTL.
pub(crate) fn fetch(
    zone: &ZoneId,
    now: UnixSeconds,
    ttl_seconds: i64,
) -> Result<Fetched, ProviderError> {
    let annual = annual_average(zone).ok_or_else(|| {
        ProviderError::unsupported(PROVIDER, format!("no annual average for zone {zone}"))
    })?;
    let mut record = ZoneRecord::new(
        intensity(PROVIDER, "table", annual.intensity)?,
        now,
        Source::new(PROVIDER),
    );
    record.renewable_percentage = Some(annual.renewable_pct);
    record.estimated = true;
    record.fetched_at = Some(now);
    record.valid_until = Some(now.saturating_add(ttl_seconds));
    Ok(Fetched {
        record,
        warnings: Vec::new(),
    })
}
