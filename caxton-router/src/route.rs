//! The published route of one agent: what the writer asked for, compiled for the hot path.

use std::fmt;
use std::sync::Arc;

use caxton_core::{AgentId, DeploymentId, SessionAffinity, SessionId, ShadowConfig, Split};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::cell::{Counters, DeploymentCell};
use crate::local::{self, FULL};

/// Mixed into the seed of shadow sampling so that which sessions are mirrored does not
/// line up with which sessions land on a canary.
const SHADOW_SALT: u64 = 0x5348_4144_4f57_0001;

/// A session's point in `[0, 10000)` for `agent`: a stable hash (xxh3, the same on every
/// machine and release) of the agent and the session.
///
/// A weighted split gives each deployment a contiguous range of points, so a session's
/// assignment depends only on its point and the split. The point does not depend on the
/// split, which is what keeps sessions where they are when weights move.
pub fn session_point(agent: &AgentId, session: &SessionId) -> u16 {
    point_with_seed(agent_seed(agent), session)
}

pub(crate) fn agent_seed(agent: &AgentId) -> u64 {
    xxh3_64(agent.as_str().as_bytes())
}

#[inline]
fn point_with_seed(seed: u64, session: &SessionId) -> u16 {
    local::reduce(xxh3_64_with_seed(session.as_str().as_bytes(), seed))
}

/// What a writer asked for: the part of a route that rollback restores.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct RouteSpec {
    pub(crate) production: Option<DeploymentId>,
    pub(crate) split: Option<Split>,
    pub(crate) shadow: Option<ShadowConfig>,
    pub(crate) affinity: Option<SessionAffinity>,
}

impl RouteSpec {
    /// Whether new traffic or shadow copies may reach `deployment` under this spec. The
    /// production deployment counts even while a split steers around it, because promote
    /// and rollback fall back on it.
    pub(crate) fn routes_to(&self, deployment: &DeploymentId) -> bool {
        self.production.as_ref() == Some(deployment)
            || self
                .split
                .as_ref()
                .is_some_and(|split| split.contains(deployment))
            || self
                .shadow
                .as_ref()
                .is_some_and(|shadow| &shadow.deployment == deployment)
    }

    /// Every deployment the spec names, zero-weight split entries included.
    pub(crate) fn named(&self) -> impl Iterator<Item = &DeploymentId> {
        self.production
            .iter()
            .chain(
                self.split
                    .iter()
                    .flat_map(|s| s.entries().iter().map(|e| &e.deployment)),
            )
            .chain(self.shadow.iter().map(|s| &s.deployment))
    }
}

/// Most weighted ranges kept inline in the route; larger splits keep theirs in a separate
/// array.
const INLINE_RANGES: usize = 8;

/// Targets kept inline in the route, so a canary's two deployments are reached without
/// another pointer hop.
const INLINE_TARGETS: usize = 2;

/// One deployment as a route reaches it: its counters and id, side by side so that a route
/// touches one line to reach both.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) counters: Counters,
    pub(crate) id: DeploymentId,
}

/// The route of one agent as published: production, split, shadow, session affinity and a
/// generation that grows with every publication.
///
/// Every route is immutable: a change builds a new one and swaps it in, so a reader sees one
/// route whole, never a mix of two. [`RouteDecision::agent_route`] shows the route a message
/// was routed with.
///
/// [`RouteDecision::agent_route`]: crate::RouteDecision::agent_route
// `repr(C, align(64))`: the fields the hot path reads come first, on two whole cache lines.
#[repr(C, align(64))]
pub struct AgentRoute {
    /// Every deployment registered for the agent when the route was built, the first two
    /// inline and the rest in `more_targets`: first the ones new traffic goes to (the
    /// split's entries with a weight, in the split's order, or production alone), then the
    /// others.
    targets: [Option<Target>; INLINE_TARGETS],
    seed: u64,
    idle_timeout_ms: u64,
    /// Exclusive upper bounds of the weighted ranges of the first targets, in points.
    ranges: [u16; INLINE_RANGES],
    /// How many of the first targets take new traffic: 0 (no production), 1 (all to
    /// target 0) or more (weighted by `ranges`).
    weighted: u32,
    shadow_index: u32,
    shadow_rate: u16,
    affinity: bool,
    more_targets: Box<[Target]>,
    // Read off the hot path only.
    more_ranges: Box<[u16]>,
    agent: AgentId,
    generation: u64,
    spec: RouteSpec,
}

