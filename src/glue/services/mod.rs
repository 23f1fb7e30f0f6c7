//! The stateless services: valuation, leads and notifications, over D1 (truth), KV (cache)
//! and the job queue (work after the response). wasm32 only.
//!
//! Every decision is in the pure modules ([`crate::services::valuation`], [`crate::services::leads`],
//! [`crate::services::notify`]); this file reads and writes storage, calls the queue and the ops room,
//! and turns outcomes into HTTP responses.

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::{json as j, Value};
use wasm_bindgen::JsValue;
use worker::{
    event, D1Database, Env, Fetch, Headers, MessageBatch, MessageExt, Method,
    QueueRetryOptionsBuilder, Request, RequestInit, Response,
};

use crate::glue::router::{internal, json, now_ms, room_fetch, setting};
use crate::http::bodies::{self, RoomBroadcast};
use crate::http::error::ApiError;
use crate::http::route::RoomKey;
use crate::metrics::Delta;
use crate::services::leads::{self, Country, Lead, LeadFilter, LeadRow, LeadStatus, Timeline};
use crate::services::notify::{
    self, Action, DeliveryPolicy, Destinations, LeadNotice, Notification, Outcome, PaymentEvent,
};
use crate::services::valuation::{self, Model, PropertyFacts, Sale, MAX_IMPORT_BYTES};

/// D1 binding.
const DB: &str = "DB";
/// KV binding.
const CACHE: &str = "CACHE";
/// How long a cached estimate lives in KV, in seconds.
pub const ESTIMATE_TTL_S: u64 = 3600;

fn db(env: &Env) -> Result<D1Database, ApiError> {
    env.d1(DB).map_err(internal)
}

/// A `JsValue` for a whole number bound into SQL.
fn num(n: impl Into<f64>) -> JsValue {
    JsValue::from_f64(n.into())
}

fn opt_str(s: Option<&str>) -> JsValue {
    s.map(JsValue::from_str).unwrap_or(JsValue::NULL)
}

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
            let rows: Vec<SaleRow> = db
                .prepare(
                    "SELECT price, lotsize, bedrooms, bathrms, stories, driveway, recroom, \
                     fullbase, gashw, airco, garagepl, prefarea FROM sales ORDER BY id",
                )
                .all()
                .await
                .map_err(internal)?
                .results()
                .map_err(internal)?;
            let sales: Vec<Sale> = rows.iter().map(SaleRow::sale).collect();
            let model = Model::fit(&sales).map_err(|e| ApiError::Unavailable {
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
    let body: Value = bodies::parse_json(&req.bytes().await.map_err(internal)?)?;
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
    let declared = req
        .headers()
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_IMPORT_BYTES) {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_IMPORT_BYTES,
        });
    }
    let content_type = req
        .headers()
        .get("Content-Type")
        .ok()
        .flatten()
        .unwrap_or_default();
    let bytes = req.bytes().await.map_err(internal)?;
    if bytes.len() > MAX_IMPORT_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_IMPORT_BYTES,
        });
    }
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

// ---------------------------------------------------------------------------------------------
// Jobs: work done after the response, through the queue.

/// Queue binding.
const JOBS: &str = "JOBS";
/// The room every lead and notification is pushed to, live.
pub const OPS_ROOM: &str = "ops";

/// A background job. Travels as a JSON string (a JS object body would lose its fields).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
enum Job {
    /// Value, score and route a stored lead, then notify.
    Enrich { lead_id: String },
    /// Deliver a notification to its webhook (attempt numbers start at 1).
    Deliver {
        notification_id: String,
        attempt: u32,
    },
}

async fn enqueue(env: &Env, job: &Job, delay_s: u32) -> Result<(), ApiError> {
    let body = serde_json::to_string(job).map_err(internal)?;
    let queue = env.queue(JOBS).map_err(internal)?;
    let msg = worker::MessageBuilder::new(body)
        .delay_seconds(delay_s)
        .build();
    queue.send(msg).await.map_err(internal)
}

/// Pushes an event to the ops room. The key makes a retried job's push a no-op.
async fn push_ops(env: &Env, key: String, event: Value) {
    let b = RoomBroadcast {
        body: event,
        name: Some("roomkeeper".into()),
        idempotency_key: Some(key),
        key_name: Some("system".into()),
    };
    let body = match serde_json::to_string(&b) {
        Ok(b) => b,
        Err(_) => return,
    };
    if let Err(e) = room_fetch(
        env,
        &RoomKey::Named(OPS_ROOM.into()),
        "/__broadcast",
        Some(body),
    )
    .await
    {
        log("ops_push_failed", &e.to_string());
    }
}

