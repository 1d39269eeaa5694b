//! The scheduling logic: one task per job decides when it runs (cron occurrences, new input
//! versions), runs it with retries and a timeout, and records what each trigger led to.
//!
//! Everything that touches the world is behind three traits so the logic can be tested in
//! paused tokio time: [`JobRunner`] runs an attempt, [`TriggerStore`] keeps the trigger state
//! in the warehouse and probes input versions, [`Clock`] tells the time.
//!
//! Guarantees, each tested in `tests.rs`:
//! - one job never has two runs at once: its task runs attempts one after the other;
//! - cron occurrences missed while the daemon was down (found from the trigger state) or while
//!   the previous run was going follow `catch_up`;
//! - an input version is consumed only once the run it triggered has finished and been
//!   recorded, so a restart neither repeats nor skips it (runs interrupted by shutdown are not
//!   recorded and run again after the restart);
//! - a failed attempt is retried with exponential backoff; the next occurrence still happens.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lakeforge_planner::{CatchUp, JobScheduling};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::cancel::RunCancellation;
use crate::error::Result;
use crate::runs::{ProductVersion, RunStatus};
use crate::schedule::clock::Clock;

/// At most this many missed occurrences are run by `catch_up = "all"` (the newest ones).
pub const MAX_CATCH_UP_RUNS: usize = 1000;

/// An occurrence reached later than this is "missed" (the daemon was down or the previous run
/// overran) and follows `catch_up`; one reached sooner is simply run.
pub const ON_TIME_TOLERANCE: Duration = Duration::from_secs(60);

/// How long a cancelled attempt may take to stop before it is abandoned.
const CANCEL_GRACE: Duration = Duration::from_secs(60);

/// A job as the scheduler sees it: its spec (text kept so a broken edit does not change what
/// runs), triggers, and products.
#[derive(Debug, Clone)]
pub struct ScheduledJob {
    /// The job's name (unique in a daemon).
    pub name: String,
    /// The job file.
    pub spec_path: PathBuf,
    /// The job file's text when it last validated.
    pub spec_text: Arc<str>,
    /// The profile it runs with.
    pub profile: Option<String>,
    /// The job's warehouse.
    pub warehouse: Url,
    /// Cron, time zone, retries, timeout, catch-up.
    pub scheduling: JobScheduling,
    /// The tables whose new versions trigger a run (`after`, resolved).
    pub after: Vec<TriggerInput>,
    /// What the job publishes.
    pub products: Vec<ScheduledProduct>,
}

/// One `after` entry, resolved to a table.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerInput {
    /// The entry as written.
    pub name: String,
    /// The Delta table watched.
    pub table: Url,
}

/// A product of a scheduled job.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledProduct {
    /// Its name.
    pub name: String,
    /// Its table.
    pub table: Url,
    /// Its `freshness_sla`.
    pub freshness_sla: Option<Duration>,
}

/// Why a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Trigger {
    /// A cron occurrence.
    Schedule {
        /// The occurrence.
        scheduled_for: DateTime<Utc>,
    },
    /// New versions of `after` inputs.
    Inputs,
}

impl Trigger {
    /// `schedule` or `inputs`, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Schedule { .. } => "schedule",
            Trigger::Inputs => "inputs",
        }
    }
}

/// What the runner is asked to do.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Why.
    pub trigger: Trigger,
    /// `run_date` and `run_ts`.
    pub vars: BTreeMap<String, String>,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptOutcome {
    /// The run's id, when the run got far enough to have one.
    pub run_id: Option<String>,
    /// Succeeded, failed or cancelled.
    pub status: RunStatus,
    /// The error of a failed or cancelled run.
    pub error: Option<String>,
    /// Product versions committed.
    pub products: Vec<ProductVersion>,
    /// Checks that did not pass.
    pub failed_checks: u64,
}

impl AttemptOutcome {
    /// An attempt that failed before it became a run.
    pub fn failed(error: impl Into<String>) -> AttemptOutcome {
        AttemptOutcome {
            run_id: None,
            status: RunStatus::Failed,
            error: Some(error.into()),
            products: Vec::new(),
            failed_checks: 0,
        }
    }
}

