//! `lakeforge schedule`: the daemon, stopped by SIGTERM or SIGINT.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context;
use lakeforge_engine::EngineConfig;
use lakeforge_engine::schedule::{DaemonOptions, run_daemon};

use crate::args::{ScheduleArgs, duration_flag};

/// Runs the scheduler until a stop signal.
pub async fn schedule(args: ScheduleArgs, config: EngineConfig) -> anyhow::Result<()> {
    let config = args.cluster.apply(config)?;
    let http = match args.http.as_str() {
        "off" | "none" => None,
        address => Some(address.parse().with_context(|| {
            format!("--http: {address:?} is not an address like 127.0.0.1:9464")
        })?),
    };
    let options = DaemonOptions {
        paths: args.paths,
        http,
        poll_interval: duration_flag("poll", &args.poll)?.max(Duration::from_millis(10)),
        grace: duration_flag("grace", &args.grace)?,
        config,
        profile: args.profile,
    };
    run_daemon(options, stop_signal, |ready| {
        match ready.http {
            Some(address) => println!(
                "scheduling {} job(s); operations endpoint on http://{address}",
                ready.jobs
            ),
            None => println!("scheduling {} job(s)", ready.jobs),
        }
        // Scripts wait for this line; stdout is a pipe there, so it must not sit in a buffer.
        let _ = std::io::stdout().flush();
    })
    .await?;
    println!("scheduler stopped");
    Ok(())
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
