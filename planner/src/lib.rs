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
//!     .resolve(text, std::path::Path::new("."), None, &Default::default(), None)
//!     .unwrap();
//! assert_eq!(job.products[0].name, "numbers");
//! ```

mod check_spec;
mod checks;
mod error;
mod lineage;
mod plan;
mod resolve;
mod schedule;
mod spec;
mod vars;

pub use check_spec::{
    AnomalyMetric, CheckAction, CheckKind, CheckSpec, DEFAULT_SAMPLES, DriftMethod, NullPolicy,
    parse_duration,
};
pub use checks::{
    CHECK_COLUMN_PREFIX, CheckPlacement, CheckedDataset, CompiledCheck, DEFAULT_DRIFT_BINS,
    DriftReference, Evaluation, QUARANTINE_COLUMNS, Statistic, compile_checks,
};
pub use error::PlannerError;
pub use lineage::{
    ColumnLineage, InputField, InputRef, LineageOptions, PlanLineage, Subtype, Transformation,
    extract_lineage,
};
pub use plan::{JobPlan, NamedPlan, plan_job, plan_statement};
pub use schedule::{
    CatchUp, CronSchedule, DEFAULT_RETRY_DELAY, JobScheduling, MAX_RETRY_DELAY, RUN_DATE_VAR,
    RUN_TS_VAR, freshness_sla,
};
pub use spec::{
    DatasetKind, JobSection, JobSpec, LineageSpec, ModelSpec, OptionValue, ProductSpec,
    ProfileSpec, ResolvedJob, ResolvedStatement, SourceFormat, SourceSpec, StatementKind, StepSpec,
    WriteMode, is_plain_identifier,
};
pub use vars::substitute_vars;
