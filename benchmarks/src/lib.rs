//! Lakeforge's benchmarks and the deterministic sample datasets they (and the examples) use.
//!
//! The library holds the data generators ([`datagen`]); the `lakeforge-benchmarks` binary
//! (`src/main.rs`) is the harness that runs the suites and writes the reports. This package must
//! never depend on `lakeforge-engine` (the engine's `example` command uses these generators):
//! the harness drives the `lakeforge` binary, as it drives the peer tools.
//!
//! ```no_run
//! use lakeforge_benchmarks::datagen::churn::{generate_churn, ChurnConfig};
//! let dataset = generate_churn(std::path::Path::new("data"), &ChurnConfig::default()).unwrap();
//! println!("{}", dataset.root.display());
//! ```

pub mod datagen;
