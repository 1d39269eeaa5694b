//! Golden tests of the lineage extractor: one per subtype and per SQL construct, each checked
//! on the unoptimized and the optimized plan; and the 22 TPC-H queries.

use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema};
use datafusion::catalog::MemTable;
use datafusion::catalog::view::ViewTable;
use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::{
    ColumnarValue, Expr, Extension, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, UserDefinedLogicalNodeCore, Volatility,
};
use datafusion::prelude::SessionContext;

use super::*;

/// One line per (output, input, transformation): `out <- table.column TYPE SUBTYPE [masked]
/// [inferred]`; dataset-wide dependencies use `*` as the output.
fn render(lineage: &PlanLineage) -> String {
    let mut text = String::new();
    for column in &lineage.columns {
        for field in &column.inputs {
            render_field(&mut text, &column.column, field);
        }
    }
    for field in &lineage.dataset {
        render_field(&mut text, "*", field);
    }
    text
}

fn render_field(text: &mut String, output: &str, field: &InputField) {
    for t in &field.transformations {
        let input = match &field.input {
            InputRef::Column { table, .. } => format!("{table}.{}", field.input.field()),
            InputRef::Model { reference } => format!("model {reference}"),
        };
        let _ = write!(text, "{output} <- {input} {}", t.subtype);
        if t.masking {
            text.push_str(" masked");
        }
        if t.inferred {
            text.push_str(" inferred");
        }
        text.push('\n');
    }
}

fn table(ctx: &SessionContext, name: &str, fields: Vec<Field>) {
    let schema = Arc::new(Schema::new(fields));
    let table = MemTable::try_new(schema, vec![vec![]]).unwrap();
    ctx.register_table(name, Arc::new(table)).unwrap();
}

/// A scoring-like function: `score('model', features...)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Score(Signature);

impl ScalarUDFImpl for Score {
    fn name(&self) -> &str {
        "score"
    }
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        unimplemented!("never executed: lineage tests only plan")
    }
}

fn session() -> SessionContext {
    let ctx = SessionContext::new();
    table(
        &ctx,
        "t",
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ],
    );
    table(
        &ctx,
        "u",
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("c", DataType::Int64, true),
        ],
    );
    table(
        &ctx,
        "n",
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "info",
                DataType::Struct(Fields::from(vec![
                    Field::new("x", DataType::Int64, true),
                    Field::new("y", DataType::Utf8, true),
                ])),
                true,
            ),
        ],
    );
    ctx.register_udf(ScalarUDF::new_from_impl(Score(Signature::variadic_any(
        Volatility::Immutable,
    ))));
    ctx
}

fn options() -> LineageOptions {
    let mut options = LineageOptions::default();
    options.model_functions.insert("score".to_string());
    options
}

/// Registers `sql` as a view named `name` (as the planner registers a job's steps).
async fn view(ctx: &SessionContext, name: &str, sql: &str) {
    let plan = ctx.sql(sql).await.unwrap().into_unoptimized_plan();
    ctx.register_table(name, Arc::new(ViewTable::new(plan, Some(sql.to_string()))))
        .unwrap();
}

/// The lineage of `sql`, after checking that the optimized plan gives the same (up to
/// descriptions) and that every output column is present.
async fn lineage_of(ctx: &SessionContext, sql: &str) -> PlanLineage {
    let plan = ctx.sql(sql).await.unwrap().into_unoptimized_plan();
    let lineage = extract_lineage(&plan, &options()).unwrap();
    let optimized = ctx.state().optimize(&plan).unwrap();
    let from_optimized = extract_lineage(&optimized, &options()).unwrap();
    assert_eq!(
        render(&lineage.without_descriptions()),
        render(&from_optimized.without_descriptions()),
        "unoptimized vs optimized plan lineage for {sql}\n{}",
        optimized.display_indent()
    );
    let names: Vec<&str> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let columns: Vec<&str> = lineage.columns.iter().map(|c| c.column.as_str()).collect();
    assert_eq!(columns, names);
    lineage
}

async fn golden(sql: &str, expected: &str) {
    let ctx = session();
    golden_in(&ctx, sql, expected).await;
}

async fn golden_in(ctx: &SessionContext, sql: &str, expected: &str) {
    let lineage = lineage_of(ctx, sql).await;
    let expected: String = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(render(&lineage), expected, "lineage of {sql}");
}

