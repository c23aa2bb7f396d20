//! Rollout leases: which host drives a rollout when several hosts share one registry.
//!
//! A rollout is driven by exactly one host. Before it starts driving (a new rollout, or
//! one it resumes from the journal) a host takes the rollout's lease; while it drives it
//! renews the lease well inside its time-to-live; when the rollout ends it releases it.
//! A host that dies stops renewing: once the lease has expired, another host takes it
//! and resumes the rollout from the journal.
//!
//! Expiry is decided by the lease store's clock (a database's `now()`, for one), never by
//! the hosts' clocks, so hosts whose clocks disagree still agree on who holds a lease.
//!
//! ```
//! use std::time::Duration;
//! use caxton_core::{AgentId, DeploymentId};
//! use caxton_core::lease::{Acquired, LeaseHolder, MemoryLeases, RolloutLeases};
//!
//! # futures::executor::block_on(async {
//! let leases = MemoryLeases::new();
//! let agent = AgentId::new("processor").unwrap();
//! let candidate = DeploymentId::new("processor-v2").unwrap();
//! let (a, b) = (LeaseHolder::new("host-a").unwrap(), LeaseHolder::new("host-b").unwrap());
//! let ttl = Duration::from_secs(10);
//!
//! assert!(matches!(leases.acquire(&agent, &candidate, &a, ttl).await?, Acquired::Taken(_)));
//! // Host b must wait until host a stops renewing.
//! match leases.acquire(&agent, &candidate, &b, ttl).await? {
//!     Acquired::HeldBy(lease) => assert_eq!(lease.holder, a),
//!     Acquired::Taken(_) => unreachable!(),
//! }
//! assert!(leases.renew(&agent, &candidate, &a, ttl).await?.is_some());
//! leases.release(&agent, &candidate, &a).await?;
//! assert!(leases.lease(&agent).await?.is_none());
//! # Ok::<(), caxton_core::lease::LeaseError>(())
//! # }).unwrap();
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::{Clock, SystemClock};
use crate::id::{AgentId, DeploymentId};
use crate::store::BackendError;
use crate::time::Timestamp;

/// The longest name of a lease holder, in bytes.
pub const MAX_HOLDER_LEN: usize = 200;

/// Who holds a lease: one host process, named uniquely among the hosts of a registry
/// (e.g. a pod name with a random suffix, see [`LeaseHolder::generate`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LeaseHolder(String);

/// Why a name cannot name a lease holder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseHolderError {
    /// The name is empty.
    #[error("a lease holder's name must not be empty")]
    Empty,
    /// The name is longer than [`MAX_HOLDER_LEN`] bytes.
    #[error("a lease holder's name is {len} bytes long; at most {MAX_HOLDER_LEN} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a control character or white space.
    #[error("a lease holder's name must be printable without spaces: {name:?}")]
    NotPrintable {
        /// The name.
        name: String,
    },
}

impl LeaseHolder {
    /// A holder named `name`: printable, without white space, at most
    /// [`MAX_HOLDER_LEN`] bytes.
    pub fn new(name: impl Into<String>) -> Result<Self, LeaseHolderError> {
        let name = name.into();
        if name.is_empty() {
            return Err(LeaseHolderError::Empty);
        }
        if name.len() > MAX_HOLDER_LEN {
            return Err(LeaseHolderError::TooLong { len: name.len() });
        }
        if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(LeaseHolderError::NotPrintable { name });
        }
        Ok(LeaseHolder(name))
    }

    /// A name for this process: the machine's host name (`HOSTNAME`, a pod's name under
    /// Kubernetes, else `/etc/hostname`), the process id and a random suffix, so that a
    /// restarted process never passes for the one before it.
    pub fn generate() -> Self {
        let machine = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|name| {
                name.trim()
                    .chars()
                    .filter(|c| !c.is_control() && !c.is_whitespace())
                    .take(120)
                    .collect::<String>()
            })
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "host".to_owned());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let local = 0u8;
        let mut hasher = Sha256::new();
        hasher.update(nanos.to_le_bytes());
        hasher.update(std::process::id().to_le_bytes());
        hasher.update((std::ptr::addr_of!(local) as usize).to_le_bytes());
        let suffix = hex::encode(&hasher.finalize()[..4]);
        LeaseHolder(format!("{machine}-{}-{suffix}", std::process::id()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for LeaseHolder {
    type Error = LeaseHolderError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        LeaseHolder::new(name)
    }
}

impl From<LeaseHolder> for String {
    fn from(holder: LeaseHolder) -> String {
        holder.0
    }
}

/// A rollout's lease as the lease store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Lease {
    /// The agent whose rollout it is.
    pub agent: AgentId,
    /// The rollout's candidate.
    pub deployment: DeploymentId,
    /// Who holds it.
    pub holder: LeaseHolder,
    /// How long it had left when it was read, on the lease store's clock; zero once it
    /// has expired.
    #[serde(with = "crate::time::duration_millis")]
    pub remaining: Duration,
}

