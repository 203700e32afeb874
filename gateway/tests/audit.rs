//! The audit trail through the real binary: exactly one record per request whatever its
//! outcome, the fields each outcome fills, redaction, the hash chain's tamper detection, a
//! database outage (spooled, then drained; or refused in `refuse` mode), and a killed process.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

fn config(up: &str) -> String {
    format!(
        r#"
collections:
  - id: orders
    base_path: /orders
    version: "7"
    upstreams: {{ sandbox: "{up}/sbx" }}
    operations:
      - {{ id: get, methods: [GET], path: "/items/{{id}}" }}
      - {{ id: create, methods: [POST], path: /items, capture_body: {{ max_bytes: 512, redact: [password] }} }}
      - {{ id: admin, methods: [DELETE], path: "/items/{{id}}", scopes: [orders:admin] }}
      - {{ id: download, methods: [GET], path: "/download/{{n}}" }}
      - {{ id: slow, methods: [GET], path: "/slow/{{ms}}" }}
  - id: broken
    base_path: /broken
    upstreams: {{ sandbox: "http://{closed}" }}
    operations:
      - {{ id: get, methods: [GET], path: / }}
clients:
  - id: reader
    partner: Acme
    profiles:
      - {{ id: reader-sbx, environment: sandbox, collections: [orders] }}
"#,
        closed = closed_port()
    )
}

fn by_id<'a>(records: &'a [Value], id: &str) -> &'a Value {
    let found: Vec<_> = records.iter().filter(|r| r["request_id"] == id).collect();
    assert_eq!(found.len(), 1, "exactly one record for request {id}");
    found[0]
}

