//! WattTime v3 (marginal operating emission rate, `co2_moer`). `GET /login`
//! with HTTP basic auth gives a bearer token valid for 30 minutes (renewed
//! after 25, or at once on a 401). The zone's region is fixed in the zone
//! table or found once with `/v3/region-from-loc`; `/v3/forecast` gives the
//! current 5-minute value (its first point) and the forecast, in lbs/MWh,
//! converted to g/kWh (× 0.453592). All requests pass one rate limiter:
//! WattTime allows 3,000 requests per 5 minutes (and 100 logins).
//!
//! `/v3/signal-index` (a 0–100 percentile) is not used: a percentile is not
//! an intensity, and free plans get absolute values only for `CAISO_NORTH`.

use std::time::{Duration, Instant};

use carbon_kube_model::{ForecastPoint, Signal, Source, UnixSeconds, ZoneId, ZoneRecord};
use governor::DefaultDirectRateLimiter;
use moka::future::Cache;
use serde::Deserialize;
use tokio::sync::Mutex;
use url::Url;

use super::{Fetched, check_fresh, hourly_forecast, intensity};
use crate::credentials::{Secret, WattTimeAccount};
use crate::error::{ErrorKind, ProviderError};
use crate::http::{Http, endpoint, rate_limiter};
use crate::time::parse_timestamp;
use crate::zones::zone_info;

const PROVIDER: &str = Source::WATTTIME;
/// Pounds per MWh to grams per kWh.
pub const LBS_PER_MWH_TO_G_PER_KWH: f64 = 0.453_592;
/// Tokens live 30 minutes; renew a little earlier.
const TOKEN_LIFETIME: Duration = Duration::from_secs(25 * 60);
/// Default data period when `meta` does not say (5 minutes).
const DEFAULT_PERIOD_SECONDS: i64 = 300;
/// The longest data point period believed (one day).
const MAX_PERIOD_SECONDS: i64 = 86_400;
const SIGNAL_TYPE: &str = "co2_moer";

#[derive(Deserialize)]
struct LoginBody {
    token: String,
}

/// `/v3/region-from-loc` body.
#[derive(Debug, Deserialize)]
pub(crate) struct RegionBody {
    pub region: String,
}

/// `/v3/forecast` body. `data` holds points; the `/v3/forecast/historical`
/// shape (a list of generated forecasts, each with its points) is accepted
/// too, taking the newest forecast.
#[derive(Debug, Deserialize)]
pub(crate) struct ForecastBody {
    pub data: Vec<DataItem>,
    pub meta: Meta,
}

/// One element of `data`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum DataItem {
    /// A point of `/v3/forecast`.
    Point(Point),
    /// A generated forecast of `/v3/forecast/historical`.
    Generated {
        /// When the forecast was made.
        generated_at: String,
        /// Its points.
        forecast: Vec<Point>,
    },
}

/// One 5-minute value.
#[derive(Debug, Deserialize)]
pub(crate) struct Point {
    pub point_time: String,
    pub value: f64,
}

/// Response metadata (fields used).
#[derive(Debug, Deserialize)]
pub(crate) struct Meta {
    pub units: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub data_point_period_seconds: Option<i64>,
}

/// Factor from the response's unit to g/kWh, if it is an emission rate.
pub(crate) fn unit_factor(units: &str) -> Option<f64> {
    match units {
        "lbs_co2_per_mwh" => Some(LBS_PER_MWH_TO_G_PER_KWH),
        "kg_co2_per_mwh" | "g_co2_per_kwh" => Some(1.0),
        _ => None,
    }
}

