//! `lakeforge example`: the sample churn dataset and its job, end to end.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::bail;
use lakeforge_datagen::churn::{ChurnConfig, generate_churn};
use lakeforge_engine::EngineConfig;
use lakeforge_engine::job::LoadedJob;
use lakeforge_engine::location::display_location;
use lakeforge_engine::registry::{
    ModelRegistration, Registry, Requirement, promote_model, register_model,
};
use lakeforge_engine::tables::show_table;

use crate::args::ExampleArgs;
use crate::commands::run::run_with_progress;
use crate::render::{print_batches, print_summary};

/// Generates the sample data (once), registers the example's model and runs the job.
pub async fn example(args: ExampleArgs, config: EngineConfig, json: bool) -> anyhow::Result<()> {
    let config = args.apply(config)?;
    let dir = &args.dir;
    let job_path = dir.join("job.toml");
    if !job_path.is_file() {
        bail!(
            "no example job at {}; run this from the repository root or pass --dir",
            job_path.display()
        );
    }
    let data = dir.join("data");
    let (customers, events) = (args.customers, args.events);
    let churn = ChurnConfig {
        customers,
        events,
        ..ChurnConfig::default()
    };
    let dataset = tokio::task::spawn_blocking(move || generate_churn(&data, &churn)).await??;
    if dataset.generated {
        eprintln!(
            "generated {customers} customers and {events} events under {}",
            dataset.root.display()
        );
    } else {
        eprintln!("reusing the sample data under {}", dataset.root.display());
    }
    let loaded = LoadedJob::load(&job_path, &BTreeMap::new(), None)?;
    register_example_model(dir, &loaded, &config).await?;
    let summary = run_with_progress(&loaded, &config, json).await?;
    print_summary(&summary, json);
    if !json && let Some(first) = summary.products.first() {
        println!(
            "\nfirst rows of {} (lakeforge show {}):",
            first.name,
            display_location(&first.table)
        );
        let batches = show_table(&first.table, None, 5, &config).await?;
        print_batches(&batches, false)?;
    }
    Ok(())
}

/// The example scores with `churn_risk@production` from its warehouse's registry: on first use,
/// register the example's model file and promote it through a metric gate, as a user would with
/// `lakeforge model register` and `lakeforge model promote`.
async fn register_example_model(
    dir: &Path,
    loaded: &LoadedJob,
    config: &EngineConfig,
) -> anyhow::Result<()> {
    const NAME: &str = "churn_risk";
    let registry = Registry::load(&loaded.warehouse, config).await?;
    if registry.versions(NAME).next().is_some() {
        return Ok(());
    }
    let file = dir.join("models").join("churn_xgb.json");
    // Hold-out AUC reported by tests/fixtures/models/make_models.py, which trained it.
    let metrics = BTreeMap::from([("auc".to_string(), 0.701)]);
    let training = Some("synthetic churn rows (tests/fixtures/models/make_models.py)".to_string());
    let registration = ModelRegistration {
        file: &file,
        name: NAME,
        format: Some("xgboost-json"),
        metrics,
        training,
    };
    let registered = register_model(&loaded.warehouse, registration, config).await?;
    let gate = [Requirement::parse("auc>=0.65")?];
    promote_model(
        &loaded.warehouse,
        NAME,
        registered.version,
        "production",
        &gate,
        config,
    )
    .await?;
    eprintln!(
        "registered {} as {NAME}@{} and promoted it to production (lakeforge model list --warehouse {})",
        file.display(),
        registered.version,
        display_location(&loaded.warehouse)
    );
    Ok(())
}
