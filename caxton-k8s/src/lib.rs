//! Kubernetes and Argo Rollouts manifests for a fleet of Caxton agents, from a fleet spec.
//!
//! (Being written.)
