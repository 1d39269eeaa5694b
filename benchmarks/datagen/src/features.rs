//! A customer feature table: one row per customer, 30 numeric and categorical features with
//! realistic nulls and skew, a churn label and an update timestamp, as Parquet files.
//!
//! It is the dataset of the data-quality and scoring benchmarks: wide enough that checks and
//! models read many columns, and sized by [`FeaturesConfig::rows`] (1M and 10M rows in the
//! benchmark report). The label is drawn from a logistic model of a few features, so models
//! trained on it learn something and scores are not constant.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    COUNTRIES, DatagenError, chunk_rng, customer_id, generate_cached, pick, write_parquet_rows,
};

/// How much feature data to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeaturesConfig {
    /// Number of rows (customers).
    pub rows: u64,
    /// Number of Parquet files the rows are split into.
    pub files: u32,
    /// The generator seed.
    pub seed: u64,
}

impl FeaturesConfig {
    /// `rows` rows in files of at most one million rows, seed 42.
    pub fn with_rows(rows: u64) -> Self {
        FeaturesConfig {
            rows,
            files: u32::try_from(rows.div_ceil(1_000_000).max(1)).unwrap_or(u32::MAX),
            seed: 42,
        }
    }
}

/// Rows per Parquet row group: several per file, so scans parallelise within a file.
const ROW_GROUP_ROWS: usize = 131_072;

/// Newest `updated_at`: 2026-06-30T00:00:00Z in microseconds since the epoch.
const UPDATED_AT_END: i64 = 1_782_777_600_000_000;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// A numeric feature: its name, how it is drawn, and the share of NULLs.
struct Numeric {
    name: &'static str,
    draw: fn(&mut ChaCha8Rng) -> f64,
    null_rate: f64,
}

/// The 18 floating-point features, in schema order.
const NUMERIC: &[Numeric] = &[
    Numeric {
        name: "spend_30d",
        draw: |r| round2(log_normal(r, 3.0, 1.0)),
        null_rate: 0.02,
    },
    Numeric {
        name: "spend_90d",
        draw: |r| round2(log_normal(r, 4.0, 1.0)),
        null_rate: 0.02,
    },
    Numeric {
        name: "avg_order_value",
        draw: |r| round2(log_normal(r, 3.5, 0.6)),
        null_rate: 0.05,
    },
    Numeric {
        name: "sessions_30d",
        draw: |r| exponential(r, 12.0).floor(),
        null_rate: 0.0,
    },
    Numeric {
        name: "avg_session_minutes",
        draw: |r| log_normal(r, 1.8, 0.5),
        null_rate: 0.01,
    },
    Numeric {
        name: "days_since_last_login",
        draw: |r| exponential(r, 9.0).floor(),
        null_rate: 0.03,
    },
    Numeric {
        name: "days_since_last_purchase",
        draw: |r| exponential(r, 30.0).floor(),
        null_rate: 0.08,
    },
    Numeric {
        name: "pages_per_session",
        draw: |r| log_normal(r, 1.2, 0.4),
        null_rate: 0.0,
    },
    Numeric {
        name: "discount_rate",
        draw: |r| r.random_range(0.0..0.5),
        null_rate: 0.10,
    },
    Numeric {
        name: "refund_rate",
        draw: |r| exponential(r, 0.03).min(1.0),
        null_rate: 0.01,
    },
    Numeric {
        name: "email_open_rate",
        draw: |r| r.random::<f64>(),
        null_rate: 0.15,
    },
    Numeric {
        name: "push_click_rate",
        draw: |r| r.random_range(0.0..0.3),
        null_rate: 0.20,
    },
    Numeric {
        name: "nps_score",
        draw: |r| normal(r, 7.0, 2.0).round().clamp(0.0, 10.0),
        null_rate: 0.40,
    },
    Numeric {
        name: "satisfaction",
        draw: |r| normal(r, 0.7, 0.15).clamp(0.0, 1.0),
        null_rate: 0.30,
    },
    Numeric {
        name: "cart_abandon_rate",
        draw: |r| r.random::<f64>(),
        null_rate: 0.0,
    },
    Numeric {
        name: "latency_ms_p95",
        draw: |r| log_normal(r, 5.5, 0.4).round(),
        null_rate: 0.0,
    },
    Numeric {
        name: "credit_score",
        draw: |r| normal(r, 680.0, 60.0).round().clamp(300.0, 850.0),
        null_rate: 0.05,
    },
    Numeric {
        name: "income_estimate",
        draw: |r| round2(log_normal(r, 10.8, 0.5)),
        null_rate: 0.12,
    },
];

