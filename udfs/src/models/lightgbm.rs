//! Reading LightGBM text models saved with `booster.save_model("m.txt")`.
//!
//! A header of `key=value` lines (`num_class`, `num_tree_per_iteration`, `max_feature_idx`,
//! `objective`, `feature_names`, `average_output`), then one `Tree=N` block per tree:
//! `num_leaves`, `split_feature`, `threshold`, `decision_type` (bit 0 categorical, bit 1 default
//! left, bits 2-3 missing type: 0 none, 1 zero, 2 NaN), `left_child`/`right_child` (negative:
//! `~leaf`), `leaf_value` (shrinkage included), `cat_boundaries`/`cat_threshold` (a categorical
//! node's threshold indexes its bitset), and for linear trees `is_linear`, `leaf_const`,
//! `num_features`, `leaf_features`, `leaf_coeff`. Tree `t` adds to class
//! `t % num_tree_per_iteration`.

use std::collections::HashMap;

use crate::models::ensemble::{Ensemble, LinearLeaf, Missing, Node, SplitRule, Tree};
use crate::models::{FeatureKind, Link, TreeModel};

/// Reads a LightGBM text model.
pub fn read(text: &str) -> Result<TreeModel, String> {
    let mut lines = text.lines().enumerate().peekable();
    let first = lines.next().map(|(_, l)| l.trim()).unwrap_or_default();
    if first != "tree" {
        return Err(format!("the first line is {first:?}, not \"tree\""));
    }
    let mut header: HashMap<&str, &str> = HashMap::new();
    let mut flags: Vec<&str> = Vec::new();
    while let Some((_, line)) = lines.peek() {
        if line.starts_with("Tree=") || line.starts_with("end of trees") {
            break;
        }
        let line = line.trim();
        match line.split_once('=') {
            Some((key, value)) => {
                header.insert(key, value);
            }
            None if !line.is_empty() => flags.push(line),
            None => {}
        }
        lines.next();
    }
    let number = |key: &str| -> Result<usize, String> {
        header
            .get(key)
            .ok_or_else(|| format!("the header has no {key}"))?
            .trim()
            .parse()
            .map_err(|_| format!("{key} is not a number"))
    };
    let trees_per_iteration = number("num_tree_per_iteration").or_else(|_| number("num_class"))?;
    let num_class = number("num_class")?;
    let num_features = number("max_feature_idx")? + 1;
    if trees_per_iteration == 0 {
        return Err("num_tree_per_iteration is 0".to_string());
    }
    let objective = header.get("objective").map_or("", |s| s.trim()).to_string();
    let link = link_of(&objective)?;
    if matches!(link, Link::Softmax) && num_class != trees_per_iteration {
        return Err(format!(
            "{num_class} classes but {trees_per_iteration} trees per iteration"
        ));
    }
    let feature_names: Vec<String> = match header.get("feature_names") {
        Some(names) => names.split_whitespace().map(str::to_string).collect(),
        None => (0..num_features).map(|i| format!("Column_{i}")).collect(),
    };
    if feature_names.len() != num_features {
        return Err(format!(
            "{} feature names for {num_features} features",
            feature_names.len()
        ));
    }
    // Categorical features list their categories in feature_infos ("1:3:7"); numeric ones a
    // range ("[0:5]") or "none".
    let feature_kinds: Vec<FeatureKind> = match header.get("feature_infos") {
        Some(infos) => infos
            .split_whitespace()
            .map(|info| {
                if info.starts_with('[') || info == "none" {
                    FeatureKind::Numeric
                } else {
                    FeatureKind::Categorical
                }
            })
            .collect(),
        None => vec![FeatureKind::Numeric; num_features],
    };
    let feature_kinds = if feature_kinds.len() == num_features {
        feature_kinds
    } else {
        vec![FeatureKind::Numeric; num_features]
    };

    let mut trees = Vec::new();
    let mut complete = false;
    while let Some((number, line)) = lines.next() {
        let line = line.trim();
        if line.starts_with("end of trees") {
            complete = true;
            break;
        }
        let Some(index) = line.strip_prefix("Tree=") else {
            continue;
        };
        let mut block: HashMap<&str, &str> = HashMap::new();
        while let Some((_, line)) = lines.peek() {
            let line = line.trim();
            if line.is_empty() || line.starts_with("Tree=") || line.starts_with("end of trees") {
                break;
            }
            if let Some((key, value)) = line.split_once('=') {
                block.insert(key, value);
            }
            lines.next();
        }
        let mut tree =
            read_tree(&block).map_err(|e| format!("Tree={index} (line {}): {e}", number + 1))?;
        tree.group = trees.len() % trees_per_iteration;
        trees.push(tree);
    }
    if !complete {
        return Err(format!(
            "the file ends after {} trees without its 'end of trees' line (truncated?)",
            trees.len()
        ));
    }
    if let Some(sizes) = header.get("tree_sizes") {
        let declared = sizes.split_whitespace().count();
        if declared != trees.len() {
            return Err(format!(
                "the header declares {declared} trees but the file has {}",
                trees.len()
            ));
        }
    }
    if trees.is_empty() {
        return Err("the model has no trees".to_string());
    }
    let mut ensemble = Ensemble {
        rule: SplitRule::LightGbm,
        num_features,
        num_groups: trees_per_iteration,
        base_margins: vec![0.0; trees_per_iteration],
        trees,
        average: flags.contains(&"average_output"),
        flat: None,
    };
    ensemble.validate()?;
    Ok(TreeModel {
        ensemble,
        link,
        objective,
        feature_names,
        feature_kinds,
    })
}

