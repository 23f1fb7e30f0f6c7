//! Leads over D1: intake (`POST /api/leads`, and the chatbot's [`submit_lead`]), the
//! enrichment job (value, score, route, notify), listing, export, reading and status changes.

use serde::{Deserialize, Serialize};
use serde_json::{json as j, Value};
use wasm_bindgen::JsValue;
use worker::{D1Database, Env, Headers, Request, Response};

use super::jobs::{enqueue, log, metric, push_ops, Job};
use super::notify::create_notification;
use super::valuation::estimate;
use crate::glue::d1::{self, db, num, opt_str};
use crate::glue::http::{internal, json, now_ms, read_body, read_json};
use crate::glue::settings;
use crate::http::error::ApiError;
use crate::services::leads::{self, Country, Lead, LeadFilter, LeadRow, LeadStatus, Timeline};
use crate::services::notify::{self, LeadNotice, Notification};
use crate::services::valuation;

/// Default country for national phone numbers: `LEADS_DEFAULT_COUNTRY`.
fn default_country(env: &Env) -> Result<&'static Country, ApiError> {
    Ok(settings::config(env)?.leads_country)
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
    let input = leads::parse_input(&read_body(&mut req, leads::MAX_LEAD_BODY_BYTES).await?)?;
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

    fn row(&self) -> Result<LeadRow, ApiError> {
        Ok(LeadRow {
            id: self.id.clone(),
            created_at_ms: self.created_at as u64,
            name: self.name.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            address: self.address.clone().filter(|a| !a.is_empty()),
            timeline: Timeline::parse(&self.timeline),
            source: self.source.clone(),
            score: self.score.unwrap_or(0.0) as u8,
            status: stored_status(&self.status)?,
            estimated_value: self.estimated_value.map(|v| v as u64),
        })
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
pub(super) async fn enrich(env: &Env, lead_id: &str) -> Result<(), ApiError> {
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
    let next = match page.last() {
        Some(r) if more => Some(leads::Cursor::after(&r.row()?).encode()),
        _ => None,
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
    let csv = leads::to_csv(
        &rows
            .iter()
            .map(LeadDbRow::row)
            .collect::<Result<Vec<_>, _>>()?,
    );
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
    let audit: Vec<AuditRow> = d1::all(
        &db,
        "SELECT at, action, actor, detail FROM audit WHERE subject = ? ORDER BY id",
        &[JsValue::from_str(id)],
    )
    .await?;
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

/// `PATCH /api/leads/:id` `{"status": …}`: a lifecycle transition, audited. The change is a
/// compare-and-set on the status it was decided from; losing that race (a concurrent change
/// got there first) is a 409 `status_conflict` and writes nothing, audit row included.
pub(crate) async fn update_lead(
    mut req: Request,
    env: &Env,
    id: &str,
    key_name: Option<&str>,
) -> Result<Response, ApiError> {
    let patch: LeadPatch = read_json(&mut req).await?;
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
    let from = stored_status(&row.status)?;
    leads::transition(from, to).map_err(|e| ApiError::conflict(e.code(), e.to_string()))?;
    let now = now_ms();
    let actor = format!("api:{}", key_name.unwrap_or("key"));
    let detail = j!({"from": from.as_str(), "to": to.as_str()}).to_string();
    // One batch (one transaction): the audit row is inserted only if the update just before
    // it changed the row (`changes()`), so a lost race leaves no trace.
    let results = db
        .batch(vec![
            db.prepare("UPDATE leads SET status = ?, updated_at = ? WHERE id = ? AND status = ?")
                .bind(&[
                    JsValue::from_str(to.as_str()),
                    num(now as f64),
                    JsValue::from_str(id),
                    JsValue::from_str(from.as_str()),
                ])
                .map_err(internal)?,
            db.prepare(
                "INSERT INTO audit (at, subject, action, actor, detail) \
                 SELECT ?, ?, 'status', ?, ? WHERE changes() = 1",
            )
            .bind(&[
                num(now as f64),
                JsValue::from_str(id),
                JsValue::from_str(&actor),
                JsValue::from_str(&detail),
            ])
            .map_err(internal)?,
        ])
        .await
        .map_err(internal)?;
    let changed = results
        .first()
        .ok_or(ApiError::Internal)?
        .meta()
        .map_err(internal)?
        .and_then(|m| m.changes)
        .unwrap_or(0);
    leads::settle_status_change(from, to, changed as u64)
        .map_err(|e| ApiError::conflict(e.code(), e.to_string()))?;
    get_lead(env, id).await
}

/// A stored status, or the explicit 409 `unknown_stored_status` (never read as `new`).
fn stored_status(s: &str) -> Result<LeadStatus, ApiError> {
    LeadStatus::from_stored(s).map_err(|e| ApiError::conflict(e.code(), e.to_string()))
}
