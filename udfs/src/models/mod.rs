//! Models Lakeforge scores natively: XGBoost (JSON, UBJSON) and LightGBM (text) tree
//! ensembles, and linear / logistic regression from a small JSON document.
//!
//! Reading a model validates its structure once (every child and feature index in range, every
//! node reachable once), so evaluation needs no checks per row. Evaluation takes row-major
//! blocks of `f64` features with NaN for missing values ([`Model::margins`]) and turns margins
//! into predictions with the objective's link ([`Model::predict_from_margins`]).

pub mod ensemble;
pub mod lightgbm;
pub mod linear;
pub mod ubjson;
pub mod xgboost;

use std::fmt;
use std::path::Path;

use crate::models::ensemble::{Ensemble, SplitRule};
use crate::models::linear::LinearModel;

/// The file formats a model can be read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelFormat {
    /// XGBoost `save_model("m.json")`.
    XgboostJson,
    /// XGBoost `save_model("m.ubj")`.
    XgboostUbjson,
    /// LightGBM `save_model("m.txt")`.
    LightgbmText,
    /// Lakeforge's linear-model JSON (see [`linear`]).
    Linear,
}

impl ModelFormat {
    /// Every format's name, as accepted by [`ModelFormat::parse`].
    pub const NAMES: [&'static str; 4] = ["xgboost-json", "xgboost-ubj", "lightgbm", "linear"];

    /// The format named `name` (`xgboost-json`, `xgboost-ubj`, `lightgbm`, `linear`).
    pub fn parse(name: &str) -> Option<ModelFormat> {
        Some(match name {
            "xgboost-json" | "xgboost" => ModelFormat::XgboostJson,
            "xgboost-ubj" | "xgboost-ubjson" => ModelFormat::XgboostUbjson,
            "lightgbm" | "lightgbm-text" => ModelFormat::LightgbmText,
            "linear" => ModelFormat::Linear,
            _ => return None,
        })
    }

    /// Guesses the format from the file's extension and first bytes.
    pub fn detect(path: &Path, bytes: &[u8]) -> Option<ModelFormat> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        let text_start = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
        match (extension, text_start) {
            ("ubj", _) => Some(ModelFormat::XgboostUbjson),
            (_, Some(b'{')) => {
                let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
                if head.contains("\"learner\"") {
                    Some(ModelFormat::XgboostJson)
                } else {
                    Some(ModelFormat::Linear)
                }
            }
            (_, Some(b't')) if bytes.starts_with(b"tree") => Some(ModelFormat::LightgbmText),
            _ => None,
        }
    }
}

impl fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelFormat::XgboostJson => "xgboost-json",
            ModelFormat::XgboostUbjson => "xgboost-ubj",
            ModelFormat::LightgbmText => "lightgbm",
            ModelFormat::Linear => "linear",
        })
    }
}

/// What a feature holds, as the model's library declared it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    /// A real number.
    Numeric,
    /// An integer.
    Integer,
    /// An integer category code.
    Categorical,
}

/// How margins become predictions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Link {
    /// The margin is the prediction.
    Identity,
    /// `1 / (1 + exp(-scale * margin))`, per output.
    Sigmoid {
        /// LightGBM's `sigmoid:` parameter (1 elsewhere).
        scale: f64,
    },
    /// Probabilities over the outputs.
    Softmax,
    /// The index of the largest margin (XGBoost `multi:softmax`).
    ArgMax,
    /// `exp(margin)` (Poisson, gamma, Tweedie, Cox).
    Exp,
    /// 1 when the margin is positive, else 0 (XGBoost `binary:hinge`).
    Hinge,
    /// `sign(m) * m^2` (LightGBM regression with `sqrt`).
    SignedSquare,
    /// `log(1 + exp(margin))` (LightGBM `cross_entropy_lambda`).
    Log1pExp,
}

/// A tree ensemble with its link and features.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeModel {
    /// The trees.
    pub ensemble: Ensemble,
    /// Margin to prediction.
    pub link: Link,
    /// The library's objective name.
    pub objective: String,
    /// Feature names, in the order the model reads them.
    pub feature_names: Vec<String>,
    /// Feature kinds, same order.
    pub feature_kinds: Vec<FeatureKind>,
}

