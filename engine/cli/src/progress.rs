//! The spinner a terminal shows while a run works.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lakeforge_engine::job::{RunEvent, RunObserver};

/// A spinner on stderr showing what a run is doing; silent when stderr is not a terminal.
pub struct TerminalProgress {
    bar: Option<indicatif::ProgressBar>,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl TerminalProgress {
    /// A spinner on stderr when it is a terminal.
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        TerminalProgress {
            bar,
            ticker: Mutex::new(None),
        }
    }

    fn stop_ticker(&self) {
        if let Ok(mut ticker) = self.ticker.lock()
            && let Some(handle) = ticker.take()
        {
            handle.abort();
        }
    }

    /// Stops and clears the spinner.
    pub fn finish(&self) {
        self.stop_ticker();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl RunObserver for TerminalProgress {
    fn on_event(&self, event: RunEvent) {
        let Some(bar) = &self.bar else { return };
        self.stop_ticker();
        match event {
            RunEvent::Planning => bar.set_message("planning"),
            RunEvent::Committing => bar.set_message("committing"),
            RunEvent::Checking { dataset } => bar.set_message(format!("checking {dataset}")),
            RunEvent::Writing { product, rows } => {
                let bar = bar.clone();
                let rows = Arc::clone(&rows);
                let handle = tokio::spawn(async move {
                    loop {
                        bar.set_message(format!(
                            "writing {product}: {} rows",
                            rows.load(Ordering::Relaxed)
                        ));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                });
                if let Ok(mut ticker) = self.ticker.lock() {
                    *ticker = Some(handle);
                }
            }
        }
    }
}
