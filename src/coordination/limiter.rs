//! Rate-limit arithmetic for the `Limiter` Durable Object: GCRA over a persisted timestamp.
//!
//! One `Limiter` object exists per key (a client IP, a user id, an API key), so every check for
//! a key is serialised through one writer and the state below is the only thing it stores. That
//! state is a single theoretical arrival time ([`GcraState`]): GCRA (the generic cell rate
//! algorithm) answers exactly what a token bucket answers, but needs no separate "tokens" and
//! "last refill" fields that could disagree, and one small struct is cheap to persist after
//! every check.
//!
//! Everything here is pure: the object passes `now_ms` in and writes the state back. The
//! arithmetic is exact (integers in units of `1/rate` ms, no floating point), so a request that
//! arrives on the very millisecond its capacity returns is allowed and one that arrives a
//! millisecond earlier is refused, and `retry_after_ms` is the exact wait.
//!
//! Clocks are not trusted to be monotonic. A clock that steps backwards never yields more
//! capacity than the bucket had (the bucket is at worst read as empty), and a clock that jumps
//! far forwards simply finds the bucket full; nothing underflows or panics.
//!
//! Named policies ([`Policies`]) come from a JSON setting so limits can change without a
//! rebuild; [`rate_limit_headers`] and [`retry_after_secs`] render a [`Decision`] for HTTP.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Largest accepted [`Policy`] rate (requests per period).
pub const MAX_RATE: u32 = 1_000_000;
/// Largest accepted [`Policy`] burst (requests that may be spent at once).
pub const MAX_BURST: u32 = 1_000_000;
/// Shortest accepted [`Policy`] period, in milliseconds.
pub const MIN_PERIOD_MS: u64 = 1;
/// Longest accepted [`Policy`] period, in milliseconds (one day).
pub const MAX_PERIOD_MS: u64 = 86_400_000;
/// Longest accepted policy name, in bytes.
pub const MAX_POLICY_NAME_LEN: usize = 32;
/// Longest accepted limiter key, in bytes (an IPv6 address is at most 45).
pub const MAX_KEY_LEN: usize = 128;
/// Most policies one configuration may define (defaults included).
pub const MAX_POLICIES: usize = 32;

/// Why a limiter operation or configuration was refused.
///
/// Messages never contain a key's value: keys may be API keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// No policy of this name is configured.
    #[error("unknown rate-limit policy {0:?}")]
    UnknownPolicy(String),
    /// A policy's numbers are zero or out of bounds.
    #[error("invalid rate-limit policy: {0}")]
    InvalidPolicy(String),
    /// A policy name is empty, too long or uses characters outside `[A-Za-z0-9_.:-]`.
    #[error("invalid policy name: use 1-{MAX_POLICY_NAME_LEN} characters of [A-Za-z0-9_.:-]")]
    InvalidPolicyName,
    /// A key is empty, too long or uses characters outside `[A-Za-z0-9_.:-]`.
    #[error("invalid rate-limit key: use 1-{MAX_KEY_LEN} characters of [A-Za-z0-9_.:-]")]
    InvalidKey,
    /// The cost is larger than the burst, so no amount of waiting would allow it.
    #[error("cost {cost} exceeds the policy's burst of {burst}; it can never be allowed")]
    CostExceedsBurst {
        /// The requested cost.
        cost: u32,
        /// The policy's burst.
        burst: u32,
    },
    /// The policies setting is not a JSON object of policies.
    #[error("invalid rate-limit configuration: {0}")]
    InvalidConfig(String),
}

impl LimitError {
    /// The stable snake_case code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownPolicy(_) => "unknown_policy",
            Self::InvalidPolicy(_) => "invalid_policy",
            Self::InvalidPolicyName => "invalid_policy_name",
            Self::InvalidKey => "invalid_key",
            Self::CostExceedsBurst { .. } => "cost_exceeds_burst",
            Self::InvalidConfig(_) => "invalid_config",
        }
    }
}

/// A rate limit: `rate` requests per `period_ms` on average, at most `burst` at once.
///
/// Fields are private so a `Policy` is valid by construction (no zero divisor can reach
/// [`check`]); build one with [`Policy::new`] or deserialize `{"rate","period_ms","burst"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PolicySpec", into = "PolicySpec")]
pub struct Policy {
    rate: u32,
    period_ms: u64,
    burst: u32,
}