/// The 5 integer features, in schema order (their draws are in [`features_batch`]).
const INTEGER: &[&str] = &[
    "age",
    "tenure_days",
    "orders_90d",
    "devices",
    "support_tickets_90d",
];

/// A categorical feature: its name, values with weights, and the share of NULLs.
struct Categorical {
    name: &'static str,
    values: &'static [(&'static str, f64)],
    null_rate: f64,
}

const REGIONS: &[(&str, f64)] = &[
    ("r00", 9.0),
    ("r01", 8.0),
    ("r02", 7.0),
    ("r03", 7.0),
    ("r04", 6.0),
    ("r05", 6.0),
    ("r06", 5.0),
    ("r07", 5.0),
    ("r08", 5.0),
    ("r09", 5.0),
    ("r10", 4.0),
    ("r11", 4.0),
    ("r12", 4.0),
    ("r13", 4.0),
    ("r14", 4.0),
    ("r15", 3.0),
    ("r16", 3.0),
    ("r17", 3.0),
    ("r18", 4.0),
    ("r19", 4.0),
];

/// The 7 categorical features, in schema order.
const CATEGORICAL: &[Categorical] = &[
    Categorical {
        name: "country",
        values: COUNTRIES,
        null_rate: 0.0,
    },
    Categorical {
        name: "plan",
        values: &[("basic", 0.55), ("standard", 0.33), ("premium", 0.12)],
        null_rate: 0.0,
    },
    Categorical {
        name: "device",
        values: &[("web", 0.5), ("ios", 0.25), ("android", 0.25)],
        null_rate: 0.02,
    },
    Categorical {
        name: "channel",
        values: &[
            ("organic", 0.4),
            ("paid_search", 0.25),
            ("social", 0.15),
            ("referral", 0.1),
            ("email", 0.1),
        ],
        null_rate: 0.0,
    },
    Categorical {
        name: "segment",
        values: &[
            ("consumer", 0.6),
            ("smb", 0.2),
            ("enterprise", 0.05),
            ("student", 0.1),
            ("nonprofit", 0.03),
            ("government", 0.02),
        ],
        null_rate: 0.0,
    },
    Categorical {
        name: "payment_method",
        values: &[
            ("card", 0.7),
            ("paypal", 0.2),
            ("bank_transfer", 0.07),
            ("gift_card", 0.03),
        ],
        null_rate: 0.01,
    },
    Categorical {
        name: "region",
        values: REGIONS,
        null_rate: 0.0,
    },
];