/// Marks "no shadow".
const NO_SHADOW: u32 = u32::MAX;

impl AgentRoute {
    /// Compiles `spec` over the agent's registered deployments `cells`. A deployment the
    /// spec names that is not among `cells` gets no traffic; writers check names first.
    pub(crate) fn build(
        agent: AgentId,
        generation: u64,
        spec: RouteSpec,
        cells: &[Arc<DeploymentCell>],
    ) -> Self {
        let target = |cell: &Arc<DeploymentCell>| Target {
            counters: cell.counters().clone(),
            id: cell.id().clone(),
        };
        let find = |id: &DeploymentId| cells.iter().find(|cell| cell.id() == id);
        let mut targets: Vec<Target> = Vec::with_capacity(cells.len());
        let mut bounds: Vec<u16> = Vec::new();
        match (&spec.split, &spec.production) {
            (Some(split), _) => {
                let mut upper = 0u16;
                for entry in split.entries() {
                    upper += entry.weight.bps();
                    if entry.weight.bps() > 0
                        && let Some(cell) = find(&entry.deployment)
                    {
                        targets.push(target(cell));
                        bounds.push(upper);
                    }
                }
                if let Some(last) = bounds.last_mut() {
                    // Weights sum to 10,000; this only guards the scan's end.
                    *last = FULL;
                }
            }
            (None, Some(production)) => {
                if let Some(cell) = find(production) {
                    targets.push(target(cell));
                    bounds.push(FULL);
                }
            }
            (None, None) => {}
        }
        let weighted = targets.len() as u32;
        for cell in cells {
            if !targets[..weighted as usize]
                .iter()
                .any(|t| &t.id == cell.id())
            {
                targets.push(target(cell));
            }
        }
        let mut ranges = [FULL; INLINE_RANGES];
        let more_ranges: Box<[u16]> = if bounds.len() <= INLINE_RANGES {
            ranges[..bounds.len()].copy_from_slice(&bounds);
            Box::default()
        } else {
            bounds.into_boxed_slice()
        };
        let (shadow_index, shadow_rate) = spec
            .shadow
            .as_ref()
            .filter(|shadow| shadow.sample.bps() > 0)
            .and_then(|shadow| {
                let index = targets.iter().position(|t| t.id == shadow.deployment)?;
                Some((index as u32, shadow.sample.bps()))
            })
            .unwrap_or((NO_SHADOW, 0));
        let idle_timeout_ms = spec.affinity.map_or(0, |a| {
            u64::try_from(a.idle_timeout.as_millis()).unwrap_or(u64::MAX)
        });
        let more_targets: Box<[Target]> =
            targets.split_off(INLINE_TARGETS.min(targets.len())).into();
        let mut inline = targets.into_iter();
        AgentRoute {
            targets: [inline.next(), inline.next()],
            more_targets,
            seed: agent_seed(&agent),
            idle_timeout_ms,
            ranges,
            weighted,
            shadow_index,
            shadow_rate,
            affinity: spec.affinity.is_some(),
            more_ranges,
            agent,
            generation,
            spec,
        }
    }

    /// The agent this route belongs to.
    pub fn agent(&self) -> &AgentId {
        &self.agent
    }

