//! The `lakeforge` command line: parses arguments, runs one command of the engine, renders its
//! output. Errors become one `error:` line on stderr and a failing exit code; `anyhow` is used
//! only in this crate (the libraries have typed errors).

mod args;
mod commands;
mod progress;
mod render;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    quiet_caught_writer_panics();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Library errors already carry their causes in their message.
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // delta-rs's kernel logs errors it also returns; Lakeforge reports those itself.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                // delta-rs's writer warns about every binary column it keeps no statistics
                // for, and about upload parts it leaves after a failed write; neither is the
                // user's business (Lakeforge reports the failure itself).
                "warn,buoyant_kernel=off,deltalake_core::writer::stats=error,\
                 deltalake_core::datafile::writer=error,lakeforge_engine::schedule=info",
            )
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// delta-rs aborts a failed upload through object_store's `BufWriter::abort`, which panics by
/// design once the writer's shutdown has begun (a full disk fails exactly there), and catches
/// that panic (`catch_unwind`). The default hook would still print it, before Lakeforge's own
/// error line, as if the program had crashed. This hook is silent for exactly that caught
/// panic and hands every other one to the default hook.
fn quiet_caught_writer_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_buffered_writer = info.location().is_some_and(|location| {
            let file = location.file();
            file.contains("object_store") && file.ends_with("buffered.rs")
        });
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str));
        if in_buffered_writer && message == Some("Already shut down") {
            return;
        }
        default(info);
    }));
}

/// Runs the one command the user asked for.
async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let config = cli.engine.config()?;
    let json = cli.json;
    match cli.command {
        Command::Run(args) => commands::run::run(args, config, json).await,
        Command::Validate(args) => commands::validate::validate(args, &config).await,
        Command::Plan(args) => commands::validate::plan(args, &config).await,
        Command::History(args) => commands::tables::history(args, json).await,
        Command::Show(args) => commands::tables::show(args, &config, json).await,
        Command::Rollback(args) => commands::tables::rollback(args).await,
        Command::Vacuum(args) => commands::tables::vacuum(args, json).await,
        Command::Sql(args) => commands::tables::sql(args, &config, json).await,
        Command::Schedule(args) => commands::schedule::schedule(args, config).await,
        Command::Coordinator(args) => commands::cluster::coordinator(args).await,
        Command::Worker(args) => commands::cluster::worker(args, &config).await,
        Command::Status(args) => commands::warehouse::status(args, &config, json).await,
        Command::Runs(args) => commands::warehouse::runs(args, &config, json).await,
        Command::Dq(args) => commands::warehouse::dq(args, &config, json).await,
        Command::Model { action } => commands::model::model(action, &config, json).await,
        Command::Lineage(args) => commands::lineage::lineage(args, &config, json).await,
        Command::Example(args) => commands::example::example(args, config, json).await,
    }
}
