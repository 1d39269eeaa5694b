//! Lakeforge's planner: the job spec model and its translation into DataFusion logical plans.
//!
//! The planner never reads data. It reads the job file and the SQL files the job names, and it
//! asks a DataFusion [`SessionContext`](datafusion::prelude::SessionContext) for table schemas
//! (catalog lookups); everything that touches storage lives in `lakeforge-engine`.
//!
//! ```
//! use lakeforge_planner::JobSpec;
//!
//! let text = r#"
//! [job]
//! name = "demo"
//! warehouse = "wh"
//! [[products]]
//! name = "numbers"
//! sql = "SELECT * FROM (VALUES (1), (2)) AS t(n)"
//! "#;
//! let spec = JobSpec::parse(text, "demo.toml").unwrap();
//! let job = spec
//!     .resolve(text, std::path::Path::new("."), None, &Default::default())
//!     .unwrap();
//! assert_eq!(job.products[0].name, "numbers");
//! ```

mod error;
mod plan;
mod spec;
mod vars;

pub use error::PlannerError;
pub use plan::{JobPlan, NamedPlan, plan_job, plan_statement};
pub use spec::{
    JobSection, JobSpec, ProductSpec, ResolvedJob, ResolvedStatement, SourceFormat, SourceSpec,
    StatementKind, StepSpec, WriteMode, is_plain_identifier,
};
pub use vars::substitute_vars;