/// Why a model could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the {format} model: {message}")]
pub struct ModelError {
    /// The format it was read as.
    pub format: ModelFormat,
    /// What is wrong.
    pub message: String,
}

/// A model ready to score.
#[derive(Debug, Clone, PartialEq)]
pub enum Model {
    /// XGBoost or LightGBM.
    Trees(TreeModel),
    /// Linear or logistic regression.
    Linear(LinearModel),
}

impl Model {
    /// Reads a model file's bytes in `format`.
    pub fn read(bytes: &[u8], format: ModelFormat) -> Result<Model, ModelError> {
        let error = |message: String| ModelError { format, message };
        let text =
            || std::str::from_utf8(bytes).map_err(|_| error("the file is not UTF-8 text".into()));
        match format {
            ModelFormat::XgboostJson => {
                let doc: serde_json::Value = serde_json::from_str(text()?)
                    .map_err(|e| error(format!("invalid JSON: {e}")))?;
                xgboost::read(&doc).map(Model::Trees).map_err(error)
            }
            ModelFormat::XgboostUbjson => {
                let doc =
                    ubjson::decode(bytes).map_err(|e| error(format!("invalid UBJSON: {e}")))?;
                xgboost::read(&doc).map(Model::Trees).map_err(error)
            }
            ModelFormat::LightgbmText => lightgbm::read(text()?).map(Model::Trees).map_err(error),
            ModelFormat::Linear => linear::read(text()?).map(Model::Linear).map_err(error),
        }
    }

    /// Feature names in the order the model reads them.
    pub fn feature_names(&self) -> &[String] {
        match self {
            Model::Trees(t) => &t.feature_names,
            Model::Linear(l) => &l.features,
        }
    }

    /// Feature kinds in the same order.
    pub fn feature_kinds(&self) -> Vec<FeatureKind> {
        match self {
            Model::Trees(t) => t.feature_kinds.clone(),
            Model::Linear(l) => vec![FeatureKind::Numeric; l.features.len()],
        }
    }

    /// Margins per row: 1, or the number of classes.
    pub fn num_outputs(&self) -> usize {
        match self {
            Model::Trees(t) => t.ensemble.num_groups,
            Model::Linear(_) => 1,
        }
    }

    /// How margins become predictions.
    pub fn link(&self) -> Link {
        match self {
            Model::Trees(t) => t.link,
            Model::Linear(l) => l.link,
        }
    }

    /// Whether features are read as f32 (XGBoost), so gathered values must be rounded to f32.
    pub fn reads_f32(&self) -> bool {
        matches!(self, Model::Trees(t) if t.ensemble.rule == SplitRule::XgBoost)
    }

    /// Writes the margins of `rows` rows (row-major features, NaN = missing) into `out`
    /// (row-major, [`Model::num_outputs`] per row).
    pub fn margins(&self, features: &[f64], rows: usize, out: &mut [f64]) {
        match self {
            Model::Trees(t) => t.ensemble.margins(features, rows, out),
            Model::Linear(l) => l.margins(features, rows, out),
        }
    }

    /// Predictions from margins, in place: per row, [`Model::num_outputs`] values (a softmax
    /// over them, or a sigmoid of each), or one class index for [`Link::ArgMax`] (written in the
    /// row's first slot).
    pub fn predict_from_margins(&self, margins: &mut [f64]) {
        let groups = self.num_outputs();
        match self.link() {
            Link::Identity => {}
            Link::Sigmoid { scale } => {
                for m in margins.iter_mut() {
                    *m = 1.0 / (1.0 + (-scale * *m).exp());
                }
            }
            Link::Exp => margins.iter_mut().for_each(|m| *m = m.exp()),
            Link::Hinge => margins
                .iter_mut()
                .for_each(|m| *m = if *m > 0.0 { 1.0 } else { 0.0 }),
            Link::SignedSquare => margins.iter_mut().for_each(|m| *m = m.signum() * *m * *m),
            Link::Log1pExp => margins.iter_mut().for_each(|m| *m = m.exp().ln_1p()),
            Link::Softmax => {
                for row in margins.chunks_mut(groups) {
                    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let mut sum = 0.0;
                    for m in row.iter_mut() {
                        *m = (*m - max).exp();
                        sum += *m;
                    }
                    row.iter_mut().for_each(|m| *m /= sum);
                }
            }
            Link::ArgMax => {
                for row in margins.chunks_mut(groups) {
                    let mut best = 0;
                    for (i, m) in row.iter().enumerate() {
                        if *m > row[best] {
                            best = i;
                        }
                    }
                    row[0] = best as f64;
                }
            }
        }
    }
}

