//! The stable machine-readable codes of every valuation refusal, in one place.
//!
//! Callers (the HTTP edge, import tooling, tests) match on these strings, so they are
//! constants rather than literals scattered through the parsers: renaming one is a breaking
//! change that shows up here.

/// A required field is absent, empty, `null` or `NA`.
pub const MISSING_FIELD: &str = "missing_field";
/// A numeric field is not a finite, non-negative whole number.
pub const INVALID_NUMBER: &str = "invalid_number";
/// A yes/no field holds something other than yes/no, true/false or 1/0.
pub const INVALID_FLAG: &str = "invalid_flag";
/// A value lies outside the import bounds (e.g. [`super::BEDROOMS_RANGE`]).
pub const OUT_OF_RANGE: &str = "out_of_range";
/// A JSON object carries a key that is not a known field (usually a typo).
pub const UNKNOWN_FIELD: &str = "unknown_field";
/// A JSON row or request is not an object.
pub const NOT_AN_OBJECT: &str = "not_an_object";
/// An estimate request's value lies outside the range the model was fitted on; answering
/// would be an extrapolation, so it is refused (HTTP 422).
pub const OUTSIDE_FITTED_RANGE: &str = "outside_fitted_range";
/// The CSV input is empty: there is no header line.
pub const MISSING_HEADER: &str = "missing_header";
/// The CSV header lacks a required column.
pub const MISSING_COLUMN: &str = "missing_column";
/// The CSV header names a column twice.
pub const DUPLICATE_COLUMN: &str = "duplicate_column";
/// The CSV header names a column this importer does not know.
pub const UNKNOWN_COLUMN: &str = "unknown_column";
/// A CSV row has a different number of fields than the header.
pub const WRONG_FIELD_COUNT: &str = "wrong_field_count";
/// A CSV quoted field is never closed, or text follows its closing quote.
pub const BAD_QUOTE: &str = "bad_quote";
/// The CSV has more data rows than [`super::MAX_IMPORT_ROWS`]; later rows are not read.
pub const TOO_MANY_ROWS: &str = "too_many_rows";
/// The CSV text is longer than [`super::MAX_IMPORT_BYTES`]; nothing is read.
pub const TOO_LARGE: &str = "too_large";
/// A fact-level validation failure that mixes several kinds of field error.
pub const INVALID_FACTS: &str = "invalid_facts";
/// Fewer sales than [`super::MIN_FIT_SALES`] were given to fit a model.
pub const TOO_FEW_SALES: &str = "too_few_sales";
/// More sales than [`super::MAX_FIT_SALES`] were given to fit a model.
pub const TOO_MANY_SALES: &str = "too_many_sales";
/// A sale given to fit a model violates the import bounds.
pub const INVALID_SALE: &str = "invalid_sale";
/// A fit or evaluation parameter is out of its domain (interval level, fold count).
pub const INVALID_CONFIG: &str = "invalid_config";
/// The sales are degenerate: no usable linear fit exists (e.g. every column constant).
pub const DEGENERATE_DATA: &str = "degenerate_data";
