//! Column-level lineage, read from DataFusion logical plans.
//!
//! [`extract_lineage`] walks a plan bottom-up (the TreeNode visitor API) and computes, for every
//! output column, the leaf-table columns it depends on and how, in OpenLineage's terms:
//!
//! - DIRECT: `IDENTITY` (taken as is), `TRANSFORMATION` (computed from values of the same row),
//!   `AGGREGATION` (computed from many rows);
//! - INDIRECT: `JOIN`, `FILTER`, `GROUP_BY`, `SORT`, `WINDOW` (partition and order keys),
//!   `CONDITIONAL` (CASE conditions, the tested arguments of COALESCE / NULLIF / NVL2).
//!
//! Dependencies that decide which rows exist (filters, join conditions, grouping keys, sort
//! keys) are dataset-wide: they go in [`PlanLineage::dataset`], as OpenLineage's column lineage
//! facet specifies. Window keys, CASE conditions and an aggregate's own `FILTER (WHERE ...)`
//! affect one column and stay with it.
//!
//! # How columns are identified
//! Every scan of a table (not a view) is a separate *instance*, and a column is tracked by
//! (instance, column name, nested field path), never by matching names. Views (Lakeforge steps),
//! CTEs, subqueries and aliases are followed through to the tables they read; the instances are
//! mapped back to table names only at the end.
//!
//! # Rules that keep the answer independent of the plan's shape
//! The optimizer moves predicates around (WHERE clauses become join keys, filters go into
//! scans, IN / EXISTS subqueries become semi joins, correlated scalar subqueries become grouped
//! joins), so the same query must give the same lineage before and after optimization. Hence:
//! - a predicate conjunct that reads two or more table instances is a `JOIN` condition wherever
//!   it appears (WHERE, ON, HAVING, a correlated subquery's WHERE); one that reads one instance
//!   is a `FILTER`;
//! - a disjunction over several instances also filters each instance that every disjunct
//!   constrains on its own (`(a.x = 1 AND b.y = 2) OR (a.x = 3 AND b.y = 4)` filters `a.x` and
//!   `b.y`), because that predicate is implied;
//! - an aggregate inside a correlated subquery is evaluated per outer row, so the inner columns
//!   of its equality correlations are `GROUP_BY` keys;
//! - `DISTINCT` (of rows, or inside an aggregate) groups by its columns;
//! - casts keep the subtype: they change a value's type, not its value.
//!
//! Composition through views and subqueries: an INDIRECT use of a column makes all its
//! dependencies INDIRECT with that subtype; a DIRECT use keeps its dependencies' INDIRECT
//! subtypes and otherwise takes the stronger of the two DIRECT subtypes
//! (IDENTITY < TRANSFORMATION < AGGREGATION). Masking propagates.
//!
//! An expression or plan node the extractor does not model still yields DIRECT /
//! TRANSFORMATION edges to every column it references, marked [`Transformation::inferred`];
//! no output column is ever left out.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion, TreeNodeVisitor};
use datafusion::common::{Column, DFSchema, DFSchemaRef, TableReference};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::expr::{AggregateFunction, ScalarFunction, WindowFunction};
use datafusion::logical_expr::utils::{
    conjunction, disjunction, grouping_set_to_exprlist, split_conjunction,
};
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, Distinct, DistinctOn, Expr, JoinType, LogicalPlan, Operator,
    RecursiveQuery, Subquery, TableScan, Unnest, Values, WindowFunctionDefinition,
};
use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::Dialect;
use serde::{Deserialize, Serialize};

use crate::error::PlannerError;

/// How an output column depends on an input (OpenLineage transformation subtypes).
///
/// The order is meaningful for DIRECT subtypes: composing two DIRECT uses keeps the larger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Subtype {
    /// DIRECT: the value is taken as is.
    Identity,
    /// DIRECT: the value is computed from values of the same row.
    Transformation,
    /// DIRECT: the value is computed from many rows.
    Aggregation,
    /// INDIRECT: a join condition.
    Join,
    /// INDIRECT: a row filter (WHERE, HAVING, a filter pushed into a scan, a dropping check).
    Filter,
    /// INDIRECT: a grouping key (GROUP BY, DISTINCT).
    GroupBy,
    /// INDIRECT: a sort key.
    Sort,
    /// INDIRECT: a window's partition or order key.
    Window,
    /// INDIRECT: a condition choosing between values (CASE WHEN, COALESCE).
    Conditional,
}

impl Subtype {
    /// Every subtype, in order.
    pub const ALL: [Subtype; 9] = [
        Subtype::Identity,
        Subtype::Transformation,
        Subtype::Aggregation,
        Subtype::Join,
        Subtype::Filter,
        Subtype::GroupBy,
        Subtype::Sort,
        Subtype::Window,
        Subtype::Conditional,
    ];

    /// Whether the output's value is computed from the input (DIRECT) rather than influenced
    /// by it (INDIRECT).
    pub fn is_direct(self) -> bool {
        matches!(
            self,
            Subtype::Identity | Subtype::Transformation | Subtype::Aggregation
        )
    }

    /// `DIRECT` or `INDIRECT`.
    pub fn kind(self) -> &'static str {
        if self.is_direct() {
            "DIRECT"
        } else {
            "INDIRECT"
        }
    }

    /// The OpenLineage name, e.g. `GROUP_BY`.
    pub fn as_str(self) -> &'static str {
        match self {
            Subtype::Identity => "IDENTITY",
            Subtype::Transformation => "TRANSFORMATION",
            Subtype::Aggregation => "AGGREGATION",
            Subtype::Join => "JOIN",
            Subtype::Filter => "FILTER",
            Subtype::GroupBy => "GROUP_BY",
            Subtype::Sort => "SORT",
            Subtype::Window => "WINDOW",
            Subtype::Conditional => "CONDITIONAL",
        }
    }

    /// Parses an OpenLineage subtype name.
    pub fn parse(text: &str) -> Option<Subtype> {
        Subtype::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The subtype of an input reached through two uses: `self` (outer) applied to a value
    /// that depends on the input with `inner`.
    fn compose(self, inner: Subtype) -> Subtype {
        if !self.is_direct() {
            self
        } else if !inner.is_direct() {
            inner
        } else {
            self.max(inner)
        }
    }
}

impl std::fmt::Display for Subtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind(), self.as_str())
    }
}

/// One way an output depends on an input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transformation {
    /// The subtype (its [`Subtype::kind`] is the OpenLineage type).
    pub subtype: Subtype,
    /// Whether the value is obfuscated on the way (hashes, counts).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub masking: bool,
    /// The SQL text of the expression applied, when it is more than a column reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Set when the extractor does not model the expression or plan node and assumed DIRECT /
    /// TRANSFORMATION from every column it references.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inferred: bool,
}

