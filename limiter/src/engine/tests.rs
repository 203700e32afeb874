//! Every behaviour is checked against both backends: in-process memory, and Redis when
//! `PORTCULLIS_TEST_REDIS_URL` is set (each test under its own key prefix).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use time::macros::datetime;

use super::*;
use crate::counters::{MemoryCounters, RedisCounters};
use crate::policy::{Limit, LimitKind, Override, Policy, QuotaWindow, RatePeriod, Scope};
use crate::redis_pool::RedisSettings;

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
        on_unavailable: crate::policy::FailureMode::FailClosed,
    }
}

fn catalog(policies: Vec<Policy>) -> Catalog {
    Catalog {
        version: 1,
        policies: policies.into_iter().map(|p| (p.name.clone(), p)).collect(),
        overrides: Vec::new(),
    }
}

/// The Redis URL for tests, or `None` (and a note) when it is not configured.
pub(crate) fn redis_url() -> Option<String> {
    match std::env::var("PORTCULLIS_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("PORTCULLIS_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "PORTCULLIS_TEST_REDIS_URL is required (PORTCULLIS_REQUIRE_SERVICES=1)"
            );
            eprintln!("skipping the Redis backend: PORTCULLIS_TEST_REDIS_URL is not set");
            None
        }
    }
}

/// Settings for a fresh key space on the test Redis.
pub(crate) fn redis_settings(url: String) -> RedisSettings {
    RedisSettings {
        url,
        prefix: format!("pctest-{}", uuid_like()),
        pool_size: 4,
        timeout: Duration::from_secs(2),
    }
}

fn uuid_like() -> String {
    let n: u128 = rand::random();
    format!("{n:032x}")
}

/// One engine per available backend, each over `policies`.
fn engines(policies: Vec<Policy>) -> Vec<(&'static str, Engine)> {
    let mut out = vec![(
        "memory",
        Engine::new(
            catalog(policies.clone()),
            Counters::Memory(MemoryCounters::new(10_000)),
        ),
    )];
    if let Some(url) = redis_url() {
        let counters = RedisCounters::new(&redis_settings(url)).unwrap();
        out.push((
            "redis",
            Engine::new(catalog(policies), Counters::Redis(counters)),
        ));
    }
    out
}

fn subject(client: &str) -> Subject<'_> {
    Subject {
        client,
        profile: "p",
        collection: "orders",
        operation: "get",
        source_ip: None,
    }
}

async fn check(engine: &Engine, subject: &Subject<'_>, now: OffsetDateTime) -> Decision {
    engine.check(&["standard"], subject, 1, now).await.unwrap()
}

const T0: OffsetDateTime = datetime!(2026-03-31 23:59:58 UTC);

fn rate(count: u64, per: RatePeriod) -> LimitKind {
    LimitKind::Rate { count, per }
}

fn quota(count: u64, window: QuotaWindow) -> LimitKind {
    LimitKind::Quota { count, window }
}

#[tokio::test]
async fn a_rate_admits_a_burst_then_refills_smoothly() {
    let p = policy(vec![("rps", Scope::Client, rate(10, RatePeriod::Second))]);
    for (backend, engine) in engines(vec![p]) {
        for i in 0..10 {
            let d = check(&engine, &subject("acme"), T0).await;
            assert!(d.allowed, "{backend}: hit {i}");
            assert_eq!(d.limits[0].remaining, 9 - i, "{backend}");
            assert_eq!(d.limits[0].quota, 10);
            assert_eq!(d.limits[0].window, Duration::from_secs(1));
        }
        let denied = check(&engine, &subject("acme"), T0).await;
        assert!(!denied.allowed, "{backend}");
        assert_eq!(
            denied.limits[0].retry_after,
            Some(Duration::from_millis(100)),
            "{backend}"
        );
        // One emission interval later, exactly one more fits.
        let later = T0 + Duration::from_millis(100);
        assert!(
            check(&engine, &subject("acme"), later).await.allowed,
            "{backend}"
        );
        assert!(
            !check(&engine, &subject("acme"), later).await.allowed,
            "{backend}"
        );
        // Another client has its own counter.
        assert!(
            check(&engine, &subject("other"), T0).await.allowed,
            "{backend}"
        );
        // After a full period the whole burst is back.
        let d = check(&engine, &subject("acme"), T0 + Duration::from_secs(2)).await;
        assert_eq!(d.limits[0].remaining, 9, "{backend}");
    }
}

