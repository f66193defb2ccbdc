//! Carbon-intensity signals for Carbon-Kube: one HTTP client per provider
//! (Electricity Maps, WattTime, UK Carbon Intensity, NOAA and Open-Meteo
//! weather), a weather model that estimates intensity when no grid data is
//! available, a static table of annual averages, and the per-zone fallback
//! chain that tries them in order, with a per-zone cache so repeated polls do
//! not burn API quota.
//!
//! What it does not do: decide anything (that is `carbon-kube-policy`),
//! publish snapshots or metrics (that is the poller). Only the poller calls
//! this crate. Entry points: [`SignalArgs`] (flags), [`Credentials`]
//! (environment or mounted files), [`Signals::new`] and
//! [`Signals::fetch_zone`]. See the crate README for the providers, the chain
//! syntax, HTTP behaviour and the weather model with its validation.

pub mod args;
pub mod chain;
pub mod credentials;
pub mod error;
mod http;
mod providers;
pub mod static_table;
mod time;
pub mod weather;
pub mod zones;

pub use args::{ChainConfig, SignalArgs};
pub use chain::{Attempt, Outcome, ProviderKind, Signals, ZoneFetch};
pub use credentials::{Credentials, Secret, WattTimeAccount};
pub use error::{ConfigError, CredentialError, ErrorKind, ProviderError};
pub use providers::open_meteo::parse_open_meteo_hours;
pub use providers::watttime::LBS_PER_MWH_TO_G_PER_KWH;
