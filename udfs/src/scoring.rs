//! `predict('model', f1, f2, ...)` and `predict_margin(...)`: models scored inside the plan.
//!
//! The first argument names a model, resolved by the session's [`ModelResolver`] (a job's
//! inline models, the warehouse's registry). Resolution and the feature check (count, order by
//! name where an argument is a column, numeric types) happen when the query is planned, in
//! [`ScalarUDFImpl::return_field_from_args`], so a mismatch is an error before any row is read.
//! Execution gathers each batch's features into row-major blocks (NULL = missing, as NaN is for
//! the libraries) and scores them with [`crate::models`].
//!
//! Output: one `double` for single-output models (a probability for classifiers, the class index
//! for XGBoost `multi:softmax`); a `list<double>` of per-class values for multiclass models.
//! Linear models give NULL when a feature is NULL.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, ListArray};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use sha2::{Digest, Sha256};

use crate::models::{Link, Model, ModelError, ModelFormat};

/// A model ready to score, with where it came from.
#[derive(Debug)]
pub struct LoadedModel {
    /// Its name.
    pub name: String,
    /// Its registry version, for registered models.
    pub version: Option<u64>,
    /// `sha256:<hex>` of the artifact's bytes.
    pub content_hash: String,
    /// The file format.
    pub format: ModelFormat,
    /// The parsed model, shared by every use of the same bytes in the process.
    pub model: Arc<Model>,
    /// Where the artifact's bytes live (a URL), so another process (a cluster worker) can load
    /// the same model; `None` for models that exist only in this process.
    pub location: Option<String>,
}

impl LoadedModel {
    /// `name@version`, or just the name for a model without a version.
    pub fn display_reference(&self) -> String {
        match self.version {
            Some(version) => format!("{}@{version}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Where `predict` finds the model a query names (`'churn'`, `'churn@3'`, `'churn@production'`).
pub trait ModelResolver: std::fmt::Debug + Send + Sync {
    /// The model `reference` names, or a message saying why there is none. Implementations
    /// must answer the same reference identically for the life of a session, so that planning
    /// and execution agree.
    fn resolve(&self, reference: &str) -> std::result::Result<Arc<LoadedModel>, String>;

    /// Every reference resolved so far, with its model: what a plan that scores with this
    /// resolver is pinned to when it travels to another process.
    fn resolved(&self) -> Vec<(String, Arc<LoadedModel>)> {
        Vec::new()
    }

    /// The pins of every model resolved so far (see [`ModelPin`]); an error names a model that
    /// exists only in this process.
    fn pins(&self) -> std::result::Result<Vec<ModelPin>, String> {
        let mut pins = Vec::new();
        for (reference, model) in self.resolved() {
            let Some(location) = model.location.clone() else {
                return Err(format!(
                    "model '{}' has no location other processes can read",
                    model.display_reference()
                ));
            };
            pins.push(ModelPin {
                reference,
                name: model.name.clone(),
                version: model.version,
                content_hash: model.content_hash.clone(),
                format: model.format.to_string(),
                location,
            });
        }
        pins.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(pins)
    }
}

/// A model a plan is pinned to when it runs in another process (a cluster worker): what the
/// planning session resolved, by location and content hash, never the bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelPin {
    /// How the SQL named it (`churn`, `churn@production`).
    pub reference: String,
    /// The model's name.
    pub name: String,
    /// Its registry version, when it has one.
    pub version: Option<u64>,
    /// `sha256:<hex>` of the artifact the planning session resolved.
    pub content_hash: String,
    /// The file format's name.
    pub format: String,
    /// Where the artifact lives: a URL every process of the cluster can read.
    pub location: String,
}

/// A resolver that knows no model (sessions without a job, e.g. `lakeforge sql`).
#[derive(Debug, Default)]
pub struct NoModels;

impl ModelResolver for NoModels {
    fn resolve(&self, reference: &str) -> std::result::Result<Arc<LoadedModel>, String> {
        Err(format!("no model named '{reference}' is available here"))
    }
}

/// Parses model bytes, reusing the already-parsed model when the same bytes (by SHA-256) were
/// loaded before in this process; returns the model and its `sha256:<hex>` hash.
pub fn parse_model_cached(
    bytes: &[u8],
    format: ModelFormat,
) -> std::result::Result<(Arc<Model>, String), ModelError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Weak<Model>>>> = OnceLock::new();
    let hash = format!("sha256:{:x}", Sha256::digest(bytes));
    let key = format!("{format}:{hash}");
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Ok(map) = cache.lock()
        && let Some(model) = map.get(&key).and_then(Weak::upgrade)
    {
        return Ok((model, hash));
    }
    let model = Arc::new(Model::read(bytes, format)?);
    if let Ok(mut map) = cache.lock() {
        map.retain(|_, weak| weak.strong_count() > 0);
        map.insert(key, Arc::downgrade(&model));
    }
    Ok((model, hash))
}

/// What a scoring function returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Output {
    /// `predict`: the prediction (after the link).
    Prediction,
    /// `predict_margin`: the raw score.
    Margin,
}

/// `predict` or `predict_margin`, bound to a session's resolver.
#[derive(Debug)]
pub struct ScoringFunction {
    output: Output,
    resolver: Arc<dyn ModelResolver>,
    signature: Signature,
}

impl PartialEq for ScoringFunction {
    fn eq(&self, other: &Self) -> bool {
        self.output == other.output && Arc::ptr_eq(&self.resolver, &other.resolver)
    }
}

impl Eq for ScoringFunction {}

impl Hash for ScoringFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.output.hash(state);
    }
}

