//! Traffic as a joint: what a rollout strategy may do to the messages of an agent.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::{AgentId, DeploymentId, SessionId};
use crate::store::BackendError;

/// A share of traffic in basis points: `0..=10_000`, where `10_000` is 100 %.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Weight(u16);

/// Why a number is not a weight.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WeightError {
    /// More than 10,000 basis points (100 %).
    #[error("weight {bps} basis points is over 10000 (100%)")]
    OverFull {
        /// The rejected value.
        bps: u32,
    },
    /// A percentage outside 0–100 or not a number.
    #[error("weight {text:?} is not a percentage between 0% and 100% in steps of 0.01%")]
    BadPercent {
        /// The rejected text or value.
        text: String,
    },
}

impl Weight {
    /// No traffic.
    pub const ZERO: Weight = Weight(0);
    /// All traffic.
    pub const FULL: Weight = Weight(10_000);

    /// A weight in basis points.
    pub fn from_bps(bps: u32) -> Result<Self, WeightError> {
        u16::try_from(bps)
            .ok()
            .filter(|b| *b <= 10_000)
            .map(Weight)
            .ok_or(WeightError::OverFull { bps })
    }

    /// A weight from a percentage such as `5.0` or `12.5`, rounded to basis points.
    pub fn from_percent(percent: f64) -> Result<Self, WeightError> {
        if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
            return Err(WeightError::BadPercent {
                text: percent.to_string(),
            });
        }
        Ok(Weight((percent * 100.0).round() as u16))
    }

    /// The weight in basis points.
    pub const fn bps(self) -> u16 {
        self.0
    }

    /// The weight as a percentage.
    pub fn percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }

    /// The weight as a fraction of 1.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }

    /// What is left of 100 % after this weight.
    pub fn complement(self) -> Weight {
        Weight(10_000 - self.0)
    }
}

impl fmt::Display for Weight {
    /// `5%`, `12.5%`, `0.01%`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 100;
        let frac = self.0 % 100;
        match frac {
            0 => write!(f, "{whole}%"),
            f2 if f2 % 10 == 0 => write!(f, "{whole}.{}%", f2 / 10),
            f2 => write!(f, "{whole}.{f2:02}%"),
        }
    }
}

impl FromStr for Weight {
    type Err = WeightError;
    /// Parses `5%`, `12.5%` or a bare percentage `5`.
    fn from_str(s: &str) -> Result<Self, WeightError> {
        let number = s.trim().strip_suffix('%').unwrap_or(s.trim()).trim();
        let bad = || WeightError::BadPercent { text: s.to_owned() };
        let percent: f64 = number.parse().map_err(|_| bad())?;
        let weight = Weight::from_percent(percent).map_err(|_| bad())?;
        if (weight.percent() - percent).abs() > 1e-9 {
            return Err(bad());
        }
        Ok(weight)
    }
}

impl Serialize for Weight {
    /// Serializes as the integer number of basis points.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.0)
    }
}

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bps = u32::deserialize(deserializer)?;
        Weight::from_bps(bps).map_err(serde::de::Error::custom)
    }
}

/// One deployment's share of a split.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitEntry {
    /// The deployment.
    pub deployment: DeploymentId,
    /// Its share.
    pub weight: Weight,
}

/// A weighted split of an agent's traffic over deployments, in basis points summing to
/// 10,000. Entries are kept sorted by deployment id, so two splits with the same shares are
/// equal whatever order they were written in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<SplitEntry>", into = "Vec<SplitEntry>")]
pub struct Split {
    entries: Vec<SplitEntry>,
}

/// Why a split is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    /// No entries at all.
    #[error("a split needs at least one deployment")]
    Empty,
    /// A deployment appears twice.
    #[error("deployment `{deployment}` appears twice in the split")]
    Duplicate {
        /// The repeated deployment.
        deployment: DeploymentId,
    },
    /// The weights do not add up to 100 %.
    #[error("split weights sum to {sum} basis points; they must sum to exactly 10000 (100%)")]
    BadSum {
        /// The actual sum.
        sum: u32,
    },
}

