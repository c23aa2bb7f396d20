//! The published route of one agent: what the writer asked for, compiled for the hot path.

use std::fmt;
use std::sync::Arc;

use caxton_core::{AgentId, DeploymentId, SessionAffinity, SessionId, ShadowConfig, Split};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::local::{self, FULL, PointSource};

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

#[inline(always)]
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

/// Weighted targets kept inline in the route's first cache line; larger splits keep
/// theirs in a separate array.
pub(crate) const INLINE: usize = 4;

/// Marks an unused target slot, or no shadow.
const NO_INDEX: u32 = u32::MAX;

/// The part of a route that picks where a message goes, small and `Copy` so that a
/// [`RouterReader`](crate::RouterReader) can keep it by value next to its own state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Picker {
    seed: u64,
    generation: u64,
    /// Exclusive upper bounds of the weighted ranges when there are at most `INLINE`, in
    /// points; unused ones are `FULL`, which no point reaches.
    ranges: [u16; INLINE],
    /// How many deployments take new traffic: 0 (no production), 1 (all to slot 0) or
    /// more (weighted).
    weighted: u32,
    /// Arena index of the shadow, or `NO_INDEX`.
    shadow: u32,
    shadow_rate: u16,
    affinity: bool,
}

impl Picker {
    /// Whether the weighted ranges fit inline, so that
    /// [`choose_inline`](Self::choose_inline) applies.
    #[inline]
    pub(crate) fn is_inline(&self) -> bool {
        self.weighted as usize <= INLINE
    }

    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether messages with a session follow session pins.
    #[inline]
    pub(crate) fn has_affinity(&self) -> bool {
        self.affinity
    }

    /// How many weighted slots the route has.
    #[inline]
    pub(crate) fn weighted(&self) -> usize {
        self.weighted as usize
    }

    /// The arena index of the shadow, if the route mirrors to one.
    #[inline]
    pub(crate) fn shadow_index(&self) -> Option<u32> {
        (self.shadow != NO_INDEX).then_some(self.shadow)
    }

    /// The point of a new message: the session's, or one spread by weight.
    #[inline(always)]
    fn point(&self, session: Option<&SessionId>, points: &mut impl PointSource) -> u16 {
        match session {
            Some(session) => point_with_seed(self.seed, session),
            None => points.random_point(),
        }
    }

    /// [`AgentRoute::choose`] for a route whose ranges fit inline. Always inlined: it is
    /// most of a routed message's work, and a call costs a tenth of it.
    #[inline(always)]
    pub(crate) fn choose_inline(
        &self,
        session: Option<&SessionId>,
        points: &mut impl PointSource,
    ) -> Option<usize> {
        debug_assert!(self.is_inline());
        match self.weighted {
            0 => None,
            1 => Some(0),
            _ => {
                let point = self.point(session, points);
                // Ranges are increasing and unused ones are `FULL`, which no point reaches,
                // so the number of bounds at or below the point is its slot.
                let slot = self.ranges.iter().filter(|upper| **upper <= point).count();
                Some(slot.min(INLINE - 1))
            }
        }
    }

    /// Whether this message is mirrored to the shadow: deterministic per session, an even
    /// sequence without one.
    #[inline]
    pub(crate) fn sample_shadow(
        &self,
        session: Option<&SessionId>,
        points: &mut impl PointSource,
    ) -> bool {
        if self.shadow == NO_INDEX {
            return false;
        }
        if self.shadow_rate >= FULL {
            return true;
        }
        let point = match session {
            Some(session) => point_with_seed(self.seed ^ SHADOW_SALT, session),
            None => points.sequence_point(),
        };
        point < self.shadow_rate
    }
}

/// The route of one agent as published: production, split, shadow, session affinity and a
/// generation that grows with every publication.
///
/// Every route is immutable: a change builds a new one and swaps it in, so a reader sees one
/// route whole, never a mix of two. A [`RouteDecision`](crate::RouteDecision) names the
/// [`generation`](AgentRoute::generation) it was made with.
// `repr(C, align(64))`: what routing reads comes first, on one cache line. Deployments are
// named by their index in the router's arena.
#[repr(C, align(64))]
pub struct AgentRoute {
    picker: Picker,
    /// Arena indices of the deployments new traffic goes to (the split's entries with a
    /// weight, in the split's order, or production alone), when there are at most
    /// `INLINE`.
    targets: [u32; INLINE],
    // Read off the hot path only.
    idle_timeout_ms: u64,
    /// `(upper bound, arena index)` of every weighted target, when there are more than
    /// `INLINE`.
    more: Box<[(u16, u32)]>,
    /// Every deployment registered for the agent when the route was built, with its arena
    /// index; shared by every route built between two registrations.
    registered: Arc<[(DeploymentId, u32)]>,
    agent: AgentId,
    spec: RouteSpec,
}

