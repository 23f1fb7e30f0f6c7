//! Metrics: named counters with labels, rendered as Prometheus text or JSON.
//!
//! Counters are kept where things happen and summed in one `Metrics` Durable Object: the
//! router adds a request's counters after answering (`wait_until`), services add theirs as
//! they act, rooms add connection events (per-room message figures stay in the room and are
//! shown by `GET /api/rooms/:room`). The object stores one row per (name, labels). This module
//! is the pure part: the delta batches, label encoding, alert throttling and the renderers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every metric this service exports, with its help text, so the exposition is documented.
pub const METRICS: &[(&str, &str)] = &[
    (
        "roomkeeper_requests_total",
        "HTTP requests by route and status",
    ),
    (
        "roomkeeper_refusals_total",
        "Requests refused, by error code",
    ),
    (
        "roomkeeper_ws_connections_opened_total",
        "WebSocket connections accepted, by kind",
    ),
    (
        "roomkeeper_ws_connections_closed_total",
        "WebSocket connections closed, by kind and close code class",
    ),
    (
        "roomkeeper_recoveries_total",
        "Rejoins with `since`, by outcome (recovered or reloaded)",
    ),
    (
        "roomkeeper_room_unreadable_rows_total",
        "Stored room messages skipped by history reads because they could not be decoded",
    ),
    (
        "roomkeeper_object_schema_runs_total",
        "Times an object ran its storage schema statements, by store (about once per object start)",
    ),
    (
        "roomkeeper_pusher_webhooks_total",
        "Pusher webhook delivery attempts, by outcome",
    ),
    (
        "roomkeeper_leads_total",
        "Leads taken in, by outcome (created or duplicate)",
    ),
    (
        "roomkeeper_notifications_total",
        "Notifications created, by template",
    ),
    (
        "roomkeeper_deliveries_total",
        "Webhook delivery attempts, by outcome",
    ),
    (
        "roomkeeper_alerts_total",
        "Alerts raised, by kind and whether sent or suppressed",
    ),
    (
        "roomkeeper_webhook_events_total",
        "Inbound webhook events, by outcome",
    ),
    (
        "roomkeeper_provider_calls_total",
        "AI provider calls, by session kind, operation and outcome",
    ),
    (
        "roomkeeper_provider_latency_ms_total",
        "Time spent in AI provider calls, ms, by session kind and operation (divide by the calls for the mean)",
    ),
    (
        "roomkeeper_voice_audio_ms_total",
        "Audio received by voice sessions, ms (as charged to the users' quotas)",
    ),
    (
        "roomkeeper_voice_tokens_total",
        "Reply tokens generated for voice sessions",
    ),
    (
        "roomkeeper_voice_utterances_total",
        "Utterances segmented by voice sessions, by whether they were transcribed",
    ),
    (
        "roomkeeper_chat_messages_total",
        "Chat messages answered",
    ),
    (
        ROOM_MESSAGES,
        "Messages stored by rooms (duplicates excluded)",
    ),
    (
        ROOM_DUPLICATES,
        "Room publishes answered as duplicates",
    ),
    (
        ROOM_DELIVERIES,
        "Room messages sent, one per message per receiving connection",
    ),
    (
        ROOM_BYTES_IN,
        "Bytes of WebSocket frames received by rooms",
    ),
    (
        ROOM_REFUSALS,
        "Room frames refused with an error frame, by code",
    ),
];

/// Histograms this service exports, with their help text: each is the counters
/// `{name}_bucket{le}` (cumulative), `{name}_sum` and `{name}_count` ([`observe`]).
pub const HISTOGRAMS: &[(&str, &str)] = &[(
    VOICE_STAGE_MS,
    "Voice turn stages, ms from the end of the user's speech (or a typed turn), by stage: \
     transcript, first_token, reply, first_audio (voice to voice) and synthesis (the speech \
     provider's time)",
)];

/// Prometheus name: [`HISTOGRAMS`] of voice turn stages.
pub const VOICE_STAGE_MS: &str = "roomkeeper_voice_stage_ms";

/// Bucket bounds of [`VOICE_STAGE_MS`], ms (and `+Inf`).
pub const STAGE_BUCKETS_MS: &[u64] = &[
    50, 100, 200, 300, 500, 800, 1000, 1500, 2000, 3000, 5000, 10000,
];

