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

/// One tree ([`Tree::default`]: no nodes, no leaves, group 0, for readers to fill in).
#[derive(Debug, Clone, PartialEq, Default)]
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
    /// The trees in the compact layout of the fixed-depth walk, where the model allows it
    /// (numeric XGBoost splits, no linear leaves); built by [`Ensemble::validate`], `None`
    /// before it.
    pub flat: Option<FlatTrees>,
}

/// A node of [`FlatTrees`]: 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FlatNode {
    /// The split threshold, an f32 as XGBoost stores it; NaN for a leaf, so that no value
    /// is below it and a leaf's walk always takes `left + 1`, itself.
    threshold: f32,
    /// Where the feature is in a row of the doubled feature block (see
    /// [`FlatTrees::add_margins`]): its position, plus the row width when a missing value goes
    /// right.
    feature: u32,
    /// The left child, an index into [`FlatTrees::nodes`]; the right child is `left + 1`.
    left: u32,
}

impl FlatNode {
    /// A slot allocated for a child, filled in when the walk reaches it.
    const UNSET: FlatNode = FlatNode {
        threshold: f32::NAN,
        feature: 0,
        left: 0,
    };
}

/// Numeric XGBoost trees laid out for a branch-free walk: every tree's split nodes and leaves
/// in one array of 12-byte nodes, a split node's children next to each other, each leaf a node
/// that leads to itself. A row then takes exactly its tree's depth in steps, whichever leaf it
/// reaches, so the rows of a chunk walk in lock step with no test for having arrived; each step
/// is a load, an f32 comparison and an add. Missing values are handled before the walk: each
/// row is stored twice, once with NaN as -inf (which every finite threshold is above: left) and
/// once with NaN as +inf (right), and a node reads the copy of its default direction. That is
/// XGBoost's rule to the bit: `x < threshold` in f32, NaN to the default child, and infinite
/// values compared as values.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatTrees {
    nodes: Vec<FlatNode>,
    /// Each node's leaf value (0 for split nodes), as the f32 XGBoost adds.
    values: Vec<f32>,
    /// Per tree: its root's index, its depth (steps from the root to its deepest leaf) and its
    /// output group.
    trees: Vec<(u32, u32, u32)>,
    /// Features per row.
    width: usize,
}

impl FlatTrees {
    /// The flat layout of `ensemble`, or `None` when it has splits the walk does not take
    /// (categorical, LightGBM's rule, linear leaves, non-finite thresholds). `ensemble` must
    /// be validated (every node and leaf reachable exactly once, features in range).
    fn of(ensemble: &Ensemble) -> Option<FlatTrees> {
        let walkable = ensemble.rule == SplitRule::XgBoost
            && ensemble.trees.iter().all(|t| {
                t.category_sets.is_empty()
                    && t.linear.is_none()
                    && t.nodes.iter().all(|n| (n.threshold as f32).is_finite())
            });
        let total: usize = ensemble
            .trees
            .iter()
            .map(|t| t.nodes.len() + t.leaves.len())
            .sum();
        let width = ensemble.num_features;
        if !walkable || u32::try_from(total + 1).is_err() || u32::try_from(2 * width).is_err() {
            return None;
        }
        let mut flat = FlatTrees {
            nodes: Vec::with_capacity(total),
            values: Vec::with_capacity(total),
            trees: Vec::with_capacity(ensemble.trees.len()),
            width,
        };
        for tree in &ensemble.trees {
            let root = flat.nodes.len() as u32;
            let depth = flat.add_tree(tree);
            flat.trees.push((root, depth, tree.group as u32));
        }
        Some(flat)
    }