#[tokio::test]
async fn identity_and_transformation() {
    golden(
        "SELECT id, a + b AS total, upper(s) AS loud, 7 AS seven FROM t",
        "
        id <- t.id DIRECT IDENTITY
        total <- t.a DIRECT TRANSFORMATION
        total <- t.b DIRECT TRANSFORMATION
        loud <- t.s DIRECT TRANSFORMATION
        ",
    )
    .await;
}

#[tokio::test]
async fn casts_keep_identity() {
    golden(
        "SELECT CAST(a AS DOUBLE) AS a_double FROM t",
        "a_double <- t.a DIRECT IDENTITY",
    )
    .await;
}

#[tokio::test]
async fn aggregation_group_by_and_having() {
    golden(
        "SELECT s, sum(a) AS total, count(b) AS n FROM t GROUP BY s HAVING max(b) > 3",
        "
        s <- t.s DIRECT IDENTITY
        total <- t.a DIRECT AGGREGATION
        n <- t.b DIRECT AGGREGATION masked
        * <- t.b INDIRECT FILTER
        * <- t.s INDIRECT GROUP_BY
        ",
    )
    .await;
}

#[tokio::test]
async fn where_filter_and_sort() {
    golden(
        "SELECT id FROM t WHERE a > 1 AND s LIKE 'x%' ORDER BY b DESC",
        "
        id <- t.id DIRECT IDENTITY
        * <- t.a INDIRECT FILTER
        * <- t.b INDIRECT SORT
        * <- t.s INDIRECT FILTER
        ",
    )
    .await;
}

#[tokio::test]
async fn join_conditions_in_on_and_where() {
    let expected = "
        id <- t.id DIRECT IDENTITY
        c <- u.c DIRECT IDENTITY
        * <- t.a INDIRECT FILTER
        * <- t.id INDIRECT JOIN
        * <- u.id INDIRECT JOIN
        ";
    golden(
        "SELECT t.id, u.c FROM t JOIN u ON t.id = u.id WHERE t.a > 0",
        expected,
    )
    .await;
    golden(
        "SELECT t.id, u.c FROM t, u WHERE t.id = u.id AND t.a > 0",
        expected,
    )
    .await;
}

#[tokio::test]
async fn self_join_tracks_instances_not_names() {
    // Both sides read t: the condition still reads two instances, so it is a join.
    golden(
        "SELECT x.id, y.a FROM t AS x JOIN t AS y ON x.b = y.a",
        "
        id <- t.id DIRECT IDENTITY
        a <- t.a DIRECT IDENTITY
        * <- t.a INDIRECT JOIN
        * <- t.b INDIRECT JOIN
        ",
    )
    .await;
}

#[tokio::test]
async fn disjunctive_join_condition_filters_each_side() {
    golden(
        "SELECT t.id FROM t, u WHERE (t.a = 1 AND u.c = 2) OR (t.a = 3 AND u.c = 4)",
        "
        id <- t.id DIRECT IDENTITY
        * <- t.a INDIRECT JOIN
        * <- t.a INDIRECT FILTER
        * <- u.c INDIRECT JOIN
        * <- u.c INDIRECT FILTER
        ",
    )
    .await;
}

#[tokio::test]
async fn window_keys_stay_with_the_window_column() {
    golden(
        "SELECT id, sum(a) OVER (PARTITION BY s ORDER BY b) AS running, \
         lag(a) OVER (ORDER BY id) AS previous FROM t",
        "
        id <- t.id DIRECT IDENTITY
        running <- t.a DIRECT AGGREGATION
        running <- t.b INDIRECT WINDOW
        running <- t.s INDIRECT WINDOW
        previous <- t.a DIRECT TRANSFORMATION
        previous <- t.id INDIRECT WINDOW
        ",
    )
    .await;
}

#[tokio::test]
async fn case_and_coalesce_conditions() {
    golden(
        "SELECT CASE WHEN s = 'x' THEN a ELSE b END AS pick, coalesce(a, b) AS first \
         FROM t",
        "
        pick <- t.a DIRECT TRANSFORMATION
        pick <- t.b DIRECT TRANSFORMATION
        pick <- t.s INDIRECT CONDITIONAL
        first <- t.a DIRECT TRANSFORMATION
        first <- t.a INDIRECT CONDITIONAL
        first <- t.b DIRECT TRANSFORMATION
        ",
    )
    .await;
}

