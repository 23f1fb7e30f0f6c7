//! Alerts (wasm32 only): notifications of the `alert` template, throttled per kind by the
//! `alerts` rate-limit policy so an incident cannot flood the ops channel; suppressed ones
//! are still counted.

use std::cell::RefCell;

use serde_json::json as j;
use worker::{Context, Env};

use crate::config::Config;
use crate::glue::http::{log, now_ms};
use crate::glue::settings;
use crate::metrics::{self, Delta};
use crate::obs;
use crate::services::notify::{AlertNotice, Notification, Severity};

use super::metrics::add;

thread_local! {
    static REFUSALS: RefCell<metrics::SpikeDetector> = RefCell::new(metrics::SpikeDetector::default());
}

/// Counts a `rate_limited` refusal in this isolate; the one that makes the window's count reach
/// `REFUSAL_ALERT_THRESHOLD` ([`metrics::REFUSAL_ALERT_THRESHOLD`] by default) raises a
/// `refusals_spiking` alert in the background.
pub(crate) fn refusal_spike(env: &Env, ctx: &Context, config: &Config) {
    let threshold = config.refusal_alert_threshold;
    let now = now_ms();
    let fire = REFUSALS.with(|d| {
        d.borrow_mut()
            .record(now, metrics::REFUSAL_SPIKE_WINDOW_MS, threshold)
    });
    if fire {
        let (env, config) = (env.clone(), config.clone());
        ctx.wait_until(async move {
            raise_alert(
                &env,
                &config,
                "refusals_spiking",
                &format!("refusals:{now}"),
                Severity::Warning,
                format!(
                    "{threshold} rate-limit refusals within {} s",
                    metrics::REFUSAL_SPIKE_WINDOW_MS / 1000
                ),
                Some("see roomkeeper_refusals_total{code=\"rate_limited\"}".into()),
            )
            .await;
        });
    }
}

/// Records one provider call (`op`: `transcribe` or `generate`, from the `kind` of session):
/// `roomkeeper_provider_calls_total{kind,op,outcome}` and the time it took in
/// `roomkeeper_provider_latency_ms_total{kind,op}`; a failure also raises a `provider_failing`
/// alert (throttled like every alert). Run it in the background of the event.
pub(crate) async fn provider_call(env: &Env, kind: &str, op: &str, ms: u64, error: Option<String>) {
    let outcome = if error.is_some() { "error" } else { "ok" };
    add(
        env,
        vec![
            Delta::new(
                "roomkeeper_provider_calls_total",
                &[("kind", kind), ("op", op), ("outcome", outcome)],
                1,
            ),
            Delta::new(
                "roomkeeper_provider_latency_ms_total",
                &[("kind", kind), ("op", op)],
                ms as i64,
            ),
        ],
    )
    .await;
    if let Some(e) = error {
        let Ok(config) = settings::config(env) else {
            return;
        };
        raise_alert(
            env,
            &config,
            "provider_failing",
            &format!("provider:{kind}:{op}:{}", now_ms()),
            Severity::Warning,
            format!("AI provider failing: {kind} {op}"),
            Some(e),
        )
        .await;
    }
}

/// Raises an alert of `kind` unless the `alerts` policy says this kind has alerted enough
/// lately; either way it is counted. Returns whether it was sent.
pub(crate) async fn raise_alert(
    env: &Env,
    config: &Config,
    kind: &str,
    id: &str,
    severity: Severity,
    title: String,
    detail: Option<String>,
) -> bool {
    let allowed =
        crate::glue::coordination::enforce(env, config, "alerts", &format!("alert:{kind}"))
            .await
            .is_ok();
    let outcome = if allowed { "sent" } else { "suppressed" };
    add(
        env,
        vec![Delta::new(
            "roomkeeper_alerts_total",
            &[("kind", kind), ("outcome", outcome)],
            1,
        )],
    )
    .await;
    if allowed {
        let notice = AlertNotice {
            id: id.to_string(),
            severity,
            title,
            detail,
        };
        if let Err(e) =
            crate::glue::services::create_notification(env, Notification::Alert(notice)).await
        {
            log(
                obs::Level::Info,
                obs::Level::Error,
                "alert_failed",
                None,
                j!({"kind": kind, "detail": e.log_text()}),
            );
        }
    }
    allowed
}
