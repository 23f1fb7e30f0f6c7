//! Valuation over D1 and KV: the per-isolate fitted model keyed by the sales fingerprint,
//! `POST /api/valuation` and the sales import.

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::{json as j, Value};
use worker::{D1Database, Env, Request, Response};

use crate::glue::d1::{db, num};
use crate::glue::http::{internal, json, now_ms, read_body, read_json};
use crate::http::error::ApiError;
use crate::services::valuation::{self, Model, PropertyFacts, Sale, MAX_IMPORT_BYTES};

/// KV binding.
const CACHE: &str = "CACHE";
/// How long a cached estimate lives in KV, in seconds.
pub const ESTIMATE_TTL_S: u64 = 3600;

thread_local! {
    /// The fitted model for the sales fingerprint it was fitted on, kept per isolate so an
    /// estimate costs one small D1 query, not a fit or a 100 KB KV read.
    static MODEL: RefCell<Option<(String, Rc<Model>)>> = const { RefCell::new(None) };
}

#[derive(Deserialize)]
struct Fingerprint {
    n: f64,
    m: Option<f64>,
}

#[derive(Deserialize)]
struct SaleRow {
    price: f64,
    lotsize: f64,
    bedrooms: f64,
    bathrms: f64,
    stories: f64,
    driveway: f64,
    recroom: f64,
    fullbase: f64,
    gashw: f64,
    airco: f64,
    garagepl: f64,
    prefarea: f64,
}

impl SaleRow {
    fn sale(&self) -> Sale {
        Sale {
            price: self.price as u64,
            facts: PropertyFacts {
                lotsize: self.lotsize as u32,
                bedrooms: self.bedrooms as u8,
                bathrms: self.bathrms as u8,
                stories: self.stories as u8,
                driveway: self.driveway != 0.0,
                recroom: self.recroom != 0.0,
                fullbase: self.fullbase != 0.0,
                gashw: self.gashw != 0.0,
                airco: self.airco != 0.0,
                garagepl: self.garagepl as u8,
                prefarea: self.prefarea != 0.0,
            },
        }
    }
}

/// The sales table's fingerprint: sales are only ever inserted, so count and largest id
/// change exactly when the data does.
async fn sales_fingerprint(db: &D1Database) -> Result<String, ApiError> {
    let fp: Option<Fingerprint> = db
        .prepare("SELECT COUNT(*) AS n, MAX(id) AS m FROM sales")
        .first(None)
        .await
        .map_err(internal)?;
    let fp = fp.ok_or(ApiError::Internal)?;
    Ok(format!("{}:{}", fp.n as u64, fp.m.unwrap_or(0.0) as u64))
}

/// The model for the current sales: from this isolate, else KV, else fitted from D1 (and
/// stored in KV for the other isolates).
pub(crate) async fn current_model(env: &Env) -> Result<Rc<Model>, ApiError> {
    let db = db(env)?;
    let fp = sales_fingerprint(&db).await?;
    if let Some(m) = MODEL.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(f, _)| *f == fp)
            .map(|(_, m)| Rc::clone(m))
    }) {
        return Ok(m);
    }
    let kv = env.kv(CACHE).map_err(internal)?;
    let key = format!("valuation:model:{fp}");
    let cached: Option<Model> = kv.get(&key).json().await.ok().flatten();
    let model = match cached {
        Some(m) => m,
        None => {
            // Only the newest sales one fit may use are read (the fit window), so a table of
            // any size can be valued.
            let rows: Vec<SaleRow> = db
                .prepare(
                    "SELECT price, lotsize, bedrooms, bathrms, stories, driveway, recroom, \
                     fullbase, gashw, airco, garagepl, prefarea FROM sales \
                     ORDER BY id DESC LIMIT ?",
                )
                .bind(&[num(valuation::MAX_FIT_SALES as f64)])
                .map_err(internal)?
                .all()
                .await
                .map_err(internal)?
                .results()
                .map_err(internal)?;
            let sales: Vec<Sale> = rows.iter().rev().map(SaleRow::sale).collect();
            let model = Model::fit_newest(&sales).map_err(|e| ApiError::Unavailable {
                message: format!("no valuation model: {e} ({})", e.code()),
            })?;
            if let Ok(text) = serde_json::to_string(&model) {
                if let Ok(put) = kv.put(&key, text) {
                    let _ = put.execute().await;
                }
            }
            model
        }
    };
    let model = Rc::new(model);
    MODEL.with(|c| *c.borrow_mut() = Some((fp, Rc::clone(&model))));
    Ok(model)
}

fn invalid_facts(e: valuation::ValidationError) -> ApiError {
    ApiError::Invalid {
        code: e.code(),
        message: e.to_string(),
        fields: serde_json::to_value(&e.errors).unwrap_or(Value::Null),
    }
}

