//! The one tree-ensemble representation XGBoost and LightGBM models are read into, and its
//! vectorized evaluation.
//!
//! Each tree is a flat array of split nodes; a child is a node index, or `!leaf` (negative) for
//! a leaf. Rows are scored in blocks: the block's features are gathered once into a row-major
//! buffer (NaN for missing), then every tree routes every row of the block, accumulating into
//! the block's margins in tree order, as the libraries do, so the sums round identically.

/// How a model compares a feature with a split threshold, and sums leaf values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitRule {
    /// XGBoost: left when `x < threshold` in f32, NaN to the default child; categorical
    /// splits send the listed categories right; margins are sums of f32.
    XgBoost,
    /// LightGBM: left when `x <= threshold` in f64, with per-node missing handling (none: NaN is
    /// 0; zero: 0 and NaN take the default child; NaN: NaN takes the default child); categorical
    /// splits send the listed categories left; margins are sums of f64.
    LightGbm,
}

/// Missing-value handling of a LightGBM split (XGBoost nodes always use [`Missing::NaN`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// NaN is treated as 0.
    None,
    /// 0 (and NaN, which becomes 0) takes the default child.
    Zero,
    /// NaN takes the default child.
    NaN,
}

/// A split node.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The feature's position in the model's feature list.
    pub feature: u32,
    /// Numeric threshold (for XGBoost, an f32 value widened exactly).
    pub threshold: f64,
    /// Left child: a node index, or `!leaf`.
    pub left: i32,
    /// Right child.
    pub right: i32,
    /// Where a missing value goes.
    pub default_left: bool,
    /// LightGBM's missing-value handling.
    pub missing: Missing,
    /// For a categorical split, the index of its category set in [`Tree::category_sets`].
    pub categories: Option<u32>,
}

/// A linear model in a leaf (LightGBM `linear_tree`).
#[derive(Debug, Clone, PartialEq)]
pub struct LinearLeaf {
    /// The intercept.
    pub constant: f64,
    /// (feature, coefficient) pairs.
    pub terms: Vec<(u32, f64)>,
}

/// One tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    /// Split nodes; node 0 is the root. Empty for a single-leaf tree.
    pub nodes: Vec<Node>,
    /// Leaf values.
    pub leaves: Vec<f64>,
    /// Per-leaf linear models, when the tree has them; a leaf falls back to its value when a
    /// feature of its model is missing.
    pub linear: Option<Vec<LinearLeaf>>,
    /// Category sets as bitsets over non-negative integer categories.
    pub category_sets: Vec<Vec<u32>>,
    /// The output group (class) this tree adds to.
    pub group: usize,
}

impl Tree {
    #[inline]
    fn goes_left(&self, node: &Node, x: f64, rule: SplitRule) -> bool {
        match rule {
            SplitRule::XgBoost => {
                if x.is_nan() {
                    return node.default_left;
                }
                match node.categories {
                    Some(set) => {
                        // XGBoost: listed categories go right; anything else (including
                        // negative or unseen categories) goes left.
                        !(x >= 0.0 && contains(&self.category_sets[set as usize], x))
                    }
                    // `x` was rounded to f32 when gathered, the threshold is an f32: this is
                    // XGBoost's f32 comparison.
                    None => x < node.threshold,
                }
            }
            SplitRule::LightGbm => match node.categories {
                Some(set) => {
                    // LightGBM: negative values (and NaN, which its int cast makes negative)
                    // go right; listed categories go left.
                    if x.is_nan() || x < 0.0 {
                        return false;
                    }
                    contains(&self.category_sets[set as usize], x)
                }
                None => {
                    let x = if x.is_nan() && node.missing != Missing::NaN {
                        0.0
                    } else {
                        x
                    };
                    let missing = match node.missing {
                        Missing::None => false,
                        Missing::Zero => (-K_ZERO_THRESHOLD..=K_ZERO_THRESHOLD).contains(&x),
                        Missing::NaN => x.is_nan(),
                    };
                    if missing {
                        node.default_left
                    } else {
                        x <= node.threshold
                    }
                }
            },
        }
    }