/// The files' schema: `customer_id`, the 30 features (18 `double`, 5 `int`, 7 `string`),
/// `churned` (0/1) and `updated_at` (UTC timestamp).
pub fn features_schema() -> SchemaRef {
    let mut fields = vec![Field::new("customer_id", DataType::Int64, false)];
    fields.extend(
        NUMERIC
            .iter()
            .map(|f| Field::new(f.name, DataType::Float64, true)),
    );
    fields.extend(
        INTEGER
            .iter()
            .map(|name| Field::new(*name, DataType::Int32, true)),
    );
    fields.extend(
        CATEGORICAL
            .iter()
            .map(|f| Field::new(f.name, DataType::Utf8, true)),
    );
    fields.push(Field::new("churned", DataType::Int32, false));
    fields.push(Field::new(
        "updated_at",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    Arc::new(Schema::new(fields))
}

/// The names of the 30 feature columns, in schema order.
pub fn feature_names() -> Vec<&'static str> {
    NUMERIC
        .iter()
        .map(|f| f.name)
        .chain(INTEGER.iter().copied())
        .chain(CATEGORICAL.iter().map(|f| f.name))
        .collect()
}

/// Writes `root/part-NNNNN.parquet` unless the same configuration is already there; returns
/// whether data was generated.
pub fn generate_features(root: &Path, config: &FeaturesConfig) -> Result<bool, DatagenError> {
    if config.rows == 0 || config.files == 0 || u64::from(config.files) > config.rows {
        return Err(DatagenError::InvalidConfig(format!(
            "rows ({}) and files ({}) must be positive, with at most one file per row",
            config.rows, config.files
        )));
    }
    generate_cached(root, config, |dir| {
        (0..config.files)
            .into_par_iter()
            .try_for_each(|file| write_features_file(dir, config, file))
    })
}

/// The path of file `index` under a generated root.
pub fn features_file(root: &Path, index: u32) -> PathBuf {
    root.join(format!("part-{index:05}.parquet"))
}

fn write_features_file(dir: &Path, config: &FeaturesConfig, file: u32) -> Result<(), DatagenError> {
    let files = u64::from(config.files);
    let first = config.rows * u64::from(file) / files;
    let end = config.rows * (u64::from(file) + 1) / files;
    let mut rng = chunk_rng(config.seed, u64::from(file));
    write_parquet_rows(
        &features_file(dir, file),
        features_schema(),
        ROW_GROUP_ROWS,
        first,
        end,
        |start, stop| features_batch(&mut rng, start, stop),
    )
}

fn features_batch(
    rng: &mut ChaCha8Rng,
    first: u64,
    end: u64,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = usize::try_from(end - first).unwrap_or(0);
    let mut id = Int64Builder::with_capacity(n);
    let mut numeric: Vec<Float64Builder> = NUMERIC
        .iter()
        .map(|_| Float64Builder::with_capacity(n))
        .collect();
    let mut integer: Vec<Int32Builder> = INTEGER
        .iter()
        .map(|_| Int32Builder::with_capacity(n))
        .collect();
    let mut categorical: Vec<StringBuilder> = CATEGORICAL
        .iter()
        .map(|_| StringBuilder::with_capacity(n, n * 8))
        .collect();
    let mut churned = Int32Builder::with_capacity(n);
    let mut updated_at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");

    let mut values = vec![None; NUMERIC.len()];
    for row in first..end {
        id.append_value(customer_id(row));
        for ((feature, builder), value) in NUMERIC.iter().zip(&mut numeric).zip(&mut values) {
            // Draw even when the value ends up NULL, so null rates do not shift other values.
            let drawn = (feature.draw)(rng);
            *value = (!rng.random_bool(feature.null_rate)).then_some(drawn);
            builder.append_option(*value);
        }
        let age =
            (!rng.random_bool(0.03)).then(|| 18 + (rng.random::<f64>().powf(1.6) * 72.0) as i32);
        let tenure_days = rng.random_range(0..3_650);
        let orders_90d = exponential(rng, 3.0).floor() as i32;
        let devices = rng.random_range(1..=4);
        let tickets = (!rng.random_bool(0.01)).then(|| exponential(rng, 0.4).floor() as i32);
        for (builder, value) in integer.iter_mut().zip([
            age,
            Some(tenure_days),
            Some(orders_90d),
            Some(devices),
            tickets,
        ]) {
            builder.append_option(value);
        }
        let mut plan = "";
        for (feature, builder) in CATEGORICAL.iter().zip(&mut categorical) {
            let value = pick(rng, feature.values);
            if feature.name == "plan" {
                plan = value;
            }
            if rng.random_bool(feature.null_rate) {
                builder.append_null();
            } else {
                builder.append_value(value);
            }
        }
        // Churn: likelier for customers who stopped logging in, complain, are new or on the
        // basic plan; NULL features count as their typical value.
        let days_since_login = values[5].unwrap_or(9.0);
        let sessions = values[3].unwrap_or(12.0);
        let z = -2.2 + 0.06 * days_since_login - 0.02 * sessions
            + 0.5 * f64::from(tickets.unwrap_or(0))
            - 0.0003 * f64::from(tenure_days)
            + if plan == "basic" { 0.4 } else { 0.0 }
            + normal(rng, 0.0, 0.5);
        churned.append_value(i32::from(rng.random::<f64>() < 1.0 / (1.0 + (-z).exp())));
        updated_at.append_value(UPDATED_AT_END - rng.random_range(0..MICROS_PER_DAY));
    }

    let mut columns: Vec<ArrayRef> = vec![Arc::new(id.finish())];
    columns.extend(numeric.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.extend(integer.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.extend(
        categorical
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef),
    );
    columns.push(Arc::new(churned.finish()));
    columns.push(Arc::new(updated_at.finish()));
    RecordBatch::try_new(features_schema(), columns)
}

/// A standard normal draw scaled to `mean` and `sd` (Box–Muller).
fn normal(rng: &mut ChaCha8Rng, mean: f64, sd: f64) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    mean + sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn log_normal(rng: &mut ChaCha8Rng, mu: f64, sigma: f64) -> f64 {
    normal(rng, mu, sigma).exp()
}

fn exponential(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    -mean * rng.random_range(f64::EPSILON..1.0).ln()
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File};

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int32Type;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    fn read_all(root: &Path) -> Vec<RecordBatch> {
        let mut paths: Vec<_> = fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .flat_map(|p| {
                ParquetRecordBatchReaderBuilder::try_new(File::open(p).unwrap())
                    .unwrap()
                    .build()
                    .unwrap()
                    .map(|b| b.unwrap())
            })
            .collect()
    }

    #[test]
    fn has_thirty_features_nulls_and_both_labels() {
        let dir = tempfile::tempdir().unwrap();
        let config = FeaturesConfig {
            rows: 20_000,
            files: 3,
            seed: 1,
        };
        assert!(generate_features(dir.path(), &config).unwrap());
        assert_eq!(feature_names().len(), 30);
        let batches = read_all(dir.path());
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 20_000);
        let schema = features_schema();
        for (name, expect_nulls) in [
            ("nps_score", true),
            ("age", true),
            ("device", true),
            ("plan", false),
        ] {
            let index = schema.index_of(name).unwrap();
            let nulls: usize = batches.iter().map(|b| b.column(index).null_count()).sum();
            assert_eq!(nulls > 0, expect_nulls, "{name}: {nulls} nulls");
        }
        let churned: i64 = batches
            .iter()
            .flat_map(|b| {
                b.column(schema.index_of("churned").unwrap())
                    .as_primitive::<Int32Type>()
                    .values()
                    .to_vec()
            })
            .map(i64::from)
            .sum();
        assert!(
            churned > 1_000 && churned < 19_000,
            "churned {churned} of 20000"
        );
    }

    #[test]
    fn is_deterministic_and_cached() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let config = FeaturesConfig {
            rows: 5_000,
            files: 2,
            seed: 3,
        };
        generate_features(&a.path().join("f"), &config).unwrap();
        generate_features(&b.path().join("f"), &config).unwrap();
        for file in 0..2 {
            assert_eq!(
                fs::read(features_file(&a.path().join("f"), file)).unwrap(),
                fs::read(features_file(&b.path().join("f"), file)).unwrap()
            );
        }
        assert!(!generate_features(&a.path().join("f"), &config).unwrap());
    }
}
