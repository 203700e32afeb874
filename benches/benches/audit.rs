//! Audit throughput: what the journal does with each request record (encode it as JSON and
//! chain it with SHA-256), and records written into the store in the writer's batches of 500,
//! into SQLite (embedded default) and PostgreSQL (with `PORTCULLIS_TEST_POSTGRES_URL`), as
//! records per second.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis::audit::writer::{GENESIS, link};
use portcullis::store::{AuditRow, Store, StoreLocation};
use tokio::runtime::Runtime;

const BATCH: usize = 500;

/// A batch of `BATCH` chained rows for `node`, from sequence `start`.
fn batch(node: &str, start: u64, prev: &mut String) -> Vec<AuditRow> {
    (0..BATCH as u64)
        .map(|i| {
            let seq = start + i;
            let body = format!(
                r#"{{"schema":1,"request_id":"r-{seq}","timestamp":"2026-11-22T23:00:00.000000Z","node":"{node}","channel":"rest","who":{{"client":"acme","profile":"acme-sbx","environment":"sandbox","partner":"acme","credential":"acme-sbx-1","source_ip":"192.0.2.1","user_agent":"bench"}},"what":{{"method":"GET","path":"/orders/items/{seq}","collection":"orders","collection_version":"1","operation":"get","path_template":"/orders/items/{{id}}"}},"outcome":"allowed","status":200,"upstream_status":200,"latency_us":{{"total":900,"gateway":120,"limiter":30,"upstream":750}},"bytes_in":0,"bytes_out":64,"completed":true}}"#
            );
            let hash = link(prev, &body);
            AuditRow {
                node: node.to_owned(),
                seq,
                kind: "request".into(),
                recorded_at: "2026-11-22T23:00:00.000000Z".into(),
                channel: "rest".into(),
                outcome: "allowed".into(),
                reason: None,
                status: 200,
                client: Some("acme".into()),
                profile: Some("acme-sbx".into()),
                partner: Some("acme".into()),
                collection: Some("orders".into()),
                operation: Some("get".into()),
                body,
                prev_hash: std::mem::replace(prev, hash.clone()),
                hash,
            }
        })
        .collect()
}

fn throughput(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let mut group = c.benchmark_group("audit insert");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(8));
    let dir = tempfile::tempdir().unwrap();
    let mut stores = vec![(
        "sqlite",
        rt.block_on(Store::open(&StoreLocation::Sqlite(
            dir.path().join("bench.db"),
        )))
        .unwrap(),
        None,
    )];
    if let Ok(admin) = std::env::var("PORTCULLIS_TEST_POSTGRES_URL") {
        let n: u64 = rand::random();
        let name = format!("portcullis_bench_{n:016x}");
        rt.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .unwrap();
        });
        let base = admin.split('?').next().unwrap();
        let (server, _) = base.rsplit_once('/').unwrap();
        let url = format!("{server}/{name}");
        let store = rt
            .block_on(Store::open(&StoreLocation::Postgres(url)))
            .unwrap();
        stores.push(("postgres", store, Some((admin, name))));
    } else {
        eprintln!("skipping PostgreSQL: PORTCULLIS_TEST_POSTGRES_URL is not set");
    }
    for (name, store, _) in &stores {
        let mut seq = 1;
        let mut prev = GENESIS.to_owned();
        group.bench_function(format!("{name}, batches of {BATCH}"), |b| {
            b.iter(|| {
                let rows = batch("bench", seq, &mut prev);
                seq += BATCH as u64;
                rt.block_on(store.insert_audit(&rows)).unwrap();
            })
        });
    }
    group.finish();
    for (_, store, pg) in stores {
        rt.block_on(store.close());
        if let Some((admin, name)) = pg {
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        }
    }
}

/// A record as the gateway makes one for an allowed REST request with two limits.
fn record() -> portcullis::audit::record::RequestRecord {
    use portcullis::audit::record::*;
    RequestRecord {
        schema: 1,
        request_id: "9b2f6c1e-2d7a-4f0e-8a41-3c5d6e7f8a90".into(),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        timestamp: "2026-12-08T01:00:00.000000Z".into(),
        node: "gw-1".into(),
        channel: "rest".into(),
        who: Who {
            client: Some("acme".into()),
            profile: Some("acme-sbx".into()),
            environment: Some("sandbox".into()),
            partner: Some("acme".into()),
            credential: Some("acme-sbx-1".into()),
            source_ip: "192.0.2.1".into(),
            user_agent: Some("bench/1.0".into()),
            ..Default::default()
        },
        what: What {
            method: "GET".into(),
            path: "/orders/items/42".into(),
            collection: Some("orders".into()),
            collection_version: Some("1".into()),
            operation: Some("get".into()),
            path_template: Some("/orders/items/{id}".into()),
            ..Default::default()
        },
        outcome: Outcome::Allowed,
        status: 200,
        upstream_status: Some(200),
        latency_us: Latency {
            total: 900,
            gateway: 120,
            limiter: 30,
            upstream: 750,
        },
        bytes_out: 64,
        completed: true,
        ..Default::default()
    }
}

fn journal(c: &mut Criterion) {
    let record = record();
    let mut group = c.benchmark_group("audit journal");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode a record", |b| {
        b.iter(|| serde_json::to_string(std::hint::black_box(&record)).unwrap())
    });
    let body = serde_json::to_string(&record).unwrap();
    group.bench_function("encode and chain a record", |b| {
        b.iter(|| {
            let body = serde_json::to_string(std::hint::black_box(&record)).unwrap();
            link(GENESIS, &body)
        })
    });
    group.bench_function(format!("chain only ({} bytes)", body.len()), |b| {
        b.iter(|| link(GENESIS, std::hint::black_box(&body)))
    });
    group.finish();
}

criterion_group!(benches, journal, throughput);
criterion_main!(benches);
