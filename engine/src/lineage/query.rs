//! Lineage queries: where a product column comes from (upstream, from the commit metadata of
//! each version, across jobs), and what a source column feeds (impact, from the warehouse's
//! lineage table).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::EngineConfig;
use crate::delta::{commit_metadata, is_delta_table};
use crate::error::{EngineError, Result};
use crate::location::display_location;
use crate::metadata::CommitMetadata;

use crate::system_table::query_rows;

use super::{
    InputKind, LineageEdge, ProductLineage, StoredLineageEdge, lineage_table_url,
    normalize_dataset_url,
};

/// How deep `upstream` follows products into the products they read.
const MAX_UPSTREAM_DEPTH: usize = 32;

/// A product version and the lineage of (some of) its columns.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamTable {
    /// The table's URL.
    pub table: String,
    /// The version described.
    pub version: u64,
    /// The job that wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The run that wrote it.
    pub run_id: String,
    /// The columns asked for.
    pub columns: Vec<UpstreamColumn>,
    /// What decides the table's rows (filters, joins, grouping, sorting).
    pub dataset: Vec<UpstreamInput>,
}

/// One column's inputs.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamColumn {
    /// The column.
    pub column: String,
    /// Its inputs, grouped by input column.
    pub inputs: Vec<UpstreamInput>,
}

/// An input column and how the output depends on it; when it is a column of another Lakeforge
/// product, that product's lineage for it.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamInput {
    /// delta, files, model or table.
    pub kind: InputKind,
    /// The source's name in the job (or the model's name).
    pub name: String,
    /// The input's location (absent for models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// The version read (Delta) or used (model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The input column (or the model reference).
    pub field: String,
    /// How the output depends on it (`DIRECT IDENTITY`, `INDIRECT FILTER`, ...).
    pub transformations: Vec<Transformation>,
    /// The input product's own lineage of this column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Box<UpstreamTable>>,
}