/// The wire shape of a [`Policy`], before validation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    rate: u32,
    period_ms: u64,
    burst: u32,
}

impl TryFrom<PolicySpec> for Policy {
    type Error = LimitError;

    fn try_from(s: PolicySpec) -> Result<Self, LimitError> {
        Policy::new(s.rate, s.period_ms, s.burst)
    }
}

impl From<Policy> for PolicySpec {
    fn from(p: Policy) -> Self {
        Self {
            rate: p.rate,
            period_ms: p.period_ms,
            burst: p.burst,
        }
    }
}

impl Policy {
    /// A validated policy: `1..=`[`MAX_RATE`] requests per
    /// [`MIN_PERIOD_MS`]`..=`[`MAX_PERIOD_MS`] ms, burst `1..=`[`MAX_BURST`].
    pub fn new(rate: u32, period_ms: u64, burst: u32) -> Result<Self, LimitError> {
        if !(1..=MAX_RATE).contains(&rate) {
            return Err(LimitError::InvalidPolicy(format!(
                "rate must be 1-{MAX_RATE}, got {rate}"
            )));
        }
        if !(MIN_PERIOD_MS..=MAX_PERIOD_MS).contains(&period_ms) {
            return Err(LimitError::InvalidPolicy(format!(
                "period_ms must be {MIN_PERIOD_MS}-{MAX_PERIOD_MS}, got {period_ms}"
            )));
        }
        if !(1..=MAX_BURST).contains(&burst) {
            return Err(LimitError::InvalidPolicy(format!(
                "burst must be 1-{MAX_BURST}, got {burst}"
            )));
        }
        Ok(Self {
            rate,
            period_ms,
            burst,
        })
    }

    /// Requests replenished per period.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// The period over which `rate` requests are replenished, in milliseconds.
    pub fn period_ms(&self) -> u64 {
        self.period_ms
    }

    /// Most requests that may be spent at once (the bucket's capacity).
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Time for an empty bucket to refill completely, in milliseconds, rounded up.
    pub fn window_ms(&self) -> u64 {
        let units = self.window_units();
        ms_ceil(units, self.rate)
    }

    /// Cost of one request in time units of `1/rate` ms: one period.
    fn emission_units(&self) -> u128 {
        u128::from(self.period_ms)
    }

    /// The bucket's capacity in time units of `1/rate` ms.
    fn window_units(&self) -> u128 {
        u128::from(self.burst) * self.emission_units()
    }
}

/// Converts time units of `1/rate` ms to whole milliseconds, rounding up.
fn ms_ceil(units: u128, rate: u32) -> u64 {
    u64::try_from(units.div_ceil(u128::from(rate))).unwrap_or(u64::MAX)
}

/// The persisted state of one bucket: its theoretical arrival time (TAT).
///
/// The TAT is the instant at which the bucket will be full again; it is `tat_ms + tat_frac/rate`
/// milliseconds, the fraction keeping the arithmetic exact when `period_ms / rate` is not a
/// whole number. The zero value ([`Default`]) is a full bucket. Persist the state after every
/// [`check`], allowed or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcraState {
    /// Whole milliseconds of the TAT.
    pub tat_ms: u64,
    /// Sub-millisecond part of the TAT, in units of `1/rate` ms.
    #[serde(default)]
    pub tat_frac: u32,
}

impl GcraState {
    /// The TAT in units of `1/rate` ms. A fraction that does not fit the current rate (the
    /// policy changed) rounds up to the next millisecond, which never grants extra capacity.
    fn units(&self, rate: u32) -> u128 {
        let ms = u128::from(self.tat_ms);
        if self.tat_frac < rate {
            ms * u128::from(rate) + u128::from(self.tat_frac)
        } else {
            (ms + 1) * u128::from(rate)
        }
    }

    /// Stores a TAT given in units of `1/rate` ms, saturating at the end of time.
    fn set_units(&mut self, units: u128, rate: u32) {
        let rate = u128::from(rate);
        match u64::try_from(units / rate) {
            Ok(ms) => {
                self.tat_ms = ms;
                // The remainder is below `rate`, a `u32`.
                self.tat_frac = (units % rate) as u32;
            }
            Err(_) => {
                self.tat_ms = u64::MAX;
                self.tat_frac = 0;
            }
        }
    }
}