    /// Appends `tree`, breadth first from its root, each split node's children allocated as a
    /// pair; returns its depth.
    fn add_tree(&mut self, tree: &Tree) -> u32 {
        let width = self.width as u32;
        // (the tree's child: a node index or `!leaf`, its flat index, its level)
        let mut pending = std::collections::VecDeque::from([(0_i32, self.nodes.len() as u32, 0)]);
        let mut depth = 0;
        self.nodes.push(FlatNode::UNSET);
        self.values.push(0.0);
        while let Some((child, at, level)) = pending.pop_front() {
            if child < 0 || tree.nodes.is_empty() {
                let leaf = if tree.nodes.is_empty() {
                    0
                } else {
                    !child as usize
                };
                self.nodes[at as usize] = FlatNode {
                    threshold: f32::NAN,
                    feature: 0,
                    // `left + 1` is the leaf itself (wrapping for a single-leaf tree at 0).
                    left: at.wrapping_sub(1),
                };
                self.values[at as usize] = tree.leaves[leaf] as f32;
                depth = depth.max(level);
                continue;
            }
            let node = &tree.nodes[child as usize];
            let left = self.nodes.len() as u32;
            self.nodes[at as usize] = FlatNode {
                threshold: node.threshold as f32,
                feature: node.feature + if node.default_left { 0 } else { width },
                left,
            };
            self.nodes.extend([FlatNode::UNSET; 2]);
            self.values.extend([0.0; 2]);
            pending.push_back((node.left, left, level + 1));
            pending.push_back((node.right, left + 1, level + 1));
        }
        depth
    }

    /// Adds every tree's leaf values for `rows` rows of `features` (row-major, `width` per
    /// row, NaN for missing, already f32 values) to `sums` (`groups` per row), tree by tree.
    fn add_margins(&self, features: &[f64], rows: usize, groups: usize, sums: &mut [f32]) {
        let width = self.width;
        // Each row twice: NaN as -inf, then NaN as +inf (see the type's documentation).
        let mut doubled = Vec::with_capacity(rows * 2 * width);
        for row in features.chunks_exact(width).take(rows) {
            doubled.extend(row.iter().map(|&x| {
                if x.is_nan() {
                    f32::NEG_INFINITY
                } else {
                    x as f32
                }
            }));
            doubled.extend(
                row.iter()
                    .map(|&x| if x.is_nan() { f32::INFINITY } else { x as f32 }),
            );
        }
        let mut base = [0_usize; FLAT_LANES];
        for &(root, depth, group) in &self.trees {
            for first in (0..rows).step_by(FLAT_LANES) {
                let lanes = FLAT_LANES.min(rows - first);
                for (lane, offset) in base.iter_mut().enumerate() {
                    // Lanes past the last row walk the last row again; their leaves are dropped.
                    *offset = (first + lane.min(lanes - 1)) * 2 * width;
                }
                let mut at = [root; FLAT_LANES];
                for _ in 0..depth {
                    for (position, offset) in at.iter_mut().zip(&base) {
                        let node = self.nodes[*position as usize];
                        let x = doubled[offset + node.feature as usize];
                        // `!(x < t)`, not `x >= t`: a leaf's threshold is NaN, and only the
                        // negation is true for it, which keeps the walk on the leaf.
                        #[allow(clippy::neg_cmp_op_on_partial_ord)]
                        let right = !(x < node.threshold);
                        *position = node.left.wrapping_add(u32::from(right));
                    }
                }
                for (lane, position) in at.iter().enumerate().take(lanes) {
                    sums[(first + lane) * groups + group as usize] +=
                        self.values[*position as usize];
                }
            }
        }
    }
}

