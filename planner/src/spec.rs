//! The job spec: the TOML file a user writes, as serde types, plus loading and validation.
//!
//! Loading is split in two so that tools (the scheduler, tests) can work from a string:
//! [`JobSpec::parse`] turns TOML text into the raw model, rejecting unknown keys with their
//! line; [`JobSpec::resolve`] reads `sql_file`s, substitutes `${VAR}`s and checks the names, and
//! yields a [`ResolvedJob`] whose every statement is final SQL text.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::check_spec::{CheckKind, CheckSpec};
use crate::error::PlannerError;
pub use crate::error::StatementKind;

/// A whole job file, as written.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The `[job]` table.
    pub job: JobSection,
    /// Named inputs: `[sources.NAME]`.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSpec>,
    /// Named intermediate views, planned in order: `[[steps]]`.
    #[serde(default)]
    pub steps: Vec<StepSpec>,
    /// Published Delta tables: `[[products]]`.
    #[serde(default)]
    pub products: Vec<ProductSpec>,
    /// Data-quality assertions on sources, steps and products: `[[checks]]`.
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
    /// Models the job's SQL scores with `predict('NAME', ...)`: `[models.NAME]`.
    #[serde(default)]
    pub models: BTreeMap<String, ModelSpec>,
    /// Where the run's OpenLineage events go: `[lineage]`.
    #[serde(default)]
    pub lineage: LineageSpec,
    /// Options of the object stores the job reads and writes, per bucket or container:
    /// `[storage."s3://bucket"] endpoint = "...", region = "..."` (keys as `object_store` names
    /// them). Credentials are better left to the environment (`AWS_*`, `AZURE_*`, `GOOGLE_*`).
    #[serde(default)]
    pub storage: BTreeMap<String, BTreeMap<String, OptionValue>>,
    /// Environments one job file serves (dev, test, prod): `[profiles.NAME]`, chosen with
    /// `--profile NAME`.
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileSpec>,
}

/// A `[profiles.NAME]` table: what changes in that environment.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// The warehouse in this environment (replaces `[job] warehouse`).
    #[serde(default)]
    pub warehouse: Option<String>,
    /// Variables of this environment: over `[job.vars]`, under `--var`.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

/// A value of an option table: TOML strings, booleans and numbers are all accepted (stores take
/// their options as text).
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum OptionValue {
    /// `key = "text"`.
    Text(String),
    /// `key = true`.
    Bool(bool),
    /// `key = 3`.
    Integer(i64),
    /// `key = 2.5`.
    Float(f64),
}

impl OptionValue {
    /// The value as the text a store's builder parses.
    pub fn into_string(self) -> String {
        match self {
            OptionValue::Text(text) => text,
            OptionValue::Bool(value) => value.to_string(),
            OptionValue::Integer(value) => value.to_string(),
            OptionValue::Float(value) => value.to_string(),
        }
    }
}

impl std::fmt::Debug for OptionValue {
    // Option values may be secrets (keys, tokens): never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<value>")
    }
}

/// The `[lineage]` table: OpenLineage emission and what the lineage extractor should know.
///
/// Column lineage is always captured and stored with every product version; this table only
/// says where the OpenLineage events go.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LineageSpec {
    /// The OpenLineage job namespace (default `lakeforge`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The newline-delimited JSON file events are appended to, relative to the spec's folder.
    /// Default: `WAREHOUSE/_lakeforge/openlineage/events.ndjson` when the warehouse is local.
    #[serde(default)]
    pub events_file: Option<String>,
    /// An OpenLineage HTTP endpoint (Marquez-compatible): events are POSTed to
    /// `URL/api/v1/lineage`. `LAKEFORGE_OPENLINEAGE_URL` overrides it.
    #[serde(default)]
    pub url: Option<String>,
    /// User-defined functions that obfuscate their input (like hashes): their outputs are
    /// marked `masking` in the lineage.
    #[serde(default)]
    pub masking_functions: Vec<String>,
}