/// The outcome of one [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the request may proceed (its cost has then been consumed).
    pub allowed: bool,
    /// Whole requests still available right now, after this request's cost if allowed.
    pub remaining: u32,
    /// Milliseconds until the bucket is full again (0 if it is full now).
    pub reset_ms: u64,
    /// 0 if allowed; otherwise milliseconds until this same cost would be allowed.
    pub retry_after_ms: u64,
    /// The policy's burst: the most `remaining` can ever be.
    pub limit: u32,
}

/// Checks a request of `cost` against `policy` at `now_ms`, consuming the cost if allowed.
///
/// A refused request consumes nothing, and `cost == 0` only peeks. A cost above the burst can
/// never be allowed and is an error rather than a refusal, so callers never wait for it.
///
/// The state may change even when the request is refused: a TAT more than one full window
/// ahead of `now_ms` (only reachable when the clock stepped backwards or the policy shrank) is
/// pulled back to "empty as of now". That never adds capacity — the bucket was, and is, read as
/// empty — but it bounds how long a clock step can lock a key out to one window. Always
/// persist the state afterwards.
pub fn check(
    state: &mut GcraState,
    policy: &Policy,
    now_ms: u64,
    cost: u32,
) -> Result<Decision, LimitError> {
    if cost > policy.burst {
        return Err(LimitError::CostExceedsBurst {
            cost,
            burst: policy.burst,
        });
    }
    let rate = policy.rate;
    let window = policy.window_units();
    let now = u128::from(now_ms) * u128::from(rate);

    let stored = state.units(rate);
    let tat = stored.min(now + window);
    if tat != stored {
        state.set_units(tat, rate);
    }

    let start = tat.max(now);
    let after = start + u128::from(cost) * policy.emission_units();
    let allowed = after - now <= window;
    let (debt, retry_after_ms) = if allowed {
        if cost > 0 {
            state.set_units(after, rate);
        }
        (after - now, 0)
    } else {
        // Allowed once `later` satisfies `after - later <= window`.
        (start - now, ms_ceil(after - window - now, rate))
    };
    // Whole requests left: capacity not covered by debt, in emission intervals, rounded down.
    let remaining = u32::try_from((window - debt) / policy.emission_units()).unwrap_or(u32::MAX);
    Ok(Decision {
        allowed,
        remaining,
        reset_ms: ms_ceil(debt, rate),
        retry_after_ms,
        limit: policy.burst,
    })
}

/// Whether `b` is allowed in policy names and keys: `[A-Za-z0-9_.:-]`.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(is_name_byte)
}

/// Checks a policy name: 1–[`MAX_POLICY_NAME_LEN`] bytes of `[A-Za-z0-9_.:-]`.
///
/// The charset is safe to place inside a quoted structured-field string, which is where
/// [`rate_limit_headers`] puts it.
pub fn validate_policy_name(name: &str) -> Result<(), LimitError> {
    if valid_name(name, MAX_POLICY_NAME_LEN) {
        Ok(())
    } else {
        Err(LimitError::InvalidPolicyName)
    }
}

/// Checks a limiter key: 1–[`MAX_KEY_LEN`] bytes of `[A-Za-z0-9_.:-]`.
///
/// `:` is allowed so an IPv6 address is a key as it stands; the error never echoes the key.
pub fn validate_key(key: &str) -> Result<(), LimitError> {
    if valid_name(key, MAX_KEY_LEN) {
        Ok(())
    } else {
        Err(LimitError::InvalidKey)
    }
}

/// The configured policies, by name.
///
/// [`Policies::default`] defines `connect` (per client IP: WebSocket upgrades), `publish` (per
/// user: messages into a room), `api` (per API key: HTTP API calls) and `alerts` (per alert
/// kind: alert notifications).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policies {
    by_name: BTreeMap<String, Policy>,
}

