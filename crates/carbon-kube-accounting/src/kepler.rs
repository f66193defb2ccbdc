//! Kepler input: per-pod joules from a Prometheus query endpoint.
//!
//! Kepler (0.10 and later) exports `kepler_pod_cpu_joules_total` per pod
//! (`pod_namespace`, `pod_name`), RAPL zone (`zone`: `package`, `dram`, ...)
//! and `state` (`running`, `terminated`). Scraping every node's exporter
//! would mean discovering them; Prometheus already does, so the controller
//! asks Prometheus one instant query per tick ([`DEFAULT_QUERY`]: package plus
//! DRAM joules per pod, the running/terminated duplicate removed) and keeps
//! the difference between ticks per pod. Any query works whose result is a
//! vector of cumulative joule counters labelled `pod_namespace` and
//! `pod_name` (use `label_replace` for other exporters).
//!
//! A pod seen for the first time has no difference yet, and a pod missing
//! from an answer has none: both are modelled for that tick. A counter that
//! went down (an exporter restart) counts its new value, as Prometheus'
//! `increase()` does. A failed query makes the whole tick modelled.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

/// Package + DRAM joules per pod, cumulative.
pub const DEFAULT_QUERY: &str = r#"sum by (pod_namespace, pod_name) (max without (state) (kepler_pod_cpu_joules_total{zone=~"package|dram"}))"#;

/// A pod, by namespace and name.
pub type PodKey = (String, String);

/// What went wrong asking Prometheus.
#[derive(Debug, thiserror::Error)]
pub enum KeplerError {
    /// The request failed (connection, timeout, HTTP status).
    #[error("querying {url}: {source}")]
    Request {
        /// The query endpoint.
        url: String,
        /// The HTTP error.
        source: reqwest::Error,
    },
    /// The answer was not a Prometheus instant-vector answer.
    #[error("answer from {url} is not a Prometheus vector: {message}")]
    Answer {
        /// The query endpoint.
        url: String,
        /// What was wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Vec<Sample>,
}

#[derive(Deserialize)]
struct Sample {
    metric: HashMap<String, String>,
    value: (f64, String),
}

/// Parses a Prometheus `/api/v1/query` answer into joules per pod. Samples
/// without both pod labels, or with a value that is not a finite,
/// non-negative number, are skipped and counted in the second element.
pub fn parse_answer(body: &str) -> Result<(HashMap<PodKey, f64>, usize), String> {
    let answer: Answer = serde_json::from_str(body).map_err(|e| e.to_string())?;
    if answer.status != "success" {
        return Err(format!(
            "status {:?}: {}",
            answer.status,
            answer.error.unwrap_or_default()
        ));
    }
    let data = answer.data.ok_or("no data")?;
    if data.result_type != "vector" {
        return Err(format!("resultType {:?}, want vector", data.result_type));
    }
    let mut out = HashMap::with_capacity(data.result.len());
    let mut skipped = 0;
    for s in data.result {
        let (Some(ns), Some(name)) = (s.metric.get("pod_namespace"), s.metric.get("pod_name"))
        else {
            skipped += 1;
            continue;
        };
        match s.value.1.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => {
                *out.entry((ns.clone(), name.clone())).or_default() += v;
            }
            _ => skipped += 1,
        }
    }
    Ok((out, skipped))
}

/// Per-pod joule counters between ticks.
#[derive(Debug, Default)]
pub struct Counters {
    last: HashMap<PodKey, f64>,
}

impl Counters {
    /// Joules per pod since the previous call (pods seen before only), and
    /// remembers `now` for the next call.
    pub fn deltas(&mut self, now: HashMap<PodKey, f64>) -> HashMap<PodKey, f64> {
        let mut out = HashMap::with_capacity(now.len());
        for (k, v) in &now {
            if let Some(prev) = self.last.get(k) {
                out.insert(k.clone(), if v >= prev { v - prev } else { *v });
            }
        }
        self.last = now;
        out
    }
}

/// Asks a Prometheus query endpoint for Kepler's counters.
#[derive(Clone, Debug)]
pub struct KeplerSource {
    client: reqwest::Client,
    url: url::Url,
    query: String,
}

impl KeplerSource {
    /// A source querying `{base}/api/v1/query` with `query`.
    pub fn new(base: &url::Url, query: &str, timeout: Duration) -> anyhow::Result<Self> {
        let url = base
            .join("api/v1/query")
            .map_err(|e| anyhow::anyhow!("--kepler-prometheus-url {base}: {e}"))?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| anyhow::anyhow!("building the Prometheus client: {e}"))?;
        Ok(Self {
            client,
            url,
            query: query.to_owned(),
        })
    }

    /// The cumulative joules per pod now, and the samples skipped.
    pub async fn fetch(&self) -> Result<(HashMap<PodKey, f64>, usize), KeplerError> {
        let url = self.url.to_string();
        let body = self
            .client
            .get(self.url.clone())
            .query(&[("query", self.query.as_str())])
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|source| KeplerError::Request {
                url: url.clone(),
                source,
            })?
            .text()
            .await
            .map_err(|source| KeplerError::Request {
                url: url.clone(),
                source,
            })?;
        parse_answer(&body).map_err(|message| KeplerError::Answer { url, message })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_a_vector_and_skips_bad_samples() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"pod_namespace":"a","pod_name":"p"},"value":[1.0,"12.5"]},
            {"metric":{"pod_name":"q"},"value":[1.0,"1"]},
            {"metric":{"pod_namespace":"a","pod_name":"r"},"value":[1.0,"NaN"]}]}}"#;
        let (m, skipped) = parse_answer(body).unwrap();
        assert_eq!(m[&("a".to_owned(), "p".to_owned())], 12.5);
        assert_eq!(m.len(), 1);
        assert_eq!(skipped, 2);
        let err = parse_answer(r#"{"status":"error","error":"bad query"}"#).unwrap_err();
        assert!(err.contains("bad query"), "{err}");
        assert!(
            parse_answer(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#)
                .is_err()
        );
    }

    #[test]
    fn deltas_need_a_previous_value_and_survive_resets() {
        let k = |n: &str| ("ns".to_owned(), n.to_owned());
        let mut c = Counters::default();
        assert!(c.deltas(HashMap::from([(k("a"), 100.0)])).is_empty());
        let d = c.deltas(HashMap::from([(k("a"), 150.0), (k("b"), 7.0)]));
        assert_eq!(d, HashMap::from([(k("a"), 50.0)]));
        let d = c.deltas(HashMap::from([(k("a"), 20.0), (k("b"), 9.0)]));
        assert_eq!(d, HashMap::from([(k("a"), 20.0), (k("b"), 2.0)]));
    }
}
