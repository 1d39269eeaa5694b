//! Lakeforge's cluster roles on Apache Ballista: the coordinator (an embedded Ballista
//! scheduler), the worker (an embedded Ballista executor) and the client session that plans a
//! job locally and runs it on them.
//!
//! This is the only crate that depends on Ballista. It knows nothing of Delta Lake, jobs or
//! models: the engine hands it [`ClusterExtensions`] (its codec, functions and planners), and
//! every role wires the same extensions in, so a plan the client encodes is one the coordinator
//! and the workers can decode.

pub mod codec;
mod roles;

pub use codec::{LakeforgeCodec, LayeredLogicalCodec, LayeredPhysicalCodec};
pub use roles::{
    ClusterAddress, ClusterExtensions, CoordinatorOptions, WorkerOptions, connect, run_coordinator,
    run_worker,
};

/// Keeps the `ballista` client crate in the build so the lock file pins it with the rest.
pub use ballista as ballista_client;

/// The Ballista release the cluster roles are built on.
pub const BALLISTA_VERSION: &str = ballista_core::BALLISTA_VERSION;

/// This build's Lakeforge version; every process of a cluster must share it.
pub const LAKEFORGE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What can go wrong starting or reaching a cluster role.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// An address or URL that cannot be used.
    #[error("invalid {what} '{text}': {message}")]
    InvalidAddress {
        /// Which address (e.g. "coordinator URL").
        what: &'static str,
        /// As given.
        text: String,
        /// Why.
        message: String,
    },
    /// The coordinator did not answer.
    #[error(
        "cannot reach the coordinator at {address}: {message} (is `lakeforge coordinator` \
         running there?)"
    )]
    Unreachable {
        /// The coordinator's address.
        address: String,
        /// The connection error.
        message: String,
    },
    /// The coordinator answered but no worker registered with it in time, so a job would
    /// wait forever for somewhere to run.
    #[error(
        "the coordinator at {address} has no workers: none registered within {waited_seconds} s \
         (start one with `lakeforge worker --coordinator {address}`, or wait longer with \
         --worker-wait)"
    )]
    NoWorkers {
        /// The coordinator's address.
        address: String,
        /// How long the client waited.
        waited_seconds: u64,
    },
    /// A role failed to start or stopped with an error.
    #[error("{role}: {message}")]
    Role {
        /// "coordinator", "worker" or "client".
        role: &'static str,
        /// What happened.
        message: String,
    },
}

/// This crate's results.
pub type Result<T, E = WorkerError> = std::result::Result<T, E>;