impl AgentRoute {
    /// Compiles `spec` over the agent's registered deployments (id and arena index). A
    /// deployment the spec names that is not registered gets no traffic; writers check
    /// names first.
    pub(crate) fn build(
        agent: AgentId,
        generation: u64,
        spec: RouteSpec,
        registered: Arc<[(DeploymentId, u32)]>,
    ) -> Self {
        let find = |id: &DeploymentId| {
            registered
                .iter()
                .find(|(registered, _)| registered == id)
                .map(|(_, index)| *index)
        };
        // (upper bound, arena index) of every deployment that takes new traffic: inline
        // while they fit, so that publishing a route allocates only the route itself.
        let mut ranges = [FULL; INLINE];
        let mut targets = [NO_INDEX; INLINE];
        let mut more: Vec<(u16, u32)> = Vec::new();
        let mut weighted = 0usize;
        let mut push = |upper: u16, index: u32| {
            if weighted < INLINE {
                ranges[weighted] = upper;
                targets[weighted] = index;
            } else {
                if weighted == INLINE {
                    more.extend(ranges.iter().copied().zip(targets));
                }
                more.push((upper, index));
            }
            weighted += 1;
        };
        match (&spec.split, &spec.production) {
            (Some(split), _) => {
                let mut upper = 0u16;
                for entry in split.entries() {
                    upper += entry.weight.bps();
                    if entry.weight.bps() > 0
                        && let Some(index) = find(&entry.deployment)
                    {
                        push(upper, index);
                    }
                }
            }
            (None, Some(production)) => {
                if let Some(index) = find(production) {
                    push(FULL, index);
                }
            }
            (None, None) => {}
        }
        // Weights sum to 10,000; this only guards the scan's end.
        if weighted > INLINE {
            if let Some(last) = more.last_mut() {
                last.0 = FULL;
            }
            ranges = [FULL; INLINE];
            targets = [NO_INDEX; INLINE];
        } else if weighted > 0 {
            ranges[weighted - 1] = FULL;
        }
        let (shadow, shadow_rate) = spec
            .shadow
            .as_ref()
            .filter(|shadow| shadow.sample.bps() > 0)
            .and_then(|shadow| Some((find(&shadow.deployment)?, shadow.sample.bps())))
            .unwrap_or((NO_INDEX, 0));
        let idle_timeout_ms = spec.affinity.map_or(0, |a| {
            u64::try_from(a.idle_timeout.as_millis()).unwrap_or(u64::MAX)
        });
        AgentRoute {
            picker: Picker {
                seed: agent_seed(&agent),
                generation,
                ranges,
                weighted: weighted as u32,
                shadow,
                shadow_rate,
                affinity: spec.affinity.is_some(),
            },
            targets,
            idle_timeout_ms,
            more: more.into_boxed_slice(),
            registered,
            agent,
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
        self.picker.generation
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
        let named = match (&self.spec.split, &self.spec.production) {
            (Some(split), _) => split.weight_of(deployment).bps() > 0,
            (None, Some(production)) => production == deployment,
            (None, None) => false,
        };
        named && self.index_of(deployment).is_some()
    }

    pub(crate) fn spec(&self) -> &RouteSpec {
        &self.spec
    }

    /// What routing reads.
    #[inline]
    pub(crate) fn picker(&self) -> &Picker {
        &self.picker
    }

    /// The session idle timeout, when session affinity is on.
    #[inline]
    pub(crate) fn idle_timeout_ms(&self) -> Option<u64> {
        self.picker.affinity.then_some(self.idle_timeout_ms)
    }

    /// The arena index of `deployment`, if it was registered for the agent when the route
    /// was built.
    pub(crate) fn index_of(&self, deployment: &DeploymentId) -> Option<u32> {
        self.registered
            .iter()
            .find(|(id, _)| id == deployment)
            .map(|(_, index)| *index)
    }

    /// The weighted slot of the primary deployment for a new message: sticky by session
    /// point when there is a session, spread by weight otherwise. `None` when the agent has
    /// no production. [`target`](Self::target) names the slot's deployment.
    #[inline]
    pub(crate) fn choose(
        &self,
        session: Option<&SessionId>,
        points: &mut impl PointSource,
    ) -> Option<usize> {
        if self.picker.is_inline() {
            return self.picker.choose_inline(session, points);
        }
        let point = self.picker.point(session, points);
        let slot = self
            .more
            .iter()
            .position(|(upper, _)| point < *upper)
            .unwrap_or(self.more.len() - 1);
        Some(slot)
    }

    /// The arena index of the deployment in weighted `slot` (below the route's number of
    /// weighted slots).
    #[inline]
    pub(crate) fn target(&self, slot: usize) -> u32 {
        if self.picker.is_inline() {
            self.targets[slot]
        } else {
            self.more[slot].1
        }
    }
}

impl fmt::Debug for AgentRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentRoute")
            .field("agent", &self.agent)
            .field("generation", &self.picker.generation)
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
    use crate::local::Sampler;
    use caxton_core::Weight;