#[tokio::test]
async fn quotas_roll_over_at_utc_calendar_boundaries() {
    let day = policy(vec![
        ("daily", Scope::Profile, quota(2, QuotaWindow::Day)),
        ("monthly", Scope::Client, quota(3, QuotaWindow::Month)),
    ]);
    for (backend, engine) in engines(vec![day]) {
        assert!(check(&engine, &subject("acme"), T0).await.allowed);
        assert!(check(&engine, &subject("acme"), T0).await.allowed);
        let denied = check(&engine, &subject("acme"), T0).await;
        assert!(!denied.allowed, "{backend}");
        // Two seconds before midnight UTC: the retry hint says so.
        assert_eq!(
            denied.limits[0].retry_after,
            Some(Duration::from_secs(2)),
            "{backend}"
        );
        assert_eq!(denied.limits[0].window, Duration::from_secs(86_400));
        // The day (and, on 31 March, the month) rolls over at midnight UTC.
        let april = T0 + Duration::from_secs(2);
        let d = check(&engine, &subject("acme"), april).await;
        assert!(d.allowed, "{backend}");
        assert_eq!(d.limits[1].remaining, 2, "{backend}: a fresh month");
        assert_eq!(d.limits[1].window, Duration::from_secs(30 * 86_400));
        // Within April the monthly quota keeps counting across days.
        assert!(
            check(
                &engine,
                &subject("acme"),
                april + Duration::from_secs(86_400)
            )
            .await
            .allowed
        );
        assert!(
            check(
                &engine,
                &subject("acme"),
                april + Duration::from_secs(2 * 86_400)
            )
            .await
            .allowed
        );
        let d = check(
            &engine,
            &subject("acme"),
            april + Duration::from_secs(3 * 86_400),
        )
        .await;
        assert!(
            !d.allowed && d.limits[0].allowed && !d.limits[1].allowed,
            "{backend}"
        );
    }

    assert_eq!(
        window_end(T0, QuotaWindow::Day),
        datetime!(2026-04-01 00:00 UTC)
    );
    assert_eq!(
        window_end(T0, QuotaWindow::Month),
        datetime!(2026-04-01 00:00 UTC)
    );
    assert_eq!(
        window_bounds(datetime!(2026-12-15 10:00 UTC), QuotaWindow::Month),
        (
            datetime!(2026-12-01 00:00 UTC),
            datetime!(2027-01-01 00:00 UTC)
        )
    );
    // 2026-04-01 is a Wednesday: the week runs from Monday 2026-03-30 to Monday 2026-04-06.
    assert_eq!(
        window_bounds(datetime!(2026-04-01 12:00 UTC), QuotaWindow::Week),
        (
            datetime!(2026-03-30 00:00 UTC),
            datetime!(2026-04-06 00:00 UTC)
        )
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

#[tokio::test]
async fn a_refused_request_consumes_nothing_from_any_limit() {
    // Mid-month, so the monthly quota cannot roll over during the test.
    let t = datetime!(2026-03-15 12:00 UTC);
    let p = policy(vec![
        ("roomy", Scope::Client, quota(100, QuotaWindow::Month)),
        ("tight", Scope::Operation, rate(1, RatePeriod::Minute)),
    ]);
    for (backend, engine) in engines(vec![p]) {
        assert!(check(&engine, &subject("a"), t).await.allowed);
        for _ in 0..5 {
            let d = check(&engine, &subject("a"), t).await;
            assert!(!d.allowed, "{backend}");
            assert!(d.limits[0].allowed && !d.limits[1].allowed, "{backend}");
            // Reported as it stands: one hit used, none charged for this refused request.
            assert_eq!(d.limits[0].remaining, 99, "{backend}");
        }
        // The roomy quota was charged once, not six times.
        let d = check(&engine, &subject("a"), t + Duration::from_secs(61)).await;
        assert!(d.allowed, "{backend}");
        assert_eq!(d.limits[0].remaining, 98, "{backend}");
    }
}

#[tokio::test]
async fn scopes_count_what_they_say() {
    let p = policy(vec![
        ("product-cap", Scope::Collection, quota(3, QuotaWindow::Day)),
        ("per-ip", Scope::SourceIp, quota(1, QuotaWindow::Day)),
    ]);
    for (backend, engine) in engines(vec![p]) {
        // The collection cap is shared by every client; the IP limit applies only with an
        // address.
        assert!(check(&engine, &subject("a"), T0).await.allowed);
        assert!(check(&engine, &subject("b"), T0).await.allowed);
        let mut with_ip = subject("c");
        with_ip.source_ip = Some("192.0.2.1".parse().unwrap());
        let d = check(&engine, &with_ip, T0).await;
        assert!(d.allowed && d.limits.len() == 2, "{backend}");
        let d = check(&engine, &with_ip, T0).await;
        assert!(
            !d.allowed,
            "{backend}: collection cap and IP quota both spent"
        );
        // Another collection has its own cap.
        let mut other = subject("a");
        other.collection = "billing";
        assert!(check(&engine, &other, T0).await.allowed, "{backend}");
    }
}

#[tokio::test]
async fn exactly_the_limit_passes_under_concurrency() {
    let p = policy(vec![("cap", Scope::Client, quota(100, QuotaWindow::Day))]);
    for (backend, engine) in engines(vec![p]) {
        let engine = Arc::new(engine);
        let passed = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let (engine, passed) = (engine.clone(), passed.clone());
                tokio::spawn(async move {
                    if check(&engine, &subject("acme"), T0).await.allowed {
                        passed.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            passed.load(Ordering::SeqCst),
            100,
            "{backend}: 1,000 concurrent checks against a limit of 100"
        );
    }
}

#[tokio::test]
async fn overrides_scale_the_principal_limits_only() {
    let t = datetime!(2026-03-15 12:00 UTC);
    let p = policy(vec![
        ("monthly", Scope::Client, quota(2, QuotaWindow::Month)),
        (
            "product-cap",
            Scope::Collection,
            quota(100, QuotaWindow::Month),
        ),
    ]);
    for (backend, engine) in engines(vec![p.clone()]) {
        let mut c = catalog(vec![p.clone()]);
        c.version = 2;
        c.overrides = vec![
            Override {
                policy: "standard".into(),
                client: "acme".into(),
                profile: None,
                multiplier: 2.0,
                expires_at: Some(datetime!(2026-04-01 00:00 UTC)),
                note: "launch month".into(),
            },
            Override {
                policy: "standard".into(),
                client: "acme".into(),
                profile: Some("vip".into()),
                multiplier: 5.0,
                expires_at: None,
                note: String::new(),
            },
            Override {
                policy: "standard".into(),
                client: "lapsed".into(),
                profile: None,
                multiplier: 10.0,
                expires_at: Some(datetime!(2026-03-01 00:00 UTC)),
                note: String::new(),
            },
        ];
        engine.install(c);
        let d = check(&engine, &subject("acme"), t).await;
        assert_eq!(
            (d.limits[0].quota, d.limits[0].remaining),
            (4, 3),
            "{backend}"
        );
        assert_eq!(
            d.limits[1].quota, 100,
            "{backend}: the product cap is not scaled"
        );
        let mut vip = subject("acme");
        vip.profile = "vip";
        let d = check(&engine, &vip, t).await;
        assert_eq!(
            d.limits[0].quota, 10,
            "{backend}: the profile's own override wins"
        );
        let d = check(&engine, &subject("lapsed"), t).await;
        assert_eq!(
            d.limits[0].quota, 2,
            "{backend}: an expired override is ignored"
        );
        // The launch-month override lapses with March.
        let d = check(&engine, &subject("acme"), datetime!(2026-04-02 00:00 UTC)).await;
        assert_eq!(d.limits[0].quota, 2, "{backend}");
    }
}

#[tokio::test]
async fn usage_reads_without_charging_and_resets() {
    let t = datetime!(2026-03-15 12:00 UTC);
    let p = policy(vec![
        ("daily", Scope::Client, quota(5, QuotaWindow::Day)),
        ("rps", Scope::Client, rate(10, RatePeriod::Second)),
    ]);
    for (backend, engine) in engines(vec![p]) {
        for _ in 0..3 {
            assert!(check(&engine, &subject("acme"), t).await.allowed);
        }
        for _ in 0..2 {
            let peek = engine
                .check(&["standard"], &subject("acme"), 0, t)
                .await
                .unwrap();
            assert_eq!(
                peek.limits[0].remaining, 2,
                "{backend}: reading charges nothing"
            );
        }
        let reset = engine
            .reset("standard", Some("daily"), &subject("acme"), t)
            .await
            .unwrap();
        assert_eq!(reset, vec!["daily".to_owned()]);
        let peek = engine
            .check(&["standard"], &subject("acme"), 0, t)
            .await
            .unwrap();
        assert_eq!(
            peek.limits[0].remaining, 5,
            "{backend}: the daily quota starts afresh"
        );
        assert_eq!(
            peek.limits[1].remaining, 7,
            "{backend}: the rate was not reset"
        );
        assert!(matches!(
            engine
                .reset("standard", Some("nope"), &subject("acme"), t)
                .await,
            Err(CheckError::UnknownLimit { .. })
        ));
        assert!(matches!(
            engine.check(&["nope"], &subject("acme"), 1, t).await,
            Err(CheckError::UnknownPolicy(_))
        ));
    }
}

#[tokio::test]
async fn idle_memory_counters_are_evicted_to_bound_memory() {
    let p = policy(vec![("rps", Scope::Client, rate(5, RatePeriod::Second))]);
    let counters = MemoryCounters::new(100);
    let engine = Engine::new(catalog(vec![p]), Counters::Memory(counters));
    for i in 0..100 {
        assert!(check(&engine, &subject(&format!("c{i}")), T0).await.allowed);
    }
    // Two seconds later every one of those counters is drained; new keys push them out.
    let later = T0 + Duration::from_secs(2);
    for i in 0..50 {
        assert!(
            check(&engine, &subject(&format!("n{i}")), later)
                .await
                .allowed
        );
    }
    let Counters::Memory(counters) = &engine.counters else {
        unreachable!()
    };
    assert!(counters.len() <= 100, "{} counters", counters.len());
}

#[test]
fn policies_are_validated() {
    use crate::policy::PolicyError;
    let ok = policy(vec![("a", Scope::Client, rate(1, RatePeriod::Second))]);
    assert_eq!(ok.validate(), Ok(()));
    let zero = policy(vec![("a", Scope::Client, rate(0, RatePeriod::Second))]);
    assert_eq!(zero.validate(), Err(PolicyError::BadCount("a".into())));
    let dup = policy(vec![
        ("a", Scope::Client, rate(1, RatePeriod::Second)),
        ("a", Scope::Profile, quota(1, QuotaWindow::Day)),
    ]);
    assert_eq!(dup.validate(), Err(PolicyError::DuplicateLimit("a".into())));
    let spaced = policy(vec![("a b", Scope::Client, rate(1, RatePeriod::Second))]);
    assert_eq!(
        spaced.validate(),
        Err(PolicyError::BadLimitName("a b".into()))
    );
}

#[test]
fn policies_read_from_yaml() {
    let yaml = "name: partner\non_unavailable: local_limit\nlimits:\n  - {name: burst, scope: client, count: 100, per: second}\n  - {name: monthly, scope: profile, count: 10000, window: month}\n";
    let p: Policy = serde_saphyr::from_str(yaml).unwrap();
    assert_eq!(p.on_unavailable, crate::policy::FailureMode::LocalLimit);
    assert_eq!(p.limits[0].kind, rate(100, RatePeriod::Second));
    assert_eq!(p.limits[1].kind, quota(10_000, QuotaWindow::Month));
    let typo = "name: p\nlimits:\n  - {name: b, scope: client, count: 1, per: second, burst: 3}\n";
    assert!(
        serde_saphyr::from_str::<Policy>(typo).is_err(),
        "unknown fields are refused"
    );
}