impl Lease {
    /// A lease of `agent`'s rollout of `deployment` held by `holder`, with `remaining`
    /// time left. For implementations of [`RolloutLeases`].
    pub fn new(
        agent: AgentId,
        deployment: DeploymentId,
        holder: LeaseHolder,
        remaining: Duration,
    ) -> Self {
        Lease {
            agent,
            deployment,
            holder,
            remaining,
        }
    }

    /// Whether it has expired: anyone may take it.
    pub fn is_expired(&self) -> bool {
        self.remaining.is_zero()
    }
}

/// What [`RolloutLeases::acquire`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is the caller's, until its time-to-live passes without a renewal.
    Taken(Lease),
    /// Another holder has it and it has not expired.
    HeldBy(Lease),
}

/// Why a lease could not be taken, renewed, released or read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// A time-to-live of zero, or too long to represent.
    #[error("a lease's time-to-live must be between 1 ms and one day, not {ttl:?}")]
    InvalidTtl {
        /// The time-to-live asked for.
        ttl: Duration,
    },
    /// The lease store failed.
    #[error("rollout leases failed: {0}")]
    Backend(#[from] BackendError),
}

/// The longest time-to-live a lease may have.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3_600);

/// Checks a time-to-live: for implementations of [`RolloutLeases`].
pub fn check_ttl(ttl: Duration) -> Result<Duration, LeaseError> {
    if ttl < Duration::from_millis(1) || ttl > MAX_TTL {
        return Err(LeaseError::InvalidTtl { ttl });
    }
    Ok(ttl)
}

/// Where hosts sharing a registry record who drives each agent's rollout. An agent has at
/// most one lease at a time (it has at most one open rollout).
#[async_trait]
pub trait RolloutLeases: Send + Sync {
    /// Takes the lease of `agent`'s rollout of `deployment` for `holder`, for `ttl`: when
    /// the agent has no lease, when its lease has expired, or when `holder` holds it
    /// already (then it is renewed, whichever deployment it named). Otherwise returns the
    /// lease another holder has.
    async fn acquire(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<Acquired, LeaseError>;

    /// Extends `holder`'s lease of `agent`'s rollout of `deployment` to `ttl` from now.
    /// `None` when it is no longer `holder`'s (another took it after it expired, or it
    /// was released): the caller must stop driving the rollout.
    async fn renew(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError>;

    /// Gives the lease up, when `holder` holds it for `deployment`; otherwise does nothing.
    async fn release(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        holder: &LeaseHolder,
    ) -> Result<(), LeaseError>;

    /// The agent's lease, expired or not, if it has one.
    async fn lease(&self, agent: &AgentId) -> Result<Option<Lease>, LeaseError>;

    /// Leaves `command` (an operator's command, as JSON) for whichever host drives
    /// `agent`'s rollout of `deployment`: a host that does not drive it relays commands
    /// this way. Kept until taken.
    async fn relay(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        command: &str,
    ) -> Result<(), LeaseError>;

    /// Takes the commands relayed for `agent`'s rollout of `deployment`, oldest first,
    /// when `holder` holds its lease (none otherwise: they wait for the holder).
    async fn take_relayed(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        holder: &LeaseHolder,
    ) -> Result<Vec<String>, LeaseError>;
}

/// [`RolloutLeases`] in memory, on a [`Clock`]: for one process, and for tests of hosts
/// sharing in-memory joints.
#[derive(Debug, Clone)]
pub struct MemoryLeases {
    clock: Arc<dyn Clock>,
    leases: Arc<Mutex<BTreeMap<AgentId, Held>>>,
    relayed: Arc<Mutex<Vec<(AgentId, DeploymentId, String)>>>,
}

#[derive(Debug, Clone)]
struct Held {
    deployment: DeploymentId,
    holder: LeaseHolder,
    expires_at: Timestamp,
}

impl Default for MemoryLeases {
    fn default() -> Self {
        MemoryLeases::with_clock(Arc::new(SystemClock))
    }
}

impl MemoryLeases {
    /// Leases on the system clock.
    pub fn new() -> Self {
        MemoryLeases::default()
    }

    /// Leases that expire on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryLeases {
            clock,
            leases: Arc::default(),
            relayed: Arc::default(),
        }
    }

