//! Rates and quotas through the gateway: the in-process limiter (the embedded default) and
//! remote limiter nodes over gRPC with Redis; exactness under concurrency, the 429 answers and
//! their headers, `portcullis quota`, and what callers see when the limiter or Redis is down.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::join_all;
use portcullis_limiter::node::Backend;
use portcullis_proto::limiter::v1 as pb;
use support::*;

/// Two collections: `orders` protected by `orders_policy`, `billing` by `billing_policy`.
fn config(up: &str, orders_policy: &str, billing_policy: &str) -> String {
    format!(
        r#"
collections:
  - id: orders
    base_path: /orders
    quota_policy: {orders_policy}
    upstreams: {{ sandbox: "{up}/sbx", production: "{up}/prod" }}
    operations:
      - {{ id: list, methods: [GET], path: / }}
  - id: billing
    base_path: /billing
    quota_policy: {billing_policy}
    upstreams: {{ sandbox: "{up}/sbx", production: "{up}/prod" }}
    operations:
      - {{ id: list, methods: [GET], path: / }}
"#
    )
}

const SEED: &str = "policies:
  - name: cap
    limits:
      - {name: daily, scope: client, count: 100, window: day}
  - name: slow
    limits:
      - {name: per-minute, scope: client, count: 5, per: minute}
  - name: strict
    limits:
      - {name: daily, scope: client, count: 1000, window: day}
  - name: lenient
    on_unavailable: local_limit
    limits:
      - {name: daily, scope: client, count: 3, window: day}
";

fn seed_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), SEED).unwrap();
    file
}

/// Sends `n` GETs at once, spread over `nodes`; returns the responses' statuses and codes.
async fn burst(nodes: &[&Node], path: &str, n: usize) -> Vec<(u16, String)> {
    let clients: Vec<_> = nodes
        .iter()
        .map(|node| (node.http(), node.gateway.clone()))
        .collect();
    let clients = Arc::new(clients);
    let tasks = (0..n).map(|i| {
        let clients = clients.clone();
        let path = path.to_owned();
        async move {
            let (http, base) = &clients[i % clients.len()];
            let response = http.get(format!("{base}{path}")).send().await.unwrap();
            let status = response.status().as_u16();
            (status, code_or_empty(&response.text().await.unwrap()))
        }
    });
    join_all(tasks).await
}

fn count(results: &[(u16, String)], status: u16) -> usize {
    results.iter().filter(|(s, _)| *s == status).count()
}

#[tokio::test]
async fn in_process_limits_are_exact_under_concurrency() {
    let up = Upstream::start().await;
    let seed = seed_file();
    let node = Node::builder()
        .config(&config(&up.url(), "cap", "slow"))
        .arg("--quota-seed")
        .arg(seed.path().to_str().unwrap())
        .start();
    let results = burst(&[&node], "/orders/", 1000).await;
    assert_eq!(
        count(&results, 200),
        100,
        "a limit of 100, 1,000 concurrent requests"
    );
    assert_eq!(count(&results, 429), 900);
    assert!(
        results
            .iter()
            .filter(|(s, _)| *s == 429)
            .all(|(_, code)| code == "quota_exhausted")
    );
    assert_eq!(
        up.seen().len(),
        100,
        "refused requests never reach the upstream"
    );
}

#[tokio::test]
async fn refusals_say_which_limit_and_when_to_retry() {
    let up = Upstream::start().await;
    let seed = seed_file();
    let node = Node::builder()
        .config(&config(&up.url(), "cap", "slow"))
        .arg("--quota-seed")
        .arg(seed.path().to_str().unwrap())
        .start();
    // An admitted answer tells the caller where it stands.
    let ok = node.get("/billing/").await;
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["ratelimit-policy"],
        "\"slow/per-minute\";q=5;w=60"
    );
    let current = ok.headers()["ratelimit"].to_str().unwrap().to_owned();
    assert!(
        current.starts_with("\"slow/per-minute\";r=4;t="),
        "{current}"
    );
    for _ in 0..4 {
        assert_eq!(node.get("/billing/").await.status(), 200);
    }
    // The sixth within a minute: a rate limit, not a quota, with a retry hint of about 12 s
    // (one emission interval of 5 per minute).
    let refused = node.get("/billing/").await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((11..=12).contains(&retry), "retry-after {retry}");
    assert!(
        refused.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .contains(";r=0;")
    );
    let body = refused.text().await.unwrap();
    assert_eq!(code(&body), "rate_limited");
    assert!(body.contains("slow/per-minute"), "{body}");

    // The orders collection's daily cap: a request refused by a quota says
    // `quota_exhausted`, and `Retry-After` runs to the end of the UTC day.
    let quota = burst(&[&node], "/orders/", 101).await;
    assert_eq!(count(&quota, 429), 1);
    let refused = node.get("/orders/").await;
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let to_midnight = 86_400
        - u64::from(now.hour()) * 3600
        - u64::from(now.minute()) * 60
        - u64::from(now.second());
    assert!(
        retry.abs_diff(to_midnight) <= 2,
        "retry-after {retry}, midnight in {to_midnight}"
    );
    assert_eq!(code(&refused.text().await.unwrap()), "quota_exhausted");
}

