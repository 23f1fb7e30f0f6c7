//! Property valuation from comparable sales, for `/api/valuation`.
//!
//! Why a model and not a lookup: a caller asks about a property that was never sold, so the
//! service must generalise from sales that were — and say how sure it is. The model here is
//! what an appraiser does, made explicit and measured: a hedonic formula prices each fact
//! (log price on log lot size, rooms, storeys and amenities, fitted robustly), then the most
//! similar sales adjust it where the formula is systematically off, and an interval calibrated
//! on the model's own out-of-sample errors says how far the price may fall from the estimate.
//! Every hyper-parameter is chosen by leave-one-out error on the training sales only, and
//! [`evaluate`] measures the whole procedure by k-fold cross-validation against the published
//! OLS baseline on the same folds, so claims about accuracy are numbers, not adjectives.
//!
//! The model refuses to extrapolate: facts outside the range it was fitted on are a 422 with
//! every offending field listed, never a silent guess. A fitted [`Model`] is plain data
//! (serde): the Worker fits it when sales are imported, caches it in KV under its
//! [`Model::version`] and runs only [`Model::estimate`] per request; results can be cached
//! under `version + normalised_key(facts)`.
//!
//! # Layout
//!
//! - `facts`: [`PropertyFacts`], [`Sale`], import bounds, and the one validation path shared
//!   by CSV rows, JSON rows and estimate requests.
//! - `csv`: [`parse_sales_csv`], partial imports with per-line [`RowError`]s.
//! - `hedonic`: the robust ridge log-linear fit with closed-form leave-one-out residuals.
//! - `comparables`: the mixed-data kernel over similar sales and its tuning.
//! - `model`: [`Model`] — fit, range guard, estimate, interval, version.
//! - `eval`: [`evaluate`] — cross-validation against the OLS baseline.
//! - `linalg`: Cholesky and small statistics; no linear-algebra dependency, so it runs on
//!   wasm32 unchanged.
//! - [`codes`]: every stable error code.
//!
//! Pure Rust, no I/O, no clock, no threads: randomness enters only as an evaluation seed.

pub mod codes;
mod comparables;
mod csv;
mod eval;
mod facts;
mod hedonic;
mod linalg;
mod model;

pub use crate::services::fields::FieldError;
pub use comparables::Kernel;
pub use csv::{parse_sales_csv, RowError, MAX_IMPORT_BYTES, MAX_IMPORT_ROWS};
pub use eval::{evaluate, evaluate_with, fold_assignment, Evaluation, Scores};
pub use facts::{
    normalised_key, parse_facts_json, validate_sale, validate_sale_json, PropertyFacts, Sale,
    ValidationError, BATHRMS_RANGE, BEDROOMS_RANGE, GARAGEPL_RANGE, LOTSIZE_RANGE, PRICE_RANGE,
    STORIES_RANGE,
};
pub use hedonic::HUBER_C;
pub use model::{
    fit_window, Comparable, Diagnostics, Estimate, FitConfig, FitError, FittedRange, Model,
    COMPARABLES_REPORTED, DEFAULT_LEVEL, LOTSIZE_MARGIN, MAX_FIT_SALES, MIN_FIT_SALES,
    MODEL_FORMAT,
};