    fn lease_of(&self, agent: &AgentId, held: &Held) -> Lease {
        Lease::new(
            agent.clone(),
            held.deployment.clone(),
            held.holder.clone(),
            held.expires_at.saturating_since(self.clock.now()),
        )
    }
}

#[async_trait]
impl RolloutLeases for MemoryLeases {
    async fn acquire(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<Acquired, LeaseError> {
        let ttl = check_ttl(ttl)?;
        let now = self.clock.now();
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = leases.get(agent)
            && &held.holder != holder
            && held.expires_at > now
        {
            return Ok(Acquired::HeldBy(self.lease_of(agent, held)));
        }
        let held = Held {
            deployment: deployment.clone(),
            holder: holder.clone(),
            expires_at: now.saturating_add(ttl),
        };
        let lease = self.lease_of(agent, &held);
        leases.insert(agent.clone(), held);
        Ok(Acquired::Taken(lease))
    }

    async fn renew(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError> {
        let ttl = check_ttl(ttl)?;
        let now = self.clock.now();
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        match leases.get_mut(agent) {
            Some(held) if &held.holder == holder && &held.deployment == deployment => {
                held.expires_at = now.saturating_add(ttl);
                let held = held.clone();
                Ok(Some(self.lease_of(agent, &held)))
            }
            _ => Ok(None),
        }
    }

    async fn release(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        holder: &LeaseHolder,
    ) -> Result<(), LeaseError> {
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        if leases
            .get(agent)
            .is_some_and(|held| &held.holder == holder && &held.deployment == deployment)
        {
            leases.remove(agent);
        }
        Ok(())
    }

    async fn lease(&self, agent: &AgentId) -> Result<Option<Lease>, LeaseError> {
        let leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(leases.get(agent).map(|held| self.lease_of(agent, held)))
    }

    async fn relay(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        command: &str,
    ) -> Result<(), LeaseError> {
        self.relayed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((agent.clone(), deployment.clone(), command.to_owned()));
        Ok(())
    }

    async fn take_relayed(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        holder: &LeaseHolder,
    ) -> Result<Vec<String>, LeaseError> {
        let holds = self
            .leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(agent)
            .is_some_and(|held| &held.holder == holder && &held.deployment == deployment);
        if !holds {
            return Ok(Vec::new());
        }
        let mut relayed = self.relayed.lock().unwrap_or_else(PoisonError::into_inner);
        let (taken, kept) = relayed
            .drain(..)
            .partition(|(a, d, _)| a == agent && d == deployment);
        *relayed = kept;
        Ok(taken.into_iter().map(|(_, _, command)| command).collect())
    }
}

/// The conformance suite every [`RolloutLeases`] passes unchanged. It waits for real
/// leases to expire (time-to-live 400 ms), so the leases must expire on real time.
#[cfg(any(test, feature = "test-util"))]
pub mod conformance {
    use super::*;

    /// The time-to-live the suite's leases get.
    pub const TTL: Duration = Duration::from_millis(400);

    fn ids(agent: &str, deployment: &str) -> (AgentId, DeploymentId) {
        (
            AgentId::new(agent).unwrap(),
            DeploymentId::new(deployment).unwrap(),
        )
    }

    /// Runs every check on `leases`, which must hold no lease of agents `a` and `b`.
    /// Panics with the failed check.
    pub async fn run(leases: &dyn RolloutLeases) {
        let (agent, v2) = ids("a", "a-v2");
        let (_, v3) = ids("a", "a-v3");
        let (other, b2) = ids("b", "b-v2");
        let host_a = LeaseHolder::new("host-a").unwrap();
        let host_b = LeaseHolder::new("host-b").unwrap();

        // A free lease is taken, for at most its time-to-live.
        let Acquired::Taken(lease) = leases.acquire(&agent, &v2, &host_a, TTL).await.unwrap()
        else {
            panic!("a free lease is taken");
        };
        assert_eq!((&lease.holder, &lease.deployment), (&host_a, &v2));
        assert!(!lease.is_expired() && lease.remaining <= TTL);
        // Another holder is told who has it.
        match leases.acquire(&agent, &v2, &host_b, TTL).await.unwrap() {
            Acquired::HeldBy(lease) => assert_eq!(lease.holder, host_a),
            Acquired::Taken(_) => panic!("a live lease is not taken by another holder"),
        }
        // The holder takes it again (a renewal).
        assert!(matches!(
            leases.acquire(&agent, &v2, &host_a, TTL).await.unwrap(),
            Acquired::Taken(_)
        ));
        // Only the holder renews, and only for the deployment it holds the lease for.
        assert!(
            leases
                .renew(&agent, &v2, &host_a, TTL)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            leases
                .renew(&agent, &v2, &host_b, TTL)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            leases
                .renew(&agent, &v3, &host_a, TTL)
                .await
                .unwrap()
                .is_none()
        );
        // Another agent's lease is independent.
        assert!(matches!(
            leases.acquire(&other, &b2, &host_b, TTL).await.unwrap(),
            Acquired::Taken(_)
        ));
        // Another holder's release changes nothing.
        leases.release(&agent, &v2, &host_b).await.unwrap();
        let held = leases.lease(&agent).await.unwrap().expect("a's lease");
        assert_eq!(held.holder, host_a);
        // Bad time-to-live values are refused.
        assert!(matches!(
            leases.acquire(&agent, &v2, &host_a, Duration::ZERO).await,
            Err(LeaseError::InvalidTtl { .. })
        ));
        assert!(matches!(
            leases
                .renew(&agent, &v2, &host_a, MAX_TTL + Duration::from_secs(1))
                .await,
            Err(LeaseError::InvalidTtl { .. })
        ));

        // Once it has expired, another holder takes it; the old holder cannot renew.
        futures_timer::Delay::new(TTL + Duration::from_millis(200)).await;
        let expired = leases
            .lease(&agent)
            .await
            .unwrap()
            .expect("an expired lease is kept");
        assert!(expired.is_expired(), "{expired:?}");
        let Acquired::Taken(taken) = leases.acquire(&agent, &v2, &host_b, TTL).await.unwrap()
        else {
            panic!("an expired lease is taken by another holder");
        };
        assert_eq!(taken.holder, host_b);
        assert!(
            leases
                .renew(&agent, &v2, &host_a, TTL)
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            leases.acquire(&agent, &v2, &host_a, TTL).await.unwrap(),
            Acquired::HeldBy(_)
        ));

        // Commands relayed for a rollout go to its holder only, oldest first, once.
        leases
            .relay(&agent, &v2, r#"{"command":"pause"}"#)
            .await
            .unwrap();
        leases
            .relay(&agent, &v2, r#"{"command":"resume"}"#)
            .await
            .unwrap();
        leases
            .relay(&other, &b2, r#"{"command":"pause"}"#)
            .await
            .unwrap();
        assert!(
            leases
                .take_relayed(&agent, &v2, &host_a)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            leases.take_relayed(&agent, &v2, &host_b).await.unwrap(),
            [r#"{"command":"pause"}"#, r#"{"command":"resume"}"#]
        );
        assert!(
            leases
                .take_relayed(&agent, &v2, &host_b)
                .await
                .unwrap()
                .is_empty()
        );

        // Released, it is free: anyone takes it, for another rollout too.
        leases.release(&agent, &v2, &host_b).await.unwrap();
        assert!(leases.lease(&agent).await.unwrap().is_none());
        let Acquired::Taken(next) = leases.acquire(&agent, &v3, &host_a, TTL).await.unwrap() else {
            panic!("a released lease is free");
        };
        assert_eq!(next.deployment, v3);
        leases.release(&agent, &v3, &host_a).await.unwrap();
        assert_eq!(
            leases.take_relayed(&other, &b2, &host_b).await.unwrap(),
            [r#"{"command":"pause"}"#]
        );
        leases.release(&other, &b2, &host_b).await.unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_leases_pass_the_conformance_suite() {
        futures::executor::block_on(conformance::run(&MemoryLeases::new()));
    }

    #[test]
    fn holder_names_are_checked() {
        assert_eq!(LeaseHolder::new(""), Err(LeaseHolderError::Empty));
        assert!(matches!(
            LeaseHolder::new("a b"),
            Err(LeaseHolderError::NotPrintable { .. })
        ));
        assert!(matches!(
            LeaseHolder::new("x".repeat(MAX_HOLDER_LEN + 1)),
            Err(LeaseHolderError::TooLong { .. })
        ));
        assert!(serde_json::from_str::<LeaseHolder>("\"a\\nb\"").is_err());
    }

    #[test]
    fn generated_holders_are_valid_and_differ() {
        let a = LeaseHolder::generate();
        let b = LeaseHolder::generate();
        assert_eq!(LeaseHolder::new(a.as_str()).as_ref(), Ok(&a));
        assert_ne!(a, b);
    }
}
