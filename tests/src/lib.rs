//! A cluster on loopback for end-to-end tests: `portcullis` gateway processes and
//! `portcullis-limiter` processes, on a fresh PostgreSQL database and a private Redis key
//! prefix per test.
//!
//! The binaries are the ones `cargo test --workspace` builds beside this test (in the same
//! target directory); a test that cannot find them says how to build them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A binary of the workspace, from the target directory this test runs from.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .expect("the test runs from a target directory");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build --bins` first)",
        path.display()
    );
    path
}

/// Whether a service the test needs is configured; without it the test is skipped (or fails
/// under `PORTCULLIS_REQUIRE_SERVICES=1`).
pub fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var("PORTCULLIS_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "{var} is required (PORTCULLIS_REQUIRE_SERVICES=1)"
            );
            eprintln!("skipping: {var} is not set");
            None
        }
    }
}

/// A child process, killed when dropped, whose standard output is collected.
pub struct Process {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `cmd` and waits until it prints a line starting with each of `prefixes` (in any
    /// order); returns the process and the rest of each such line.
    pub fn start(mut cmd: Command, prefixes: &[&str]) -> (Self, Vec<String>) {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("the binary starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut found: Vec<Option<String>> = vec![None; prefixes.len()];
        let mut seen = Vec::new();
        while found.iter().any(Option::is_none) {
            let Some(Ok(line)) = lines.next() else {
                let status = child.wait().unwrap();
                panic!("the process exited ({status}) before it was ready; printed {seen:?}");
            };
            for (slot, prefix) in found.iter_mut().zip(prefixes) {
                if let Some(rest) = line.trim().strip_prefix(prefix) {
                    *slot = Some(rest.trim().to_owned());
                }
            }
            seen.push(line);
        }
        let output = Arc::new(Mutex::new(seen));
        let sink = output.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        (
            Self { child, output },
            found.into_iter().flatten().collect(),
        )
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Service tokens for the limiter nodes: a `check` token (in a file) for the gateways.
pub struct Tokens {
    pub file: PathBuf,
    pub check_file: PathBuf,
}

impl Tokens {
    pub fn new(dir: &Path) -> Self {
        use portcullis_limiter::auth::{self, Role};
        let (check, entry) = auth::issue("gateways", Role::Check);
        let file = dir.join("limiter-tokens.yaml");
        auth::write_file(&file, vec![entry]).unwrap();
        let check_file = dir.join("check.token");
        std::fs::write(&check_file, check).unwrap();
        Self { file, check_file }
    }
}

/// A `portcullis-limiter` process on Redis.
pub struct Limiter {
    pub process: Process,
    pub url: String,
}

impl Limiter {
    /// A node on `redis` under `prefix`, seeded from `seed`, with `extra` flags.
    pub fn start(tokens: &Tokens, redis: &str, prefix: &str, seed: &Path, extra: &[&str]) -> Self {
        let mut cmd = Command::new(bin("portcullis-limiter"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--redis", redis])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--redis-prefix", prefix, "--poll-interval", "200ms"])
            .arg("--tokens")
            .arg(&tokens.file)
            .arg("--seed")
            .arg(seed)
            .args(extra);
        quick_export(&mut cmd);
        let (process, found) = Process::start(cmd, &["listening on "]);
        Self {
            process,
            url: format!("http://{}", found[0]),
        }
    }
}

/// A `portcullis serve` process.
pub struct Gateway {
    pub process: Process,
    pub url: String,
    pub admin: String,
    /// Its data directory (journal, node id), kept for a restart.
    pub dir: Arc<tempfile::TempDir>,
}

impl Gateway {
    /// A gateway node on `store`, with `args` after `serve`: the configuration polled every
    /// 100 ms unless `args` say otherwise; the in-process limiter's API on a free port unless
    /// `args` name limiter nodes.
    pub fn start(store: &str, secret: &str, args: &[&str]) -> Self {
        Self::start_in(Arc::new(tempfile::tempdir().unwrap()), store, secret, args)
    }

    /// The same, in an existing data directory (a restarted node).
    pub fn start_in(dir: Arc<tempfile::TempDir>, store: &str, secret: &str, args: &[&str]) -> Self {
        let mut cmd = Command::new(bin("portcullis"));
        cmd.arg("--data-dir")
            .arg(dir.path())
            .args(["--store", store, "--token-secret", secret])
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ]);
        if !args.contains(&"--config-poll-interval") {
            cmd.args(["--config-poll-interval", "100ms"]);
        }
        if !args.contains(&"--limiter") {
            cmd.args(["--quota-listen", "127.0.0.1:0"]);
        }
        cmd.args(args);
        quick_export(&mut cmd);
        let (process, found) = Process::start(cmd, &["gateway: ", "admin: "]);
        Self {
            process,
            url: found[0].clone(),
            admin: found[1].clone(),
            dir,
        }
    }

    /// `GET` on the admin listener.
    pub async fn admin_get(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.admin));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// An operator token with `role`, made with the CLI against `store`.
pub fn operator(store: &str, secret: &str, id: &str, role: &str) -> String {
    cli(
        store,
        secret,
        &["operator", "token", "--id", id, "--role", role],
    )
    .lines()
    .find(|l| l.starts_with("pco_"))
    .expect("an operator token is printed")
    .to_owned()
}

/// Telemetry, when exported, leaves within 100 ms rather than the default seconds.
fn quick_export(cmd: &mut Command) {
    cmd.env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_BLRP_SCHEDULE_DELAY", "100");
}

/// Runs a `portcullis` command against `store`; returns its standard output.
pub fn cli(store: &str, secret: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("portcullis"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--store", store, "--token-secret", secret])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "portcullis {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Applies `config` (YAML) to `store` and issues an API token for `client`'s `profile`.
pub fn configure(store: &str, secret: &str, config: &str, client: &str, profile: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, config).unwrap();
    cli(store, secret, &["apply", "-f", file.to_str().unwrap()]);
    let issued = cli(
        store,
        secret,
        &[
            "credential",
            "issue",
            "--client",
            client,
            "--profile",
            profile,
        ],
    );
    issued
        .lines()
        .find(|l| l.starts_with("pcl_"))
        .expect("a token is printed")
        .to_owned()
}

/// A fresh PostgreSQL database, dropped by [`Database::drop_db`].
pub struct Database {
    pub url: String,
    admin_url: String,
    name: String,
}

impl Database {
    pub async fn create(admin_url: &str) -> Self {
        use sqlx::Connection;
        let n: u64 = rand::random();
        let name = format!("portcullis_cluster_{n:016x}");
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .expect("PostgreSQL is reachable");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin_url.split('?').next().unwrap();
        let (server, _) = base.rsplit_once('/').unwrap();
        Self {
            url: format!("{server}/{name}"),
            admin_url: admin_url.to_owned(),
            name,
        }
    }

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

/// A key prefix no other test uses.
pub fn prefix() -> String {
    let n: u64 = rand::random();
    format!("pccluster-{n:016x}")
}

/// Sends `n` GETs at once, spread over `gateways`, with `token`; returns each status and
/// error code.
pub async fn burst(gateways: &[&Gateway], path: &str, token: &str, n: usize) -> Vec<(u16, String)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let calls = (0..n).map(|i| {
        let url = format!("{}{path}", gateways[i % gateways.len()].url);
        let http = http.clone();
        let token = token.to_owned();
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            let code = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            (status, code)
        }
    });
    futures_util::future::join_all(calls).await
}

/// A tiny upstream answering 200 with `{}` to every request; returns its address and the
/// request heads it received.
pub async fn upstream() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut pending = Vec::new();
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    // One answer per request head (the tests send GETs without bodies).
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = pending.drain(..end + 4).collect();
                        seen.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&head).into_owned());
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}";
                        if stream.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, heads)
}

