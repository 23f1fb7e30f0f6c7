//! The valuation model: hedonic formula, comparables adjustment, calibrated interval, and the
//! guard that refuses to extrapolate.
//!
//! A log estimate is `hedonic(facts) + blend × comparables(facts)` (see [`super::hedonic`] and
//! [`super::comparables`]). The interval is split-conformal in spirit: the model's own
//! leave-one-out log residuals on the training sales are exchangeable with a new sale's, so
//! their empirical quantiles give an interval whose coverage holds without assuming normal
//! errors. Everything is fitted once from the sales and the model is plain data (serde), so
//! the Worker fits on import, caches the model in KV and only runs [`Model::estimate`] per
//! request.

use super::codes;
use super::comparables::{self, Kernel, Tuned};
use super::facts::{fact_specs, validate_sale, PropertyFacts, Sale, ValidationError, N_FACTS};
use super::hedonic::{features, fit_linear, Linear, LinearFit, HUBER_C};
use super::linalg::{mean, mean_abs, median};
use crate::services::fields::FieldError;
use serde::{Deserialize, Serialize};

/// Fewest sales a model is fitted on: a dozen coefficients and the interval's tail quantiles
/// need a few dozen residuals to mean anything.
pub const MIN_FIT_SALES: usize = 30;
/// Most sales a model is fitted on. Tuning the comparables kernel is quadratic in this, and a
/// fit runs inside a request (the import's, or the first estimate's after an import), so it is
/// kept to what fits a Worker's CPU and memory comfortably: a fit on 5,000 sales took about
/// 15 s locally (import included) and the next request
/// found the isolate restarted. A larger sales table is not refused:
/// [`Model::fit_newest`] fits on the newest this many ([`fit_window`]), so imports can never
/// leave estimates without a model.
pub const MAX_FIT_SALES: usize = 1_000;

/// The sales one fit uses out of `sales` (oldest first): the newest [`MAX_FIT_SALES`], in
/// their order. The market moves, so the most recent sales are the best comparables.
pub fn fit_window(sales: &[Sale]) -> &[Sale] {
    &sales[sales.len().saturating_sub(MAX_FIT_SALES)..]
}
/// Default coverage level of the reported interval.
pub const DEFAULT_LEVEL: f64 = 0.8;
/// Relative margin by which a requested lot size may exceed the fitted range: lot size is
/// continuous and enters in logs, so 5% beyond the largest lot seen is a negligible
/// extrapolation. Counts and flags get no margin.
pub const LOTSIZE_MARGIN: f64 = 0.05;
/// Number of comparables reported with an estimate (the adjustment itself uses every sale
/// with its kernel weight).
pub const COMPARABLES_REPORTED: usize = 5;
/// Identifies the algorithm; part of every model version, bump it when the maths changes.
pub const MODEL_FORMAT: &str = "roomkeeper-valuation/1";
/// Candidate ridge penalties on the standardised coefficients, chosen by leave-one-out error.
const RIDGE_GRID: [f64; 6] = [0.0, 1.0, 4.0, 16.0, 64.0, 256.0];

/// Fit options. The defaults are the production model; the switches exist so evaluations
/// can measure what each part contributes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FitConfig {
    /// Coverage level of the interval, in (0, 1).
    pub level: f64,
    /// Huber-weighted hedonic fit (otherwise least squares).
    pub robust: bool,
    /// Comparables adjustment (otherwise the hedonic formula alone).
    pub comparables: bool,
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            level: DEFAULT_LEVEL,
            robust: true,
            comparables: true,
        }
    }
}

/// Why a model could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// Fewer sales than [`MIN_FIT_SALES`].
    #[error("{got} sales given; at least {min} are needed to fit a model")]
    TooFewSales {
        /// Sales given.
        got: usize,
        /// [`MIN_FIT_SALES`].
        min: usize,
    },
    /// More sales than [`MAX_FIT_SALES`].
    #[error("{got} sales given; at most {max} can be fitted")]
    TooManySales {
        /// Sales given.
        got: usize,
        /// [`MAX_FIT_SALES`].
        max: usize,
    },
    /// A sale violates the import bounds.
    #[error("sale {index} is invalid: {error}")]
    InvalidSale {
        /// 0-based position of the sale.
        index: usize,
        /// What is wrong with it.
        error: ValidationError,
    },
    /// A configuration value is out of its domain.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// No linear fit exists for these sales.
    #[error("the sales are degenerate: no linear fit exists")]
    Degenerate,
}