    fn d(s: &str) -> DeploymentId {
        DeploymentId::new(s).unwrap()
    }

    /// Registered deployments, at arena indices 10, 11, ...
    fn registered(ids: &[&str]) -> Arc<[(DeploymentId, u32)]> {
        ids.iter()
            .enumerate()
            .map(|(n, id)| (d(id), 10 + n as u32))
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
            registered(&["a", "b", "z"]),
        );
        let mut points = Sampler::new(1);
        for i in 0..2_000 {
            let session = SessionId::new(format!("s{i}")).unwrap();
            let point = session_point(&agent, &session);
            let chosen = route.target(route.choose(Some(&session), &mut points).unwrap());
            let expected = if point < 7_500 { 10 } else { 11 };
            assert_eq!(chosen, expected, "point {point}");
        }
        assert!(!route.sends_to(&d("z")), "a zero weight gets nothing");
        assert!(route.sends_to(&d("b")));
        assert_eq!(route.index_of(&d("z")), Some(12));
    }

    #[test]
    fn sends_to_names_production_alone_and_never_an_unregistered_deployment() {
        let agent = AgentId::new("a").unwrap();
        let production_only = AgentRoute::build(
            agent.clone(),
            1,
            RouteSpec {
                production: Some(d("a")),
                ..RouteSpec::default()
            },
            registered(&["a", "b"]),
        );
        assert!(production_only.sends_to(&d("a")));
        assert!(!production_only.sends_to(&d("b")), "registered, not routed");
        let split = Split::new([
            (d("a"), Weight::from_bps(5_000).unwrap()),
            (d("ghost"), Weight::from_bps(5_000).unwrap()),
        ])
        .unwrap();
        let with_ghost = AgentRoute::build(
            agent,
            2,
            RouteSpec {
                production: Some(d("a")),
                split: Some(split),
                ..RouteSpec::default()
            },
            registered(&["a"]),
        );
        assert!(with_ghost.sends_to(&d("a")));
        assert!(
            !with_ghost.sends_to(&d("ghost")),
            "unregistered: no traffic"
        );
        assert_eq!(with_ghost.picker().weighted(), 1);
    }

    #[test]
    fn wide_splits_keep_their_ranges_out_of_line_and_choose_the_same_way() {
        let agent = AgentId::new("a").unwrap();
        let names = ["a", "b", "c", "d", "e", "f"];
        let split = Split::new(names.iter().map(|n| {
            (
                d(n),
                Weight::from_bps(if *n == "a" { 5_000 } else { 1_000 }).unwrap(),
            )
        }))
        .unwrap();
        let route = AgentRoute::build(
            agent.clone(),
            1,
            RouteSpec {
                production: Some(d("a")),
                split: Some(split),
                ..RouteSpec::default()
            },
            registered(&names),
        );
        let mut counts = [0usize; 6];
        let mut points = Sampler::new(2);
        for i in 0..20_000 {
            let session = SessionId::new(format!("s{i}")).unwrap();
            let point = session_point(&agent, &session);
            let chosen = route.target(route.choose(Some(&session), &mut points).unwrap());
            let expected = if point < 5_000 {
                10
            } else {
                10 + 1 + u32::from((point - 5_000) / 1_000)
            };
            assert_eq!(chosen, expected, "point {point}");
            counts[(chosen - 10) as usize] += 1;
        }
        assert!(counts.iter().all(|c| *c > 0), "{counts:?}");
    }

    #[test]
    fn no_production_chooses_nothing() {
        let agent = AgentId::new("a").unwrap();
        let route = AgentRoute::build(agent.clone(), 0, RouteSpec::default(), registered(&["a"]));
        assert_eq!(route.choose(None, &mut Sampler::new(0)), None);
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
            registered(&["a", "s"]),
        );
        let mut points = Sampler::new(5);
        let without_session = (0..10_000)
            .filter(|_| route.picker().sample_shadow(None, &mut points))
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
            .filter(|s| route.picker().sample_shadow(Some(s), &mut points))
            .count();
        assert!((1_800..=2_200).contains(&sampled), "{sampled}");
        for s in &sessions[..100] {
            assert_eq!(
                route.picker().sample_shadow(Some(s), &mut points),
                route.picker().sample_shadow(Some(s), &mut points)
            );
        }
        assert_eq!(
            route.picker().shadow_index(),
            Some(11),
            "the shadow is named by its arena index"
        );
    }
}
