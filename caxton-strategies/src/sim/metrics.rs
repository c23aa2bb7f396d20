//! Synthetic metrics: [`SyntheticProfile`]s parsed from `error_rate=0.2%,p99=40ms,rps=50`
//! and [`SyntheticMetrics`], which turns them into metric windows following the routing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use async_trait::async_trait;
use caxton_core::{AgentId, DeploymentId, MetricWindow, MetricsError, MetricsSource, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, Distribution, LogNormal, Normal, Poisson};

use super::traffic::SimTraffic;
use crate::condition::edit_distance;
use crate::shadow::OUTPUT_MATCH_METRIC;

/// How a simulated deployment behaves: `error_rate=0.2%,p99=40ms,rps=50`.
///
/// Keys: `error_rate` (`0.2%` or `0.002`), `p50` and `p99` latency (`40ms`, `0.1s`; with
/// one of them the spread is a log-normal σ of 0.5), `rps` (requests per second the agent
/// receives; a deployment gets its share), `cost_per_request`, `cost_per_session`,
/// `messages_per_session` (default 10), `mismatch` (share of shadow replies that differ
/// from production's, `0.5%`), and any other name for a custom metric sampled around the
/// value (`fuel_per_message=1e6`).
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticProfile {
    /// Errors per request.
    pub error_rate: f64,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// Log-normal σ of latency.
    pub latency_sigma: f64,
    /// Requests per second at full traffic; `None` takes the other deployment's.
    pub rps: Option<f64>,
    /// Cost of each request.
    pub cost_per_request: f64,
    /// Cost of each session.
    pub cost_per_session: f64,
    /// Messages in a session.
    pub messages_per_session: f64,
    /// Share of shadow replies that differ from production's.
    pub mismatch: f64,
    /// Custom metrics and their mean values.
    pub custom: BTreeMap<String, f64>,
}

impl Default for SyntheticProfile {
    fn default() -> Self {
        SyntheticProfile {
            error_rate: 0.0,
            p50_ms: 20.0,
            latency_sigma: 0.5,
            rps: None,
            cost_per_request: 0.0,
            cost_per_session: 0.0,
            messages_per_session: 10.0,
            mismatch: 0.0,
            custom: BTreeMap::new(),
        }
    }
}

/// The highest `rps` a profile takes. Far above any agent, and it keeps a simulated step's
/// request counts where the exact bounds of the gates stay cheap: at `rps=1e18` each check
/// ran their continued fraction to its iteration cap, and one run took seconds.
pub const MAX_RPS: f64 = 1e6;

/// The z-score of the 99th percentile of a standard normal.
const Z99: f64 = 2.326_347_874_040_841;

/// Why a `METRICS` text is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metrics {input:?}, byte {position}: {message}")]
pub struct ProfileError {
    /// The whole text.
    pub input: String,
    /// Byte offset of the problem.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

const PROFILE_KEYS: [&str; 10] = [
    "error_rate",
    "p50",
    "p99",
    "p99_latency",
    "p50_latency",
    "rps",
    "cost_per_request",
    "cost_per_session",
    "messages_per_session",
    "mismatch",
];

impl FromStr for SyntheticProfile {
    type Err = ProfileError;