#[tokio::test]
async fn a_policy_the_limiter_lacks_is_the_platforms_fault() {
    let up = Upstream::start().await;
    let node = Node::with_config(&config(&up.url(), "no-such-policy", "slow"));
    let r = node.get("/orders/").await;
    assert_eq!(r.status(), 503);
    assert_eq!(code(&r.text().await.unwrap()), "platform_degraded");
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn quotas_are_managed_with_the_cli() {
    let up = Upstream::start().await;
    let seed = seed_file();
    let node = Node::builder()
        .config(&config(&up.url(), "lenient", "slow"))
        .arg("--quota-seed")
        .arg(seed.path().to_str().unwrap())
        .start();
    let quotas = node
        .quotas
        .clone()
        .expect("the in-process limiter's API is printed");
    let quota = |args: &[&str]| {
        let mut all = vec!["quota", "--limiter", quotas.as_str()];
        all.extend_from_slice(args);
        let out = node.cli(&all);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for _ in 0..3 {
        assert_eq!(node.get("/orders/").await.status(), 200);
    }
    assert_eq!(node.get("/orders/").await.status(), 429);

    let (ok, out, err) = quota(&["usage", "--policy", "lenient", "--client", "tester"]);
    assert!(ok, "{err}");
    assert!(out.contains("lenient/daily  quota  0 of 3 left"), "{out}");

    // Twice the quota for the rest of the month: one more request fits... three more.
    let (ok, _, err) = quota(&[
        "override",
        "set",
        "--policy",
        "lenient",
        "--client",
        "tester",
        "--multiplier",
        "2",
        "--until",
        "end-of-month",
        "--note",
        "launch week",
    ]);
    assert!(ok, "{err}");
    let results = burst(&[&node], "/orders/", 5).await;
    assert_eq!(count(&results, 200), 3);

    let (ok, _, err) = quota(&["reset", "--policy", "lenient", "--client", "tester"]);
    assert!(ok, "{err}");
    assert_eq!(node.get("/orders/").await.status(), 200);

    // Policies from a file, created or updated.
    let file = node.data_dir.join("more.yaml");
    std::fs::write(
        &file,
        "policies:\n  - name: lenient\n    limits:\n      - {name: daily, scope: client, count: 50, window: day}\n  - name: extra\n    limits:\n      - {name: rps, scope: client, count: 10, per: second}\n",
    )
    .unwrap();
    let (ok, out, err) = quota(&["apply", "-f", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("policy.update policy/lenient") && out.contains("policy.create policy/extra"),
        "{out}"
    );
    let (_, out, _) = quota(&["list"]);
    assert!(out.contains("name: extra"), "{out}");

    let (ok, out, _) = quota(&["changes"]);
    assert!(ok);
    let actions: Vec<_> = out
        .lines()
        .map(|l| l.split("  ").nth(3).unwrap_or(""))
        .collect();
    assert_eq!(
        actions,
        [
            "policy.create",
            "policy.create",
            "policy.create",
            "policy.create",
            "override.set",
            "usage.reset",
            "policy.update",
            "policy.create"
        ]
    );
    assert!(
        out.lines().skip(4).all(|l| l.contains("local-admin")),
        "{out}"
    );

    // Without the admin token nothing is changed, and the answer says why.
    let wrong = node.data_dir.join("wrong.token");
    std::fs::write(&wrong, "pcl_not-a-token").unwrap();
    let (ok, _, err) = quota(&["--token-file", wrong.to_str().unwrap(), "delete", "extra"]);
    assert!(!ok);
    assert!(err.contains("unauthenticated"), "{err}");
    let (ok, _, err) = quota(&[
        "override",
        "set",
        "--policy",
        "lenient",
        "--client",
        "tester",
        "--multiplier",
        "0",
    ]);
    assert!(!ok && err.contains("invalid"), "{err}");
}

#[tokio::test]
async fn two_gateways_and_two_limiters_on_redis_are_exact() {
    let Some(url) = redis_url() else { return };
    let tokens = LimiterTokens::new();
    let mut settings = redis_settings(&url);
    // Exactness is the point, not latency: under a burst of 1,000 in a loaded full test run, a
    // Redis operation can take longer than the usual 250 ms (a check that times out fails
    // closed, which is right in production and noise here).
    settings.timeout = std::time::Duration::from_secs(5);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let a = LimiterNode::start(Backend::Redis(settings.clone()), &tokens, SEED, any).await;
    let b = LimiterNode::start(Backend::Redis(settings), &tokens, SEED, any).await;
    let up = Upstream::start().await;
    let limiters = format!("{},{}", a.url(), b.url());
    // Two gateway processes on one store (SQLite in a shared data directory).
    let shared = tempfile::tempdir().unwrap();
    let gateway = |builder: NodeBuilder| {
        builder
            .data_dir(shared.path())
            .arg("--limiter")
            .arg(&limiters)
            .arg("--limiter-token-file")
            .arg(tokens.check_file.to_str().unwrap())
            // Exactness is the point here, not latency: a debug build under a burst of 1,000
            // needs more than the default deadline.
            .arg("--limiter-timeout")
            .arg("5s")
            .start()
    };
    let g1 = gateway(Node::builder().config(&config(&up.url(), "cap", "slow")));
    let mut g2 = gateway(Node::builder());
    assert!(
        g2.quotas.is_none(),
        "a gateway with remote limiters has no quota API of its own"
    );
    g2.token = g1.token.clone();
    let results = burst(&[&g1, &g2], "/orders/", 1000).await;
    assert_eq!(
        count(&results, 200),
        100,
        "limit 100 over two gateways and two limiters: {:?}",
        results
            .iter()
            .filter(|(s, _)| *s != 200 && *s != 429)
            .take(3)
            .collect::<Vec<_>>()
    );
    assert_eq!(count(&results, 429), 900);
}

#[tokio::test]
async fn when_the_limiter_is_down_each_policy_fails_as_configured() {
    let tokens = LimiterTokens::new();
    let dir = tempfile::tempdir().unwrap();
    let backend = || Backend::Local {
        data_dir: dir.path().to_owned(),
        max_keys: 10_000,
    };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut limiter = LimiterNode::start(backend(), &tokens, SEED, any).await;
    let up = Upstream::start().await;
    let node = Node::builder()
        .config(&config(&up.url(), "strict", "lenient"))
        .arg("--limiter")
        .arg(&limiter.url())
        .arg("--limiter-token-file")
        .arg(tokens.check_file.to_str().unwrap())
        .arg("--limiter-timeout")
        .arg("200ms")
        .start();
    assert_eq!(node.get("/orders/").await.status(), 200);
    assert_eq!(node.get("/billing/").await.status(), 200);

    let addr = limiter.addr;
    limiter.stop().await;
    // `strict` fails closed: the platform's 503, never the caller's 429.
    let r = node.get("/orders/").await;
    assert_eq!(r.status(), 503);
    assert_eq!(code(&r.text().await.unwrap()), "platform_degraded");
    // `lenient` counts on the gateway node: its 3 per day hold locally (the one admitted
    // before the outage was counted by the limiter, not here).
    let results = burst(&[&node], "/billing/", 5).await;
    assert_eq!(count(&results, 200), 3, "{results:?}");
    assert_eq!(count(&results, 429), 2);

    // The limiter returns: the gateway uses it again without a restart.
    let _limiter = LimiterNode::start(backend(), &tokens, SEED, addr).await;
    let mut recovered = false;
    for _ in 0..50 {
        if node.get("/orders/").await.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recovered, "the gateway went back to the limiter");
    // The limiter decides `lenient` again: the node's own count is spent (3 of 3), so what
    // passes now is the limiter's — afresh, as this limiter keeps its counters in memory.
    let results = burst(&[&node], "/billing/", 4).await;
    assert_eq!(count(&results, 200), 3, "{results:?}");
}

#[tokio::test]
async fn when_redis_is_down_checks_fail_as_configured_and_recover() {
    let Some(mut redis) = portcullis_cluster_tests::OwnRedis::start() else {
        return;
    };
    let tokens = LimiterTokens::new();
    let mut settings = redis_settings(&redis.url);
    settings.timeout = std::time::Duration::from_millis(100);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let _limiter = LimiterNode::start(Backend::Redis(settings), &tokens, SEED, any).await;
    let up = Upstream::start().await;
    let node = Node::builder()
        .config(&config(&up.url(), "strict", "lenient"))
        .arg("--limiter")
        .arg(&_limiter.url())
        .arg("--limiter-token-file")
        .arg(tokens.check_file.to_str().unwrap())
        .arg("--limiter-timeout")
        .arg("500ms")
        .start();
    assert_eq!(node.get("/orders/").await.status(), 200);

    redis.stop();
    let r = node.get("/orders/").await;
    assert_eq!(r.status(), 503);
    assert_eq!(code(&r.text().await.unwrap()), "platform_degraded");
    assert_eq!(
        node.get("/billing/").await.status(),
        200,
        "local_limit keeps serving"
    );

    redis.restart();
    let mut recovered = false;
    for _ in 0..50 {
        if node.get("/orders/").await.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "checks work again once Redis is back, without restarts"
    );
}

/// A limiter node of a release before `CheckBatch`: `Check` and `GetPolicies` go to a real
/// node; `CheckBatch` is answered `UNIMPLEMENTED`, as tonic answers a method it does not have.
struct EarlierRelease {
    node: pb::check_service_client::CheckServiceClient<tonic::transport::Channel>,
    batches: Arc<std::sync::atomic::AtomicUsize>,
}

#[tonic::async_trait]
impl pb::check_service_server::CheckService for EarlierRelease {
    async fn check(
        &self,
        request: tonic::Request<pb::CheckRequest>,
    ) -> Result<tonic::Response<pb::CheckResponse>, tonic::Status> {
        self.node.clone().check(forwarded(request)).await
    }

    async fn check_batch(
        &self,
        _: tonic::Request<pb::CheckBatchRequest>,
    ) -> Result<tonic::Response<pb::CheckBatchResponse>, tonic::Status> {
        self.batches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err(tonic::Status::unimplemented(""))
    }

    async fn get_policies(
        &self,
        request: tonic::Request<pb::GetPoliciesRequest>,
    ) -> Result<tonic::Response<pb::GetPoliciesResponse>, tonic::Status> {
        self.node.clone().get_policies(forwarded(request)).await
    }
}

/// The same message and credential, for the next hop.
fn forwarded<T>(request: tonic::Request<T>) -> tonic::Request<T> {
    let authorization = request.metadata().get("authorization").cloned();
    let mut next = tonic::Request::new(request.into_inner());
    if let Some(value) = authorization {
        next.metadata_mut().insert("authorization", value);
    }
    next
}

#[tokio::test]
async fn a_limiter_without_batches_still_decides_every_check_exactly() {
    let tokens = LimiterTokens::new();
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::Local {
        data_dir: dir.path().to_owned(),
        max_keys: 10_000,
    };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let limiter = LimiterNode::start(backend, &tokens, SEED, any).await;
    let batches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let front = EarlierRelease {
        node: pb::check_service_client::CheckServiceClient::connect(limiter.url())
            .await
            .unwrap(),
        batches: batches.clone(),
    };
    let listener = tokio::net::TcpListener::bind(any).await.unwrap();
    let front_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::check_service_server::CheckServiceServer::new(front))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let up = Upstream::start().await;
    let node = Node::builder()
        .config(&config(&up.url(), "cap", "slow"))
        .arg("--limiter")
        .arg(&front_url)
        .arg("--limiter-token-file")
        .arg(tokens.check_file.to_str().unwrap())
        .arg("--limiter-timeout")
        .arg("5s")
        .start();
    // Concurrent requests, so that checks travel together: the first batch is refused, and
    // its checks and all later ones go one call each, none lost or counted twice.
    let results = burst(&[&node], "/orders/", 300).await;
    assert_eq!(count(&results, 200), 100, "{:?}", &results[..3]);
    assert_eq!(count(&results, 429), 200);
    assert!(batches.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}