    /// The outputs of rows `first..first + lanes` (row-major `features`, `width` per row) into
    /// `out[..lanes]`. The rows walk the tree together, one step each per round, so the CPU
    /// overlaps their independent node loads instead of waiting on one row's chain of them.
    fn outputs(
        &self,
        features: &[f64],
        width: usize,
        first: usize,
        lanes: usize,
        rule: SplitRule,
        out: &mut [f64; LANES],
    ) {
        let row = |lane: usize| &features[(first + lane) * width..(first + lane + 1) * width];
        let mut base = [0_usize; LANES];
        for (lane, offset) in base.iter_mut().enumerate().take(lanes) {
            *offset = (first + lane) * width;
        }
        let mut at = [0_i32; LANES];
        if !self.nodes.is_empty() {
            let numeric_xgboost = rule == SplitRule::XgBoost && self.category_sets.is_empty();
            let mut walking = true;
            while walking {
                walking = false;
                for (position, offset) in at.iter_mut().zip(&base).take(lanes) {
                    if *position < 0 {
                        continue;
                    }
                    // Child indices and features were validated when the model was read.
                    let node = &self.nodes[*position as usize];
                    let x = features[offset + node.feature as usize];
                    let left = if numeric_xgboost {
                        // `x < threshold` is false for NaN, so this is XGBoost's rule without
                        // a branch on the value.
                        (x < node.threshold) | (x.is_nan() & node.default_left)
                    } else {
                        self.goes_left(node, x, rule)
                    };
                    *position = if left { node.left } else { node.right };
                    walking |= *position >= 0;
                }
            }
        }
        for lane in 0..lanes {
            let leaf = if self.nodes.is_empty() {
                0
            } else {
                !at[lane] as usize
            };
            out[lane] = self.leaf_output(leaf, row(lane));
        }
    }

    fn leaf_output(&self, leaf: usize, row: &[f64]) -> f64 {
        if let Some(linear) = &self.linear {
            let model = &linear[leaf];
            let mut sum = model.constant;
            for &(feature, coefficient) in &model.terms {
                let x = row[feature as usize];
                if x.is_nan() {
                    return self.leaves[leaf];
                }
                sum += coefficient * x;
            }
            return sum;
        }
        self.leaves[leaf]
    }
}

/// LightGBM's `kZeroThreshold`: values this close to 0 are zero.
const K_ZERO_THRESHOLD: f64 = 1e-35_f32 as f64;

/// Whether the integer category `x` (non-negative, not NaN) is in `bits`.
#[inline]
fn contains(bits: &[u32], x: f64) -> bool {
    // Truncation toward zero, as both libraries cast a category value to an integer.
    let category = x as u64;
    let word = (category / 32) as usize;
    word < bits.len() && bits[word] & (1 << (category % 32)) != 0
}

/// A tree ensemble: the trees, how to route rows through them, and the base margins.
#[derive(Debug, Clone, PartialEq)]
pub struct Ensemble {
    /// The split rule of the library the model comes from.
    pub rule: SplitRule,
    /// Number of input features.
    pub num_features: usize,
    /// Number of outputs (1, or the number of classes).
    pub num_groups: usize,
    /// Margin each group starts from.
    pub base_margins: Vec<f64>,
    /// The trees, in the order the library adds them.
    pub trees: Vec<Tree>,
    /// Divide sums by the number of trees per group (LightGBM random-forest mode).
    pub average: bool,
}

/// Rows per evaluation block: the block's features stay in cache across all trees.
pub const BLOCK_ROWS: usize = 64;

/// Rows that walk a tree together (see [`Tree::outputs`]).
const LANES: usize = 8;

impl Ensemble {
    /// Adds the margins of `rows` rows to `out` (row-major, `num_groups` per row), where
    /// `features` is row-major `rows x num_features` with NaN for missing values, already
    /// rounded as the model's library reads them (f32 for XGBoost).
    pub fn margins(&self, features: &[f64], rows: usize, out: &mut [f64]) {
        let width = self.num_features;
        let groups = self.num_groups;
        let mut start = 0;
        while start < rows {
            let block = BLOCK_ROWS.min(rows - start);
            self.margins_block(
                &features[start * width..(start + block) * width],
                block,
                &mut out[start * groups..(start + block) * groups],
            );
            start += block;
        }
    }

