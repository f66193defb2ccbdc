//! API credentials, read from environment variables or from files named by
//! `*_FILE` variables (Kubernetes Secrets mounted as files). Never from the
//! command line. Secret values print as `***` in `Debug` and `Display`.

use std::fmt;

use crate::error::CredentialError;

/// A secret string. `Debug` and `Display` print `***`; only the HTTP layer
/// reads the value, to put it in a request header.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for a request header. Do not log it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// WattTime account (the API trades it for a 30-minute token at `/login`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WattTimeAccount {
    /// Account name.
    pub username: Secret,
    /// Account password.
    pub password: Secret,
}

/// Environment variables read by [`Credentials::from_env`]. Each also has a
/// `*_FILE` form naming a file that holds the value (trailing white space is
/// trimmed). Setting both forms of one variable is an error.
pub const CREDENTIAL_VARS: &[&str] = &[
    ENV_ELECTRICITY_MAPS_API_KEY,
    ENV_WATTTIME_USERNAME,
    ENV_WATTTIME_PASSWORD,
    ENV_NOAA_API_KEY,
];
/// Electricity Maps API key, sent as the `auth-token` header.
pub const ENV_ELECTRICITY_MAPS_API_KEY: &str = "ELECTRICITY_MAPS_API_KEY";
/// WattTime user name.
pub const ENV_WATTTIME_USERNAME: &str = "WATTTIME_USERNAME";
/// WattTime password.
pub const ENV_WATTTIME_PASSWORD: &str = "WATTTIME_PASSWORD";
/// Optional NOAA (api.weather.gov) key, sent as the `API-Key` header. NOAA
/// works without one; it asks only for a `User-Agent`.
pub const ENV_NOAA_API_KEY: &str = "NOAA_API_KEY";

/// Credentials for the providers that need them. A provider whose credentials
/// are missing is skipped by the chain (outcome `skipped`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Electricity Maps API key.
    pub electricity_maps_api_key: Option<Secret>,
    /// WattTime account.
    pub watttime: Option<WattTimeAccount>,
    /// NOAA API key (optional even for NOAA).
    pub noaa_api_key: Option<Secret>,
}

impl Credentials {
    /// No credentials: only keyless providers (UK, NOAA, Open-Meteo, static) run.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads every credential from the process environment (`X` or `X_FILE`).
    pub fn from_env() -> Result<Self, CredentialError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads credentials through `lookup` (a variable name to its value), so
    /// tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, CredentialError> {
        let em = read_var(&lookup, ENV_ELECTRICITY_MAPS_API_KEY)?;
        let user = read_var(&lookup, ENV_WATTTIME_USERNAME)?;
        let password = read_var(&lookup, ENV_WATTTIME_PASSWORD)?;
        let noaa = read_var(&lookup, ENV_NOAA_API_KEY)?;
        let watttime = match (user, password) {
            (Some(username), Some(password)) => Some(WattTimeAccount { username, password }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(CredentialError::Incomplete {
                    present: ENV_WATTTIME_USERNAME,
                    missing: ENV_WATTTIME_PASSWORD,
                });
            }
            (None, Some(_)) => {
                return Err(CredentialError::Incomplete {
                    present: ENV_WATTTIME_PASSWORD,
                    missing: ENV_WATTTIME_USERNAME,
                });
            }
        };
        Ok(Self {
            electricity_maps_api_key: em,
            watttime,
            noaa_api_key: noaa,
        })
    }

    /// Every configured secret value, for masking in error details.
    pub(crate) fn secrets(&self) -> Vec<Secret> {
        let mut out = Vec::new();
        out.extend(self.electricity_maps_api_key.iter().cloned());
        if let Some(w) = &self.watttime {
            out.push(w.username.clone());
            out.push(w.password.clone());
        }
        out.extend(self.noaa_api_key.iter().cloned());
        out
    }
}

/// Reads `var` or `var_FILE`. Empty values count as unset (Helm often renders
/// an unset value as an empty string).
fn read_var(
    lookup: &impl Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<Secret>, CredentialError> {
    let direct = lookup(var).filter(|v| !v.trim().is_empty());
    let file = lookup(&format!("{var}_FILE")).filter(|v| !v.trim().is_empty());
    match (direct, file) {
        (Some(_), Some(_)) => Err(CredentialError::Ambiguous { var }),
        (Some(v), None) => Ok(Some(Secret::new(v.trim().to_owned()))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path.trim()).map_err(|e| CredentialError::File {
                var,
                path: path.clone(),
                message: e.kind().to_string(),
            })?;
            let value = text.trim();
            Ok((!value.is_empty()).then(|| Secret::new(value.to_owned())))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn secrets_print_as_stars() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        let c = Credentials {
            electricity_maps_api_key: Some(s),
            ..Credentials::none()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn reads_direct_and_file_forms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "file-key\n").unwrap();
        let c = Credentials::from_lookup(lookup(&[
            ("ELECTRICITY_MAPS_API_KEY_FILE", path.to_str().unwrap()),
            ("WATTTIME_USERNAME", "alice"),
            ("WATTTIME_PASSWORD", "pw"),
            ("NOAA_API_KEY", ""),
        ]))
        .unwrap();
        assert_eq!(c.electricity_maps_api_key.unwrap().expose(), "file-key");
        assert_eq!(c.watttime.unwrap().username.expose(), "alice");
        assert!(c.noaa_api_key.is_none());
    }

    #[test]
    fn rejects_ambiguous_incomplete_and_unreadable() {
        let e = Credentials::from_lookup(lookup(&[
            ("NOAA_API_KEY", "a"),
            ("NOAA_API_KEY_FILE", "/x"),
        ]))
        .unwrap_err();
        assert_eq!(
            e,
            CredentialError::Ambiguous {
                var: "NOAA_API_KEY"
            }
        );
        let e = Credentials::from_lookup(lookup(&[("WATTTIME_USERNAME", "alice")])).unwrap_err();
        assert!(e.to_string().contains("WATTTIME_PASSWORD is not"));
        let e = Credentials::from_lookup(lookup(&[(
            "ELECTRICITY_MAPS_API_KEY_FILE",
            "/nonexistent/secret",
        )]))
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("ELECTRICITY_MAPS_API_KEY_FILE: cannot read")
        );
    }
}
