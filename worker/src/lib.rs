//! Lakeforge's cluster roles: the coordinator (an embedded Ballista scheduler) and the worker
//! (an embedded Ballista executor).
//!
//! Not built yet: this crate pins the Ballista version that resolves with the workspace's
//! DataFusion, and will hold the session builder, function registry wiring and extension
//! codecs both roles share. It is the only crate that may depend on Ballista; the engine reaches
//! the cluster through it.

/// Keeps the `ballista` client crate in the build so the lock file pins it with the rest.
pub use ballista as ballista_client;

/// The Ballista release the cluster roles are built on, for version checks between processes.
pub const BALLISTA_VERSION: &str = ballista_core::BALLISTA_VERSION;
