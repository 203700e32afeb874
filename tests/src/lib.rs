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
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// A gateway node on `store`, with `args` after `serve`.
    pub fn start(store: &str, secret: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
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
            ])
            .args(["--config-poll-interval", "100ms"])
            .args(args);
        quick_export(&mut cmd);
        let (process, found) = Process::start(cmd, &["gateway: ", "admin: "]);
        Self {
            process,
            url: found[0].clone(),
            admin: found[1].clone(),
            _dir: dir,
        }
    }
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
