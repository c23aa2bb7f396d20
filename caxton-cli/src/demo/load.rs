//! Synthetic traffic: customers sending orders through a [`Host`], counted so that no
//! message can go missing unnoticed, and timed so that the demo can tell when a deployment
//! answered relative to a traffic change.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use caxton_core::{AgentError, AgentId, DeploymentId, SessionId};
use caxton_host::{Delivery, Host, SendError};
use dashmap::DashMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// When one message was sent, and when its reply was back.
#[derive(Debug, Clone, Copy)]
struct Timing {
    sent: Instant,
    answered: Instant,
}

/// Per-deployment counts.
#[derive(Debug, Default)]
struct PerDeployment {
    replies: AtomicU64,
    app_errors: AtomicU64,
    failures: AtomicU64,
    /// Every reply's timing; a demo run sends a few thousand messages.
    timings: Mutex<Vec<Timing>>,
}

/// Counts of every message sent: each ends as a reply or as a counted failure.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    sent: AtomicU64,
    replied: AtomicU64,
    app_errors: AtomicU64,
    agent_failures: AtomicU64,
    route_failures: AtomicU64,
    per_deployment: DashMap<DeploymentId, PerDeployment>,
}

/// A copy of the counts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub(crate) struct TallySnapshot {
    /// Messages sent.
    pub(crate) sent: u64,
    /// Messages answered (application errors included).
    pub(crate) replied: u64,
    /// Replies of kind `error`.
    pub(crate) app_errors: u64,
    /// Messages the agent failed on (trap or limit).
    pub(crate) agent_failures: u64,
    /// Messages the router had nowhere to send.
    pub(crate) route_failures: u64,
    /// Replies per deployment.
    pub(crate) by_deployment: BTreeMap<String, DeploymentCounts>,
}

/// One deployment's counts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub(crate) struct DeploymentCounts {
    /// Replies.
    pub(crate) replies: u64,
    /// Replies of kind `error`.
    pub(crate) app_errors: u64,
    /// Messages it failed on.
    pub(crate) failures: u64,
}

impl TallySnapshot {
    /// Messages that got neither a reply nor a counted failure: always zero.
    pub(crate) fn lost(&self) -> u64 {
        self.sent
            .saturating_sub(self.replied + self.agent_failures + self.route_failures)
    }

    /// Adds `more` to these counts.
    pub(crate) fn merge(&mut self, more: &TallySnapshot) {
        self.sent += more.sent;
        self.replied += more.replied;
        self.app_errors += more.app_errors;
        self.agent_failures += more.agent_failures;
        self.route_failures += more.route_failures;
        for (deployment, counts) in &more.by_deployment {
            let entry = self.by_deployment.entry(deployment.clone()).or_default();
            entry.replies += counts.replies;
            entry.app_errors += counts.app_errors;
            entry.failures += counts.failures;
        }
    }
}

impl Tally {
    /// Counts the outcome of one message sent at `sent`.
    fn count(&self, sent: Instant, outcome: &Result<Delivery, SendError>) {
        let answered = Instant::now();
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
                entry
                    .timings
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Timing { sent, answered });
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
            // Routing refused it: unknown agent, no production.
            Err(_) => {
                self.route_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Replies from `deployment` to messages sent after `instant`. Such a message was
    /// routed after `instant` too.
    pub(crate) fn sent_after(&self, deployment: &DeploymentId, instant: Instant) -> u64 {
        self.count_timings(deployment, |t| t.sent > instant)
    }

    /// Replies from `deployment` that were back before `instant`. Such a message was
    /// routed before `instant` too.
    pub(crate) fn answered_before(&self, deployment: &DeploymentId, instant: Instant) -> u64 {
        self.count_timings(deployment, |t| t.answered < instant)
    }

    /// Replies from `deployment`.
    pub(crate) fn replies_from(&self, deployment: &DeploymentId) -> u64 {
        self.count_timings(deployment, |_| true)
    }

    fn count_timings(&self, deployment: &DeploymentId, keep: impl Fn(&Timing) -> bool) -> u64 {
        self.per_deployment.get(deployment).map_or(0, |d| {
            d.timings
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .filter(|t| keep(t))
                .count() as u64
        })
    }

    /// The counts so far.
    pub(crate) fn snapshot(&self) -> TallySnapshot {
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

fn failed_deployment(error: &AgentError) -> Option<DeploymentId> {
    use AgentError as E;
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
pub(crate) struct OrderMix {
    /// Orders per second, over all threads.
    pub(crate) rate: u32,
    /// Share of orders carrying a coupon code (`SAVE10`, `SAVE25`, `FLAT500`).
    pub(crate) coupon_share: f64,
    /// Customers active at once; each is a session, so canary assignment is sticky.
    pub(crate) customers: u32,
    /// Sending threads.
    pub(crate) threads: usize,
    /// Seed of the generator.
    pub(crate) seed: u64,
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
pub(crate) struct OrderTraffic {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    tally: Arc<Tally>,
}

/// One random order, as the JSON message `processor` takes.
fn order(rng: &mut impl Rng, number: u64, coupon_share: f64) -> Vec<u8> {
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
    /// Starts sending orders of `agent` through `host`, each thread through its own
    /// [`HostSender`](caxton_host::HostSender).
    pub(crate) fn start(host: &Host, agent: &AgentId, mix: OrderMix) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let threads = mix.threads.max(1);
        let period = Duration::from_secs_f64(threads as f64 / f64::from(mix.rate.max(1)));
        let handles = (0..threads)
            .map(|t| {
                let (host, agent, stop, tally) =
                    (host.clone(), agent.clone(), stop.clone(), tally.clone());
                std::thread::spawn(move || {
                    let mut sender = host.sender();
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
                        tally.sent.fetch_add(1, Ordering::Relaxed);
                        let sent = Instant::now();
                        tally.count(sent, &sender.send(&agent, Some(&session), &message));
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

    /// The counts so far, shared: still readable after [`stop`](Self::stop).
    pub(crate) fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }

    /// Stops sending, waits for the messages under way, and returns the final counts.
    pub(crate) fn stop(self) -> TallySnapshot {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.threads {
            let _ = handle.join();
        }
        self.tally.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_processor_messages_and_some_carry_a_coupon() {
        let mut rng = StdRng::seed_from_u64(1);
        let orders: Vec<serde_json::Value> = (0..200)
            .map(|n| serde_json::from_slice(&order(&mut rng, n, 0.5)).unwrap())
            .collect();
        assert!(
            orders
                .iter()
                .all(|o| o["kind"] == "order" && o["items"].is_array())
        );
        let coupons = orders.iter().filter(|o| o.get("coupon").is_some()).count();
        assert!((50..150).contains(&coupons), "{coupons} of 200");
    }

    #[test]
    fn a_snapshot_accounts_for_every_message() {
        let mut a = TallySnapshot {
            sent: 10,
            replied: 8,
            agent_failures: 1,
            route_failures: 1,
            ..TallySnapshot::default()
        };
        assert_eq!(a.lost(), 0);
        a.merge(&TallySnapshot {
            sent: 3,
            replied: 2,
            ..TallySnapshot::default()
        });
        assert_eq!((a.sent, a.lost()), (13, 1));
    }
}
