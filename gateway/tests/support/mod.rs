//! Test harness: the real `portcullis` binary on ephemeral ports, a real upstream that records
//! what it receives, raw HTTP/1.1 for requests a URL library would tidy up, and fresh
//! PostgreSQL databases.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

pub mod admin;

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// What the upstream saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query exactly as received.
    pub target: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub body_len: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// A real HTTP upstream on a loopback port. Paths it understands (after any prefix):
/// `.../slow/{ms}` waits before answering; `.../download/{bytes}` streams that many bytes;
/// `.../status/{code}` answers with that status; anything else echoes the request as
/// JSON (`method`, `target`, `body_len`).
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(req, log.clone()));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream received no request")
    }
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    req: Request<Incoming>,
    log: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<TestBody>, Infallible> {
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let path = req.uri().path().to_owned();
    // Read the body as it streams, counting bytes without keeping them.
    let mut body = req.into_body();
    let mut body_len = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_len += f.data_ref().map_or(0, |d| d.len()),
            Err(_) => break,
        }
    }
    log.lock().unwrap().push(Seen {
        method: method.clone(),
        target: target.clone(),
        headers,
        body_len,
    });
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [.., "slow", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(1000))).await;
        }
        [.., "status", code] => {
            let status = code.parse().unwrap_or(500);
            let json = serde_json::json!({"error": "as asked", "target": target});
            return Ok(Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(json.to_string())).boxed())
                .unwrap());
        }
        [.., "download", n] => {
            let total: usize = n.parse().unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let chunks = (0..total.div_ceil(chunk.len())).map(move |i| {
                let len = chunk.len().min(total - i * chunk.len());
                Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
            });
            let body = StreamBody::new(futures_util::stream::iter(chunks)).boxed();
            return Ok(Response::new(body));
        }
        _ => {}
    }
    let json = serde_json::json!({"method": method, "target": target, "body_len": body_len});
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("connection", "keep-alive, x-upstream-hop")
        .header("x-upstream-hop", "must not reach the caller")
        .header("keep-alive", "timeout=5")
        .body(Full::new(Bytes::from(json.to_string())).boxed())
        .unwrap())
}

/// A TCP server that accepts connections and closes them at once, without answering.
pub async fn closing_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    addr
}

/// A loopback address nothing listens on.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A running `portcullis serve` process.
pub struct Node {
    child: Child,
    /// An API token of the `tester` client, granted every collection of the initial
    /// configuration in its sandbox environment with every scope its operations require.
    pub token: Option<String>,
    pub gateway: String,
    pub admin: String,
    /// The in-process limiter's gRPC API (absent with remote limiters).
    pub quotas: Option<String>,
    pub stdout: Vec<String>,
    pub data_dir: PathBuf,
    pub store: Option<String>,
    _tmp: Option<tempfile::TempDir>,
}

/// Builds a node: a data directory (fresh unless given), the store, extra flags and env.
pub struct NodeBuilder {
    data_dir: Option<PathBuf>,
    store: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    config: Option<String>,
    tester_environment: Option<String>,
}

