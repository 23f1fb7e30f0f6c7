//! D1 access for all glue (a leaf): the binding, the `JsValue` helpers SQL binds use, and
//! one way to run a query into typed rows.

use serde::de::DeserializeOwned;
use wasm_bindgen::JsValue;
use worker::{D1Database, Env};

use crate::glue::http::internal;
use crate::http::error::ApiError;

/// D1 binding.
const DB: &str = "DB";

/// The D1 database.
pub(crate) fn db(env: &Env) -> Result<D1Database, ApiError> {
    env.d1(DB).map_err(internal)
}

/// A `JsValue` for a whole number bound into SQL.
pub(crate) fn num(n: impl Into<f64>) -> JsValue {
    JsValue::from_f64(n.into())
}

/// A `JsValue` for an optional text bound into SQL (`NULL` when absent).
pub(crate) fn opt_str(s: Option<&str>) -> JsValue {
    s.map(JsValue::from_str).unwrap_or(JsValue::NULL)
}

/// Runs `sql` with `binds` and reads every row into `T`.
pub(crate) async fn all<T: DeserializeOwned>(
    db: &D1Database,
    sql: &str,
    binds: &[JsValue],
) -> Result<Vec<T>, ApiError> {
    db.prepare(sql)
        .bind(binds)
        .map_err(internal)?
        .all()
        .await
        .map_err(internal)?
        .results()
        .map_err(internal)
}