/// A `[models.NAME]` table: a model file the job scores with, declared inline.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The model file, relative to the spec's folder.
    pub path: String,
    /// `xgboost-json`, `xgboost-ubj`, `lightgbm` or `linear`; guessed from the file when absent.
    #[serde(default)]
    pub format: Option<String>,
}

/// The `[job]` table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobSection {
    /// The job's name, recorded in every commit and run record.
    pub name: String,
    /// Where products and Lakeforge's own tables live: a path (relative to the spec's
    /// folder) or a URL.
    pub warehouse: String,
    /// Free text shown by tools.
    #[serde(default)]
    pub description: Option<String>,
    /// Default values for `${VAR}` substitution; `--var` on the command line overrides them.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// A cron pattern (`lakeforge schedule` runs the job at each occurrence); seconds optional.
    #[serde(default)]
    pub schedule: Option<String>,
    /// The IANA time zone of `schedule` and of `run_date` / `run_ts` (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Products (of this warehouse) or Delta sources whose new versions trigger a run.
    #[serde(default)]
    pub after: Vec<String>,
    /// Extra attempts after a failed scheduled run (default 0).
    #[serde(default)]
    pub retries: Option<u32>,
    /// The wait before the first retry (default 30s), doubled for each further one.
    #[serde(default)]
    pub retry_delay: Option<String>,
    /// A scheduled run taking longer is cancelled, committing nothing.
    #[serde(default)]
    pub timeout: Option<String>,
    /// What the scheduler does with occurrences it missed: latest (default), all or none.
    #[serde(default)]
    pub catch_up: Option<CatchUp>,
}

/// The file formats a source can have.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// A Parquet file or a folder of Parquet files.
    Parquet,
    /// A CSV file or a folder of CSV files.
    Csv,
    /// Newline-delimited JSON.
    Json,
    /// A Delta table, optionally pinned to a version.
    Delta,
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceFormat::Parquet => "parquet",
            SourceFormat::Csv => "csv",
            SourceFormat::Json => "json",
            SourceFormat::Delta => "delta",
        })
    }
}

/// A `[sources.NAME]` table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// The source's format.
    pub format: SourceFormat,
    /// A path (relative to the spec's folder) or a URL.
    pub path: String,
    /// Delta only: the table version to read (time travel). Default: the latest.
    #[serde(default)]
    pub version: Option<u64>,
    /// CSV only: whether the first line is a header (default true).
    #[serde(default)]
    pub header: Option<bool>,
    /// CSV only: the field delimiter, one ASCII character (default `,`).
    #[serde(default)]
    pub delimiter: Option<String>,
    /// Columns identifying a row, shown with failing rows of checks.
    #[serde(default)]
    pub key: Vec<String>,
}

/// One `[[steps]]` entry: a named view.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// The view's name, usable by later steps and products.
    pub name: String,
    /// Inline SQL (exactly one of `sql` and `sql_file`).
    #[serde(default)]
    pub sql: Option<String>,
    /// A file holding the SQL, relative to the spec's folder.
    #[serde(default)]
    pub sql_file: Option<String>,
    /// Columns identifying a row, shown with failing rows of checks.
    #[serde(default)]
    pub key: Vec<String>,
}

/// How a product run changes its table.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// Replace the table's contents (and schema) with this run's rows.
    #[default]
    Overwrite,
    /// Add this run's rows; the schema must match the table's.
    Append,
}

impl fmt::Display for WriteMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteMode::Overwrite => "overwrite",
            WriteMode::Append => "append",
        })
    }
}

/// One `[[products]]` entry: a published Delta table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProductSpec {
    /// The product's name; its table lives at `WAREHOUSE/<name>` unless `path` says otherwise.
    pub name: String,
    /// Inline SQL (exactly one of `sql` and `sql_file`).
    #[serde(default)]
    pub sql: Option<String>,
    /// A file holding the SQL, relative to the spec's folder.
    #[serde(default)]
    pub sql_file: Option<String>,
    /// Overwrite (default) or append.
    #[serde(default)]
    pub mode: WriteMode,
    /// Partition columns of the Delta table.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Table location override: a path relative to the warehouse, or a URL.
    #[serde(default)]
    pub path: Option<String>,
    /// What the product is, stored as the table's description.
    #[serde(default)]
    pub description: Option<String>,
    /// Who answers for the product.
    #[serde(default)]
    pub owner: Option<String>,
    /// Columns identifying a row, shown with failing rows of checks.
    #[serde(default)]
    pub key: Vec<String>,
    /// The product is reported stale when its newest version is older than this (`26h`).
    #[serde(default)]
    pub freshness_sla: Option<String>,
}