impl FitError {
    /// Stable code from [`super::codes`].
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooFewSales { .. } => codes::TOO_FEW_SALES,
            Self::TooManySales { .. } => codes::TOO_MANY_SALES,
            Self::InvalidSale { .. } => codes::INVALID_SALE,
            Self::InvalidConfig(_) => codes::INVALID_CONFIG,
            Self::Degenerate => codes::DEGENERATE_DATA,
        }
    }
}

/// A similar sale reported with an estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparable {
    /// 0-based position of the sale in the data the model was fitted on.
    pub index: usize,
    /// Its sale price.
    pub price: u64,
    /// Kernel distance to the requested property ([`Kernel::distance`]; 0 = identical facts).
    pub distance: f64,
    /// Its share of the total kernel weight, in [0, 1].
    pub weight: f64,
    /// Its facts.
    pub facts: PropertyFacts,
}

/// A valuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Point estimate of the sale price (the model's median, in whole currency units).
    pub value: u64,
    /// Lower end of the interval.
    pub low: u64,
    /// Upper end of the interval.
    pub high: u64,
    /// Probability the interval is meant to cover the sale price (e.g. 0.8).
    pub level: f64,
    /// The hedonic formula's value before the comparables adjustment.
    pub hedonic_value: u64,
    /// The most similar sales, nearest first.
    pub comparables: Vec<Comparable>,
    /// Version of the model that produced this estimate.
    pub model_version: String,
}

/// What the fit chose and how well it did on its own training sales (leave-one-out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// Number of sales fitted.
    pub sales: usize,
    /// Chosen ridge penalty.
    pub ridge_lambda: f64,
    /// Chosen comparables kernel (blend 0 when comparables are off or did not help).
    pub kernel: Kernel,
    /// Leave-one-out median absolute percentage error of the full model.
    pub loo_mdape: f64,
    /// Leave-one-out mean absolute log error of the full model.
    pub loo_mae_log: f64,
    /// Interval offsets `[low, high]` added to the log estimate.
    pub interval_log: [f64; 2],
    /// In-sample R² of the hedonic formula on log price.
    pub hedonic_r2_log: f64,
}

/// The range of one fact over the fitted sales.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FittedRange {
    /// Field name.
    pub field: &'static str,
    /// Smallest value fitted (flags as 0/1).
    pub min: u64,
    /// Largest value fitted.
    pub max: u64,
}

/// A fitted valuation model; plain data, (de)serialisable for caching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    version: String,
    config: FitConfig,
    linear: Linear,
    kernel: Kernel,
    sales: Vec<Sale>,
    /// Leave-one-out hedonic log residual of each sale, what the comparables lend.
    residuals: Vec<f64>,
    interval: [f64; 2],
    /// `[min, max]` of each fact over the sales, in fact order.
    ranges: Vec<[u64; 2]>,
    diagnostics: Diagnostics,
}

impl Model {
    /// Fits the production model ([`FitConfig::default`]) on `sales`.
    pub fn fit(sales: &[Sale]) -> Result<Model, FitError> {
        Self::fit_with(sales, &FitConfig::default())
    }

    /// Fits the production model on the newest [`MAX_FIT_SALES`] of `sales` (oldest first):
    /// never [`FitError::TooManySales`], however many sales there are.
    pub fn fit_newest(sales: &[Sale]) -> Result<Model, FitError> {
        Self::fit(fit_window(sales))
    }