impl Split {
    /// A split from entries; order does not matter.
    pub fn new(
        entries: impl IntoIterator<Item = (DeploymentId, Weight)>,
    ) -> Result<Self, SplitError> {
        let mut entries: Vec<SplitEntry> = entries
            .into_iter()
            .map(|(deployment, weight)| SplitEntry { deployment, weight })
            .collect();
        if entries.is_empty() {
            return Err(SplitError::Empty);
        }
        entries.sort_by(|a, b| a.deployment.cmp(&b.deployment));
        if let Some(pair) = entries
            .windows(2)
            .find(|w| w[0].deployment == w[1].deployment)
        {
            return Err(SplitError::Duplicate {
                deployment: pair[0].deployment.clone(),
            });
        }
        let sum: u32 = entries.iter().map(|e| u32::from(e.weight.bps())).sum();
        if sum != 10_000 {
            return Err(SplitError::BadSum { sum });
        }
        Ok(Split { entries })
    }

    /// All traffic to one deployment.
    pub fn single(deployment: DeploymentId) -> Self {
        Split {
            entries: vec![SplitEntry {
                deployment,
                weight: Weight::FULL,
            }],
        }
    }

    /// A canary: `candidate` gets `weight`, `baseline` the rest.
    pub fn canary(
        baseline: DeploymentId,
        candidate: DeploymentId,
        weight: Weight,
    ) -> Result<Self, SplitError> {
        Split::new([(baseline, weight.complement()), (candidate, weight)])
    }

    /// The entries, sorted by deployment id.
    pub fn entries(&self) -> &[SplitEntry] {
        &self.entries
    }

    /// The weight of `deployment`, zero when it is not in the split.
    pub fn weight_of(&self, deployment: &DeploymentId) -> Weight {
        self.entries
            .iter()
            .find(|e| &e.deployment == deployment)
            .map_or(Weight::ZERO, |e| e.weight)
    }

    /// Whether `deployment` gets any traffic.
    pub fn contains(&self, deployment: &DeploymentId) -> bool {
        self.weight_of(deployment).bps() != 0
    }
}

impl TryFrom<Vec<SplitEntry>> for Split {
    type Error = SplitError;
    fn try_from(entries: Vec<SplitEntry>) -> Result<Self, SplitError> {
        Split::new(entries.into_iter().map(|e| (e.deployment, e.weight)))
    }
}

impl From<Split> for Vec<SplitEntry> {
    fn from(split: Split) -> Self {
        split.entries
    }
}

/// Mirror a sample of an agent's traffic to a deployment that never serves a reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// The deployment that receives the copies.
    pub deployment: DeploymentId,
    /// The share of messages copied.
    pub sample: Weight,
}

/// Keep every session on the deployment that served its first message (rainbow routing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionAffinity {
    /// A session silent for longer than this loses its pin.
    #[serde(with = "crate::time::duration_millis")]
    pub idle_timeout: Duration,
}

/// Where a drain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainPhase {
    /// Not draining: takes new work.
    Active,
    /// Takes no new sessions or unpinned messages; pinned sessions and in-flight work go on.
    Draining,
    /// Takes nothing at all.
    Drained,
}

/// A snapshot of one deployment's drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainStatus {
    /// Where the drain stands.
    pub phase: DrainPhase,
    /// Messages routed to the deployment and not yet finished.
    pub in_flight: u64,
    /// Sessions still pinned to it.
    pub pinned_sessions: u64,
}

impl DrainStatus {
    /// Whether nothing is left: no message in flight and no pinned session.
    pub fn is_empty(&self) -> bool {
        self.in_flight == 0 && self.pinned_sessions == 0
    }
}

/// How a finished drain ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainReport {
    /// The drained deployment.
    pub deployment: DeploymentId,
    /// Whether everything finished before the drain was closed.
    pub clean: bool,
    /// Messages still running when the drain was closed; they finish, but nothing new comes.
    pub still_in_flight: u64,
    /// Pinned sessions moved off by closing the drain.
    pub released_sessions: u64,
    /// How long the drain took.
    #[serde(with = "crate::time::duration_millis")]
    pub waited: Duration,
}