/// Runs one attempt of a job.
pub trait JobRunner: Send + Sync + 'static {
    /// Runs `job` as `request` says; `cancel` may stop it before its commits.
    fn run(
        &self,
        job: &ScheduledJob,
        request: &RunRequest,
        cancel: RunCancellation,
    ) -> impl Future<Output = AttemptOutcome> + Send;
}

/// What the warehouse remembers of a job's triggers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriggerState {
    /// The newest cron occurrence a finished run was made for.
    pub last_scheduled_for: Option<DateTime<Utc>>,
    /// The newest cron occurrence whose run a shutdown interrupted.
    pub last_interrupted: Option<DateTime<Utc>>,
    /// For each watched table (by URL), the newest version a finished run consumed.
    pub consumed: BTreeMap<String, u64>,
}

impl TriggerState {
    /// Folds one trigger record in (records may come in any order).
    pub fn absorb(
        &mut self,
        scheduled_for: Option<DateTime<Utc>>,
        input_versions: &BTreeMap<String, u64>,
        interrupted: bool,
    ) {
        if interrupted {
            self.last_interrupted = self.last_interrupted.max(scheduled_for);
            return;
        }
        self.last_scheduled_for = self.last_scheduled_for.max(scheduled_for);
        for (table, version) in input_versions {
            let consumed = self.consumed.entry(table.clone()).or_insert(*version);
            *consumed = (*consumed).max(*version);
        }
    }

    /// Cron occurrences after this instant are due: just before an interrupted occurrence
    /// newer than the last finished one (so it runs again), else the last finished one.
    pub fn anchor(&self) -> Option<DateTime<Utc>> {
        match (self.last_interrupted, self.last_scheduled_for) {
            (Some(interrupted), last) if last.is_none_or(|l| interrupted > l) => {
                Some(interrupted - chrono::Duration::milliseconds(1))
            }
            (_, last) => last,
        }
    }
}

/// What a trigger led to, appended to the warehouse's trigger log.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerRecord {
    /// The job.
    pub job: String,
    /// Why it ran.
    pub trigger: Trigger,
    /// Versions of the watched tables seen when the run started (table URL → version).
    pub input_versions: BTreeMap<String, u64>,
    /// The last attempt's run id.
    pub run_id: Option<String>,
    /// The last attempt's status.
    pub status: RunStatus,
    /// A shutdown stopped the trigger before it finished: it consumed nothing and runs again
    /// after a restart.
    pub interrupted: bool,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    pub error: Option<String>,
    /// When the first attempt started.
    pub started_at: DateTime<Utc>,
    /// When the last attempt ended.
    pub ended_at: DateTime<Utc>,
    /// The job's cron pattern and time zone at the time, for `lakeforge status`.
    pub schedule: Option<String>,
    /// The job's time zone.
    pub timezone: String,
}

/// Keeps trigger state and watches tables.
pub trait TriggerStore: Send + Sync + 'static {
    /// The job's trigger state.
    fn load(&self, job: &ScheduledJob) -> impl Future<Output = Result<TriggerState>> + Send;

    /// Appends what a trigger led to.
    fn record(
        &self,
        job: &ScheduledJob,
        record: &TriggerRecord,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The newest version of a table, `None` when it does not exist yet.
    fn latest_version(&self, table: &Url) -> impl Future<Output = Result<Option<u64>>> + Send;
}

