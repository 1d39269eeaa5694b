//! The scheduling logic in paused tokio time: hours of schedule run in milliseconds.

use std::collections::VecDeque;
use std::str::FromStr;

use lakeforge_planner::JobSpec;

use super::*;
use crate::error::EngineError;
use crate::schedule::clock::TokioClock;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn table(name: &str) -> Url {
    Url::from_str(&format!("file:///warehouse/{name}")).unwrap()
}

/// A job named `name` with the given `[job]` keys; it publishes `<name>_out`.
fn job(name: &str, keys: &str) -> ScheduledJob {
    let text = format!(
        "[job]\nname = \"{name}\"\nwarehouse = \"wh\"\n{keys}\n[[products]]\nname = \"{name}_out\"\nsql = \"SELECT 1\"\n"
    );
    let spec = JobSpec::parse(&text, "job.toml").unwrap();
    let scheduling = JobScheduling::from_section(&spec.job).unwrap();
    ScheduledJob {
        name: name.to_string(),
        spec_path: PathBuf::from(format!("{name}.toml")),
        spec_text: Arc::from(text.as_str()),
        profile: None,
        warehouse: table(""),
        after: scheduling
            .after
            .iter()
            .map(|a| TriggerInput {
                name: a.clone(),
                table: table(a),
            })
            .collect(),
        scheduling,
        products: vec![ScheduledProduct {
            name: format!("{name}_out"),
            table: table(&format!("{name}_out")),
            freshness_sla: None,
        }],
    }
}

#[derive(Debug, Clone)]
enum Behaviour {
    Succeed,
    Fail,
    /// Takes this long, then succeeds (unless cancelled first).
    Take(Duration),
    /// Runs until cancelled.
    Hang,
}

#[derive(Debug, Clone)]
struct Call {
    job: String,
    trigger: Trigger,
    attempt: u32,
    at: DateTime<Utc>,
    vars: BTreeMap<String, String>,
}

#[derive(Default)]
struct World {
    versions: Mutex<BTreeMap<String, u64>>,
    records: Mutex<Vec<TriggerRecord>>,
    script: Mutex<VecDeque<Behaviour>>,
    calls: Mutex<Vec<Call>>,
    running: Mutex<BTreeMap<String, u32>>,
    overlaps: Mutex<u32>,
}

#[derive(Clone)]
struct Fake {
    world: Arc<World>,
    clock: TokioClock,
}

impl Fake {
    fn new(origin: &str) -> Fake {
        Fake {
            world: Arc::new(World::default()),
            clock: TokioClock::starting_at(at(origin)),
        }
    }

    fn script(&self, behaviours: impl IntoIterator<Item = Behaviour>) {
        self.world.script.lock().unwrap().extend(behaviours);
    }

    fn set_version(&self, name: &str, version: u64) {
        self.world
            .versions
            .lock()
            .unwrap()
            .insert(table(name).to_string(), version);
    }

    fn calls(&self) -> Vec<Call> {
        self.world.calls.lock().unwrap().clone()
    }

    fn calls_of(&self, job: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.job == job).collect()
    }

    fn records(&self) -> Vec<TriggerRecord> {
        self.world.records.lock().unwrap().clone()
    }

    fn scheduler(&self, poll: Duration) -> Scheduler<Fake, Fake, TokioClock> {
        Scheduler::new(
            self.clone(),
            self.clone(),
            self.clock,
            SchedulerOptions {
                poll_interval: poll,
            },
        )
    }

    /// Lets the scheduler work until the clock reads `until`.
    async fn advance_to(&self, until: &str) {
        self.clock.sleep_until(at(until)).await;
    }
}

