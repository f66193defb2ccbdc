//! Time parsing shared by the providers: RFC 3339 timestamps in the shapes the
//! APIs use, ISO 8601 intervals (NOAA `validTime`), and `Retry-After`.

use std::time::Duration;

use carbon_kube_model::UnixSeconds;
use jiff::{SpanRelativeTo, Timestamp, Unit};

/// Parses an RFC 3339 timestamp as the providers write it:
/// `2024-03-06T19:00:00.000Z` (Electricity Maps), `2022-07-15T00:00:00+00:00`
/// (WattTime, NOAA), `2023-03-15T12:00Z` (UK, no seconds).
pub(crate) fn parse_timestamp(s: &str) -> Result<UnixSeconds, String> {
    s.trim()
        .parse::<Timestamp>()
        .map(|t| t.as_second())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

/// Parses a civil date-time without offset (`2023-01-01T00:00`, Open-Meteo)
/// at a fixed UTC offset in seconds.
pub(crate) fn parse_civil(s: &str, utc_offset_seconds: i64) -> Result<UnixSeconds, String> {
    let dt: jiff::civil::DateTime = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a date-time: {e}"))?;
    let ts = dt
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map_err(|e| format!("{s:?}: {e}"))?
        .timestamp()
        .as_second();
    Ok(ts - utc_offset_seconds)
}

/// Parses an ISO 8601 interval `start/duration` as NOAA writes it
/// (`2022-02-03T21:00:00+00:00/PT2H`, `.../P1DT6H`) into (start, seconds).
pub(crate) fn parse_interval(s: &str) -> Result<(UnixSeconds, i64), String> {
    let (start, dur) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not an ISO 8601 interval"))?;
    let start = parse_timestamp(start)?;
    let span: jiff::Span = dur
        .parse()
        .map_err(|e| format!("{dur:?} is not an ISO 8601 duration: {e}"))?;
    let secs = span
        .total((Unit::Second, SpanRelativeTo::days_are_24_hours()))
        .map_err(|e| format!("{dur:?}: {e}"))?;
    if !(secs.is_finite() && secs > 0.0 && secs < 400.0 * 86_400.0) {
        return Err(format!("{dur:?} is not a positive duration"));
    }
    // Rounded to whole seconds; bounded above, so the cast cannot overflow.
    Ok((start, secs.round() as i64))
}

/// Formats a unix time as `YYYY-MM-DDTHH:MMZ` (UK Carbon Intensity paths).
pub(crate) fn format_minute_utc(t: UnixSeconds) -> Option<String> {
    let ts = Timestamp::from_second(t).ok()?;
    Some(ts.strftime("%Y-%m-%dT%H:%MZ").to_string())
}

/// Parses a `Retry-After` header: delay seconds or an HTTP date. `now` is the
/// current unix time, for the date form.
pub(crate) fn parse_retry_after(value: &str, now: UnixSeconds) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(v)
        .ok()?
        .as_second();
    Some(Duration::from_secs(u64::try_from(at - now).unwrap_or(0)))
}

/// Start of the hour containing `t`.
pub(crate) fn hour_floor(t: UnixSeconds) -> UnixSeconds {
    t.div_euclid(3600) * 3600
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_provider_timestamps() {
        assert_eq!(
            parse_timestamp("2024-03-06T19:00:00.000Z").unwrap(),
            1_709_751_600
        );
        assert_eq!(
            parse_timestamp("2022-07-15T00:00:00+00:00").unwrap(),
            1_657_843_200
        );
        assert_eq!(parse_timestamp("2023-03-15T12:00Z").unwrap(), 1_678_881_600);
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("2023-03-15").is_err());
    }

    #[test]
    fn parses_civil_with_offset() {
        // 00:00 at UTC-7 is 07:00Z.
        assert_eq!(
            parse_civil("2023-01-01T00:00", -25_200).unwrap(),
            1_672_556_400
        );
    }

    #[test]
    fn parses_noaa_intervals() {
        let (s, d) = parse_interval("2022-02-03T21:00:00+00:00/PT2H").unwrap();
        assert_eq!((s, d), (1_643_922_000, 7200));
        assert_eq!(
            parse_interval("2022-02-03T21:00:00+00:00/P1DT6H")
                .unwrap()
                .1,
            30 * 3600
        );
        assert!(parse_interval("2022-02-03T21:00:00+00:00").is_err());
        assert!(parse_interval("2022-02-03T21:00:00+00:00/PT0H").is_err());
    }

    #[test]
    fn formats_uk_paths() {
        assert_eq!(
            format_minute_utc(1_678_881_660).unwrap(),
            "2023-03-15T12:01Z"
        );
    }

    #[test]
    fn parses_retry_after() {
        assert_eq!(parse_retry_after("7", 0), Some(Duration::from_secs(7)));
        let now = parse_timestamp("2015-10-21T07:28:00Z").unwrap();
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