/// A run going on now.
#[derive(Debug, Clone, Serialize)]
pub struct RunningView {
    /// Why.
    pub trigger: Trigger,
    /// The attempt, from 1.
    pub attempt: u32,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// How a job's last trigger ended.
#[derive(Debug, Clone)]
pub struct LastRunView {
    /// Why it ran.
    pub trigger: Trigger,
    /// The last attempt's run id.
    pub run_id: Option<String>,
    /// `succeeded`, `failed` or `cancelled`.
    pub status: RunStatus,
    /// Attempts made.
    pub attempts: u32,
    /// The error.
    pub error: Option<String>,
    /// When the first attempt started.
    pub started_at: DateTime<Utc>,
    /// When the last attempt ended.
    pub ended_at: DateTime<Utc>,
}

/// What the operations endpoint shows of a job.
#[derive(Debug, Clone)]
pub struct JobView {
    /// The job's name.
    pub name: String,
    /// Its file.
    pub spec_path: PathBuf,
    /// Its cron pattern.
    pub schedule: Option<String>,
    /// Its time zone.
    pub timezone: String,
    /// Its `after` inputs.
    pub after: Vec<TriggerInput>,
    /// The next cron occurrence.
    pub next_run: Option<DateTime<Utc>>,
    /// The run going on.
    pub running: Option<RunningView>,
    /// The last finished trigger.
    pub last_run: Option<LastRunView>,
    /// Set when the job file changed and no longer validates (the previous spec is kept).
    pub spec_error: Option<String>,
    /// Its products.
    pub products: Vec<ScheduledProduct>,
}

/// Counters since the daemon started, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct SchedulerMetrics {
    /// Finished attempts by (job, status).
    pub runs: BTreeMap<(String, &'static str), u64>,
    /// Sum and count of attempt durations (seconds) by job.
    pub durations: BTreeMap<String, (f64, u64)>,
    /// Rows written by (job, product).
    pub rows_written: BTreeMap<(String, String), u64>,
    /// Checks that did not pass, by job.
    pub failed_checks: BTreeMap<String, u64>,
    /// Triggers that ran out of retries, by job.
    pub exhausted: BTreeMap<String, u64>,
}

/// A snapshot of the scheduler for the operations view.
#[derive(Debug, Clone, Default)]
pub struct SchedulerSnapshot {
    /// Every job, by name.
    pub jobs: BTreeMap<String, JobView>,
    /// Counters.
    pub metrics: SchedulerMetrics,
    /// Job files that could not be loaded at all (path → error).
    pub file_errors: BTreeMap<PathBuf, String>,
}

/// Knobs of the scheduler.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerOptions {
    /// How often `after` inputs are checked for new versions.
    pub poll_interval: Duration,
}

struct Shared<R, S, C> {
    runner: R,
    store: S,
    clock: C,
    options: SchedulerOptions,
    /// Cancelled when the daemon stops starting runs.
    stopping: CancellationToken,
    /// Woken when a job commits, so jobs that wait on its products look at once.
    committed: Notify,
    state: Mutex<SchedulerSnapshot>,
    /// The attempt each job has in flight, so shutdown can cancel it.
    in_flight: Mutex<BTreeMap<String, RunCancellation>>,
}

impl<R, S, C> Shared<R, S, C> {
    fn state(&self) -> MutexGuard<'_, SchedulerSnapshot> {
        // A poisoned lock only means a panic elsewhere mid-update of plain data; the data is
        // still the best view there is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn in_flight(&self) -> MutexGuard<'_, BTreeMap<String, RunCancellation>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The scheduler: add, replace and remove jobs; read a snapshot; shut down.
pub struct Scheduler<R, S, C> {
    shared: Arc<Shared<R, S, C>>,
    definitions: Mutex<BTreeMap<String, watch::Sender<Option<Arc<ScheduledJob>>>>>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
}

impl<R: JobRunner, S: TriggerStore, C: Clock> Scheduler<R, S, C> {
    /// A scheduler with no jobs.
    pub fn new(runner: R, store: S, clock: C, options: SchedulerOptions) -> Self {
        Scheduler {
            shared: Arc::new(Shared {
                runner,
                store,
                clock,
                options,
                stopping: CancellationToken::new(),
                committed: Notify::new(),
                state: Mutex::new(SchedulerSnapshot::default()),
                in_flight: Mutex::new(BTreeMap::new()),
            }),
            definitions: Mutex::new(BTreeMap::new()),
            tasks: tokio::sync::Mutex::new(JoinSet::new()),
        }
    }

