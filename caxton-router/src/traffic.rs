//! The router as core's [`TrafficControl`]: each async method does its work at once.

use async_trait::async_trait;
use caxton_core::{
    AgentId, DeploymentId, DrainReport, DrainStatus, SessionAffinity, SessionId, ShadowConfig,
    Split, TrafficControl, TrafficError,
};

use crate::router::Router;

#[async_trait]
impl TrafficControl for Router {
    async fn register(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<(), TrafficError> {
        Ok(Router::register(self, agent, deployment)?)
    }

    async fn promote(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<(), TrafficError> {
        Ok(Router::promote(self, agent, deployment)?)
    }

    async fn set_split(&self, agent: &AgentId, split: &Split) -> Result<(), TrafficError> {
        Ok(Router::set_split(self, agent, split)?)
    }

    async fn set_shadow(
        &self,
        agent: &AgentId,
        shadow: Option<&ShadowConfig>,
    ) -> Result<(), TrafficError> {
        Ok(Router::set_shadow(self, agent, shadow)?)
    }

    async fn set_session_affinity(
        &self,
        agent: &AgentId,
        affinity: Option<SessionAffinity>,
    ) -> Result<(), TrafficError> {
        Ok(Router::set_session_affinity(self, agent, affinity)?)
    }

    async fn pin_session(
        &self,
        agent: &AgentId,
        session: &SessionId,
        deployment: &DeploymentId,
    ) -> Result<(), TrafficError> {
        Ok(Router::pin_session(self, agent, session, deployment)?)
    }

    async fn release_session(
        &self,
        agent: &AgentId,
        session: &SessionId,
    ) -> Result<bool, TrafficError> {
        Ok(Router::release_session(self, agent, session)?)
    }

    async fn rollback(&self, agent: &AgentId) -> Result<(), TrafficError> {
        Ok(Router::rollback(self, agent)?)
    }

    async fn start_drain(&self, deployment: &DeploymentId) -> Result<(), TrafficError> {
        Ok(Router::start_drain(self, deployment)?)
    }

    async fn drain_status(&self, deployment: &DeploymentId) -> Result<DrainStatus, TrafficError> {
        Ok(Router::drain_status(self, deployment)?)
    }

    async fn close_drain(&self, deployment: &DeploymentId) -> Result<DrainReport, TrafficError> {
        Ok(Router::close_drain(self, deployment)?)
    }

    async fn retire(&self, deployment: &DeploymentId) -> Result<(), TrafficError> {
        Ok(Router::retire(self, deployment)?)
    }

    fn in_flight(&self, deployment: &DeploymentId) -> u64 {
        Router::in_flight(self, deployment)
    }
}
