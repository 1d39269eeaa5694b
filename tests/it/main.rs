//! Lakeforge's end-to-end tests: the one integration-test binary of the workspace.
//!
//! Every test drives the real `lakeforge` binary in a temporary folder, the way a user does,
//! and checks what it printed and what it left in the warehouse.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod bad_input;
mod cluster;
mod dq;
mod example;
mod lineage;
mod schedule;
mod scoring;
mod versions;
