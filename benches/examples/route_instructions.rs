//! Routes a fixed number of messages one way, for counting instructions per route with
//! callgrind, which counts the same on a busy machine as on a quiet one (criterion's
//! nanoseconds do not, on a shared two-core machine).
//!
//! ```text
//! cargo build --release -p caxton-benches --example route_instructions
//! for n in 1000000 2000000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/route_instructions reader $n
//! done
//! ```
//!
//! The difference of the two totals divided by 1,000,000 is the cost of one iteration;
//! `none` gives the loop's own share. Kinds: `none`, `reader` (`RouterReader::route`, as
//! `route/caxton`), `shared` (`Router::route`), `rwlock` (the `RwLock<HashMap>` baseline of
//! `route/rwlock_hashmap`). Same fixture as `benches/route.rs`: 64 agents on a 95/5
//! canary, 4,096 sessions in a scrambled order.

#[path = "../benches/route/baselines.rs"]
#[allow(dead_code, reason = "the DashMap baseline is not counted here")]
mod baselines;

use std::hint::black_box;

use caxton_core::{AgentId, DeploymentId, SessionId, Split, Weight};
use caxton_router::Router;

use baselines::{Deployment, Route, RwLockRouter};

const AGENTS: usize = 64;
const SESSIONS: usize = 4_096;
const PAIRS: usize = 8_192;

#[derive(Clone, Copy)]
enum Kind {
    None,
    Reader,
    Shared,
    RwLock,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let kind = match args.next().as_deref() {
        Some("none") => Kind::None,
        Some("reader") => Kind::Reader,
        Some("shared") => Kind::Shared,
        Some("rwlock") => Kind::RwLock,
        other => {
            return Err(format!("unknown kind {other:?}: none, reader, shared or rwlock").into());
        }
    };
    let routes: usize = args.next().as_deref().unwrap_or("1000000").parse()?;

    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as usize
    };
    let agents: Vec<AgentId> = (0..AGENTS)
        .map(|n| AgentId::new(format!("agent-{n:05}")))
        .collect::<Result<_, _>>()?;
    let sessions: Vec<SessionId> = (0..SESSIONS)
        .map(|n| SessionId::new(format!("session-{n:06}")))
        .collect::<Result<_, _>>()?;
    let pairs: Vec<(usize, usize)> = (0..PAIRS)
        .map(|_| (next() % AGENTS, next() % SESSIONS))
        .collect();

    let router = Router::new();
    let rwlock = RwLockRouter::default();
    let canary = Weight::from_bps(500)?;
    for agent in &agents {
        let v1 = DeploymentId::new(format!("{agent}-v1"))?;
        let v2 = DeploymentId::new(format!("{agent}-v2"))?;
        router.register(agent, &v1)?;
        router.register(agent, &v2)?;
        router.promote(agent, &v1)?;
        router.set_canary(agent, &v2, canary)?;
        let deployments = [Deployment::new(v1.clone()), Deployment::new(v2.clone())];
        let split = Split::canary(v1, v2, canary)?;
        rwlock.set_route(agent.clone(), Route::new(agent, &split, &deployments));
    }

    let mut reader = router.reader();
    for i in 0..routes {
        let (a, s) = pairs[i & (PAIRS - 1)];
        let (agent, session) = (&agents[a], &sessions[s]);
        match kind {
            Kind::None => {
                black_box((agent, session));
            }
            Kind::Reader => {
                let decision = reader.route(agent, Some(session)).expect("routed");
                black_box(decision.deployment());
            }
            Kind::Shared => {
                let decision = router.route(agent, Some(session)).expect("routed");
                black_box(decision.deployment());
            }
            Kind::RwLock => {
                let guard = rwlock.route(agent, session).expect("routed");
                black_box(guard.deployment());
            }
        }
    }
    Ok(())
}
