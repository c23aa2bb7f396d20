//! Routing under concurrent change: reader threads route messages while a writer thread
//! registers, splits, promotes, shadows, rolls back, drains and retires thousands of times.
//!
//! Checked: every routed message completes and every in-flight count returns to zero; no
//! message is routed to a deployment after its drain was closed; every route a reader
//! sees is one the writer published, whole (the generation a decision names is one the
//! writer published, and the deployment it chose is one that route sends new traffic to).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use caxton_core::{AgentId, DeploymentId, SessionAffinity, SessionId, ShadowConfig, Split, Weight};
use caxton_router::{DrainError, RouteDecision, Router};

/// Fewest writer operations; each publishes at most one route or closes at most one drain.
const MIN_WRITES: usize = 4_000;
/// The writer goes on at least this long, and the readers route until it stops.
const MIN_TIME: Duration = Duration::from_millis(2_500);
/// Most deployments the writer creates (a fresh one for every new version).
const MAX_DEPLOYMENTS: usize = 50_000;
const READERS: usize = 3;

/// What a published route looked like, by generation.
type Published = (Option<DeploymentId>, Option<Split>);

/// Whether a route published as `published` sends new traffic to `id`.
fn sends_to(published: &Published, id: &DeploymentId) -> bool {
    match published {
        (_, Some(split)) => split
            .entries()
            .iter()
            .any(|entry| &entry.deployment == id && entry.weight.bps() > 0),
        (production, None) => production.as_ref() == Some(id),
    }
}

struct Shared {
    router: Router,
    agents: [AgentId; 2],
    /// The epoch at which each deployment's drain was closed (0: not closed).
    closed_at: Vec<AtomicU64>,
    epoch: AtomicU64,
    /// Per agent: generation -> the route published with it.
    published: [Mutex<HashMap<u64, Published>>; 2],
    writer_done: AtomicBool,
}

fn deployment(n: usize) -> DeploymentId {
    DeploymentId::new(format!("g{n}")).unwrap()
}

fn number(id: &DeploymentId) -> usize {
    id.as_str()[1..].parse().unwrap()
}

impl Shared {
    fn record(&self, which: usize) {
        let route = self.router.agent_route(&self.agents[which]).unwrap();
        self.published[which].lock().unwrap().insert(
            route.generation(),
            (route.production().cloned(), route.split().cloned()),
        );
    }
}

/// A small deterministic generator, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The writer's own view of one agent.
struct AgentModel {
    /// Deployments registered and not drained, oldest first.
    live: Vec<usize>,
    /// Drained deployments not retired yet (their drain left something in flight).
    drained: Vec<usize>,
}

/// Returns (writes, drains closed, rollbacks).
fn writer(shared: &Shared) -> (usize, usize, usize) {
    let router = &shared.router;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut next_id = 0usize;
    let mut models = [
        AgentModel {
            live: Vec::new(),
            drained: Vec::new(),
        },
        AgentModel {
            live: Vec::new(),
            drained: Vec::new(),
        },
    ];
    for (which, model) in models.iter_mut().enumerate() {
        let agent = &shared.agents[which];
        for _ in 0..2 {
            router.register(agent, &deployment(next_id)).unwrap();
            model.live.push(next_id);
            next_id += 1;
        }
        router.promote(agent, &deployment(model.live[0])).unwrap();
        shared.record(which);
    }
    router
        .set_session_affinity(
            &shared.agents[1],
            Some(SessionAffinity {
                idle_timeout: Duration::from_secs(3_600),
            }),
        )
        .unwrap();
    shared.record(1);

    let (mut drains, mut rollbacks) = (0, 0);
    let started = Instant::now();
    let mut writes = 0;
    while writes < MIN_WRITES || started.elapsed() < MIN_TIME {
        writes += 1;
        let which = rng.below(2);
        let agent = &shared.agents[which];
        let model = &mut models[which];
        match rng.below(8) {
            // A new version, then a canary to it.
            0 | 1 if next_id < MAX_DEPLOYMENTS => {
                router.register(agent, &deployment(next_id)).unwrap();
                model.live.push(next_id);
                next_id += 1;
                shared.record(which);
                let weight = Weight::from_bps(rng.below(10_001) as u32).unwrap();
                router
                    .set_canary(agent, &deployment(next_id - 1), weight)
                    .unwrap();
            }
            // A three-way split over live versions.
            2 if model.live.len() >= 3 => {
                let picks: Vec<usize> = model.live[model.live.len() - 3..].to_vec();
                let a = rng.below(10_001) as u32;
                let b = rng.below(10_001 - a as usize) as u32;
                let split = Split::new([
                    (deployment(picks[0]), Weight::from_bps(a).unwrap()),
                    (deployment(picks[1]), Weight::from_bps(b).unwrap()),
                    (
                        deployment(picks[2]),
                        Weight::from_bps(10_000 - a - b).unwrap(),
                    ),
                ])
                .unwrap();
                router.set_split(agent, &split).unwrap();
            }
            3 => {
                let pick = model.live[rng.below(model.live.len())];
                router.promote(agent, &deployment(pick)).unwrap();
            }
            4 => {
                if router.rollback(agent).is_ok() {
                    rollbacks += 1;
                }
            }
            5 => {
                let pick = model.live[rng.below(model.live.len())];
                let shadow = ShadowConfig {
                    deployment: deployment(pick),
                    sample: Weight::from_bps(rng.below(10_001) as u32).unwrap(),
                };
                let shadow = (rng.below(3) > 0).then_some(shadow);
                router.set_shadow(agent, shadow.as_ref()).unwrap();
            }
            // Drain the oldest version the route no longer uses.
            _ => {
                let route = router.agent_route(agent).unwrap();
                let candidate = model.live.iter().copied().find(|n| {
                    let id = deployment(*n);
                    route.production() != Some(&id)
                        && !route.split().is_some_and(|s| s.contains(&id))
                        && route.shadow().is_none_or(|s| s.deployment != id)
                });
                if let Some(n) = candidate {
                    let id = deployment(n);
                    let report = if rng.below(8) == 0 {
                        router.drain(&id, Duration::from_millis(1))
                    } else {
                        router
                            .start_drain(&id)
                            .and_then(|()| router.close_drain(&id))
                    };
                    let report = match report {
                        Ok(report) => report,
                        Err(DrainError::StillRouted { .. }) => continue,
                        Err(other) => panic!("drain of {id} failed: {other}"),
                    };
                    let closed = shared.epoch.fetch_add(1, Ordering::SeqCst) + 1;
                    shared.closed_at[n].store(closed, Ordering::SeqCst);
                    drains += 1;
                    model.live.retain(|m| *m != n);
                    if report.still_in_flight == 0 {
                        // Nothing in flight and nothing can enter: safe to forget.
                        router.retire(&id).unwrap();
                    } else {
                        model.drained.push(n);
                    }
                }
            }
        }
        shared.record(which);
    }
    (writes, drains, rollbacks)
}

