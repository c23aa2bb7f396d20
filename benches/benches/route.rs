//! Routing benchmarks: `caxton-router` against the routers a user would write first.
//!
//! - `route/*`: one thread routes messages of 64 agents, each on a 95/5 canary split, with
//!   4,096 sessions in a scrambled order; each iteration routes one message, reads its
//!   deployment and drops its in-flight guard. `route/caxton` uses a per-thread
//!   `RouterReader` (the documented way to route in a loop); `route/caxton_shared` calls
//!   `Router::route` directly.
//! - `route_contended/*`: two threads route the same way while a writer changes a canary
//!   weight every 100 µs (rotating over the agents); the figure is the time per route on
//!   each routing thread (`iter_custom`, mean of the two threads).
//! - `rollback/caxton_10k_agents`: roll one agent back in a table of 10,000 agents while a
//!   thread routes; each iteration first sets a canary (not timed), then times the rollback.

#[path = "route/baselines.rs"]
mod baselines;
#[path = "route/fixture.rs"]
mod fixture;

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use caxton_core::{AgentId, SessionId, Weight};
use criterion::{Criterion, criterion_group, criterion_main};

use fixture::{AGENTS, Fixture, baseline_route, baselines};

const READERS: usize = 2;
const WRITE_EVERY: Duration = Duration::from_micros(100);
const ROLLBACK_AGENTS: usize = 10_000;

fn route(c: &mut Criterion) {
    let fixture = Fixture::new(AGENTS);
    let router = fixture.caxton();
    let (rwlock, dashmap, _) = baselines(&fixture);
    let mut group = c.benchmark_group("route");

    group.bench_function("caxton", |b| {
        let mut reader = router.reader();
        let mut i = 0usize;
        b.iter(|| {
            let (agent, session) = fixture.pair(i);
            i = i.wrapping_add(1);
            let decision = reader.route(agent, Some(session)).unwrap();
            black_box(decision.deployment());
        })
    });
    group.bench_function("caxton_shared", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let (agent, session) = fixture.pair(i);
            i = i.wrapping_add(1);
            let decision = router.route(agent, Some(session)).unwrap();
            black_box(decision.deployment());
        })
    });
    group.bench_function("rwlock_hashmap", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let (agent, session) = fixture.pair(i);
            i = i.wrapping_add(1);
            let guard = rwlock.route(agent, session).unwrap();
            black_box(guard.deployment());
        })
    });
    group.bench_function("dashmap", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let (agent, session) = fixture.pair(i);
            i = i.wrapping_add(1);
            let guard = dashmap.route(agent, session).unwrap();
            black_box(guard.deployment());
        })
    });
    group.finish();
}

/// Runs `READERS` routing threads for `iters` routes each while `change` runs every
/// `WRITE_EVERY` on another thread; returns the mean time of a routing thread.
fn contended<S>(
    b: &mut criterion::Bencher<'_>,
    fixture: &Fixture,
    new_reader: impl Fn() -> S + Sync,
    route_one: impl Fn(&mut S, &AgentId, &SessionId) + Sync,
    change: impl Fn(usize) + Sync,
) {
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        scope.spawn(|| {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                change(k);
                k += 1;
                thread::sleep(WRITE_EVERY);
            }
        });
        b.iter_custom(|iters| {
            let barrier = Barrier::new(READERS);
            let total: Duration = thread::scope(|readers| {
                let handles: Vec<_> = (0..READERS)
                    .map(|t| {
                        let (barrier, new_reader, route_one) = (&barrier, &new_reader, &route_one);
                        readers.spawn(move || {
                            let mut state = new_reader();
                            barrier.wait();
                            let start = Instant::now();
                            for i in 0..iters as usize {
                                let (agent, session) = fixture.pair(i * READERS + t);
                                route_one(&mut state, agent, session);
                            }
                            start.elapsed()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum()
            });
            total / READERS as u32
        });
        stop.store(true, Ordering::Relaxed);
    });
}

fn route_contended(c: &mut Criterion) {
    let fixture = Fixture::new(AGENTS);
    let router = fixture.caxton();
    let (rwlock, dashmap, deployments) = baselines(&fixture);
    let mut group = c.benchmark_group("route_contended");

    group.bench_function("caxton", |b| {
        contended(
            b,
            &fixture,
            || router.reader(),
            |reader, agent, session| {
                let decision = reader.route(agent, Some(session)).unwrap();
                black_box(decision.deployment());
            },
            |k| {
                let (agent, weight) = fixture.change(k);
                let (_, v2) = Fixture::versions(agent);
                router.set_canary(agent, &v2, weight).unwrap();
            },
        )
    });
    group.bench_function("rwlock_hashmap", |b| {
        contended(
            b,
            &fixture,
            || (),
            |_, agent, session| {
                let guard = rwlock.route(agent, session).unwrap();
                black_box(guard.deployment());
            },
            |k| {
                let (agent, weight) = fixture.change(k);
                let index = k % fixture.agents.len();
                rwlock.set_route(
                    agent.clone(),
                    baseline_route(agent, &deployments[index], weight),
                );
            },
        )
    });
    group.bench_function("dashmap", |b| {
        contended(
            b,
            &fixture,
            || (),
            |_, agent, session| {
                let guard = dashmap.route(agent, session).unwrap();
                black_box(guard.deployment());
            },
            |k| {
                let (agent, weight) = fixture.change(k);
                let index = k % fixture.agents.len();
                dashmap.set_route(
                    agent.clone(),
                    baseline_route(agent, &deployments[index], weight),
                );
            },
        )
    });
    group.finish();
}

fn rollback(c: &mut Criterion) {
    let fixture = Fixture::new(ROLLBACK_AGENTS);
    let router = fixture.caxton();
    let canary = Weight::from_bps(1_000).unwrap();
    let stop = AtomicBool::new(false);
    let mut group = c.benchmark_group("rollback");
    thread::scope(|scope| {
        scope.spawn(|| {
            let mut reader = router.reader();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let (agent, session) = fixture.pair(i);
                i = i.wrapping_add(1);
                let decision = reader.route(agent, Some(session)).unwrap();
                black_box(decision.deployment());
            }
        });
        group.bench_function("caxton_10k_agents", |b| {
            let mut k = 0usize;
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let agent = &fixture.agents[k % ROLLBACK_AGENTS];
                    k = k.wrapping_add(7_919);
                    let (_, v2) = Fixture::versions(agent);
                    router.set_canary(agent, &v2, canary).unwrap();
                    let start = Instant::now();
                    router.rollback(agent).unwrap();
                    timed += start.elapsed();
                }
                timed
            })
        });
        stop.store(true, Ordering::Relaxed);
    });
    group.finish();
}

criterion_group!(benches, route, route_contended, rollback);
criterion_main!(benches);
