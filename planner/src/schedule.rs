//! When a job runs by itself: the `[job]` scheduling keys and products' freshness SLAs, parsed
//! and checked so that `validate` rejects a bad cron pattern or time zone before any daemon
//! sees it. The scheduler itself (a daemon in `lakeforge-engine`) only consumes these types.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;

use crate::check_spec::parse_duration;
use crate::error::PlannerError;
pub use crate::spec::CatchUp;
use crate::spec::{JobSection, ProductSpec};

/// The variable scheduled runs set to the scheduled day (`YYYY-MM-DD` in the job's time zone).
pub const RUN_DATE_VAR: &str = "run_date";
/// The variable scheduled runs set to the scheduled instant (RFC 3339 in the job's time zone).
pub const RUN_TS_VAR: &str = "run_ts";

/// The first retry waits this long unless `retry_delay` says otherwise; each retry doubles it.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Backoff never waits longer than this between two attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// A cron pattern evaluated in a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    pattern: String,
    cron: croner::Cron,
    timezone: Tz,
}

impl CronSchedule {
    /// Parses a cron pattern: five fields (minute precision) or six (with seconds first),
    /// optionally a seventh for the year, or a nickname like `@daily`.
    pub fn parse(pattern: &str, timezone: Tz) -> Result<CronSchedule, String> {
        let cron = croner::Cron::from_str(pattern)
            .map_err(|e| format!("{pattern:?} is not a cron pattern: {e}"))?;
        Ok(CronSchedule {
            pattern: pattern.to_string(),
            cron,
            timezone,
        })
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The time zone the pattern is read in.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// The first occurrence strictly after `time`, or `None` when the pattern has no more.
    pub fn next_after(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = time.with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Occurrences in `(after, until]`, oldest first, at most `limit` of them (the newest ones
    /// when there are more).
    pub fn occurrences_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut found = std::collections::VecDeque::new();
        let mut cursor = after;
        while let Some(next) = self.next_after(cursor) {
            if next > until {
                break;
            }
            if found.len() == limit {
                found.pop_front();
            }
            found.push_back(next);
            cursor = next;
        }
        found.into()
    }
}

/// The parsed scheduling keys of a `[job]` table.
#[derive(Debug, Clone)]
pub struct JobScheduling {
    /// `schedule`, read in `timezone` (default UTC).
    pub cron: Option<CronSchedule>,
    /// The time zone of `schedule` and of the `run_date` / `run_ts` variables.
    pub timezone: Tz,
    /// `after`: products or Delta sources whose new versions trigger a run.
    pub after: Vec<String>,
    /// `retries`: extra attempts after a failed one.
    pub retries: u32,
    /// `retry_delay`: the wait before the first retry; it doubles for each further one, up to
    /// [`MAX_RETRY_DELAY`].
    pub retry_delay: Duration,
    /// `timeout`: an attempt running longer is cancelled and counts as failed.
    pub timeout: Option<Duration>,
    /// `catch_up`: what happens to occurrences that could not run on time.
    pub catch_up: CatchUp,
}

impl JobScheduling {
    /// Parses and checks the scheduling keys of `job`; errors name the key.
    pub fn from_section(job: &JobSection) -> Result<JobScheduling, PlannerError> {
        let invalid = |key: &str, message: String| {
            PlannerError::InvalidSpec(format!("job '{}': `{key}`: {message}", job.name))
        };
        let timezone = match &job.timezone {
            Some(name) => Tz::from_str(name).map_err(|_| {
                invalid(
                    "timezone",
                    format!("{name:?} is not an IANA time zone (like \"UTC\" or \"Europe/Paris\")"),
                )
            })?,
            None => Tz::UTC,
        };
        let cron = job
            .schedule
            .as_deref()
            .map(|pattern| CronSchedule::parse(pattern, timezone))
            .transpose()
            .map_err(|message| invalid("schedule", message))?;
        if let Some(cron) = &cron
            && cron.next_after(Utc::now()).is_none()
        {
            return Err(invalid(
                "schedule",
                format!("{:?} has no future occurrence", cron.pattern()),
            ));
        }
        let duration = |key: &str, text: &Option<String>| {
            text.as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|message| invalid(key, message))
        };
        let retry_delay = duration("retry_delay", &job.retry_delay)?.unwrap_or(DEFAULT_RETRY_DELAY);
        let timeout = duration("timeout", &job.timeout)?;
        if timeout == Some(Duration::ZERO) {
            return Err(invalid("timeout", "must be longer than zero".to_string()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for input in &job.after {
            if input.trim().is_empty() {
                return Err(invalid("after", "an entry is empty".to_string()));
            }
            if !seen.insert(input.as_str()) {
                return Err(invalid("after", format!("{input:?} is listed twice")));
            }
        }
        Ok(JobScheduling {
            cron,
            timezone,
            after: job.after.clone(),
            retries: job.retries.unwrap_or(0),
            retry_delay,
            timeout,
            catch_up: job.catch_up.unwrap_or_default(),
        })
    }

    /// Whether the job runs by itself (a cron schedule or data triggers).
    pub fn is_triggered(&self) -> bool {
        self.cron.is_some() || !self.after.is_empty()
    }

    /// The wait before retry number `retry` (1-based): `retry_delay * 2^(retry-1)`, capped.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.retry_delay
            .checked_mul(factor)
            .unwrap_or(MAX_RETRY_DELAY)
            .min(MAX_RETRY_DELAY)
    }

    /// The `run_date` and `run_ts` variables for a run scheduled at `at`.
    pub fn run_vars(&self, at: DateTime<Utc>) -> BTreeMap<String, String> {
        let local = at.with_timezone(&self.timezone);
        BTreeMap::from([
            (
                RUN_DATE_VAR.to_string(),
                local.format("%Y-%m-%d").to_string(),
            ),
            (
                RUN_TS_VAR.to_string(),
                local.to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
        ])
    }
}

/// A product's `freshness_sla`: it is stale when its newest version is older than this.
pub fn freshness_sla(product: &ProductSpec) -> Result<Option<Duration>, PlannerError> {
    product
        .freshness_sla
        .as_deref()
        .map(|text| {
            parse_duration(text).map_err(|message| {
                PlannerError::InvalidSpec(format!(
                    "product '{}': `freshness_sla`: {message}",
                    product.name
                ))
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::JobSpec;

    fn scheduling(job_keys: &str) -> Result<JobScheduling, PlannerError> {
        let text = format!(
            "[job]\nname = \"j\"\nwarehouse = \"wh\"\n{job_keys}\n[[products]]\nname = \"p\"\nsql = \"SELECT 1\"\n"
        );
        let spec = JobSpec::parse(&text, "job.toml")?;
        JobScheduling::from_section(&spec.job)
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn five_and_six_field_patterns() {
        let daily = scheduling("schedule = \"0 2 * * *\"").unwrap();
        let cron = daily.cron.unwrap();
        assert_eq!(
            cron.next_after(utc("2026-03-01T02:00:00Z")),
            Some(utc("2026-03-02T02:00:00Z"))
        );
        let every_second = scheduling("schedule = \"* * * * * *\"")
            .unwrap()
            .cron
            .unwrap();
        assert_eq!(
            every_second.next_after(utc("2026-03-01T02:00:00.500Z")),
            Some(utc("2026-03-01T02:00:01Z"))
        );
    }

    #[test]
    fn time_zone_and_daylight_saving() {
        // 02:30 does not exist in Paris on 2026-03-29 (clocks jump from 02:00 to 03:00).
        let s = scheduling("schedule = \"30 2 * * *\"\ntimezone = \"Europe/Paris\"").unwrap();
        let cron = s.cron.as_ref().unwrap();
        let before = cron.next_after(utc("2026-03-27T12:00:00Z")).unwrap();
        assert_eq!(before, utc("2026-03-28T01:30:00Z"));
        let after = cron.next_after(utc("2026-03-29T12:00:00Z")).unwrap();
        assert_eq!(after, utc("2026-03-30T00:30:00Z"));
        let vars = s.run_vars(utc("2026-03-28T23:30:00Z"));
        assert_eq!(vars["run_date"], "2026-03-29");
        assert_eq!(vars["run_ts"], "2026-03-29T00:30:00+01:00");
    }

    #[test]
    fn occurrences_between_keeps_the_newest() {
        let cron = scheduling("schedule = \"0 * * * *\"")
            .unwrap()
            .cron
            .unwrap();
        let all = cron.occurrences_between(
            utc("2026-01-01T00:00:00Z"),
            utc("2026-01-01T05:00:00Z"),
            100,
        );
        assert_eq!(all.len(), 5);
        assert_eq!(all[0], utc("2026-01-01T01:00:00Z"));
        let newest =
            cron.occurrences_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-01T05:00:00Z"), 2);
        assert_eq!(
            newest,
            vec![utc("2026-01-01T04:00:00Z"), utc("2026-01-01T05:00:00Z")]
        );
    }

    #[test]
    fn defaults_and_backoff() {
        let s = scheduling("after = [\"a\"]\nretries = 3\nretry_delay = \"10s\"").unwrap();
        assert!(s.is_triggered());
        assert_eq!(s.catch_up, CatchUp::Latest);
        assert_eq!(s.backoff(1), Duration::from_secs(10));
        assert_eq!(s.backoff(3), Duration::from_secs(40));
        assert_eq!(s.backoff(30), MAX_RETRY_DELAY);
        let plain = scheduling("").unwrap();
        assert!(!plain.is_triggered());
        assert_eq!(plain.retries, 0);
        assert_eq!(plain.retry_delay, DEFAULT_RETRY_DELAY);
    }

    #[test]
    fn bad_keys_are_named() {
        let message = |keys: &str| scheduling(keys).unwrap_err().to_string();
        assert!(message("schedule = \"61 * * * *\"").contains("`schedule`"));
        assert!(message("timezone = \"Mars/Olympus\"").contains("`timezone`"));
        assert!(message("timeout = \"soon\"").contains("`timeout`"));
        assert!(message("timeout = \"0s\"").contains("longer than zero"));
        assert!(message("retry_delay = \"5\"").contains("`retry_delay`"));
        assert!(message("after = [\"a\", \"a\"]").contains("listed twice"));
        let syntax = JobSpec::parse(
            "[job]\nname = \"j\"\nwarehouse = \"w\"\ncatch_up = \"some\"\n",
            "job.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            syntax.contains("catch_up") || syntax.contains("some"),
            "{syntax}"
        );
    }
}