/// A job whose statements are final: files read, variables substituted, names checked.
#[derive(Debug, Clone)]
pub struct ResolvedJob {
    /// The spec as written.
    pub spec: JobSpec,
    /// The folder relative paths resolve against.
    pub base_dir: PathBuf,
    /// The spec file, when it came from one.
    pub spec_path: Option<PathBuf>,
    /// SHA-256 (hex) of the spec text and every SQL file it reads, after substitution.
    pub spec_hash: String,
    /// The `[profiles.NAME]` applied, if any.
    pub profile: Option<String>,
    /// The variables in effect (spec defaults overridden by the caller's).
    pub vars: BTreeMap<String, String>,
    /// Steps with their final SQL, in order.
    pub steps: Vec<ResolvedStatement>,
    /// Products with their final SQL, in order.
    pub products: Vec<ResolvedStatement>,
}

/// A step or product with its final SQL text.
#[derive(Debug, Clone)]
pub struct ResolvedStatement {
    /// The step or product name.
    pub name: String,
    /// The SQL, after `${VAR}` substitution.
    pub sql: String,
}

impl ResolvedJob {
    /// The product spec with this name.
    pub fn product(&self, name: &str) -> Option<&ProductSpec> {
        self.spec.products.iter().find(|p| p.name == name)
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.spec.job.name
    }

    /// The checks on `dataset`, in spec order.
    pub fn checks_on<'a>(&'a self, dataset: &'a str) -> impl Iterator<Item = &'a CheckSpec> + 'a {
        self.spec.checks.iter().filter(move |c| c.on == dataset)
    }

    /// The key columns declared for a source, step or product.
    pub fn key_of(&self, dataset: &str) -> &[String] {
        if let Some(source) = self.spec.sources.get(dataset) {
            return &source.key;
        }
        if let Some(step) = self.spec.steps.iter().find(|s| s.name == dataset) {
            return &step.key;
        }
        self.product(dataset)
            .map(|p| p.key.as_slice())
            .unwrap_or_default()
    }

    /// What kind of dataset `name` is, if any.
    pub fn dataset_kind(&self, name: &str) -> Option<DatasetKind> {
        if self.spec.sources.contains_key(name) {
            Some(DatasetKind::Source)
        } else if self.spec.steps.iter().any(|s| s.name == name) {
            Some(DatasetKind::Step)
        } else if self.product(name).is_some() {
            Some(DatasetKind::Product)
        } else {
            None
        }
    }
}

/// The three kinds of named datasets a job has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetKind {
    /// A `[sources.NAME]` input.
    Source,
    /// A `[[steps]]` view.
    Step,
    /// A `[[products]]` table.
    Product,
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatasetKind::Source => "source",
            DatasetKind::Step => "step",
            DatasetKind::Product => "product",
        })
    }
}

/// What the scheduler does with cron occurrences it could not run on time (the daemon was
/// down, or the previous run was still going).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// One run, for the most recent missed occurrence.
    #[default]
    Latest,
    /// One run per missed occurrence, oldest first.
    All,
    /// None: wait for the next occurrence.
    None,
}

impl CatchUp {
    /// The spelling in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
            CatchUp::None => "none",
        }
    }
}