fn reader(shared: &Shared, seed: u64) -> u64 {
    let router = &shared.router;
    let mut handle = router.reader();
    let mut rng = XorShift(seed);
    let sessions: Vec<SessionId> = (0..512)
        .map(|n| SessionId::new(format!("r{seed}-s{n}")).unwrap())
        .collect();
    let mut held: VecDeque<RouteDecision<'_>> = VecDeque::new();
    let mut routed = 0u64;
    // (agent, generation, deployment) of unpinned decisions, checked once the writer stops.
    let mut seen: Vec<(usize, u64, DeploymentId)> = Vec::new();
    while !shared.writer_done.load(Ordering::Relaxed) {
        for _ in 0..256 {
            let which = rng.below(2);
            let agent = &shared.agents[which];
            let session = (rng.below(4) > 0).then(|| &sessions[rng.below(sessions.len())]);
            let epoch = shared.epoch.load(Ordering::SeqCst);
            let decision = if routed.is_multiple_of(2) {
                handle.route(agent, session)
            } else {
                router.route(agent, session)
            }
            .unwrap();
            for id in std::iter::once(decision.deployment()).chain(decision.shadow()) {
                let closed = shared.closed_at[number(id)].load(Ordering::SeqCst);
                assert!(
                    closed == 0 || closed > epoch,
                    "message routed to {id} after its drain closed (epoch {closed} <= {epoch})"
                );
            }
            if !decision.is_pinned() && routed.is_multiple_of(8) {
                seen.push((which, decision.generation(), decision.deployment().clone()));
            }
            routed += 1;
            held.push_back(decision);
            if held.len() > rng.below(6) {
                held.pop_front();
            }
        }
    }
    drop(held);
    for (which, generation, deployment) in seen {
        let published = shared.published[which].lock().unwrap();
        let Some(route) = published.get(&generation) else {
            panic!("agent {which} generation {generation} was seen but never published");
        };
        assert!(
            sends_to(route, &deployment),
            "agent {which} generation {generation} was published as {route:?}, but a \
             message routed by it went to {deployment}"
        );
    }
    routed
}

#[test]
fn concurrent_routing_under_thousands_of_changes_loses_nothing() {
    let shared = Shared {
        router: Router::new(),
        agents: [
            AgentId::new("plain").unwrap(),
            AgentId::new("pinned").unwrap(),
        ],
        closed_at: (0..MAX_DEPLOYMENTS).map(|_| AtomicU64::new(0)).collect(),
        epoch: AtomicU64::new(0),
        published: [Mutex::new(HashMap::new()), Mutex::new(HashMap::new())],
        writer_done: AtomicBool::new(false),
    };
    // The first routes need a production; the writer sets it up before readers start.
    let started = Instant::now();
    let (routed, (writes, drains, rollbacks)) = thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let result = writer(&shared);
            shared.writer_done.store(true, Ordering::Relaxed);
            result
        });
        while shared.published[1].lock().unwrap().len() < 2 {
            thread::yield_now();
        }
        let readers: Vec<_> = (0..READERS as u64)
            .map(|seed| {
                let shared = &shared;
                scope.spawn(move || reader(shared, seed + 1))
            })
            .collect();
        let routed: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        (routed, writer.join().unwrap())
    });
    for n in 0..MAX_DEPLOYMENTS {
        assert_eq!(
            shared.router.in_flight(&deployment(n)),
            0,
            "g{n} still counts messages in flight"
        );
    }
    println!(
        "routed {routed} messages on {READERS} threads in {:?} while {writes} writes ran \
         ({drains} drains closed, {rollbacks} rollbacks)",
        started.elapsed()
    );
    assert!(routed >= 100_000, "only {routed} messages were routed");
    assert!(
        drains >= 200 && rollbacks >= 200,
        "{drains} drains, {rollbacks} rollbacks"
    );
}