#[tokio::test]
async fn hashes_and_counts_mask() {
    golden(
        "SELECT sha256(s) AS hashed, count(DISTINCT a) AS distinct_a FROM t GROUP BY s",
        "
        hashed <- t.s DIRECT TRANSFORMATION masked
        distinct_a <- t.a DIRECT AGGREGATION masked
        * <- t.a INDIRECT GROUP_BY
        * <- t.s INDIRECT GROUP_BY
        ",
    )
    .await;
}

#[tokio::test]
async fn views_ctes_subqueries_and_aliases_resolve_to_tables() {
    let ctx = session();
    view(
        &ctx,
        "step",
        "SELECT id, a * 2 AS doubled FROM t WHERE b > 0",
    )
    .await;
    let expected = "
        id <- t.id DIRECT IDENTITY
        total <- t.a DIRECT AGGREGATION
        * <- t.b INDIRECT FILTER
        * <- t.id INDIRECT GROUP_BY
        ";
    golden_in(
        &ctx,
        "SELECT id, sum(doubled) AS total FROM step GROUP BY id",
        expected,
    )
    .await;
    golden_in(
        &ctx,
        "WITH cte AS (SELECT id, a * 2 AS doubled FROM t WHERE b > 0) \
         SELECT x.id, sum(x.doubled) AS total FROM (SELECT * FROM cte) AS x GROUP BY x.id",
        expected,
    )
    .await;
}

#[tokio::test]
async fn star_expands_to_every_column() {
    golden(
        "SELECT * FROM u",
        "
        id <- u.id DIRECT IDENTITY
        c <- u.c DIRECT IDENTITY
        ",
    )
    .await;
}

#[tokio::test]
async fn union_maps_columns_by_position() {
    golden(
        "SELECT id, a AS v FROM t UNION ALL SELECT id, c FROM u WHERE c > 0",
        "
        id <- t.id DIRECT IDENTITY
        id <- u.id DIRECT IDENTITY
        v <- t.a DIRECT IDENTITY
        v <- u.c DIRECT IDENTITY
        * <- u.c INDIRECT FILTER
        ",
    )
    .await;
}

#[tokio::test]
async fn distinct_groups_by_every_column() {
    golden(
        "SELECT DISTINCT s FROM t",
        "
        s <- t.s DIRECT IDENTITY
        * <- t.s INDIRECT GROUP_BY
        ",
    )
    .await;
}

#[tokio::test]
async fn in_and_exists_subqueries_are_joins() {
    golden(
        "SELECT id FROM t WHERE a IN (SELECT c FROM u WHERE u.id > 5)",
        "
        id <- t.id DIRECT IDENTITY
        * <- t.a INDIRECT JOIN
        * <- u.c INDIRECT JOIN
        * <- u.id INDIRECT FILTER
        ",
    )
    .await;
    golden(
        "SELECT id FROM t WHERE NOT EXISTS (SELECT 1 FROM u WHERE u.id = t.id AND u.c > 2)",
        "
        id <- t.id DIRECT IDENTITY
        * <- t.id INDIRECT JOIN
        * <- u.c INDIRECT FILTER
        * <- u.id INDIRECT JOIN
        ",
    )
    .await;
}

#[tokio::test]
async fn correlated_scalar_subquery_groups_by_its_correlation() {
    golden(
        "SELECT id FROM t WHERE a > (SELECT avg(c) FROM u WHERE u.id = t.id)",
        "
        id <- t.id DIRECT IDENTITY
        * <- t.a INDIRECT JOIN
        * <- t.id INDIRECT JOIN
        * <- u.c INDIRECT JOIN
        * <- u.id INDIRECT JOIN
        * <- u.id INDIRECT GROUP_BY
        ",
    )
    .await;
}

#[tokio::test]
async fn nested_fields_keep_their_path() {
    golden(
        "SELECT id, info['x'] AS x, upper(info['y']) AS y FROM n",
        "
        id <- n.id DIRECT IDENTITY
        x <- n.info.x DIRECT IDENTITY
        y <- n.info.y DIRECT TRANSFORMATION
        ",
    )
    .await;
}

