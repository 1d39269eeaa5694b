//! A customer-churn dataset: customers (CSV) and their events (Parquet).
//!
//! The data is deterministic for a given [`ChurnConfig`]: every chunk of events draws from its
//! own generator seeded from `(seed, chunk index)`, so the result does not depend on how many
//! threads rayon uses. Distributions are skewed the way real product data is (a few countries
//! dominate, most events are page views, a minority of customers are very active) and carry
//! realistic nulls (unknown ages, missing devices).

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    COUNTRIES, DatagenError, chunk_rng, customer_id, generate_cached, pick, write_parquet_rows,
};

/// How much data to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChurnConfig {
    /// Number of customers.
    pub customers: u64,
    /// Number of events, spread over the customers.
    pub events: u64,
    /// Number of Parquet files the events are split into.
    pub event_files: u32,
    /// The generator seed.
    pub seed: u64,
}

impl Default for ChurnConfig {
    fn default() -> Self {
        ChurnConfig {
            customers: 50_000,
            events: 1_000_000,
            event_files: 8,
            seed: 42,
        }
    }
}

/// What [`generate_churn`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChurnDataset {
    /// The folder holding `customers/` and `events/`.
    pub root: PathBuf,
    /// False when an identical dataset was already there and was reused.
    pub generated: bool,
}

/// First day of the generated activity window: 2026-01-01 as days since the Unix epoch.
const WINDOW_START_DAY: i32 = 20_454;
/// Length of the activity window in days.
const WINDOW_DAYS: i32 = 181;
const MICROS_PER_DAY: i64 = 86_400_000_000;

const PLANS: &[(&str, f64, f64)] = &[
    // (plan, share, monthly fee)
    ("basic", 0.55, 9.99),
    ("standard", 0.33, 19.99),
    ("premium", 0.12, 39.99),
];
const EVENT_TYPES: &[(&str, f64)] = &[
    ("page_view", 0.60),
    ("login", 0.20),
    ("purchase", 0.12),
    ("support_ticket", 0.05),
    ("cancel_click", 0.03),
];
const DEVICES: &[(&str, f64)] = &[("web", 0.5), ("ios", 0.25), ("android", 0.25)];

/// The customers file's schema.
pub fn customers_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("signup_date", DataType::Date32, false),
        Field::new("country", DataType::Utf8, false),
        Field::new("plan", DataType::Utf8, false),
        Field::new("age", DataType::Int32, true),
        Field::new("monthly_fee", DataType::Float64, false),
        Field::new("email_opt_in", DataType::Boolean, false),
    ]))
}

/// The events files' schema.
pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new(
            "event_ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, true),
        Field::new("device", DataType::Utf8, true),
    ]))
}

/// Writes the dataset under `root` (`customers/customers.csv`, `events/part-NNNNN.parquet`)
/// unless the same configuration is already there.
///
/// The files are written into a temporary sibling folder and moved into place at the end, so
/// an interrupted run never leaves a half dataset that a later run would reuse.
pub fn generate_churn(root: &Path, config: &ChurnConfig) -> Result<ChurnDataset, DatagenError> {
    if config.customers == 0 || config.event_files == 0 {
        return Err(DatagenError::InvalidConfig(
            "customers and event_files must be positive".to_string(),
        ));
    }
    let generated = generate_cached(root, config, |dir| write_dataset(dir, config))?;
    Ok(ChurnDataset {
        root: root.to_path_buf(),
        generated,
    })
}

fn write_dataset(dir: &Path, config: &ChurnConfig) -> Result<(), DatagenError> {
    let customers = customers_batch(config)?;
    let customers_dir = dir.join("customers");
    fs::create_dir_all(&customers_dir).map_err(|e| DatagenError::io(&customers_dir, e))?;
    let customers_path = customers_dir.join("customers.csv");
    let file = File::create(&customers_path).map_err(|e| DatagenError::io(&customers_path, e))?;
    let mut writer = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(BufWriter::new(file));
    writer
        .write(&customers)
        .map_err(|e| DatagenError::arrow(&customers_path, e))?;

    (0..config.event_files)
        .into_par_iter()
        .try_for_each(|chunk| write_events_file(dir, config, chunk))
}

fn customers_batch(config: &ChurnConfig) -> Result<RecordBatch, DatagenError> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let n = usize::try_from(config.customers).unwrap_or(usize::MAX);
    let mut id = Int64Builder::with_capacity(n);
    let mut signup = Date32Builder::with_capacity(n);
    let mut country = StringBuilder::new();
    let mut plan = StringBuilder::new();
    let mut age = Int32Builder::with_capacity(n);
    let mut fee = Float64Builder::with_capacity(n);
    let mut opt_in = BooleanBuilder::with_capacity(n);
    for customer in 0..config.customers {
        id.append_value(customer_id(customer));
        // Signed up during the two years before the activity window.
        signup.append_value(WINDOW_START_DAY - rng.random_range(1..730));
        country.append_value(pick(&mut rng, COUNTRIES));
        let (plan_name, monthly_fee) = pick_plan(&mut rng);
        plan.append_value(plan_name);
        fee.append_value(monthly_fee);
        if rng.random_bool(0.03) {
            age.append_null();
        } else {
            age.append_value(18 + (rng.random::<f64>().powf(1.6) * 62.0) as i32);
        }
        opt_in.append_value(rng.random_bool(0.4));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(signup.finish()),
        Arc::new(country.finish()),
        Arc::new(plan.finish()),
        Arc::new(age.finish()),
        Arc::new(fee.finish()),
        Arc::new(opt_in.finish()),
    ];
    RecordBatch::try_new(customers_schema(), columns)
        .map_err(|e| DatagenError::arrow(Path::new("customers"), e))
}