/// The lineage of `table` (at `version`, default the latest), for one column or all, followed
/// through every Lakeforge product it read, at the versions it read.
pub async fn upstream(
    table: &Url,
    version: Option<u64>,
    column: Option<&str>,
) -> Result<UpstreamTable> {
    let (version, metadata) = lineage_metadata(table, version).await?;
    let lineage = metadata.lineage.clone().ok_or_else(|| {
        EngineError::Usage(format!(
            "{} version {version} has no lineage: it was not written by a Lakeforge run that \
             records lineage",
            display_location(table)
        ))
    })?;
    if let Some(column) = column
        && !lineage.columns.iter().any(|c| c.name == column)
    {
        return Err(EngineError::Usage(format!(
            "{} version {version} has no column '{column}' (columns: {})",
            display_location(table),
            lineage
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut visiting = BTreeSet::new();
    Box::pin(describe_table(
        table,
        version,
        &metadata,
        &lineage,
        column,
        0,
        &mut visiting,
    ))
    .await
}

/// The commit metadata of `table` at `version` (default latest), following rollbacks to the
/// version whose contents they restored.
async fn lineage_metadata(table: &Url, version: Option<u64>) -> Result<(u64, CommitMetadata)> {
    let mut wanted = version;
    for _ in 0..MAX_UPSTREAM_DEPTH {
        let (found, metadata) = commit_metadata(table, wanted).await?;
        let metadata = metadata.ok_or_else(|| {
            EngineError::Usage(format!(
                "{} version {found} was not written by Lakeforge (no lineage in its commit)",
                display_location(table)
            ))
        })?;
        match metadata.restored_version {
            Some(restored) if metadata.lineage.is_none() => wanted = Some(restored),
            _ => return Ok((found, metadata)),
        }
    }
    Err(EngineError::Usage(format!(
        "{}: too many rollbacks to follow",
        display_location(table)
    )))
}

async fn describe_table(
    table: &Url,
    version: u64,
    metadata: &CommitMetadata,
    lineage: &ProductLineage,
    column: Option<&str>,
    depth: usize,
    visiting: &mut BTreeSet<(String, u64, String)>,
) -> Result<UpstreamTable> {
    let mut columns = Vec::new();
    for entry in &lineage.columns {
        if column.is_some_and(|c| c != entry.name) {
            continue;
        }
        let inputs = describe_inputs(lineage, &entry.inputs, depth, visiting, true).await?;
        columns.push(UpstreamColumn {
            column: entry.name.clone(),
            inputs,
        });
    }
    let dataset = describe_inputs(lineage, &lineage.dataset, depth, visiting, false).await?;
    Ok(UpstreamTable {
        table: normalize_dataset_url(table.as_str()),
        version,
        job: metadata.job.clone(),
        run_id: metadata.run_id.clone(),
        columns,
        dataset,
    })
}

/// Groups `edges` by input column and, for columns of Lakeforge products, follows them.
async fn describe_inputs(
    lineage: &ProductLineage,
    edges: &[LineageEdge],
    depth: usize,
    visiting: &mut BTreeSet<(String, u64, String)>,
    follow: bool,
) -> Result<Vec<UpstreamInput>> {
    let mut grouped: BTreeMap<(usize, &str), Vec<&LineageEdge>> = BTreeMap::new();
    for edge in edges {
        grouped
            .entry((edge.input, &edge.field))
            .or_default()
            .push(edge);
    }
    let mut inputs = Vec::with_capacity(grouped.len());
    for ((index, field), edges) in grouped {
        let Some(input) = lineage.inputs.get(index) else {
            continue;
        };
        let transformations = edges.iter().map(|e| describe_edge(e)).collect();
        let mut upstream = None;
        if follow
            && depth < MAX_UPSTREAM_DEPTH
            && input.kind == InputKind::Delta
            && let (Some(url), Some(version)) = (&input.url, input.version)
        {
            let column = field.split('.').next().unwrap_or(field).to_string();
            let key = (normalize_dataset_url(url), version, column.clone());
            if visiting.insert(key.clone()) {
                upstream = follow_product(url, version, &column, depth, visiting).await?;
                visiting.remove(&key);
            }
        }
        inputs.push(UpstreamInput {
            kind: input.kind,
            name: input.name.clone(),
            dataset: input.url.as_deref().map(normalize_dataset_url),
            version: input.version,
            field: field.to_string(),
            transformations,
            upstream,
        });
    }
    Ok(inputs)
}

/// The lineage of `column` in the Delta table at `url`, `version`, when Lakeforge wrote it.
async fn follow_product(
    url: &str,
    version: u64,
    column: &str,
    depth: usize,
    visiting: &mut BTreeSet<(String, u64, String)>,
) -> Result<Option<Box<UpstreamTable>>> {
    let Ok(table) = Url::parse(url) else {
        return Ok(None);
    };
    if !is_delta_table(&table).await {
        return Ok(None);
    }
    let Ok((found, metadata)) = lineage_metadata(&table, Some(version)).await else {
        // A Delta table another tool wrote (or one whose history was vacuumed): lineage ends.
        return Ok(None);
    };
    let Some(lineage) = metadata.lineage.clone() else {
        return Ok(None);
    };
    let described = Box::pin(describe_table(
        &table,
        found,
        &metadata,
        &lineage,
        Some(column),
        depth + 1,
        visiting,
    ))
    .await?;
    Ok(Some(Box::new(described)))
}

/// One way an output column depends on an input column, structured as OpenLineage has it
/// (`type`, `subtype`, `masking`) for `--format json`; displayed as `DIRECT IDENTITY`, with
/// `(masking)` / `(inferred)` when they hold, in the text, DOT and Mermaid forms.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Transformation {
    /// `DIRECT` (the value is computed from the input) or `INDIRECT` (influenced by it).
    #[serde(rename = "type")]
    pub kind: String,
    /// The OpenLineage subtype: `IDENTITY`, `TRANSFORMATION`, `AGGREGATION`, `FILTER`, ...
    pub subtype: String,
    /// Whether the transformation hides the input's values (hashes, counts, masking
    /// functions).
    pub masking: bool,
    /// Whether the dependency was inferred rather than read off the plan (e.g. through a
    /// function Lakeforge does not know).
    pub inferred: bool,
}

impl Transformation {
    /// Whether the output's value is computed from the input.
    pub fn is_direct(&self) -> bool {
        self.kind == "DIRECT"
    }
}

impl std::fmt::Display for Transformation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.subtype)?;
        if self.masking {
            f.write_str(" (masking)")?;
        }
        if self.inferred {
            f.write_str(" (inferred)")?;
        }
        Ok(())
    }
}

