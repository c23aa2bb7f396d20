//! Host applications and sample agents for Caxton: see `examples/` in this package.