/// The counter deltas that record one observation of `value` in histogram `name`.
pub fn observe(name: &str, labels: &[(&str, &str)], value: u64, buckets: &[u64]) -> Vec<Delta> {
    let bucket = format!("{name}_bucket");
    let with_le = |le: &str| {
        let mut l = labels.to_vec();
        l.push(("le", le));
        Delta::new(&bucket, &l, 1)
    };
    let mut out: Vec<Delta> = buckets
        .iter()
        .filter(|b| value <= **b)
        .map(|b| with_le(&b.to_string()))
        .collect();
    out.push(with_le("+Inf"));
    out.push(Delta::new(&format!("{name}_sum"), labels, value as i64));
    out.push(Delta::new(&format!("{name}_count"), labels, 1));
    out
}

/// Prometheus name (room figures, `rooms::stats`): messages stored by rooms (not counting duplicates).
pub const ROOM_MESSAGES: &str = "roomkeeper_room_messages_total";
/// Prometheus name (room figures, `rooms::stats`): retried publishes answered as duplicates.
pub const ROOM_DUPLICATES: &str = "roomkeeper_room_duplicates_total";
/// Prometheus name (room figures, `rooms::stats`): messages sent to subscribers (one per message per receiver).
pub const ROOM_DELIVERIES: &str = "roomkeeper_room_deliveries_total";
/// Prometheus name (room figures, `rooms::stats`): bytes of WebSocket frames rooms received.
pub const ROOM_BYTES_IN: &str = "roomkeeper_room_bytes_in_total";
/// Prometheus name (room figures, `rooms::stats`): frames refused with an error frame, by code.
pub const ROOM_REFUSALS: &str = "roomkeeper_room_refusals_total";

/// How often, at most, a router isolate sends its pending counters to the Metrics object
/// (milliseconds). The first request that finds nothing pending schedules the flush this long
/// after itself (through `wait_until`), so a busy isolate makes about one Metrics call per
/// interval instead of one per request. Counts from other isolates can lag by this much; a
/// metrics read flushes its own isolate first.
pub const FLUSH_INTERVAL_MS: u64 = 1000;

/// Counter deltas waiting in one isolate, summed per (name, labels) so a flush is one small
/// batch however many requests it covers.
#[derive(Debug, Default)]
pub struct Pending {
    sums: BTreeMap<(String, String), Delta>,
}

impl Pending {
    /// Adds deltas to the pending sums.
    pub fn add(&mut self, deltas: impl IntoIterator<Item = Delta>) {
        for d in deltas {
            let key = (d.name.clone(), d.label_key());
            self.sums
                .entry(key)
                .and_modify(|e| e.delta += d.delta)
                .or_insert(d);
        }
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// Takes every pending sum (dropping ones that cancelled out), leaving nothing pending.
    pub fn take(&mut self) -> Vec<Delta> {
        std::mem::take(&mut self.sums)
            .into_values()
            .filter(|d| d.delta != 0)
            .collect()
    }
}

/// Refusals for being over a rate limit (`rate_limited`) that raise a `refusals_spiking`
/// alert when one router isolate sees this many within [`REFUSAL_SPIKE_WINDOW_MS`] (setting
/// `REFUSAL_ALERT_THRESHOLD`).
pub const REFUSAL_ALERT_THRESHOLD: u64 = 100;
/// The window of [`REFUSAL_ALERT_THRESHOLD`], ms.
pub const REFUSAL_SPIKE_WINDOW_MS: u64 = 60_000;

/// Counts events in fixed windows and says when a window first reaches a threshold, so a spike
/// raises one alert per window however long it lasts (alerts are throttled again downstream).
#[derive(Debug, Default)]
pub struct SpikeDetector {
    window_start_ms: u64,
    count: u64,
}

impl SpikeDetector {
    /// Counts one event at `now_ms`; true exactly when this window's count reaches `threshold`.
    pub fn record(&mut self, now_ms: u64, window_ms: u64, threshold: u64) -> bool {
        if now_ms >= self.window_start_ms + window_ms {
            self.window_start_ms = now_ms;
            self.count = 0;
        }
        self.count += 1;
        self.count == threshold.max(1)
    }
}

/// Pseudo-metric for the active-room registry: `room_connections{room}` ±1 per connection.
pub const ROOM_CONNECTIONS: &str = "room_connections";

/// One counter increment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Metric name (one of [`METRICS`]).
    pub name: String,
    /// Labels, sorted by key.
    pub labels: BTreeMap<String, String>,
    /// Amount to add (may be negative for gauges kept as up/down counters).
    pub delta: i64,
}

