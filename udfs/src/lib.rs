//! Lakeforge's SQL functions and their registry.
//!
//! This crate is the single place that lists the functions Lakeforge adds to SQL. Every session
//! that plans or executes Lakeforge SQL, embedded or on a cluster worker, gets its functions from
//! [`register_all`], so a function added here works everywhere at once.
//!
//! Today: the scoring functions `predict` and `predict_margin` ([`scoring`]), which evaluate
//! XGBoost, LightGBM and linear models natively ([`models`]) and find models through the
//! session's [`scoring::ModelResolver`].

pub mod models;
pub mod scoring;

use std::sync::Arc;

use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::prelude::SessionContext;

use crate::scoring::ModelResolver;

/// Every Lakeforge scalar function, with models resolved by `models`.
pub fn scalar_functions(models: Arc<dyn ModelResolver>) -> Vec<Arc<ScalarUDF>> {
    scoring::scoring_functions(models)
}

/// Every Lakeforge aggregate function.
pub fn aggregate_functions() -> Vec<Arc<AggregateUDF>> {
    Vec::new()
}

/// Registers every Lakeforge function in `ctx`, with models resolved by `models`.
pub fn register_all(ctx: &SessionContext, models: Arc<dyn ModelResolver>) {
    for udf in scalar_functions(models) {
        ctx.register_udf(udf.as_ref().clone());
    }
    for udaf in aggregate_functions() {
        ctx.register_udaf(udaf.as_ref().clone());
    }
}