impl JobRunner for Fake {
    async fn run(
        &self,
        job: &ScheduledJob,
        request: &RunRequest,
        cancel: RunCancellation,
    ) -> AttemptOutcome {
        let behaviour = self
            .world
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Behaviour::Succeed);
        self.world.calls.lock().unwrap().push(Call {
            job: job.name.clone(),
            trigger: request.trigger,
            attempt: request.attempt,
            at: self.clock.now(),
            vars: request.vars.clone(),
        });
        {
            let mut running = self.world.running.lock().unwrap();
            let count = running.entry(job.name.clone()).or_default();
            *count += 1;
            if *count > 1 {
                *self.world.overlaps.lock().unwrap() += 1;
            }
        }
        let cancelled = |cancel: &RunCancellation| AttemptOutcome {
            status: RunStatus::Cancelled,
            ..AttemptOutcome::failed(cancel.error().to_string())
        };
        let outcome = match behaviour {
            Behaviour::Succeed => None,
            Behaviour::Fail => Some(AttemptOutcome::failed("boom")),
            Behaviour::Take(duration) => tokio::select! {
                _ = self.clock.sleep(duration) => None,
                _ = cancel.cancelled() => Some(cancelled(&cancel)),
            },
            Behaviour::Hang => {
                cancel.cancelled().await;
                Some(cancelled(&cancel))
            }
        };
        *self
            .world
            .running
            .lock()
            .unwrap()
            .get_mut(&job.name)
            .unwrap() -= 1;
        outcome.unwrap_or_else(|| {
            // Success commits a new version of each product.
            let mut versions = self.world.versions.lock().unwrap();
            let products = job
                .products
                .iter()
                .map(|p| {
                    let version = versions
                        .entry(p.table.to_string())
                        .and_modify(|v| *v += 1)
                        .or_insert(0);
                    ProductVersion {
                        product: p.name.clone(),
                        table: p.table.to_string(),
                        version: *version,
                        rows: 10,
                    }
                })
                .collect();
            AttemptOutcome {
                run_id: Some(format!("run-{}", self.world.calls.lock().unwrap().len())),
                status: RunStatus::Succeeded,
                error: None,
                products,
                failed_checks: 0,
            }
        })
    }
}

impl TriggerStore for Fake {
    async fn load(&self, job: &ScheduledJob) -> Result<TriggerState> {
        let mut state = TriggerState::default();
        for record in self.world.records.lock().unwrap().iter() {
            if record.job != job.name {
                continue;
            }
            let scheduled_for = match record.trigger {
                Trigger::Schedule { scheduled_for } => Some(scheduled_for),
                Trigger::Inputs => None,
            };
            state.absorb(scheduled_for, &record.input_versions, record.interrupted);
        }
        Ok(state)
    }

    async fn record(&self, _job: &ScheduledJob, record: &TriggerRecord) -> Result<()> {
        self.world.records.lock().unwrap().push(record.clone());
        Ok(())
    }

    async fn latest_version(&self, table: &Url) -> Result<Option<u64>> {
        if table.path().ends_with("/broken") {
            return Err(EngineError::Usage("unreadable".to_string()));
        }
        Ok(self
            .world
            .versions
            .lock()
            .unwrap()
            .get(table.as_str())
            .copied())
    }
}

const POLL: Duration = Duration::from_secs(5);