fn read_tree(block: &HashMap<&str, &str>) -> Result<Tree, String> {
    let get = |key: &str| block.get(key).copied().ok_or_else(|| format!("no {key}"));
    let num_leaves: usize = get("num_leaves")?
        .trim()
        .parse()
        .map_err(|_| "num_leaves is not a number".to_string())?;
    let leaves = list::<f64>(get("leaf_value")?, "leaf_value")?;
    if leaves.len() != num_leaves {
        return Err(format!(
            "{} leaf values for {num_leaves} leaves",
            leaves.len()
        ));
    }
    let mut tree = Tree {
        nodes: Vec::new(),
        leaves,
        linear: None,
        category_sets: Vec::new(),
        group: 0,
    };
    if num_leaves > 1 {
        let features = list::<u32>(get("split_feature")?, "split_feature")?;
        let thresholds = list::<f64>(get("threshold")?, "threshold")?;
        let decisions = list::<i32>(get("decision_type")?, "decision_type")?;
        let left = list::<i32>(get("left_child")?, "left_child")?;
        let right = list::<i32>(get("right_child")?, "right_child")?;
        let splits = num_leaves - 1;
        if [
            features.len(),
            thresholds.len(),
            decisions.len(),
            left.len(),
            right.len(),
        ]
        .iter()
        .any(|&n| n != splits)
        {
            return Err(format!("node arrays do not all have {splits} entries"));
        }
        let num_cat: usize = block.get("num_cat").map_or(Ok(0), |s| {
            s.trim()
                .parse()
                .map_err(|_| "num_cat is not a number".to_string())
        })?;
        if num_cat > 0 {
            let boundaries = list::<usize>(get("cat_boundaries")?, "cat_boundaries")?;
            let words = list::<u32>(get("cat_threshold")?, "cat_threshold")?;
            if boundaries.len() != num_cat + 1 {
                return Err(format!(
                    "{} cat_boundaries for {num_cat} sets",
                    boundaries.len()
                ));
            }
            for pair in boundaries.windows(2) {
                let set = words
                    .get(pair[0]..pair[1])
                    .ok_or("cat_boundaries points past cat_threshold")?;
                tree.category_sets.push(set.to_vec());
            }
        }
        for i in 0..splits {
            let decision = decisions[i];
            let categorical = decision & 1 != 0;
            let missing = match (decision >> 2) & 3 {
                0 => Missing::None,
                1 => Missing::Zero,
                2 => Missing::NaN,
                other => return Err(format!("node {i}: unknown missing type {other}")),
            };
            let categories = if categorical {
                let set = thresholds[i];
                if set < 0.0 || set as usize >= tree.category_sets.len() {
                    return Err(format!("node {i}: category set {set} does not exist"));
                }
                Some(set as u32)
            } else {
                None
            };
            tree.nodes.push(Node {
                feature: features[i],
                threshold: thresholds[i],
                left: left[i],
                right: right[i],
                default_left: decision & 2 != 0,
                missing,
                categories,
            });
        }
    }
    if block.get("is_linear").is_some_and(|v| v.trim() == "1") {
        let constants = list::<f64>(get("leaf_const")?, "leaf_const")?;
        let counts = list::<usize>(get("num_features")?, "num_features")?;
        let features = list::<u32>(
            block.get("leaf_features").copied().unwrap_or(""),
            "leaf_features",
        )?;
        let coefficients =
            list::<f64>(block.get("leaf_coeff").copied().unwrap_or(""), "leaf_coeff")?;
        if constants.len() != num_leaves || counts.len() != num_leaves {
            return Err("linear leaf arrays do not match num_leaves".to_string());
        }
        if features.len() != counts.iter().sum::<usize>() || coefficients.len() != features.len() {
            return Err("leaf_features / leaf_coeff do not match num_features".to_string());
        }
        let mut offset = 0;
        let mut linear = Vec::with_capacity(num_leaves);
        for (constant, count) in constants.into_iter().zip(counts) {
            let terms = features[offset..offset + count]
                .iter()
                .copied()
                .zip(coefficients[offset..offset + count].iter().copied())
                .collect();
            offset += count;
            linear.push(LinearLeaf { constant, terms });
        }
        tree.linear = Some(linear);
    }
    Ok(tree)
}

/// The link from raw score to prediction of a LightGBM objective line such as
/// `binary sigmoid:1` or `multiclass num_class:3`.
fn link_of(objective: &str) -> Result<Link, String> {
    let mut words = objective.split_whitespace();
    let name = words.next().unwrap_or("");
    let option = |key: &str| {
        objective
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key).and_then(|v| v.parse::<f64>().ok()))
    };
    Ok(match name {
        // No objective line: a custom objective, whose predictions are the raw scores.
        "" | "regression" | "regression_l2" | "regression_l1" | "huber" | "fair" | "quantile"
        | "mape" | "lambdarank" | "rank_xendcg" | "custom" => {
            if words.any(|w| w == "sqrt") {
                Link::SignedSquare
            } else {
                Link::Identity
            }
        }
        "poisson" | "gamma" | "tweedie" => Link::Exp,
        "binary" => Link::Sigmoid {
            scale: option("sigmoid:").unwrap_or(1.0),
        },
        "cross_entropy" | "xentropy" => Link::Sigmoid { scale: 1.0 },
        "cross_entropy_lambda" | "xentlambda" => Link::Log1pExp,
        "multiclass" | "softmax" => Link::Softmax,
        "multiclassova" | "multiclass_ova" | "ova" | "ovr" => Link::Sigmoid {
            scale: option("sigmoid:").unwrap_or(1.0),
        },
        other => return Err(format!("objective '{other}' is not supported")),
    })
}

fn list<T: std::str::FromStr>(text: &str, what: &str) -> Result<Vec<T>, String> {
    text.split_whitespace()
        .map(|v| v.parse::<T>().map_err(|_| format!("{what} holds {v:?}")))
        .collect()
}