/// What an output depends on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputRef {
    /// A column (or nested field) of a table the plan scans.
    Column {
        /// The table's name as the plan refers to it (a source registered in the session).
        table: String,
        /// The column.
        column: String,
        /// The nested field path inside the column (`s.a.b` is column `s`, path `[a, b]`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        path: Vec<String>,
    },
    /// A model a scoring function evaluates, as the SQL referred to it (`name@alias`).
    Model {
        /// The reference, e.g. `churn_risk@production`.
        reference: String,
    },
}

impl InputRef {
    /// The column with its nested path, dotted (`s.a.b`); for a model, its reference.
    pub fn field(&self) -> String {
        match self {
            InputRef::Column { column, path, .. } if path.is_empty() => column.clone(),
            InputRef::Column { column, path, .. } => format!("{column}.{}", path.join(".")),
            InputRef::Model { reference } => reference.clone(),
        }
    }
}

/// An input and every way the output depends on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputField {
    /// The input.
    pub input: InputRef,
    /// How, one entry per subtype, in [`Subtype`] order.
    pub transformations: Vec<Transformation>,
}

/// One output column's lineage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnLineage {
    /// The output column's name.
    pub column: String,
    /// Its inputs, sorted. Empty for a constant.
    pub inputs: Vec<InputField>,
}

/// The lineage of a plan's output.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PlanLineage {
    /// One entry per output column, in the output schema's order.
    pub columns: Vec<ColumnLineage>,
    /// Inputs that affect the whole dataset (which rows exist and in what order): filters,
    /// join conditions, grouping and sort keys.
    pub dataset: Vec<InputField>,
}

impl PlanLineage {
    /// Every table the lineage refers to, sorted.
    pub fn tables(&self) -> BTreeSet<&str> {
        self.all_inputs()
            .filter_map(|f| match &f.input {
                InputRef::Column { table, .. } => Some(table.as_str()),
                InputRef::Model { .. } => None,
            })
            .collect()
    }

    /// Every model reference the lineage refers to, sorted.
    pub fn models(&self) -> BTreeSet<&str> {
        self.all_inputs()
            .filter_map(|f| match &f.input {
                InputRef::Model { reference } => Some(reference.as_str()),
                InputRef::Column { .. } => None,
            })
            .collect()
    }

    fn all_inputs(&self) -> impl Iterator<Item = &InputField> {
        self.columns
            .iter()
            .flat_map(|c| c.inputs.iter())
            .chain(self.dataset.iter())
    }

    /// The same lineage without descriptions, for comparing plans of one query whose
    /// expressions are spelled differently (optimized and not).
    pub fn without_descriptions(&self) -> PlanLineage {
        let strip = |fields: &[InputField]| {
            fields
                .iter()
                .map(|f| InputField {
                    input: f.input.clone(),
                    transformations: f
                        .transformations
                        .iter()
                        .map(|t| Transformation {
                            description: None,
                            ..t.clone()
                        })
                        .collect(),
                })
                .collect()
        };
        PlanLineage {
            columns: self
                .columns
                .iter()
                .map(|c| ColumnLineage {
                    column: c.column.clone(),
                    inputs: strip(&c.inputs),
                })
                .collect(),
            dataset: strip(&self.dataset),
        }
    }
}

/// What the extractor knows about functions.
#[derive(Debug, Clone)]
pub struct LineageOptions {
    /// Scalar and aggregate functions whose output obfuscates their input (hashes, counts).
    pub masking_functions: BTreeSet<String>,
    /// Scalar functions whose first argument is a literal model reference (scoring).
    pub model_functions: BTreeSet<String>,
}

impl Default for LineageOptions {
    fn default() -> Self {
        let masking = [
            "md5",
            "sha224",
            "sha256",
            "sha384",
            "sha512",
            "digest",
            "count",
            "approx_distinct",
        ];
        LineageOptions {
            masking_functions: masking.into_iter().map(str::to_string).collect(),
            model_functions: BTreeSet::new(),
        }
    }
}

/// Computes the column-level lineage of `plan`'s output.
///
/// Works on unoptimized and optimized plans alike (and gives the same answer for both, up to
/// descriptions); views are followed into the plans they were defined with.
pub fn extract_lineage(
    plan: &LogicalPlan,
    options: &LineageOptions,
) -> Result<PlanLineage, PlannerError> {
    let mut walk = Walk {
        options,
        instances: Vec::new(),
        dataset: Vec::new(),
        outer: Vec::new(),
        recursive_ctes: HashMap::new(),
    };
    let root = walk
        .plan(plan)
        .map_err(|e| PlannerError::Lineage(e.strip_backtrace()))?;
    Ok(walk.finish(plan.schema(), root))
}

/// What a column depends on, before instances are mapped to table names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Origin {
    Column {
        instance: usize,
        column: Arc<str>,
        path: Vec<Arc<str>>,
    },
    Model {
        reference: Arc<str>,
    },
}

/// One dependency of a column, during the walk.
#[derive(Debug, Clone)]
struct Edge {
    origin: Arc<Origin>,
    subtype: Subtype,
    masking: bool,
    description: Option<Arc<str>>,
    inferred: bool,
}

/// A column's dependencies, sorted by (origin, subtype) without duplicates.
type ColumnEdges = Arc<[Edge]>;

/// Sorts and merges edges with the same origin and subtype (masking if any is; inferred only
/// if all are; the first description).
fn normalize(mut edges: Vec<Edge>) -> ColumnEdges {
    edges.sort_by(|a, b| (&a.origin, a.subtype).cmp(&(&b.origin, b.subtype)));
    let mut merged: Vec<Edge> = Vec::with_capacity(edges.len());
    for edge in edges {
        match merged.last_mut() {
            Some(last) if last.origin == edge.origin && last.subtype == edge.subtype => {
                last.masking |= edge.masking;
                last.inferred &= edge.inferred;
                if last.description.is_none() {
                    last.description = edge.description;
                }
            }
            _ => merged.push(edge),
        }
    }
    merged.into()
}

/// The use being made of the expression under analysis.
#[derive(Debug, Clone)]
struct Use {
    subtype: Subtype,
    masking: bool,
    description: Option<Arc<str>>,
    inferred: bool,
}

impl Use {
    /// A column taken as is (the top of an output expression).
    fn identity() -> Use {
        Use {
            subtype: Subtype::Identity,
            masking: false,
            description: None,
            inferred: false,
        }
    }

    /// A row-level INDIRECT use (filter, join, grouping, sort) described by `description`.
    fn indirect(subtype: Subtype, description: impl std::fmt::Display) -> Use {
        Use {
            subtype,
            masking: false,
            description: Some(description.to_string().into()),
            inferred: false,
        }
    }

    /// This use followed by `subtype` inside `expr` (which describes it unless an enclosing
    /// expression already does).
    fn then(&self, subtype: Subtype, masking: bool, expr: &Expr) -> Use {
        Use {
            subtype: self.subtype.compose(subtype),
            masking: self.masking || masking,
            description: self
                .description
                .clone()
                .or_else(|| Some(describe(expr).into())),
            inferred: self.inferred,
        }
    }

