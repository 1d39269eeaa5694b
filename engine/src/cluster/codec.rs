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

use super::writer::{DatasetWrite, DeltaWriteNode, DeltaWriterExec};
use crate::delta_files::{DeltaFilesSpec, DeltaFilesTable};
use crate::models::PinnedModels;

/// One encoded item.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Payload {
    /// [`DeltaWriteNode`] or [`DeltaWriterExec`] (its input travels as the node's child).
    DeltaWrite { target: DatasetWrite },
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
                Ok(Arc::new(DeltaWriterExec::new(
                    Arc::clone(input),
                    Arc::new(target),
                )))
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use arrow::array::{AsArray, Float64Array};
    use arrow::datatypes::{DataType, Float64Type};
    use datafusion::execution::TaskContext;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    use datafusion::physical_plan::collect;
    use datafusion::prelude::SessionContext;
    use datafusion_proto::bytes::{
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
    };
    use lakeforge_udfs::models::ModelFormat;
    use lakeforge_udfs::scoring::{ModelResolver, parse_model_cached};
    use lakeforge_worker::LayeredPhysicalCodec;
    use url::Url;

    use super::*;

    /// A session like a worker's: Lakeforge's functions (scoring without models) and nothing
    /// else of the client's.
    fn worker_task_context() -> Arc<TaskContext> {
        let ctx = SessionContext::new();
        for function in crate::cluster::extensions().scalar_functions {
            ctx.register_udf(function.as_ref().clone());
        }
        ctx.task_ctx()
    }

    /// Encodes `sql`'s physical plan in `client` as a coordinator would send it, and decodes it
    /// as a worker does.
    async fn ship(client: &SessionContext, sql: &str) -> Result<(Arc<dyn ExecutionPlan>, Vec<u8>)> {
        let codec = LayeredPhysicalCodec::new(Arc::new(EngineCodec));
        let plan = client.sql(sql).await?.create_physical_plan().await?;
        let bytes = physical_plan_to_bytes_with_extension_codec(plan, &codec)?;
        let decoded =
            physical_plan_from_bytes_with_extension_codec(&bytes, &worker_task_context(), &codec)?;
        Ok((decoded, bytes.to_vec()))
    }

    #[tokio::test]
    async fn scoring_travels_as_a_model_reference_and_scores_on_the_worker() {
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/models/xgb_binary.json")
            .canonicalize()
            .unwrap();
        let bytes = std::fs::read(&fixture).unwrap();
        let (_, content_hash) = parse_model_cached(&bytes, ModelFormat::XgboostJson).unwrap();
        let pins = vec![ModelPin {
            reference: "churn".to_string(),
            name: "churn".to_string(),
            version: None,
            content_hash,
            format: ModelFormat::XgboostJson.to_string(),
            location: Url::from_file_path(&fixture).unwrap().to_string(),
        }];
        let client = SessionContext::new();
        lakeforge_udfs::register_all(&client, Arc::new(PinnedModels::new(pins)));
        let (plan, shipped) = ship(
            &client,
            "SELECT predict('churn', a, b, c, d, e, f) AS p FROM (VALUES (1.5006886720657349, \
             2.846362352371216, -3.6119980812072754, -1.8342331647872925, -2.672461986541748, \
             CAST(NULL AS DOUBLE))) AS t(a, b, c, d, e, f)",
        )
        .await
        .unwrap();
        // The reference travels (framed by Lakeforge's codec), not the model: the plan is far
        // smaller than the model file.
        let text = String::from_utf8_lossy(&shipped);
        assert!(
            text.contains("lakeforge") && text.contains("xgb_binary.json"),
            "{text}"
        );
        assert!(
            shipped.len() * 10 < bytes.len(),
            "plan {} bytes, model {}",
            shipped.len(),
            bytes.len()
        );
        let batches = collect(plan, worker_task_context()).await.unwrap();
        let p = batches[0].column(0).as_primitive::<Float64Type>().value(0);
        // The library's prediction for the fixture's first row.
        assert!((p - 0.28471997380256653).abs() <= 1e-6, "{p}");
    }

    #[test]
    fn a_model_changed_since_planning_is_refused_on_the_worker() {
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/models/xgb_binary.json")
            .canonicalize()
            .unwrap();
        let models = PinnedModels::new(vec![ModelPin {
            reference: "churn@3".to_string(),
            name: "churn".to_string(),
            version: Some(3),
            content_hash: "sha256:0000".to_string(),
            format: ModelFormat::XgboostJson.to_string(),
            location: Url::from_file_path(&fixture).unwrap().to_string(),
        }]);
        let error = models.resolve("churn@3").unwrap_err();
        assert!(
            error.contains("model 'churn@3'")
                && error.contains("has changed since the job was planned")
                && error.contains("expected sha256:0000"),
            "{error}"
        );
        let error = models.resolve("churn@4").unwrap_err();
        assert!(
            error.contains("was not resolved when the job was planned"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_function_the_workers_do_not_have_is_named() {
        let client = SessionContext::new();
        client.register_udf(create_udf(
            "mystery",
            vec![DataType::Float64],
            DataType::Float64,
            Volatility::Volatile,
            Arc::new(|args: &[ColumnarValue]| {
                let rows = match &args[0] {
                    ColumnarValue::Array(array) => array.len(),
                    ColumnarValue::Scalar(_) => 1,
                };
                Ok(ColumnarValue::Array(Arc::new(Float64Array::from(vec![
                    0.0;
                    rows
                ]))))
            }),
        ));
        let error = ship(&client, "SELECT mystery(random()) AS m")
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("There is no UDF named \"mystery\""),
            "{error}"
        );
    }
}