    /// [`Ensemble::margins`] for one block: every tree routes every row of the block, so the
    /// block's features stay in cache while the trees stream through.
    fn margins_block(&self, features: &[f64], rows: usize, out: &mut [f64]) {
        let width = self.num_features;
        let groups = self.num_groups;
        match self.rule {
            SplitRule::XgBoost => {
                // f32 accumulation, in tree order, starting from the base margin.
                let mut sums = vec![0_f32; rows * groups];
                for row in 0..rows {
                    for group in 0..groups {
                        sums[row * groups + group] = self.base_margins[group] as f32;
                    }
                }
                let mut values = [0.0; LANES];
                for tree in &self.trees {
                    for first in (0..rows).step_by(LANES) {
                        let lanes = LANES.min(rows - first);
                        tree.outputs(features, width, first, lanes, self.rule, &mut values);
                        for (lane, value) in values.iter().enumerate().take(lanes) {
                            sums[(first + lane) * groups + tree.group] += *value as f32;
                        }
                    }
                }
                for (o, s) in out.iter_mut().zip(sums) {
                    *o = f64::from(s);
                }
            }
            SplitRule::LightGbm => {
                for row in 0..rows {
                    for group in 0..groups {
                        out[row * groups + group] = 0.0;
                    }
                }
                let mut values = [0.0; LANES];
                for tree in &self.trees {
                    for first in (0..rows).step_by(LANES) {
                        let lanes = LANES.min(rows - first);
                        tree.outputs(features, width, first, lanes, self.rule, &mut values);
                        for (lane, value) in values.iter().enumerate().take(lanes) {
                            out[(first + lane) * groups + tree.group] += *value;
                        }
                    }
                }
                if self.average && !self.trees.is_empty() {
                    let per_group = (self.trees.len() / groups.max(1)).max(1) as f64;
                    for value in out.iter_mut().take(rows * groups) {
                        *value /= per_group;
                    }
                }
                for row in 0..rows {
                    for group in 0..groups {
                        out[row * groups + group] += self.base_margins[group];
                    }
                }
            }
        }
    }

    /// Checks the structure: child and feature indices in range, one group per tree, category
    /// sets present. Evaluation relies on it, so every reader calls it.
    pub fn validate(&self) -> Result<(), String> {
        if self.base_margins.len() != self.num_groups || self.num_groups == 0 {
            return Err(format!(
                "{} base margins for {} outputs",
                self.base_margins.len(),
                self.num_groups
            ));
        }
        for (t, tree) in self.trees.iter().enumerate() {
            let leaves = tree.leaves.len();
            if tree.group >= self.num_groups {
                return Err(format!(
                    "tree {t} adds to output {}, of {}",
                    tree.group, self.num_groups
                ));
            }
            if leaves == 0 || (tree.nodes.is_empty() && leaves != 1) {
                return Err(format!(
                    "tree {t} has {leaves} leaves for {} splits",
                    tree.nodes.len()
                ));
            }
            if let Some(linear) = &tree.linear {
                if linear.len() != leaves {
                    return Err(format!(
                        "tree {t} has {} linear leaves for {leaves} leaves",
                        linear.len()
                    ));
                }
                if let Some(bad) = linear
                    .iter()
                    .flat_map(|l| &l.terms)
                    .find(|(f, _)| *f as usize >= self.num_features)
                {
                    return Err(format!("tree {t} has a linear term on feature {}", bad.0));
                }
            }
            for (n, node) in tree.nodes.iter().enumerate() {
                if node.feature as usize >= self.num_features {
                    return Err(format!(
                        "tree {t} node {n} splits on feature {} but the model has {}",
                        node.feature, self.num_features
                    ));
                }
                if let Some(set) = node.categories
                    && set as usize >= tree.category_sets.len()
                {
                    return Err(format!(
                        "tree {t} node {n} refers to a missing category set"
                    ));
                }
            }
            check_reachability(tree).map_err(|e| format!("tree {t}: {e}"))?;
        }
        Ok(())
    }
}

/// Every child index is in range and every node and leaf is reached exactly once from the root,
/// so routing a row always ends at a leaf.
fn check_reachability(tree: &Tree) -> Result<(), String> {
    if tree.nodes.is_empty() {
        return Ok(());
    }
    let mut seen_nodes = vec![false; tree.nodes.len()];
    let mut seen_leaves = vec![false; tree.leaves.len()];
    let mut pending = vec![0_i32];
    while let Some(at) = pending.pop() {
        let seen = if at >= 0 {
            seen_nodes.get_mut(at as usize)
        } else {
            seen_leaves.get_mut(!at as usize)
        };
        match seen {
            None => return Err(format!("child {at} is out of range")),
            Some(true) => return Err(format!("child {at} is reached twice")),
            Some(flag) => *flag = true,
        }
        if at >= 0 {
            let node = &tree.nodes[at as usize];
            pending.extend([node.left, node.right]);
        }
    }
    if seen_nodes.iter().chain(&seen_leaves).any(|s| !s) {
        return Err("some nodes or leaves are not reachable from the root".to_string());
    }
    Ok(())
}

/// Sets bit `category` in `bits`, growing it as needed.
pub fn insert_category(bits: &mut Vec<u32>, category: u32) {
    let word = (category / 32) as usize;
    if bits.len() <= word {
        bits.resize(word + 1, 0);
    }
    bits[word] |= 1 << (category % 32);
}
