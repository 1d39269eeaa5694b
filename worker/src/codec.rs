//! Lakeforge's extension codecs layered over Ballista's.
//!
//! Ballista's own codecs carry its shuffle nodes and file formats; Lakeforge's (given by the
//! engine, which owns the nodes) carry the Delta writer, pinned Delta file lists and scoring
//! functions. Every buffer Lakeforge's codec writes is framed with [`FRAME_MAGIC`] and the
//! Lakeforge version that wrote it, so decoding knows whose buffer it holds without trying
//! both, and a process of another Lakeforge version refuses the plan with a clear message
//! instead of misreading it.

use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use crate::LAKEFORGE_VERSION;

/// The first bytes of every buffer Lakeforge's codecs write. `0xFF` cannot start a protobuf
/// message of Ballista's (it would be a field tag with the continuation bit and field 15+, which
/// Ballista's nodes do not use at that position), so the two never collide.
pub const FRAME_MAGIC: &[u8] = b"\xFFlakeforge\x00";

/// Frames `payload` with the magic and this build's version.
fn frame(payload: &[u8], buf: &mut Vec<u8>) {
    buf.extend_from_slice(FRAME_MAGIC);
    buf.extend_from_slice(LAKEFORGE_VERSION.as_bytes());
    buf.push(0);
    buf.extend_from_slice(payload);
}

/// The payload of a Lakeforge frame, `None` for a buffer of someone else's; an error when the
/// frame was written by another Lakeforge version.
pub fn unframe(buf: &[u8]) -> Result<Option<&[u8]>> {
    let Some(rest) = buf.strip_prefix(FRAME_MAGIC) else {
        return Ok(None);
    };
    let Some(end) = rest.iter().position(|&b| b == 0) else {
        return Err(DataFusionError::Internal(
            "a Lakeforge plan node without its version".to_string(),
        ));
    };
    let version = String::from_utf8_lossy(&rest[..end]);
    if version != LAKEFORGE_VERSION {
        return Err(DataFusionError::Plan(format!(
            "this plan was made by Lakeforge {version}, but this process is Lakeforge \
             {LAKEFORGE_VERSION}: the client, the coordinator and every worker must run the same \
             Lakeforge version"
        )));
    }
    Ok(Some(&rest[end + 1..]))
}

/// Encodes into a scratch buffer with `encode`, framing the result when it wrote anything.
/// Returns whether Lakeforge's codec handled the item.
fn encode_framed(
    buf: &mut Vec<u8>,
    encode: impl FnOnce(&mut Vec<u8>) -> Result<bool>,
) -> Result<bool> {
    let mut payload = Vec::new();
    if encode(&mut payload)? {
        frame(&payload, buf);
        return Ok(true);
    }
    Ok(false)
}