#[cfg(test)]
mod parity {
    //! Every fixture model in `tests/fixtures/models/` (trained by the real libraries with
    //! `make_models.py`) scores its test rows exactly as the library did.

    use std::path::PathBuf;

    use serde_json::Value;

    use super::*;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models")
    }

    /// Scores the fixture's rows with the model at `file`; returns (margins, predictions).
    fn score(expected: &Value, file: &str, format: ModelFormat) -> (Vec<f64>, Vec<f64>) {
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        let model = Model::read(&bytes, format).unwrap_or_else(|e| panic!("{file}: {e}"));
        let names: Vec<String> = expected["feature_names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        assert_eq!(model.feature_names(), names.as_slice(), "{file}");
        let rows = expected["rows"].as_array().unwrap();
        let mut features = Vec::new();
        for row in rows {
            for value in row.as_array().unwrap() {
                let x = value.as_f64().unwrap_or(f64::NAN);
                features.push(if model.reads_f32() {
                    f64::from(x as f32)
                } else {
                    x
                });
            }
        }
        let mut margins = vec![0.0; rows.len() * model.num_outputs()];
        model.margins(&features, rows.len(), &mut margins);
        let mut predictions = margins.clone();
        model.predict_from_margins(&mut predictions);
        (margins, predictions)
    }

    fn flat(values: &Value) -> Vec<f64> {
        values
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|v| match v {
                Value::Array(items) => items.iter().map(|i| i.as_f64().unwrap()).collect(),
                other => vec![other.as_f64().unwrap()],
            })
            .collect()
    }

    fn check(name: &str, margin_tolerance: f64, prediction_tolerance: f64) {
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(format!("{name}.expected.json"))).unwrap(),
        )
        .unwrap();
        let mut files = vec![];
        let model_file = expected["model"].as_str().unwrap().to_string();
        if name.starts_with("xgb") {
            files.push((model_file, ModelFormat::XgboostJson));
            files.push((
                expected["model_ubj"].as_str().unwrap().to_string(),
                ModelFormat::XgboostUbjson,
            ));
        } else {
            files.push((model_file, ModelFormat::LightgbmText));
        }
        let mut expected_margins = flat(&expected["margin"]);
        if name.starts_with("xgb") {
            // XGBoost's margins are f32 values; serde_json's fast float parsing may land one f64
            // ulp away from the printed value, which rounding to f32 undoes exactly.
            expected_margins
                .iter_mut()
                .for_each(|m| *m = f64::from(*m as f32));
        }
        let expected_predictions = flat(&expected["prediction"]);
        for (file, format) in files {
            let (margins, predictions) = score(&expected, &file, format);
            assert_eq!(margins.len(), expected_margins.len(), "{file}");
            for (i, (got, want)) in margins.iter().zip(&expected_margins).enumerate() {
                // Relative to the magnitude above 1: extreme inputs give linear-tree scores of
                // ~1e6, where 1e-12 absolute is below one f64 ulp.
                assert!(
                    (got - want).abs() <= margin_tolerance * want.abs().max(1.0),
                    "{file}: margin {i} is {got}, the library gave {want}"
                );
            }
            let argmax = expected["objective"] == "multi:softmax";
            let outputs = if argmax {
                expected_margins.len() / expected_predictions.len()
            } else {
                1
            };
            for (i, want) in expected_predictions.iter().enumerate() {
                let got = predictions[i * outputs];
                assert!(
                    (got - want).abs() <= prediction_tolerance,
                    "{file}: prediction {i} is {got}, the library gave {want}"
                );
            }
        }
    }

    #[test]
    fn xgboost_margins_are_exact_in_f32_and_probabilities_within_1e_6() {
        for name in [
            "xgb_regression",
            "xgb_binary",
            "xgb_multiclass_softprob",
            "xgb_multiclass_softmax",
            "xgb_categorical",
        ] {
            check(name, 0.0, 1e-6);
        }
    }

    #[test]
    fn lightgbm_raw_scores_within_1e_12_and_probabilities_within_1e_9() {
        for name in [
            "lgb_regression",
            "lgb_binary",
            "lgb_multiclass",
            "lgb_categorical",
            "lgb_missing_none",
            "lgb_missing_zero",
            "lgb_linear_tree",
        ] {
            check(name, 1e-12, 1e-9);
        }
    }
}

