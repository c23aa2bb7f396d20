//! Properties of routing: stickiness under rising weights, observed shares, session pins, and
//! the per-thread reader deciding as the router does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use caxton_core::{
    AgentId, DeploymentId, ManualClock, SessionAffinity, SessionId, ShadowConfig, Split, Timestamp,
    Weight,
};
use caxton_router::{Router, session_point};
use proptest::prelude::*;

fn dep(name: &str) -> DeploymentId {
    DeploymentId::new(name).unwrap()
}

fn sessions(prefix: &str, count: usize) -> Vec<SessionId> {
    (0..count)
        .map(|n| SessionId::new(format!("{prefix}-{n}")).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Raising a canary's weight step by step keeps every session already on the canary,
    /// moves only sessions from the baseline, and moves exactly the sessions whose point
    /// falls in the canary's new share: the fewest that reach the new weight.
    #[test]
    fn stickiness_is_monotone_under_rising_weights(
        mut weights in proptest::collection::vec(0u32..=10_000, 1..6),
        candidate_sorts_first in any::<bool>(),
        agent_name in "[a-z]{1,8}",
        salt in any::<u32>(),
    ) {
        weights.sort_unstable();
        weights.push(10_000);
        let router = Router::new();
        let agent = AgentId::new(&agent_name).unwrap();
        let baseline = dep("m-stable");
        let candidate = dep(if candidate_sorts_first { "a-canary" } else { "z-canary" });
        router.register(&agent, &baseline).unwrap();
        router.register(&agent, &candidate).unwrap();
        router.promote(&agent, &baseline).unwrap();

        let sessions = sessions(&format!("s{salt}"), 2_000);
        let mut on_canary: HashSet<&SessionId> = HashSet::new();
        for w in weights {
            router.set_canary(&agent, &candidate, Weight::from_bps(w).unwrap()).unwrap();
            let now: HashSet<&SessionId> = sessions
                .iter()
                .filter(|s| router.route(&agent, Some(*s)).unwrap().deployment() == &candidate)
                .collect();
            prop_assert!(on_canary.is_subset(&now), "a session left the canary at {w} bps");
            // Each deployment owns a contiguous range in id order; the candidate's range is
            // at the start or at the end of [0, 10000).
            for s in &sessions {
                let point = u32::from(session_point(&agent, s));
                let expected = if candidate_sorts_first { point < w } else { point >= 10_000 - w };
                prop_assert_eq!(now.contains(s), expected, "point {} at {} bps", point, w);
            }
            on_canary = now;
        }
        prop_assert_eq!(on_canary.len(), sessions.len());
    }

}

proptest! {
    // 100,000 routes per case: a few cases cover the shapes of split.
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Over 100,000 sessions every deployment's observed share is within one percentage
    /// point of its weight, for splits over two to four deployments.
    #[test]
    fn observed_shares_are_within_one_percent_of_the_weights(
        cuts in proptest::collection::vec(0u16..=10_000, 1..4),
        salt in any::<u32>(),
    ) {
        let mut cuts = cuts;
        cuts.sort_unstable();
        let mut bounds = vec![0u16];
        bounds.extend(cuts);
        bounds.push(10_000);
        let weights: Vec<u16> = bounds.windows(2).map(|w| w[1] - w[0]).collect();

        let router = Router::new();
        let agent = AgentId::new("shares").unwrap();
        let ids: Vec<DeploymentId> = (0..weights.len()).map(|n| dep(&format!("d{n}"))).collect();
        for id in &ids {
            router.register(&agent, id).unwrap();
        }
        router.promote(&agent, &ids[0]).unwrap();
        let split = Split::new(
            ids.iter().cloned().zip(weights.iter().map(|w| Weight::from_bps(u32::from(*w)).unwrap())),
        ).unwrap();
        router.set_split(&agent, &split).unwrap();

        const SESSIONS: usize = 100_000;
        let mut counts: HashMap<DeploymentId, usize> = HashMap::new();
        let mut reader = router.reader();
        for n in 0..SESSIONS {
            let session = SessionId::new(format!("u{salt}-{n}")).unwrap();
            let decision = reader.route(&agent, Some(&session)).unwrap();
            *counts.entry(decision.deployment().clone()).or_default() += 1;
        }
        for (id, weight) in ids.iter().zip(&weights) {
            let observed = counts.get(id).copied().unwrap_or(0) as f64 / SESSIONS as f64;
            let expected = f64::from(*weight) / 10_000.0;
            prop_assert!(
                (observed - expected).abs() <= 0.01,
                "{} observed {:.4} for weight {:.4}", id, observed, expected
            );
        }
    }
}

/// One step of the pin model.
#[derive(Debug, Clone)]
enum Step {
    Promote(usize),
    Canary(usize, u32),
    Advance(u64),
    Route(usize),
    Release(usize),
    ForcedDrain(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (0..DEPLOYMENTS).prop_map(Step::Promote),
        1 => (0..DEPLOYMENTS, 0u32..=10_000).prop_map(|(d, w)| Step::Canary(d, w)),
        1 => (0u64..40_000).prop_map(Step::Advance),
        4 => (0..SESSIONS).prop_map(Step::Route),
        1 => (0..SESSIONS).prop_map(Step::Release),
        1 => (0..DEPLOYMENTS).prop_map(Step::ForcedDrain),
    ]
}

const DEPLOYMENTS: usize = 5;
const SESSIONS: usize = 6;
const IDLE_MS: u64 = 30_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A session routed to a version stays on it, whatever happens to the route, until the
    /// session is released, idles past the timeout, or a forced drain of that version closes.
    #[test]
    fn a_pinned_session_never_changes_version_before_end_idle_or_drain(
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
        let router = Router::builder().clock(Arc::new(clock.clone())).build();
        let agent = AgentId::new("chat").unwrap();
        let ids: Vec<DeploymentId> = (0..DEPLOYMENTS).map(|n| dep(&format!("v{n}"))).collect();
        for id in &ids {
            router.register(&agent, id).unwrap();
        }
        router.promote(&agent, &ids[0]).unwrap();
        router
            .set_session_affinity(
                &agent,
                Some(SessionAffinity { idle_timeout: Duration::from_millis(IDLE_MS) }),
            )
            .unwrap();
        let sessions = sessions("chat", SESSIONS);

        // The model: production, canary, drained versions and live pins.
        let mut production = 0usize;
        let mut canary: Option<(usize, u32)> = None;
        let mut drained: HashSet<usize> = HashSet::new();
        let mut pins: HashMap<usize, (usize, u64)> = HashMap::new();
        let mut now = 1_000_000u64;

        for step in steps {
            match step {
                Step::Promote(d) => {
                    if !drained.contains(&d) {
                        router.promote(&agent, &ids[d]).unwrap();
                        production = d;
                        canary = None;
                    }
                }
                Step::Canary(d, w) => {
                    if !drained.contains(&d) && d != production {
                        router.set_canary(&agent, &ids[d], Weight::from_bps(w).unwrap()).unwrap();
                        canary = Some((d, w));
                    }
                }
                Step::Advance(ms) => {
                    clock.advance(Duration::from_millis(ms));
                    now += ms;
                }
                Step::Release(s) => {
                    let had = router.release_session(&agent, &sessions[s]).unwrap();
                    let live = pins.remove(&s).is_some_and(|(_, seen)| now - seen <= IDLE_MS);
                    if live {
                        prop_assert!(had, "a live pin was not there to release");
                    }
                }
                Step::ForcedDrain(d) => {
                    let routed = d == production || canary.is_some_and(|(c, w)| c == d && w > 0);
                    if !routed && !drained.contains(&d) {
                        let report = router.close_drain(&ids[d]).unwrap();
                        prop_assert_eq!(report.still_in_flight, 0);
                        drained.insert(d);
                        pins.retain(|_, (pinned, _)| *pinned != d);
                    }
                }
                Step::Route(s) => {
                    let decision = router.route(&agent, Some(&sessions[s])).unwrap();
                    let got = ids.iter().position(|id| id == decision.deployment()).unwrap();
                    prop_assert!(!drained.contains(&got), "routed to drained v{}", got);
                    match pins.get(&s) {
                        Some((pinned, seen)) if now - seen <= IDLE_MS => {
                            prop_assert_eq!(got, *pinned, "session {} changed version", s);
                            prop_assert!(decision.is_pinned());
                        }
                        _ => {
                            let expected_new = production == got
                                || canary.is_some_and(|(c, w)| c == got && w > 0);
                            prop_assert!(expected_new, "a new session went to v{} off the route", got);
                        }
                    }
                    pins.insert(s, (got, now));
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A `RouterReader` keeps its own copy of each route, but it decides exactly as
    /// `Router::route` does, for splits narrow and wide (one to eight deployments), with or
    /// without a shadow, and after every change.
    #[test]
    fn a_reader_routes_exactly_like_the_router(
        splits in proptest::collection::vec(proptest::collection::vec(0u16..=10_000, 0..7), 1..5),
        shadow_rate in proptest::option::of(0u32..=10_000),
        salt in any::<u32>(),
    ) {
        let router = Router::new();
        let agent = AgentId::new("same").unwrap();
        let ids: Vec<DeploymentId> = (0..8).map(|n| dep(&format!("d{n}"))).collect();
        for id in &ids {
            router.register(&agent, id).unwrap();
        }
        router.promote(&agent, &ids[0]).unwrap();
        if let Some(rate) = shadow_rate {
            let shadow = ShadowConfig { deployment: ids[7].clone(), sample: Weight::from_bps(rate).unwrap() };
            router.set_shadow(&agent, Some(&shadow)).unwrap();
        }
        let sessions = sessions(&format!("r{salt}"), 300);
        let mut reader = router.reader();
        for cuts in splits {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut bounds = vec![0u16];
            bounds.extend(cuts);
            bounds.push(10_000);
            let split = Split::new(
                bounds
                    .windows(2)
                    .enumerate()
                    .map(|(n, w)| (ids[n].clone(), Weight::from_bps(u32::from(w[1] - w[0])).unwrap())),
            )
            .unwrap();
            router.set_split(&agent, &split).unwrap();
            for s in &sessions {
                let shared = router.route(&agent, Some(s)).unwrap();
                let own = reader.route(&agent, Some(s)).unwrap();
                prop_assert_eq!(shared.deployment(), own.deployment());
                prop_assert_eq!(shared.shadow(), own.shadow());
                prop_assert_eq!(shared.generation(), own.generation());
            }
        }
        for id in &ids {
            prop_assert_eq!(router.in_flight(id), 0);
        }
    }
}