#[tokio::test]
async fn scoring_functions_depend_on_the_model_and_every_feature() {
    let ctx = session();
    view(
        &ctx,
        "scored",
        "SELECT id, score('churn@production', a, b) AS p FROM t",
    )
    .await;
    golden_in(
        &ctx,
        "SELECT id, p FROM scored WHERE p > 0.5",
        "
        id <- t.id DIRECT IDENTITY
        p <- t.a DIRECT TRANSFORMATION
        p <- t.b DIRECT TRANSFORMATION
        p <- model churn@production DIRECT TRANSFORMATION
        * <- t.a INDIRECT FILTER
        * <- t.b INDIRECT FILTER
        * <- model churn@production INDIRECT FILTER
        ",
    )
    .await;
}

#[tokio::test]
async fn recursive_cte_follows_the_work_table() {
    golden(
        "WITH RECURSIVE r(id, depth) AS (SELECT id, 0 FROM u UNION ALL \
         SELECT id + 1, depth + 1 FROM r WHERE depth < 3) SELECT id, depth FROM r",
        "
        id <- u.id DIRECT IDENTITY
        id <- u.id DIRECT TRANSFORMATION
        ",
    )
    .await;
}

#[tokio::test]
async fn descriptions_carry_the_expression() {
    let ctx = session();
    let lineage = lineage_of(&ctx, "SELECT a + b AS total FROM t WHERE s = 'x'").await;
    let description = lineage.columns[0].inputs[0].transformations[0]
        .description
        .as_deref();
    assert_eq!(description, Some("t.a + t.b"));
    let filter = lineage.dataset[0].transformations[0].description.as_deref();
    assert_eq!(filter, Some("t.s = 'x'"));
}

/// A plan node the extractor knows nothing about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
struct Opaque {
    input: LogicalPlan,
}

impl UserDefinedLogicalNodeCore for Opaque {
    fn name(&self) -> &str {
        "Opaque"
    }
    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }
    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }
    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }
    fn fmt_for_explain(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "Opaque")
    }
    fn with_exprs_and_inputs(
        &self,
        _: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> datafusion::error::Result<Self> {
        Ok(Opaque {
            input: inputs.remove(0),
        })
    }
}

#[tokio::test]
async fn unknown_plan_nodes_yield_inferred_edges() {
    let ctx = session();
    let input = ctx
        .sql("SELECT id, a FROM t")
        .await
        .unwrap()
        .into_unoptimized_plan();
    let plan = LogicalPlan::Extension(Extension {
        node: Arc::new(Opaque { input }),
    });
    let lineage = extract_lineage(&plan, &options()).unwrap();
    assert_eq!(
        render(&lineage),
        "id <- t.id DIRECT TRANSFORMATION inferred\na <- t.a DIRECT TRANSFORMATION inferred\n"
    );
}

#[tokio::test]
async fn a_wide_projection_is_linear() {
    let ctx = SessionContext::new();
    let width = 5_000;
    table(
        &ctx,
        "wide",
        (0..width)
            .map(|i| Field::new(format!("c{i}"), DataType::Int64, true))
            .collect(),
    );
    let select: Vec<String> = (0..width).map(|i| format!("c{i} + 1 AS o{i}")).collect();
    let sql = format!("SELECT {} FROM wide", select.join(", "));
    let plan = ctx.sql(&sql).await.unwrap().into_unoptimized_plan();
    let lineage = extract_lineage(&plan, &options()).unwrap();
    assert_eq!(lineage.columns.len(), width);
    assert_eq!(lineage.columns[4_321].inputs[0].input.field(), "c4321");
}