/// The scoring functions, resolving models through `resolver`.
pub fn scoring_functions(resolver: Arc<dyn ModelResolver>) -> Vec<Arc<ScalarUDF>> {
    [Output::Prediction, Output::Margin]
        .into_iter()
        .map(|output| {
            Arc::new(ScalarUDF::new_from_impl(ScoringFunction {
                output,
                resolver: Arc::clone(&resolver),
                signature: Signature::variadic_any(Volatility::Immutable),
            }))
        })
        .collect()
}

/// The resolver behind a scoring function, and whether it is `predict_margin`; `None` for any
/// other function. Codecs use it to send the models a plan is pinned to.
pub fn scoring_resolver(udf: &ScalarUDF) -> Option<Arc<dyn ModelResolver>> {
    udf.inner()
        .downcast_ref::<ScoringFunction>()
        .map(|f| Arc::clone(&f.resolver))
}

/// The scoring function called `name` (`predict` or `predict_margin`) over `resolver`.
pub fn scoring_function(name: &str, resolver: Arc<dyn ModelResolver>) -> Option<Arc<ScalarUDF>> {
    scoring_functions(resolver)
        .into_iter()
        .find(|f| f.name() == name)
}

/// The names of the scoring functions, for code that looks for them in plans.
pub const SCORING_FUNCTIONS: [&str; 2] = ["predict", "predict_margin"];

impl ScoringFunction {
    fn model_reference<'a>(&self, first: Option<&'a ScalarValue>) -> Result<&'a str> {
        match first {
            Some(
                ScalarValue::Utf8(Some(name))
                | ScalarValue::Utf8View(Some(name))
                | ScalarValue::LargeUtf8(Some(name)),
            ) => Ok(name),
            _ => plan_err!(
                "the first argument of {}() must be a model name in quotes, e.g. {}('churn', age, tenure_days)",
                self.name(),
                self.name()
            ),
        }
    }

    fn resolve(&self, reference: &str) -> Result<Arc<LoadedModel>> {
        self.resolver
            .resolve(reference)
            .map_err(|message| DataFusionError::Plan(format!("{}(): {message}", self.name())))
    }

    /// Multiclass predictions and margins are lists; everything else one double.
    fn returns_list(&self, model: &Model) -> bool {
        model.num_outputs() > 1
            && !(self.output == Output::Prediction && model.link() == Link::ArgMax)
    }
}