    /// Fits a model with explicit options.
    pub fn fit_with(sales: &[Sale], config: &FitConfig) -> Result<Model, FitError> {
        if config.level.is_nan() || config.level <= 0.0 || config.level >= 1.0 {
            return Err(FitError::InvalidConfig(format!(
                "level {} is not in (0, 1)",
                config.level
            )));
        }
        if sales.len() < MIN_FIT_SALES {
            return Err(FitError::TooFewSales {
                got: sales.len(),
                min: MIN_FIT_SALES,
            });
        }
        if sales.len() > MAX_FIT_SALES {
            return Err(FitError::TooManySales {
                got: sales.len(),
                max: MAX_FIT_SALES,
            });
        }
        for (index, sale) in sales.iter().enumerate() {
            validate_sale(sale).map_err(|error| FitError::InvalidSale { index, error })?;
        }
        let x: Vec<_> = sales.iter().map(|s| features(&s.facts)).collect();
        let y: Vec<f64> = sales.iter().map(|s| (s.price as f64).ln()).collect();

        let huber = config.robust.then_some(HUBER_C);
        let mut best: Option<(f64, LinearFit)> = None;
        for lambda in RIDGE_GRID {
            let Some(fit) = fit_linear(&x, &y, lambda, huber) else {
                continue;
            };
            let criterion = mean_abs(&fit.loo);
            if best.as_ref().is_none_or(|(c, _)| criterion < *c) {
                best = Some((criterion, fit));
            }
        }
        let (_, fit) = best.ok_or(FitError::Degenerate)?;

        let facts: Vec<PropertyFacts> = sales.iter().map(|s| s.facts).collect();
        let tuned = if config.comparables {
            comparables::tune(&facts, &fit.loo)
        } else {
            Tuned {
                kernel: Kernel::RANKING_ONLY,
                loo_adjustment: vec![0.0; sales.len()],
            }
        };
        let loo: Vec<f64> = fit
            .loo
            .iter()
            .zip(&tuned.loo_adjustment)
            .map(|(r, a)| r - a)
            .collect();
        let interval = conformal_offsets(&loo, config.level);

        let y_mean = mean(&y);
        let total: f64 = y.iter().map(|v| (v - y_mean).powi(2)).sum();
        let residual: f64 = y
            .iter()
            .zip(&fit.fitted)
            .map(|(a, b)| (a - b).powi(2))
            .sum();
        let diagnostics = Diagnostics {
            sales: sales.len(),
            ridge_lambda: fit.linear.lambda,
            kernel: tuned.kernel,
            loo_mdape: median(&loo.iter().map(|e| ape(*e)).collect::<Vec<_>>()),
            loo_mae_log: mean_abs(&loo),
            interval_log: interval,
            hedonic_r2_log: 1.0 - residual / total,
        };
        let ranges = (0..N_FACTS)
            .map(|f| {
                let values = sales.iter().map(|s| s.facts.to_values()[f]);
                [values.clone().min().unwrap_or(0), values.max().unwrap_or(0)]
            })
            .collect();
        Ok(Model {
            version: model_version(sales, config),
            config: *config,
            linear: fit.linear,
            kernel: tuned.kernel,
            sales: sales.to_vec(),
            residuals: fit.loo,
            interval,
            ranges,
            diagnostics,
        })
    }

    /// Deterministic version: a hash of [`MODEL_FORMAT`], the options, the tuning grids and
    /// every sale in order, so it changes whenever the data or the method does.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Coverage level of the intervals this model reports.
    pub fn level(&self) -> f64 {
        self.config.level
    }

    /// The sales the model was fitted on (what [`Comparable::index`] points into).
    pub fn sales(&self) -> &[Sale] {
        &self.sales
    }

    /// What the fit chose and its leave-one-out accuracy.
    pub fn diagnostics(&self) -> &Diagnostics {
        &self.diagnostics
    }

    /// The range of each fact over the fitted sales, which bounds what [`Model::estimate`]
    /// accepts (plus [`LOTSIZE_MARGIN`] on lot size).
    pub fn fitted_ranges(&self) -> Vec<FittedRange> {
        fact_specs()
            .iter()
            .zip(&self.ranges)
            .map(|(spec, [min, max])| FittedRange {
                field: spec.name,
                min: *min,
                max: *max,
            })
            .collect()
    }

