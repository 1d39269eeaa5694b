//! Lakeforge's benchmarks and the data they use.
//!
//! The library holds the data generators the suites use ([`datagen`]); the
//! `lakeforge-benchmarks` binary (`src/main.rs`) is the harness that runs the suites and writes
//! the reports. This package must never depend on `lakeforge-engine` or the CLI: the harness
//! drives the `lakeforge` binary, as it drives the peer tools.

pub mod datagen;