    /// Adds a job, or replaces its definition (taking effect after its current run).
    pub async fn upsert(&self, job: ScheduledJob) {
        let job = Arc::new(job);
        {
            let mut state = self.shared.state();
            let view = state
                .jobs
                .entry(job.name.clone())
                .or_insert_with(|| job_view(&job));
            let running = view.running.take();
            let last_run = view.last_run.take();
            let next_run = view.next_run;
            *view = job_view(&job);
            view.running = running;
            view.last_run = last_run;
            view.next_run = next_run;
        }
        let receiver = {
            let mut definitions = self.definitions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(sender) = definitions.get(&job.name) {
                sender.send_replace(Some(job));
                return;
            }
            let (sender, receiver) = watch::channel(Some(Arc::clone(&job)));
            definitions.insert(job.name.clone(), sender);
            receiver
        };
        let shared = Arc::clone(&self.shared);
        self.tasks
            .lock()
            .await
            .spawn(async move { job_task(shared, receiver).await });
    }

    /// Removes a job (its current run finishes first).
    pub fn remove(&self, name: &str) {
        let sender = self
            .definitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(sender) = sender {
            sender.send_replace(None);
        }
        self.shared.state().jobs.remove(name);
    }

    /// Marks a job's file as not validating (the previous definition keeps running), or clears
    /// the mark with `None`.
    pub fn set_spec_error(&self, name: &str, error: Option<String>) {
        if let Some(view) = self.shared.state().jobs.get_mut(name) {
            view.spec_error = error;
        }
    }

    /// Records that a job file cannot be loaded at all (`None` clears it).
    pub fn set_file_error(&self, path: PathBuf, error: Option<String>) {
        let mut state = self.shared.state();
        match error {
            Some(error) => state.file_errors.insert(path, error),
            None => state.file_errors.remove(&path),
        };
    }

    /// What the scheduler is doing, for the operations view.
    pub fn snapshot(&self) -> SchedulerSnapshot {
        self.shared.state().clone()
    }

    /// The clock the scheduler runs on.
    pub fn clock(&self) -> &C {
        &self.shared.clock
    }