impl Default for Policies {
    fn default() -> Self {
        let defaults = [
            // 20 connection attempts per 10 s per IP, all usable at once (page reloads).
            ("connect", 20, 10_000, 20),
            // 30 messages per 10 s per user, at most 10 in a quick burst.
            ("publish", 30, 10_000, 10),
            // 600 calls per minute per API key, at most 60 at once.
            ("api", 600, 60_000, 60),
            // 3 alerts of one kind per 5 minutes, so an incident does not flood the channel.
            ("alerts", 3, 300_000, 3),
            // Public routes, per client address (IPv6 by /64): what one caller without an API
            // key may make the service do and store.
            // Private rooms created: 10 per hour, 5 at once.
            ("rooms", 10, 3_600_000, 5),
            // Leads submitted: 10 per hour, 5 at once (each queues enrichment and a
            // notification).
            ("leads", 10, 3_600_000, 5),
            // Valuation estimates: 60 per minute, 20 at once.
            ("valuation", 60, 60_000, 20),
            // Inbound webhook calls: 120 per minute, 60 at once.
            ("webhooks", 120, 60_000, 60),
            // Dev tokens (local only): 60 per minute, 20 at once.
            ("dev_token", 60, 60_000, 20),
        ];
        let by_name = defaults
            .into_iter()
            .map(|(name, rate, period_ms, burst)| {
                let policy = Policy::new(rate, period_ms, burst).expect("default policy is valid");
                (name.to_string(), policy)
            })
            .collect();
        Self { by_name }
    }
}

impl Policies {
    /// Parses a JSON object of named policies, e.g.
    /// `{"connect":{"rate":20,"period_ms":10000,"burst":20}}`, over the defaults.
    ///
    /// Names present in the JSON replace or add to the defaults; defaults not mentioned stay.
    /// Every name and policy is validated and unknown fields are refused, so a typo in the
    /// setting fails loudly instead of silently leaving a default in force.
    pub fn from_json(json: &str) -> Result<Self, LimitError> {
        let specs: BTreeMap<String, PolicySpec> =
            serde_json::from_str(json).map_err(|e| LimitError::InvalidConfig(e.to_string()))?;
        let mut policies = Self::default();
        for (name, spec) in specs {
            validate_policy_name(&name)
                .map_err(|e| LimitError::InvalidConfig(format!("policy {name:?}: {e}")))?;
            let policy = Policy::try_from(spec).map_err(|e| match e {
                LimitError::InvalidPolicy(why) => {
                    LimitError::InvalidPolicy(format!("policy {name:?}: {why}"))
                }
                other => other,
            })?;
            policies.by_name.insert(name, policy);
        }
        if policies.by_name.len() > MAX_POLICIES {
            return Err(LimitError::InvalidConfig(format!(
                "at most {MAX_POLICIES} policies, got {}",
                policies.by_name.len()
            )));
        }
        Ok(policies)
    }

    /// The policy called `name`.
    pub fn get(&self, name: &str) -> Result<&Policy, LimitError> {
        self.by_name
            .get(name)
            .ok_or_else(|| LimitError::UnknownPolicy(name.to_string()))
    }

    /// Every policy with its name, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Policy)> {
        self.by_name.iter().map(|(n, p)| (n.as_str(), p))
    }
}

