//! [`JobSpec::resolve`]: a parsed spec checked (names, scheduling keys, freshness SLAs), its
//! `sql_file`s read and its variables substituted. Above both the spec model and the
//! scheduling keys it validates, so neither of those needs the other.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{PlannerError, StatementKind};
use crate::schedule::{JobScheduling, freshness_sla};
use crate::spec::{JobSpec, ResolvedJob, ResolvedStatement};
use crate::vars::substitute_vars;

impl JobSpec {
    /// Checks names, reads `sql_file`s and substitutes variables.
    ///
    /// `text` is the spec's source text (hashed into [`ResolvedJob::spec_hash`]); `base_dir`
    /// is where relative paths resolve; `overrides` are the caller's `--var`s.
    pub fn resolve(
        self,
        text: &str,
        base_dir: &Path,
        spec_path: Option<&Path>,
        overrides: &BTreeMap<String, String>,
    ) -> Result<ResolvedJob, PlannerError> {
        self.check_names()?;
        JobScheduling::from_section(&self.job)?;
        for product in &self.products {
            freshness_sla(product)?;
        }
        let mut vars = self.job.vars.clone();
        vars.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));

        let mut hasher = sha2_hasher();
        hasher.update(text.as_bytes());

        let mut resolve_statement = |kind: StatementKind,
                                     name: &str,
                                     sql: &Option<String>,
                                     sql_file: &Option<String>|
         -> Result<ResolvedStatement, PlannerError> {
            let raw = match (sql, sql_file) {
                (Some(sql), None) => sql.clone(),
                (None, Some(file)) => {
                    let path = base_dir.join(file);
                    std::fs::read_to_string(&path).map_err(|source| PlannerError::ReadFile {
                        what: format!("sql_file of {kind} '{name}'"),
                        path,
                        source,
                    })?
                }
                (Some(_), Some(_)) => {
                    return Err(PlannerError::InvalidSpec(format!(
                        "{kind} '{name}' has both `sql` and `sql_file`; give exactly one"
                    )));
                }
                (None, None) => {
                    return Err(PlannerError::InvalidSpec(format!(
                        "{kind} '{name}' has neither `sql` nor `sql_file`"
                    )));
                }
            };
            let sql =
                substitute_vars(&raw, &vars).map_err(|missing| PlannerError::UnknownVariable {
                    kind,
                    name: name.to_string(),
                    variable: missing,
                })?;
            hasher.update(sql.as_bytes());
            Ok(ResolvedStatement {
                name: name.to_string(),
                sql,
            })
        };

        let steps = self
            .steps
            .iter()
            .map(|s| resolve_statement(StatementKind::Step, &s.name, &s.sql, &s.sql_file))
            .collect::<Result<Vec<_>, _>>()?;
        let products = self
            .products
            .iter()
            .map(|p| resolve_statement(StatementKind::Product, &p.name, &p.sql, &p.sql_file))
            .collect::<Result<Vec<_>, _>>()?;
        for (k, v) in &vars {
            hasher.update(k.as_bytes());
            hasher.update(v.as_bytes());
        }

        Ok(ResolvedJob {
            spec: self,
            base_dir: base_dir.to_path_buf(),
            spec_path: spec_path.map(Path::to_path_buf),
            spec_hash: hasher.finish_hex(),
            vars,
            steps,
            products,
        })
    }
}

/// A tiny wrapper so the spec hash reads as one concept.
struct SpecHasher(sha2::Sha256);

fn sha2_hasher() -> SpecHasher {
    use sha2::Digest;
    SpecHasher(sha2::Sha256::new())
}

impl SpecHasher {
    fn update(&mut self, bytes: &[u8]) {
        use sha2::Digest;
        self.0.update(bytes);
    }

    fn finish_hex(self) -> String {
        use sha2::Digest;
        hex::encode(self.0.finalize())
    }
}