/// The points of a forecast body, converted to g/kWh, sorted by time.
pub(crate) fn forecast_points(body: &ForecastBody) -> Result<Vec<ForecastPoint>, ProviderError> {
    let step = "forecast";
    let invalid = |kind, m: String| ProviderError::new(PROVIDER, step, kind, m);
    let factor = unit_factor(&body.meta.units).ok_or_else(|| {
        invalid(
            ErrorKind::InvalidValue,
            format!(
                "units {:?} are not an emission rate (need lbs_co2_per_mwh)",
                body.meta.units
            ),
        )
    })?;
    // Points of `/v3/forecast`, or the newest generated forecast.
    let mut newest: Option<(UnixSeconds, &Vec<Point>)> = None;
    let mut direct: Vec<&Point> = Vec::new();
    for item in &body.data {
        match item {
            DataItem::Point(p) => direct.push(p),
            DataItem::Generated {
                generated_at,
                forecast,
            } => {
                let at = parse_timestamp(generated_at)
                    .map_err(|m| invalid(ErrorKind::InvalidResponse, m))?;
                if newest.is_none_or(|(t, _)| at > t) {
                    newest = Some((at, forecast));
                }
            }
        }
    }
    let points: Vec<&Point> = match newest {
        Some((_, f)) if direct.is_empty() => f.iter().collect(),
        _ => direct,
    };
    let mut out = Vec::with_capacity(points.len());
    for p in points {
        let time =
            parse_timestamp(&p.point_time).map_err(|m| invalid(ErrorKind::InvalidResponse, m))?;
        let g = (p.value * factor * 10.0).round() / 10.0;
        out.push(ForecastPoint {
            time,
            intensity: intensity(PROVIDER, step, g)?,
        });
    }
    out.sort_by_key(|p| p.time);
    Ok(out)
}

pub(crate) struct WattTime {
    http: Http,
    base: Url,
    account: Option<WattTimeAccount>,
    token: Mutex<Option<(Secret, Instant)>>,
    regions: Cache<ZoneId, String>,
    limiter: DefaultDirectRateLimiter,
    login_limiter: DefaultDirectRateLimiter,
}

impl WattTime {
    pub(crate) fn new(http: Http, base: Url, account: Option<WattTimeAccount>) -> Self {
        Self {
            http,
            base,
            account,
            token: Mutex::new(None),
            regions: Cache::builder().max_capacity(10_000).build(),
            limiter: rate_limiter(3000, Duration::from_secs(300)),
            login_limiter: rate_limiter(100, Duration::from_secs(300)),
        }
    }

    /// A valid token: the cached one, or a new login. One login at a time.
    async fn token(&self, account: &WattTimeAccount, renew: bool) -> Result<Secret, ProviderError> {
        let mut slot = self.token.lock().await;
        if !renew
            && let Some((token, at)) = slot.as_ref()
            && at.elapsed() < TOKEN_LIFETIME
        {
            return Ok(token.clone());
        }
        *slot = None;
        let url = endpoint(&self.base, &["login"]);
        self.login_limiter.until_ready().await;
        let body: LoginBody = self
            .http
            .get_json(PROVIDER, "login", Some(&self.limiter), |c| {
                c.get(url.clone())
                    .basic_auth(account.username.expose(), Some(account.password.expose()))
            })
            .await?;
        if body.token.trim().is_empty() {
            return Err(ProviderError::new(
                PROVIDER,
                "login",
                ErrorKind::InvalidResponse,
                "empty token",
            ));
        }
        let token = Secret::new(body.token);
        self.http.learn_secret(&token);
        *slot = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// GET with the bearer token; on a 401 the token is renewed once.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        account: &WattTimeAccount,
        step: &'static str,
        path: &[&str],
        query: &[(&str, String)],
    ) -> Result<T, ProviderError> {
        let url = endpoint(&self.base, path);
        let mut renew = false;
        loop {
            let token = self.token(account, renew).await?;
            let result = self
                .http
                .get_json(PROVIDER, step, Some(&self.limiter), |c| {
                    c.get(url.clone()).query(query).bearer_auth(token.expose())
                })
                .await;
            match result {
                Err(e) if e.kind == ErrorKind::Unauthorized && !renew => renew = true,
                other => return other,
            }
        }
    }

