//! Black-box properties of the limiter and lock cores, driven the way the Durable Object glue
//! drives them: state reloaded from JSON before every operation and written back after it.

use roomkeeper::coordination::limiter::{self, GcraState, Policies, Policy};
use roomkeeper::coordination::lock::{
    AcquireOutcome, Event, LockError, LockState, MAX_WAIT_MS, MIN_TTL_MS,
};

/// A deterministic xorshift64 generator, so failures replay exactly.
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

/// Loads, applies and stores, as the object does around every request.
fn persisted<S, R>(stored: &mut String, f: impl FnOnce(&mut S) -> R) -> R
where
    S: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut state: S = serde_json::from_str(stored).expect("stored state parses");
    let r = f(&mut state);
    *stored = serde_json::to_string(&state).expect("state serializes");
    r
}

#[test]
fn limiter_never_allows_more_than_burst_plus_refill_in_any_span() {
    let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
    for _ in 0..20 {
        let policy = Policy::new(
            1 + rng.below(20) as u32,
            1 + rng.below(5_000),
            1 + rng.below(10) as u32,
        )
        .unwrap();
        let mut stored = serde_json::to_string(&GcraState::default()).unwrap();
        let mut now = rng.below(1 << 45);
        let mut allowed: Vec<(u64, u64)> = Vec::new();
        for _ in 0..400 {
            now += rng.below(2 * policy.period_ms() / u64::from(policy.rate()) + 1);
            let cost = rng.below(u64::from(policy.burst()) + 1) as u32;
            let d = persisted(&mut stored, |s: &mut GcraState| {
                limiter::check(s, &policy, now, cost).unwrap()
            });
            assert!(d.remaining <= d.limit);
            assert_eq!(d.allowed, d.retry_after_ms == 0);
            if d.allowed {
                allowed.push((now, u64::from(cost)));
            }
        }
        // For every span [t0, t1]: spent <= burst + (t1 - t0) * rate / period.
        for (i, &(t0, _)) in allowed.iter().enumerate() {
            let mut spent = 0u128;
            for &(t1, cost) in &allowed[i..] {
                spent += u128::from(cost);
                let refill = u128::from(t1 - t0) * u128::from(policy.rate())
                    / u128::from(policy.period_ms());
                assert!(
                    spent <= u128::from(policy.burst()) + refill,
                    "{policy:?}: spent {spent} in [{t0}, {t1}]"
                );
            }
        }
    }
}

#[test]
fn configured_policies_drive_headers() {
    let policies =
        Policies::from_json(r#"{"publish":{"rate":2,"period_ms":1000,"burst":2}}"#).unwrap();
    let policy = *policies.get("publish").unwrap();
    let mut state = GcraState::default();
    let d = limiter::check(&mut state, &policy, 0, 2).unwrap();
    assert_eq!(
        limiter::rate_limit_headers("publish", &policy, &d),
        [
            ("RateLimit-Policy", "\"publish\";q=2;w=1".to_string()),
            ("RateLimit", "\"publish\";r=0;t=1".to_string()),
        ]
    );
    let d = limiter::check(&mut state, &policy, 0, 1).unwrap();
    assert_eq!(limiter::retry_after_secs(&d), Some(1));
    assert_eq!(d.retry_after_ms, 500);
    assert!(limiter::check(&mut state, &policy, 500, 1).unwrap().allowed);
    assert_eq!(
        policies.get("missing").unwrap_err().code(),
        "unknown_policy"
    );
}

#[test]
fn lock_leases_never_overlap_across_reloads_and_alarms() {
    let mut rng = XorShift(0x0123_4567_89AB_CDEF);
    let mut stored = serde_json::to_string(&LockState::new()).unwrap();
    let mut now = 1_700_000_000_000u64;
    // Every lease ever granted: (token, granted_at, ends_at), ends_at updated by renew/release.
    let mut leases: Vec<(u64, u64, u64)> = Vec::new();
    fn record(leases: &mut Vec<(u64, u64, u64)>, events: &[Event], now: u64) {
        for e in events {
            if let Event::Granted { lease, .. } = e {
                leases.push((lease.token, now, lease.expires_at_ms));
            }
        }
    }
    for id in 0..3_000u64 {
        now += rng.below(800);
        match rng.below(5) {
            0 | 1 => {
                let ttl = MIN_TTL_MS + rng.below(3_000);
                let wait = rng.below(MAX_WAIT_MS / 4);
                let (r, events) = persisted(&mut stored, |s: &mut LockState| {
                    s.acquire("client", ttl, wait, id, now)
                });
                record(&mut leases, &events, now);
                match r {
                    Ok(AcquireOutcome::Granted(lease)) => {
                        leases.push((lease.token, now, lease.expires_at_ms))
                    }
                    Ok(_) | Err(LockError::QueueFull) => {}
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            2 => {
                // The holder renews or releases with the newest token it may have.
                let token = leases.last().map_or(0, |l| l.0);
                let release = rng.below(2) == 0;
                let (r, events) = persisted(&mut stored, |s: &mut LockState| {
                    if release {
                        let (r, events) = s.release(token, now);
                        (r.map(|()| now), events)
                    } else {
                        let (r, events) = s.renew(token, MIN_TTL_MS, now);
                        (r.map(|l| l.expires_at_ms), events)
                    }
                });
                match r {
                    Ok(end) => {
                        let last = leases.last_mut().expect("a lease exists");
                        assert_eq!(last.0, token);
                        last.2 = end;
                    }
                    Err(e) => assert!(["stale_token", "not_holder"].contains(&e.code()), "{e}"),
                }
                record(&mut leases, &events, now);
            }
            _ => {
                // The alarm, possibly late.
                let due: Option<u64> =
                    persisted(&mut stored, |s: &mut LockState| s.next_alarm_ms());
                if let Some(at) = due {
                    now = now.max(at + rng.below(50));
                }
                let events = persisted(&mut stored, |s: &mut LockState| s.tick(now));
                record(&mut leases, &events, now);
            }
        }
    }
    assert!(leases.len() > 100, "only {} grants", leases.len());
    for pair in leases.windows(2) {
        let ((t0, _, end0), (t1, start1, _)) = (pair[0], pair[1]);
        assert!(t1 > t0, "tokens increase: {t0} then {t1}");
        assert!(
            end0 <= start1,
            "lease {t0} ends at {end0}, {t1} starts at {start1}"
        );
    }
}
