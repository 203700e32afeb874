//! The store suite, run unchanged against SQLite and PostgreSQL, plus a node serving from
//! PostgreSQL.

mod support;

use portcullis::config::{Format, parse};
use portcullis::model::Config;
use portcullis::plan::{self, ApplyOptions};
use portcullis::store::{Store, StoreError, StoreLocation, assemble};
use sha2::Digest;
use support::{Node, PgDatabase, Upstream};

fn config(base: &str, upstream: &str) -> Config {
    parse(
        &format!(
            r#"
collections:
  - id: {base}
    base_path: /{base}
    upstreams: {{ sandbox: "{upstream}" }}
    operations:
      - {{ id: b-op, methods: [GET], path: /b }}
      - {{ id: a-op, methods: [POST], path: "/a/{{id}}" }}
clients:
  - id: client-{base}
    profiles:
      - id: p1
        environment: sandbox
        collections: [{base}]
        credentials:
          - {{ id: cred-{base}, kind: mtls, fingerprint_sha256: "{fp}" }}
"#,
            // One certificate per configuration: a certificate binds to one credential.
            fp = sha2::Sha256::digest(base.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
        Format::Yaml,
    )
    .unwrap()
}

/// Sorted the way the store returns objects: by id at every level.
fn sorted(mut c: Config) -> Config {
    c.collections.sort_by(|a, b| a.id.cmp(&b.id));
    for col in &mut c.collections {
        col.operations.sort_by(|a, b| a.id.cmp(&b.id));
    }
    c.clients.sort_by(|a, b| a.id.cmp(&b.id));
    c
}

async fn stored(store: &Store) -> (u64, Config) {
    let (v, records) = store.load().await.unwrap();
    (v, assemble(&records).unwrap())
}

async fn suite(location: StoreLocation) {
    let store = Store::open(&location).await.unwrap();
    assert_eq!(store.version().await.unwrap(), 0);
    assert_eq!(stored(&store).await, (0, Config::default()));

    // Apply: one version, everything readable back.
    let first = config("orders", "http://127.0.0.1:9/o");
    let applied = plan::apply(&store, &first, ApplyOptions::default())
        .await
        .unwrap();
    assert!(applied.committed);
    assert_eq!(applied.version, 1);
    assert_eq!(stored(&store).await, (1, sorted(first.clone())));

    // Idempotent.
    let again = plan::apply(&store, &first, ApplyOptions::default())
        .await
        .unwrap();
    assert!(again.changes.is_empty() && !again.committed);
    assert_eq!(store.version().await.unwrap(), 1);

    // A commit from a stale base is refused and writes nothing.
    let (_, records) = store.load().await.unwrap();
    let stale_change = portcullis::store::Change::Delete {
        key: records.keys().next().unwrap().clone(),
        old: serde_json::Value::Null,
    };
    match store.commit(0, &[stale_change]).await {
        Err(StoreError::Conflict {
            expected: 0,
            current: 1,
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(stored(&store).await, (1, sorted(first.clone())));

    // Concurrent applies of different objects: both land, no lost update.
    let (a, b) = (
        config("alpha", "http://127.0.0.1:9/a"),
        config("beta", "http://127.0.0.1:9/b"),
    );
    let (ra, rb) = tokio::join!(
        plan::apply(&store, &a, ApplyOptions::default()),
        plan::apply(&store, &b, ApplyOptions::default())
    );
    let mut versions = [ra.unwrap().version, rb.unwrap().version];
    versions.sort();
    assert_eq!(versions, [2, 3]);
    let (v, all) = stored(&store).await;
    assert_eq!(v, 3);
    let ids: Vec<&str> = all.collections.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["alpha", "beta", "orders"]);

    // Durable: a new connection (as after a restart) sees the same version and objects, and
    // running the migrations again is harmless.
    store.close().await;
    let reopened = Store::open(&location).await.unwrap();
    assert_eq!(stored(&reopened).await, (3, all.clone()));

    // Prune deletes the unmentioned objects, children included, in one version.
    let pruned = plan::apply(
        &reopened,
        &a,
        ApplyOptions {
            prune: true,
            dry_run: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(pruned.version, 4);
    assert_eq!(stored(&reopened).await, (4, sorted(a)));
    reopened.close().await;
}

#[tokio::test]
async fn sqlite_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    suite(StoreLocation::Sqlite(
        dir.path().join("nested/dir/config.db"),
    ))
    .await;
}

#[tokio::test]
async fn postgres_store_suite() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    suite(StoreLocation::Postgres(db.url.clone())).await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_node_serves_from_postgres_and_follows_changes() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let up = Upstream::start().await;
    let yaml = support::collection(
        "pg",
        "/pg",
        &up.url(),
        "      - { id: one, methods: [GET], path: /one }\n",
    );
    let node = Node::builder().store(&db.url).config(&yaml).start();
    assert!(
        node.stdout[0].contains("store postgres://"),
        "{:?}",
        node.stdout
    );
    let r = node
        .http()
        .get(format!("{}/pg/one", node.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().target, "/sbx/one");

    let yaml2 = support::collection(
        "pg",
        "/pg",
        &up.url(),
        "      - { id: one, methods: [GET], path: /one }\n      - { id: two, methods: [GET], path: /two }\n",
    );
    node.apply(&yaml2).await;
    let r = node
        .http()
        .get(format!("{}/pg/two", node.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().target, "/sbx/two");
    drop(node);
    db.drop_db().await;
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::closed_port().port();
    let out = support::cli(
        dir.path(),
        Some(&format!(
            "postgres://portcullis:hunter2@127.0.0.1:{port}/nope"
        )),
        &["export"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open the configuration store postgres://portcullis:***@127.0.0.1"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}
