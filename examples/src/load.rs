//! Synthetic traffic: customers sending orders through a [`Host`], counted so that no
//! message can go missing unnoticed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use caxton_core::{AgentId, DeploymentId, SessionId};
use dashmap::DashMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::host::{Host, SendError};

/// Per-deployment counts.
#[derive(Debug, Default)]
struct PerDeployment {
    replies: AtomicU64,
    app_errors: AtomicU64,
    failures: AtomicU64,
    last_routed: Mutex<Option<Instant>>,
}

/// Counts of every message sent: each ends as a reply or as a counted failure.
#[derive(Debug, Default)]
pub struct Tally {
    sent: AtomicU64,
    replied: AtomicU64,
    app_errors: AtomicU64,
    agent_failures: AtomicU64,
    route_failures: AtomicU64,
    per_deployment: DashMap<DeploymentId, PerDeployment>,
}

/// A copy of the counts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct TallySnapshot {
    /// Messages sent.
    pub sent: u64,
    /// Messages answered (application errors included).
    pub replied: u64,
    /// Replies of kind `error`.
    pub app_errors: u64,
    /// Messages the agent failed on (trap or limit).
    pub agent_failures: u64,
    /// Messages the router had nowhere to send.
    pub route_failures: u64,
    /// Replies per deployment.
    pub by_deployment: BTreeMap<String, DeploymentCounts>,
}

/// One deployment's counts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct DeploymentCounts {
    /// Replies.
    pub replies: u64,
    /// Replies of kind `error`.
    pub app_errors: u64,
    /// Messages it failed on.
    pub failures: u64,
}

impl TallySnapshot {
    /// Messages that got neither a reply nor a counted failure: always zero.
    pub fn lost(&self) -> u64 {
        self.sent
            .saturating_sub(self.replied + self.agent_failures + self.route_failures)
    }
}