    fn from_str(text: &str) -> Result<Self, ProfileError> {
        let mut profile = SyntheticProfile::default();
        let (mut p50, mut p99) = (None, None);
        let mut offset = 0;
        for piece in text.split(',') {
            let error = |at: usize, message: String| ProfileError {
                input: text.to_owned(),
                position: offset + at,
                message,
            };
            let lead = piece.len() - piece.trim_start().len();
            let Some((key, value)) = piece.split_once('=') else {
                return Err(error(
                    lead,
                    format!("expected `name=value`, found {:?}", piece.trim()),
                ));
            };
            let name = key.trim();
            let value_at = key.len() + 1;
            let value_text = value.trim();
            let number = |suffix_scale: &[(&str, f64)]| -> Result<f64, ProfileError> {
                for (suffix, scale) in suffix_scale {
                    if let Some(n) = value_text.strip_suffix(suffix)
                        && let Ok(v) = n.trim().parse::<f64>()
                    {
                        return Ok(v * scale);
                    }
                }
                Err(error(
                    value_at,
                    format!(
                        "`{name}` takes {}, found {value_text:?}",
                        suffix_scale
                            .iter()
                            .map(|(s, _)| if s.is_empty() {
                                "a number".to_owned()
                            } else {
                                format!("`{s}`")
                            })
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                ))
            };
            let ratio = || -> Result<f64, ProfileError> {
                let v = number(&[("%", 0.01), ("", 1.0)])?;
                if (0.0..=1.0).contains(&v) {
                    Ok(v)
                } else {
                    Err(error(
                        value_at,
                        format!("`{name}` must be between 0% and 100%"),
                    ))
                }
            };
            let time = || number(&[("ms", 1.0), ("us", 0.001), ("s", 1_000.0)]);
            let plain = || -> Result<f64, ProfileError> {
                let v = number(&[("", 1.0)])?;
                if v.is_finite() && v >= 0.0 {
                    Ok(v)
                } else {
                    Err(error(
                        value_at,
                        format!("`{name}` must be a number of 0 or more"),
                    ))
                }
            };
            match name {
                "error_rate" => profile.error_rate = ratio()?,
                "p50" | "p50_latency" => p50 = Some(time()?),
                "p99" | "p99_latency" => p99 = Some(time()?),
                "rps" => {
                    let rps = plain()?;
                    if rps > MAX_RPS {
                        return Err(error(
                            value_at,
                            format!("`rps` must be at most {MAX_RPS:e} requests a second"),
                        ));
                    }
                    profile.rps = Some(rps);
                }
                "cost_per_request" => profile.cost_per_request = plain()?,
                "cost_per_session" => profile.cost_per_session = plain()?,
                "messages_per_session" => profile.messages_per_session = plain()?.max(1.0),
                "mismatch" => profile.mismatch = ratio()?,
                custom => {
                    let valid = custom
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && custom
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !valid {
                        return Err(error(lead, format!("{custom:?} is not a metric name")));
                    }
                    if let Some(known) = PROFILE_KEYS
                        .iter()
                        .find(|k| custom.len() > 3 && edit_distance(custom, k) <= 2)
                    {
                        return Err(error(
                            lead,
                            format!("unknown metric `{custom}`; did you mean `{known}`?"),
                        ));
                    }
                    let v = plain()?;
                    profile.custom.insert(custom.to_owned(), v);
                }
            }
            offset += piece.len() + 1;
        }
        for (name, value) in [("p50", p50), ("p99", p99)] {
            if value.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                return Err(ProfileError {
                    input: text.to_owned(),
                    position: 0,
                    message: format!("`{name}` must be above 0ms"),
                });
            }
        }
        match (p50, p99) {
            (Some(p50), Some(p99)) if p99 < p50 => {
                return Err(ProfileError {
                    input: text.to_owned(),
                    position: 0,
                    message: format!("p99 ({p99}ms) is below p50 ({p50}ms)"),
                });
            }
            (Some(p50), Some(p99)) => {
                profile.p50_ms = p50;
                profile.latency_sigma = ((p99 / p50).ln() / Z99).max(1e-6);
            }
            (Some(p50), None) => profile.p50_ms = p50,
            (None, Some(p99)) => profile.p50_ms = p99 / (profile.latency_sigma * Z99).exp(),
            (None, None) => {}
        }
        Ok(profile)
    }
}

/// A [`MetricsSource`] that makes windows up from [`SyntheticProfile`]s, following the
/// routing in a [`SimTraffic`]. Deterministic for a given seed and order of queries.
///
/// Requests are Poisson, errors binomial, latency log-normal; at most `max_samples`
/// latency and custom samples are kept per window (a uniform subsample).
pub struct SyntheticMetrics {
    traffic: SimTraffic,
    agent: AgentId,
    profiles: HashMap<DeploymentId, SyntheticProfile>,
    default_rps: f64,
    max_samples: usize,
    rng: Mutex<StdRng>,
}

impl fmt::Debug for SyntheticMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyntheticMetrics")
            .field("agent", &self.agent)
            .field("profiles", &self.profiles.len())
            .field("max_samples", &self.max_samples)
            .finish()
    }
}

