//! Reading XGBoost models saved with `save_model("m.json")` or `save_model("m.ubj")`.
//!
//! Layout (XGBoost 1.6 to 3.x): `learner.learner_model_param` holds `base_score` (after the
//! objective's link: a probability for `binary:logistic`; a bracketed list such as `"[5E-1]"`
//! from 3.1, one per output), `num_class` and `num_feature`; `learner.objective.name`;
//! `learner.feature_names`/`feature_types`; `learner.gradient_booster` is `gbtree` (or `dart`,
//! whose trees carry `weight_drop`) with `model.trees` and `model.tree_info` (each tree's output
//! group). A tree lists its nodes in parallel arrays: `left_children` (-1 for a leaf),
//! `right_children`, `split_indices`, `split_conditions` (a leaf's value for a leaf),
//! `default_left`, `split_type` (1 = categorical) and the categorical splits' category lists
//! (`categories_nodes`, `categories_segments`, `categories_sizes`, `categories`).

use serde_json::Value;

use crate::models::ensemble::{Ensemble, Missing, Node, SplitRule, Tree, insert_category};
use crate::models::{FeatureKind, Link, TreeModel};

/// Reads a parsed XGBoost model document.
pub fn read(doc: &Value) -> Result<TreeModel, String> {
    let learner = field(doc, "learner")?;
    let params = field(learner, "learner_model_param")?;
    let objective = field(field(learner, "objective")?, "name")?
        .as_str()
        .ok_or("learner.objective.name is not a string")?
        .to_string();
    let num_feature = int_param(params, "num_feature")?;
    let num_class = int_param(params, "num_class").unwrap_or(0);
    let num_target = int_param(params, "num_target").unwrap_or(1);
    if num_target > 1 {
        return Err(format!(
            "multi-target models ({num_target} targets) are not supported"
        ));
    }
    let num_groups = num_class.max(1);
    let link = link_of(&objective)?;

    let base_scores = base_scores(params)?;
    let base_margins: Vec<f64> = match base_scores.len() {
        1 => vec![margin_of(&objective, base_scores[0]); num_groups],
        n if n == num_groups => base_scores
            .iter()
            .map(|&s| margin_of(&objective, s))
            .collect(),
        n => return Err(format!("{n} base scores for {num_groups} outputs")),
    };

    let booster = field(learner, "gradient_booster")?;
    let booster_name = field(booster, "name")?.as_str().unwrap_or_default();
    let (model, weights) = match booster_name {
        "gbtree" => (field(booster, "model")?, None),
        "dart" => {
            let inner = field(field(booster, "gbtree")?, "model")?;
            let weights = numbers(field(booster, "weight_drop")?, "weight_drop")?;
            (inner, Some(weights))
        }
        other => {
            return Err(format!(
                "booster '{other}' is not supported (gbtree and dart are)"
            ));
        }
    };
    let tree_docs = field(model, "trees")?
        .as_array()
        .ok_or("gradient_booster.model.trees is not a list")?;
    let tree_info = numbers(field(model, "tree_info")?, "tree_info")?;
    if tree_info.len() != tree_docs.len() {
        return Err(format!(
            "{} trees but tree_info has {} entries",
            tree_docs.len(),
            tree_info.len()
        ));
    }
    let mut trees = Vec::with_capacity(tree_docs.len());
    for (t, (tree_doc, group)) in tree_docs.iter().zip(tree_info).enumerate() {
        let weight = match &weights {
            Some(w) => *w
                .get(t)
                .ok_or_else(|| format!("dart weight_drop lacks tree {t}"))?,
            None => 1.0,
        };
        let mut tree = read_tree(tree_doc, weight).map_err(|e| format!("tree {t}: {e}"))?;
        tree.group = usize::try_from(group as i64).map_err(|_| format!("tree {t}: bad group"))?;
        trees.push(tree);
    }

    let names: Vec<String> = match learner.get("feature_names").and_then(Value::as_array) {
        Some(names) if !names.is_empty() => names
            .iter()
            .map(|n| {
                n.as_str()
                    .map(str::to_string)
                    .ok_or("a feature name is not a string")
            })
            .collect::<Result<_, _>>()?,
        _ => (0..num_feature).map(|i| format!("f{i}")).collect(),
    };
    if names.len() != num_feature {
        return Err(format!(
            "{} feature names for {num_feature} features",
            names.len()
        ));
    }
    let kinds: Vec<FeatureKind> = match learner.get("feature_types").and_then(Value::as_array) {
        Some(types) if types.len() == num_feature => types
            .iter()
            .map(|t| match t.as_str() {
                Some("c") => FeatureKind::Categorical,
                Some("int" | "i") => FeatureKind::Integer,
                _ => FeatureKind::Numeric,
            })
            .collect(),
        _ => vec![FeatureKind::Numeric; num_feature],
    };
    let mut ensemble = Ensemble {
        rule: SplitRule::XgBoost,
        num_features: num_feature,
        num_groups,
        base_margins,
        trees,
        average: false,
        flat: None,
    };
    ensemble.validate()?;
    Ok(TreeModel {
        ensemble,
        link,
        objective,
        feature_names: names,
        feature_kinds: kinds,
    })
}