impl JobSpec {
    /// Parses TOML text. `origin` names the file in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<JobSpec, PlannerError> {
        toml::from_str(text).map_err(|source| PlannerError::SpecSyntax {
            origin: origin.to_string(),
            message: source.to_string().trim_end().to_string(),
        })
    }

    /// Reads and parses a job file.
    pub fn load(path: &Path) -> Result<(JobSpec, String), PlannerError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlannerError::ReadFile {
            what: "job spec".to_string(),
            path: path.to_path_buf(),
            source,
        })?;
        let spec = JobSpec::parse(&text, &path.display().to_string())?;
        Ok((spec, text))
    }

    /// Names must be SQL identifiers that DataFusion will not fold (lower case), unique across
    /// sources, steps and products; products need at least one entry.
    pub(crate) fn check_names(&self) -> Result<(), PlannerError> {
        if self.job.name.trim().is_empty() {
            return Err(PlannerError::InvalidSpec("`job.name` is empty".to_string()));
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        let named = self
            .sources
            .keys()
            .map(|n| (n.as_str(), "source"))
            .chain(self.steps.iter().map(|s| (s.name.as_str(), "step")))
            .chain(self.products.iter().map(|p| (p.name.as_str(), "product")));
        for (name, kind) in named {
            if !is_plain_identifier(name) {
                return Err(PlannerError::InvalidSpec(format!(
                    "{kind} name '{name}' must be a lower-case SQL identifier \
                     ([a-z_][a-z0-9_]*), so SQL can refer to it unquoted"
                )));
            }
            if let Some(previous) = seen.insert(name, kind) {
                return Err(PlannerError::InvalidSpec(format!(
                    "name '{name}' is used by a {previous} and a {kind}; names must be unique"
                )));
            }
        }
        if self.products.is_empty() {
            return Err(PlannerError::InvalidSpec(
                "the job has no [[products]]; nothing would be published".to_string(),
            ));
        }
        for (name, source) in &self.sources {
            if source.version.is_some() && source.format != SourceFormat::Delta {
                return Err(PlannerError::InvalidSpec(format!(
                    "source '{name}': `version` applies to delta sources only (format is {})",
                    source.format
                )));
            }
            if (source.header.is_some() || source.delimiter.is_some())
                && source.format != SourceFormat::Csv
            {
                return Err(PlannerError::InvalidSpec(format!(
                    "source '{name}': `header` and `delimiter` apply to csv sources only \
                     (format is {})",
                    source.format
                )));
            }
            if let Some(delimiter) = &source.delimiter
                && (delimiter.len() != 1 || !delimiter.is_ascii())
            {
                return Err(PlannerError::InvalidSpec(format!(
                    "source '{name}': `delimiter` must be one ASCII character, got {delimiter:?}"
                )));
            }
        }
        self.check_checks(&seen)?;
        for product in &self.products {
            let mut partitions = BTreeSet::new();
            for column in &product.partition_by {
                if !partitions.insert(column) {
                    return Err(PlannerError::InvalidSpec(format!(
                        "product '{}': partition column '{column}' is listed twice",
                        product.name
                    )));
                }
            }
        }
        Ok(())
    }
}

impl JobSpec {
    /// Every check is on a known dataset, fits its kind, and has a name unique on its dataset;
    /// references name sources or steps.
    fn check_checks(&self, datasets: &BTreeMap<&str, &str>) -> Result<(), PlannerError> {
        let mut names = BTreeSet::new();
        for check in &self.checks {
            let Some(kind_of_dataset) = datasets.get(check.on.as_str()) else {
                return Err(PlannerError::InvalidSpec(format!(
                    "a check is on '{}', which is not a source, step or product of the job",
                    check.on
                )));
            };
            check.validate()?;
            let name = check.effective_name()?;
            let kind = check.effective_kind()?;
            let invalid = |message: String| PlannerError::InvalidCheck {
                check: name.clone(),
                dataset: check.on.clone(),
                message,
            };
            if !is_plain_identifier(&name) {
                return Err(invalid(
                    "check names must be lower-case identifiers ([a-z_][a-z0-9_]*)".to_string(),
                ));
            }
            if !names.insert((check.on.clone(), name.clone())) {
                return Err(invalid(
                    "two checks on the same dataset have this name; names must be unique per \
                     dataset (set `name`)"
                        .to_string(),
                ));
            }
            let is_product = *kind_of_dataset == "product";
            match kind {
                CheckKind::Referential => {
                    let reference = check.reference.as_deref().unwrap_or_default();
                    match datasets.get(reference) {
                        Some(&"source") | Some(&"step") => {}
                        _ => {
                            return Err(invalid(format!(
                                "`reference` '{reference}' must name a source or step of the job"
                            )));
                        }
                    }
                }
                CheckKind::Drift => match check.reference.as_deref() {
                    None | Some("previous") if !is_product => {
                        return Err(invalid(
                            "only products have previous versions; give `reference` = a \
                                 source or step to compare with"
                                .to_string(),
                        ));
                    }
                    None | Some("previous") => {}
                    Some(reference) => match datasets.get(reference) {
                        Some(&"source") | Some(&"step") if reference != check.on => {}
                        _ => {
                            return Err(invalid(format!(
                                "`reference` '{reference}' must be \"previous\" or another \
                                     source or step of the job"
                            )));
                        }
                    },
                },
                _ => {}
            }
        }
        Ok(())
    }
}