/// The project's TPC-H tables (`benchmarks/tpch/schema.sql`), empty.
async fn tpch_session() -> SessionContext {
    let ctx = SessionContext::new();
    let path = format!(
        "{}/../benchmarks/tpch/schema.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    let ddl = std::fs::read_to_string(path).unwrap();
    for statement in ddl.split(';').filter(|s| s.contains("CREATE")) {
        ctx.sql(statement).await.unwrap();
    }
    ctx
}

/// The query of TPC-H query `n`, with q15's view registered the way a job step would be.
pub(crate) async fn tpch_query(ctx: &SessionContext, n: usize) -> String {
    let path = format!(
        "{}/../benchmarks/tpch/queries/q{n}.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    if n != 15 {
        return text;
    }
    // create view revenue0 (...) as <query>; <select>; drop view revenue0;
    let statements: Vec<&str> = text.split(';').map(str::trim).collect();
    let body = statements[0].split_once(" as").unwrap().1;
    let sql =
        format!("SELECT supplier_no, total_revenue FROM ({body}) AS v(supplier_no, total_revenue)");
    view(ctx, "revenue0", &sql).await;
    statements[1].to_string()
}

#[tokio::test]
async fn tpch_queries_have_complete_lineage_from_either_plan() {
    let mut without_direct_inputs = Vec::new();
    for n in 1..=22 {
        let ctx = tpch_session().await;
        let sql = tpch_query(&ctx, n).await;
        // `lineage_of` checks unoptimized == optimized and one entry per output column.
        let lineage = lineage_of(&ctx, &sql).await;
        for column in &lineage.columns {
            let direct = column
                .inputs
                .iter()
                .any(|f| f.transformations.iter().any(|t| t.subtype.is_direct()));
            if !direct {
                without_direct_inputs.push(format!("q{n}.{}", column.column));
            }
            assert!(
                column
                    .inputs
                    .iter()
                    .flat_map(|f| &f.transformations)
                    .all(|t| !t.inferred),
                "q{n}: column {} has inferred edges",
                column.column
            );
        }
        assert!(
            !lineage.dataset.is_empty(),
            "q{n}: no dataset-wide dependencies"
        );
    }
    // Only `count(*)` columns and q12's `sum(CASE WHEN <condition> THEN 1 ELSE 0 END)` read
    // no column's value (they depend on the dataset-wide list, and q12's on its conditions).
    assert_eq!(
        without_direct_inputs,
        [
            "q1.count_order",
            "q4.order_count",
            "q12.high_line_count",
            "q12.low_line_count",
            "q13.custdist",
            "q21.numwait",
            "q22.numcust"
        ]
    );
}

#[tokio::test]
async fn tpch_q3_golden() {
    let ctx = tpch_session().await;
    let sql = tpch_query(&ctx, 3).await;
    let lineage = lineage_of(&ctx, &sql).await;
    assert_eq!(
        render(&lineage),
        "l_orderkey <- lineitem.l_orderkey DIRECT IDENTITY
revenue <- lineitem.l_discount DIRECT AGGREGATION
revenue <- lineitem.l_extendedprice DIRECT AGGREGATION
o_orderdate <- orders.o_orderdate DIRECT IDENTITY
o_shippriority <- orders.o_shippriority DIRECT IDENTITY
* <- customer.c_custkey INDIRECT JOIN
* <- customer.c_mktsegment INDIRECT FILTER
* <- lineitem.l_discount INDIRECT SORT
* <- lineitem.l_extendedprice INDIRECT SORT
* <- lineitem.l_orderkey INDIRECT JOIN
* <- lineitem.l_orderkey INDIRECT GROUP_BY
* <- lineitem.l_shipdate INDIRECT FILTER
* <- orders.o_custkey INDIRECT JOIN
* <- orders.o_orderdate INDIRECT FILTER
* <- orders.o_orderdate INDIRECT GROUP_BY
* <- orders.o_orderdate INDIRECT SORT
* <- orders.o_orderkey INDIRECT JOIN
* <- orders.o_shippriority INDIRECT GROUP_BY
"
    );
}

#[tokio::test]
async fn filters_pushed_into_scans_are_filters() {
    use datafusion::datasource::provider_as_source;
    use datafusion::logical_expr::LogicalPlanBuilder;
    use datafusion::prelude::{col, lit};

    let ctx = session();
    let provider = ctx.table_provider("t").await.unwrap();
    let plan = LogicalPlanBuilder::scan_with_filters(
        "t",
        provider_as_source(provider),
        Some(vec![0]),
        vec![col("a").gt(lit(1))],
    )
    .unwrap()
    .build()
    .unwrap();
    let lineage = extract_lineage(&plan, &options()).unwrap();
    assert_eq!(
        render(&lineage),
        "id <- t.id DIRECT IDENTITY\n* <- t.a INDIRECT FILTER\n"
    );
}