/// A TCP proxy that can be cut: every connection through it dropped and new ones refused,
/// as when a node loses its network path to a service.
pub struct Cuttable {
    pub addr: std::net::SocketAddr,
    open: Arc<std::sync::atomic::AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Cuttable {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (gate, held) = (open.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !gate.load(Ordering::SeqCst) {
                    continue;
                }
                held.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Self {
            addr,
            open,
            connections,
        }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Polls `check` every 10 ms until it holds or `limit` passes; how long it took, if it held.
pub async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// The status of `GET path` on `gateway` with `token`.
pub async fn status(gateway: &Gateway, path: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}{path}", gateway.url))
        .bearer_auth(token)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// A redis-server of the test's own, which it may stop and start again (on the same port, with
/// the same data), as an operator restarting Redis would.
pub struct OwnRedis {
    pub url: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts one, or `None` (and a note) when `redis-server` is not installed (a failure
    /// under `PORTCULLIS_REQUIRE_SERVICES=1`).
    pub fn start() -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var("PORTCULLIS_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "redis-server is required (PORTCULLIS_REQUIRE_SERVICES=1)"
            );
            eprintln!("skipping: redis-server is not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Self {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.restart();
        Some(redis)
    }

    /// Stops the server (SIGTERM: it writes its append-only file first).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// (Re)starts it; returns once it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--appendonly", "yes", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on {}", self.port);
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