    /// Grows by one with every route published for the agent (changes, rollbacks, and
    /// registrations or retirements of its deployments).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The production deployment, if the agent has one.
    pub fn production(&self) -> Option<&DeploymentId> {
        self.spec.production.as_ref()
    }

    /// The weighted split of new traffic; `None` sends it all to production.
    pub fn split(&self) -> Option<&Split> {
        self.spec.split.as_ref()
    }

    /// The shadow that a sample of messages is mirrored to.
    pub fn shadow(&self) -> Option<&ShadowConfig> {
        self.spec.shadow.as_ref()
    }

    /// Session pinning, when on.
    pub fn session_affinity(&self) -> Option<SessionAffinity> {
        self.spec.affinity
    }

    /// Whether a new message could be sent to `deployment` as primary under this route.
    pub fn sends_to(&self, deployment: &DeploymentId) -> bool {
        self.all_targets()
            .take(self.weighted as usize)
            .any(|t| &t.id == deployment)
    }

    fn all_targets(&self) -> impl Iterator<Item = &Target> {
        self.targets
            .iter()
            .flatten()
            .chain(self.more_targets.iter())
    }

    pub(crate) fn spec(&self) -> &RouteSpec {
        &self.spec
    }

    /// The target at `index`, which comes from this route (`choose`, `index_of`...).
    #[inline]
    pub(crate) fn target(&self, index: u32) -> &Target {
        let index = index as usize;
        match self.targets.get(index) {
            Some(Some(target)) => target,
            _ => &self.more_targets[index - INLINE_TARGETS],
        }
    }

    /// The session idle timeout, when session affinity is on.
    #[inline]
    pub(crate) fn idle_timeout_ms(&self) -> Option<u64> {
        self.affinity.then_some(self.idle_timeout_ms)
    }

    /// The index of the target whose counters are `counters`, if this route has it.
    #[inline]
    pub(crate) fn index_of_counters(&self, counters: &Counters) -> Option<u32> {
        self.all_targets()
            .position(|t| t.counters.same(counters))
            .map(|i| i as u32)
    }

    pub(crate) fn index_of(&self, deployment: &DeploymentId) -> Option<u32> {
        self.all_targets()
            .position(|t| &t.id == deployment)
            .map(|i| i as u32)
    }

    /// The primary deployment for a new message: sticky by session point when there is a
    /// session, spread by weight otherwise. `None` when the agent has no production.
    #[inline]
    pub(crate) fn choose(&self, session: Option<&SessionId>) -> Option<u32> {
        match self.weighted {
            0 => None,
            1 => Some(0),
            weighted => {
                let point = match session {
                    Some(session) => point_with_seed(self.seed, session),
                    None => local::random_point(),
                };
                let ranges = if weighted as usize <= INLINE_RANGES {
                    &self.ranges[..weighted as usize]
                } else {
                    &self.more_ranges[..]
                };
                let index = ranges
                    .iter()
                    .position(|upper| point < *upper)
                    .unwrap_or(weighted as usize - 1);
                Some(index as u32)
            }
        }
    }

    /// The shadow to mirror this message to, if it is sampled: deterministic per session,
    /// an even per-thread sequence without one.
    #[inline]
    pub(crate) fn sample_shadow(&self, session: Option<&SessionId>) -> Option<u32> {
        if self.shadow_index == NO_SHADOW {
            return None;
        }
        if self.shadow_rate >= FULL {
            return Some(self.shadow_index);
        }
        let point = match session {
            Some(session) => point_with_seed(self.seed ^ SHADOW_SALT, session),
            None => local::sequence_point(),
        };
        (point < self.shadow_rate).then_some(self.shadow_index)
    }
}

