//! Engine settings: parallelism, batch size and memory.

use crate::error::{EngineError, Result};

/// How the embedded engine uses the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Partitions DataFusion splits work into (default: the number of cores).
    pub target_partitions: usize,
    /// Rows per Arrow batch (default 8192).
    pub batch_size: usize,
    /// Bytes of memory that operators may hold before they spill or fail; `None` for no limit.
    /// Default: 70% of the machine's physical memory, when it can be read.
    pub memory_limit: Option<u64>,
    /// Run on the cluster whose coordinator is here, instead of in this process.
    pub cluster: Option<lakeforge_worker::ClusterAddress>,
    /// How long a run on a cluster waits for a worker to be registered before it fails
    /// (default 60 s): a coordinator without workers would otherwise queue the job forever.
    pub worker_wait: std::time::Duration,
    /// How equi-joins run, embedded and on a cluster alike.
    pub joins: JoinStrategy,
}

/// How equi-joins run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JoinStrategy {
    /// Hash joins (DataFusion's default): the fastest, but each task holds its build side in
    /// memory; a build side over the memory limit fails the query with a resources error.
    #[default]
    Hash,
    /// Sort-merge joins: slower, but they spill to disk, so joins of any size complete.
    SortMerge,
}

impl JoinStrategy {
    /// Parses `hash` or `sort-merge`.
    pub fn parse(text: &str) -> Result<JoinStrategy> {
        match text {
            "hash" => Ok(JoinStrategy::Hash),
            "sort-merge" => Ok(JoinStrategy::SortMerge),
            other => Err(EngineError::Usage(format!(
                "'{other}': expected hash or sort-merge"
            ))),
        }
    }
}

/// [`EngineConfig::worker_wait`] unless configured.
pub const DEFAULT_WORKER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            target_partitions: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            batch_size: 8192,
            memory_limit: physical_memory_bytes().map(|total| total / 10 * 7),
            cluster: None,
            worker_wait: DEFAULT_WORKER_WAIT,
            joins: JoinStrategy::Hash,
        }
    }
}

/// Total physical memory from `/proc/meminfo`; `None` where there is no such file.
fn physical_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Parses a byte size such as `512M`, `4G`, `1.5GiB` or `1048576`.
pub fn parse_byte_size(text: &str) -> Result<u64> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        EngineError::Usage(format!("invalid size '{text}': expected e.g. 512M or 4G"))
    })?;
    let multiplier: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        other => {
            return Err(EngineError::Usage(format!(
                "invalid size '{text}': unknown unit '{other}' (use K, M, G or T)"
            )));
        }
    };
    Ok((value * multiplier as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_byte_size("1024").unwrap(), 1024);
        assert_eq!(parse_byte_size("2K").unwrap(), 2048);
        assert_eq!(parse_byte_size("1.5GiB").unwrap(), 3 << 29);
        assert!(parse_byte_size("12X").is_err());
        assert!(parse_byte_size("G").is_err());
    }

    #[test]
    fn defaults_are_sane() {
        let config = EngineConfig::default();
        assert!(config.target_partitions >= 1);
        assert_eq!(config.batch_size, 8192);
    }
}