/// Renders the `RateLimit-Policy` and `RateLimit` response headers for a decision.
///
/// The format follows draft-ietf-httpapi-ratelimit-headers (structured-field lists whose item
/// is the quoted policy name):
///
/// ```text
/// RateLimit-Policy: "NAME";q=BURST;w=WINDOW_SECONDS
/// RateLimit: "NAME";r=REMAINING;t=RESET_SECONDS
/// ```
///
/// `q` is the burst (the most that can be spent at once) and `w` the time, in seconds rounded
/// up, for an empty bucket to refill — so `q` per `w` never overstates the policy's rate. `r`
/// is [`Decision::remaining`] and `t` is [`Decision::reset_ms`] in seconds, rounded up (0 when
/// the bucket is full). `name` should have passed [`validate_policy_name`], whose charset needs
/// no escaping inside the quotes. `Retry-After` is separate: see [`retry_after_secs`].
pub fn rate_limit_headers(
    name: &str,
    policy: &Policy,
    decision: &Decision,
) -> [(&'static str, String); 2] {
    [
        (
            "RateLimit-Policy",
            format!(
                "\"{name}\";q={};w={}",
                policy.burst,
                policy.window_ms().div_ceil(1000)
            ),
        ),
        (
            "RateLimit",
            format!(
                "\"{name}\";r={};t={}",
                decision.remaining,
                decision.reset_ms.div_ceil(1000)
            ),
        ),
    ]
}

/// The `Retry-After` value in whole seconds for a refused decision (`None` if allowed).
///
/// Rounded up, and at least 1, so a client that waits exactly this long is allowed.
pub fn retry_after_secs(decision: &Decision) -> Option<u64> {
    (!decision.allowed).then(|| decision.retry_after_ms.div_ceil(1000).max(1))
}

/// One check, as the router sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The policy's name: the bucket this check draws from.
    pub policy_name: String,
    /// The policy's current numbers.
    pub policy: Policy,
    /// Requests this check spends (0 only peeks).
    pub cost: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rate: u32, period_ms: u64, burst: u32) -> Policy {
        Policy::new(rate, period_ms, burst).unwrap()
    }

    fn run(state: &mut GcraState, p: &Policy, now: u64, cost: u32) -> Decision {
        check(state, p, now, cost).unwrap()
    }

    /// A deterministic xorshift64 generator, so "random" tests replay exactly.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn burst_is_spent_exactly_then_refused() {
        let p = policy(10, 1_000, 5);
        let mut s = GcraState::default();
        for left in (0..5).rev() {
            let d = run(&mut s, &p, 1_000_000, 1);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
            assert_eq!(d.limit, 5);
            assert_eq!(d.retry_after_ms, 0);
        }
        let before = s;
        let d = run(&mut s, &p, 1_000_000, 1);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after_ms, 100);
        assert_eq!(d.reset_ms, 500);
        assert_eq!(s, before, "a refusal consumes nothing");
    }

    #[test]
    fn refill_boundary_is_exact_to_the_millisecond() {
        // One request per 100 ms, burst 1.
        let p = policy(1, 100, 1);
        let mut s = GcraState::default();
        assert!(run(&mut s, &p, 5_000, 1).allowed);
        let d = run(&mut s, &p, 5_099, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 1);
        assert!(run(&mut s, &p, 5_100, 1).allowed);
    }

    #[test]
    fn retry_after_is_exact_with_fractional_intervals() {
        // 3 per 10 s: an emission interval of 3333.33… ms.
        let p = policy(3, 10_000, 3);
        let mut s = GcraState::default();
        assert!(run(&mut s, &p, 0, 3).allowed);
        let d = run(&mut s, &p, 0, 1);
        assert_eq!(d.retry_after_ms, 3_334);
        assert!(!run(&mut s, &p, 3_333, 1).allowed);
        assert!(run(&mut s, &p, 3_334, 1).allowed);
        assert!(!run(&mut s, &p, 6_666, 1).allowed);
        assert!(run(&mut s, &p, 6_667, 1).allowed);
        // Three intervals after the burst land exactly on 10 000 ms, with no rounding drift.
        assert!(!run(&mut s, &p, 9_999, 1).allowed);
        assert!(run(&mut s, &p, 10_000, 1).allowed);
    }

    #[test]
    fn waiting_retry_after_always_suffices() {
        let p = policy(7, 1_000, 3);
        let mut s = GcraState::default();
        let mut now = 0;
        for _ in 0..50 {
            let d = run(&mut s, &p, now, 2);
            if !d.allowed {
                assert!(d.retry_after_ms > 0);
                let mut peek = s;
                assert!(!run(&mut peek, &p, now + d.retry_after_ms - 1, 2).allowed);
                now += d.retry_after_ms;
                assert!(run(&mut s, &p, now, 2).allowed);
            }
        }
    }

    #[test]
    fn remaining_and_reset_follow_costs() {
        let p = policy(10, 1_000, 10);
        let mut s = GcraState::default();
        let d = run(&mut s, &p, 0, 4);
        assert_eq!((d.allowed, d.remaining, d.reset_ms), (true, 6, 400));
        let d = run(&mut s, &p, 0, 6);
        assert_eq!((d.allowed, d.remaining, d.reset_ms), (true, 0, 1_000));
        // Half an interval later there is still no whole request available.
        let d = run(&mut s, &p, 50, 0);
        assert_eq!((d.allowed, d.remaining, d.reset_ms), (true, 0, 950));
        let d = run(&mut s, &p, 300, 3);
        assert_eq!((d.allowed, d.remaining, d.reset_ms), (true, 0, 1_000));
        let d = run(&mut s, &p, 300, 1);
        assert_eq!((d.allowed, d.retry_after_ms), (false, 100));
    }

    #[test]
    fn cost_zero_peeks_without_consuming() {
        let p = policy(5, 1_000, 5);
        let mut s = GcraState::default();
        run(&mut s, &p, 10_000, 2);
        let before = s;
        let d = run(&mut s, &p, 10_000, 0);
        assert!(d.allowed);
        assert_eq!(d.remaining, 3);
        assert_eq!(s, before);
    }

    #[test]
    fn cost_above_burst_is_an_error_not_a_refusal() {
        let p = policy(100, 1_000, 5);
        let mut s = GcraState::default();
        let err = check(&mut s, &p, 0, 6).unwrap_err();
        assert_eq!(err, LimitError::CostExceedsBurst { cost: 6, burst: 5 });
        assert_eq!(err.code(), "cost_exceeds_burst");
        assert_eq!(s, GcraState::default());
        assert!(run(&mut s, &p, 0, 5).allowed, "cost == burst is allowable");
    }

    #[test]
    fn clock_going_backwards_never_adds_capacity() {
        let p = policy(10, 1_000, 10);
        let mut s = GcraState::default();
        run(&mut s, &p, 50_000, 4);
        // 6 remain at 50 000; 200 ms earlier the same debt leaves fewer.
        let d = run(&mut s, &p, 49_800, 0);
        assert_eq!(d.remaining, 4);
        // Far in the past: read as empty, never as full, and nothing underflows.
        for now in [0, 1] {
            let d = run(&mut s, &p, now, 1);
            assert!(!d.allowed, "at {now}");
            assert_eq!(d.remaining, 0);
            assert!(d.retry_after_ms <= p.window_ms());
        }
        let d = run(&mut s, &p, 1, 0);
        assert_eq!((d.remaining, d.reset_ms), (0, 999));
        // The lock-out after a backwards step lasts one interval, not until the clock catches up.
        assert!(!run(&mut s, &p, 99, 1).allowed);
        assert!(run(&mut s, &p, 100, 1).allowed);
    }

    #[test]
    fn backwards_then_forwards_never_exceeds_the_rate() {
        // Whatever the clock does, allowed requests never exceed burst + refills over the
        // span of distinct clock readings seen so far.
        let p = policy(4, 1_000, 4);
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut s = GcraState::default();
        let mut now: u64 = 1_000_000;
        let mut granted = 0u64;
        let mut forwards = 0u64;
        for _ in 0..5_000 {
            let step = rng.below(400);
            if rng.below(3) == 0 {
                now = now.saturating_sub(step);
            } else {
                now += step;
                forwards += step;
            }
            if run(&mut s, &p, now, 1).allowed {
                granted += 1;
            }
        }
        // Only forward clock movement refills: 4 per 1000 ms on top of the initial burst.
        assert!(granted <= 4 + forwards * 4 / 1_000, "granted {granted}");
        assert!(granted > 0);
    }

    #[test]
    fn huge_forward_jump_refills_to_full() {
        let p = policy(1, 60_000, 3);
        let mut s = GcraState::default();
        for _ in 0..3 {
            run(&mut s, &p, 0, 1);
        }
        let d = run(&mut s, &p, u64::MAX, 0);
        assert_eq!((d.remaining, d.reset_ms), (3, 0));
        let d = run(&mut s, &p, u64::MAX, 3);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        // The TAT is beyond u64 milliseconds; it saturates instead of wrapping or panicking.
        assert_eq!(s.tat_ms, u64::MAX);
    }

    #[test]
    fn policy_change_keeps_debt_in_time_and_never_panics() {
        let mut s = GcraState::default();
        run(&mut s, &policy(3, 10_000, 3), 0, 2);
        // The TAT is 6666⅔ ms: two thirds of a millisecond in thirds.
        assert_eq!(
            s,
            GcraState {
                tat_ms: 6_666,
                tat_frac: 2
            }
        );
        // A rate of 1 cannot represent the fraction: the TAT rounds up, never down.
        let p = policy(1, 1, 1);
        let mut peek = s;
        let d = run(&mut peek, &p, 6_666, 1);
        assert_eq!((d.allowed, d.retry_after_ms, d.reset_ms), (false, 1, 1));
        assert!(run(&mut s, &p, 6_667, 1).allowed);
        // Far from the TAT, a shrunken window reads the debt as at most one window.
        let mut s = GcraState::default();
        run(&mut s, &policy(3, 10_000, 3), 0, 3);
        let d = run(&mut s, &policy(1, 1_000, 1), 0, 0);
        assert_eq!((d.remaining, d.reset_ms), (0, 1_000));
    }

    #[test]
    fn state_round_trips_through_json() {
        let p = policy(3, 1_000, 2);
        let mut s = GcraState::default();
        run(&mut s, &p, 12_345, 1);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<GcraState>(&json).unwrap(), s);
        let old: GcraState = serde_json::from_str(r#"{"tat_ms":7}"#).unwrap();
        assert_eq!(
            old,
            GcraState {
                tat_ms: 7,
                tat_frac: 0
            }
        );
    }

    /// The obvious token bucket, refilled step by step, in units of `1/period_ms` tokens.
    struct NaiveBucket {
        tokens: u128,
        last_ms: u64,
    }

    impl NaiveBucket {
        fn check(&mut self, p: &Policy, now_ms: u64, cost: u32) -> Decision {
            let period = u128::from(p.period_ms());
            let capacity = u128::from(p.burst()) * period;
            let rate = u128::from(p.rate());
            self.tokens = (self.tokens + u128::from(now_ms - self.last_ms) * rate).min(capacity);
            self.last_ms = now_ms;
            let need = u128::from(cost) * period;
            let allowed = self.tokens >= need;
            let retry_after_ms = if allowed {
                self.tokens -= need;
                0
            } else {
                (need - self.tokens).div_ceil(rate) as u64
            };
            let reset_ms = (capacity - self.tokens).div_ceil(rate) as u64;
            Decision {
                allowed,
                remaining: (self.tokens / period) as u32,
                reset_ms,
                retry_after_ms,
                limit: p.burst(),
            }
        }
    }

    #[test]
    fn matches_a_naive_token_bucket_over_random_traffic() {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        for _ in 0..40 {
            let p = policy(
                1 + rng.below(12) as u32,
                1 + rng.below(3_000),
                1 + rng.below(8) as u32,
            );
            let start = rng.below(1 << 40);
            let mut gcra = GcraState::default();
            let mut naive = NaiveBucket {
                tokens: u128::from(p.burst()) * u128::from(p.period_ms()),
                last_ms: start,
            };
            let mut now = start;
            for step in 0..500 {
                now += match rng.below(10) {
                    0 => 0,
                    1..=7 => rng.below(p.period_ms() / u64::from(p.rate()) + 2),
                    _ => rng.below(4 * p.period_ms()),
                };
                let cost = rng.below(u64::from(p.burst()) + 1) as u32;
                let got = check(&mut gcra, &p, now, cost).unwrap();
                let want = naive.check(&p, now, cost);
                assert_eq!(
                    got, want,
                    "policy {p:?}, step {step}, now {now}, cost {cost}"
                );
            }
        }
    }

    #[test]
    fn policies_default_and_overlay() {
        let d = Policies::default();
        for name in ["connect", "publish", "api"] {
            assert!(d.get(name).is_ok(), "{name}");
        }
        let err = d.get("nope").unwrap_err();
        assert_eq!(err.code(), "unknown_policy");

        let p = Policies::from_json(
            r#"{"connect":{"rate":5,"period_ms":1000,"burst":2},"export":{"rate":1,"period_ms":60000,"burst":1}}"#,
        )
        .unwrap();
        assert_eq!(*p.get("connect").unwrap(), policy(5, 1_000, 2));
        assert_eq!(*p.get("export").unwrap(), policy(1, 60_000, 1));
        assert_eq!(p.get("api").unwrap(), d.get("api").unwrap());
        // The nine defaults and the one added.
        assert_eq!(d.iter().count(), 9);
        assert_eq!(p.iter().count(), 10);
    }

    #[test]
    fn policies_refuse_bad_configuration() {
        let cases = [
            ("not json", "invalid_config"),
            ("[]", "invalid_config"),
            (r#"{"a":{"rate":1,"period_ms":1}}"#, "invalid_config"),
            (
                r#"{"a":{"rate":1,"period_ms":1,"burst":1,"x":2}}"#,
                "invalid_config",
            ),
            (
                r#"{"a b":{"rate":1,"period_ms":1,"burst":1}}"#,
                "invalid_config",
            ),
            (
                r#"{"a":{"rate":0,"period_ms":1,"burst":1}}"#,
                "invalid_policy",
            ),
            (
                r#"{"a":{"rate":1,"period_ms":0,"burst":1}}"#,
                "invalid_policy",
            ),
            (
                r#"{"a":{"rate":1,"period_ms":1,"burst":0}}"#,
                "invalid_policy",
            ),
            (
                r#"{"a":{"rate":1,"period_ms":86400001,"burst":1}}"#,
                "invalid_policy",
            ),
            (
                r#"{"a":{"rate":-1,"period_ms":1,"burst":1}}"#,
                "invalid_config",
            ),
        ];
        for (json, code) in cases {
            let err = Policies::from_json(json).unwrap_err();
            assert_eq!(err.code(), code, "{json}: {err}");
        }
        let many: Vec<String> = (0..MAX_POLICIES)
            .map(|i| format!(r#""p{i}":{{"rate":1,"period_ms":1,"burst":1}}"#))
            .collect();
        let err = Policies::from_json(&format!("{{{}}}", many.join(","))).unwrap_err();
        assert_eq!(err.code(), "invalid_config");
    }

    #[test]
    fn policy_bounds_and_serde() {
        assert!(Policy::new(MAX_RATE, MAX_PERIOD_MS, MAX_BURST).is_ok());
        assert!(Policy::new(MAX_RATE + 1, 1, 1).is_err());
        assert!(Policy::new(1, 1, MAX_BURST + 1).is_err());
        let p: Policy = serde_json::from_str(r#"{"rate":2,"period_ms":500,"burst":3}"#).unwrap();
        assert_eq!(p, policy(2, 500, 3));
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"rate":2,"period_ms":500,"burst":3}"#
        );
        assert!(serde_json::from_str::<Policy>(r#"{"rate":0,"period_ms":500,"burst":3}"#).is_err());
        assert_eq!(policy(3, 10_000, 2).window_ms(), 6_667);
    }

    #[test]
    fn names_and_keys_are_validated() {
        for ok in [
            "connect",
            "api.v2",
            "user:42",
            "2001:db8::1",
            "a-b_c",
            "1.2.3.4",
        ] {
            assert!(validate_key(ok).is_ok(), "{ok}");
            assert!(validate_policy_name(ok).is_ok(), "{ok}");
        }
        let long_key = "k".repeat(MAX_KEY_LEN + 1);
        for bad in ["", "a b", "a/b", "é", "a\n", long_key.as_str()] {
            assert_eq!(
                validate_key(bad).unwrap_err().code(),
                "invalid_key",
                "{bad:?}"
            );
        }
        assert!(validate_key(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(validate_policy_name(&"p".repeat(MAX_POLICY_NAME_LEN)).is_ok());
        let err = validate_policy_name(&"p".repeat(MAX_POLICY_NAME_LEN + 1)).unwrap_err();
        assert_eq!(err.code(), "invalid_policy_name");
        assert_eq!(
            validate_policy_name("\"x\"").unwrap_err().code(),
            "invalid_policy_name"
        );
    }

    #[test]
    fn headers_render_the_draft_format() {
        let p = policy(20, 10_000, 20);
        let mut s = GcraState::default();
        let d = run(&mut s, &p, 0, 3);
        assert_eq!(
            rate_limit_headers("connect", &p, &d),
            [
                ("RateLimit-Policy", "\"connect\";q=20;w=10".to_string()),
                ("RateLimit", "\"connect\";r=17;t=2".to_string()),
            ]
        );
        assert_eq!(retry_after_secs(&d), None);

        let p = policy(1, 2_500, 1);
        let mut s = GcraState::default();
        run(&mut s, &p, 0, 1);
        let d = run(&mut s, &p, 1, 1);
        assert_eq!(d.retry_after_ms, 2_499);
        assert_eq!(retry_after_secs(&d), Some(3));
        assert_eq!(
            rate_limit_headers("publish", &p, &d)[1].1,
            "\"publish\";r=0;t=3"
        );
        let almost = Decision {
            retry_after_ms: 1,
            ..d
        };
        assert_eq!(retry_after_secs(&almost), Some(1));
    }
}
