//! Session pins under concurrent change: first-message pinning racing with rollbacks, with
//! affinity switched off and on and with retirement (one exact interleaving each, held in
//! place by a clock that stops the pinning thread), and a stress run of the rollback race;
//! and a pin map fed unique sessions, which must purge its idle pins on its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use caxton_core::{
    AgentId, Clock, DeploymentId, ManualClock, SessionAffinity, SessionId, Timestamp, Weight,
};
use caxton_router::Router;

const AFFINITY: SessionAffinity = SessionAffinity {
    idle_timeout: Duration::from_secs(3_600),
};

/// Threads pinning fresh sessions while the writer changes routes.
const PINNERS: usize = 2;
/// How long the writer changes routes; long enough for the old race to show many times over.
const RACE_TIME: Duration = Duration::from_millis(1_000);

fn agent(name: &str) -> AgentId {
    AgentId::new(name).unwrap()
}

fn dep(name: &str) -> DeploymentId {
    DeploymentId::new(name).unwrap()
}

fn session(name: &str) -> SessionId {
    SessionId::new(name).unwrap()
}

/// Where the gated clock stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Open,
    /// The next call from any thread but this one stops until released.
    Armed(ThreadId),
    Holding,
    Released,
}

/// A fixed clock that can stop one call of another thread in `now`. The router reads the
/// clock on the affinity path after loading the route and before pinning, so holding the
/// pinning thread there lets the test run a change exactly inside that window.
#[derive(Debug)]
struct GateClock {
    gate: Mutex<Gate>,
    turned: Condvar,
}

impl GateClock {
    fn new() -> Arc<Self> {
        Arc::new(GateClock {
            gate: Mutex::new(Gate::Open),
            turned: Condvar::new(),
        })
    }

    /// The next call of `now` from another thread will stop there.
    fn arm(&self) {
        *self.gate.lock().unwrap() = Gate::Armed(thread::current().id());
    }

    /// Waits until another thread is stopped in `now`.
    fn wait_held(&self) {
        let gate = self.gate.lock().unwrap();
        let (gate, waited) = self
            .turned
            .wait_timeout_while(gate, Duration::from_secs(10), |gate| *gate != Gate::Holding)
            .unwrap();
        assert!(
            !waited.timed_out(),
            "the routing thread never read the clock between loading the route and pinning \
             (gate {gate:?})"
        );
    }

    /// Lets the stopped thread go on.
    fn release(&self) {
        *self.gate.lock().unwrap() = Gate::Released;
        self.turned.notify_all();
    }
}

#[async_trait]
impl Clock for GateClock {
    fn now(&self) -> Timestamp {
        let mut gate = self.gate.lock().unwrap();
        if matches!(*gate, Gate::Armed(armer) if armer != thread::current().id()) {
            *gate = Gate::Holding;
            self.turned.notify_all();
            gate = self
                .turned
                .wait_while(gate, |gate| *gate != Gate::Released)
                .unwrap();
            *gate = Gate::Open;
        }
        Timestamp::from_millis(1_000_000)
    }

    async fn sleep_until(&self, _deadline: Timestamp) {}
}

/// A router on a gated clock with agent `a` on production `v1`, session affinity on, and
/// every new session sent to the canary `c`.
fn gated_canary() -> (Router, Arc<GateClock>, AgentId) {
    let clock = GateClock::new();
    let router = Router::builder()
        .clock(Arc::clone(&clock) as Arc<dyn Clock>)
        .build();
    let a = agent("a");
    router.register(&a, &dep("v1")).unwrap();
    router.register(&a, &dep("c")).unwrap();
    router.promote(&a, &dep("v1")).unwrap();
    router.set_session_affinity(&a, Some(AFFINITY)).unwrap();
    router
        .set_canary(&a, &dep("c"), Weight::from_percent(100.0).unwrap())
        .unwrap();
    (router, clock, a)
}

/// Routes the first message of `session` on another thread and runs `change` while that
/// thread stands between loading the route (which sends the session to `c`) and pinning.
fn first_message_during(
    router: &Router,
    clock: &GateClock,
    a: &AgentId,
    session: &SessionId,
    change: impl FnOnce(),
) {
    clock.arm();
    thread::scope(|scope| {
        let first = scope.spawn(|| drop(router.route(a, Some(session)).unwrap()));
        clock.wait_held();
        change();
        clock.release();
        first.join().unwrap();
    });
}

#[test]
fn a_pin_made_while_a_rollback_runs_does_not_survive_it() {
    let (router, clock, a) = gated_canary();
    let s = session("first-during-rollback");
    first_message_during(&router, &clock, &a, &s, || router.rollback(&a).unwrap());
    assert!(!router.agent_route(&a).unwrap().sends_to(&dep("c")));
    assert_eq!(
        router.route(&a, Some(&s)).unwrap().deployment(),
        &dep("v1"),
        "the session follows a pin to the rolled-back canary"
    );
    assert_eq!(router.drain_status(&dep("c")).unwrap().pinned_sessions, 0);
}

#[test]
fn a_pin_made_while_affinity_is_turned_off_does_not_survive_it() {
    let (router, clock, a) = gated_canary();
    let s = session("first-during-affinity-off");
    first_message_during(&router, &clock, &a, &s, || {
        router.set_session_affinity(&a, None).unwrap();
    });
    // On again at once: any later change without affinity would drop the pins anyway.
    router.set_session_affinity(&a, Some(AFFINITY)).unwrap();
    // Promotion keeps pinned sessions where they are, so only a pin would keep `s` on `c`,
    // and no message of `s` was routed since affinity came back on.
    router.promote(&a, &dep("v1")).unwrap();
    assert_eq!(
        router.route(&a, Some(&s)).unwrap().deployment(),
        &dep("v1"),
        "the session follows a pin made before affinity was turned off"
    );
    assert_eq!(router.drain_status(&dep("c")).unwrap().pinned_sessions, 0);
}