    async fn region(
        &self,
        account: &WattTimeAccount,
        zone: &ZoneId,
    ) -> Result<String, ProviderError> {
        let info = zone_info(zone);
        if let Some(r) = info.and_then(|i| i.watttime_region) {
            return Ok(r.to_owned());
        }
        if let Some(r) = self.regions.get(zone).await {
            return Ok(r);
        }
        let (lat, lon) = info.and_then(|i| i.location()).ok_or_else(|| {
            ProviderError::unsupported(
                PROVIDER,
                format!("no WattTime region or location for zone {zone}"),
            )
        })?;
        let body: RegionBody = self
            .get(
                account,
                "region-from-loc",
                &["v3", "region-from-loc"],
                &[
                    ("latitude", lat.to_string()),
                    ("longitude", lon.to_string()),
                    ("signal_type", SIGNAL_TYPE.to_owned()),
                ],
            )
            .await
            .map_err(|e| match e.kind {
                // WattTime answers 400/404 for points outside its coverage.
                ErrorKind::NotFound | ErrorKind::ClientError(400) => ProviderError {
                    kind: ErrorKind::UnsupportedZone,
                    detail: format!("WattTime covers no region at {lat},{lon} (zone {zone})"),
                    ..e
                },
                _ => e,
            })?;
        let region = body.region.trim().to_owned();
        if region.is_empty() {
            return Err(ProviderError::new(
                PROVIDER,
                "region-from-loc",
                ErrorKind::InvalidResponse,
                "empty region",
            ));
        }
        self.regions.insert(zone.clone(), region.clone()).await;
        Ok(region)
    }

    pub(crate) async fn fetch(
        &self,
        zone: &ZoneId,
        now: UnixSeconds,
    ) -> Result<Fetched, ProviderError> {
        let Some(account) = &self.account else {
            return Err(ProviderError::new(
                PROVIDER,
                "credentials",
                ErrorKind::MissingCredentials,
                "WATTTIME_USERNAME / WATTTIME_PASSWORD are not set",
            ));
        };
        let region = self.region(account, zone).await?;
        let step = "forecast";
        let body: ForecastBody = self
            .get(
                account,
                step,
                &["v3", "forecast"],
                &[
                    ("region", region.clone()),
                    ("signal_type", SIGNAL_TYPE.to_owned()),
                ],
            )
            .await?;
        if let Some(r) = &body.meta.region
            && r != &region
        {
            return Err(ProviderError::new(
                PROVIDER,
                step,
                ErrorKind::InvalidResponse,
                format!("asked for region {region}, got region {r}"),
            ));
        }
        let points = forecast_points(&body)?;
        // A period outside one second to one day is not WattTime's (it
        // publishes 5-minute points); a hostile one overflowed `2 * period`.
        let period = body
            .meta
            .data_point_period_seconds
            .filter(|p| (1..=MAX_PERIOD_SECONDS).contains(p))
            .unwrap_or(DEFAULT_PERIOD_SECONDS);
        // The current value: the newest point at or before now, else the first
        // point if it starts within one period after now.
        let current = points
            .iter()
            .rfind(|p| p.time <= now)
            .or_else(|| points.first().filter(|p| p.time <= now + period))
            .ok_or_else(|| {
                ProviderError::new(
                    PROVIDER,
                    step,
                    ErrorKind::NoData,
                    format!("no point for region {region}"),
                )
            })?;
        let valid_until = current.time.saturating_add(2 * period);
        check_fresh(PROVIDER, step, current.time, valid_until, now)?;
        let mut record = ZoneRecord::new(current.intensity, current.time, Source::new(PROVIDER));
        record.signal = Signal::Marginal;
        record.fetched_at = Some(now);
        record.valid_until = Some(valid_until);
        record.forecast = hourly_forecast(&points, now);
        Ok(Fetched {
            record,
            warnings: Vec::new(),
        })
    }
}