/// Rows that walk a flat tree together: enough independent loads in flight to hide the
/// latency of each step's node and feature reads.
const FLAT_LANES: usize = 16;

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
                if let Some(flat) = &self.flat {
                    flat.add_margins(features, rows, groups, &mut sums);
                    for (o, s) in out.iter_mut().zip(sums) {
                        *o = f64::from(s);
                    }
                    return;
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
    /// sets present. Evaluation relies on it, so every reader calls it; it then builds the
    /// [`FlatTrees`] layout where the model allows one.
    pub fn validate(&mut self) -> Result<(), String> {
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
        self.flat = FlatTrees::of(self);
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

#[cfg(test)]
mod flat_walk {
    //! The flat walk ([`FlatTrees`]) must give exactly the margins of the general walk (whose
    //! exactness against XGBoost the fixture tests prove) on everything a row can hold: NaN
    //! with either default, infinities, values equal to a threshold; and on every tree shape:
    //! unbalanced, single-leaf, deeper than the block's other trees.

    use super::*;

    /// A small deterministic generator (a test needs no crate for this).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A random tree: each split node is grown further with probability 1/2 to `max_depth`.
    fn random_tree(rng: &mut Lcg, features: u32, max_depth: u32, thresholds: &[f64]) -> Tree {
        let mut tree = Tree::default();
        fn grow(
            tree: &mut Tree,
            rng: &mut Lcg,
            features: u32,
            depth: u32,
            thresholds: &[f64],
        ) -> i32 {
            if depth == 0 || rng.below(4) == 0 {
                tree.leaves.push(rng.below(2001) as f64 / 1000.0 - 1.0);
                return !(tree.leaves.len() as i32 - 1);
            }
            let at = tree.nodes.len();
            tree.nodes.push(Node {
                feature: rng.below(u64::from(features)) as u32,
                threshold: thresholds[rng.below(thresholds.len() as u64) as usize],
                left: 0,
                right: 0,
                default_left: rng.below(2) == 0,
                missing: Missing::NaN,
                categories: None,
            });
            let left = grow(tree, rng, features, depth - 1, thresholds);
            let right = grow(tree, rng, features, depth - 1, thresholds);
            tree.nodes[at].left = left;
            tree.nodes[at].right = right;
            at as i32
        }
        if rng.below(10) == 0 {
            tree.leaves.push(0.25);
        } else {
            grow(&mut tree, rng, features, max_depth, thresholds);
        }
        tree
    }

    #[test]
    fn the_flat_walk_equals_the_general_walk_bit_for_bit() {
        let mut rng = Lcg(42);
        let thresholds = [-1.5, -0.5, 0.0, 0.25, 0.5, 1.0, 3.0];
        let width = 5;
        for groups in [1, 3] {
            let trees: Vec<Tree> = (0..60)
                .map(|t| {
                    let mut tree = random_tree(&mut rng, width as u32, 1 + t % 9, &thresholds);
                    tree.group = t as usize % groups;
                    tree
                })
                .collect();
            let mut ensemble = Ensemble {
                rule: SplitRule::XgBoost,
                num_features: width,
                num_groups: groups,
                base_margins: vec![0.5; groups],
                trees,
                average: false,
                flat: None,
            };
            ensemble.validate().unwrap();
            assert!(ensemble.flat.is_some());
            let general = Ensemble {
                flat: None,
                ..ensemble.clone()
            };
            // Values at, around and away from the thresholds, NaN and both infinities; 203 rows
            // (not a multiple of a block or of the lanes).
            let specials = [
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                0.0,
                -0.0,
                0.5,
                0.499_999_99,
                1.0,
                -1.5,
                7.0,
            ];
            let rows = 203;
            let features: Vec<f64> = (0..rows * width)
                .map(|_| {
                    let x = specials[rng.below(specials.len() as u64) as usize];
                    f64::from(x as f32)
                })
                .collect();
            let mut flat_margins = vec![0.0; rows * groups];
            let mut general_margins = vec![0.0; rows * groups];
            ensemble.margins(&features, rows, &mut flat_margins);
            general.margins(&features, rows, &mut general_margins);
            for (i, (a, b)) in flat_margins.iter().zip(&general_margins).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "margin {i}: {a} against {b}");
            }
        }
    }

    #[test]
    fn models_the_flat_walk_cannot_take_keep_the_general_walk() {
        let mut rng = Lcg(7);
        let tree = random_tree(&mut rng, 3, 4, &[0.0, 1.0]);
        let ensemble = |rule, tree: Tree| Ensemble {
            rule,
            num_features: 3,
            num_groups: 1,
            base_margins: vec![0.0],
            trees: vec![tree],
            average: false,
            flat: None,
        };
        let mut lightgbm = ensemble(SplitRule::LightGbm, tree.clone());
        lightgbm.validate().unwrap();
        assert!(lightgbm.flat.is_none());
        let mut categorical = tree.clone();
        if let Some(node) = categorical.nodes.first_mut() {
            categorical.category_sets.push(vec![0b101]);
            node.categories = Some(0);
        }
        let mut categorical = ensemble(SplitRule::XgBoost, categorical);
        categorical.validate().unwrap();
        assert!(categorical.flat.is_none());
    }
}