#[cfg(test)]
mod bad_files {
    use std::path::PathBuf;

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/models")
                .join(name),
        )
        .unwrap()
    }

    fn error(bytes: &[u8], format: ModelFormat) -> String {
        Model::read(bytes, format).unwrap_err().to_string()
    }

    #[test]
    fn truncated_files_are_refused() {
        for (name, format) in [
            ("xgb_binary.json", ModelFormat::XgboostJson),
            ("xgb_binary.ubj", ModelFormat::XgboostUbjson),
            ("lgb_binary.txt", ModelFormat::LightgbmText),
        ] {
            let bytes = fixture(name);
            let message = error(&bytes[..bytes.len() * 2 / 3], format);
            assert!(
                message.starts_with(&format!("cannot read the {format} model")),
                "{message}"
            );
        }
    }

    #[test]
    fn a_file_in_another_format_is_refused() {
        let message = error(&fixture("lgb_binary.txt"), ModelFormat::XgboostJson);
        assert!(message.contains("invalid JSON"), "{message}");
        let message = error(&fixture("xgb_binary.json"), ModelFormat::LightgbmText);
        assert!(message.contains("not \"tree\""), "{message}");
        assert_eq!(
            ModelFormat::detect(std::path::Path::new("m.txt"), &fixture("lgb_binary.txt")),
            Some(ModelFormat::LightgbmText)
        );
        assert_eq!(
            ModelFormat::detect(std::path::Path::new("m.json"), &fixture("xgb_binary.json")),
            Some(ModelFormat::XgboostJson)
        );
    }

    #[test]
    fn unsupported_objectives_and_broken_trees_are_named() {
        let text = String::from_utf8(fixture("xgb_binary.json")).unwrap();
        let message = error(
            text.replace("binary:logistic", "survival:unknown")
                .as_bytes(),
            ModelFormat::XgboostJson,
        );
        assert!(
            message.contains("objective 'survival:unknown' is not supported"),
            "{message}"
        );
        let text = String::from_utf8(fixture("lgb_binary.txt")).unwrap();
        let message = error(
            text.replacen("objective=binary", "objective=lambdamart_custom", 1)
                .as_bytes(),
            ModelFormat::LightgbmText,
        );
        assert!(
            message.contains("objective 'lambdamart_custom'"),
            "{message}"
        );
        let message = error(
            text.replacen("left_child=", "left_child=0 ", 1).as_bytes(),
            ModelFormat::LightgbmText,
        );
        assert!(message.contains("Tree=0"), "{message}");
        let linear = r#"{"kind": "logistic", "features": ["a", "b"], "coefficients": [1.0]}"#;
        let message = error(linear.as_bytes(), ModelFormat::Linear);
        assert!(
            message.contains("2 features for 1 coefficients"),
            "{message}"
        );
    }

    #[test]
    fn linear_models_score_and_link() {
        let model = Model::read(
            br#"{"kind": "logistic", "features": ["a", "b"], "coefficients": [0.5, -2.0], "intercept": 1.0}"#,
            ModelFormat::Linear,
        )
        .unwrap();
        let mut margins = [0.0; 2];
        model.margins(&[2.0, 1.0, f64::NAN, 0.0], 2, &mut margins);
        assert_eq!(margins[0], 0.0);
        assert!(margins[1].is_nan());
        model.predict_from_margins(&mut margins);
        assert_eq!(margins[0], 0.5);
    }
}
