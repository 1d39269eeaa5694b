//! Linear and logistic regression from a small JSON document:
//!
//! ```json
//! {"kind": "logistic", "features": ["age", "tenure_days"],
//!  "coefficients": [0.02, -0.001], "intercept": -1.5,
//!  "feature_means": [41.0, 900.0]}
//! ```
//!
//! The margin is `intercept + sum(coefficient * feature)` in f64; `logistic` turns it into a
//! probability with the sigmoid. `feature_means` is optional (for contributions relative to the
//! mean). A missing (NULL or NaN) feature makes the margin NaN: linear models have no missing-
//! value rule, and scikit-learn refuses NaN inputs.

use serde::Deserialize;

use crate::models::Link;

/// A linear or logistic regression.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearModel {
    /// Feature names, in the order of `coefficients`.
    pub features: Vec<String>,
    /// One per feature.
    pub coefficients: Vec<f64>,
    /// The intercept.
    pub intercept: f64,
    /// Optional feature means.
    pub feature_means: Option<Vec<f64>>,
    /// Identity (linear) or sigmoid (logistic).
    pub link: Link,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinearDoc {
    kind: String,
    features: Vec<String>,
    coefficients: Vec<f64>,
    #[serde(default)]
    intercept: f64,
    #[serde(default)]
    feature_means: Option<Vec<f64>>,
}

/// Reads the JSON document.
pub fn read(text: &str) -> Result<LinearModel, String> {
    let doc: LinearDoc = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let link = match doc.kind.as_str() {
        "linear" => Link::Identity,
        "logistic" => Link::Sigmoid { scale: 1.0 },
        other => return Err(format!("kind '{other}' is not linear or logistic")),
    };
    if doc.features.is_empty() || doc.features.len() != doc.coefficients.len() {
        return Err(format!(
            "{} features for {} coefficients",
            doc.features.len(),
            doc.coefficients.len()
        ));
    }
    if let Some(means) = &doc.feature_means
        && means.len() != doc.features.len()
    {
        return Err(format!(
            "{} feature_means for {} features",
            means.len(),
            doc.features.len()
        ));
    }
    Ok(LinearModel {
        features: doc.features,
        coefficients: doc.coefficients,
        intercept: doc.intercept,
        feature_means: doc.feature_means,
        link,
    })
}

impl LinearModel {
    /// Writes one margin per row into `out`.
    pub fn margins(&self, features: &[f64], rows: usize, out: &mut [f64]) {
        let width = self.coefficients.len();
        for (row, margin) in out.iter_mut().enumerate().take(rows) {
            let x = &features[row * width..(row + 1) * width];
            *margin = self.intercept
                + x.iter()
                    .zip(&self.coefficients)
                    .map(|(x, c)| x * c)
                    .sum::<f64>();
        }
    }
}
