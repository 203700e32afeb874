//! What recording and limiting cost the gateway end to end: closed-loop load through a
//! `portcullis` process (release build) to a tiny upstream — with no quota policy and request
//! recording off (the reference), with recording (the default), with the in-process limiter,
//! with the in-process limiter and the same operation called as an MCP tool (`tools/call`,
//! protocol 2026-07-28), and with a remote `portcullis-limiter` node on Redis. Same run, same
//! connection count; figures as ratios to the reference.
//!
//! Needs the release binaries and Redis:
//!
//! ```text
//! cargo build --release --bins --workspace
//! PORTCULLIS_TEST_REDIS_URL=redis://127.0.0.1:6379 cargo bench -p portcullis-benches --bench limits_load
//! ```
//!
//! `LOAD_SECONDS` (default 5) and `LOAD_CONNECTIONS` (default 32) change the run.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench --no-run` and test discovery.
    }
    let release = release_dir();
    for name in ["portcullis", "portcullis-limiter"] {
        if !release.join(name).exists() {
            eprintln!(
                "{} is missing: run `cargo build --release --bins --workspace` first",
                release.join(name).display()
            );
            return;
        }
    }
    let seconds: u64 = env_or("LOAD_SECONDS", 5);
    let connections: usize = env_or("LOAD_CONNECTIONS", 32);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(upstream());
    let dir = tempfile::tempdir().unwrap();

    let mut rows = Vec::new();
    for mode in [
        "no policy, recording off",
        "no policy",
        "in-process limiter",
        "in-process limiter, as an MCP tool call",
        "remote limiter (gRPC + Redis)",
    ] {
        let redis = std::env::var("PORTCULLIS_TEST_REDIS_URL").ok();
        if mode.starts_with("remote") && redis.is_none() {
            eprintln!("skipping '{mode}': PORTCULLIS_TEST_REDIS_URL is not set");
            continue;
        }
        let run = dir.path().join(mode.replace([' ', ','], "-"));
        std::fs::create_dir_all(&run).unwrap();
        let policy = if mode.starts_with("no policy") {
            ""
        } else {
            "    quota_policy: bench\n"
        };
        let config = format!(
            "collections:\n  - id: bench\n    base_path: /bench\n{policy}    upstreams: {{ sandbox: \"http://{upstream}\" }}\n    operations:\n      - {{ id: get, methods: [GET], path: /, mcp: {{}} }}\nclients:\n  - id: load\n    partner: load\n    profiles:\n      - {{ id: load-sbx, environment: sandbox, collections: [bench] }}\n"
        );
        let seed = run.join("seed.yaml");
        std::fs::write(
            &seed,
            "policies:\n  - name: bench\n    limits:\n      - {name: burst, scope: client, count: 1000000000, per: second}\n      - {name: monthly, scope: profile, count: 1000000000, window: month}\n",
        )
        .unwrap();
        std::fs::write(run.join("config.yaml"), config).unwrap();
        cli(
            &release,
            &run,
            &["apply", "-f", run.join("config.yaml").to_str().unwrap()],
        );
        let issued = cli(
            &release,
            &run,
            &[
                "credential",
                "issue",
                "--client",
                "load",
                "--profile",
                "load-sbx",
            ],
        );
        let token = issued
            .lines()
            .find(|l| l.starts_with("pcl_"))
            .unwrap()
            .to_owned();

        let mut children = Vec::new();
        let mut args: Vec<String> = vec!["--quota-seed".into(), seed.to_str().unwrap().into()];
        if mode.ends_with("recording off") {
            args.extend(["--audit-mode".into(), "off".into()]);
        }
        if let Some(redis) = redis.filter(|_| mode.starts_with("remote")) {
            let (secret, entry) =
                portcullis_limiter::auth::issue("load", portcullis_limiter::auth::Role::Check);
            let tokens = run.join("tokens.yaml");
            portcullis_limiter::auth::write_file(&tokens, vec![entry]).unwrap();
            std::fs::write(run.join("check.token"), &secret).unwrap();
            let n: u64 = rand::random();
            let mut cmd = Command::new(release.join("portcullis-limiter"));
            cmd.args(["serve", "--listen", "127.0.0.1:0", "--redis", &redis])
                .args(["--metrics-listen", "127.0.0.1:0"])
                .args(["--redis-prefix", &format!("pcload-{n:016x}")])
                .arg("--tokens")
                .arg(&tokens)
                .arg("--seed")
                .arg(&seed);
            let (child, found) = spawn(cmd, &["listening on "]);
            children.push(child);
            args = vec![
                "--limiter".into(),
                format!("http://{}", found[0]),
                "--limiter-token-file".into(),
                run.join("check.token").to_str().unwrap().into(),
            ];
        }
        let mut cmd = Command::new(release.join("portcullis"));
        cmd.arg("--data-dir")
            .arg(&run)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--quota-listen", "127.0.0.1:0"])
            .args(&args)
            .env("PORTCULLIS_LOG", "warn");
        let (gateway, found) = spawn(cmd, &["gateway: "]);
        children.push(gateway);
        let call = if mode.contains("MCP") {
            Call::tool(&found[0], &token)
        } else {
            Call::rest(&found[0], &token)
        };

        let stats = rt.block_on(load(&call, connections, Duration::from_secs(1)));
        assert!(stats.errors == 0, "warm-up failed for '{mode}'");
        let stats = rt.block_on(load(&call, connections, Duration::from_secs(seconds)));
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        rows.push((mode, stats));
    }

    let reference = rows.first().map(|(_, s)| s.rate()).unwrap_or(1.0);
    println!(
        "\n{connections} connections, {seconds} s each, closed loop; every configuration but the first records every request\n\n| configuration | requests/s | vs the first | p50 | p99 | errors |\n|---|---:|---:|---:|---:|---:|"
    );
    for (mode, s) in &rows {
        println!(
            "| {mode} | {:.0} | {:.2} | {:.2} ms | {:.2} ms | {} |",
            s.rate(),
            s.rate() / reference,
            s.percentile(0.50).as_secs_f64() * 1e3,
            s.percentile(0.99).as_secs_f64() * 1e3,
            s.errors
        );
    }
}