    fn apply(&self, inner: &Edge) -> Edge {
        Edge {
            origin: Arc::clone(&inner.origin),
            subtype: self.subtype.compose(inner.subtype),
            masking: self.masking || inner.masking,
            description: self
                .description
                .clone()
                .or_else(|| inner.description.clone()),
            inferred: self.inferred || inner.inferred,
        }
    }
}

/// The SQL text of an expression, without a top-level alias (DataFusion's display form when
/// the unparser cannot write it as SQL).
fn describe(expr: &Expr) -> String {
    match expr {
        Expr::Alias(alias) => describe(&alias.expr),
        _ => match Unparser::new(&DescriptionDialect).expr_to_sql(expr) {
            Ok(ast::Expr::Nested(inner)) => inner.to_string(),
            Ok(sql) => sql.to_string(),
            Err(_) => expr.human_display().to_string(),
        },
    }
}

/// DataFusion's default unparser dialect, without its cost: it compiles a regular expression
/// for every identifier it writes, which made descriptions most of the extraction time.
struct DescriptionDialect;

impl Dialect for DescriptionDialect {
    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        let plain = identifier
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && identifier
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        let upper = identifier.to_ascii_uppercase();
        let keyword = upper != "ID" && ALL_KEYWORDS.binary_search(&upper.as_str()).is_ok();
        (!plain || keyword).then_some('"')
    }
}

/// The columns a plan node produces, and what its subtree passes up.
#[derive(Debug, Clone, Default)]
struct NodeLineage {
    columns: Vec<ColumnEdges>,
    /// Inner columns of equality correlations seen in a subquery's filters and not yet claimed
    /// by an aggregate (which groups by them).
    correlated: Vec<Edge>,
}

impl NodeLineage {
    fn passthrough(mut children: Vec<NodeLineage>) -> NodeLineage {
        children.pop().unwrap_or_default()
    }
}

/// The columns visible to an expression: a schema and each field's dependencies.
#[derive(Debug, Clone)]
struct Scope {
    schema: DFSchemaRef,
    columns: Vec<ColumnEdges>,
    /// Field indices by name, built for wide schemas where linear lookups would be quadratic.
    by_name: Option<Arc<HashMap<String, Vec<usize>>>>,
}

/// Above this many fields a scope indexes its columns by name.
const INDEXED_SCOPE_FIELDS: usize = 64;

impl Scope {
    fn new(schema: DFSchemaRef, columns: Vec<ColumnEdges>) -> Scope {
        let by_name = (schema.fields().len() > INDEXED_SCOPE_FIELDS).then(|| {
            let mut map: HashMap<String, Vec<usize>> = HashMap::new();
            for (index, field) in schema.fields().iter().enumerate() {
                map.entry(field.name().clone()).or_default().push(index);
            }
            Arc::new(map)
        });
        Scope {
            schema,
            columns,
            by_name,
        }
    }

    fn index_of(&self, column: &Column) -> Option<usize> {
        let Some(by_name) = &self.by_name else {
            return self.schema.maybe_index_of_column(column).or_else(|| {
                // An unqualified reference the schema cannot place: match the name alone.
                self.schema
                    .fields()
                    .iter()
                    .position(|f| f.name() == &column.name)
            });
        };
        let candidates = by_name.get(&column.name)?;
        let qualified =
            |index: &&usize| match (&column.relation, self.schema.qualified_field(**index).0) {
                (Some(wanted), Some(actual)) => wanted.resolved_eq(actual),
                (Some(_), None) => false,
                (None, _) => true,
            };
        candidates
            .iter()
            .find(qualified)
            .or_else(|| candidates.first())
            .copied()
    }

    fn lookup(&self, column: &Column) -> Option<&ColumnEdges> {
        self.index_of(column).and_then(|i| self.columns.get(i))
    }
}

/// A `UNION`: each column depends on what the same column of every input reads.
fn union_lineage(node: &LogicalPlan, children: Vec<NodeLineage>) -> NodeLineage {
    let width = node.schema().fields().len();
    let mut columns = vec![Vec::new(); width];
    let mut correlated = Vec::new();
    for child in children {
        for (all, column) in columns.iter_mut().zip(child.columns) {
            all.extend(column.iter().cloned());
        }
        correlated.extend(child.correlated);
    }
    NodeLineage {
        columns: columns.into_iter().map(normalize).collect(),
        correlated,
    }
}

/// An `UNNEST`: unnested columns are transformations of their input column; the others pass
/// through.
fn unnest_lineage(unnest: &Unnest, scope: &Scope, correlated: Vec<Edge>) -> NodeLineage {
    let unnested: BTreeSet<usize> = unnest
        .list_type_columns
        .iter()
        .map(|(index, _)| *index)
        .chain(unnest.struct_type_columns.iter().copied())
        .collect();
    let columns = unnest
        .dependency_indices
        .iter()
        .map(|&index| {
            let column = scope.columns.get(index).cloned().unwrap_or_default();
            if !unnested.contains(&index) {
                return column;
            }
            let (qualifier, field) = scope.schema.qualified_field(index);
            let usage = Use::identity().then(
                Subtype::Transformation,
                false,
                &Expr::Column(Column::from((qualifier, field))),
            );
            normalize(column.iter().map(|e| usage.apply(e)).collect())
        })
        .collect();
    NodeLineage {
        columns,
        correlated,
    }
}

/// The state of one extraction.
struct Walk<'o> {
    options: &'o LineageOptions,
    /// The table each scan instance reads.
    instances: Vec<TableReference>,
    /// Dataset-wide INDIRECT dependencies found anywhere in the plan.
    dataset: Vec<Edge>,
    /// The input scopes of the queries enclosing the subquery being walked, innermost last.
    outer: Vec<Scope>,
    /// The columns of the recursive CTEs being walked, by name.
    recursive_ctes: HashMap<String, Vec<ColumnEdges>>,
}

/// Walks a plan bottom-up: each node's lineage is computed from its inputs'.
struct PlanVisitor<'w, 'o> {
    walk: &'w mut Walk<'o>,
    stack: Vec<NodeLineage>,
}

impl<'n> TreeNodeVisitor<'n> for PlanVisitor<'_, '_> {
    type Node = LogicalPlan;

    fn f_down(&mut self, node: &'n LogicalPlan) -> DfResult<TreeNodeRecursion> {
        // A recursive query's recursive term reads the work table the static term fills, so
        // its inputs are walked in order by `recursive_query`, not by the visitor.
        Ok(match node {
            LogicalPlan::RecursiveQuery(_) => TreeNodeRecursion::Jump,
            _ => TreeNodeRecursion::Continue,
        })
    }

