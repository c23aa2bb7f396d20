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
#[allow(
    dead_code,
    reason = "the DashMap baseline is built but not counted here"
)]
mod baselines;
#[path = "../benches/route/fixture.rs"]
#[allow(
    dead_code,
    reason = "the rollback and contended parts of the fixture are not counted here"
)]
mod fixture;

use std::hint::black_box;

use fixture::{AGENTS, Fixture, baselines};

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

    let fixture = Fixture::new(AGENTS);
    let router = fixture.caxton();
    let (rwlock, _, _) = baselines(&fixture);
    let mut reader = router.reader();
    for i in 0..routes {
        let (agent, session) = fixture.pair(i);
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
