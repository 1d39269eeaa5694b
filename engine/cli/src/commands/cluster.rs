//! `lakeforge coordinator` and `lakeforge worker`: the cluster's roles.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use lakeforge_engine::EngineConfig;
use lakeforge_engine::config::parse_byte_size;
use lakeforge_worker::{
    ClusterAddress, CoordinatorOptions, WorkerOptions, run_coordinator, run_worker,
};

use crate::args::{CoordinatorArgs, WorkerArgs, duration_flag};
use crate::commands::schedule::stop_signal;

/// Runs a coordinator until a stop signal.
pub async fn coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    let bind: SocketAddr = args.bind.parse().with_context(|| {
        format!(
            "--bind '{}' must be HOST:PORT, e.g. 127.0.0.1:50050",
            args.bind
        )
    })?;
    let options = CoordinatorOptions {
        bind,
        worker_timeout: duration_flag("worker-timeout", &args.worker_timeout)?,
    };
    run_coordinator(
        options,
        lakeforge_engine::cluster::extensions(),
        |bound| {
            println!(
                "lakeforge coordinator {} listening on {bound} (clients: --cluster df://{bound}, workers: --coordinator {bound})",
                env!("CARGO_PKG_VERSION")
            );
        },
        stop_signal(),
    )
    .await?;
    println!("coordinator stopped");
    Ok(())
}

/// Runs a worker until a stop signal.
pub async fn worker(args: WorkerArgs, config: &EngineConfig) -> anyhow::Result<()> {
    // Ballista takes the bind address as a host and the ports separately; a HOST:PORT here
    // would only fail deep inside it, naming neither the flag nor the form it wants.
    if args.bind.parse::<IpAddr>().is_err() {
        anyhow::bail!(
            "--bind '{}' must be an IP address such as 127.0.0.1 or 0.0.0.0 (the ports have \
             their own flags: --flight-port and --grpc-port)",
            args.bind
        );
    }
    let options = WorkerOptions {
        coordinator: ClusterAddress::parse(&args.coordinator)?,
        advertised_host: args.advertise.unwrap_or_else(|| args.bind.clone()),
        bind_host: args.bind,
        flight_port: args.flight_port,
        grpc_port: args.grpc_port,
        slots: args.slots.unwrap_or(config.target_partitions),
        work_dir: args.work_dir,
        memory_limit: args.memory.as_deref().map(parse_byte_size).transpose()?,
        heartbeat: duration_flag("heartbeat", &args.heartbeat)?,
    };
    run_worker(options, lakeforge_engine::cluster::extensions()).await?;
    println!("worker stopped");
    Ok(())
}