impl Delta {
    /// A delta of `n` on `name{labels}`.
    pub fn new(name: &str, labels: &[(&str, &str)], n: i64) -> Self {
        Self {
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            delta: n,
        }
    }

    /// The labels as stored: `k="v",k2="v2"` with Prometheus escaping (`\\`, `"`, newline).
    pub fn label_key(&self) -> String {
        encode_labels(&self.labels)
    }
}

/// Encodes labels in Prometheus exposition syntax, keys sorted.
pub fn encode_labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One stored counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Encoded labels ([`encode_labels`]).
    pub labels: String,
    /// Current value.
    pub value: i64,
}

/// Renders samples in the Prometheus text exposition format (version 0.0.4), with `# HELP`
/// and `# TYPE` lines for every known metric, samples sorted.
pub fn prometheus(samples: &[Sample]) -> String {
    let mut by_name: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_name.entry(s.name.as_str()).or_default().push(s);
    }
    let mut out = String::new();
    for (name, help) in METRICS {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        let mut rows = by_name.remove(name).unwrap_or_default();
        rows.sort_by(|a, b| a.labels.cmp(&b.labels));
        for s in rows {
            if s.labels.is_empty() {
                out.push_str(&format!("{name} {}\n", s.value));
            } else {
                out.push_str(&format!("{name}{{{}}} {}\n", s.labels, s.value));
            }
        }
    }
    for (name, help) in HISTOGRAMS {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        // Per series (the labels but `le`): its buckets by bound, then its sum and count.
        let mut series: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
        let bucket = format!("{name}_bucket");
        for s in by_name.remove(bucket.as_str()).unwrap_or_default() {
            let (le, rest) = split_le(&s.labels);
            let line = format!("{bucket}{{{}}} {}\n", s.labels, s.value);
            series.entry(rest).or_default().push((le, line));
        }
        let sums = by_name
            .remove(format!("{name}_sum").as_str())
            .unwrap_or_default();
        let counts = by_name
            .remove(format!("{name}_count").as_str())
            .unwrap_or_default();
        for (labels, mut buckets) in series {
            buckets.sort();
            for (_, line) in buckets {
                out.push_str(&line);
            }
            for (suffix, rows) in [("sum", &sums), ("count", &counts)] {
                if let Some(s) = rows.iter().find(|s| s.labels == labels) {
                    let braces = if labels.is_empty() {
                        String::new()
                    } else {
                        format!("{{{labels}}}")
                    };
                    out.push_str(&format!("{name}_{suffix}{braces} {}\n", s.value));
                }
            }
        }
    }
    out
}

/// A bucket's `le` bound (`+Inf`: the largest) and its other labels, encoded.
fn split_le(labels: &str) -> (u64, String) {
    let mut le = u64::MAX;
    let rest: Vec<&str> = labels
        .split(',')
        .filter(
            |l| match l.strip_prefix("le=\"").and_then(|v| v.strip_suffix('"')) {
                Some(v) => {
                    le = v.parse().unwrap_or(u64::MAX);
                    false
                }
                None => true,
            },
        )
        .collect();
    (le, rest.join(","))
}

/// Renders samples as `{"name": {"labels": value, …}, …}` for the ops dashboard.
pub fn json(samples: &[Sample]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for s in samples {
        let entry = out
            .entry(s.name.clone())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        entry[s.labels.as_str()] = serde_json::json!(s.value);
    }
    serde_json::Value::Object(out)
}

/// The class of a close code for the `closed` counter: `normal` (1000, or 1005: a close frame
/// without a code), `reconnect` or `terminal`.
pub fn close_class(code: u16) -> &'static str {
    match code {
        1000 | 1005 => "normal",
        c if crate::rooms::protocol::close::should_reconnect(c) => "reconnect",
        _ => "terminal",
    }
}

/// The name of the one service-wide Metrics object.
pub const OBJECT_NAME: &str = "global";