/// What Lakeforge's codec knows how to carry. Each `encode_*` returns `Ok(false)` for items
/// that are not Lakeforge's (they then go to Ballista's codec); each `decode_*` is only given
/// payloads Lakeforge's `encode_*` wrote.
pub trait LakeforgeCodec: std::fmt::Debug + Send + Sync {
    /// A logical extension node (e.g. the Delta writer).
    fn encode_logical_node(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<bool>;
    /// Rebuilds a logical extension node.
    fn decode_logical_node(&self, buf: &[u8], inputs: &[LogicalPlan]) -> Result<Extension>;
    /// A table provider (e.g. a pinned Delta version's files).
    fn encode_table(&self, table: &Arc<dyn TableProvider>, buf: &mut Vec<u8>) -> Result<bool>;
    /// Rebuilds a table provider with the schema the plan recorded.
    fn decode_table(&self, buf: &[u8], schema: SchemaRef) -> Result<Arc<dyn TableProvider>>;
    /// An execution plan node.
    fn encode_exec(&self, node: &Arc<dyn ExecutionPlan>, buf: &mut Vec<u8>) -> Result<bool>;
    /// Rebuilds an execution plan node over its decoded inputs.
    fn decode_exec(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>>;
    /// A scalar function that carries state (e.g. the models a scoring function is pinned to).
    fn encode_udf(&self, udf: &ScalarUDF, buf: &mut Vec<u8>) -> Result<bool>;
    /// Rebuilds such a function.
    fn decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>>;
}

/// The logical codec of every Lakeforge cluster process: Lakeforge's items, then Ballista's.
#[derive(Debug)]
pub struct LayeredLogicalCodec {
    lakeforge: Arc<dyn LakeforgeCodec>,
    ballista: BallistaLogicalExtensionCodec,
}

impl LayeredLogicalCodec {
    /// Lakeforge's codec over Ballista's.
    pub fn new(lakeforge: Arc<dyn LakeforgeCodec>) -> LayeredLogicalCodec {
        LayeredLogicalCodec {
            lakeforge,
            ballista: BallistaLogicalExtensionCodec::default(),
        }
    }
}

impl LogicalExtensionCodec for LayeredLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        match unframe(buf)? {
            Some(payload) => self.lakeforge.decode_logical_node(payload, inputs),
            None => self.ballista.try_decode(buf, inputs, ctx),
        }
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        if encode_framed(buf, |payload| {
            self.lakeforge.encode_logical_node(node, payload)
        })? {
            return Ok(());
        }
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match unframe(buf)? {
            Some(payload) => self.lakeforge.decode_table(payload, schema),
            None => self
                .ballista
                .try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if encode_framed(buf, |payload| self.lakeforge.encode_table(&node, payload))? {
            return Ok(());
        }
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_udf(self.lakeforge.as_ref(), name, buf, || {
            self.ballista.try_decode_udf(name, buf)
        })
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_udf(self.lakeforge.as_ref(), node, buf, |buf| {
            self.ballista.try_encode_udf(node, buf)
        })
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.ballista.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udaf(node, buf)
    }
}

/// The physical codec of every Lakeforge cluster process: Lakeforge's nodes, then Ballista's.
#[derive(Debug)]
pub struct LayeredPhysicalCodec {
    lakeforge: Arc<dyn LakeforgeCodec>,
    ballista: BallistaPhysicalExtensionCodec,
}

impl LayeredPhysicalCodec {
    /// Lakeforge's codec over Ballista's.
    pub fn new(lakeforge: Arc<dyn LakeforgeCodec>) -> LayeredPhysicalCodec {
        LayeredPhysicalCodec {
            lakeforge,
            ballista: BallistaPhysicalExtensionCodec::default(),
        }
    }
}

impl PhysicalExtensionCodec for LayeredPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match unframe(buf)? {
            Some(payload) => self.lakeforge.decode_exec(payload, inputs, ctx),
            None => self.ballista.try_decode(buf, inputs, ctx, proto_converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if encode_framed(buf, |payload| self.lakeforge.encode_exec(&node, payload))? {
            return Ok(());
        }
        self.ballista.try_encode(node, buf, proto_converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_udf(self.lakeforge.as_ref(), name, buf, || {
            self.ballista.try_decode_udf(name, buf)
        })
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_udf(self.lakeforge.as_ref(), node, buf, |buf| {
            self.ballista.try_encode_udf(node, buf)
        })
    }
}

/// A scalar function: Lakeforge's payload when framed, otherwise Ballista's (`fallback`), and
/// a function nobody can decode is named as missing.
fn decode_udf(
    lakeforge: &dyn LakeforgeCodec,
    name: &str,
    buf: &[u8],
    fallback: impl FnOnce() -> Result<Arc<ScalarUDF>>,
) -> Result<Arc<ScalarUDF>> {
    match unframe(buf)? {
        Some(payload) => lakeforge.decode_udf(name, payload),
        None => fallback().map_err(|_| missing_function(name)),
    }
}

/// A scalar function: framed by Lakeforge's codec when it carries one, otherwise by Ballista's
/// (`fallback`).
fn encode_udf(
    lakeforge: &dyn LakeforgeCodec,
    node: &ScalarUDF,
    buf: &mut Vec<u8>,
    fallback: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    if encode_framed(buf, |payload| lakeforge.encode_udf(node, payload))? {
        return Ok(());
    }
    fallback(buf)
}

/// The codec is asked for a function only when this process's registry lacks it: a function
/// registered on the client alone, which no cluster process can run.
fn missing_function(name: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "There is no UDF named \"{name}\" on this cluster process (Lakeforge \
         {LAKEFORGE_VERSION}); functions the cluster runs must be listed in lakeforge-udfs, \
         which every coordinator and worker registers"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_foreign_buffers_pass_through() {
        let mut buf = Vec::new();
        frame(b"payload", &mut buf);
        assert_eq!(unframe(&buf).unwrap(), Some(&b"payload"[..]));
        assert_eq!(unframe(b"\x0a\x02hi").unwrap(), None);
    }

    #[test]
    fn another_version_is_refused_by_name() {
        let mut buf = FRAME_MAGIC.to_vec();
        buf.extend_from_slice(b"0.0.1-other\x00payload");
        let error = unframe(&buf).unwrap_err().to_string();
        assert!(error.contains("Lakeforge 0.0.1-other"), "{error}");
        assert!(error.contains(LAKEFORGE_VERSION), "{error}");
    }
}