    fn f_up(&mut self, node: &'n LogicalPlan) -> DfResult<TreeNodeRecursion> {
        // A recursive query's inputs were not visited (see `f_down`): it has no results here.
        let inputs = match node {
            LogicalPlan::RecursiveQuery(_) => 0,
            _ => node.inputs().len(),
        };
        let split = self.stack.len().checked_sub(inputs).ok_or_else(|| {
            DataFusionError::Internal("lineage walk lost track of a node's inputs".into())
        })?;
        let children = self.stack.split_off(split);
        let lineage = self.walk.node(node, children)?;
        self.stack.push(lineage);
        Ok(TreeNodeRecursion::Continue)
    }
}

impl Walk<'_> {
    fn plan(&mut self, plan: &LogicalPlan) -> DfResult<NodeLineage> {
        let mut visitor = PlanVisitor {
            walk: self,
            stack: Vec::new(),
        };
        plan.visit(&mut visitor)?;
        let lineage = visitor.stack.pop().unwrap_or_default();
        let fields = plan.schema().fields().len();
        if lineage.columns.len() != fields {
            return Err(DataFusionError::Internal(format!(
                "lineage found {} columns for a plan with {fields}",
                lineage.columns.len()
            )));
        }
        Ok(lineage)
    }

    fn node(&mut self, node: &LogicalPlan, children: Vec<NodeLineage>) -> DfResult<NodeLineage> {
        let lineage = match node {
            LogicalPlan::Projection(projection) => {
                let (scope, correlated) = self.single_input(node, children);
                let columns = projection
                    .expr
                    .iter()
                    .map(|e| self.output_column(e, &scope))
                    .collect::<DfResult<_>>()?;
                NodeLineage {
                    columns,
                    correlated,
                }
            }
            LogicalPlan::Filter(filter) => {
                let (scope, correlated) = self.single_input(node, children);
                let correlated = self.predicate(&filter.predicate, &scope, correlated)?;
                NodeLineage {
                    columns: scope.columns,
                    correlated,
                }
            }
            LogicalPlan::Window(window) => {
                let (scope, correlated) = self.single_input(node, children);
                let mut columns = scope.columns.clone();
                for expr in &window.window_expr {
                    columns.push(self.output_column(expr, &scope)?);
                }
                NodeLineage {
                    columns,
                    correlated,
                }
            }
            LogicalPlan::Aggregate(aggregate) => {
                let (scope, correlated) = self.single_input(node, children);
                self.aggregate(aggregate, &scope, correlated)?
            }
            LogicalPlan::Sort(sort) => {
                let (scope, correlated) = self.single_input(node, children);
                for key in &sort.expr {
                    let usage = Use::indirect(Subtype::Sort, format!("ORDER BY {key}"));
                    self.dataset_edges(&key.expr, &scope, &usage)?;
                }
                NodeLineage {
                    columns: scope.columns,
                    correlated,
                }
            }
            LogicalPlan::Join(join) => self.join(join, children)?,
            LogicalPlan::Union(_) => union_lineage(node, children),
            LogicalPlan::TableScan(scan) => self.table_scan(scan)?,
            LogicalPlan::EmptyRelation(_) => NodeLineage {
                columns: vec![ColumnEdges::from([]); node.schema().fields().len()],
                correlated: Vec::new(),
            },
            LogicalPlan::Values(values) => self.values(node, values)?,
            LogicalPlan::Distinct(Distinct::All(_)) => {
                let (scope, correlated) = self.single_input(node, children);
                self.distinct_all(scope, correlated)
            }
            LogicalPlan::Distinct(Distinct::On(on)) => {
                let (scope, correlated) = self.single_input(node, children);
                self.distinct_on(on, &scope, correlated)?
            }
            LogicalPlan::Unnest(unnest) => {
                let (scope, correlated) = self.single_input(node, children);
                unnest_lineage(unnest, &scope, correlated)
            }
            LogicalPlan::Subquery(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::Repartition(_) => NodeLineage::passthrough(children),
            LogicalPlan::RecursiveQuery(query) => self.recursive_query(query)?,
            LogicalPlan::Extension(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::DescribeTable(_) => self.unmodelled_node(node, children)?,
        };
        if lineage.columns.len() == node.schema().fields().len() {
            Ok(lineage)
        } else {
            Err(DataFusionError::Internal(format!(
                "lineage of a {} node has {} columns, its schema {}",
                node.display(),
                lineage.columns.len(),
                node.schema().fields().len()
            )))
        }
    }

    /// A `VALUES` list: each column depends on what its expressions in every row read.
    fn values(&mut self, node: &LogicalPlan, values: &Values) -> DfResult<NodeLineage> {
        let scope = Scope::new(Arc::new(DFSchema::empty()), Vec::new());
        let mut columns = vec![Vec::new(); node.schema().fields().len()];
        for row in &values.values {
            for (all, expr) in columns.iter_mut().zip(row) {
                all.extend(self.output_column(expr, &scope)?.iter().cloned());
            }
        }
        Ok(NodeLineage {
            columns: columns.into_iter().map(normalize).collect(),
            correlated: Vec::new(),
        })
    }

    /// `DISTINCT`: every input column is a dataset-wide GROUP BY dependency; the columns pass
    /// through.
    fn distinct_all(&mut self, scope: Scope, correlated: Vec<Edge>) -> NodeLineage {
        for (index, column) in scope.columns.iter().enumerate() {
            let name = scope.schema.field(index).name();
            let usage = Use::indirect(Subtype::GroupBy, format!("DISTINCT {name}"));
            self.dataset.extend(column.iter().map(|e| usage.apply(e)));
        }
        NodeLineage {
            columns: scope.columns,
            correlated,
        }
    }

    /// `DISTINCT ON`: its keys (GROUP BY) and sort keys (ORDER BY) are dataset-wide
    /// dependencies; the columns are its select expressions.
    fn distinct_on(
        &mut self,
        on: &DistinctOn,
        scope: &Scope,
        correlated: Vec<Edge>,
    ) -> DfResult<NodeLineage> {
        for expr in &on.on_expr {
            let usage = Use::indirect(Subtype::GroupBy, format!("DISTINCT ON {expr}"));
            self.dataset_edges(expr, scope, &usage)?;
        }
        for key in on.sort_expr.iter().flatten() {
            let usage = Use::indirect(Subtype::Sort, format!("ORDER BY {key}"));
            self.dataset_edges(&key.expr, scope, &usage)?;
        }
        let columns = on
            .select_expr
            .iter()
            .map(|e| self.output_column(e, scope))
            .collect::<DfResult<_>>()?;
        Ok(NodeLineage {
            columns,
            correlated,
        })
    }

    /// The scope of a node's only input.
    fn single_input(
        &self,
        node: &LogicalPlan,
        mut children: Vec<NodeLineage>,
    ) -> (Scope, Vec<Edge>) {
        let child = children.pop().unwrap_or_default();
        let schema = node
            .inputs()
            .first()
            .map(|input| Arc::clone(input.schema()))
            .unwrap_or_else(|| Arc::new(DFSchema::empty()));
        (Scope::new(schema, child.columns), child.correlated)
    }

    /// An output column's dependencies: `expr` used as is.
    fn output_column(&mut self, expr: &Expr, scope: &Scope) -> DfResult<ColumnEdges> {
        let mut edges = Vec::new();
        self.expr(expr, scope, &Use::identity(), &mut edges)?;
        Ok(normalize(edges))
    }

    /// Adds `expr`'s dependencies, used as `usage`, to the dataset-wide list.
    fn dataset_edges(&mut self, expr: &Expr, scope: &Scope, usage: &Use) -> DfResult<()> {
        let mut edges = Vec::new();
        self.expr(expr, scope, usage, &mut edges)?;
        self.dataset.extend(edges);
        Ok(())
    }

    fn expr(
        &mut self,
        expr: &Expr,
        scope: &Scope,
        usage: &Use,
        out: &mut Vec<Edge>,
    ) -> DfResult<()> {
        match expr {
            Expr::Alias(alias) => self.expr(&alias.expr, scope, usage, out)?,
            Expr::Cast(cast) => self.expr(&cast.expr, scope, usage, out)?,
            Expr::TryCast(cast) => self.expr(&cast.expr, scope, usage, out)?,
            Expr::Column(column) => {
                let edges = self.resolve(column, scope)?;
                out.extend(edges.iter().map(|e| usage.apply(e)));
            }
            Expr::OuterReferenceColumn(_, column) => {
                let edges = self.resolve_outer(column)?;
                out.extend(edges.iter().map(|e| usage.apply(e)));
            }
            Expr::Literal(..) | Expr::Placeholder(_) | Expr::ScalarVariable(..) => {}
            Expr::LambdaVariable(_) => {}
            Expr::ScalarFunction(function) => {
                self.scalar_function(expr, function, scope, usage, out)?;
            }
            Expr::AggregateFunction(function) => {
                self.aggregate_function(expr, function, scope, usage, out)?;
            }
            Expr::WindowFunction(function) => {
                self.window_function(expr, function, scope, usage, out)?;
            }
            Expr::Case(case) => {
                let value = usage.then(Subtype::Transformation, false, expr);
                let condition = usage.then(Subtype::Conditional, false, expr);
                if let Some(operand) = &case.expr {
                    self.expr(operand, scope, &condition, out)?;
                }
                for (when, then) in &case.when_then_expr {
                    self.expr(when, scope, &condition, out)?;
                    self.expr(then, scope, &value, out)?;
                }
                if let Some(otherwise) = &case.else_expr {
                    self.expr(otherwise, scope, &value, out)?;
                }
            }
            Expr::ScalarSubquery(subquery) => {
                self.subquery_value(expr, None, subquery, scope, usage, out)?;
            }
            Expr::InSubquery(in_subquery) => {
                let operand = Some(in_subquery.expr.as_ref());
                self.subquery_value(expr, operand, &in_subquery.subquery, scope, usage, out)?;
            }
            Expr::SetComparison(comparison) => {
                let operand = Some(comparison.expr.as_ref());
                self.subquery_value(expr, operand, &comparison.subquery, scope, usage, out)?;
            }
            Expr::Exists(exists) => {
                // Its value depends on the correlation, which the subquery's own filters
                // record as join conditions.
                self.subquery(&exists.subquery, scope)?;
            }
            Expr::BinaryExpr(_)
            | Expr::Like(_)
            | Expr::SimilarTo(_)
            | Expr::Not(_)
            | Expr::IsNotNull(_)
            | Expr::IsNull(_)
            | Expr::IsTrue(_)
            | Expr::IsFalse(_)
            | Expr::IsUnknown(_)
            | Expr::IsNotTrue(_)
            | Expr::IsNotFalse(_)
            | Expr::IsNotUnknown(_)
            | Expr::Negative(_)
            | Expr::Between(_)
            | Expr::InList(_)
            | Expr::GroupingSet(_)
            | Expr::HigherOrderFunction(_)
            | Expr::Lambda(_) => {
                let value = usage.then(Subtype::Transformation, false, expr);
                self.children(expr, scope, &value, out)?;
            }
            #[expect(deprecated, reason = "listed so that it is handled if it ever appears")]
            Expr::Wildcard { .. } => self.unmodelled_expr(expr, scope, usage, out)?,
            Expr::Unnest(_) => self.unmodelled_expr(expr, scope, usage, out)?,
        }
        Ok(())
    }

    /// A subquery used as a value (`(SELECT ...)`, `x IN (SELECT ...)`, `x > ANY (SELECT ...)`):
    /// the operand and the subquery's one column, transformed.
    fn subquery_value(
        &mut self,
        expr: &Expr,
        operand: Option<&Expr>,
        subquery: &Subquery,
        scope: &Scope,
        usage: &Use,
        out: &mut Vec<Edge>,
    ) -> DfResult<()> {
        let value = usage.then(Subtype::Transformation, false, expr);
        if let Some(operand) = operand {
            self.expr(operand, scope, &value, out)?;
        }
        let result = self.subquery(subquery, scope)?;
        for column in result.columns.iter().take(1) {
            out.extend(column.iter().map(|e| value.apply(e)));
        }
        Ok(())
    }

    /// Every direct child of `expr`, used as `usage`.
    fn children(
        &mut self,
        expr: &Expr,
        scope: &Scope,
        usage: &Use,
        out: &mut Vec<Edge>,
    ) -> DfResult<()> {
        let mut result = Ok(());
        expr.apply_children(|child| {
            result = self.expr(child, scope, usage, out);
            Ok(if result.is_ok() {
                TreeNodeRecursion::Continue
            } else {
                TreeNodeRecursion::Stop
            })
        })?;
        result
    }

    /// An expression the extractor does not model: DIRECT / TRANSFORMATION from every column
    /// it references, marked inferred.
    fn unmodelled_expr(
        &mut self,
        expr: &Expr,
        scope: &Scope,
        usage: &Use,
        out: &mut Vec<Edge>,
    ) -> DfResult<()> {
        let mut inferred = usage.then(Subtype::Transformation, false, expr);
        inferred.inferred = true;
        for column in expr.column_refs() {
            let edges = self
                .resolve(column, scope)
                .or_else(|_| self.resolve_outer(column))?;
            out.extend(edges.iter().map(|e| inferred.apply(e)));
        }
        Ok(())
    }

    fn scalar_function(
        &mut self,
        expr: &Expr,
        function: &ScalarFunction,
        scope: &Scope,
        usage: &Use,
        out: &mut Vec<Edge>,
    ) -> DfResult<()> {
        let name = function.func.name();
        let masking = self.options.masking_functions.contains(name);
        let value = usage.then(Subtype::Transformation, masking, expr);
        let condition = usage.then(Subtype::Conditional, masking, expr);
        let args = &function.args;
        match name {
            "get_field" => return self.get_field(expr, args, scope, usage, out),
            // The tested arguments choose the result: CONDITIONAL as well as values.
            "coalesce" | "nvl" | "ifnull" => {
                for (index, arg) in args.iter().enumerate() {
                    if index + 1 < args.len() {
                        self.expr(arg, scope, &condition, out)?;
                    }
                    self.expr(arg, scope, &value, out)?;
                }
                return Ok(());
            }
            "nullif" => {
                for (index, arg) in args.iter().enumerate() {
                    if index == 0 {
                        self.expr(arg, scope, &value, out)?;
                    }
                    self.expr(arg, scope, &condition, out)?;
                }
                return Ok(());
            }
            "nvl2" => {
                for (index, arg) in args.iter().enumerate() {
                    let role = if index == 0 { &condition } else { &value };
                    self.expr(arg, scope, role, out)?;
                }
                return Ok(());
            }
            _ => {}
        }
        if self.options.model_functions.contains(name)
            && let Some(Expr::Literal(literal, _)) = args.first()
            && let Some(Some(reference)) = literal.try_as_str()
        {
            let model = Edge {
                origin: Arc::new(Origin::Model {
                    reference: reference.into(),
                }),
                subtype: Subtype::Identity,
                masking: false,
                description: None,
                inferred: false,
            };
            out.push(value.apply(&model));
        }
        for arg in args {
            self.expr(arg, scope, &value, out)?;
        }
        Ok(())
    }

    /// `get_field(s, 'a', ...)`: a nested field of a column stays IDENTITY, with its path.
    fn get_field(
        &mut self,
        expr: &Expr,
        args: &[Expr],
        scope: &Scope,
        usage: &Use,
        out: &mut Vec<Edge>,
    ) -> DfResult<()> {
        let names: Option<Vec<Arc<str>>> = args
            .iter()
            .skip(1)
            .map(|arg| match arg {
                Expr::Literal(literal, _) => literal.try_as_str().flatten().map(Arc::from),
                _ => None,
            })
            .collect();
        let mut inner = Vec::new();
        let value = usage.then(Subtype::Transformation, false, expr);
        match (args.first(), names) {
            (Some(base), Some(names)) => {
                self.expr(base, scope, &Use::identity(), &mut inner)?;
                for edge in inner {
                    let nested = match (edge.subtype, edge.origin.as_ref()) {
                        (
                            Subtype::Identity,
                            Origin::Column {
                                instance,
                                column,
                                path,
                            },
                        ) => {
                            let mut path = path.clone();
                            path.extend(names.iter().cloned());
                            Edge {
                                origin: Arc::new(Origin::Column {
                                    instance: *instance,
                                    column: Arc::clone(column),
                                    path,
                                }),
                                ..edge
                            }
                        }
                        _ => value.apply(&edge),
                    };
                    out.push(usage.apply(&nested));
                }
            }
            _ => {
                for arg in args {
                    self.expr(arg, scope, &value, out)?;
                }
            }
        }
        Ok(())
    }

    fn aggregate_function(
        &mut self,
        expr: &Expr,
        function: &AggregateFunction,
        scope: &Scope,
        usage: &Use,
        out: &mut Vec<Edge>,
    ) -> DfResult<()> {
        let masking = self
            .options
            .masking_functions
            .contains(function.func.name());
        let value = usage.then(Subtype::Aggregation, masking, expr);
        let params = &function.params;
        for arg in &params.args {
            self.expr(arg, scope, &value, out)?;
            if params.distinct {
                // DISTINCT groups by the argument (the optimizer makes it a GROUP BY).
                let grouping = Use::indirect(Subtype::GroupBy, describe(expr));
                self.dataset_edges(arg, scope, &grouping)?;
            }
        }
        if let Some(filter) = &params.filter {
            self.expr(
                filter,
                scope,
                &usage.then(Subtype::Filter, false, expr),
                out,
            )?;
        }
        for key in &params.order_by {
            self.expr(
                &key.expr,
                scope,
                &usage.then(Subtype::Sort, false, expr),
                out,
            )?;
        }
        Ok(())
    }

    fn window_function(
        &mut self,
        expr: &Expr,
        function: &WindowFunction,
        scope: &Scope,
        usage: &Use,
        out: &mut Vec<Edge>,
    ) -> DfResult<()> {
        let (subtype, masking) = match &function.fun {
            WindowFunctionDefinition::AggregateUDF(udf) => (
                Subtype::Aggregation,
                self.options.masking_functions.contains(udf.name()),
            ),
            WindowFunctionDefinition::WindowUDF(_) => (Subtype::Transformation, false),
        };
        let value = usage.then(subtype, masking, expr);
        let params = &function.params;
        for arg in &params.args {
            self.expr(arg, scope, &value, out)?;
        }
        let window = usage.then(Subtype::Window, false, expr);
        for key in &params.partition_by {
            self.expr(key, scope, &window, out)?;
        }
        for key in &params.order_by {
            self.expr(&key.expr, scope, &window, out)?;
        }
        if let Some(filter) = &params.filter {
            self.expr(
                filter,
                scope,
                &usage.then(Subtype::Filter, false, expr),
                out,
            )?;
        }
        Ok(())
    }

    fn resolve(&self, column: &Column, scope: &Scope) -> DfResult<ColumnEdges> {
        scope.lookup(column).cloned().ok_or_else(|| {
            DataFusionError::Plan(format!(
                "lineage: column {column} is not in its input (columns: {})",
                scope
                    .schema
                    .columns()
                    .iter()
                    .map(|c| c.flat_name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    fn resolve_outer(&self, column: &Column) -> DfResult<ColumnEdges> {
        self.outer
            .iter()
            .rev()
            .find_map(|scope| scope.lookup(column).cloned())
            .ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "lineage: outer column {column} is not in any enclosing query"
                ))
            })
    }

    /// Walks a subquery with `scope` as the enclosing query's columns.
    fn subquery(&mut self, subquery: &Subquery, scope: &Scope) -> DfResult<NodeLineage> {
        self.outer.push(scope.clone());
        let result = self.plan(&subquery.subquery);
        self.outer.pop();
        result
    }

    /// Records a predicate's dependencies (dataset-wide) and returns `correlated` with the
    /// inner sides of its equality correlations added.
    fn predicate(
        &mut self,
        predicate: &Expr,
        scope: &Scope,
        mut correlated: Vec<Edge>,
    ) -> DfResult<Vec<Edge>> {
        for conjunct in split_conjunction(predicate) {
            self.conjunct(conjunct, scope)?;
            if let Some(inner) = correlation_inner_side(conjunct) {
                let usage = Use::indirect(Subtype::GroupBy, describe(conjunct));
                let mut edges = Vec::new();
                self.expr(inner, scope, &usage, &mut edges)?;
                correlated.extend(edges);
            }
        }
        Ok(correlated)
    }

    /// One conjunct of a predicate: a JOIN condition when it reads two or more scan instances,
    /// a FILTER otherwise; a disjunction over several instances also filters every instance
    /// each of its disjuncts constrains alone.
    fn conjunct(&mut self, conjunct: &Expr, scope: &Scope) -> DfResult<()> {
        if let Some((common, rest)) = factor_disjunction(conjunct) {
            // `(A AND X) OR (A AND Y)` is `A AND (X OR Y)`: the optimizer rewrites it so, and
            // the lineage must not depend on which spelling the plan has.
            for part in &common {
                self.conjunct(part, scope)?;
            }
            if let Some(rest) = rest {
                self.conjunct(&rest, scope)?;
            }
            return Ok(());
        }
        let mut edges = Vec::new();
        let usage = Use::indirect(Subtype::Filter, describe(conjunct));
        self.expr(conjunct, scope, &usage, &mut edges)?;
        let instances = instances_of(&edges);
        if instances.len() < 2 {
            self.dataset.extend(edges);
            return Ok(());
        }
        self.dataset.extend(edges.into_iter().map(|mut edge| {
            edge.subtype = Subtype::Join;
            edge
        }));
        if !matches!(
            conjunct,
            Expr::BinaryExpr(BinaryExpr {
                op: Operator::Or,
                ..
            })
        ) {
            return Ok(());
        }
        // Per instance: the single-instance parts of every disjunct, if each has some.
        let disjuncts = split_disjunction(conjunct);
        let mut implied: BTreeMap<usize, Vec<Edge>> =
            instances.iter().map(|i| (*i, Vec::new())).collect();
        let mut constrained_by_all: BTreeSet<usize> = instances.clone();
        for disjunct in disjuncts {
            let mut constrained_here = BTreeSet::new();
            for part in split_conjunction(disjunct) {
                let mut part_edges = Vec::new();
                let part_usage = Use::indirect(Subtype::Filter, describe(part));
                self.expr(part, scope, &part_usage, &mut part_edges)?;
                let part_instances = instances_of(&part_edges);
                if let [instance] = part_instances.iter().copied().collect::<Vec<_>>()[..] {
                    constrained_here.insert(instance);
                    if let Some(list) = implied.get_mut(&instance) {
                        list.extend(part_edges);
                    }
                }
            }
            constrained_by_all.retain(|i| constrained_here.contains(i));
        }
        for instance in constrained_by_all {
            self.dataset
                .extend(implied.remove(&instance).unwrap_or_default());
        }
        Ok(())
    }

    fn aggregate(
        &mut self,
        aggregate: &Aggregate,
        scope: &Scope,
        correlated: Vec<Edge>,
    ) -> DfResult<NodeLineage> {
        let mut columns = Vec::with_capacity(aggregate.schema.fields().len());
        let keys = grouping_set_to_exprlist(&aggregate.group_expr)?;
        let mut key_edges = Vec::new();
        for key in &keys {
            let usage = Use::indirect(Subtype::GroupBy, format!("GROUP BY {}", describe(key)));
            let mut edges = Vec::new();
            self.expr(key, scope, &usage, &mut edges)?;
            key_edges.extend(edges.iter().cloned());
            self.dataset.extend(edges);
            columns.push(self.output_column(key, scope)?);
        }
        if matches!(aggregate.group_expr.as_slice(), [Expr::GroupingSet(_)]) {
            // The grouping id says which keys a row is grouped by.
            columns.push(normalize(key_edges));
        }
        for expr in &aggregate.aggr_expr {
            columns.push(self.output_column(expr, scope)?);
        }
        // An aggregate in a correlated subquery runs per outer row: grouped by the
        // correlation's inner columns (the optimizer's decorrelation makes that explicit).
        self.dataset.extend(correlated);
        Ok(NodeLineage {
            columns,
            correlated: Vec::new(),
        })
    }

    fn join(
        &mut self,
        join: &datafusion::logical_expr::Join,
        mut children: Vec<NodeLineage>,
    ) -> DfResult<NodeLineage> {
        let right = children.pop().unwrap_or_default();
        let left = children.pop().unwrap_or_default();
        let schema = Arc::new(join.left.schema().join(join.right.schema())?);
        let all: Vec<ColumnEdges> = left
            .columns
            .iter()
            .chain(right.columns.iter())
            .cloned()
            .collect();
        let scope = Scope::new(schema, all);
        let mut condition = Vec::new();
        for (l, r) in &join.on {
            let pair = l.clone().eq(r.clone());
            self.conjunct(&pair, &scope)?;
            let usage = Use::identity().then(Subtype::Transformation, false, &pair);
            self.expr(&pair, &scope, &usage, &mut condition)?;
        }
        let mut correlated = left.correlated;
        correlated.extend(right.correlated);
        if let Some(filter) = &join.filter {
            correlated = self.predicate(filter, &scope, correlated)?;
            let usage = Use::identity().then(Subtype::Transformation, false, filter);
            self.expr(filter, &scope, &usage, &mut condition)?;
        }
        let mark = || normalize(condition.clone());
        let columns = match join.join_type {
            JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => scope.columns,
            JoinType::LeftSemi | JoinType::LeftAnti => left.columns,
            JoinType::RightSemi | JoinType::RightAnti => right.columns,
            JoinType::LeftMark => left.columns.into_iter().chain([mark()]).collect(),
            JoinType::RightMark => right.columns.into_iter().chain([mark()]).collect(),
        };
        Ok(NodeLineage {
            columns,
            correlated,
        })
    }

    fn table_scan(&mut self, scan: &TableScan) -> DfResult<NodeLineage> {
        let source_schema = scan.source.schema();
        let all: Vec<ColumnEdges> = if let Some(view) = scan.source.get_logical_plan() {
            // A view (a Lakeforge step): walk the plan it was defined with, outside any
            // enclosing query's scope.
            let view: Cow<'_, LogicalPlan> = view;
            let outer = std::mem::take(&mut self.outer);
            let result = self.plan(&view);
            self.outer = outer;
            result?.columns
        } else if let Some(columns) = self.recursive_ctes.get(scan.table_name.table()) {
            columns.clone()
        } else {
            let instance = self.instances.len();
            self.instances.push(scan.table_name.clone());
            source_schema
                .fields()
                .iter()
                .map(|field| {
                    ColumnEdges::from([Edge {
                        origin: Arc::new(Origin::Column {
                            instance,
                            column: field.name().as_str().into(),
                            path: Vec::new(),
                        }),
                        subtype: Subtype::Identity,
                        masking: false,
                        description: None,
                        inferred: false,
                    }])
                })
                .collect()
        };
        if !scan.filters.is_empty() {
            let schema =
                DFSchema::try_from_qualified_schema(scan.table_name.clone(), &source_schema)?;
            let scope = Scope::new(Arc::new(schema), all.clone());
            for filter in &scan.filters {
                self.predicate(filter, &scope, Vec::new())?;
            }
        }
        let columns = match &scan.projection {
            Some(indices) => indices
                .iter()
                .map(|&i| all.get(i).cloned().unwrap_or_default())
                .collect(),
            None => all,
        };
        Ok(NodeLineage {
            columns,
            correlated: Vec::new(),
        })
    }

    /// `WITH RECURSIVE`: the recursive term reads the work table, whose columns are the static
    /// term's and, transitively, the recursive term's own (followed a few rounds: enough for
    /// dependencies to travel between columns).
    fn recursive_query(&mut self, query: &RecursiveQuery) -> DfResult<NodeLineage> {
        const ROUNDS: usize = 3;
        let static_term = self.plan(&query.static_term)?;
        let mut columns = static_term.columns.clone();
        let previous = self.recursive_ctes.remove(&query.name);
        for _ in 0..ROUNDS {
            self.recursive_ctes
                .insert(query.name.clone(), columns.clone());
            let recursive = self.plan(&query.recursive_term);
            let recursive = match recursive {
                Ok(recursive) => recursive,
                Err(error) => {
                    self.recursive_ctes.remove(&query.name);
                    return Err(error);
                }
            };
            columns = static_term
                .columns
                .iter()
                .zip(&recursive.columns)
                .map(|(a, b)| normalize(a.iter().chain(b.iter()).cloned().collect()))
                .collect();
        }
        self.recursive_ctes.remove(&query.name);
        if let Some(previous) = previous {
            self.recursive_ctes.insert(query.name.clone(), previous);
        }
        Ok(NodeLineage {
            columns,
            correlated: Vec::new(),
        })
    }

    /// A plan node the extractor does not model: each output column depends (inferred,
    /// DIRECT / TRANSFORMATION) on the input column of the same name and on every column the
    /// node's expressions reference; failing both, on every input column.
    fn unmodelled_node(
        &mut self,
        node: &LogicalPlan,
        children: Vec<NodeLineage>,
    ) -> DfResult<NodeLineage> {
        let mut inputs = Vec::new();
        for (input, child) in node.inputs().into_iter().zip(children) {
            inputs.push(Scope::new(Arc::clone(input.schema()), child.columns));
        }
        let mut usage = Use::identity();
        usage.subtype = Subtype::Transformation;
        usage.inferred = true;
        usage.description = Some(format!("{}", node.display()).into());
        let mut referenced = Vec::new();
        for expr in node.expressions() {
            for column in expr.column_refs() {
                if let Some(edges) = inputs.iter().find_map(|s| s.lookup(column)) {
                    referenced.extend(edges.iter().map(|e| usage.apply(e)));
                }
            }
        }
        let columns = node
            .schema()
            .columns()
            .iter()
            .map(|column| {
                let mut edges = referenced.clone();
                for scope in &inputs {
                    if let Some(same) = scope.lookup(column) {
                        edges.extend(same.iter().map(|e| usage.apply(e)));
                    }
                }
                if edges.is_empty() {
                    for scope in &inputs {
                        for all in &scope.columns {
                            edges.extend(all.iter().map(|e| usage.apply(e)));
                        }
                    }
                }
                normalize(edges)
            })
            .collect();
        Ok(NodeLineage {
            columns,
            correlated: Vec::new(),
        })
    }

    /// Maps instances to tables and groups each column's edges by input.
    fn finish(self, schema: &DFSchemaRef, root: NodeLineage) -> PlanLineage {
        let columns = schema
            .fields()
            .iter()
            .zip(root.columns)
            .map(|(field, edges)| ColumnLineage {
                column: field.name().clone(),
                inputs: self.input_fields(edges.iter()),
            })
            .collect();
        let dataset = normalize(self.dataset.clone());
        PlanLineage {
            columns,
            dataset: self.input_fields(dataset.iter()),
        }
    }

    fn input_fields<'e>(&self, edges: impl Iterator<Item = &'e Edge>) -> Vec<InputField> {
        let mut grouped: BTreeMap<InputRef, BTreeMap<Subtype, Transformation>> = BTreeMap::new();
        for edge in edges {
            let input = match edge.origin.as_ref() {
                Origin::Column {
                    instance,
                    column,
                    path,
                } => InputRef::Column {
                    table: self
                        .instances
                        .get(*instance)
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                    column: column.to_string(),
                    path: path.iter().map(|p| p.to_string()).collect(),
                },
                Origin::Model { reference } => InputRef::Model {
                    reference: reference.to_string(),
                },
            };
            let transformation = grouped
                .entry(input)
                .or_default()
                .entry(edge.subtype)
                .or_insert_with(|| Transformation {
                    subtype: edge.subtype,
                    masking: false,
                    description: edge.description.as_deref().map(str::to_string),
                    inferred: true,
                });
            transformation.masking |= edge.masking;
            transformation.inferred &= edge.inferred;
        }
        grouped
            .into_iter()
            .map(|(input, transformations)| InputField {
                input,
                transformations: transformations.into_values().collect(),
            })
            .collect()
    }
}

/// The scan instances whose columns `edges` reach (models are not scans).
fn instances_of(edges: &[Edge]) -> BTreeSet<usize> {
    edges
        .iter()
        .filter_map(|e| match e.origin.as_ref() {
            Origin::Column { instance, .. } => Some(*instance),
            Origin::Model { .. } => None,
        })
        .collect()
}

fn split_disjunction(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let mut parts = split_disjunction(left);
            parts.extend(split_disjunction(right));
            parts
        }
        Expr::Alias(alias) => split_disjunction(&alias.expr),
        other => vec![other],
    }
}

