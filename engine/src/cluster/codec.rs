//! How the engine's plan items travel to the cluster: the Delta writer (logical node and
//! execution plan), pinned Delta file lists, and scoring functions pinned to the models the
//! client resolved. Payloads are JSON (small, readable in a debugger); the worker crate frames
//! them with the Lakeforge version.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use lakeforge_udfs::scoring::{ModelPin, scoring_function, scoring_resolver};
use lakeforge_worker::LakeforgeCodec;
use serde::{Deserialize, Serialize};

use super::delta_files::{DeltaFilesSpec, DeltaFilesTable};
use super::writer::{DeltaWriteNode, DeltaWriterExec, WriteTarget};
use crate::models::PinnedModels;

/// One encoded item.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Payload {
    /// [`DeltaWriteNode`] or [`DeltaWriterExec`] (its input travels as the node's child).
    DeltaWrite { target: WriteTarget },
    /// [`DeltaFilesTable`] (its schema travels with the table scan).
    DeltaFiles { spec: DeltaFilesSpec },
    /// A scoring function and the models it may use.
    Scoring { pins: Vec<ModelPin> },
}

fn write_payload(payload: &Payload, buf: &mut Vec<u8>) -> Result<bool> {
    serde_json::to_writer(buf, payload).map_err(|e| {
        DataFusionError::Internal(format!("cannot encode a Lakeforge plan item: {e}"))
    })?;
    Ok(true)
}

fn read_payload(buf: &[u8]) -> Result<Payload> {
    serde_json::from_slice(buf)
        .map_err(|e| DataFusionError::Internal(format!("cannot decode a Lakeforge plan item: {e}")))
}

fn unexpected(what: &str, payload: &Payload) -> DataFusionError {
    DataFusionError::Internal(format!("expected {what}, found {payload:?}"))
}

/// The engine's [`LakeforgeCodec`].
#[derive(Debug, Default)]
pub struct EngineCodec;

impl LakeforgeCodec for EngineCodec {
    fn encode_logical_node(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<bool> {
        match node.node.as_any().downcast_ref::<DeltaWriteNode>() {
            Some(write) => write_payload(
                &Payload::DeltaWrite {
                    target: write.target().clone(),
                },
                buf,
            ),
            None => Ok(false),
        }
    }

    fn decode_logical_node(&self, buf: &[u8], inputs: &[LogicalPlan]) -> Result<Extension> {
        match read_payload(buf)? {
            Payload::DeltaWrite { target } => {
                let [input] = inputs else {
                    return Err(DataFusionError::Internal(
                        "DeltaWrite needs exactly one input".to_string(),
                    ));
                };
                Ok(Extension {
                    node: Arc::new(DeltaWriteNode::new(input.clone(), target)?),
                })
            }
            other => Err(unexpected("a logical node", &other)),
        }
    }

    fn encode_table(&self, table: &Arc<dyn TableProvider>, buf: &mut Vec<u8>) -> Result<bool> {
        match table.downcast_ref::<DeltaFilesTable>() {
            Some(files) => write_payload(
                &Payload::DeltaFiles {
                    spec: files.spec().clone(),
                },
                buf,
            ),
            None => Ok(false),
        }
    }

    fn decode_table(&self, buf: &[u8], schema: SchemaRef) -> Result<Arc<dyn TableProvider>> {
        match read_payload(buf)? {
            Payload::DeltaFiles { spec } => Ok(Arc::new(DeltaFilesTable::new(spec, schema))),
            other => Err(unexpected("a table", &other)),
        }
    }

    fn encode_exec(&self, node: &Arc<dyn ExecutionPlan>, buf: &mut Vec<u8>) -> Result<bool> {
        match node.downcast_ref::<DeltaWriterExec>() {
            Some(writer) => write_payload(
                &Payload::DeltaWrite {
                    target: writer.target().clone(),
                },
                buf,
            ),
            None => Ok(false),
        }
    }

    fn decode_exec(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match read_payload(buf)? {
            Payload::DeltaWrite { target } => {
                let [input] = inputs else {
                    return Err(DataFusionError::Internal(
                        "DeltaWriterExec needs exactly one input".to_string(),
                    ));
                };
                Ok(Arc::new(DeltaWriterExec::new(Arc::clone(input), target)))
            }
            other => Err(unexpected("an execution plan", &other)),
        }
    }

    fn encode_udf(&self, udf: &ScalarUDF, buf: &mut Vec<u8>) -> Result<bool> {
        let Some(resolver) = scoring_resolver(udf) else {
            return Ok(false);
        };
        let pins = resolver
            .pins()
            .map_err(|message| DataFusionError::Plan(format!("{}(): {message}", udf.name())))?;
        write_payload(&Payload::Scoring { pins }, buf)
    }

    fn decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        match read_payload(buf)? {
            Payload::Scoring { pins } => scoring_function(name, Arc::new(PinnedModels::new(pins)))
                .ok_or_else(|| DataFusionError::Plan(format!("There is no UDF named '{name}'"))),
            other => Err(unexpected("a function", &other)),
        }
    }
}
