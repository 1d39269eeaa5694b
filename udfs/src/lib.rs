//! Lakeforge's SQL functions and their registry.
//!
//! This crate is the single place that lists the functions Lakeforge adds to SQL (model
//! scoring, data-quality helpers). Every session that plans or executes Lakeforge SQL, embedded
//! or on a cluster worker, gets its functions from [`register_all`], so a function added here
//! works everywhere at once.
//!
//! The list is empty until the scoring and data-quality issues add their functions.

pub mod models;

use std::sync::Arc;

use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::prelude::SessionContext;

/// Every Lakeforge scalar function.
pub fn scalar_functions() -> Vec<Arc<ScalarUDF>> {
    Vec::new()
}

/// Every Lakeforge aggregate function.
pub fn aggregate_functions() -> Vec<Arc<AggregateUDF>> {
    Vec::new()
}

/// Registers every Lakeforge function in `ctx`.
pub fn register_all(ctx: &SessionContext) {
    for udf in scalar_functions() {
        ctx.register_udf(udf.as_ref().clone());
    }
    for udaf in aggregate_functions() {
        ctx.register_udaf(udaf.as_ref().clone());
    }
}
