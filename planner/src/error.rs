//! The planner's error type.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong between a job file and its logical plans.
///
/// Every variant names what is at fault (file, key, step, product, column) so the CLI can
/// print it as is.
#[derive(Debug, thiserror::Error)]
pub enum PlannerError {
    /// The TOML does not parse or does not fit the spec model (unknown key, wrong type).
    #[error("invalid job spec {origin}: {message}")]
    SpecSyntax {
        /// The file (or other origin) of the text.
        origin: String,
        /// The TOML parser's message, with line and column.
        message: String,
    },

    /// A file the spec refers to could not be read.
    #[error("cannot read {what} at {}: {source}", path.display())]
    ReadFile {
        /// What the file is for.
        what: String,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// The spec parses but says something inconsistent.
    #[error("invalid job spec: {0}")]
    InvalidSpec(String),

    /// A `${VAR}` has no value.
    #[error(
        "{kind} '{name}': variable '{variable}' is not defined; pass --var {variable}=VALUE or set it in [job.vars]"
    )]
    UnknownVariable {
        /// Step or product.
        kind: StatementKind,
        /// Its name.
        name: String,
        /// The variable.
        variable: String,
    },

    /// A `${VAR}` in a location (warehouse, a source's, product's or model's path, ...) has no
    /// value.
    #[error(
        "{key}: variable '{variable}' is not defined; pass --var {variable}=VALUE, set it in \
         [job.vars] or in the profile's vars"
    )]
    UnknownLocationVariable {
        /// The spec key holding the location, e.g. `sources.events.path`.
        key: String,
        /// The variable.
        variable: String,
    },

    /// `--profile NAME` names no `[profiles.NAME]` of the spec.
    #[error("no profile '{profile}' in the job spec ({known})")]
    UnknownProfile {
        /// The profile asked for.
        profile: String,
        /// The profiles the spec has, for the message.
        known: String,
    },

    /// DataFusion refused a statement (syntax, unknown table or column, types).
    #[error("{kind} '{name}': {message}")]
    Sql {
        /// Step or product.
        kind: StatementKind,
        /// Its name.
        name: String,
        /// DataFusion's message, with the position when it knows one.
        message: String,
    },

    /// A product's output does not fit a Delta table (bad or duplicate column names,
    /// partition columns missing).
    #[error("product '{product}': {message}")]
    InvalidProduct {
        /// The product.
        product: String,
        /// What is wrong.
        message: String,
    },

    /// A `[[checks]]` entry is inconsistent or cannot be evaluated on its dataset (unknown
    /// column, wrong type), found before any data is read.
    #[error("check '{check}' on '{dataset}': {message}")]
    InvalidCheck {
        /// The check's name.
        check: String,
        /// The source, step or product it is on.
        dataset: String,
        /// What is wrong.
        message: String,
    },

    /// Column lineage could not be read from a plan (a plan shape the extractor cannot
    /// follow); names the column or node.
    #[error("cannot compute column lineage: {0}")]
    Lineage(String),
}

/// Which kind of statement a name belongs to, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// A `[[steps]]` entry.
    Step,
    /// A `[[products]]` entry.
    Product,
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StatementKind::Step => "step",
            StatementKind::Product => "product",
        })
    }
}
