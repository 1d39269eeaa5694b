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
    /// is where relative paths resolve; `overrides` are the caller's `--var`s; `profile` the
    /// `[profiles.NAME]` to apply (its warehouse, and its vars between `[job.vars]` and
    /// `overrides`). Variables are substituted in the SQL and in every location.
    pub fn resolve(
        mut self,
        text: &str,
        base_dir: &Path,
        spec_path: Option<&Path>,
        overrides: &BTreeMap<String, String>,
        profile: Option<&str>,
    ) -> Result<ResolvedJob, PlannerError> {
        self.check_names()?;
        JobScheduling::from_section(&self.job)?;
        for product in &self.products {
            freshness_sla(product)?;
        }
        let mut vars = self.job.vars.clone();
        if let Some(name) = profile {
            let chosen =
                self.profiles
                    .get(name)
                    .cloned()
                    .ok_or_else(|| PlannerError::UnknownProfile {
                        profile: name.to_string(),
                        known: if self.profiles.is_empty() {
                            "it has no [profiles.NAME] tables".to_string()
                        } else {
                            let names: Vec<&str> =
                                self.profiles.keys().map(String::as_str).collect();
                            format!("profiles: {}", names.join(", "))
                        },
                    })?;
            if let Some(warehouse) = chosen.warehouse {
                self.job.warehouse = warehouse;
            }
            vars.extend(chosen.vars);
        }
        vars.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.substitute_locations(&vars)?;

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
            profile: profile.map(str::to_string),
            vars,
            steps,
            products,
        })
    }
}

impl JobSpec {
    /// Substitutes `vars` in every location of the spec: the warehouse, source, product and
    /// model paths, the OpenLineage events file and the `after` triggers.
    fn substitute_locations(
        &mut self,
        vars: &BTreeMap<String, String>,
    ) -> Result<(), PlannerError> {
        let substitute = |key: String, text: &mut String| -> Result<(), PlannerError> {
            *text = substitute_vars(text, vars)
                .map_err(|variable| PlannerError::UnknownLocationVariable { key, variable })?;
            Ok(())
        };
        substitute("job.warehouse".to_string(), &mut self.job.warehouse)?;
        for (index, after) in self.job.after.iter_mut().enumerate() {
            substitute(format!("job.after[{index}]"), after)?;
        }
        for (name, source) in &mut self.sources {
            substitute(format!("sources.{name}.path"), &mut source.path)?;
        }
        for product in &mut self.products {
            if let Some(path) = &mut product.path {
                substitute(format!("products.{}.path", product.name), path)?;
            }
        }
        for (name, model) in &mut self.models {
            substitute(format!("models.{name}.path"), &mut model.path)?;
        }
        if let Some(file) = &mut self.lineage.events_file {
            substitute("lineage.events_file".to_string(), file)?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILED: &str = r#"
[job]
name = "j"
warehouse = "wh/${env}"
vars = { env = "dev", bucket = "none" }

[profiles.prod]
warehouse = "s3://${bucket}/wh"
vars = { env = "prod", bucket = "lake" }

[profiles.test]
vars = { env = "test" }

[sources.events]
format = "parquet"
path = "data/${env}/events"

[[products]]
name = "out"
path = "out_${env}"
sql = "SELECT '${env}' AS env"
"#;

    fn resolve(
        text: &str,
        profile: Option<&str>,
        vars: &[(&str, &str)],
    ) -> Result<ResolvedJob, PlannerError> {
        let vars = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        JobSpec::parse(text, "job.toml")?.resolve(text, Path::new("."), None, &vars, profile)
    }

    #[test]
    fn profiles_set_the_warehouse_and_vars_in_sql_and_locations() {
        let dev = resolve(PROFILED, None, &[]).unwrap();
        assert_eq!(dev.spec.job.warehouse, "wh/dev");
        assert_eq!(dev.spec.sources["events"].path, "data/dev/events");
        assert_eq!(dev.profile, None);

        let prod = resolve(PROFILED, Some("prod"), &[]).unwrap();
        assert_eq!(prod.spec.job.warehouse, "s3://lake/wh");
        assert_eq!(prod.spec.sources["events"].path, "data/prod/events");
        assert_eq!(prod.spec.products[0].path.as_deref(), Some("out_prod"));
        assert_eq!(prod.products[0].sql, "SELECT 'prod' AS env");
        assert_eq!(prod.profile.as_deref(), Some("prod"));

        // --var wins over the profile; a profile without a warehouse keeps the job's.
        let test = resolve(PROFILED, Some("test"), &[("env", "ci")]).unwrap();
        assert_eq!(test.spec.job.warehouse, "wh/ci");
    }

    #[test]
    fn unknown_profiles_and_undefined_location_variables_are_refused() {
        let error = resolve(PROFILED, Some("staging"), &[]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no profile 'staging' in the job spec (profiles: prod, test)"
        );
        let text = "[job]\nname = \"j\"\nwarehouse = \"s3://${bucket}/wh\"\n\n[[products]]\n\
                    name = \"out\"\nsql = \"SELECT 1\"\n";
        let error = resolve(text, None, &[]).unwrap_err().to_string();
        assert!(
            error.starts_with("job.warehouse: variable 'bucket' is not defined"),
            "{error}"
        );
        let error = resolve(text, Some("prod"), &[]).unwrap_err().to_string();
        assert!(
            error.contains("it has no [profiles.NAME] tables"),
            "{error}"
        );
    }
}
