//! `lakeforge model ...`: the model registry.

use std::collections::BTreeMap;

use anyhow::Context;
use lakeforge_engine::EngineConfig;
use lakeforge_engine::registry::{
    ModelRegistration, RegisteredModel, Registry, Requirement, history_batch, list_batch,
    promote_model, register_model, rollback_alias,
};

use crate::args::{ModelCommand, location_argument};
use crate::render::{print_alias_change, print_batches};

/// Runs one registry command.
pub async fn model(action: ModelCommand, config: &EngineConfig, json: bool) -> anyhow::Result<()> {
    match action {
        ModelCommand::Register {
            file,
            name,
            format,
            metrics,
            training,
            warehouse,
        } => {
            let url = location_argument(&warehouse.warehouse)?;
            let metrics = parse_metrics(&metrics)?;
            let registration = ModelRegistration {
                file: &file,
                name: &name,
                format: format.as_deref(),
                metrics,
                training,
            };
            let registered = register_model(&url, registration, config).await?;
            print_registered(&registered, json);
        }
        ModelCommand::List { name, warehouse } => {
            let url = location_argument(&warehouse.warehouse)?;
            let registry = Registry::load(&url, config).await?;
            print_batches(&[list_batch(&registry, name.as_deref())?], json)?;
        }
        ModelCommand::Promote {
            name,
            version,
            alias,
            requirements,
            warehouse,
        } => {
            let url = location_argument(&warehouse.warehouse)?;
            let requirements = requirements
                .iter()
                .map(|r| Requirement::parse(r).map_err(|e| anyhow::anyhow!("--require {r}: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let change = promote_model(&url, &name, version, &alias, &requirements, config).await?;
            print_alias_change(&change, json);
        }
        ModelCommand::Rollback {
            name,
            alias,
            warehouse,
        } => {
            let url = location_argument(&warehouse.warehouse)?;
            let change = rollback_alias(&url, &name, &alias, config).await?;
            print_alias_change(&change, json);
        }
        ModelCommand::History { name, warehouse } => {
            let url = location_argument(&warehouse.warehouse)?;
            let registry = Registry::load(&url, config).await?;
            print_batches(&[history_batch(&registry, &name)?], json)?;
        }
    }
    Ok(())
}

/// `--metric NAME=VALUE` flags.
fn parse_metrics(metrics: &[String]) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut parsed = BTreeMap::new();
    for metric in metrics {
        let (key, value) = metric
            .split_once('=')
            .with_context(|| format!("--metric {metric}: expected NAME=VALUE"))?;
        let value: f64 = value
            .trim()
            .parse()
            .with_context(|| format!("--metric {metric}: '{value}' is not a number"))?;
        parsed.insert(key.trim().to_string(), value);
    }
    Ok(parsed)
}

fn print_registered(registered: &RegisteredModel, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "name": registered.name, "version": registered.version,
                "format": registered.format.to_string(),
                "content_hash": registered.content_hash, "artifact": registered.artifact,
                "features": registered.feature_names,
            })
        );
    } else {
        println!(
            "registered {}@{} ({}, {} features, {})",
            registered.name,
            registered.version,
            registered.format,
            registered.feature_names.len(),
            registered.content_hash
        );
    }
}