    /// Checks that every fact lies within the range the model was fitted on; lists each
    /// offending field with [`codes::OUTSIDE_FITTED_RANGE`].
    pub fn check(&self, facts: &PropertyFacts) -> Result<(), ValidationError> {
        let mut errors = Vec::new();
        for (f, (spec, value)) in fact_specs().iter().zip(facts.to_values()).enumerate() {
            let Some(&[min, max]) = self.ranges.get(f) else {
                errors.push(FieldError::new(
                    spec.name,
                    codes::OUTSIDE_FITTED_RANGE,
                    "no fitted range",
                ));
                continue;
            };
            let inside = if f == 0 {
                let v = value as f64;
                v >= min as f64 * (1.0 - LOTSIZE_MARGIN) && v <= max as f64 * (1.0 + LOTSIZE_MARGIN)
            } else {
                (min..=max).contains(&value)
            };
            if !inside {
                let margin = if f == 0 {
                    format!(" (±{:.0}%)", LOTSIZE_MARGIN * 100.0)
                } else {
                    String::new()
                };
                errors.push(FieldError::new(
                    spec.name,
                    codes::OUTSIDE_FITTED_RANGE,
                    format!("{value} is outside the range the model was fitted on, {min}..={max}{margin}"),
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { errors })
        }
    }

    /// Values a property: refuses (rather than extrapolates) facts outside the fitted range.
    pub fn estimate(&self, facts: &PropertyFacts) -> Result<Estimate, ValidationError> {
        self.check(facts)?;
        let hedonic = self.linear.predict(&features(facts));
        let (shift, weights) =
            comparables::adjustment(&self.kernel, &self.sales, &self.residuals, facts);
        let log_value = hedonic + self.kernel.blend * shift;
        let total: f64 = weights.iter().sum();
        let mut ranked: Vec<(f64, usize)> = self
            .sales
            .iter()
            .enumerate()
            .map(|(i, s)| (self.kernel.distance(facts, &s.facts), i))
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let comparables = ranked
            .into_iter()
            .take(COMPARABLES_REPORTED)
            .map(|(distance, index)| Comparable {
                index,
                price: self.sales[index].price,
                distance,
                weight: if total > 0.0 {
                    weights[index] / total
                } else {
                    0.0
                },
                facts: self.sales[index].facts,
            })
            .collect();
        let money = |log: f64| log.exp().round() as u64;
        Ok(Estimate {
            value: money(log_value),
            low: money(log_value + self.interval[0]),
            high: money(log_value + self.interval[1]),
            level: self.config.level,
            hedonic_value: money(hedonic),
            comparables,
            model_version: self.version.clone(),
        })
    }

    /// Log estimate without the range check: for evaluation, which must score every held-out
    /// sale (the API never extrapolates).
    pub(crate) fn predict_log(&self, facts: &PropertyFacts) -> f64 {
        let hedonic = self.linear.predict(&features(facts));
        let (shift, _) = comparables::adjustment(&self.kernel, &self.sales, &self.residuals, facts);
        hedonic + self.kernel.blend * shift
    }

    /// Interval offsets `[low, high]` in log space.
    pub(crate) fn interval_log(&self) -> [f64; 2] {
        self.interval
    }
}

/// Absolute percentage error of a prediction whose log residual (`ln price − ln estimate`)
/// is `e`: `|estimate − price| / price`.
pub(crate) fn ape(e: f64) -> f64 {
    (1.0 - (-e).exp()).abs()
}

/// Conformal interval offsets from leave-one-out residuals: the ⌊(n+1)α/2⌋-th smallest and
/// the ⌈(n+1)(1−α/2)⌉-th smallest, α = 1 − level, clamped to the sample (with few sales and
/// a high level the interval is then the residual range, slightly under-covering).
fn conformal_offsets(residuals: &[f64], level: f64) -> [f64; 2] {
    let mut sorted = residuals.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return [0.0, 0.0];
    }
    let tail = (1.0 - level) / 2.0;
    // The epsilon keeps (n+1)·α/2 = 10 from flooring to 9 through rounding of 1 − level.
    let low = ((n + 1) as f64 * tail + 1e-9).floor() as usize;
    let high = ((n + 1) as f64 * (1.0 - tail) - 1e-9).ceil() as usize;
    [sorted[low.clamp(1, n) - 1], sorted[high.clamp(1, n) - 1]]
}

fn model_version(sales: &[Sale], config: &FitConfig) -> String {
    let mut hash = Fnv1a::default();
    hash.write(MODEL_FORMAT.as_bytes());
    hash.write_u64(config.level.to_bits());
    hash.write(&[u8::from(config.robust), u8::from(config.comparables)]);
    for g in RIDGE_GRID
        .into_iter()
        .chain(comparables::grids())
        .chain([HUBER_C])
    {
        hash.write_u64(g.to_bits());
    }
    hash.write_u64(sales.len() as u64);
    for sale in sales {
        hash.write_u64(sale.price);
        for v in sale.facts.to_values() {
            hash.write_u64(v);
        }
    }
    format!("rv1-{:016x}", hash.0)
}

/// 64-bit FNV-1a: tiny, deterministic across platforms and builds (unlike `std`'s hasher),
/// and collision-resistant enough to tell data sets apart (not against an adversary).
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.write(&v.to_le_bytes());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::services::valuation::csv::parse_sales_csv;
    use std::sync::OnceLock;

