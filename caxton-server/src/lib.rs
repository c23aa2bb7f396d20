//! `caxton serve`: the HTTP API of Caxton over the deployment API.
//!
//! (Being written.)