/// For a disjunction whose disjuncts share conjuncts: the shared conjuncts, and the
/// disjunction of what is left (`None` when a disjunct has nothing left: the rest is true).
fn factor_disjunction(expr: &Expr) -> Option<(Vec<Expr>, Option<Expr>)> {
    let disjuncts = split_disjunction(expr);
    if disjuncts.len() < 2 {
        return None;
    }
    let parts: Vec<Vec<&Expr>> = disjuncts.iter().map(|d| split_conjunction(d)).collect();
    let (first, others) = parts.split_first()?;
    let common: Vec<Expr> = first
        .iter()
        .filter(|part| others.iter().all(|other| other.contains(part)))
        .map(|part| (*part).clone())
        .collect();
    if common.is_empty() {
        return None;
    }
    let mut rest = Vec::with_capacity(parts.len());
    for disjunct in &parts {
        let left: Vec<Expr> = disjunct
            .iter()
            .filter(|part| !common.contains(part))
            .map(|part| (*part).clone())
            .collect();
        match conjunction(left) {
            Some(remaining) => rest.push(remaining),
            None => return Some((common, None)),
        }
    }
    Some((common, disjunction(rest)))
}

fn has_outer_reference(expr: &Expr) -> bool {
    expr.exists(|e| Ok(matches!(e, Expr::OuterReferenceColumn(..))))
        .unwrap_or(false)
}

/// For `inner = outer` (either order) where only `outer` refers to the enclosing query: `inner`.
fn correlation_inner_side(conjunct: &Expr) -> Option<&Expr> {
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Eq,
        right,
    }) = conjunct
    else {
        return None;
    };
    match (has_outer_reference(left), has_outer_reference(right)) {
        (false, true) => Some(left),
        (true, false) => Some(right),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