impl SyntheticMetrics {
    /// Metrics for `agent`'s deployments, following `traffic`.
    pub fn new(traffic: SimTraffic, agent: AgentId, seed: u64) -> Self {
        SyntheticMetrics {
            traffic,
            agent,
            profiles: HashMap::new(),
            default_rps: 10.0,
            max_samples: 50,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// Sets how `deployment` behaves.
    pub fn with_profile(mut self, deployment: DeploymentId, profile: SyntheticProfile) -> Self {
        if let Some(rps) = profile.rps {
            self.default_rps = rps;
        }
        self.profiles.insert(deployment, profile);
        self
    }

    /// Keeps at most `max` samples per window (default 50).
    pub fn with_max_samples(mut self, max: usize) -> Self {
        self.max_samples = max.max(1);
        self
    }

    fn generate(
        &self,
        deployment: &DeploymentId,
        start: Timestamp,
        end: Timestamp,
    ) -> MetricWindow {
        let mut window = MetricWindow::empty(start, end);
        let Some(profile) = self.profiles.get(deployment) else {
            return window;
        };
        let share = self.traffic.share(&self.agent, deployment, start, end);
        let seconds = (end - start).as_secs_f64();
        let expected = profile.rps.unwrap_or(self.default_rps) * seconds * share;
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let requests = match Poisson::new(expected) {
            Ok(poisson) if expected > 0.0 => poisson.sample(&mut *rng) as u64,
            _ => 0,
        };
        window.requests = requests;
        if requests == 0 {
            return window;
        }
        window.errors = Binomial::new(requests, profile.error_rate.clamp(0.0, 1.0))
            .map_or(0, |b| b.sample(&mut *rng));
        let sessions = (requests as f64 / profile.messages_per_session).ceil() as u64;
        window.sessions = sessions;
        window.cost =
            profile.cost_per_request * requests as f64 + profile.cost_per_session * sessions as f64;
        let samples = (requests as usize).min(self.max_samples);
        if let Ok(latency) = LogNormal::new(profile.p50_ms.ln(), profile.latency_sigma) {
            window.latency_ms = (0..samples).map(|_| latency.sample(&mut *rng)).collect();
        }
        for (name, mean) in &profile.custom {
            if let Ok(normal) = Normal::new(*mean, mean.abs() * 0.05) {
                let values = (0..samples)
                    .map(|_| normal.sample(&mut *rng).max(0.0))
                    .collect();
                window.custom.insert(name.clone(), values);
            }
        }
        let mirrored = self
            .traffic
            .shadow(&self.agent)
            .is_some_and(|s| &s.deployment == deployment);
        if mirrored {
            let matches = (0..samples)
                .map(|_| {
                    if rng.random::<f64>() < profile.mismatch {
                        0.0
                    } else {
                        1.0
                    }
                })
                .collect();
            window
                .custom
                .insert(OUTPUT_MATCH_METRIC.to_owned(), matches);
        }
        window
    }
}

#[async_trait]
impl MetricsSource for SyntheticMetrics {
    async fn window(
        &self,
        deployment: &DeploymentId,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<MetricWindow, MetricsError> {
        Ok(self.generate(deployment, start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_units_and_name_the_position_of_errors() {
        let p: SyntheticProfile = "error_rate=0.2%,p99=40ms,rps=50".parse().unwrap();
        assert!((p.error_rate - 0.002).abs() < 1e-12);
        assert_eq!(p.rps, Some(50.0));
        let p99 = (p.p50_ms.ln() + p.latency_sigma * Z99).exp();
        assert!((p99 - 40.0).abs() < 1e-9);
        let both: SyntheticProfile = "p50=10ms,p99=0.1s,fuel_per_message=1e6".parse().unwrap();
        assert!((both.p50_ms - 10.0).abs() < 1e-12);
        assert!((both.latency_sigma - (10f64.ln() / Z99)).abs() < 1e-12);
        assert_eq!(both.custom["fuel_per_message"], 1e6);

        let err = "error_rate=0.2%,p99=40"
            .parse::<SyntheticProfile>()
            .unwrap_err();
        assert_eq!(err.position, 20, "{err}");
        assert!(err.message.contains("`ms`"), "{err}");
        let err = "error_rate=0.2%,eror_rate=1%"
            .parse::<SyntheticProfile>()
            .unwrap_err();
        assert_eq!(err.position, 16);
        assert!(err.message.contains("did you mean `error_rate`"));
        let err = "rps".parse::<SyntheticProfile>().unwrap_err();
        assert!(err.message.contains("name=value"));
        assert!("error_rate=150%".parse::<SyntheticProfile>().is_err());
        assert!("p50=50ms,p99=10ms".parse::<SyntheticProfile>().is_err());
        // Found by the `sim_metrics` fuzz target: `rps=1e18` made every gate check slow.
        assert!("rps=1e6".parse::<SyntheticProfile>().is_ok());
        let err = "p99=40ms,rps=1e18".parse::<SyntheticProfile>().unwrap_err();
        assert_eq!(err.position, 13, "{err}");
        assert!(err.message.contains("at most 1e6"), "{err}");
    }
}