fn write_events_file(dir: &Path, config: &ChurnConfig, chunk: u32) -> Result<(), DatagenError> {
    let files = u64::from(config.event_files);
    let first = config.events * u64::from(chunk) / files;
    let end = config.events * (u64::from(chunk) + 1) / files;
    let path = dir.join("events").join(format!("part-{chunk:05}.parquet"));
    let mut rng = chunk_rng(config.seed, u64::from(chunk));
    // One row group per file, as the generator has always written (the files are small).
    write_parquet_rows(
        &path,
        events_schema(),
        usize::MAX,
        first,
        end,
        |start, stop| events_batch(&mut rng, config, start, stop),
    )
}

fn events_batch(
    rng: &mut ChaCha8Rng,
    config: &ChurnConfig,
    first: u64,
    end: u64,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = usize::try_from(end - first).unwrap_or(0);
    let mut event_id = Int64Builder::with_capacity(n);
    let mut customer = Int64Builder::with_capacity(n);
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut kind = StringBuilder::new();
    let mut amount = Float64Builder::with_capacity(n);
    let mut device = StringBuilder::new();
    let window_start = i64::from(WINDOW_START_DAY) * MICROS_PER_DAY;
    let window = i64::from(WINDOW_DAYS) * MICROS_PER_DAY;
    for id in first..end {
        event_id.append_value(id as i64);
        // A power law over customers: a few are very active, most are not.
        let skewed = rng.random::<f64>().powf(2.5);
        let index = ((skewed * config.customers as f64) as u64).min(config.customers - 1);
        customer.append_value(customer_id(index));
        ts.append_value(window_start + rng.random_range(0..window));
        let event_type = pick(rng, EVENT_TYPES);
        kind.append_value(event_type);
        if event_type == "purchase" {
            // Log-normal-ish basket sizes, rounded to cents.
            let value = (2.5 + rng.random::<f64>() * 1.8).exp();
            amount.append_value((value * 100.0).round() / 100.0);
        } else {
            amount.append_null();
        }
        if rng.random_bool(0.06) {
            device.append_null();
        } else {
            device.append_value(pick(rng, DEVICES));
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(event_id.finish()),
        Arc::new(customer.finish()),
        Arc::new(ts.finish()),
        Arc::new(kind.finish()),
        Arc::new(amount.finish()),
        Arc::new(device.finish()),
    ];
    RecordBatch::try_new(events_schema(), columns)
}

fn pick_plan(rng: &mut ChaCha8Rng) -> (&'static str, f64) {
    let mut draw = rng.random::<f64>();
    for (plan, share, fee) in PLANS {
        if draw < *share {
            return (plan, *fee);
        }
        draw -= share;
    }
    ("basic", 9.99)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> ChurnConfig {
        ChurnConfig {
            customers: 100,
            events: 5_000,
            event_files: 3,
            seed: 7,
        }
    }

    fn file_bytes(root: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        for sub in ["customers", "events"] {
            let mut entries: Vec<_> = fs::read_dir(root.join(sub))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for path in entries {
                files.push((path.display().to_string(), fs::read(&path).unwrap()));
            }
        }
        files
    }

    #[test]
    fn is_deterministic_and_cached() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let first = generate_churn(&a.path().join("d"), &small()).unwrap();
        assert!(first.generated);
        generate_churn(&b.path().join("d"), &small()).unwrap();
        let strip = |files: Vec<(String, Vec<u8>)>, root: &Path| {
            files
                .into_iter()
                .map(|(p, b)| (p.replace(&root.display().to_string(), ""), b))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            strip(file_bytes(&a.path().join("d")), a.path()),
            strip(file_bytes(&b.path().join("d")), b.path())
        );
        let again = generate_churn(&a.path().join("d"), &small()).unwrap();
        assert!(!again.generated);
        let other = ChurnConfig { seed: 8, ..small() };
        assert!(
            generate_churn(&a.path().join("d"), &other)
                .unwrap()
                .generated
        );
    }

    #[test]
    fn event_counts_add_up() {
        let dir = tempfile::tempdir().unwrap();
        generate_churn(dir.path(), &small()).unwrap();
        let mut rows = 0;
        for entry in fs::read_dir(dir.path().join("events")).unwrap() {
            let file = File::open(entry.unwrap().path()).unwrap();
            let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
            use parquet::file::reader::FileReader;
            rows += reader.metadata().file_metadata().num_rows();
        }
        assert_eq!(rows, 5_000);
    }
}