struct Stats {
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
}

impl Stats {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i]
    }
}

/// One request of the load: the operation over REST, or the same operation as a tool.
#[derive(Clone)]
struct Call {
    method: hyper::Method,
    uri: hyper::Uri,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    /// A tool call answers 200 either way; its result says whether the operation succeeded.
    tool: bool,
}

impl Call {
    fn rest(gateway: &str, token: &str) -> Self {
        Self {
            method: hyper::Method::GET,
            uri: format!("{gateway}/bench/").parse().unwrap(),
            headers: vec![("authorization", format!("Bearer {token}"))],
            body: Bytes::new(),
            tool: false,
        }
    }

    fn tool(gateway: &str, token: &str) -> Self {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
        Self {
            method: hyper::Method::POST,
            uri: format!("{gateway}/mcp").parse().unwrap(),
            headers: vec![
                ("authorization", format!("Bearer {token}")),
                ("content-type", "application/json".into()),
                ("accept", "application/json, text/event-stream".into()),
                ("mcp-protocol-version", "2026-07-28".into()),
                ("mcp-method", "tools/call".into()),
                ("mcp-name", "get".into()),
            ],
            body: Bytes::from_static(body.as_bytes()),
            tool: true,
        }
    }

    fn request(&self) -> hyper::Request<Full<Bytes>> {
        let mut req = hyper::Request::builder()
            .method(self.method.clone())
            .uri(self.uri.clone());
        for (name, value) in &self.headers {
            req = req.header(*name, value);
        }
        req.body(Full::new(self.body.clone())).unwrap()
    }
}

/// `connections` workers, each sending one request after another until `duration` ends.
async fn load(call: &Call, connections: usize, duration: Duration) -> Stats {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build_http();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (client, stop, call) = (client.clone(), stop.clone(), call.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match client.request(call.request()).await {
                        Ok(r) if r.status() == 200 => {
                            let body = r.into_body().collect().await.map(|b| b.to_bytes());
                            let failed = match &body {
                                Ok(b) => call.tool && !contains(b, br#""isError":false"#),
                                Err(_) => true,
                            };
                            if failed {
                                errors += 1;
                            } else {
                                latencies.push(t.elapsed());
                            }
                        }
                        Ok(_) | Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut stats = Stats {
        latencies: Vec::new(),
        errors: 0,
        elapsed: started.elapsed(),
    };
    for w in workers {
        let (l, e) = w.await.unwrap();
        stats.latencies.extend(l);
        stats.errors += e;
    }
    stats.elapsed = started.elapsed();
    stats.latencies.sort_unstable();
    stats
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A tiny upstream answering a small JSON body.
async fn upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"{\"ok\":true}"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn spawn(mut cmd: Command, prefixes: &[&str]) -> (Child, Vec<String>) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut found = vec![None; prefixes.len()];
    while found.iter().any(Option::is_none) {
        let line = lines
            .next()
            .expect("the process prints its address")
            .unwrap();
        for (slot, p) in found.iter_mut().zip(prefixes) {
            if let Some(rest) = line.trim().strip_prefix(p) {
                *slot = Some(rest.trim().to_owned());
            }
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, found.into_iter().flatten().collect())
}

fn cli(release: &std::path::Path, data_dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(release.join("portcullis"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|p| p.parent()).unwrap().to_owned()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