/// Header carrying a flush batch's id, so the Metrics object applies each batch once.
pub const BATCH_ID_HEADER: &str = "X-Metrics-Batch";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_is_well_formed() {
        let samples = vec![
            Sample {
                name: "roomkeeper_requests_total".into(),
                labels: Delta::new("x", &[("status", "200"), ("route", "health")], 1).label_key(),
                value: 3,
            },
            Sample {
                name: "roomkeeper_leads_total".into(),
                labels: String::new(),
                value: 1,
            },
        ];
        let text = prometheus(&samples);
        assert!(text.contains("# TYPE roomkeeper_requests_total counter\n"));
        assert!(text.contains("roomkeeper_requests_total{route=\"health\",status=\"200\"} 3\n"));
        assert!(text.contains("roomkeeper_leads_total 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<i64>().unwrap();
        }
    }

    #[test]
    fn a_histogram_renders_ordered_cumulative_buckets_sum_and_count() {
        let mut pending = Pending::default();
        for v in [40, 250, 250, 20_000] {
            pending.add(observe(
                VOICE_STAGE_MS,
                &[("stage", "first_audio")],
                v,
                STAGE_BUCKETS_MS,
            ));
        }
        let samples: Vec<Sample> = pending
            .take()
            .into_iter()
            .map(|d| Sample {
                labels: d.label_key(),
                name: d.name,
                value: d.delta,
            })
            .collect();
        let text = prometheus(&samples);
        assert!(text.contains("# TYPE roomkeeper_voice_stage_ms histogram\n"));
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("roomkeeper_voice_stage_ms"))
            .collect();
        assert_eq!(
            lines[0],
            r#"roomkeeper_voice_stage_ms_bucket{le="50",stage="first_audio"} 1"#
        );
        assert_eq!(
            lines[1],
            r#"roomkeeper_voice_stage_ms_bucket{le="100",stage="first_audio"} 1"#
        );
        assert_eq!(
            lines[3],
            r#"roomkeeper_voice_stage_ms_bucket{le="300",stage="first_audio"} 3"#
        );
        assert_eq!(
            lines[11],
            r#"roomkeeper_voice_stage_ms_bucket{le="10000",stage="first_audio"} 3"#
        );
        assert_eq!(
            lines[12],
            r#"roomkeeper_voice_stage_ms_bucket{le="+Inf",stage="first_audio"} 4"#
        );
        assert_eq!(
            lines[13],
            r#"roomkeeper_voice_stage_ms_sum{stage="first_audio"} 20540"#
        );
        assert_eq!(
            lines[14],
            r#"roomkeeper_voice_stage_ms_count{stage="first_audio"} 4"#
        );
        assert_eq!(lines.len(), 15);
    }

    #[test]
    fn labels_are_escaped_and_sorted() {
        let d = Delta::new("m", &[("z", "a\"b"), ("a", "x\\y\nz")], 1);
        assert_eq!(d.label_key(), r#"a="x\\y\nz",z="a\"b""#);
    }

    #[test]
    fn pending_sums_per_name_and_labels_and_takes_once() {
        let mut p = Pending::default();
        assert!(p.is_empty());
        p.add([
            Delta::new("a", &[("x", "1")], 1),
            Delta::new("a", &[("x", "2")], 1),
            Delta::new("b", &[], 2),
        ]);
        p.add([Delta::new("a", &[("x", "1")], 3), Delta::new("b", &[], -2)]);
        let mut taken = p.take();
        taken.sort_by(|l, r| (&l.name, l.label_key()).cmp(&(&r.name, r.label_key())));
        assert_eq!(
            taken,
            vec![
                Delta::new("a", &[("x", "1")], 4),
                Delta::new("a", &[("x", "2")], 1)
            ]
        );
        assert!(p.is_empty());
        assert!(p.take().is_empty());
    }

    #[test]
    fn a_spike_alerts_once_per_window() {
        let mut d = SpikeDetector::default();
        let fired: Vec<bool> = (0..8).map(|i| d.record(1_000 + i, 60_000, 5)).collect();
        assert_eq!(
            fired,
            [false, false, false, false, true, false, false, false]
        );
        // A new window counts from zero again.
        assert!(!d.record(61_000, 60_000, 2));
        assert!(d.record(61_001, 60_000, 2));
        // Slow trickles never reach the threshold.
        let mut d = SpikeDetector::default();
        assert!((0..10).all(|i| !d.record(i * 60_000, 60_000, 2)));
    }

    #[test]
    fn json_groups_by_name() {
        let v = json(&[Sample {
            name: "m".into(),
            labels: "a=\"1\"".into(),
            value: 2,
        }]);
        assert_eq!(v["m"]["a=\"1\""], 2);
        assert_eq!(close_class(1000), "normal");
        assert_eq!(close_class(1005), "normal");
        assert_eq!(close_class(1006), "reconnect");
        assert_eq!(close_class(4500), "terminal");
    }
}
