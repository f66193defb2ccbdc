//! Carbon-Kube's vocabulary: grid zones, carbon intensities, forecasts, the
//! published snapshot format and the annotation keys every component agrees on.
//!
//! This crate is pure data: no IO, no async, no clock reads. Times are unix
//! seconds passed in by the caller. Everything that decides (placement,
//! deferral) lives in `carbon-kube-policy`; everything that fetches lives in
//! `carbon-kube-signals`.

pub mod accounting;
pub mod accounting_details;
pub mod intensity;
pub mod keys;
pub mod migration;
pub mod record;
pub mod snapshot;
pub mod tuner;
pub mod zone;

pub use intensity::CarbonIntensity;
pub use record::{Forecast, ForecastPoint, Quality, Signal, Source, ZoneRecord};
pub use snapshot::{MergeOutcome, Snapshot, SnapshotError};
pub use zone::{ZoneError, ZoneId};

/// Unix time in seconds (UTC). All times in this crate use it.
pub type UnixSeconds = i64;