/// True for `[a-z_][a-z0-9_]*`.
pub fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[job]
name = "j"
warehouse = "wh"

[sources.customers]
format = "parquet"
path = "data/customers"

[[steps]]
name = "recent"
sql = "SELECT * FROM customers WHERE day = '${run_date}'"

[[products]]
name = "out"
sql = "SELECT * FROM recent"
"#;

    fn resolve(text: &str, vars: &[(&str, &str)]) -> Result<ResolvedJob, PlannerError> {
        let vars = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        JobSpec::parse(text, "job.toml")?.resolve(text, Path::new("."), None, &vars, None)
    }

    #[test]
    fn parses_and_substitutes() {
        let job = resolve(MINIMAL, &[("run_date", "2026-01-02")]).unwrap();
        assert_eq!(
            job.steps[0].sql,
            "SELECT * FROM customers WHERE day = '2026-01-02'"
        );
        assert_eq!(job.spec.products[0].mode, WriteMode::Overwrite);
        assert_eq!(job.spec_hash.len(), 64);
    }

    #[test]
    fn different_vars_give_different_hashes() {
        let a = resolve(MINIMAL, &[("run_date", "2026-01-02")]).unwrap();
        let b = resolve(MINIMAL, &[("run_date", "2026-01-03")]).unwrap();
        assert_ne!(a.spec_hash, b.spec_hash);
    }

    #[test]
    fn missing_variable_names_step_and_variable() {
        let err = resolve(MINIMAL, &[]).unwrap_err().to_string();
        assert!(err.contains("step 'recent'"), "{err}");
        assert!(err.contains("run_date"), "{err}");
    }

    #[test]
    fn unknown_key_is_rejected_with_line() {
        let text = MINIMAL.replace("path = \"data/customers\"", "path = \"x\"\nformt = \"csv\"");
        let err = JobSpec::parse(&text, "job.toml").unwrap_err().to_string();
        assert!(err.contains("formt"), "{err}");
        assert!(err.contains("line 9"), "{err}");
        assert!(err.contains("job.toml"), "{err}");
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let text = MINIMAL.replace("name = \"out\"", "name = \"recent\"");
        let err = resolve(&text, &[("run_date", "x")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'recent' is used by a step and a product"),
            "{err}"
        );
    }

    #[test]
    fn upper_case_names_are_rejected() {
        let text = MINIMAL.replace("name = \"out\"", "name = \"Out\"");
        let err = resolve(&text, &[("run_date", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("'Out'"), "{err}");
    }

    #[test]
    fn version_only_on_delta() {
        let text = MINIMAL.replace("path = \"data/customers\"", "path = \"x\"\nversion = 3");
        let err = resolve(&text, &[("run_date", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("source 'customers'"), "{err}");
    }

    #[test]
    fn identifiers() {
        assert!(is_plain_identifier("a_1"));
        assert!(is_plain_identifier("_x"));
        assert!(!is_plain_identifier("1a"));
        assert!(!is_plain_identifier("a-b"));
        assert!(!is_plain_identifier(""));
    }
}