/// What a rollout may do to traffic. The router implements it; tests implement it in
/// memory; a host may put a service mesh or an orchestrator behind it.
///
/// Every change is atomic per agent: readers see the route before or after, never a mix.
#[async_trait]
pub trait TrafficControl: Send + Sync {
    /// Makes a Running deployment of `agent` known, so splits, shadows and pins may name it.
    async fn register(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<(), TrafficError>;

    /// Sends all new traffic of `agent` to `deployment` and makes it the production route.
    async fn promote(&self, agent: &AgentId, deployment: &DeploymentId)
    -> Result<(), TrafficError>;

    /// Spreads new traffic of `agent` over `split`.
    async fn set_split(&self, agent: &AgentId, split: &Split) -> Result<(), TrafficError>;

    /// Starts, changes or (with `None`) stops mirroring a sample of traffic.
    async fn set_shadow(
        &self,
        agent: &AgentId,
        shadow: Option<&ShadowConfig>,
    ) -> Result<(), TrafficError>;

    /// Turns session pinning on or (with `None`) off for `agent`.
    async fn set_session_affinity(
        &self,
        agent: &AgentId,
        affinity: Option<SessionAffinity>,
    ) -> Result<(), TrafficError>;

    /// Pins `session` to `deployment`.
    async fn pin_session(
        &self,
        agent: &AgentId,
        session: &SessionId,
        deployment: &DeploymentId,
    ) -> Result<(), TrafficError>;

    /// Ends `session`'s pin; returns whether there was one.
    async fn release_session(
        &self,
        agent: &AgentId,
        session: &SessionId,
    ) -> Result<bool, TrafficError>;

    /// Restores the route `agent` had before its last change.
    async fn rollback(&self, agent: &AgentId) -> Result<(), TrafficError>;

    /// Stops new sessions and unpinned messages to `deployment`; pinned sessions and
    /// in-flight messages go on until [`close_drain`](TrafficControl::close_drain).
    async fn start_drain(&self, deployment: &DeploymentId) -> Result<(), TrafficError>;

    /// Where the drain of `deployment` stands.
    async fn drain_status(&self, deployment: &DeploymentId) -> Result<DrainStatus, TrafficError>;

    /// Stops every route to `deployment`, pinned sessions included, and reports what was left.
    async fn close_drain(&self, deployment: &DeploymentId) -> Result<DrainReport, TrafficError>;

    /// Forgets `deployment`: drops its pins and refuses it in later splits.
    async fn retire(&self, deployment: &DeploymentId) -> Result<(), TrafficError>;

    /// Messages routed to `deployment` and not yet finished.
    fn in_flight(&self, deployment: &DeploymentId) -> u64;
}

/// Why a traffic change was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrafficError {
    /// No deployment of the agent was ever registered.
    #[error("agent `{agent}` is not known to the router")]
    UnknownAgent {
        /// The agent.
        agent: AgentId,
    },
    /// The deployment was never registered, or was retired.
    #[error("deployment `{deployment}` is not known to the router")]
    UnknownDeployment {
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The deployment belongs to another agent.
    #[error("deployment `{deployment}` does not belong to agent `{agent}`")]
    WrongAgent {
        /// The deployment.
        deployment: DeploymentId,
        /// The agent named in the request.
        agent: AgentId,
    },
    /// The deployment is draining or drained and takes no new traffic.
    #[error("deployment `{deployment}` is draining and takes no new traffic")]
    Draining {
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The split is malformed.
    #[error("invalid split for agent `{agent}`: {source}")]
    InvalidSplit {
        /// The agent.
        agent: AgentId,
        /// What is wrong with it.
        #[source]
        source: SplitError,
    },
    /// The agent has no production route yet.
    #[error("agent `{agent}` has no production deployment")]
    NoProduction {
        /// The agent.
        agent: AgentId,
    },
    /// There is no earlier route to restore.
    #[error("agent `{agent}` has no earlier route to roll back to")]
    NothingToRollBack {
        /// The agent.
        agent: AgentId,
    },
    /// The deployment was already registered.
    #[error("deployment `{deployment}` is already registered for agent `{agent}`")]
    AlreadyRegistered {
        /// The deployment.
        deployment: DeploymentId,
        /// The agent it is registered for.
        agent: AgentId,
    },
    /// The implementation failed for a reason of its own; the source says how.
    #[error("traffic control failed: {0}")]
    Backend(#[from] BackendError),
    /// The deployment still takes new traffic (it is production, in the split or the
    /// shadow), so it cannot be drained or retired yet.
    #[error(
        "deployment `{deployment}` still takes new traffic of agent `{agent}`; route traffic \
         away from it first"
    )]
    StillRouted {
        /// The deployment.
        deployment: DeploymentId,
        /// Its agent.
        agent: AgentId,
    },
    /// Sessions can be pinned only while session affinity is on for the agent.
    #[error("agent `{agent}` has session affinity off; sessions cannot be pinned")]
    NoSessionAffinity {
        /// The agent.
        agent: AgentId,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> DeploymentId {
        DeploymentId::new(s).unwrap()
    }

    #[test]
    fn weight_parses_and_displays_percentages() {
        for (text, bps, shown) in [
            ("5%", 500, "5%"),
            ("12.5%", 1250, "12.5%"),
            ("0.01%", 1, "0.01%"),
            ("100", 10_000, "100%"),
            (" 25 % ", 2500, "25%"),
        ] {
            let w: Weight = text.parse().unwrap();
            assert_eq!(w.bps(), bps, "{text}");
            assert_eq!(w.to_string(), shown);
        }
        for bad in ["101%", "-1%", "abc", "0.001%", "NaN%", ""] {
            assert!(bad.parse::<Weight>().is_err(), "{bad}");
        }
        assert_eq!(
            Weight::from_bps(10_001),
            Err(WeightError::OverFull { bps: 10_001 })
        );
        assert_eq!(Weight::from_bps(2_500).unwrap().complement().bps(), 7_500);
    }

    #[test]
    fn split_is_canonical_and_checked() {
        let a = Split::new([
            (d("b"), Weight::from_bps(100).unwrap()),
            (d("a"), Weight::from_bps(9_900).unwrap()),
        ])
        .unwrap();
        let b = Split::canary(d("a"), d("b"), Weight::from_bps(100).unwrap()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.entries()[0].deployment, d("a"));
        assert_eq!(a.weight_of(&d("b")).bps(), 100);
        assert!(a.contains(&d("b")));
        assert!(!a.contains(&d("c")));
        assert_eq!(Split::new(Vec::new()), Err(SplitError::Empty));
        assert_eq!(
            Split::new([
                (d("a"), Weight::from_bps(5_000).unwrap()),
                (d("a"), Weight::from_bps(5_000).unwrap())
            ]),
            Err(SplitError::Duplicate { deployment: d("a") })
        );
        let err = Split::new([(d("a"), Weight::from_bps(5_000).unwrap())]).unwrap_err();
        assert_eq!(err, SplitError::BadSum { sum: 5_000 });
        assert!(err.to_string().contains("5000"));
    }

    #[test]
    fn split_and_friends_round_trip() {
        let split = Split::canary(d("a"), d("b"), Weight::from_bps(500).unwrap()).unwrap();
        let json = serde_json::to_string(&split).unwrap();
        assert_eq!(
            json,
            r#"[{"deployment":"a","weight":9500},{"deployment":"b","weight":500}]"#
        );
        assert_eq!(serde_json::from_str::<Split>(&json).unwrap(), split);
        assert!(serde_json::from_str::<Split>(r#"[{"deployment":"a","weight":10}]"#).is_err());

        let shadow = ShadowConfig {
            deployment: d("s"),
            sample: Weight::from_bps(1_000).unwrap(),
        };
        let json = serde_json::to_string(&shadow).unwrap();
        assert_eq!(serde_json::from_str::<ShadowConfig>(&json).unwrap(), shadow);

        let affinity = SessionAffinity {
            idle_timeout: Duration::from_secs(30),
        };
        let json = serde_json::to_string(&affinity).unwrap();
        assert_eq!(json, r#"{"idle_timeout":30000}"#);
        assert_eq!(
            serde_json::from_str::<SessionAffinity>(&json).unwrap(),
            affinity
        );

        let status = DrainStatus {
            phase: DrainPhase::Draining,
            in_flight: 2,
            pinned_sessions: 1,
        };
        let json = serde_json::to_string(&status).unwrap();
        assert!(json.contains("\"draining\""));
        assert_eq!(serde_json::from_str::<DrainStatus>(&json).unwrap(), status);

        let report = DrainReport {
            deployment: d("x"),
            clean: false,
            still_in_flight: 3,
            released_sessions: 4,
            waited: Duration::from_millis(1500),
        };
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<DrainReport>(&json).unwrap(), report);
    }
}
