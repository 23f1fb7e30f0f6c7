//! D1 access shared by the service glue: the binding and the `JsValue` helpers SQL binds use.

use wasm_bindgen::JsValue;
use worker::{D1Database, Env};

use crate::glue::http::internal;
use crate::http::error::ApiError;

/// D1 binding.
const DB: &str = "DB";

/// The D1 database.
pub(super) fn db(env: &Env) -> Result<D1Database, ApiError> {
    env.d1(DB).map_err(internal)
}

/// A `JsValue` for a whole number bound into SQL.
pub(super) fn num(n: impl Into<f64>) -> JsValue {
    JsValue::from_f64(n.into())
}

/// A `JsValue` for an optional text bound into SQL (`NULL` when absent).
pub(super) fn opt_str(s: Option<&str>) -> JsValue {
    s.map(JsValue::from_str).unwrap_or(JsValue::NULL)
}