/// Adds one to a counter with one label.
async fn metric(env: &Env, name: &str, label: &str, value: &str) {
    crate::glue::ops::add(env, vec![Delta::new(name, &[(label, value)], 1)]).await;
}

fn log(event: &str, detail: &str) {
    worker::console_log!(
        "{}",
        j!({"level": "info", "event": event, "detail": detail})
    );
}

#[event(queue)]
async fn queue(batch: MessageBatch<String>, env: Env, _ctx: worker::Context) -> worker::Result<()> {
    for message in batch.messages()? {
        let outcome = match serde_json::from_str::<Job>(message.body()) {
            Ok(Job::Enrich { lead_id }) => enrich(&env, &lead_id).await,
            Ok(Job::Deliver {
                notification_id,
                attempt,
            }) => deliver(&env, &notification_id, attempt).await,
            Err(e) => {
                // A body no version of this Worker can read is dropped, loudly.
                log("job_unreadable", &e.to_string());
                Ok(())
            }
        };
        match outcome {
            Ok(()) => message.ack(),
            Err(e) => {
                log("job_failed", &e.to_string());
                message.retry_with_options(
                    &QueueRetryOptionsBuilder::new()
                        .with_delay_seconds(2)
                        .build(),
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Leads

/// Default country for national phone numbers: `LEADS_DEFAULT_COUNTRY` (ISO code, default US).
fn default_country(env: &Env) -> Result<&'static Country, ApiError> {
    let iso = setting(env, "LEADS_DEFAULT_COUNTRY").unwrap_or_else(|| "US".into());
    Country::from_iso(&iso).map_err(|e| ApiError::Config {
        message: format!("LEADS_DEFAULT_COUNTRY: {e}"),
    })
}

fn invalid_fields<T: Serialize>(code: &'static str, message: String, fields: &[T]) -> ApiError {
    ApiError::Invalid {
        code,
        message,
        fields: serde_json::to_value(fields).unwrap_or(Value::Null),
    }
}

#[derive(Deserialize)]
struct Found {
    id: String,
}

/// `POST /api/leads`: validate, de-duplicate, store, queue enrichment, answer.
pub(crate) async fn create_lead(
    mut req: Request,
    env: &Env,
    _config: &crate::config::Config,
) -> Result<Response, ApiError> {
    let input = leads::parse_input(&req.bytes().await.map_err(internal)?)?;
    let created = submit_lead(env, input).await?;
    if created.duplicate {
        return json(
            200,
            &j!({"id": created.id, "duplicate": true, "status": "existing"}),
        );
    }
    json(
        201,
        &j!({"id": created.id, "duplicate": false, "status": "new", "enrichment": if created.queued { "queued" } else { "deferred" }}),
    )
}

/// What [`submit_lead`] did with a lead.
pub(crate) struct LeadCreated {
    /// The lead's id (the existing one for a duplicate).
    pub id: String,
    /// Whether an equal lead was already stored within the de-duplication window.
    pub duplicate: bool,
    /// Whether enrichment was queued (false for duplicates and when the queue refused).
    pub queued: bool,
}

/// Lead intake shared by `POST /api/leads` and the chatbot: validate, de-duplicate, store,
/// queue enrichment.
pub(crate) async fn submit_lead(
    env: &Env,
    input: leads::LeadInput,
) -> Result<LeadCreated, ApiError> {
    let country = default_country(env)?;
    let lead = leads::validate(input, country)
        .map_err(|errs| invalid_fields("invalid_lead", leads::describe(&errs), &errs))?;
    if let Some(p) = &lead.property {
        valuation::parse_facts_json(p).map_err(|e| {
            let fields: Vec<Value> = e
                .errors
                .iter()
                .map(|f| j!({"field": format!("property.{}", f.field), "code": f.code, "message": f.message}))
                .collect();
            invalid_fields("invalid_lead", e.to_string(), &fields)
        })?;
    }
    let db = db(env)?;
    let now = now_ms();
    let keys = leads::dedupe_keys(&lead);
    if !keys.is_empty() {
        let marks = vec!["?"; keys.len()].join(", ");
        let mut binds: Vec<JsValue> = keys.iter().map(|k| JsValue::from_str(k)).collect();
        binds.push(num(now.saturating_sub(leads::DEDUPE_WINDOW_MS) as f64));
        let found: Option<Found> = db
            .prepare(format!(
                "SELECT lead_id AS id FROM lead_keys WHERE key IN ({marks}) AND created_at >= ? \
                 ORDER BY created_at DESC LIMIT 1"
            ))
            .bind(&binds)
            .map_err(internal)?
            .first(None)
            .await
            .map_err(internal)?;
        if let Some(f) = found {
            metric(env, "roomkeeper_leads_total", "outcome", "duplicate").await;
            return Ok(LeadCreated {
                id: f.id,
                duplicate: true,
                queued: false,
            });
        }
    }
    let id = format!("ld_{}", &uuid::Uuid::new_v4().simple().to_string()[..20]);
    let mut stmts = vec![db
        .prepare(
            "INSERT INTO leads (id, created_at, updated_at, name, email, phone, address, property, \
             timeline, source, notes, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'new')",
        )
        .bind(&[
            JsValue::from_str(&id),
            num(now as f64),
            num(now as f64),
            JsValue::from_str(&lead.name),
            opt_str(lead.email.as_deref()),
            opt_str(lead.phone.as_deref()),
            JsValue::from_str(lead.address.as_deref().unwrap_or("")),
            opt_str(lead.property.as_ref().map(|p| p.to_string()).as_deref()),
            JsValue::from_str(lead.timeline.map_or("unknown", Timeline::as_str)),
            JsValue::from_str(&lead.source),
            opt_str(lead.notes.as_deref()),
        ])
        .map_err(internal)?];
    for k in &keys {
        stmts.push(
            db.prepare(
                "INSERT OR IGNORE INTO lead_keys (key, lead_id, created_at) VALUES (?, ?, ?)",
            )
            .bind(&[
                JsValue::from_str(k),
                JsValue::from_str(&id),
                num(now as f64),
            ])
            .map_err(internal)?,
        );
    }
    stmts.push(audit_stmt(&db, now, &id, "created", "intake", None)?);
    db.batch(stmts).await.map_err(internal)?;
    // The lead is stored: whatever happens to enrichment now, it is not lost.
    let queued = enqueue(
        env,
        &Job::Enrich {
            lead_id: id.clone(),
        },
        0,
    )
    .await
    .is_ok();
    if !queued {
        log("enrich_enqueue_failed", &id);
    }
    metric(env, "roomkeeper_leads_total", "outcome", "created").await;
    Ok(LeadCreated {
        id,
        duplicate: false,
        queued,
    })
}

fn audit_stmt(
    db: &D1Database,
    now: u64,
    subject: &str,
    action: &str,
    actor: &str,
    detail: Option<&Value>,
) -> Result<worker::D1PreparedStatement, ApiError> {
    db.prepare("INSERT INTO audit (at, subject, action, actor, detail) VALUES (?, ?, ?, ?, ?)")
        .bind(&[
            num(now as f64),
            JsValue::from_str(subject),
            JsValue::from_str(action),
            JsValue::from_str(actor),
            opt_str(detail.map(|d| d.to_string()).as_deref()),
        ])
        .map_err(internal)
}

#[derive(Deserialize)]
struct LeadDbRow {
    id: String,
    created_at: f64,
    name: String,
    email: Option<String>,
    phone: Option<String>,
    address: Option<String>,
    property: Option<String>,
    timeline: String,
    source: String,
    notes: Option<String>,
    status: String,
    score: Option<f64>,
    score_reasons: Option<String>,
    channel: Option<String>,
    estimated_value: Option<f64>,
    valuation: Option<String>,
    enriched_at: Option<f64>,
}

impl LeadDbRow {
    fn lead(&self) -> Lead {
        Lead {
            name: self.name.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            address: self.address.clone().filter(|a| !a.is_empty()),
            property: self
                .property
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok()),
            timeline: Timeline::parse(&self.timeline),
            source: self.source.clone(),
            notes: self.notes.clone(),
        }
    }

    fn row(&self) -> LeadRow {
        LeadRow {
            id: self.id.clone(),
            created_at_ms: self.created_at as u64,
            name: self.name.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            address: self.address.clone().filter(|a| !a.is_empty()),
            timeline: Timeline::parse(&self.timeline),
            source: self.source.clone(),
            score: self.score.unwrap_or(0.0) as u8,
            status: LeadStatus::parse(&self.status).unwrap_or(LeadStatus::New),
            estimated_value: self.estimated_value.map(|v| v as u64),
        }
    }

    fn view(&self) -> Value {
        j!({
            "id": self.id,
            "created_at_ms": self.created_at as u64,
            "name": self.name,
            "email": self.email,
            "phone": self.phone,
            "address": self.address,
            "property": self.property.as_deref().and_then(|p| serde_json::from_str::<Value>(p).ok()),
            "timeline": self.timeline,
            "source": self.source,
            "notes": self.notes,
            "status": self.status,
            "score": self.score.map(|s| s as u64),
            "score_reasons": self.score_reasons.as_deref().and_then(|r| serde_json::from_str::<Value>(r).ok()),
            "channel": self.channel,
            "estimated_value": self.estimated_value.map(|v| v as u64),
            "valuation": self.valuation.as_deref().and_then(|v| serde_json::from_str::<Value>(v).ok()),
            "enriched": self.enriched_at.is_some(),
        })
    }
}

const LEAD_COLUMNS: &str =
    "id, created_at, name, email, phone, address, property, timeline, source, \
     notes, status, score, score_reasons, channel, estimated_value, valuation, enriched_at";

async fn load_lead(db: &D1Database, id: &str) -> Result<Option<LeadDbRow>, ApiError> {
    db.prepare(format!("SELECT {LEAD_COLUMNS} FROM leads WHERE id = ?"))
        .bind(&[JsValue::from_str(id)])
        .map_err(internal)?
        .first(None)
        .await
        .map_err(internal)
}

/// The enrichment job: value (when property facts were given), score, route, notify, push.
async fn enrich(env: &Env, lead_id: &str) -> Result<(), ApiError> {
    let db = db(env)?;
    let Some(row) = load_lead(&db, lead_id).await? else {
        log("enrich_missing_lead", lead_id);
        return Ok(());
    };
    let lead = row.lead();
    let mut valuation_json = None;
    let mut estimated_value = None;
    if let Some(p) = &lead.property {
        match valuation::parse_facts_json(p) {
            Ok(facts) => match estimate(env, &facts).await {
                Ok((est, _)) => {
                    estimated_value = Some(est.value);
                    valuation_json = serde_json::to_string(&est).ok();
                }
                Err(e) => {
                    valuation_json =
                        Some(j!({"error": e.code(), "message": e.to_string()}).to_string())
                }
            },
            Err(e) => valuation_json = Some(j!({"error": e.code()}).to_string()),
        }
    }
    let score = leads::score(
        &lead,
        &leads::ScoreInputs {
            estimated_value,
            mortgage_balance: None,
        },
    );
    let channel = notify::route(score.total);
    let now = now_ms();
    let reasons = serde_json::to_string(&score.reasons).map_err(internal)?;
    db.batch(vec![
        db.prepare(
            "UPDATE leads SET score = ?, score_reasons = ?, channel = ?, estimated_value = ?, \
             valuation = ?, enriched_at = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&[
            num(score.total),
            JsValue::from_str(&reasons),
            JsValue::from_str(channel.as_str()),
            estimated_value
                .map(|v| num(v as f64))
                .unwrap_or(JsValue::NULL),
            opt_str(valuation_json.as_deref()),
            num(now as f64),
            num(now as f64),
            JsValue::from_str(lead_id),
        ])
        .map_err(internal)?,
        audit_stmt(
            &db,
            now,
            lead_id,
            "enriched",
            "enrichment",
            Some(&j!({"score": score.total, "channel": channel.as_str()})),
        )?,
    ])
    .await
    .map_err(internal)?;
    let notice = LeadNotice::new(lead_id, &lead, &score, estimated_value);
    push_ops(
        env,
        format!("lead:{lead_id}"),
        j!({
            "kind": "lead",
            "id": lead_id,
            "name": lead.name,
            "source": lead.source,
            "score": score.total,
            "channel": channel.as_str(),
            "estimated_value": estimated_value,
            "timeline": lead.timeline.map(Timeline::as_str),
        }),
    )
    .await;
    create_notification(env, Notification::for_lead(notice)).await?;
    Ok(())
}

/// `GET /api/leads`: newest first, filtered, with an opaque cursor for the next page.
pub(crate) async fn list_leads(req: Request, env: &Env) -> Result<Response, ApiError> {
    let filter = lead_filter(&req)?;
    let rows = query_leads(env, &filter, filter.limit + 1).await?;
    let more = rows.len() > filter.limit;
    let page: Vec<&LeadDbRow> = rows.iter().take(filter.limit).collect();
    let next = if more {
        page.last().map(|r| leads::Cursor::after(&r.row()).encode())
    } else {
        None
    };
    json(
        200,
        &j!({"leads": page.iter().map(|r| r.view()).collect::<Vec<_>>(), "next_cursor": next}),
    )
}

fn lead_filter(req: &Request) -> Result<LeadFilter, ApiError> {
    let url = req.url().map_err(internal)?;
    LeadFilter::from_query(url.query_pairs())
        .map_err(|errs| invalid_fields("invalid_query", leads::describe(&errs), &errs))
}

async fn query_leads(env: &Env, f: &LeadFilter, limit: usize) -> Result<Vec<LeadDbRow>, ApiError> {
    let mut clauses = Vec::new();
    let mut binds = Vec::new();
    if let Some(s) = f.min_score {
        clauses.push("score >= ?");
        binds.push(num(s));
    }
    if let Some(s) = f.status {
        clauses.push("status = ?");
        binds.push(JsValue::from_str(s.as_str()));
    }
    if let Some(t) = f.since_ms {
        clauses.push("created_at >= ?");
        binds.push(num(t as f64));
    }
    if let Some(t) = f.until_ms {
        clauses.push("created_at < ?");
        binds.push(num(t as f64));
    }
    if let Some(c) = &f.cursor {
        clauses.push("(created_at < ? OR (created_at = ? AND id < ?))");
        binds.push(num(c.created_at_ms as f64));
        binds.push(num(c.created_at_ms as f64));
        binds.push(JsValue::from_str(&c.id));
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    binds.push(num(limit as f64));
    db(env)?
        .prepare(format!(
            "SELECT {LEAD_COLUMNS} FROM leads {filter} ORDER BY created_at DESC, id DESC LIMIT ?"
        ))
        .bind(&binds)
        .map_err(internal)?
        .all()
        .await
        .map_err(internal)?
        .results()
        .map_err(internal)
}

/// Most rows one CSV export returns.
pub const MAX_EXPORT_ROWS: usize = 10_000;

/// `GET /api/leads/export.csv`: the filtered leads as RFC 4180 CSV.
pub(crate) async fn export_leads(req: Request, env: &Env) -> Result<Response, ApiError> {
    let mut filter = lead_filter(&req)?;
    filter.cursor = None;
    let rows = query_leads(env, &filter, MAX_EXPORT_ROWS).await?;
    let csv = leads::to_csv(&rows.iter().map(LeadDbRow::row).collect::<Vec<_>>());
    let headers = Headers::new();
    headers
        .set("Content-Type", "text/csv; charset=utf-8")
        .map_err(internal)?;
    headers
        .set("Content-Disposition", "attachment; filename=\"leads.csv\"")
        .map_err(internal)?;
    Ok(Response::ok(csv).map_err(internal)?.with_headers(headers))
}

#[derive(Deserialize)]
struct AuditRow {
    at: f64,
    action: String,
    actor: String,
    detail: Option<String>,
}

/// `GET /api/leads/:id`: the lead with its audit trail.
pub(crate) async fn get_lead(env: &Env, id: &str) -> Result<Response, ApiError> {
    let db = db(env)?;
    let row = load_lead(&db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("lead_not_found", "no such lead"))?;
    let audit: Vec<AuditRow> = db
        .prepare("SELECT at, action, actor, detail FROM audit WHERE subject = ? ORDER BY id")
        .bind(&[JsValue::from_str(id)])
        .map_err(internal)?
        .all()
        .await
        .map_err(internal)?
        .results()
        .map_err(internal)?;
    let mut v = row.view();
    v["audit"] = audit
        .iter()
        .map(|a| {
            j!({"at": a.at as u64, "action": a.action, "actor": a.actor,
                "detail": a.detail.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok())})
        })
        .collect();
    json(200, &v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeadPatch {
    status: String,
}

/// `PATCH /api/leads/:id` `{"status": …}`: a lifecycle transition, audited.
pub(crate) async fn update_lead(
    mut req: Request,
    env: &Env,
    id: &str,
    key_name: Option<&str>,
) -> Result<Response, ApiError> {
    let patch: LeadPatch = bodies::parse_json(&req.bytes().await.map_err(internal)?)?;
    let to = LeadStatus::parse(&patch.status).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_status",
            format!("unknown status {:?}", patch.status),
        )
    })?;
    let db = db(env)?;
    let row = load_lead(&db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("lead_not_found", "no such lead"))?;
    let from = LeadStatus::parse(&row.status).unwrap_or(LeadStatus::New);
    leads::transition(from, to).map_err(|e| ApiError::conflict(e.code(), e.to_string()))?;
    let now = now_ms();
    let actor = format!("api:{}", key_name.unwrap_or("key"));
    db.batch(vec![
        db.prepare("UPDATE leads SET status = ?, updated_at = ? WHERE id = ? AND status = ?")
            .bind(&[
                JsValue::from_str(to.as_str()),
                num(now as f64),
                JsValue::from_str(id),
                JsValue::from_str(from.as_str()),
            ])
            .map_err(internal)?,
        audit_stmt(
            &db,
            now,
            id,
            "status",
            &actor,
            Some(&j!({"from": from.as_str(), "to": to.as_str()})),
        )?,
    ])
    .await
    .map_err(internal)?;
    get_lead(env, id).await
}

// ---------------------------------------------------------------------------------------------
// Notifications

/// The notification id for an idempotency key: stable, URL-safe, 26 characters.
fn notification_id(key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("n_{hex}")
}

/// Stores a notification (once per idempotency key) and queues its first delivery.
/// Returns its id and whether it was new.
pub(crate) async fn create_notification(
    env: &Env,
    n: Notification,
) -> Result<(String, bool), ApiError> {
    let id = notification_id(&n.idempotency_key());
    let db = db(env)?;
    let now = now_ms();
    let result = db
        .prepare(
            "INSERT OR IGNORE INTO notifications (id, created_at, template, channel, payload, status, attempts) \
             VALUES (?, ?, ?, ?, ?, 'queued', 0)",
        )
        .bind(&[
            JsValue::from_str(&id),
            num(now as f64),
            JsValue::from_str(n.template().name()),
            JsValue::from_str(n.channel().as_str()),
            JsValue::from_str(&n.encode()),
        ])
        .map_err(internal)?
        .run()
        .await
        .map_err(internal)?;
    let inserted = result
        .meta()
        .map_err(internal)?
        .and_then(|m| m.changes)
        .unwrap_or(0)
        > 0;
    if inserted {
        metric(
            env,
            "roomkeeper_notifications_total",
            "template",
            n.template().name(),
        )
        .await;
        enqueue(
            env,
            &Job::Deliver {
                notification_id: id.clone(),
                attempt: 1,
            },
            0,
        )
        .await?;
        push_ops(
            env,
            format!("notification:{id}:queued"),
            j!({"kind": "notification", "id": id, "template": n.template().name(),
                "channel": n.channel().as_str(), "status": "queued"}),
        )
        .await;
    }
    Ok((id, inserted))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyRequest {
    template: String,
    data: Value,
}

/// `POST /api/notify` `{"template", "data"}`: queue a notification (idempotent per subject).
pub(crate) async fn notify(
    mut req: Request,
    env: &Env,
    _key: Option<&str>,
) -> Result<Response, ApiError> {
    let r: NotifyRequest = bodies::parse_json(&req.bytes().await.map_err(internal)?)?;
    let n = Notification::from_parts(&r.template, r.data)
        .map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
    let (id, inserted) = create_notification(env, n).await?;
    json(
        202,
        &j!({"id": id, "duplicate": !inserted, "status": if inserted { "queued" } else { "existing" }}),
    )
}

#[derive(Deserialize)]
struct NotificationRow {
    id: String,
    created_at: f64,
    template: String,
    channel: String,
    payload: String,
    status: String,
    attempts: f64,
    delivered_at: Option<f64>,
    last_error: Option<String>,
}

#[derive(Deserialize, Serialize)]
struct AttemptRow {
    attempt: f64,
    at: f64,
    status: Option<f64>,
    outcome: String,
    error: Option<String>,
}

async fn load_notification(db: &D1Database, id: &str) -> Result<Option<NotificationRow>, ApiError> {
    db.prepare(
        "SELECT id, created_at, template, channel, payload, status, attempts, delivered_at, last_error \
         FROM notifications WHERE id = ?",
    )
    .bind(&[JsValue::from_str(id)])
    .map_err(internal)?
    .first(None)
    .await
    .map_err(internal)
}

/// `GET /api/notify/:id`: status and every attempt.
pub(crate) async fn get_notification(env: &Env, id: &str) -> Result<Response, ApiError> {
    let db = db(env)?;
    let n = load_notification(&db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("notification_not_found", "no such notification"))?;
    let attempts: Vec<AttemptRow> = db
        .prepare("SELECT attempt, at, status, outcome, error FROM notification_attempts WHERE notification_id = ? ORDER BY id")
        .bind(&[JsValue::from_str(id)])
        .map_err(internal)?
        .all()
        .await
        .map_err(internal)?
        .results()
        .map_err(internal)?;
    json(
        200,
        &j!({
            "id": n.id,
            "created_at_ms": n.created_at as u64,
            "template": n.template,
            "channel": n.channel,
            "status": n.status,
            "attempts": n.attempts as u64,
            "delivered_at_ms": n.delivered_at.map(|d| d as u64),
            "last_error": n.last_error,
            "payload": serde_json::from_str::<Value>(&n.payload).unwrap_or(Value::Null),
            "history": attempts.iter().map(|a| j!({
                "attempt": a.attempt as u64, "at_ms": a.at as u64,
                "status": a.status.map(|s| s as u64), "outcome": a.outcome, "error": a.error,
            })).collect::<Vec<_>>(),
        }),
    )
}

/// Delivery policy from `NOTIFY_BACKOFF_BASE_MS`, `NOTIFY_BACKOFF_MAX_MS` and
/// `NOTIFY_MAX_ATTEMPTS` (defaults in [`notify::DeliveryPolicy::DEFAULT`]).
fn delivery_policy(env: &Env) -> DeliveryPolicy {
    let n = |name: &str| setting(env, name).and_then(|v| v.trim().parse::<u64>().ok());
    let d = DeliveryPolicy::DEFAULT;
    DeliveryPolicy {
        base_ms: n("NOTIFY_BACKOFF_BASE_MS").unwrap_or(d.base_ms),
        max_ms: n("NOTIFY_BACKOFF_MAX_MS").unwrap_or(d.max_ms),
        max_attempts: n("NOTIFY_MAX_ATTEMPTS")
            .map(|v| v.clamp(1, 50) as u32)
            .unwrap_or(d.max_attempts),
    }
}

/// The delivery job: one attempt, recorded; then done, a delayed retry, or the dead-letter
/// state.
async fn deliver(env: &Env, id: &str, attempt: u32) -> Result<(), ApiError> {
    let db = db(env)?;
    let Some(row) = load_notification(&db, id).await? else {
        log("deliver_missing", id);
        return Ok(());
    };
    // Delivered or dead already (a duplicate job): never deliver twice.
    let finished = matches!(row.status.as_str(), "delivered" | "dead" | "skipped");
    if finished || (row.attempts as u32) >= attempt {
        return Ok(());
    }
    let n = Notification::decode(row.payload.as_bytes()).map_err(internal)?;
    let destinations = match setting(env, "NOTIFY_DESTINATIONS") {
        Some(cfg) => Destinations::parse(&cfg).map_err(|e| ApiError::Config {
            message: format!("NOTIFY_DESTINATIONS: {e}"),
        })?,
        None => Destinations::parse("{}").map_err(internal)?,
    };
    let now = now_ms();
    let (outcome, status, error) = match destinations.get(n.channel()) {
        None => (
            None,
            None,
            Some("no destination configured for this channel".to_string()),
        ),
        Some(url) => {
            let headers = Headers::new();
            headers
                .set("Content-Type", "application/json")
                .map_err(internal)?;
            headers.set("Idempotency-Key", id).map_err(internal)?;
            let mut init = RequestInit::new();
            init.with_method(Method::Post)
                .with_headers(headers)
                .with_body(Some(JsValue::from_str(&n.render().to_string())));
            let request = Request::new_with_init(url.as_str(), &init).map_err(internal)?;
            match Fetch::Request(request).send().await {
                Ok(resp) => {
                    let code = resp.status_code();
                    let retry_after = resp
                        .headers()
                        .get("Retry-After")
                        .ok()
                        .flatten()
                        .and_then(|h| notify::parse_retry_after(&h));
                    (
                        Some(Outcome::Status {
                            status: code,
                            retry_after_ms: retry_after,
                        }),
                        Some(code),
                        (!(200..300).contains(&code)).then(|| format!("HTTP {code}")),
                    )
                }
                Err(e) => (
                    Some(Outcome::NetworkError),
                    None,
                    Some(format!("network: {e}")),
                ),
            }
        }
    };
    // No destination for the channel is a configuration choice (e.g. local demo: ops room
    // only), not a failure: recorded as `skipped`, never retried.
    let action = outcome.map(|o| delivery_policy(env).next_action(attempt, o));
    let (state, label) = match action {
        None => ("skipped", "no_destination"),
        Some(Action::Done) => ("delivered", "delivered"),
        Some(Action::Retry { .. }) => ("retrying", "failed"),
        Some(Action::DeadLetter { reason }) => ("dead", reason),
    };
    db.batch(vec![
        db.prepare(
            "INSERT INTO notification_attempts (notification_id, attempt, at, status, outcome, error) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&[
            JsValue::from_str(id),
            num(attempt),
            num(now as f64),
            status.map(num).unwrap_or(JsValue::NULL),
            JsValue::from_str(label),
            opt_str(error.as_deref()),
        ])
        .map_err(internal)?,
        db.prepare(
            "UPDATE notifications SET status = ?, attempts = ?, last_error = ?, \
             delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END WHERE id = ?",
        )
        .bind(&[
            JsValue::from_str(state),
            num(attempt),
            opt_str(error.as_deref()),
            JsValue::from_str(state),
            num(now as f64),
            JsValue::from_str(id),
        ])
        .map_err(internal)?,
    ])
    .await
    .map_err(internal)?;
    if let Some(Action::Retry { delay_ms }) = action {
        let delay_s = u32::try_from(delay_ms.div_ceil(1000)).unwrap_or(u32::MAX);
        enqueue(
            env,
            &Job::Deliver {
                notification_id: id.to_string(),
                attempt: attempt + 1,
            },
            delay_s,
        )
        .await?;
    }
    crate::glue::ops::add(
        env,
        vec![Delta::new(
            "roomkeeper_deliveries_total",
            &[("outcome", label)],
            1,
        )],
    )
    .await;
    // A dead delivery is an alert — except for alerts themselves, which would loop.
    if state == "dead" && row.template != "alert" {
        if let Ok(config) = crate::config::Config::from_lookup(|k| setting(env, k)) {
            crate::glue::ops::raise_alert(
                env,
                &config,
                "delivery_dead",
                &format!("delivery-dead:{id}"),
                notify::Severity::Warning,
                format!(
                    "Notification delivery failed: {} to {}",
                    row.template, row.channel
                ),
                Some(format!(
                    "{attempt} attempt(s); last error: {}",
                    error.as_deref().unwrap_or("unknown")
                )),
            )
            .await;
        }
    }
    push_ops(
        env,
        format!("delivery:{id}:{attempt}"),
        j!({"kind": "delivery", "id": id, "template": row.template, "channel": row.channel,
            "attempt": attempt, "status": state, "http_status": status, "error": error}),
    )
    .await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Inbound webhooks

/// `POST /api/webhooks/:source`: verifies the signature (secret per source from
/// `WEBHOOK_SECRETS`, a JSON object), logs every attempt, and turns a verified payment event
/// into a `payment` notification. Bad signatures are logged and refused, never processed.
pub(crate) async fn webhook(
    mut req: Request,
    env: &Env,
    source: &str,
) -> Result<Response, ApiError> {
    let secrets: serde_json::Map<String, Value> = match setting(env, "WEBHOOK_SECRETS") {
        Some(s) => serde_json::from_str(&s).map_err(|_| ApiError::Config {
            message: "WEBHOOK_SECRETS is not a JSON object".into(),
        })?,
        None => serde_json::Map::new(),
    };
    let secret = secrets
        .get(source)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::not_found("unknown_webhook_source", "no webhook source of that name")
        })?
        .to_string();
    let bytes = req.bytes().await.map_err(internal)?;
    if bytes.len() > notify::MAX_EVENT_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: notify::MAX_EVENT_BODY_BYTES,
        });
    }
    let header = |name: &str| req.headers().get(name).ok().flatten().unwrap_or_default();
    let (ts, sig) = (
        header(notify::TIMESTAMP_HEADER),
        header(notify::SIGNATURE_HEADER),
    );
    let db = db(env)?;
    let now = now_ms();
    let record = |verified: bool, event_id: Option<&str>, outcome: &str| {
        db.prepare("INSERT OR IGNORE INTO webhook_events (at, source, event_id, verified, outcome) VALUES (?, ?, ?, ?, ?)")
            .bind(&[
                num(now as f64),
                JsValue::from_str(source),
                opt_str(event_id),
                num(u8::from(verified)),
                JsValue::from_str(outcome),
            ])
            .map_err(internal)
    };
    if let Err(e) = notify::verify_signature(
        secret.as_bytes(),
        &ts,
        &sig,
        &bytes,
        now / 1000,
        notify::DEFAULT_TOLERANCE_S,
    ) {
        record(false, None, e.code())?
            .run()
            .await
            .map_err(internal)?;
        log("webhook_refused", e.code());
        metric(env, "roomkeeper_webhook_events_total", "outcome", e.code()).await;
        return Err(ApiError::unauthorized(e.code(), e.to_string()));
    }
    let event = match PaymentEvent::parse(&bytes) {
        Ok(ev) => ev,
        Err(e) => {
            record(false, None, e.code())?
                .run()
                .await
                .map_err(internal)?;
            return Err(ApiError::unprocessable(e.code(), e.to_string()));
        }
    };
    let fresh = record(true, Some(&event.id), "accepted")?
        .run()
        .await
        .map_err(internal)?
        .meta()
        .map_err(internal)?
        .and_then(|m| m.changes)
        .unwrap_or(0)
        > 0;
    metric(
        env,
        "roomkeeper_webhook_events_total",
        "outcome",
        if fresh { "accepted" } else { "duplicate" },
    )
    .await;
    if !fresh {
        return json(
            200,
            &j!({"accepted": true, "duplicate": true, "event": event.id}),
        );
    }
    let (id, _) = create_notification(env, Notification::Payment(event.clone())).await?;
    json(
        202,
        &j!({"accepted": true, "duplicate": false, "event": event.id, "notification": id}),
    )
}
