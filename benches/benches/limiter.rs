//! The limiter's decision for one request (a rate and a quota, per client): in-process with
//! memory counters (the reference), in-process on Redis, and over gRPC (one HTTP/2
//! connection) on memory and on Redis — one at a time, and 64 concurrent checks sharing the
//! connection (throughput). The Redis rows need `PORTCULLIS_TEST_REDIS_URL`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis_limiter::RedisSettings;
use portcullis_limiter::auth::{self, Role, ServiceTokens};
use portcullis_limiter::counters::{Counters, MemoryCounters, RedisCounters};
use portcullis_limiter::definitions::Definitions;
use portcullis_limiter::engine::{Engine, Subject};
use portcullis_limiter::manage::Quotas;
use portcullis_limiter::policy::{Catalog, Policy};
use portcullis_proto::limiter::v1 as pb;
use time::OffsetDateTime;
use tokio::runtime::Runtime;

const POLICY: &str = "name: bench
limits:
  - {name: burst, scope: client, count: 1000000000, per: second}
  - {name: monthly, scope: client_collection, count: 1000000000, window: month}
";

fn policy() -> Policy {
    serde_saphyr::from_str(POLICY).unwrap()
}

fn catalog() -> Catalog {
    let mut c = Catalog {
        version: 1,
        ..Catalog::default()
    };
    c.policies.insert("bench".into(), policy());
    c
}

fn redis() -> Option<RedisSettings> {
    let url = std::env::var("PORTCULLIS_TEST_REDIS_URL").ok()?;
    let n: u64 = rand::random();
    Some(RedisSettings {
        url,
        prefix: format!("pcbench-{n:016x}"),
        pool_size: 4,
        timeout: Duration::from_secs(2),
    })
}

const CLIENTS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

fn subject(i: usize) -> Subject<'static> {
    Subject {
        client: CLIENTS[i % CLIENTS.len()],
        profile: "p",
        collection: "orders",
        operation: "get",
        source_ip: None,
    }
}

type Client = pb::check_service_client::CheckServiceClient<tonic::transport::Channel>;

/// A limiter node on a loopback port, served by `rt`; returns a check client and its token.
fn serve(rt: &Runtime, counters: Counters, definitions: Definitions) -> (Client, String) {
    rt.block_on(async {
        let quotas = Arc::new(Quotas::open(definitions, counters).await.unwrap());
        quotas.seed(vec![policy()]).await.unwrap();
        let (secret, entry) = auth::issue("bench", Role::Check);
        let tokens = Arc::new(ServiceTokens::new(vec![entry]).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(portcullis_limiter::node::serve(
            listener,
            quotas,
            tokens,
            Duration::from_secs(1),
            std::future::pending(),
        ));
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        (Client::new(channel), secret)
    })
}

fn request<M>(message: M, token: &str) -> tonic::Request<M> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn check(i: usize) -> pb::CheckRequest {
    pb::CheckRequest {
        policies: vec!["bench".into()],
        principal: Some(pb::Principal {
            client: CLIENTS[i % CLIENTS.len()].into(),
            profile: "p".into(),
            ..Default::default()
        }),
        product: Some(pb::Product {
            collection: "orders".into(),
            operation: "get".into(),
        }),
        source_ip: String::new(),
        hits: 1,
        trace_context: Default::default(),
    }
}

fn limiter(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    // Redis pools start their housekeeping on the current runtime.
    let _entered = rt.enter();
    let mut group = c.benchmark_group("limiter");
    group.throughput(Throughput::Elements(1));

    let memory = Engine::new(catalog(), Counters::Memory(MemoryCounters::new(100_000)));
    let mut i = 0;
    group.bench_function("in-process/memory (reference)", |b| {
        b.iter(|| {
            i += 1;
            let d = rt
                .block_on(memory.check(&["bench"], &subject(i), 1, OffsetDateTime::now_utc()))
                .unwrap();
            black_box(d.allowed)
        })
    });

    let settings = redis();
    if let Some(settings) = &settings {
        let engine = Engine::new(
            catalog(),
            Counters::Redis(RedisCounters::new(settings).unwrap()),
        );
        group.bench_function("in-process/redis", |b| {
            b.iter(|| {
                i += 1;
                let d = rt
                    .block_on(engine.check(&["bench"], &subject(i), 1, OffsetDateTime::now_utc()))
                    .unwrap();
                black_box(d.allowed)
            })
        });
    } else {
        eprintln!("skipping the Redis rows: PORTCULLIS_TEST_REDIS_URL is not set");
    }

    let dir = tempfile::tempdir().unwrap();
    let mut nodes = vec![(
        "grpc/memory",
        serve(
            &rt,
            Counters::Memory(MemoryCounters::new(100_000)),
            Definitions::file(dir.path()).unwrap(),
        ),
    )];
    if let Some(settings) = &settings {
        let node = serve(
            &rt,
            Counters::Redis(RedisCounters::new(settings).unwrap()),
            Definitions::redis(settings).unwrap(),
        );
        nodes.push(("grpc/redis", node));
    }
    for (name, (client, token)) in &nodes {
        group.bench_function(*name, |b| {
            b.iter(|| {
                i += 1;
                let mut client = client.clone();
                let r = rt.block_on(client.check(request(check(i), token))).unwrap();
                black_box(r.into_inner().allowed)
            })
        });
        // 64 checks in flight on the one connection: time per check = throughput.
        group.bench_function(format!("{name} x64 concurrent"), |b| {
            b.iter_custom(|iters| {
                let batches = iters.div_ceil(64);
                let started = Instant::now();
                rt.block_on(async {
                    for _ in 0..batches {
                        let calls = (0..64).map(|k| {
                            let mut client = client.clone();
                            let req = request(check(k), token);
                            async move { client.check(req).await.unwrap().into_inner().allowed }
                        });
                        black_box(futures_util::future::join_all(calls).await);
                    }
                });
                started.elapsed() * u32::try_from(iters).unwrap_or(u32::MAX)
                    / u32::try_from(batches * 64).unwrap_or(u32::MAX)
            })
        });
        // The same 64 checks as one CheckBatch call (what a busy gateway sends).
        group.bench_function(format!("{name} x64 batched"), |b| {
            b.iter_custom(|iters| {
                let batches = iters.div_ceil(64);
                let started = Instant::now();
                rt.block_on(async {
                    for _ in 0..batches {
                        let checks = (0..64).map(check).collect();
                        let mut client = client.clone();
                        let r = client
                            .check_batch(request(pb::CheckBatchRequest { checks }, token))
                            .await
                            .unwrap();
                        black_box(r.into_inner().results.len());
                    }
                });
                started.elapsed() * u32::try_from(iters).unwrap_or(u32::MAX)
                    / u32::try_from(batches * 64).unwrap_or(u32::MAX)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, limiter);
criterion_main!(benches);
