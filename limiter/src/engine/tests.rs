use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use time::macros::datetime;

use super::*;
use crate::policy::{Limit, LimitKind, Policy, QuotaWindow, RatePeriod, Scope};

fn policy(limits: Vec<(&str, Scope, LimitKind)>) -> Policy {
    Policy {
        name: "standard".into(),
        limits: limits
            .into_iter()
            .map(|(name, scope, kind)| Limit {
                name: name.into(),
                scope,
                kind,
            })
            .collect(),
    }
}

fn request(client: &str) -> CheckRequest<'_> {
    CheckRequest {
        client,
        profile: "p",
        collection: "orders",
        operation: "get",
        source_ip: None,
        hits: 1,
    }
}

const T0: OffsetDateTime = datetime!(2026-03-31 23:59:58 UTC);

#[test]
fn a_rate_admits_a_burst_then_refills_smoothly() {
    let engine = MemoryEngine::new(1000);
    let p = policy(vec![(
        "rps",
        Scope::Client,
        LimitKind::Rate {
            count: 10,
            per: RatePeriod::Second,
        },
    )]);
    for i in 0..10 {
        let d = engine.check(&[&p], &request("acme"), T0);
        assert!(d.allowed, "hit {i}");
        assert_eq!(d.limits[0].remaining, 9 - i);
    }
    let denied = engine.check(&[&p], &request("acme"), T0);
    assert!(!denied.allowed);
    assert_eq!(
        denied.limits[0].retry_after,
        Some(Duration::from_millis(100))
    );
    // One emission interval later, exactly one more fits.
    let later = T0 + Duration::from_millis(100);
    assert!(engine.check(&[&p], &request("acme"), later).allowed);
    assert!(!engine.check(&[&p], &request("acme"), later).allowed);
    // Another client has its own counter.
    assert!(engine.check(&[&p], &request("other"), T0).allowed);
    // After a full period the whole burst is back.
    let much_later = T0 + Duration::from_secs(2);
    let d = engine.check(&[&p], &request("acme"), much_later);
    assert_eq!(d.limits[0].remaining, 9);
}

#[test]
fn quotas_roll_over_at_utc_calendar_boundaries() {
    let engine = MemoryEngine::new(1000);
    let day = policy(vec![(
        "daily",
        Scope::Profile,
        LimitKind::Quota {
            count: 2,
            window: QuotaWindow::Day,
        },
    )]);
    assert!(engine.check(&[&day], &request("acme"), T0).allowed);
    assert!(engine.check(&[&day], &request("acme"), T0).allowed);
    let denied = engine.check(&[&day], &request("acme"), T0);
    assert!(!denied.allowed);
    // Two seconds before midnight UTC: the retry hint says so.
    assert_eq!(denied.limits[0].retry_after, Some(Duration::from_secs(2)));
    assert!(
        engine
            .check(&[&day], &request("acme"), T0 + Duration::from_secs(2))
            .allowed
    );

    assert_eq!(
        window_end(T0, QuotaWindow::Day),
        datetime!(2026-04-01 00:00 UTC)
    );
    assert_eq!(
        window_end(T0, QuotaWindow::Month),
        datetime!(2026-04-01 00:00 UTC)
    );
    assert_eq!(
        window_end(datetime!(2026-12-15 10:00 UTC), QuotaWindow::Month),
        datetime!(2027-01-01 00:00 UTC)
    );
    // 2026-04-01 is a Wednesday: the week ends on Monday 2026-04-06.
    assert_eq!(
        window_end(datetime!(2026-04-01 12:00 UTC), QuotaWindow::Week),
        datetime!(2026-04-06 00:00 UTC)
    );
    assert_eq!(
        window_end(datetime!(2026-04-06 00:00 UTC), QuotaWindow::Week),
        datetime!(2026-04-13 00:00 UTC)
    );
    // Offsets are normalised to UTC.
    assert_eq!(
        window_end(datetime!(2026-04-01 01:00 +02:00), QuotaWindow::Day),
        datetime!(2026-04-01 00:00 UTC)
    );
}