#[tokio::test(start_paused = true)]
async fn cron_runs_at_each_occurrence_with_run_vars() {
    let fake = Fake::new("2026-01-01T00:00:00Z");
    let scheduler = fake.scheduler(POLL);
    scheduler
        .upsert(job(
            "hourly",
            "schedule = \"0 * * * *\"\ntimezone = \"America/New_York\"",
        ))
        .await;
    fake.advance_to("2026-01-01T03:30:00Z").await;
    let calls = fake.calls();
    let times: Vec<_> = calls.iter().map(|c| c.at).collect();
    assert_eq!(
        times,
        vec![
            at("2026-01-01T01:00:00Z"),
            at("2026-01-01T02:00:00Z"),
            at("2026-01-01T03:00:00Z")
        ]
    );
    // New York is 5 hours behind UTC in January: the first run is on the 31st there.
    assert_eq!(calls[0].vars["run_date"], "2025-12-31");
    assert_eq!(calls[0].vars["run_ts"], "2025-12-31T20:00:00-05:00");
    let snapshot = scheduler.snapshot();
    let view = &snapshot.jobs["hourly"];
    assert_eq!(view.next_run, Some(at("2026-01-01T04:00:00Z")));
    assert_eq!(view.last_run.as_ref().unwrap().status, RunStatus::Succeeded);
    assert_eq!(
        snapshot.metrics.runs[&("hourly".to_string(), "succeeded")],
        3
    );
    assert_eq!(
        fake.records().iter().map(|r| r.trigger).collect::<Vec<_>>()[2],
        Trigger::Schedule {
            scheduled_for: at("2026-01-01T03:00:00Z")
        }
    );
    scheduler
        .shutdown(Duration::from_secs(1), std::future::pending())
        .await;
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_and_the_next_occurrence_still_runs() {
    let fake = Fake::new("2026-01-01T00:00:00Z");
    fake.script([Behaviour::Fail, Behaviour::Fail, Behaviour::Fail]);
    let scheduler = fake.scheduler(POLL);
    scheduler
        .upsert(job(
            "flaky",
            "schedule = \"0 * * * *\"\nretries = 2\nretry_delay = \"10s\"",
        ))
        .await;
    fake.advance_to("2026-01-01T02:00:05Z").await;
    let calls = fake.calls();
    let attempts: Vec<_> = calls.iter().map(|c| (c.at, c.attempt)).collect();
    assert_eq!(
        attempts,
        vec![
            (at("2026-01-01T01:00:00Z"), 1),
            (at("2026-01-01T01:00:10Z"), 2),
            // The second retry waits twice as long.
            (at("2026-01-01T01:00:30Z"), 3),
            (at("2026-01-01T02:00:00Z"), 1),
        ]
    );
    let records = fake.records();
    assert_eq!(records.len(), 2);
    assert_eq!(
        (records[0].status, records[0].attempts),
        (RunStatus::Failed, 3)
    );
    assert_eq!(records[0].error.as_deref(), Some("boom"));
    assert_eq!(
        (records[1].status, records[1].attempts),
        (RunStatus::Succeeded, 1)
    );
    let metrics = scheduler.snapshot().metrics;
    assert_eq!(metrics.runs[&("flaky".to_string(), "failed")], 3);
    assert_eq!(metrics.exhausted["flaky"], 1);
    scheduler
        .shutdown(Duration::from_secs(1), std::future::pending())
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_attempt_is_cancelled_and_retried() {
    let fake = Fake::new("2026-01-01T00:00:00Z");
    fake.script([Behaviour::Hang]);
    let scheduler = fake.scheduler(POLL);
    scheduler
        .upsert(job(
            "slow",
            "schedule = \"0 * * * *\"\ntimeout = \"5m\"\nretries = 1",
        ))
        .await;
    fake.advance_to("2026-01-01T01:10:00Z").await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    // The retry comes after the 5-minute timeout plus the default 30s delay.
    assert_eq!(calls[1].at, at("2026-01-01T01:05:30Z"));
    let metrics = scheduler.snapshot().metrics;
    assert_eq!(metrics.runs[&("slow".to_string(), "cancelled")], 1);
    assert_eq!(metrics.runs[&("slow".to_string(), "succeeded")], 1);
    let records = fake.records();
    assert_eq!(
        (records[0].status, records[0].attempts),
        (RunStatus::Succeeded, 2)
    );
    scheduler
        .shutdown(Duration::from_secs(1), std::future::pending())
        .await;

    // Without retries the cancelled attempt is what is recorded, with the reason.
    let fake = Fake::new("2026-01-01T00:00:00Z");
    fake.script([Behaviour::Hang]);
    let scheduler = fake.scheduler(POLL);
    scheduler
        .upsert(job("slow", "schedule = \"0 * * * *\"\ntimeout = \"90s\""))
        .await;
    fake.advance_to("2026-01-01T01:05:00Z").await;
    let records = fake.records();
    assert_eq!(records[0].status, RunStatus::Cancelled);
    assert_eq!(
        records[0].error.as_deref(),
        Some("cancelled: timed out after 1m30s")
    );
    scheduler
        .shutdown(Duration::from_secs(1), std::future::pending())
        .await;
}

/// A warehouse whose trigger log says the job last ran for 20:00, four hours before the daemon
/// starts at 00:30: 21:00, 22:00, 23:00 and 00:00 were missed.
async fn after_downtime(catch_up: &str) -> Fake {
    let fake = Fake::new("2026-01-01T00:30:00Z");
    fake.world.records.lock().unwrap().push(TriggerRecord {
        job: "daily".to_string(),
        trigger: Trigger::Schedule {
            scheduled_for: at("2025-12-31T20:00:00Z"),
        },
        input_versions: BTreeMap::new(),
        run_id: None,
        status: RunStatus::Succeeded,
        interrupted: false,
        attempts: 1,
        error: None,
        started_at: at("2025-12-31T20:00:00Z"),
        ended_at: at("2025-12-31T20:01:00Z"),
        schedule: None,
        timezone: "UTC".to_string(),
    });
    let scheduler = fake.scheduler(POLL);
    scheduler
        .upsert(job(
            "daily",
            &format!("schedule = \"0 * * * *\"\ncatch_up = \"{catch_up}\""),
        ))
        .await;
    fake.advance_to("2026-01-01T00:59:00Z").await;
    scheduler
        .shutdown(Duration::from_secs(1), std::future::pending())
        .await;
    fake
}

fn scheduled_for(calls: &[Call]) -> Vec<DateTime<Utc>> {
    calls
        .iter()
        .map(|c| match c.trigger {
            Trigger::Schedule { scheduled_for } => scheduled_for,
            Trigger::Inputs => panic!("not a scheduled run"),
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn catch_up_after_downtime() {
    let latest = after_downtime("latest").await;
    assert_eq!(
        scheduled_for(&latest.calls()),
        vec![at("2026-01-01T00:00:00Z")]
    );
    // The missed run is for its own slot: its variables name the occurrence, not now.
    assert_eq!(latest.calls()[0].vars["run_ts"], "2026-01-01T00:00:00Z");

    let all = after_downtime("all").await;
    assert_eq!(
        scheduled_for(&all.calls()),
        vec![
            at("2025-12-31T21:00:00Z"),
            at("2025-12-31T22:00:00Z"),
            at("2025-12-31T23:00:00Z"),
            at("2026-01-01T00:00:00Z"),
        ]
    );

    let none = after_downtime("none").await;
    assert!(none.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_overrunning_run_never_overlaps_the_next() {
    let fake = Fake::new("2026-01-01T00:00:00Z");
    fake.script([Behaviour::Take(Duration::from_secs(150))]);
    let scheduler = fake.scheduler(POLL);
    scheduler
        .upsert(job("busy", "schedule = \"* * * * *\""))
        .await;
    fake.advance_to("2026-01-01T00:04:30Z").await;
    scheduler
        .shutdown(Duration::from_secs(1), std::future::pending())
        .await;
    assert_eq!(*fake.world.overlaps.lock().unwrap(), 0);
    let calls = fake.calls();
    // 00:01 runs until 00:03:30; 00:02 and 00:03 came due meanwhile and collapse into one run
    // for 00:03 (catch_up = latest); then 00:04 is on time.
    assert_eq!(
        scheduled_for(&calls),
        vec![
            at("2026-01-01T00:01:00Z"),
            at("2026-01-01T00:03:00Z"),
            at("2026-01-01T00:04:00Z")
        ]
    );
    assert_eq!(calls[1].at, at("2026-01-01T00:03:30Z"));
}

#[tokio::test(start_paused = true)]
async fn new_input_versions_trigger_once_even_across_a_restart() {
    let fake = Fake::new("2026-01-01T00:00:00Z");
    fake.set_version("upstream", 0);
    let scheduler = fake.scheduler(POLL);
    scheduler
        .upsert(job("down", "after = [\"upstream\"]"))
        .await;
    // Never built from `upstream`: the current version triggers a first run.
    fake.advance_to("2026-01-01T00:01:02Z").await;
    assert_eq!(fake.calls_of("down").len(), 1);
    fake.set_version("upstream", 1);
    fake.advance_to("2026-01-01T00:02:00Z").await;
    assert_eq!(fake.calls_of("down").len(), 2);
    assert_eq!(fake.calls_of("down")[1].at, at("2026-01-01T00:01:05Z"));
    // Nothing new: no more runs however long it waits.
    fake.advance_to("2026-01-01T05:00:00Z").await;
    assert_eq!(fake.calls_of("down").len(), 2);
    scheduler
        .shutdown(Duration::from_secs(1), std::future::pending())
        .await;

    // A version lands while the daemon is down: the next daemon runs it exactly once.
    fake.set_version("upstream", 2);
    let restarted = fake.scheduler(POLL);
    restarted
        .upsert(job("down", "after = [\"upstream\"]"))
        .await;
    fake.advance_to("2026-01-01T06:00:00Z").await;
    restarted
        .shutdown(Duration::from_secs(1), std::future::pending())
        .await;
    let calls = fake.calls_of("down");
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[2].trigger, Trigger::Inputs);
    let consumed: Vec<_> = fake
        .records()
        .iter()
        .map(|r| r.input_versions[table("upstream").as_str()])
        .collect();
    assert_eq!(consumed, vec![0, 1, 2]);

    // And one more restart with nothing new runs nothing.
    let again = fake.scheduler(POLL);
    again.upsert(job("down", "after = [\"upstream\"]")).await;
    fake.advance_to("2026-01-01T07:00:00Z").await;
    again
        .shutdown(Duration::from_secs(1), std::future::pending())
        .await;
    assert_eq!(fake.calls_of("down").len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_commit_wakes_dependents_at_once_and_a_failed_trigger_is_consumed() {
    let fake = Fake::new("2026-01-01T00:00:00Z");
    let scheduler = fake.scheduler(Duration::from_secs(3600));
    scheduler.upsert(job("a", "schedule = \"0 * * * *\"")).await;
    scheduler
        .upsert(job("b", "after = [\"a_out\", \"broken\"]"))
        .await;
    fake.advance_to("2026-01-01T01:00:01Z").await;
    // b does not wait for its hourly poll: a's commit wakes it.
    let b = fake.calls_of("b");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].at, at("2026-01-01T01:00:00Z"));

    // A failed trigger (no retries) consumes its version too: the next one is the next version.
    fake.script([Behaviour::Succeed, Behaviour::Fail]);
    fake.advance_to("2026-01-01T02:00:01Z").await;
    assert_eq!(fake.calls_of("b").len(), 2);
    fake.advance_to("2026-01-01T02:59:00Z").await;
    assert_eq!(fake.calls_of("b").len(), 2);
    scheduler
        .shutdown(Duration::from_secs(1), std::future::pending())
        .await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_runs_finish_within_the_grace_period_then_cancels() {
    // Finishes within the grace period: recorded as usual.
    let fake = Fake::new("2026-01-01T00:00:00Z");
    fake.script([Behaviour::Take(Duration::from_secs(20))]);
    let scheduler = fake.scheduler(POLL);
    scheduler.upsert(job("j", "schedule = \"0 * * * *\"")).await;
    fake.advance_to("2026-01-01T01:00:05Z").await;
    scheduler
        .shutdown(Duration::from_secs(60), std::future::pending())
        .await;
    assert_eq!(fake.clock.now(), at("2026-01-01T01:00:20Z"));
    assert_eq!(fake.records().len(), 1);
    assert_eq!(fake.records()[0].status, RunStatus::Succeeded);

    // Outlasts it: cancelled and recorded as interrupted, so a restart runs it again.
    let fake = Fake::new("2026-01-01T00:00:00Z");
    fake.script([Behaviour::Take(Duration::from_secs(600))]);
    let scheduler = fake.scheduler(POLL);
    scheduler.upsert(job("j", "schedule = \"0 * * * *\"")).await;
    fake.advance_to("2026-01-01T01:00:05Z").await;
    scheduler
        .shutdown(Duration::from_secs(60), std::future::pending())
        .await;
    assert_eq!(fake.clock.now(), at("2026-01-01T01:01:05Z"));
    let records = fake.records();
    assert_eq!(records.len(), 1);
    assert!(records[0].interrupted);
    assert!(
        records[0]
            .error
            .as_deref()
            .unwrap()
            .contains("the scheduler is shutting down"),
        "{records:?}"
    );
    assert_eq!(
        scheduler.snapshot().metrics.runs[&("j".to_string(), "cancelled")],
        1
    );
    // Nothing starts after shutdown.
    fake.advance_to("2026-01-01T03:00:00Z").await;
    assert_eq!(fake.calls().len(), 1);

    let restarted = fake.scheduler(POLL);
    restarted.upsert(job("j", "schedule = \"0 * * * *\"")).await;
    fake.advance_to("2026-01-01T03:00:30Z").await;
    restarted
        .shutdown(Duration::from_secs(1), std::future::pending())
        .await;
    // Runs again for the latest missed occurrence (03:00, on time), not for each one.
    assert_eq!(
        scheduled_for(&fake.calls()),
        vec![at("2026-01-01T01:00:00Z"), at("2026-01-01T03:00:00Z")]
    );
}

#[tokio::test(start_paused = true)]
async fn a_second_stop_signal_cuts_the_grace_period_short() {
    let fake = Fake::new("2026-01-01T00:00:00Z");
    fake.script([Behaviour::Hang]);
    let scheduler = fake.scheduler(POLL);
    scheduler.upsert(job("j", "schedule = \"0 * * * *\"")).await;
    fake.advance_to("2026-01-01T01:00:05Z").await;
    let second_signal = fake.clock.sleep(Duration::from_secs(10));
    scheduler
        .shutdown(Duration::from_secs(3600), second_signal)
        .await;
    assert_eq!(fake.clock.now(), at("2026-01-01T01:00:15Z"));
    let records = fake.records();
    assert!(records[0].interrupted);
    assert_eq!(
        records[0].error.as_deref(),
        Some("cancelled: the scheduler is shutting down (stopped again during the grace period)")
    );
}

#[tokio::test(start_paused = true)]
async fn a_reloaded_definition_takes_effect_and_a_removed_job_stops() {
    let fake = Fake::new("2026-01-01T00:00:00Z");
    let scheduler = fake.scheduler(POLL);
    scheduler.upsert(job("j", "schedule = \"0 * * * *\"")).await;
    fake.advance_to("2026-01-01T00:10:00Z").await;
    scheduler
        .upsert(job("j", "schedule = \"*/15 * * * *\""))
        .await;
    scheduler.set_spec_error("j", Some("broken edit".to_string()));
    fake.advance_to("2026-01-01T00:31:00Z").await;
    assert_eq!(
        scheduled_for(&fake.calls()),
        vec![at("2026-01-01T00:15:00Z"), at("2026-01-01T00:30:00Z")]
    );
    let snapshot = scheduler.snapshot();
    assert_eq!(snapshot.jobs["j"].schedule.as_deref(), Some("*/15 * * * *"));
    assert_eq!(
        snapshot.jobs["j"].spec_error.as_deref(),
        Some("broken edit")
    );
    scheduler.remove("j");
    fake.advance_to("2026-01-01T02:00:00Z").await;
    assert_eq!(fake.calls().len(), 2);
    assert!(scheduler.snapshot().jobs.is_empty());
    scheduler
        .shutdown(Duration::from_secs(1), std::future::pending())
        .await;
}

#[test]
fn humanize_durations() {
    assert_eq!(humanize(Duration::from_secs(90)), "1m30s");
    assert_eq!(humanize(Duration::from_secs(26 * 3600)), "1d2h");
    assert_eq!(humanize(Duration::from_millis(250)), "250ms");
}