#[test]
fn a_pin_made_while_its_deployment_is_retired_does_not_survive_it() {
    let (router, clock, a) = gated_canary();
    let s = session("first-during-retire");
    first_message_during(&router, &clock, &a, &s, || {
        router.promote(&a, &dep("v1")).unwrap();
        router.retire(&dep("c")).unwrap();
    });
    assert_eq!(router.route(&a, Some(&s)).unwrap().deployment(), &dep("v1"));
}

/// Pins fresh sessions (one message each) until `stop`; returns every session it routed.
fn pin_fresh_sessions(
    router: &Router,
    agent: &AgentId,
    thread: usize,
    stop: &AtomicBool,
) -> Vec<SessionId> {
    let mut sessions = Vec::new();
    let mut reader = router.reader();
    while !stop.load(Ordering::Relaxed) {
        let session = SessionId::new(format!("t{thread}-{}", sessions.len())).unwrap();
        // Half through the router, half through a reader: both take the same pinning path.
        let to_v1 = if sessions.len() % 2 == 0 {
            router.route(agent, Some(&session)).unwrap().deployment() == &dep("v1")
        } else {
            reader.route(agent, Some(&session)).unwrap().deployment() == &dep("v1")
        };
        // Sessions on v1 end at once, so the pin map holds little more than the pins each
        // change has to go through, and rounds stay short.
        if to_v1 {
            router.release_session(agent, &session).unwrap();
        }
        sessions.push(session);
    }
    sessions
}

/// Runs `change` (one round of route changes that ends on a route sending everything to
/// `v1`, with affinity on) over and over while `PINNERS` threads pin fresh sessions, then,
/// with every thread stopped, routes each of those sessions again and returns the ones that
/// did not go to `v1`: those followed a pin that the route in force no longer allows.
fn stale_pins_after(change: impl Fn(&Router, &AgentId, usize) + Sync) -> (usize, Vec<String>) {
    let router = Router::new();
    let a = agent("a");
    router.register(&a, &dep("v1")).unwrap();
    router.promote(&a, &dep("v1")).unwrap();
    router.set_session_affinity(&a, Some(AFFINITY)).unwrap();
    let stop = AtomicBool::new(false);
    let (rounds, sessions) = thread::scope(|scope| {
        let pinners: Vec<_> = (0..PINNERS)
            .map(|t| {
                let (router, a, stop) = (&router, &a, &stop);
                scope.spawn(move || pin_fresh_sessions(router, a, t, stop))
            })
            .collect();
        let started = Instant::now();
        let mut rounds = 0;
        while started.elapsed() < RACE_TIME {
            change(&router, &a, rounds);
            rounds += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let sessions: Vec<SessionId> = pinners
            .into_iter()
            .flat_map(|pinner| pinner.join().unwrap())
            .collect();
        (rounds, sessions)
    });
    let route = router.agent_route(&a).unwrap();
    assert!(route.sends_to(&dep("v1")) && route.split().is_none());
    let stale = sessions
        .iter()
        .filter_map(|session| {
            let decision = router.route(&a, Some(session)).unwrap();
            (decision.deployment() != &dep("v1"))
                .then(|| format!("{session} -> {}", decision.deployment()))
        })
        .collect();
    (rounds, stale)
}

#[test]
fn a_rollback_leaves_no_pin_to_the_rolled_back_candidate() {
    // The stress form of the interleaving above. Each round canaries a fresh deployment
    // and rolls it back. A candidate is never routed
    // to again, so a pin to it that survived its rollback stays visible until the end.
    let (rounds, stale) = stale_pins_after(|router, a, round| {
        let candidate = dep(&format!("c{round}"));
        router.register(a, &candidate).unwrap();
        router
            .set_canary(a, &candidate, Weight::from_percent(50.0).unwrap())
            .unwrap();
        thread::yield_now();
        router.rollback(a).unwrap();
    });
    assert!(rounds > 50, "only {rounds} rounds ran");
    assert!(
        stale.is_empty(),
        "{} sessions kept a pin to a rolled-back candidate over {rounds} rollbacks, e.g. {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
}

#[test]
fn idle_pins_of_unique_sessions_are_purged_without_a_host_asking() {
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let router = Router::builder().clock(Arc::new(clock.clone())).build();
    let a = agent("a");
    router.register(&a, &dep("v1")).unwrap();
    router.promote(&a, &dep("v1")).unwrap();
    let idle_timeout = Duration::from_secs(1);
    router
        .set_session_affinity(&a, Some(SessionAffinity { idle_timeout }))
        .unwrap();
    // 100,000 sessions of one message each, 100 per idle timeout: at most ~100 are live at
    // any time, and nobody calls `purge_idle_pins` while they arrive.
    let sessions = 100_000;
    let mut reader = router.reader();
    for n in 0..sessions {
        let session = SessionId::new(format!("s{n}")).unwrap();
        if n % 2 == 0 {
            drop(router.route(&a, Some(&session)).unwrap());
        } else {
            drop(reader.route(&a, Some(&session)).unwrap());
        }
        clock.advance(idle_timeout / 100);
    }
    // What is left to purge now is what the router kept of those sessions on its own: it
    // purges after at most 4,096 new pins here, so fewer than 4,096 + 100 pins remain.
    let left = router.purge_idle_pins();
    assert!(
        left <= 5_000,
        "{left} idle pins of {sessions} one-message sessions were still held"
    );
}
