//! `lakeforge lineage` and `lakeforge lineage impact`.

use anyhow::{Context, bail};
use lakeforge_engine::EngineConfig;
use lakeforge_engine::delta::is_delta_table;
use lakeforge_engine::lineage::query::{impact, render_impact, render_upstream, upstream};
use lakeforge_engine::location::display_location;

use crate::args::{LineageArgs, LineageCommand, location_argument, table_argument};

/// Upstream lineage of a product (column), or the downstream impact of a column.
pub async fn lineage(args: LineageArgs, config: &EngineConfig, json: bool) -> anyhow::Result<()> {
    match args.impact {
        Some(LineageCommand::Impact {
            location,
            column,
            depth,
            direct_only,
            format,
            warehouse,
        }) => {
            let warehouse = location_argument(&warehouse.warehouse)?;
            let dataset = location_argument(&location)?;
            let hits = impact(&warehouse, &dataset, &column, depth, direct_only, config).await?;
            if hits.is_empty() && !json {
                eprintln!(
                    "nothing in {} depends on {}.{column}",
                    display_location(&warehouse),
                    display_location(&dataset)
                );
            }
            print!("{}", render_impact(&hits, format.format(json))?);
        }
        None => {
            let target = args
                .target
                .context("give a table, e.g. `lineage warehouse/t.col`")?;
            let (table, column) = lineage_target(&target).await?;
            let tree = upstream(&table, args.version, column.as_deref()).await?;
            print!("{}", render_upstream(&tree, args.format.format(json))?);
        }
    }
    Ok(())
}

/// `TABLE` or `TABLE.COLUMN`: the table is the longest prefix that is a Delta table.
async fn lineage_target(target: &str) -> anyhow::Result<(url::Url, Option<String>)> {
    let whole = table_argument(target)?;
    if is_delta_table(&whole).await {
        return Ok((whole, None));
    }
    if let Some((table, column)) = target.rsplit_once('.') {
        let table_url = table_argument(table)?;
        if is_delta_table(&table_url).await {
            return Ok((table_url, Some(column.to_string())));
        }
    }
    bail!(
        "{} is not a Delta table (nor TABLE.COLUMN of one)",
        display_location(&whole)
    )
}