fn read_tree(doc: &Value, weight: f64) -> Result<Tree, String> {
    let left = numbers(field(doc, "left_children")?, "left_children")?;
    let right = numbers(field(doc, "right_children")?, "right_children")?;
    let features = numbers(field(doc, "split_indices")?, "split_indices")?;
    let conditions = numbers(field(doc, "split_conditions")?, "split_conditions")?;
    let default_left = numbers(field(doc, "default_left")?, "default_left")?;
    let split_type = match doc.get("split_type") {
        Some(v) => numbers(v, "split_type")?,
        None => vec![0.0; left.len()],
    };
    let n = left.len();
    if [&right, &features, &conditions, &default_left, &split_type]
        .iter()
        .any(|v| v.len() != n)
    {
        return Err("node arrays have different lengths".to_string());
    }
    if n == 0 {
        return Err("no nodes".to_string());
    }
    // Category lists of categorical nodes: node id -> categories going right.
    let mut node_categories: Vec<Option<Vec<u32>>> = vec![None; n];
    if let Some(nodes) = doc.get("categories_nodes") {
        let nodes = numbers(nodes, "categories_nodes")?;
        let segments = numbers(field(doc, "categories_segments")?, "categories_segments")?;
        let sizes = numbers(field(doc, "categories_sizes")?, "categories_sizes")?;
        let categories = numbers(field(doc, "categories")?, "categories")?;
        for ((node, start), size) in nodes.iter().zip(&segments).zip(&sizes) {
            let (node, start, size) = (*node as usize, *start as usize, *size as usize);
            let list = categories
                .get(start..start + size)
                .ok_or("categories_segments points past categories")?;
            let slot = node_categories
                .get_mut(node)
                .ok_or("categories_nodes out of range")?;
            let mut bits = Vec::new();
            for &category in list {
                if !(0.0..=f64::from(u32::MAX)).contains(&category) {
                    return Err(format!("invalid category {category}"));
                }
                insert_category(&mut bits, category as u32);
            }
            *slot = Some(bits);
        }
    }

    // Renumber by a walk from the root: split nodes and leaves get their own dense indices,
    // and nodes deleted by pruning (unreachable) are left out.
    let mut tree = Tree::default();
    let is_leaf = |id: usize| left[id] < 0.0;
    // Assign each XGBoost node its new reference in breadth-first order.
    let mut order = vec![0_usize];
    let mut reference = vec![None::<i32>; n];
    let mut next = 0;
    while next < order.len() {
        let id = order[next];
        next += 1;
        if reference[id].is_some() {
            return Err(format!("node {id} is reached twice"));
        }
        if is_leaf(id) {
            reference[id] = Some(!(tree.leaves.len() as i32));
            tree.leaves.push(conditions[id] * weight);
        } else {
            reference[id] = Some(tree.nodes.len() as i32);
            tree.nodes.push(Node {
                feature: features[id] as u32,
                threshold: f64::from(conditions[id] as f32),
                left: 0,
                right: 0,
                default_left: default_left[id] != 0.0,
                missing: Missing::NaN,
                categories: None,
            });
            for child in [left[id], right[id]] {
                if child < 0.0 || child as usize >= n {
                    return Err(format!("node {id} has an invalid child {child}"));
                }
                order.push(child as usize);
            }
        }
    }
    for &id in &order {
        if is_leaf(id) {
            continue;
        }
        let Some(index) = reference[id].and_then(|r| usize::try_from(r).ok()) else {
            continue;
        };
        let child =
            |c: f64| reference[c as usize].ok_or_else(|| format!("node {id}: dangling child"));
        let (l, r) = (child(left[id])?, child(right[id])?);
        let categories = if split_type[id] == 1.0 {
            let bits = node_categories[id]
                .take()
                .ok_or_else(|| format!("categorical node {id} has no categories"))?;
            tree.category_sets.push(bits);
            Some((tree.category_sets.len() - 1) as u32)
        } else {
            None
        };
        let node = &mut tree.nodes[index];
        node.left = l;
        node.right = r;
        node.categories = categories;
    }
    // XGBoost adds leaf values in f32: keep them exactly as f32 values.
    for leaf in &mut tree.leaves {
        *leaf = f64::from(*leaf as f32);
    }
    Ok(tree)
}