impl ScalarUDFImpl for ScoringFunction {
    fn name(&self) -> &str {
        match self.output {
            Output::Prediction => "predict",
            Output::Margin => "predict_margin",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        // Never called: return_field_from_args is implemented.
        Ok(DataType::Float64)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let reference = self.model_reference(args.scalar_arguments.first().copied().flatten())?;
        let loaded = self.resolve(reference)?;
        let model = &loaded.model;
        let expected = model.feature_names();
        let given = &args.arg_fields[1..];
        let shown = loaded.display_reference();
        if given.len() != expected.len() {
            let given_names: Vec<&str> = given.iter().map(|f| f.name().as_str()).collect();
            return plan_err!(
                "model '{shown}' reads {} features ({}), but {}() was given {} ({})",
                expected.len(),
                expected.join(", "),
                self.name(),
                given.len(),
                given_names.join(", ")
            );
        }
        for (position, field) in given.iter().enumerate() {
            let name = field.name();
            if let Some(at) = expected.iter().position(|e| e == name)
                && at != position
            {
                return plan_err!(
                    "model '{shown}' reads feature '{name}' at position {}, but {}() was given it \
                     at position {}; pass the features in the model's order: {}",
                    at + 1,
                    self.name(),
                    position + 1,
                    expected.join(", ")
                );
            }
            let data_type = field.data_type();
            if !(data_type.is_numeric() || matches!(data_type, DataType::Boolean | DataType::Null))
            {
                return plan_err!(
                    "model '{shown}' feature '{}' (argument {}) must be a number, not {data_type} \
                     (categorical features take their integer category codes)",
                    expected[position],
                    position + 2
                );
            }
        }
        let data_type = if self.returns_list(model) {
            DataType::new_list(DataType::Float64, true)
        } else {
            DataType::Float64
        };
        Ok(Arc::new(Field::new(self.name(), data_type, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let reference = match args.args.first() {
            Some(ColumnarValue::Scalar(value)) => self.model_reference(Some(value))?,
            _ => return exec_err!("{}(): the model name must be a constant", self.name()),
        };
        let loaded = self.resolve(reference)?;
        let model = &loaded.model;
        let rows = args.number_rows;
        let width = model.feature_names().len();
        let round_to_f32 = model.reads_f32();
        let mut features = vec![0.0; rows * width];
        let mut any_null = vec![false; rows];
        for (position, argument) in args.args[1..].iter().enumerate() {
            let array = argument.to_array(rows)?;
            let values = cast(&array, &DataType::Float64)?;
            let values = values.as_primitive::<Float64Type>();
            for row in 0..rows {
                let x = if values.is_null(row) {
                    any_null[row] = true;
                    f64::NAN
                } else {
                    let v = values.value(row);
                    if round_to_f32 { f64::from(v as f32) } else { v }
                };
                features[row * width + position] = x;
            }
        }
        let outputs = model.num_outputs();
        let mut scores = vec![0.0; rows * outputs];
        model.margins(&features, rows, &mut scores);
        if self.output == Output::Prediction {
            model.predict_from_margins(&mut scores);
        }
        // Linear models have no missing-value rule: a NULL feature gives a NULL score.
        let nulls = matches!(model.as_ref(), Model::Linear(_))
            .then(|| NullBuffer::from(any_null.iter().map(|n| !n).collect::<Vec<_>>()));
        let result: ArrayRef = if self.returns_list(model) {
            let values = Float64Array::from(scores);
            let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(outputs, rows));
            Arc::new(ListArray::try_new(
                Arc::new(Field::new_list_field(DataType::Float64, true)),
                offsets,
                Arc::new(values),
                nulls,
            )?)
        } else {
            let single: Vec<f64> = if outputs == 1 {
                scores
            } else {
                scores.chunks(outputs).map(|row| row[0]).collect()
            };
            Arc::new(Float64Array::new(ScalarBuffer::from(single), nulls))
        };
        Ok(ColumnarValue::Array(result))
    }
}