    /// Stops starting runs, waits up to `grace` for runs in flight, then cancels them (they
    /// commit nothing and are recorded as interrupted) and waits for them to stop. `hurry`
    /// (an operator's second stop signal) ends the grace period early.
    pub async fn shutdown(&self, grace: Duration, hurry: impl Future<Output = ()>) {
        self.shared.stopping.cancel();
        let mut tasks = self.tasks.lock().await;
        let reason = tokio::select! {
            drained = tokio::time::timeout(grace, async {
                while tasks.join_next().await.is_some() {}
            }) => match drained {
                Ok(()) => return,
                Err(_) => format!("grace period of {} exceeded", humanize(grace)),
            },
            () = hurry => "stopped again during the grace period".to_string(),
        };
        let in_flight: Vec<(String, RunCancellation)> = self
            .shared
            .in_flight()
            .iter()
            .map(|(job, cancel)| (job.clone(), cancel.clone()))
            .collect();
        for (job, cancel) in in_flight {
            tracing::warn!(job, "cancelling the run in flight: {reason}");
            cancel.cancel(format!("the scheduler is shutting down ({reason})"));
        }
        let stopped = tokio::time::timeout(CANCEL_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if stopped.is_err() {
            tracing::error!("runs did not stop after cancellation; abandoning them");
            tasks.abort_all();
        }
    }
}

fn job_view(job: &ScheduledJob) -> JobView {
    JobView {
        name: job.name.clone(),
        spec_path: job.spec_path.clone(),
        schedule: job
            .scheduling
            .cron
            .as_ref()
            .map(|c| c.pattern().to_string()),
        timezone: job.scheduling.timezone.name().to_string(),
        after: job.after.clone(),
        next_run: None,
        running: None,
        last_run: None,
        spec_error: None,
        products: job.products.clone(),
    }
}

/// `90s`, `30m`, `1h30m` style, for messages.
pub fn humanize(duration: Duration) -> String {
    let millis = duration.as_millis();
    if !millis.is_multiple_of(1000) || millis == 0 {
        return format!("{millis}ms");
    }
    let mut seconds = duration.as_secs();
    let mut text = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            text.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    text
}

/// How a trigger's attempts ended.
enum TriggerEnd {
    /// Succeeded, or failed after its last retry: record it and consume what it consumed.
    Finished(TriggerRecord),
    /// Shutdown interrupted it: recorded as interrupted (consuming nothing), so it runs again
    /// after a restart.
    Interrupted(TriggerRecord),
}

/// One job's loop: waits for its next trigger, runs it, repeats.
async fn job_task<R: JobRunner, S: TriggerStore, C: Clock>(
    shared: Arc<Shared<R, S, C>>,
    mut definition: watch::Receiver<Option<Arc<ScheduledJob>>>,
) {
    let Some(mut job) = definition.borrow_and_update().clone() else {
        return;
    };
    let mut state = match shared.store.load(&job).await {
        Ok(state) => state,
        Err(error) => {
            tracing::error!(job = job.name, %error, "cannot read the trigger state; starting afresh");
            TriggerState::default()
        }
    };
    // Occurrences after the anchor are due. Without history, the daemon starts from now: there
    // is nothing to catch up on.
    let mut anchor = state.anchor().unwrap_or_else(|| shared.clock.now());

    loop {
        if shared.stopping.is_cancelled() {
            return;
        }
        let now = shared.clock.now();
        let scheduled = due_occurrences(&job.scheduling, anchor, now);
        let versions = observe_inputs(&shared, &job).await;
        let inputs_changed = versions
            .iter()
            .any(|(table, version)| state.consumed.get(table).is_none_or(|seen| version > seen));

        if let Some(latest_due) = scheduled.due.last().copied() {
            anchor = anchor.max(latest_due);
        }
        let mut triggers: Vec<Trigger> = scheduled
            .run
            .iter()
            .map(|&scheduled_for| Trigger::Schedule { scheduled_for })
            .collect();
        if triggers.is_empty() && inputs_changed {
            triggers.push(Trigger::Inputs);
        }
        if !scheduled.skipped.is_empty() {
            tracing::info!(
                job = job.name,
                skipped = scheduled.skipped.len(),
                "missed occurrences skipped (catch_up = \"{}\")",
                job.scheduling.catch_up.as_str()
            );
        }

        for trigger in triggers {
            if shared.stopping.is_cancelled() {
                return;
            }
            match run_trigger(&shared, &job, trigger, &versions).await {
                TriggerEnd::Finished(record) => {
                    if let Err(error) = shared.store.record(&job, &record).await {
                        tracing::error!(job = job.name, %error, "cannot record the trigger");
                    }
                    if let Trigger::Schedule { scheduled_for } = trigger {
                        state.last_scheduled_for = Some(scheduled_for);
                    }
                    for (table, version) in &versions {
                        let consumed = state.consumed.entry(table.clone()).or_insert(*version);
                        *consumed = (*consumed).max(*version);
                    }
                    if record.status == RunStatus::Succeeded {
                        shared.committed.notify_waiters();
                    }
                }
                TriggerEnd::Interrupted(record) => {
                    if let Err(error) = shared.store.record(&job, &record).await {
                        tracing::error!(job = job.name, %error, "cannot record the interrupted trigger");
                    }
                    return;
                }
            }
        }
        if !scheduled.run.is_empty() || inputs_changed {
            // Runs take time: look again before waiting (occurrences may have come due).
            continue;
        }

        let next_run = job
            .scheduling
            .cron
            .as_ref()
            .and_then(|cron| cron.next_after(anchor.max(now)));
        if let Some(view) = shared.state().jobs.get_mut(&job.name) {
            view.next_run = next_run;
        }
        let poll = !job.after.is_empty();
        tokio::select! {
            _ = shared.stopping.cancelled() => return,
            _ = async {
                match next_run {
                    Some(at) => shared.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
            _ = async {
                if poll {
                    shared.clock.sleep(shared.options.poll_interval).await
                } else {
                    std::future::pending().await
                }
            } => {}
            _ = shared.committed.notified(), if poll => {}
            changed = definition.changed() => {
                let replaced = changed.ok().and_then(|()| definition.borrow_and_update().clone());
                match replaced {
                    Some(new_job) => {
                        tracing::info!(job = new_job.name, "job definition reloaded");
                        job = new_job;
                    }
                    None => return,
                }
            }
        }
    }
}

/// Due cron occurrences and what `catch_up` makes of them.
struct DueOccurrences {
    /// Every occurrence in `(anchor, now]`.
    due: Vec<DateTime<Utc>>,
    /// Those to run, oldest first.
    run: Vec<DateTime<Utc>>,
    /// Those skipped.
    skipped: Vec<DateTime<Utc>>,
}

fn due_occurrences(
    scheduling: &JobScheduling,
    anchor: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DueOccurrences {
    let Some(cron) = &scheduling.cron else {
        return DueOccurrences {
            due: Vec::new(),
            run: Vec::new(),
            skipped: Vec::new(),
        };
    };
    let due = cron.occurrences_between(anchor, now, MAX_CATCH_UP_RUNS);
    let tolerance = chrono::Duration::from_std(ON_TIME_TOLERANCE).unwrap_or_default();
    let Some(&newest) = due.last() else {
        return DueOccurrences {
            due,
            run: Vec::new(),
            skipped: Vec::new(),
        };
    };
    let newest_on_time = now - newest <= tolerance;
    let (run, skipped): (Vec<_>, Vec<_>) = match scheduling.catch_up {
        CatchUp::All => (due.clone(), Vec::new()),
        CatchUp::Latest => {
            let (older, newest) = due.split_at(due.len() - 1);
            (newest.to_vec(), older.to_vec())
        }
        CatchUp::None if newest_on_time => {
            let (older, newest) = due.split_at(due.len() - 1);
            (newest.to_vec(), older.to_vec())
        }
        CatchUp::None => (Vec::new(), due.clone()),
    };
    DueOccurrences { due, run, skipped }
}

/// The current versions of the job's `after` tables (those that exist), by URL.
async fn observe_inputs<R, S: TriggerStore, C>(
    shared: &Shared<R, S, C>,
    job: &ScheduledJob,
) -> BTreeMap<String, u64> {
    let mut versions = BTreeMap::new();
    for input in &job.after {
        match shared.store.latest_version(&input.table).await {
            Ok(Some(version)) => {
                versions.insert(input.table.to_string(), version);
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(job = job.name, input = input.name, %error, "cannot read the input's version");
            }
        }
    }
    versions
}

/// Runs one trigger: attempts with backoff and timeout until one succeeds or retries run out.
async fn run_trigger<R: JobRunner, S: TriggerStore, C: Clock>(
    shared: &Shared<R, S, C>,
    job: &ScheduledJob,
    trigger: Trigger,
    versions: &BTreeMap<String, u64>,
) -> TriggerEnd {
    let scheduling = &job.scheduling;
    let started_at = shared.clock.now();
    let vars = scheduling.run_vars(match trigger {
        Trigger::Schedule { scheduled_for } => scheduled_for,
        Trigger::Inputs => started_at,
    });
    let record = |outcome: &AttemptOutcome, attempts: u32, interrupted: bool| TriggerRecord {
        job: job.name.clone(),
        trigger,
        input_versions: versions.clone(),
        run_id: outcome.run_id.clone(),
        status: outcome.status,
        interrupted,
        attempts,
        error: outcome.error.clone(),
        started_at,
        ended_at: shared.clock.now(),
        schedule: scheduling.cron.as_ref().map(|c| c.pattern().to_string()),
        timezone: scheduling.timezone.name().to_string(),
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let request = RunRequest {
            trigger,
            vars: vars.clone(),
            attempt,
        };
        let outcome = run_attempt(shared, job, &request).await;
        if outcome.status == RunStatus::Cancelled && shared.stopping.is_cancelled() {
            return TriggerEnd::Interrupted(record(&outcome, attempt, true));
        }
        let finished = outcome.status == RunStatus::Succeeded || attempt > scheduling.retries;
        if !finished {
            let backoff = scheduling.backoff(attempt);
            tracing::warn!(
                job = job.name,
                attempt,
                error = outcome.error.as_deref().unwrap_or(""),
                "attempt failed; retrying in {}",
                humanize(backoff)
            );
            tokio::select! {
                _ = shared.stopping.cancelled() => {
                    return TriggerEnd::Interrupted(record(&outcome, attempt, true));
                }
                _ = shared.clock.sleep(backoff) => {}
            }
            continue;
        }
        let record = record(&outcome, attempt, false);
        if outcome.status != RunStatus::Succeeded {
            *shared
                .state()
                .metrics
                .exhausted
                .entry(job.name.clone())
                .or_default() += 1;
        }
        if let Some(view) = shared.state().jobs.get_mut(&job.name) {
            view.last_run = Some(LastRunView {
                trigger,
                run_id: outcome.run_id,
                status: outcome.status,
                attempts: attempt,
                error: outcome.error,
                started_at,
                ended_at: record.ended_at,
            });
        }
        return TriggerEnd::Finished(record);
    }
}

/// One attempt, under the job's timeout.
async fn run_attempt<R: JobRunner, S, C: Clock>(
    shared: &Shared<R, S, C>,
    job: &ScheduledJob,
    request: &RunRequest,
) -> AttemptOutcome {
    let since = shared.clock.now();
    if let Some(view) = shared.state().jobs.get_mut(&job.name) {
        view.running = Some(RunningView {
            trigger: request.trigger,
            attempt: request.attempt,
            since,
        });
    }
    tracing::info!(
        job = job.name,
        trigger = request.trigger.kind(),
        attempt = request.attempt,
        "run starting"
    );
    let cancel = RunCancellation::new();
    shared.in_flight().insert(job.name.clone(), cancel.clone());
    let run = shared.runner.run(job, request, cancel.clone());
    tokio::pin!(run);
    let outcome = match job.scheduling.timeout {
        None => run.await,
        Some(timeout) => {
            tokio::select! {
                outcome = &mut run => outcome,
                _ = shared.clock.sleep(timeout) => {
                    cancel.cancel(format!("timed out after {}", humanize(timeout)));
                    match tokio::time::timeout(CANCEL_GRACE, &mut run).await {
                        Ok(outcome) => outcome,
                        Err(_) => AttemptOutcome {
                            status: RunStatus::Cancelled,
                            ..AttemptOutcome::failed(format!(
                                "timed out after {} and did not stop within {}",
                                humanize(timeout),
                                humanize(CANCEL_GRACE)
                            ))
                        },
                    }
                }
            }
        }
    };
    shared.in_flight().remove(&job.name);
    let ended = shared.clock.now();
    match &outcome.error {
        Some(error) if outcome.status != RunStatus::Succeeded => tracing::warn!(
            job = job.name,
            run_id = outcome.run_id.as_deref().unwrap_or("-"),
            status = outcome.status.as_str(),
            error,
            "run ended"
        ),
        _ => tracing::info!(
            job = job.name,
            run_id = outcome.run_id.as_deref().unwrap_or("-"),
            status = outcome.status.as_str(),
            "run ended"
        ),
    }
    let mut state = shared.state();
    if let Some(view) = state.jobs.get_mut(&job.name) {
        view.running = None;
    }
    let metrics = &mut state.metrics;
    *metrics
        .runs
        .entry((job.name.clone(), outcome.status.as_str()))
        .or_default() += 1;
    let duration = metrics.durations.entry(job.name.clone()).or_default();
    duration.0 += (ended - since).to_std().unwrap_or_default().as_secs_f64();
    duration.1 += 1;
    for product in &outcome.products {
        *metrics
            .rows_written
            .entry((job.name.clone(), product.product.clone()))
            .or_default() += product.rows;
    }
    *metrics.failed_checks.entry(job.name.clone()).or_default() += outcome.failed_checks;
    outcome
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