#[tokio::test]
async fn one_record_per_request_whatever_the_outcome() {
    let up = Upstream::start().await;
    let node = Node::with_config(&config(&up.url()));
    let reader = node.issue_token("reader", "reader-sbx", &[]).await;
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut r = http
            .request(method, format!("{}{path}", node.gateway))
            .header("user-agent", "audit-test/1");
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r
    };
    use reqwest::Method;
    let mut sent = Vec::new();
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "allowed",
            send(
                Method::GET,
                "/orders/items/42?secret-query=1",
                Some(&reader),
            ),
            200,
        ),
        (
            "allowed-with-body",
            send(Method::POST, "/orders/items", Some(&reader))
                .body(r#"{"item":"book","password":"hunter2"}"#),
            200,
        ),
        (
            "route_not_found",
            send(Method::GET, "/nowhere", Some(&reader)),
            404,
        ),
        (
            "method_not_allowed",
            send(Method::PUT, "/orders/items/1", Some(&reader)),
            405,
        ),
        (
            "unauthenticated",
            send(Method::GET, "/orders/items/1", None),
            401,
        ),
        (
            "invalid_credential",
            send(Method::GET, "/orders/items/1", Some("pcl_forged")),
            401,
        ),
        (
            "insufficient_scope",
            send(Method::DELETE, "/orders/items/1", Some(&reader)),
            403,
        ),
        (
            "product_not_granted",
            send(Method::GET, "/broken/", Some(&reader)),
            403,
        ),
        (
            "upstream_unreachable",
            send(Method::GET, "/broken/", node.token.as_deref()),
            502,
        ),
    ];
    for (name, request, status) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        sent.push((name, id, status));
    }
    let (status, _) = raw_request(&node, "/orders/%2e%2e/admin", "GET").await;
    assert_eq!(status, 400);

    // A client that goes away mid-download (a raw connection, closed after the first bytes).
    let download_id = "client-gone-1";
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = node.gateway.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /orders/download/50000000 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {reader}\r\nx-request-id: {download_id}\r\nuser-agent: audit-test/1\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut first = vec![0u8; 4096];
        let n = stream.read(&mut first).await.unwrap();
        assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    }

    // A client that gives up before the answer (the upstream takes 3 s).
    let impatient_id = "client-gone-2";
    {
        use tokio::io::AsyncWriteExt;
        let addr = node.gateway.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /orders/slow/3000 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {reader}\r\nx-request-id: {impatient_id}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let all = records(&node, sent.len() + 3);
    assert_eq!(
        all.len(),
        sent.len() + 3,
        "one record per request, no more: {:?}",
        all.iter()
            .map(|r| (&r["status"], &r["reason"], &r["what"]["path"]))
            .collect::<Vec<_>>()
    );
    for (name, id, status) in &sent {
        let r = by_id(&all, id);
        assert_eq!(r["status"], *status, "{name}");
        assert_eq!(r["schema"], 1);
        assert_eq!(r["channel"], "rest");
        assert!(r["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(r["who"]["user_agent"], "audit-test/1");
        assert_eq!(r["who"]["source_ip"], "127.0.0.1");
        assert!(r["latency_us"]["total"].as_u64().unwrap() > 0, "{name}");
        match *name {
            "allowed" | "allowed-with-body" => {
                assert_eq!(r["outcome"], "allowed");
                assert!(r.get("reason").is_none());
                assert_eq!(r["who"]["client"], "reader");
                assert_eq!(r["who"]["profile"], "reader-sbx");
                assert_eq!(r["who"]["environment"], "sandbox");
                assert_eq!(r["who"]["partner"], "Acme");
                assert!(
                    r["who"]["credential"]
                        .as_str()
                        .unwrap()
                        .starts_with("reader-sbx")
                );
                assert_eq!(r["what"]["collection"], "orders");
                assert_eq!(r["what"]["collection_version"], "7");
                assert_eq!(r["upstream_status"], 200);
                assert!(r["completed"].as_bool().unwrap());
                assert!(r["bytes_out"].as_u64().unwrap() > 0);
            }
            "upstream_unreachable" => {
                assert_eq!(r["outcome"], "error");
                assert_eq!(r["reason"], "upstream_unreachable");
                assert_eq!(r["who"]["client"], "tester");
                assert!(r.get("upstream_status").is_none());
            }
            refused => {
                assert_eq!(r["outcome"], "denied", "{refused}");
                assert_eq!(r["reason"], refused);
            }
        }
    }
    let get = by_id(&all, &sent[0].1);
    assert_eq!(get["what"]["operation"], "get");
    assert_eq!(get["what"]["path_template"], "/orders/items/{id}");
    assert_eq!(
        get["what"]["path"], "/orders/items/42",
        "the query is never recorded"
    );
    let post = by_id(&all, &sent[1].1);
    assert_eq!(post["bytes_in"], 36);
    // Bodies are kept only where the operation asks, and redacted as it says.
    let kept = post["request_body"].as_str().unwrap();
    assert!(
        kept.contains("\"item\":\"book\"") && kept.contains("[redacted]"),
        "{kept}"
    );
    assert!(!kept.contains("hunter2"));
    assert!(
        post["response_body"]
            .as_str()
            .unwrap()
            .contains("\"method\":\"POST\"")
    );
    assert!(get.get("request_body").is_none() && get.get("response_body").is_none());
    let scope = by_id(&all, &sent[6].1);
    assert_eq!(
        scope["who"]["client"], "reader",
        "a denied call names its caller"
    );
    let bad = all
        .iter()
        .find(|r| r["reason"] == "bad_request")
        .expect("the 400 is recorded");
    assert_eq!(bad["outcome"], "denied");
    let gone = by_id(&all, download_id);
    assert_eq!(gone["completed"], false);
    assert_eq!(gone["reason"], "client_disconnected");
    assert_eq!(gone["status"], 200);
    let impatient = by_id(&all, impatient_id);
    assert_eq!(impatient["status"], 499);
    assert_eq!(impatient["outcome"], "error");
    assert_eq!(impatient["reason"], "client_disconnected");
    assert_eq!(impatient["completed"], false);
    assert_eq!(impatient["who"]["client"], "reader");

    // Secrets never appear: not the tokens, not the query.
    let text = String::from_utf8_lossy(&node.cli(&["audit", "query"]).stdout).into_owned();
    for secret in [
        reader.as_str(),
        node.token.as_deref().unwrap(),
        "pcl_forged",
        "secret-query",
        "hunter2",
    ] {
        assert!(!text.contains(secret), "a record contains {secret}");
    }
    let journal = std::fs::read_to_string(node.data_dir.join("audit-journal.ndjson")).unwrap();
    assert!(!journal.contains(reader.as_str()));

    // Filters.
    let out = node.cli(&[
        "audit",
        "query",
        "--outcome",
        "denied",
        "--client",
        "reader",
    ]);
    let denied: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!denied.is_empty());
    assert!(
        denied
            .iter()
            .all(|r| r["outcome"] == "denied" && r["who"]["client"] == "reader")
    );
    let out = node.cli(&["audit", "query", "--kind", "request", "--limit", "2"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    let hint = String::from_utf8_lossy(&out.stderr).into_owned();
    let cursor = hint
        .split("--after '")
        .nth(1)
        .unwrap()
        .trim_end()
        .trim_end_matches('\'');
    let out = node.cli(&["audit", "query", "--kind", "request", "--after", cursor]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        all.len() - 2
    );
    let typo = node.cli(&["audit", "verify", "--node", "no-such-node"]);
    assert!(
        !typo.status.success(),
        "an unknown node is not an intact chain"
    );
    let bad = node.cli(&["audit", "query", "--since", "yesterday"]);
    assert!(!bad.status.success());
}

#[tokio::test]
async fn tampering_breaks_the_chain_and_verify_names_the_link() {
    let up = Upstream::start().await;
    let node = Node::with_config(&config(&up.url()));
    for _ in 0..6 {
        node.get("/orders/items/1").await;
    }
    records(&node, 6);
    let verify = |node: &Node| {
        let out = node.cli(&["audit", "verify"]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // Six request records after the first start's change record (the bootstrap admin).
    let (ok, out) = verify(&node);
    assert!(ok && out.contains("7 records, 1..7, chain intact"), "{out}");

    let db = node.data_dir.join("portcullis.db");
    let sql = |statement: &'static str| {
        let db = db.clone();
        async move {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
                .await
                .unwrap();
            sqlx::raw_sql(statement).execute(&mut conn).await.is_ok()
        }
    };
    // Edit: a denied request made to look allowed.
    assert!(sql("UPDATE audit_records SET body = replace(body, '\"status\":200', '\"status\":201') WHERE seq = 3").await);
    let (ok, out) = verify(&node);
    assert!(
        !ok && out.contains("record 3 does not match its hash: edited"),
        "{out}"
    );
    assert!(sql("UPDATE audit_records SET body = replace(body, '\"status\":201', '\"status\":200') WHERE seq = 3").await);
    assert!(verify(&node).0, "restored");
    // Reorder: records 4 and 5 swap places.
    assert!(sql("UPDATE audit_records SET seq = -5 WHERE seq = 5; UPDATE audit_records SET seq = 5 WHERE seq = 4; UPDATE audit_records SET seq = 4 WHERE seq = -5;").await);
    let (ok, out) = verify(&node);
    assert!(
        !ok && out.contains("record 4 does not follow record 3"),
        "{out}"
    );
    assert!(sql("UPDATE audit_records SET seq = -5 WHERE seq = 5; UPDATE audit_records SET seq = 5 WHERE seq = 4; UPDATE audit_records SET seq = 4 WHERE seq = -5;").await);
    assert!(verify(&node).0, "restored");
    // Delete.
    assert!(sql("DELETE FROM audit_records WHERE seq = 2").await);
    let (ok, out) = verify(&node);
    assert!(!ok && out.contains("record 2 is missing"), "{out}");
}

#[tokio::test]
async fn a_killed_node_loses_no_journaled_record() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .data_dir(dir.path())
        .config(&config(&up.url()))
        .start();
    let mut ids = Vec::new();
    for i in 0..50 {
        let r = node.get(&format!("/orders/items/{i}")).await;
        ids.push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
        // The response's last bytes are the acknowledgement: they follow the journal append.
        r.bytes().await.unwrap();
    }
    // SIGKILL: no graceful flush.
    let pid = node.pid();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(node);
    let node = Node::builder().data_dir(dir.path()).start();
    let all = records(&node, 50);
    for id in &ids {
        by_id(&all, id);
    }
    let out = node.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn a_database_outage_is_spooled_then_drained_or_refused() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let up = Upstream::start().await;
    let block = |allow: bool| {
        let url = std::env::var("PORTCULLIS_TEST_POSTGRES_URL").unwrap();
        let name = db.url.rsplit('/').next().unwrap().to_owned();
        async move {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE {name} ALLOW_CONNECTIONS {allow}"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
            if !allow {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                )))
                .execute(&mut conn)
                .await
                .unwrap();
            }
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .data_dir(dir.path())
        .store(&db.url)
        .config(&config(&up.url()))
        .start();
    assert_eq!(node.get("/orders/items/0").await.status(), 200);

    // Spool (the default): serving goes on while the database is away…
    block(false).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let r = node.get(&format!("/orders/items/{i}")).await;
        assert_eq!(r.status(), 200);
        ids.push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
    }
    // The node noticed: records are waiting in its journal.
    let mut spooled = false;
    for _ in 0..100 {
        let audit = node.ready().await["audit"].clone();
        if audit["sink_ok"] == false && audit["spooled"].as_u64().unwrap() > 0 {
            spooled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        spooled,
        "the records were spooled while the database was away"
    );
    // …and every record arrives once it is back.
    block(true).await;
    let all = records(&node, 21);
    assert_eq!(all.len(), 21, "no record lost or duplicated");
    let audit = node.ready().await["audit"].clone();
    assert_eq!(audit["dropped"], 0);
    for id in &ids {
        by_id(&all, id);
    }
    let out = node.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let token = node.token.clone();
    drop(node);

    // Refuse: while records cannot be written, requests are refused with 503.
    let mut strict = Node::builder()
        .data_dir(dir.path())
        .store(&db.url)
        .arg("--audit-mode")
        .arg("refuse")
        .start();
    strict.token = token;
    assert_eq!(strict.get("/orders/items/1").await.status(), 200);
    block(false).await;
    let mut refused = false;
    for _ in 0..100 {
        let r = strict.get("/orders/items/2").await;
        if r.status() == 503 {
            assert_eq!(code(&r.text().await.unwrap()), "audit_unavailable");
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    block(true).await;
    assert!(
        refused,
        "refuse mode answers 503 audit_unavailable while the sink is down"
    );
    drop(strict);
    db.drop_db().await;
}
