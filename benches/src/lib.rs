//! Criterion benchmark suites for Caxton; each suite carries the baselines it is compared against.
