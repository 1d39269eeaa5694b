//! Lakeforge's engine: runs jobs embedded in the process and publishes their products as
//! versioned Delta tables.
//!
//! A run goes: [`job::LoadedJob::load`] (spec, variables, warehouse) → a DataFusion session
//! ([`session::new_session`]) → sources registered ([`sources`]) → steps and products planned
//! (`lakeforge-planner`) → every product's files written ([`publish::stage_product`]) → one
//! Delta commit per product ([`publish::commit_product`]) → a run record ([`runs`]).
//!
//! This crate is the only one that knows Delta Lake and the command line (`src/main.rs`).

pub mod cancel;
pub mod check_history;
pub mod check_result;
pub mod cluster;
pub mod config;
pub mod delta;
pub mod delta_files;
pub mod dq;
pub mod error;
pub mod job;
pub mod lineage;
pub mod location;
pub mod metadata;
pub mod model_files;
pub mod models;
pub mod publish;
pub mod registry;
pub mod runs;
pub mod schedule;
pub mod session;
pub mod sources;
pub mod storage;
pub mod system_table;
pub mod tables;

pub use config::{EngineConfig, JoinStrategy};
pub use error::{EngineError, Result};
pub use job::{CheckPassReport, JobReport, LoadedJob, RunSummary, run_job, validate_job};