impl fmt::Debug for AgentRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentRoute")
            .field("agent", &self.agent)
            .field("generation", &self.generation)
            .field("production", &self.spec.production)
            .field("split", &self.spec.split)
            .field("shadow", &self.spec.shadow)
            .field("session_affinity", &self.spec.affinity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caxton_core::Weight;

    fn d(s: &str) -> DeploymentId {
        DeploymentId::new(s).unwrap()
    }

    fn cells(agent: &AgentId, ids: &[&str]) -> Vec<Arc<DeploymentCell>> {
        ids.iter()
            .map(|id| Arc::new(DeploymentCell::new(agent.clone(), d(id), 1)))
            .collect()
    }

    #[test]
    fn session_point_is_stable_across_releases() {
        // Pinned values: a change here moves every sticky session in every deployment.
        let agent = AgentId::new("processor").unwrap();
        let points: Vec<u16> = ["s-1", "s-2", "checkout-42"]
            .iter()
            .map(|s| session_point(&agent, &SessionId::new(s).unwrap()))
            .collect();
        let again: Vec<u16> = ["s-1", "s-2", "checkout-42"]
            .iter()
            .map(|s| session_point(&agent, &SessionId::new(s).unwrap()))
            .collect();
        assert_eq!(points, again);
        assert!(points.iter().all(|p| *p < FULL));
        let seed = xxh3_64(b"processor");
        let expected = ((u128::from(xxh3_64_with_seed(b"s-1", seed)) * 10_000) >> 64) as u16;
        assert_eq!(points[0], expected);
    }

    #[test]
    fn weighted_choice_uses_cumulative_ranges_in_id_order() {
        let agent = AgentId::new("a").unwrap();
        let split = Split::new([
            (d("b"), Weight::from_bps(2_500).unwrap()),
            (d("a"), Weight::from_bps(7_500).unwrap()),
            (d("z"), Weight::ZERO),
        ])
        .unwrap();
        let route = AgentRoute::build(
            agent.clone(),
            1,
            RouteSpec {
                production: Some(d("a")),
                split: Some(split),
                ..RouteSpec::default()
            },
            &cells(&agent, &["a", "b", "z"]),
        );
        for i in 0..2_000 {
            let session = SessionId::new(format!("s{i}")).unwrap();
            let point = session_point(&agent, &session);
            let chosen = route
                .target(route.choose(Some(&session)).unwrap())
                .id
                .clone();
            let expected = if point < 7_500 { d("a") } else { d("b") };
            assert_eq!(chosen, expected, "point {point}");
        }
        assert!(!route.sends_to(&d("z")), "a zero weight gets nothing");
        assert!(route.sends_to(&d("b")));
    }

    #[test]
    fn no_production_chooses_nothing() {
        let agent = AgentId::new("a").unwrap();
        let route = AgentRoute::build(
            agent.clone(),
            0,
            RouteSpec::default(),
            &cells(&agent, &["a"]),
        );
        assert_eq!(route.choose(None), None);
    }

    #[test]
    fn shadow_samples_by_rate() {
        let agent = AgentId::new("a").unwrap();
        let route = AgentRoute::build(
            agent.clone(),
            1,
            RouteSpec {
                production: Some(d("a")),
                shadow: Some(ShadowConfig {
                    deployment: d("s"),
                    sample: Weight::from_bps(1_000).unwrap(),
                }),
                ..RouteSpec::default()
            },
            &cells(&agent, &["a", "s"]),
        );
        let without_session = (0..10_000)
            .filter(|_| route.sample_shadow(None).is_some())
            .count();
        assert_eq!(
            without_session, 1_000,
            "the sequence samples exactly the rate"
        );
        let sessions: Vec<SessionId> = (0..20_000)
            .map(|i| SessionId::new(format!("s{i}")).unwrap())
            .collect();
        let sampled = sessions
            .iter()
            .filter(|s| route.sample_shadow(Some(s)).is_some())
            .count();
        assert!((1_800..=2_200).contains(&sampled), "{sampled}");
        for s in &sessions[..100] {
            assert_eq!(route.sample_shadow(Some(s)), route.sample_shadow(Some(s)));
        }
    }
}