#[test]
fn a_refused_request_consumes_nothing_from_any_limit() {
    // Mid-month, so the monthly quota cannot roll over during the test.
    let t = datetime!(2026-03-15 12:00 UTC);
    let engine = MemoryEngine::new(1000);
    let p = policy(vec![
        (
            "roomy",
            Scope::Client,
            LimitKind::Quota {
                count: 100,
                window: QuotaWindow::Month,
            },
        ),
        (
            "tight",
            Scope::Operation,
            LimitKind::Rate {
                count: 1,
                per: RatePeriod::Minute,
            },
        ),
    ]);
    assert!(engine.check(&[&p], &request("a"), t).allowed);
    for _ in 0..5 {
        let d = engine.check(&[&p], &request("a"), t);
        assert!(!d.allowed);
        assert!(d.limits[0].allowed && !d.limits[1].allowed);
        // Reported as it stands: one hit used, none charged for this refused request.
        assert_eq!(d.limits[0].remaining, 99);
    }
    // The roomy quota was charged once, not six times.
    let later = t + Duration::from_secs(61);
    let d = engine.check(&[&p], &request("a"), later);
    assert!(d.allowed);
    assert_eq!(d.limits[0].remaining, 98);
}

#[test]
fn scopes_count_what_they_say() {
    let engine = MemoryEngine::new(1000);
    let p = policy(vec![
        (
            "product-cap",
            Scope::Collection,
            LimitKind::Quota {
                count: 3,
                window: QuotaWindow::Day,
            },
        ),
        (
            "per-ip",
            Scope::SourceIp,
            LimitKind::Quota {
                count: 1,
                window: QuotaWindow::Day,
            },
        ),
    ]);
    // The collection cap is shared by every client; the IP limit applies only with an address.
    assert!(engine.check(&[&p], &request("a"), T0).allowed);
    assert!(engine.check(&[&p], &request("b"), T0).allowed);
    let mut with_ip = request("c");
    with_ip.source_ip = Some("192.0.2.1".parse().unwrap());
    let d = engine.check(&[&p], &with_ip, T0);
    assert!(d.allowed && d.limits.len() == 2);
    let d = engine.check(&[&p], &with_ip, T0);
    assert!(!d.allowed, "collection cap and IP quota both spent");
}

#[test]
fn exactly_the_limit_passes_under_concurrency() {
    let engine = Arc::new(MemoryEngine::new(10_000));
    let p = Arc::new(policy(vec![(
        "cap",
        Scope::Client,
        LimitKind::Quota {
            count: 100,
            window: QuotaWindow::Day,
        },
    )]));
    let passed = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (engine, p, passed) = (engine.clone(), p.clone(), passed.clone());
            std::thread::spawn(move || {
                for _ in 0..125 {
                    if engine.check(&[&p], &request("acme"), T0).allowed {
                        passed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        passed.load(Ordering::SeqCst),
        100,
        "1,000 concurrent checks against a limit of 100"
    );
}

#[test]
fn idle_counters_are_evicted_to_bound_memory() {
    let engine = MemoryEngine::new(100);
    let p = policy(vec![(
        "rps",
        Scope::Client,
        LimitKind::Rate {
            count: 5,
            per: RatePeriod::Second,
        },
    )]);
    for i in 0..100 {
        assert!(engine.check(&[&p], &request(&format!("c{i}")), T0).allowed);
    }
    // A second later every one of those counters is drained; new keys push them out.
    let later = T0 + Duration::from_secs(2);
    for i in 0..50 {
        assert!(
            engine
                .check(&[&p], &request(&format!("n{i}")), later)
                .allowed
        );
    }
    assert!(engine.len() <= 100, "{} counters", engine.len());
}

#[test]
fn policies_are_validated() {
    use crate::policy::PolicyError;
    let ok = policy(vec![(
        "a",
        Scope::Client,
        LimitKind::Rate {
            count: 1,
            per: RatePeriod::Second,
        },
    )]);
    assert_eq!(ok.validate(), Ok(()));
    let zero = policy(vec![(
        "a",
        Scope::Client,
        LimitKind::Rate {
            count: 0,
            per: RatePeriod::Second,
        },
    )]);
    assert_eq!(zero.validate(), Err(PolicyError::BadCount("a".into())));
    let dup = policy(vec![
        (
            "a",
            Scope::Client,
            LimitKind::Rate {
                count: 1,
                per: RatePeriod::Second,
            },
        ),
        (
            "a",
            Scope::Profile,
            LimitKind::Quota {
                count: 1,
                window: QuotaWindow::Day,
            },
        ),
    ]);
    assert_eq!(dup.validate(), Err(PolicyError::DuplicateLimit("a".into())));
}