impl Tally {
    /// Counts the outcome of one message.
    pub fn count(&self, outcome: &Result<crate::host::Delivery, SendError>) {
        match outcome {
            Ok(delivery) => {
                self.replied.fetch_add(1, Ordering::Relaxed);
                self.app_errors
                    .fetch_add(u64::from(delivery.app_error), Ordering::Relaxed);
                let entry = self
                    .per_deployment
                    .entry(delivery.deployment.clone())
                    .or_default();
                entry.replies.fetch_add(1, Ordering::Relaxed);
                entry
                    .app_errors
                    .fetch_add(u64::from(delivery.app_error), Ordering::Relaxed);
                let mut last = entry.last_routed.lock().unwrap_or_else(|p| p.into_inner());
                *last = Some(last.map_or(delivery.routed_at, |l| l.max(delivery.routed_at)));
            }
            Err(SendError::Route(_)) => {
                self.route_failures.fetch_add(1, Ordering::Relaxed);
            }
            Err(SendError::Agent(error)) => {
                self.agent_failures.fetch_add(1, Ordering::Relaxed);
                if let Some(deployment) = failed_deployment(error) {
                    self.per_deployment
                        .entry(deployment)
                        .or_default()
                        .failures
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Counts one message as sent; call before sending it.
    pub fn sending(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// When a message was last routed to `deployment`.
    pub fn last_routed_to(&self, deployment: &DeploymentId) -> Option<Instant> {
        self.per_deployment
            .get(deployment)
            .and_then(|d| *d.last_routed.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The counts so far.
    pub fn snapshot(&self) -> TallySnapshot {
        TallySnapshot {
            sent: self.sent.load(Ordering::Relaxed),
            replied: self.replied.load(Ordering::Relaxed),
            app_errors: self.app_errors.load(Ordering::Relaxed),
            agent_failures: self.agent_failures.load(Ordering::Relaxed),
            route_failures: self.route_failures.load(Ordering::Relaxed),
            by_deployment: self
                .per_deployment
                .iter()
                .map(|e| {
                    (
                        e.key().to_string(),
                        DeploymentCounts {
                            replies: e.replies.load(Ordering::Relaxed),
                            app_errors: e.app_errors.load(Ordering::Relaxed),
                            failures: e.failures.load(Ordering::Relaxed),
                        },
                    )
                })
                .collect(),
        }
    }
}

fn failed_deployment(error: &caxton_core::AgentError) -> Option<DeploymentId> {
    use caxton_core::AgentError as E;
    match error {
        E::NotLoaded { deployment }
        | E::NotReady { deployment }
        | E::Unloading { deployment }
        | E::OutOfFuel { deployment, .. }
        | E::DeadlineExceeded { deployment, .. }
        | E::MemoryLimit { deployment, .. }
        | E::StackOverflow { deployment }
        | E::Trap { deployment, .. }
        | E::ReplyOutOfBounds { deployment, .. }
        | E::MessageTooLarge { deployment, .. }
        | E::Host { deployment, .. } => Some(deployment.clone()),
        _ => None,
    }
}

/// How order traffic looks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderMix {
    /// Orders per second, over all threads.
    pub rate: u32,
    /// Share of orders carrying a coupon code (`SAVE10`, `SAVE25`, `FLAT500`).
    pub coupon_share: f64,
    /// Customers active at once; each is a session, so canary assignment is sticky.
    pub customers: u32,
    /// Sending threads.
    pub threads: usize,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for OrderMix {
    fn default() -> Self {
        OrderMix {
            rate: 400,
            coupon_share: 0.15,
            customers: 500,
            threads: 2,
            seed: 7,
        }
    }
}

/// Order traffic running on background threads until stopped.
#[derive(Debug)]
pub struct OrderTraffic {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    tally: Arc<Tally>,
}

/// One random order of `customer`, as the JSON message `processor` takes.
pub fn order(rng: &mut impl Rng, number: u64, coupon_share: f64) -> Vec<u8> {
    let lines = rng.random_range(1..=3);
    let items: Vec<serde_json::Value> = (0..lines)
        .map(|l| {
            serde_json::json!({
                "sku": format!("SKU-{}{}", (b'A' + rng.random_range(0..6u8)) as char, l),
                "qty": rng.random_range(1..=4),
                "price_cents": rng.random_range(199..=4_999),
            })
        })
        .collect();
    let mut order =
        serde_json::json!({"kind": "order", "id": format!("o-{number}"), "items": items});
    if rng.random_bool(coupon_share.clamp(0.0, 1.0)) {
        let coupon = ["SAVE10", "SAVE25", "FLAT500"][rng.random_range(0..3)];
        order["coupon"] = serde_json::Value::from(coupon);
    }
    serde_json::to_vec(&order).unwrap_or_default()
}

impl OrderTraffic {
    /// Starts sending orders of `agent` through `host`.
    pub fn start(host: Arc<Host>, agent: AgentId, mix: OrderMix) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let threads = mix.threads.max(1);
        let period = Duration::from_secs_f64(threads as f64 / f64::from(mix.rate.max(1)));
        let handles = (0..threads)
            .map(|t| {
                let (host, agent, stop, tally) =
                    (host.clone(), agent.clone(), stop.clone(), tally.clone());
                std::thread::spawn(move || {
                    let mut rng = StdRng::seed_from_u64(mix.seed.wrapping_add(t as u64));
                    let mut next = Instant::now();
                    let mut number = t as u64;
                    while !stop.load(Ordering::Relaxed) {
                        let customer = rng.random_range(0..mix.customers.max(1));
                        let Ok(session) = SessionId::new(format!("customer-{customer}")) else {
                            continue;
                        };
                        let message = order(&mut rng, number, mix.coupon_share);
                        number += threads as u64;
                        tally.sending();
                        tally.count(&host.send(&agent, Some(&session), &message));
                        next += period;
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        } else {
                            next = now;
                        }
                    }
                })
            })
            .collect();
        OrderTraffic {
            stop,
            threads: handles,
            tally,
        }
    }

    /// The counts so far.
    pub fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }

    /// Stops sending, waits for the messages under way, and returns the final counts.
    pub fn stop(self) -> TallySnapshot {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.threads {
            let _ = handle.join();
        }
        self.tally.snapshot()
    }
}