/// `DIRECT IDENTITY, INDIRECT FILTER`.
fn joined(transformations: &[Transformation]) -> String {
    transformations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_edge(edge: &LineageEdge) -> Transformation {
    Transformation {
        kind: edge.subtype.kind().to_string(),
        subtype: edge.subtype.as_str().to_string(),
        masking: edge.masking,
        inferred: edge.inferred,
    }
}

/// Output formats of the lineage commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineageFormat {
    /// An indented tree (upstream) or a list of hops (impact).
    Text,
    /// JSON, for scripts.
    Json,
    /// Graphviz DOT.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}

/// Renders an upstream tree.
pub fn render_upstream(tree: &UpstreamTable, format: LineageFormat) -> Result<String> {
    match format {
        LineageFormat::Json => to_json(tree),
        LineageFormat::Text => {
            let mut text = String::new();
            upstream_text(tree, "", &mut text);
            Ok(text)
        }
        LineageFormat::Dot | LineageFormat::Mermaid => {
            let mut graph = Graph::default();
            upstream_graph(tree, &mut graph);
            Ok(graph.render(format))
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    // One line, like every `--json` output of the CLI.
    serde_json::to_string(value)
        .map(|json| format!("{json}\n"))
        .map_err(|e| EngineError::internal("cannot write the lineage as JSON", e))
}

fn short(url: &str) -> String {
    Url::parse(url)
        .map(|u| display_location(&u))
        .unwrap_or_else(|_| url.to_string())
}

fn upstream_text(tree: &UpstreamTable, indent: &str, text: &mut String) {
    let _ = writeln!(
        text,
        "{} @ v{}{} (run {})",
        short(&tree.table),
        tree.version,
        tree.job
            .as_deref()
            .map(|j| format!(", job {j}"))
            .unwrap_or_default(),
        tree.run_id
    );
    let groups: Vec<(String, &Vec<UpstreamInput>)> = tree
        .columns
        .iter()
        .map(|c| (c.column.clone(), &c.inputs))
        .chain((!tree.dataset.is_empty()).then(|| ("(whole dataset)".to_string(), &tree.dataset)))
        .collect();
    for (index, (name, inputs)) in groups.iter().enumerate() {
        let last = index + 1 == groups.len();
        let _ = writeln!(text, "{indent}{}{name}", if last { "└── " } else { "├── " });
        let child_indent = format!("{indent}{}", if last { "    " } else { "│   " });
        if inputs.is_empty() {
            let _ = writeln!(
                text,
                "{child_indent}└── (no inputs: a constant or count(*))"
            );
        }
        for (position, input) in inputs.iter().enumerate() {
            let last_input = position + 1 == inputs.len();
            let location = match (&input.dataset, input.kind) {
                (_, InputKind::Model) => format!(
                    "model {}{}",
                    input.name,
                    input.version.map(|v| format!(" v{v}")).unwrap_or_default()
                ),
                (Some(url), _) => format!(
                    "{}{}",
                    short(url),
                    input
                        .version
                        .map(|v| format!(" @ v{v}"))
                        .unwrap_or_default()
                ),
                (None, _) => input.name.clone(),
            };
            let _ = writeln!(
                text,
                "{child_indent}{}{}.{} [{}]  {}",
                if last_input {
                    "└── "
                } else {
                    "├── "
                },
                input.name,
                input.field,
                location,
                joined(&input.transformations)
            );
            if let Some(upstream) = &input.upstream {
                let nested = format!("{child_indent}{}", if last_input { "    " } else { "│   " });
                let mut sub = String::new();
                upstream_text(upstream, &nested, &mut sub);
                // The nested table's header line is indented like its columns.
                for (line_index, line) in sub.lines().enumerate() {
                    if line_index == 0 {
                        let _ = writeln!(text, "{nested}↳ {line}");
                    } else {
                        let _ = writeln!(text, "{line}");
                    }
                }
            }
        }
    }
}

/// A lineage graph: nodes are (dataset, column), edges carry the transformations.
#[derive(Debug, Default)]
struct Graph {
    nodes: BTreeMap<(String, String), String>,
    edges: BTreeSet<(String, String, String, bool)>,
}

impl Graph {
    fn node(&mut self, dataset: &str, column: &str) -> String {
        let next = self.nodes.len();
        self.nodes
            .entry((dataset.to_string(), column.to_string()))
            .or_insert_with(|| format!("n{next}"))
            .clone()
    }

    fn edge(&mut self, from: String, to: String, label: &str, direct: bool) {
        self.edges.insert((from, to, label.to_string(), direct));
    }

    fn render(&self, format: LineageFormat) -> String {
        let mut text = String::new();
        let label = |dataset: &str, column: &str| format!("{}.{column}", short(dataset));
        if format == LineageFormat::Dot {
            text.push_str("digraph lineage {\n  rankdir=LR;\n  node [shape=box];\n");
            for ((dataset, column), id) in &self.nodes {
                let _ = writeln!(text, "  {id} [label={:?}];", label(dataset, column));
            }
            for (from, to, label, direct) in &self.edges {
                let style = if *direct { "" } else { ", style=dashed" };
                let _ = writeln!(text, "  {from} -> {to} [label={label:?}{style}];");
            }
            text.push_str("}\n");
        } else {
            text.push_str("flowchart LR\n");
            for ((dataset, column), id) in &self.nodes {
                let escaped = label(dataset, column).replace('"', "#quot;");
                let _ = writeln!(text, "  {id}[\"{escaped}\"]");
            }
            for (from, to, label, direct) in &self.edges {
                let arrow = if *direct { "-->" } else { "-.->" };
                let _ = writeln!(text, "  {from} {arrow}|\"{label}\"| {to}");
            }
        }
        text
    }
}

fn upstream_graph(tree: &UpstreamTable, graph: &mut Graph) {
    let add = |output: &str, inputs: &[UpstreamInput], graph: &mut Graph| {
        let to = graph.node(&tree.table, output);
        for input in inputs {
            let dataset = input
                .dataset
                .clone()
                .unwrap_or_else(|| format!("model:{}", input.name));
            let from = graph.node(&dataset, &input.field);
            let direct = input.transformations.iter().any(Transformation::is_direct);
            graph.edge(from, to.clone(), &joined(&input.transformations), direct);
            if let Some(upstream) = &input.upstream {
                upstream_graph(upstream, graph);
            }
        }
    };
    for column in &tree.columns {
        add(&column.column, &column.inputs, graph);
    }
    add("*", &tree.dataset, graph);
}

/// One product column reached from the starting column.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImpactHit {
    /// Hops from the start (1 = reads the start directly).
    pub depth: usize,
    /// The job writing the product.
    pub job: String,
    /// The product.
    pub product: String,
    /// Its table.
    pub table: String,
    /// The latest version recorded.
    pub version: u64,
    /// The column; `*` when the whole dataset depends on it (filter, join, grouping).
    pub column: String,
    /// The hops from the start to this column.
    pub path: Vec<ImpactHop>,
}

/// One hop of an impact path.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImpactHop {
    /// The input dataset.
    pub from_dataset: String,
    /// The input column.
    pub from_field: String,
    /// The product table.
    pub to_table: String,
    /// The product column (`*` for the whole dataset).
    pub to_column: String,
    /// How, e.g. `DIRECT IDENTITY`.
    pub transformations: Vec<Transformation>,
}

/// One row of the lineage table, as impact analysis reads it.
#[derive(Debug, Clone, Deserialize)]
struct EdgeRow {
    job: String,
    product: String,
    #[serde(rename = "product_table")]
    table: String,
    #[serde(rename = "product_version")]
    version: u64,
    output_column: Option<String>,
    /// NULL for an input the run could not resolve: it matches no dataset.
    input_dataset: Option<String>,
    input_field: String,
    #[serde(rename = "type")]
    kind: String,
    subtype: String,
    /// NULL in rows written before the column existed: not masking.
    masking: Option<bool>,
    /// NULL in rows written before the column existed: read from the plan.
    inferred: Option<bool>,
}

/// Every product column in `warehouse` that depends on `column` of `dataset` (a location or
/// URL, compared without trailing slash), directly or through other products, up to `depth`
/// hops; only DIRECT dependencies with `direct_only`. Uses each product's latest recorded
/// version. Sorted by depth, table, column.
pub async fn impact(
    warehouse: &Url,
    dataset: &Url,
    column: &str,
    depth: usize,
    direct_only: bool,
    config: &EngineConfig,
) -> Result<Vec<ImpactHit>> {
    let url = lineage_table_url(warehouse)?;
    if !is_delta_table(&url).await {
        return Err(EngineError::Usage(format!(
            "{} has no lineage table ({}): no Lakeforge run has recorded lineage there",
            display_location(warehouse),
            display_location(&url)
        )));
    }
    let rows: Vec<EdgeRow> = query_rows::<StoredLineageEdge, _>(
        warehouse,
        "SELECT l.job, l.product, l.product_table, l.product_version, l.output_column, \
         l.input_dataset, l.input_field, l.type, l.subtype, l.masking, l.inferred \
         FROM lineage AS l JOIN \
           (SELECT product_table, max(product_version) AS latest FROM lineage \
            GROUP BY product_table) AS newest \
         ON l.product_table = newest.product_table AND l.product_version = newest.latest",
        config,
        "cannot read the lineage table",
    )
    .await?;
    let start = normalize_dataset_url(dataset.as_str());
    let mut hits: BTreeMap<(String, String), ImpactHit> = BTreeMap::new();
    let mut queue: VecDeque<(String, Option<String>, Vec<ImpactHop>)> = VecDeque::new();
    queue.push_back((start, Some(column.to_string()), Vec::new()));
    while let Some((from_dataset, from_column, path)) = queue.pop_front() {
        if path.len() >= depth {
            continue;
        }
        // (table, column) reached from this node, with the transformations of the hop.
        let mut reached: BTreeMap<(String, String), (Vec<Transformation>, &EdgeRow)> =
            BTreeMap::new();
        for row in &rows {
            let field_matches = match &from_column {
                None => true,
                Some(c) => row.input_field == *c || row.input_field.starts_with(&format!("{c}.")),
            };
            if row.input_dataset.as_deref() != Some(from_dataset.as_str())
                || !field_matches
                || (direct_only && row.kind != "DIRECT")
            {
                continue;
            }
            let to_column = row.output_column.clone().unwrap_or_else(|| "*".to_string());
            let entry = reached
                .entry((row.table.clone(), to_column))
                .or_insert_with(|| (Vec::new(), row));
            let transformation = Transformation {
                kind: row.kind.clone(),
                subtype: row.subtype.clone(),
                masking: row.masking.unwrap_or(false),
                inferred: row.inferred.unwrap_or(false),
            };
            if !entry.0.contains(&transformation) {
                entry.0.push(transformation);
            }
        }
        for ((table, to_column), (mut transformations, row)) in reached {
            transformations.sort();
            let key = (table.clone(), to_column.clone());
            if hits.contains_key(&key) {
                continue;
            }
            let mut hop_path = path.clone();
            hop_path.push(ImpactHop {
                from_dataset: from_dataset.clone(),
                from_field: from_column.clone().unwrap_or_else(|| "*".to_string()),
                to_table: table.clone(),
                to_column: to_column.clone(),
                transformations,
            });
            hits.insert(
                key,
                ImpactHit {
                    depth: hop_path.len(),
                    job: row.job.clone(),
                    product: row.product.clone(),
                    table: table.clone(),
                    version: row.version,
                    column: to_column.clone(),
                    path: hop_path.clone(),
                },
            );
            // A whole-dataset dependency affects every column of the product.
            let next_column = (to_column != "*").then_some(to_column);
            queue.push_back((table, next_column, hop_path));
        }
    }
    let mut hits: Vec<ImpactHit> = hits.into_values().collect();
    hits.sort();
    Ok(hits)
}

/// Renders impact hits.
pub fn render_impact(hits: &[ImpactHit], format: LineageFormat) -> Result<String> {
    match format {
        LineageFormat::Json => to_json(&hits),
        LineageFormat::Text => {
            let mut text = String::new();
            for hit in hits {
                let path = hit
                    .path
                    .iter()
                    .map(|hop| {
                        format!(
                            "{}.{} -[{}]-> {}.{}",
                            short(&hop.from_dataset),
                            hop.from_field,
                            joined(&hop.transformations),
                            short(&hop.to_table),
                            hop.to_column
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("  ");
                let _ = writeln!(
                    text,
                    "{} {}.{} (job {}, product {} v{})  via {path}",
                    hit.depth,
                    short(&hit.table),
                    hit.column,
                    hit.job,
                    hit.product,
                    hit.version
                );
            }
            Ok(text)
        }
        LineageFormat::Dot | LineageFormat::Mermaid => {
            let mut graph = Graph::default();
            for hop in hits.iter().flat_map(|h| &h.path) {
                let from = graph.node(&hop.from_dataset, &hop.from_field);
                let to = graph.node(&hop.to_table, &hop.to_column);
                let direct = hop.transformations.iter().any(Transformation::is_direct);
                graph.edge(from, to, &joined(&hop.transformations), direct);
            }
            Ok(graph.render(format))
        }
    }
}
