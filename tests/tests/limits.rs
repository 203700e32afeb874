//! Global limits across processes: three gateways and two limiter nodes sharing Redis (and a
//! fresh PostgreSQL database for the gateways' configuration). A limit of 100 lets exactly 100
//! of 1,000 concurrent requests through, whichever gateway and limiter each reaches; killing a
//! limiter node mid-traffic costs at most the checks it had in flight (answered as the policy's
//! failure mode) and moves the gateways to the other; a Redis restart costs only the
//! requests made while it is down, answered as the policy's failure mode says.

use portcullis_cluster_tests::*;

const SEED: &str = "policies:
  - name: cap
    limits:
      - {name: daily, scope: client, count: 100, window: day}
  - name: roomy
    limits:
      - {name: daily, scope: client, count: 1000000, window: day}
";

#[tokio::test]
async fn limits_are_exact_across_gateways_and_limiters() {
    let (Some(redis), Some(pg)) = (
        service("PORTCULLIS_TEST_REDIS_URL"),
        service("PORTCULLIS_TEST_POSTGRES_URL"),
    ) else {
        return;
    };
    let db = Database::create(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = Tokens::new(dir.path());
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, SEED).unwrap();
    let prefix = prefix();
    // Exactness is the point, not latency: a debug build, a burst of 1,000 and the shared Redis
    // of a whole test run may take longer than the default 250 ms per Redis operation.
    let patient = ["--redis-timeout", "5s"];
    let mut limiter_a = Limiter::start(&tokens, &redis, &prefix, &seed, &patient);
    let limiter_b = Limiter::start(&tokens, &redis, &prefix, &seed, &patient);

    let (up, _) = upstream().await;
    let secret = "cluster-test-token-secret-0123456789abcdef";
    let token = configure(
        &db.url,
        secret,
        &format!(
            "collections:
  - id: capped
    base_path: /capped
    quota_policy: cap
    upstreams: {{ sandbox: \"http://{up}\" }}
    operations:
      - {{ id: get, methods: [GET], path: / }}
  - id: open
    base_path: /open
    quota_policy: roomy
    upstreams: {{ sandbox: \"http://{up}\" }}
    operations:
      - {{ id: get, methods: [GET], path: / }}
clients:
  - id: acme
    partner: acme
    profiles:
      - {{ id: acme-sbx, environment: sandbox, collections: [capped, open] }}
"
        ),
        "acme",
        "acme-sbx",
    );

    let limiters = format!("{},{}", limiter_a.url, limiter_b.url);
    let check = tokens.check_file.to_str().unwrap();
    let args = [
        "--limiter",
        limiters.as_str(),
        "--limiter-token-file",
        check,
        // Exactness is the point, not latency: a debug build under a burst of 1,000.
        "--limiter-timeout",
        "5s",
    ];
    let g1 = Gateway::start(&db.url, secret, &args);
    let g2 = Gateway::start(&db.url, secret, &args);
    let g3 = Gateway::start(&db.url, secret, &args);

    let results = burst(&[&g1, &g2, &g3], "/capped/", &token, 1000).await;
    let passed = results.iter().filter(|(s, _)| *s == 200).count();
    let limited = results
        .iter()
        .filter(|(s, c)| *s == 429 && c == "quota_exhausted")
        .count();
    assert_eq!(
        (passed, limited),
        (100, 900),
        "limit 100 through three gateways and two limiters; others: {:?}",
        results
            .iter()
            .filter(|(s, _)| *s != 200 && *s != 429)
            .take(3)
            .collect::<Vec<_>>()
    );

    // A limiter node dies in the middle of steady traffic: only checks it had already taken
    // (at most one per caller in flight) get the policy's failure mode, 503 platform_degraded
    // (fail_closed, the default); every other request is answered, through the other node.
    const CALLERS: usize = 8;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(2500);
    let steady = |i: usize| {
        let url = format!("{}/open/", [&g1, &g2, &g3][i % 3].url);
        let token = token.clone();
        async move {
            let http = reqwest::Client::new();
            let mut seen = Vec::new();
            while tokio::time::Instant::now() < deadline {
                let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                seen.push((
                    status,
                    body["error"]["code"].as_str().unwrap_or("").to_owned(),
                ));
            }
            seen
        }
    };
    let callers = futures_util::future::join_all((0..CALLERS).map(steady));
    let killer = async {
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        limiter_a.process.kill();
    };
    let (seen, ()) = tokio::join!(callers, killer);
    let seen: Vec<(u16, String)> = seen.into_iter().flatten().collect();
    let failed: Vec<&(u16, String)> = seen.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed
            .iter()
            .all(|(s, c)| *s == 503 && c == "platform_degraded"),
        "only the failure mode: {failed:?}"
    );
    assert!(
        failed.len() <= CALLERS,
        "{} of {} requests failed: more than were in flight at the kill",
        failed.len(),
        seen.len()
    );
    assert!(seen.len() > 10 * CALLERS, "traffic flowed: {}", seen.len());

    // After it: the gateways carry on with the other node, no request fails.
    let results = burst(&[&g1, &g2, &g3], "/open/", &token, 200).await;
    assert!(
        results.iter().all(|(s, _)| *s == 200),
        "after a limiter was killed: {:?}",
        results
            .iter()
            .filter(|(s, _)| *s != 200)
            .take(3)
            .collect::<Vec<_>>()
    );
    drop(limiter_b);
    db.drop_db().await;
}

#[tokio::test]
async fn a_redis_restart_costs_only_the_requests_made_while_it_is_down() {
    let Some(pg) = service("PORTCULLIS_TEST_POSTGRES_URL") else {
        return;
    };
    let Some(mut redis) = OwnRedis::start() else {
        return;
    };
    let db = Database::create(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = Tokens::new(dir.path());
    let seed = dir.path().join("seed.yaml");
    std::fs::write(
        &seed,
        "policies:\n  - name: roomy\n    limits:\n      - {name: daily, scope: client, count: 1000000, window: day}\n",
    )
    .unwrap();
    let prefix = prefix();
    // Patient while Redis is up (a loaded CI machine); a stopped Redis refuses at once.
    let patient = ["--redis-timeout", "2s"];
    let limiter_a = Limiter::start(&tokens, &redis.url, &prefix, &seed, &patient);
    let limiter_b = Limiter::start(&tokens, &redis.url, &prefix, &seed, &patient);
    let (up, _) = upstream().await;
    let secret = "cluster-test-token-secret-0123456789abcdef";
    let token = configure(
        &db.url,
        secret,
        &format!(
            "collections:
  - id: open
    base_path: /open
    quota_policy: roomy
    upstreams: {{ sandbox: \"http://{up}\" }}
    operations:
      - {{ id: get, methods: [GET], path: / }}
clients:
  - id: acme
    profiles:
      - {{ id: acme-sbx, environment: sandbox, collections: [open] }}
"
        ),
        "acme",
        "acme-sbx",
    );
    let limiters = format!("{},{}", limiter_a.url, limiter_b.url);
    let check = tokens.check_file.to_str().unwrap();
    let args = [
        "--limiter",
        &limiters,
        "--limiter-token-file",
        check,
        "--limiter-timeout",
        "3s",
    ];
    let gateways: Vec<Gateway> = (0..3)
        .map(|_| Gateway::start(&db.url, secret, &args))
        .collect();
    let all: Vec<&Gateway> = gateways.iter().collect();
    assert!(
        burst(&all, "/open/", &token, 30)
            .await
            .iter()
            .all(|(s, _)| *s == 200)
    );

    // Redis down: the policy fails closed, with the stable code, on every gateway.
    redis.stop();
    let down = burst(&all, "/open/", &token, 30).await;
    assert!(
        down.iter()
            .all(|(s, c)| *s == 503 && c == "platform_degraded"),
        "{down:?}"
    );
    // Back: the limiters reconnect by themselves and nothing else is lost.
    redis.restart();
    // Every gateway through both limiter nodes: each node reconnects on its own.
    let back = within(std::time::Duration::from_secs(15), || async {
        burst(&all, "/open/", &token, 30)
            .await
            .iter()
            .all(|(s, _)| *s == 200)
    })
    .await
    .expect("requests pass again after Redis is back");
    eprintln!("requests passed again {back:?} after Redis restarted");
    assert!(
        burst(&all, "/open/", &token, 60)
            .await
            .iter()
            .all(|(s, _)| *s == 200)
    );
    drop(gateways);
    db.drop_db().await;
}