impl Node {
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            data_dir: None,
            store: None,
            args: Vec::new(),
            env: Vec::new(),
            config: None,
            tester_environment: Some("sandbox".to_owned()),
        }
    }

    /// A node on a fresh SQLite store with `config` applied before it starts.
    pub fn with_config(yaml: &str) -> Self {
        Self::builder().config(yaml).start()
    }

    /// An HTTP client that sends the tester's token.
    pub fn http(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &self.token {
            headers.insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap()
    }

    /// GET with the tester's token.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http()
            .get(format!("{}{path}", self.gateway))
            .send()
            .await
            .unwrap()
    }

    /// Issues a token through the CLI, waits until this node accepts it, and returns it.
    pub async fn issue_token(&self, client: &str, profile: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "credential",
            "issue",
            "--client",
            client,
            "--profile",
            profile,
        ];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "issue failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_for_version(printed_version(&out)).await;
        token_in(&out)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs another `portcullis` command against this node's store.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.data_dir, self.store.as_deref(), args)
    }

    /// Applies YAML through the CLI and waits until the node serves the new version.
    pub async fn apply(&self, yaml: &str) -> u64 {
        let file = self
            .data_dir
            .join(format!("apply-{}.yaml", uuid::Uuid::new_v4()));
        std::fs::write(&file, yaml).unwrap();
        let out = self.cli(&["apply", "-f", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let version = printed_version(&out);
        self.wait_for_version(version).await;
        version
    }

    pub async fn ready(&self) -> serde_json::Value {
        reqwest::get(format!("{}/readyz", self.admin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the node's active configuration reaches `version`.
    pub async fn wait_for_version(&self, version: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = self.ready().await;
            if ready["config_version"].as_u64() >= Some(version) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node stuck at {ready}, want version {version}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number in the "configuration version N" that `apply` prints.
pub fn printed_version(out: &Output) -> u64 {
    let text = String::from_utf8_lossy(&out.stdout);
    text.rsplit("configuration version ")
        .next()
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no version in: {text}"))
}

impl NodeBuilder {
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    pub fn store(mut self, url: &str) -> Self {
        self.store = Some(url.to_owned());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Configuration applied (through the CLI) before the node starts.
    pub fn config(mut self, yaml: &str) -> Self {
        self.config = Some(yaml.to_owned());
        self
    }

    /// The environment of the tester's profile (default sandbox).
    pub fn tester_in(mut self, environment: &str) -> Self {
        self.tester_environment = Some(environment.to_owned());
        self
    }

    /// No tester client: the configuration is applied as given.
    pub fn without_tester(mut self) -> Self {
        self.tester_environment = None;
        self
    }

    pub fn start(self) -> Node {
        let (tmp, data_dir) = match self.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().unwrap();
                let d = t.path().to_owned();
                (Some(t), d)
            }
        };
        let mut token = None;
        if let Some(yaml) = &self.config {
            let yaml = match &self.tester_environment {
                Some(env) => with_tester(yaml, env),
                None => yaml.clone(),
            };
            let file = data_dir.join("initial.yaml");
            std::fs::create_dir_all(&data_dir).unwrap();
            std::fs::write(&file, yaml).unwrap();
            let store = self.store.as_deref();
            let out = cli(&data_dir, store, &["apply", "-f", file.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "apply failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if let Some(env) = &self.tester_environment {
                let profile = format!("tester-{env}");
                let args = [
                    "credential",
                    "issue",
                    "--client",
                    "tester",
                    "--profile",
                    &profile,
                ];
                let out = cli(&data_dir, store, &args);
                assert!(
                    out.status.success(),
                    "issue failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                token = Some(token_in(&out));
            }
        }
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir").arg(&data_dir);
        if let Some(store) = &self.store {
            cmd.arg("--store").arg(store);
        }
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--config-poll-interval",
            "50ms",
            "--quota-listen",
            "127.0.0.1:0",
        ]);
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("can start portcullis");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        let (mut gateway, mut admin, mut quotas) = (None, None, None);
        while admin.is_none() {
            let Some(Ok(line)) = lines.next() else {
                let status = child.wait().unwrap();
                panic!("portcullis exited ({status}) before listening; printed: {seen:?}");
            };
            if let Some(url) = line.trim().strip_prefix("gateway: ") {
                gateway = Some(url.to_owned());
            }
            if let Some(rest) = line.trim().strip_prefix("quotas: ") {
                quotas = rest.split_whitespace().next().map(str::to_owned);
            }
            if let Some(url) = line.trim().strip_prefix("admin: ") {
                admin = Some(url.trim().to_owned());
            }
            seen.push(line);
        }
        // Keep the rest of the banner (the demo's lines) without blocking on later output.
        let rest = Arc::new(Mutex::new(Vec::new()));
        let sink = rest.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        seen.extend(rest.lock().unwrap().iter().cloned());
        Node {
            child,
            token,
            gateway: gateway.expect("no gateway address printed"),
            admin: admin.unwrap(),
            quotas,
            stdout: seen,
            data_dir,
            store: self.store,
            _tmp: tmp,
        }
    }
}

/// The token printed by `credential issue` or `rotate`.
pub fn token_in(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("pcl_"))
        .unwrap_or_else(|| panic!("no token in {:?}", String::from_utf8_lossy(&out.stdout)))
        .to_owned()
}

/// Adds a `tester` client whose profile in `environment` is granted every collection offered
/// there, with every scope their operations require.
pub fn with_tester(yaml: &str, environment: &str) -> String {
    use portcullis::model::*;
    let mut config: Config = serde_saphyr::from_str(yaml).expect("test YAML parses");
    let env = Environment(environment.to_owned());
    let granted: Vec<CollectionId> = config
        .collections
        .iter()
        .filter(|c| c.upstreams.contains_key(&env))
        .map(|c| c.id.clone())
        .collect();
    let mut scopes: Vec<String> = config
        .collections
        .iter()
        .flat_map(|c| c.operations.iter().flat_map(|o| o.scopes.clone()))
        .collect();
    scopes.sort();
    scopes.dedup();
    let profile = serde_json::json!({
        "id": format!("tester-{environment}"),
        "environment": environment,
        "collections": granted,
        "scopes": scopes,
    });
    config.clients.push(
        serde_json::from_value(serde_json::json!({
            "id": "tester",
            "partner": "qa",
            "profiles": [profile],
        }))
        .unwrap(),
    );
    serde_saphyr::to_string(&config).unwrap()
}

/// Runs `portcullis` with the given data directory and store.
pub fn cli(data_dir: &Path, store: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir").arg(data_dir);
    if let Some(s) = store {
        cmd.arg("--store").arg(s);
    }
    cmd.args(args).output().expect("can run portcullis")
}

/// A minimal collection YAML pointing at `upstream` for both environments.
pub fn collection(id: &str, base: &str, upstream: &str, operations: &str) -> String {
    format!(
        "collections:\n  - id: {id}\n    base_path: {base}\n    upstreams:\n      sandbox: {upstream}/sbx\n      production: {upstream}/prod\n    operations:\n{operations}"
    )
}

/// Sends raw bytes as one HTTP/1.1 request and returns the status and body. For paths that a
/// URL library would normalise before sending.
pub async fn raw_request(node: &Node, request_line_target: &str, method: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = node.gateway.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = node
        .token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {request_line_target} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw));
    let _ = read.await;
    let response = String::from_utf8_lossy(&raw).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The error code in a catalogue body.
pub fn code(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// A fresh PostgreSQL database for one test, or `None` (with a note) when no server is
/// configured. With `PORTCULLIS_REQUIRE_SERVICES=1` a missing server fails the test instead.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> Option<Self> {
        let Ok(admin_url) = std::env::var("PORTCULLIS_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var("PORTCULLIS_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "PORTCULLIS_TEST_POSTGRES_URL is not set but PORTCULLIS_REQUIRE_SERVICES=1"
            );
            eprintln!("skipped: PORTCULLIS_TEST_POSTGRES_URL is not set");
            return None;
        };
        use sqlx::Connection;
        let name = format!("portcullis_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("cannot reach PORTCULLIS_TEST_POSTGRES_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin_url.split('?').next().unwrap();
        let (server, _db) = base.rsplit_once('/').unwrap();
        Some(Self {
            url: format!("{server}/{name}"),
            admin_url,
            name,
        })
    }

    /// Drops the database (call at the end of the test).
    pub async fn drop_db(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// The error code in a body, or an empty string for a body that is not a catalogue error.
pub fn code_or_empty(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Service tokens for limiter nodes: a `check` token for gateways (in a file, as
/// `--limiter-token-file` wants it) and a `manage` token for operators.
pub struct LimiterTokens {
    pub file: PathBuf,
    pub check_file: PathBuf,
    pub manage: String,
    _dir: tempfile::TempDir,
}

impl LimiterTokens {
    pub fn new() -> Self {
        use portcullis_limiter::auth::{self, Role};
        let dir = tempfile::tempdir().unwrap();
        let (check, c) = auth::issue("gateways", Role::Check);
        let (manage, m) = auth::issue("ops", Role::Manage);
        let file = dir.path().join("tokens.yaml");
        auth::write_file(&file, vec![c, m]).unwrap();
        let check_file = dir.path().join("check.token");
        std::fs::write(&check_file, check).unwrap();
        Self {
            file,
            check_file,
            manage,
            _dir: dir,
        }
    }
}

/// A limiter node served from this test process: the same code as `portcullis-limiter serve`,
/// over real gRPC on a loopback port, on its own runtime so that stopping it drops every
/// connection at once, as a killed process would.
pub struct LimiterNode {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LimiterNode {
    /// Starts a node over `backend` on `addr` (port 0 for any), creating the `seed` policies.
    pub async fn start(
        backend: portcullis_limiter::node::Backend,
        tokens: &LimiterTokens,
        seed: &str,
        addr: SocketAddr,
    ) -> Self {
        use portcullis_limiter::auth::ServiceTokens;
        use portcullis_limiter::manage::Quotas;
        let seed_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(seed_file.path(), seed).unwrap();
        let policies = portcullis_limiter::node::read_seed(seed_file.path()).unwrap();
        let service_tokens = Arc::new(ServiceTokens::load(&tokens.file).unwrap());
        // The port may still be held by a node stopped a moment ago.
        let mut listener = None;
        for _ in 0..100 {
            match std::net::TcpListener::bind(addr) {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let listener = listener.expect("the limiter's port is free");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let (counters, definitions) = backend.open().unwrap();
                let quotas = Arc::new(Quotas::open(definitions, counters).await.unwrap());
                quotas.seed(policies).await.unwrap();
                let listener = TcpListener::from_std(listener).unwrap();
                let _ = ready_tx.send(());
                portcullis_limiter::node::serve(
                    listener,
                    quotas,
                    service_tokens,
                    Duration::from_millis(100),
                    async move {
                        let _ = stopped.await;
                    },
                )
                .await
                .unwrap();
            });
            // Dropping the runtime drops every connection task with it.
            runtime.shutdown_background();
        });
        ready.await.expect("the limiter node starts");
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the node, dropping its connections.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join().unwrap())
                .await
                .unwrap();
        }
    }
}

impl Drop for LimiterNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The Redis URL for tests, or `None` (and a note) when it is not configured.
pub fn redis_url() -> Option<String> {
    match std::env::var("PORTCULLIS_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("PORTCULLIS_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "PORTCULLIS_TEST_REDIS_URL is required (PORTCULLIS_REQUIRE_SERVICES=1)"
            );
            eprintln!("skipping: PORTCULLIS_TEST_REDIS_URL is not set");
            None
        }
    }
}

/// Redis settings under a key prefix no other test uses.
pub fn redis_settings(url: &str) -> portcullis_limiter::RedisSettings {
    let n: u64 = rand::random();
    portcullis_limiter::RedisSettings {
        url: url.to_owned(),
        prefix: format!("pctest-{n:016x}"),
        pool_size: 4,
        timeout: Duration::from_millis(250),
    }
}

/// Every stored request record (`portcullis audit query --kind request`); waits up to 10 s
/// until there are `n`.
pub fn records(node: &Node, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = node.cli(&["audit", "query", "--kind", "request", "--limit", "10000"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if all.len() >= n || std::time::Instant::now() > deadline {
            return all;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