/// Values property facts with the current model; `None` when the facts are outside what the
/// model can answer (the caller decides whether that is an error).
pub(crate) async fn estimate(
    env: &Env,
    facts: &PropertyFacts,
) -> Result<(valuation::Estimate, bool), ApiError> {
    let model = current_model(env).await?;
    let kv = env.kv(CACHE).map_err(internal)?;
    let key = format!(
        "valuation:estimate:{}:{}",
        model.version(),
        valuation::normalised_key(facts)
    );
    if let Ok(Some(hit)) = kv.get(&key).json::<valuation::Estimate>().await {
        return Ok((hit, true));
    }
    let est = model.estimate(facts).map_err(invalid_facts)?;
    if let Ok(text) = serde_json::to_string(&est) {
        if let Ok(put) = kv.put(&key, text) {
            let _ = put.expiration_ttl(ESTIMATE_TTL_S).execute().await;
        }
    }
    Ok((est, false))
}

/// `POST /api/valuation`: property facts in, an estimate with an interval and comparables out.
pub(crate) async fn valuation(mut req: Request, env: &Env) -> Result<Response, ApiError> {
    let body: Value = read_json(&mut req).await?;
    let facts = valuation::parse_facts_json(&body).map_err(invalid_facts)?;
    let (est, cached) = estimate(env, &facts).await?;
    let mut v = serde_json::to_value(&est).map_err(internal)?;
    v["cached"] = Value::Bool(cached);
    json(200, &v)
}

#[derive(Serialize)]
struct RowIssue {
    line: usize,
    code: &'static str,
    message: String,
}

/// `POST /api/valuation/sales`: imports comparable sales as CSV (`Content-Type: text/csv`) or a
/// JSON array of flat rows. Good rows are stored, bad rows reported by line (CSV) or by
/// 1-based position (JSON); the model refits on the next estimate (and right away here).
pub(crate) async fn import_sales(mut req: Request, env: &Env) -> Result<Response, ApiError> {
    let content_type = req
        .headers()
        .get("Content-Type")
        .ok()
        .flatten()
        .unwrap_or_default();
    let bytes = read_body(&mut req, MAX_IMPORT_BYTES).await?;
    let (sales, issues): (Vec<Sale>, Vec<RowIssue>) = if content_type.starts_with("text/csv") {
        let text = String::from_utf8(bytes)
            .map_err(|_| ApiError::bad_request("invalid_csv", "the CSV is not UTF-8"))?;
        let (sales, errors) = valuation::parse_sales_csv(&text);
        let issues = errors
            .into_iter()
            .map(|e| RowIssue {
                line: e.line,
                code: e.code,
                message: e.message,
            })
            .collect();
        (sales, issues)
    } else {
        let rows: Vec<Value> = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("expected a JSON array of sales: {e}"),
            )
        })?;
        if rows.len() > valuation::MAX_IMPORT_ROWS {
            return Err(ApiError::unprocessable(
                "too_many_rows",
                format!("at most {} rows per import", valuation::MAX_IMPORT_ROWS),
            ));
        }
        let mut sales = Vec::new();
        let mut issues = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            match valuation::validate_sale_json(row) {
                Ok(s) => sales.push(s),
                Err(e) => issues.push(RowIssue {
                    line: i + 1,
                    code: e.code(),
                    message: e.to_string(),
                }),
            }
        }
        (sales, issues)
    };
    if sales.is_empty() {
        return Err(ApiError::Invalid {
            code: "no_valid_rows",
            message: format!("no row could be imported ({} refused)", issues.len()),
            fields: serde_json::to_value(&issues).map_err(internal)?,
        });
    }
    let db = db(env)?;
    let now = now_ms();
    let stmts = sales
        .iter()
        .map(|s| {
            let f = &s.facts;
            db.prepare(
                "INSERT INTO sales (price, lotsize, bedrooms, bathrms, stories, driveway, recroom, \
                 fullbase, gashw, airco, garagepl, prefarea, source, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'import', ?)",
            )
            .bind(&[
                num(s.price as f64),
                num(f.lotsize),
                num(f.bedrooms),
                num(f.bathrms),
                num(f.stories),
                num(u8::from(f.driveway)),
                num(u8::from(f.recroom)),
                num(u8::from(f.fullbase)),
                num(u8::from(f.gashw)),
                num(u8::from(f.airco)),
                num(f.garagepl),
                num(u8::from(f.prefarea)),
                num(now as f64),
            ])
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(internal)?;
    db.batch(stmts).await.map_err(internal)?;
    let model = current_model(env).await?;
    json(
        200,
        &j!({
            "imported": sales.len(),
            "refused": issues,
            "model_version": model.version(),
            "sales": model.diagnostics().sales,
        }),
    )
}
