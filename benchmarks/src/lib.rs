//! Lakeforge's benchmarks and the deterministic sample datasets they (and the examples) use.
//!
//! Today this crate holds the data generators ([`datagen`]); the benchmark harness that runs
//! Lakeforge side by side with peer tools comes later. It must never depend on
//! `lakeforge-engine` (the engine's `example` command uses these generators): the harness drives
//! the `lakeforge` binary, as it drives the peers.
//!
//! ```no_run
//! use lakeforge_benchmarks::datagen::churn::{generate_churn, ChurnConfig};
//! let dataset = generate_churn(std::path::Path::new("data"), &ChurnConfig::default()).unwrap();
//! println!("{}", dataset.root.display());
//! ```

pub mod datagen;
