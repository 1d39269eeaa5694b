//! TPC-H tables as Parquet, from the `tpchgen` generator (the dbgen algorithm, bit-for-bit), at
//! any scale factor: `ROOT/<table>/part-NNNNN.parquet`. Large tables are split into parts
//! generated in parallel; the data does not depend on the number of parts.

use std::path::{Path, PathBuf};

use arrow::array::RecordBatchReader;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

use lakeforge_datagen::{DatagenError, generate_cached};

/// The eight TPC-H tables.
pub const TPCH_TABLES: [&str; 8] = [
    "region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem",
];

/// What a generated TPC-H folder holds (its manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TpchConfig {
    /// The scale factor (1 = about 1 GB of raw data, 6M lineitem rows).
    pub scale_factor: f64,
    /// The generator, so data from another version is regenerated.
    pub generator: String,
}

impl TpchConfig {
    /// The configuration for `scale_factor`.
    pub fn new(scale_factor: f64) -> TpchConfig {
        TpchConfig {
            scale_factor,
            generator: "tpchgen-arrow 4".to_string(),
        }
    }
}

/// Rows per Parquet row group (and per generated batch).
const BATCH_ROWS: usize = 65_536;

/// Generates the tables under `root` unless it already holds this configuration's data.
/// Returns whether data was generated.
pub fn generate_tpch(root: &Path, config: &TpchConfig) -> Result<bool, DatagenError> {
    if !config.scale_factor.is_finite() || config.scale_factor <= 0.0 {
        return Err(DatagenError::InvalidConfig(format!(
            "the scale factor must be positive, not {}",
            config.scale_factor
        )));
    }
    let sf = config.scale_factor;
    // About 128 MB of lineitem per part at SF 1; small tables are one part.
    let parts = |weight: f64| ((sf * weight).ceil() as i32).max(1);
    let jobs: Vec<(&str, i32, i32)> = TPCH_TABLES
        .iter()
        .flat_map(|&table| {
            let count = match table {
                "lineitem" => parts(8.0),
                "orders" => parts(2.0),
                "partsupp" | "part" | "customer" => parts(1.0),
                _ => 1,
            };
            (1..=count).map(move |part| (table, part, count))
        })
        .collect();
    generate_cached(root, config, |dir| {
        jobs.par_iter()
            .try_for_each(|&(table, part, count)| write_part(dir, sf, table, part, count))
    })
}

/// The folder of `table` under a generated root.
pub fn tpch_table_dir(root: &Path, table: &str) -> PathBuf {
    root.join(table)
}

fn write_part(dir: &Path, sf: f64, table: &str, part: i32, count: i32) -> Result<(), DatagenError> {
    let path = tpch_table_dir(dir, table).join(format!("part-{part:05}.parquet"));
    let reader: Box<dyn RecordBatchReader + Send> = match table {
        "region" => Box::new(
            RegionArrow::new(RegionGenerator::new(sf, part, count)).with_batch_size(BATCH_ROWS),
        ),
        "nation" => Box::new(
            NationArrow::new(NationGenerator::new(sf, part, count)).with_batch_size(BATCH_ROWS),
        ),
        "supplier" => Box::new(
            SupplierArrow::new(SupplierGenerator::new(sf, part, count)).with_batch_size(BATCH_ROWS),
        ),
        "customer" => Box::new(
            CustomerArrow::new(CustomerGenerator::new(sf, part, count)).with_batch_size(BATCH_ROWS),
        ),
        "part" => Box::new(
            PartArrow::new(PartGenerator::new(sf, part, count)).with_batch_size(BATCH_ROWS),
        ),
        "partsupp" => Box::new(
            PartSuppArrow::new(PartSuppGenerator::new(sf, part, count)).with_batch_size(BATCH_ROWS),
        ),
        "orders" => Box::new(
            OrderArrow::new(OrderGenerator::new(sf, part, count)).with_batch_size(BATCH_ROWS),
        ),
        "lineitem" => Box::new(
            LineItemArrow::new(LineItemGenerator::new(sf, part, count)).with_batch_size(BATCH_ROWS),
        ),
        other => {
            return Err(DatagenError::InvalidConfig(format!(
                "no TPC-H table named {other}"
            )));
        }
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DatagenError::io(parent, e))?;
    }
    let file = std::fs::File::create(&path).map_err(|e| DatagenError::io(&path, e))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(BATCH_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(file, reader.schema(), Some(properties))
        .map_err(|e| DatagenError::parquet(&path, e))?;
    for batch in reader {
        let batch = batch.map_err(|e| DatagenError::arrow(&path, e))?;
        writer
            .write(&batch)
            .map_err(|e| DatagenError::parquet(&path, e))?;
    }
    writer
        .close()
        .map_err(|e| DatagenError::parquet(&path, e))?;
    Ok(())
}