    /// The shipped Windsor sales.
    pub(crate) fn windsor() -> &'static [Sale] {
        static SALES: OnceLock<Vec<Sale>> = OnceLock::new();
        SALES.get_or_init(|| {
            parse_sales_csv(include_str!("../../../data/windsor-housing-1987.csv")).0
        })
    }

    fn model() -> &'static Model {
        static MODEL: OnceLock<Model> = OnceLock::new();
        MODEL.get_or_init(|| Model::fit(windsor()).unwrap())
    }

    /// A typical Windsor house: the first sale's facts.
    fn typical() -> PropertyFacts {
        windsor()[0].facts
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        let hash = |s: &str| {
            let mut h = Fnv1a::default();
            h.write(s.as_bytes());
            h.0
        };
        assert_eq!(hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn estimates_a_typical_house_with_interval_and_comparables() {
        let model = model();
        let estimate = model.estimate(&typical()).unwrap();
        assert!((30_000..=90_000).contains(&estimate.value), "{estimate:?}");
        assert!(
            estimate.low < estimate.value && estimate.value < estimate.high,
            "{estimate:?}"
        );
        assert_eq!(estimate.level, DEFAULT_LEVEL);
        assert_eq!(estimate.model_version, model.version());
        assert_eq!(estimate.comparables.len(), COMPARABLES_REPORTED);
        // The house itself is in the data, so it is its own nearest comparable.
        assert_eq!(estimate.comparables[0].distance, 0.0);
        assert!(estimate.comparables.iter().any(|c| c.index == 0));
        assert!(estimate
            .comparables
            .windows(2)
            .all(|w| w[0].distance <= w[1].distance));
        let weights: f64 = estimate.comparables.iter().map(|c| c.weight).sum();
        assert!(weights > 0.0 && weights <= 1.0 + 1e-12);
        for c in &estimate.comparables {
            assert_eq!(model.sales()[c.index].price, c.price);
        }
    }

    #[test]
    fn estimates_rise_with_what_buyers_pay_for() {
        let model = model();
        let base = PropertyFacts {
            prefarea: false,
            airco: false,
            ..typical()
        };
        let value = |f: PropertyFacts| model.estimate(&f).unwrap().hedonic_value;
        assert!(
            value(PropertyFacts {
                prefarea: true,
                ..base
            }) > value(base)
        );
        assert!(
            value(PropertyFacts {
                airco: true,
                ..base
            }) > value(base)
        );
        assert!(
            value(PropertyFacts {
                lotsize: 9000,
                ..base
            }) > value(base)
        );
    }

    #[test]
    fn diagnostics_describe_a_sensible_fit() {
        let d = model().diagnostics();
        assert_eq!(d.sales, 546);
        assert!(d.hedonic_r2_log > 0.6 && d.hedonic_r2_log < 0.75, "{d:?}");
        assert!(d.loo_mdape > 0.08 && d.loo_mdape < 0.16, "{d:?}");
        assert!(d.interval_log[0] < 0.0 && d.interval_log[1] > 0.0, "{d:?}");
        let ranges = model().fitted_ranges();
        assert_eq!(
            ranges[0],
            FittedRange {
                field: "lotsize",
                min: 1650,
                max: 16200
            }
        );
        assert_eq!(
            ranges[1],
            FittedRange {
                field: "bedrooms",
                min: 1,
                max: 6
            }
        );
    }

    #[test]
    fn refuses_to_extrapolate_and_lists_every_field() {
        let model = model();
        let far = PropertyFacts {
            lotsize: 40_000,
            bedrooms: 9,
            stories: 5,
            ..typical()
        };
        let err = model.estimate(&far).unwrap_err();
        let fields: Vec<_> = err
            .errors
            .iter()
            .map(|e| (e.field.as_str(), e.code))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("lotsize", codes::OUTSIDE_FITTED_RANGE),
                ("bedrooms", codes::OUTSIDE_FITTED_RANGE),
                ("stories", codes::OUTSIDE_FITTED_RANGE),
            ]
        );
        assert_eq!(err.code(), codes::OUTSIDE_FITTED_RANGE);
        assert!(
            err.to_string()
                .contains("bedrooms: 9 is outside the range the model was fitted on, 1..=6"),
            "{err}"
        );
        // Lot size has a small margin; counts have none.
        assert!(model
            .check(&PropertyFacts {
                lotsize: 16_800,
                ..typical()
            })
            .is_ok());
        assert!(model
            .check(&PropertyFacts {
                lotsize: 17_100,
                ..typical()
            })
            .is_err());
        assert!(model
            .check(&PropertyFacts {
                lotsize: 1_570,
                ..typical()
            })
            .is_ok());
        assert!(model
            .check(&PropertyFacts {
                lotsize: 1_560,
                ..typical()
            })
            .is_err());
    }

    #[test]
    fn version_is_deterministic_and_tracks_data_and_options() {
        let sales = &windsor()[..120];
        let a = Model::fit(sales).unwrap();
        let b = Model::fit(sales).unwrap();
        assert_eq!(a.version(), b.version());
        assert!(
            a.version().starts_with("rv1-") && a.version().len() == 20,
            "{}",
            a.version()
        );
        assert!(a == b, "two fits of the same sales differ");
        let mut changed = sales.to_vec();
        changed[7].price += 1;
        assert_ne!(Model::fit(&changed).unwrap().version(), a.version());
        changed = sales.to_vec();
        changed.swap(3, 4);
        assert_ne!(Model::fit(&changed).unwrap().version(), a.version());
        let config = FitConfig {
            level: 0.9,
            ..FitConfig::default()
        };
        assert_ne!(
            Model::fit_with(sales, &config).unwrap().version(),
            a.version()
        );
    }

    /// Equal up to the last bit or two of each float: serde_json without its
    /// `float_roundtrip` feature may parse a float one ulp away from what it printed.
    fn nearly_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) if x.fract() != 0.0 || y.fract() != 0.0 => {
                    (x - y).abs() <= 1e-12 * x.abs().max(1.0)
                }
                _ => x == y,
            },
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| nearly_equal(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| nearly_equal(v, w)))
            }
            _ => a == b,
        }
    }

    #[test]
    fn model_round_trips_through_json() {
        let model = model();
        let text = serde_json::to_string(model).unwrap();
        let back: Model = serde_json::from_str(&text).unwrap();
        let (before, after) = (
            serde_json::to_value(model).unwrap(),
            serde_json::to_value(&back).unwrap(),
        );
        assert!(
            nearly_equal(&before, &after),
            "model changed in a JSON round trip"
        );
        assert_eq!(back.version(), model.version());
        assert_eq!(back.sales(), model.sales());
        let (a, b) = (
            back.estimate(&typical()).unwrap(),
            model.estimate(&typical()).unwrap(),
        );
        assert_eq!((a.value, a.low, a.high), (b.value, b.low, b.high));
        assert!(nearly_equal(
            &serde_json::to_value(&a).unwrap(),
            &serde_json::to_value(&b).unwrap()
        ));
        let estimate = model.estimate(&typical()).unwrap();
        let again: Estimate =
            serde_json::from_str(&serde_json::to_string(&estimate).unwrap()).unwrap();
        assert!(nearly_equal(
            &serde_json::to_value(&again).unwrap(),
            &serde_json::to_value(&estimate).unwrap()
        ));
        assert_eq!(again.model_version, estimate.model_version);
    }

    #[test]
    fn the_fit_window_is_the_newest_max_fit_sales() {
        let sales = windsor();
        assert_eq!(fit_window(sales), sales, "under the cap: every sale");
        // Past the cap (the demo data plus a 4,460-row import): the newest MAX_FIT_SALES.
        let many: Vec<Sale> = sales
            .iter()
            .cycle()
            .take(sales.len() + 4_460)
            .copied()
            .collect();
        let window = fit_window(&many);
        assert_eq!(window.len(), MAX_FIT_SALES);
        assert_eq!(window, &many[many.len() - MAX_FIT_SALES..]);
        assert_eq!(window.last(), many.last());
    }

    #[test]
    fn fit_refuses_bad_inputs() {
        let sales = windsor();
        let err = Model::fit(&sales[..MIN_FIT_SALES - 1]).unwrap_err();
        assert_eq!(
            err,
            FitError::TooFewSales {
                got: MIN_FIT_SALES - 1,
                min: MIN_FIT_SALES
            }
        );
        assert_eq!(err.code(), codes::TOO_FEW_SALES);
        assert!(Model::fit(&sales[..MIN_FIT_SALES]).is_ok());
        let many = vec![sales[0]; MAX_FIT_SALES + 1];
        assert_eq!(Model::fit(&many).unwrap_err().code(), codes::TOO_MANY_SALES);

        let mut bad = sales[..100].to_vec();
        bad[42].price = 0;
        let err = Model::fit(&bad).unwrap_err();
        assert!(
            matches!(err, FitError::InvalidSale { index: 42, .. }),
            "{err:?}"
        );
        assert_eq!(err.code(), codes::INVALID_SALE);
        for level in [0.0, 1.0, f64::NAN] {
            let config = FitConfig {
                level,
                ..FitConfig::default()
            };
            assert_eq!(
                Model::fit_with(sales, &config).unwrap_err().code(),
                codes::INVALID_CONFIG
            );
        }
    }

    #[test]
    fn constant_columns_are_survivable() {
        // Fit on sales none of which has gas hot water: the constant column must not break
        // the fit, and a request for gas hot water must be refused since it was never seen.
        let sales: Vec<Sale> = windsor()
            .iter()
            .filter(|s| !s.facts.gashw)
            .take(100)
            .copied()
            .collect();
        let model = Model::fit(&sales).unwrap();
        let facts = sales[0].facts;
        assert!(model.estimate(&facts).is_ok());
        let err = model
            .estimate(&PropertyFacts {
                gashw: true,
                ..facts
            })
            .unwrap_err();
        assert_eq!(err.errors[0].field, "gashw");
    }

    #[test]
    fn conformal_offsets_pick_the_right_order_statistics() {
        let residuals: Vec<f64> = (1..=99).map(f64::from).collect();
        // n = 99, level 0.8: ⌊100 × 0.1⌋ = 10th and ⌈100 × 0.9⌉ = 90th smallest.
        assert_eq!(conformal_offsets(&residuals, 0.8), [10.0, 90.0]);
        assert_eq!(conformal_offsets(&residuals[..5], 0.99), [1.0, 5.0]);
        assert_eq!(conformal_offsets(&[], 0.8), [0.0, 0.0]);
    }

    #[test]
    fn ape_is_relative_to_the_price() {
        // Estimate 110 for a price of 100: e = ln(100/110).
        assert!((ape((100f64 / 110.0).ln()) - 0.1).abs() < 1e-12);
        assert!((ape((100f64 / 90.0).ln()) - 0.1).abs() < 1e-12);
    }
}
