//! Every generator the suites use, under one path: the sample generators of `lakeforge-datagen`
//! (shared with `lakeforge example`) and TPC-H, which only the benchmarks need.

pub use lakeforge_datagen::{DatagenError, churn, features};

pub mod tpch;