/// The link from margin to prediction of an XGBoost objective.
fn link_of(objective: &str) -> Result<Link, String> {
    Ok(match objective {
        "binary:logistic" | "reg:logistic" => Link::Sigmoid { scale: 1.0 },
        "multi:softprob" => Link::Softmax,
        "multi:softmax" => Link::ArgMax,
        "count:poisson" | "reg:gamma" | "reg:tweedie" | "survival:cox" | "survival:aft" => {
            Link::Exp
        }
        "binary:hinge" => Link::Hinge,
        "reg:squarederror"
        | "reg:squaredlogerror"
        | "reg:pseudohubererror"
        | "reg:absoluteerror"
        | "reg:quantileerror"
        | "reg:linear"
        | "binary:logitraw"
        | "rank:pairwise"
        | "rank:ndcg"
        | "rank:map" => Link::Identity,
        other => return Err(format!("objective '{other}' is not supported")),
    })
}

/// The base margin of a stored base score, computed in f32 as XGBoost does.
fn margin_of(objective: &str, score: f64) -> f64 {
    let p = score as f32;
    let margin = match objective {
        "binary:logistic" | "reg:logistic" | "binary:logitraw" => -(1.0_f32 / p - 1.0).ln(),
        "count:poisson" | "reg:gamma" | "reg:tweedie" | "survival:cox" => p.ln(),
        _ => p,
    };
    f64::from(margin)
}

/// `base_score`: a number as text (`"5E-1"`), or a bracketed list (`"[5E-1,2E-1]"`).
fn base_scores(params: &Value) -> Result<Vec<f64>, String> {
    let text = match field(params, "base_score")? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => return Err(format!("base_score is {other}")),
    };
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<f64>()
                .map_err(|_| format!("base_score '{text}' is not a number or list of numbers"))
        })
        .collect()
}

fn field<'a>(value: &'a Value, key: &str) -> Result<&'a Value, String> {
    value
        .get(key)
        .ok_or_else(|| format!("missing field '{key}'"))
}

/// An integer parameter stored as text (`"12"`) or a number.
fn int_param(params: &Value, key: &str) -> Result<usize, String> {
    let value = field(params, key)?;
    let parsed = match value {
        Value::String(s) => s.trim().parse::<usize>().ok(),
        Value::Number(n) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
        _ => None,
    };
    parsed.ok_or_else(|| format!("{key} is not a non-negative integer: {value}"))
}

/// A list of numbers (or booleans, as 0/1).
fn numbers(value: &Value, what: &str) -> Result<Vec<f64>, String> {
    value
        .as_array()
        .ok_or_else(|| format!("'{what}' is not a list"))?
        .iter()
        .map(|v| match v {
            Value::Number(n) => n.as_f64().ok_or_else(|| format!("'{what}' holds {n}")),
            Value::Bool(b) => Ok(f64::from(u8::from(*b))),
            other => Err(format!("'{what}' holds {other}")),
        })
        .collect()
}
