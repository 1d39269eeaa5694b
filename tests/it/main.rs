//! Lakeforge's end-to-end tests: the one integration-test binary of the workspace.
//!
//! Every test drives the real `lakeforge` binary in a temporary folder, the way a user does,
//! and checks what it printed and what it left in the warehouse.

// Test code: a failed unwrap is a failed test; an end-to-end scenario reads best top to bottom,
// so the 150-line limit on functions is for the product's code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod support;

mod bad_input;
mod cluster;
mod dq;
mod example;
mod lineage;
mod schedule;
mod scoring;
mod storage;
mod versions;
