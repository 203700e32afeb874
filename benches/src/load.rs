//! The load generator: the harness drives every proxy with it, and `portcullis-load` points
//! it at any deployment. Closed loop (N connections, each sending as soon as its last answer
//! arrived) measures peak throughput; open loop (a fixed rate, latency counted from when each
//! request was due, not from when it was sent) measures latency without coordinated omission.
//! REST calls and MCP tool calls (stateless protocol 2026-07-28) can be mixed; answers are
//! counted by status, by error code, and by principal (which token sent them). Targets may be
//! `http://` or `https://` (HTTP/1.1 with keep-alive either way).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::{Value, json};

/// One kind of request in the mix.
#[derive(Clone, Debug)]
pub enum Call {
    /// A REST request: method, path (from the base URL), optional JSON body.
    Rest {
        method: http::Method,
        path: String,
        body: Option<String>,
    },
    /// An MCP `tools/call` at `<base>/mcp`.
    Tool { name: String, arguments: Value },
}

impl Call {
    /// `GET /path`, `POST /path {json}`, or `mcp:tool {json}`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("mcp:") {
            let (name, arguments) = match rest.split_once(' ') {
                Some((name, args)) => (
                    name,
                    serde_json::from_str(args)
                        .map_err(|e| format!("'{text}': the arguments are not JSON: {e}"))?,
                ),
                None => (rest, json!({})),
            };
            return Ok(Call::Tool {
                name: name.to_owned(),
                arguments,
            });
        }
        let (method, rest) = text.split_once(' ').ok_or_else(|| {
            format!("'{text}': write `GET /path`, `POST /path {{json}}` or `mcp:tool {{json}}`")
        })?;
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("'{method}' is not an HTTP method"))?;
        let (path, body) = match rest.split_once(' ') {
            Some((path, body)) => (path, Some(body.to_owned())),
            None => (rest, None),
        };
        if !path.starts_with('/') {
            return Err(format!("'{path}': a path starts with /"));
        }
        Ok(Call::Rest {
            method,
            path: path.to_owned(),
            body,
        })
    }

    fn request(&self, base: &str, token: Option<&str>) -> hyper::Request<Full<Bytes>> {
        let builder = match self {
            Call::Rest { method, path, body } => {
                let b = hyper::Request::builder()
                    .method(method.clone())
                    .uri(format!("{base}{path}"));
                let b = if body.is_some() {
                    b.header("content-type", "application/json")
                } else {
                    b
                };
                (b, body.clone().unwrap_or_default())
            }
            Call::Tool { name, arguments } => {
                let body = json!({
                    "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": name, "arguments": arguments, "_meta": {
                        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                        "io.modelcontextprotocol/clientCapabilities": {}}},
                });
                let b = hyper::Request::builder()
                    .method("POST")
                    .uri(format!("{base}/mcp"))
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-protocol-version", "2026-07-28")
                    .header("mcp-method", "tools/call")
                    .header("mcp-name", name.as_str());
                (b, body.to_string())
            }
        };
        let (mut builder, body) = builder;
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request")
    }
}

/// How the load is applied.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// `connections` loops, each sending its next request when the last answer arrived.
    Closed { connections: usize },
    /// `rate` requests per second, due at fixed intervals, over up to `connections`
    /// connections; latency counts from when each was due.
    Open { rate: f64, connections: usize },
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `http://host:port`, no trailing slash.
    pub base: String,
    /// Credentials, used in turn; each is a principal in the report.
    pub tokens: Vec<String>,
    /// The mix: calls and their weights.
    pub calls: Vec<(Call, u32)>,
    pub mode: Mode,
    pub duration: Duration,
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// What a run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Requests answered.
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub latency: Latency,
    /// Answers by status (for MCP tool calls refused by the gateway or failed upstream, the
    /// status the tool result names).
    pub statuses: BTreeMap<u16, u64>,
    /// Error answers by their `code` (the gateway's catalogue), e.g. `rate_limited`.
    pub codes: BTreeMap<String, u64>,
    /// Answers per principal (`token-1`, …) by status: who was limited.
    pub by_principal: BTreeMap<String, BTreeMap<u16, u64>>,
    /// Error answers per principal by their `code`: whose requests were `rate_limited`,
    /// `quota_exhausted`, ….
    pub codes_by_principal: BTreeMap<String, BTreeMap<String, u64>>,
    /// Requests that got no answer (connection errors, timeouts).
    pub failed: u64,
    /// Open loop: requests still waiting for a connection when they were due by more than a
    /// millisecond (the generator could not keep up).
    pub late: u64,
}

/// Answers counted by (principal, status, error code).
type Tally = BTreeMap<(usize, u16, Option<String>), u64>;

struct Shared {
    histogram: Mutex<Histogram<u64>>,
    statuses: Mutex<Tally>,
    done: AtomicU64,
    failed: AtomicU64,
    late: AtomicU64,
}

/// Trust for `https://` targets: the system's usual public roots (webpki-roots), plus the
/// certificates of a PEM file (a private CA).
#[derive(Clone, Debug, Default)]
pub struct Tls {
    pub ca_pem: Option<Vec<u8>>,
}

impl Tls {
    fn config(&self) -> Result<rustls::ClientConfig, String> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(pem) = &self.ca_pem {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("the CA file is not PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("the CA file holds an unusable certificate: {e}"))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

/// Requests at least this far apart are paced by a thread of their own: the runtime's timer
/// ticks in whole milliseconds, which would send them in bursts and add up to a millisecond to
/// each latency, while a thread's sleep is good to tens of microseconds. Closer together,
/// they are paced on the runtime's tick: a thread waking thousands of times a second is kept
/// waiting by a busy machine, and its delays would show as the generator's tail latency.
const PRECISE: Duration = Duration::from_micros(200);

/// The open loop's schedule: request `n` is due at `begin + n * interval`; what is due is
/// handed to the sender in batches.
struct Clock {
    interval: Duration,
    stop: Arc<AtomicBool>,
    due: tokio::sync::mpsc::UnboundedSender<(u64, Instant)>,
}

impl Clock {
    /// On a thread: sleeps to each due time.
    fn precise(self) {
        let begin = Instant::now();
        let mut n = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let due = begin + self.interval.mul_f64(n as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if !self.hand_over(begin, &mut n) {
                return;
            }
        }
    }

    /// On the runtime: wakes on its timer's tick.
    async fn ticking(self) {
        let begin = Instant::now();
        let mut n = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let due = begin + self.interval.mul_f64(n as f64);
            tokio::time::sleep_until(due.into()).await;
            if !self.hand_over(begin, &mut n) {
                return;
            }
        }
    }

    /// Hands over every request due by now; false once nobody takes them.
    fn hand_over(&self, begin: Instant, n: &mut u64) -> bool {
        let now = Instant::now();
        loop {
            let due = begin + self.interval.mul_f64(*n as f64);
            if due > now {
                return true;
            }
            if self.due.send((*n, due)).is_err() {
                return false;
            }
            *n += 1;
        }
    }
}

/// Runs `plan` over plain HTTP or HTTPS (public roots only); see [`run_with`].
pub async fn run(plan: &Plan, progress: Option<&(dyn Fn(u64, Duration) + Sync)>) -> Report {
    run_with(plan, &Tls::default(), progress)
        .await
        .expect("the public roots make a TLS configuration")
}

/// Runs `plan`, trusting `tls` for `https://` targets; `progress` is called about once a
/// second with the answers so far.
pub async fn run_with(
    plan: &Plan,
    tls: &Tls,
    progress: Option<&(dyn Fn(u64, Duration) + Sync)>,
) -> Result<Report, String> {
    let connections = match plan.mode {
        Mode::Closed { connections } | Mode::Open { connections, .. } => connections.max(1),
    };
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls.config()?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build(connector);
    // The mix as a repeating schedule of call indices, by weight.
    let schedule: Arc<Vec<usize>> = Arc::new(
        plan.calls
            .iter()
            .enumerate()
            .flat_map(|(i, (_, w))| std::iter::repeat_n(i, (*w).max(1) as usize))
            .collect(),
    );
    let shared = Arc::new(Shared {
        histogram: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")),
        statuses: Mutex::default(),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        late: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let plan = Arc::new(plan.clone());
    let one = {
        let (client, shared, plan, schedule) = (
            client.clone(),
            shared.clone(),
            plan.clone(),
            schedule.clone(),
        );
        move |n: u64, due: Instant| {
            let (client, shared, plan, schedule) = (
                client.clone(),
                shared.clone(),
                plan.clone(),
                schedule.clone(),
            );
            async move {
                // Principals in turn, and each principal through the whole mix: request n is
                // principal n mod P's (n / P)-th call, so no principal sends only some calls.
                let principals = plan.tokens.len().max(1);
                let call = &plan.calls[schedule[(n as usize / principals) % schedule.len()]].0;
                let principal = (!plan.tokens.is_empty()).then(|| n as usize % plan.tokens.len());
                let token = principal.map(|p| plan.tokens[p].as_str());
                let answer = tokio::time::timeout(
                    Duration::from_secs(30),
                    client.request(call.request(&plan.base, token)),
                )
                .await;
                let outcome = match answer {
                    Ok(Ok(response)) => {
                        let status = response.status().as_u16();
                        match response.into_body().collect().await {
                            Ok(body) => Some(classify(call, status, &body.to_bytes())),
                            Err(_) => None,
                        }
                    }
                    Ok(Err(_)) | Err(_) => None,
                };
                let elapsed = due.elapsed().as_micros().max(1) as u64;
                match outcome {
                    Some((status, code)) => {
                        shared
                            .histogram
                            .lock()
                            .expect("never poisoned")
                            .saturating_record(elapsed);
                        *shared
                            .statuses
                            .lock()
                            .expect("never poisoned")
                            .entry((principal.unwrap_or(0), status, code))
                            .or_default() += 1;
                        shared.done.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    let counter = Arc::new(AtomicU64::new(0));
    match plan.mode {
        Mode::Closed { connections } => {
            for _ in 0..connections {
                let (one, stop, counter) = (one.clone(), stop.clone(), counter.clone());
                tasks.spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        one(n, Instant::now()).await;
                    }
                });
            }
        }
        Mode::Open { rate, connections } => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
            let clock = Clock {
                interval,
                stop: stop.clone(),
                due: due_tx,
            };
            if interval >= PRECISE {
                std::thread::spawn(move || clock.precise());
            } else {
                tokio::spawn(clock.ticking());
            }
            let permits = Arc::new(tokio::sync::Semaphore::new(connections));
            let (one, shared) = (one.clone(), shared.clone());
            tasks.spawn(async move {
                let mut inner = tokio::task::JoinSet::new();
                let mut batch = Vec::new();
                while due_rx.recv_many(&mut batch, 1024).await > 0 {
                    for (n, due) in batch.drain(..) {
                        let permit = permits.clone().acquire_owned().await.expect("open");
                        if due.elapsed() > Duration::from_millis(1) {
                            shared.late.fetch_add(1, Ordering::Relaxed);
                        }
                        let one = one.clone();
                        inner.spawn(async move {
                            one(n, due).await;
                            drop(permit);
                        });
                    }
                    while inner.try_join_next().is_some() {}
                }
                while inner.join_next().await.is_some() {}
            });
        }
    }
    let deadline = started + plan.duration;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        if let Some(progress) = progress {
            progress(shared.done.load(Ordering::Relaxed), started.elapsed());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    while tasks.join_next().await.is_some() {}
    Ok(report(&shared, seconds))
}

/// The status and error code of an answer. A tool result that is an error counts as the
/// status and code it names.
fn classify(call: &Call, status: u16, body: &[u8]) -> (u16, Option<String>) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if let (Call::Tool { .. }, Some(v)) = (call, &parsed)
        && v["result"]["isError"] == true
    {
        let detail: Value = v["result"]["content"][0]["text"]
            .as_str()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null);
        let status = detail["status"].as_u64().map_or(502, |s| s as u16);
        let code = detail["code"]
            .as_str()
            .unwrap_or("upstream_error")
            .to_owned();
        return (status, Some(code));
    }
    let code = parsed
        .as_ref()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .or_else(|| {
            parsed
                .as_ref()
                .and_then(|v| v["error"]["code"].as_i64().map(|c| format!("jsonrpc_{c}")))
        })
        .filter(|_| status >= 400 || matches!(call, Call::Tool { .. }));
    (status, code)
}

fn report(shared: &Shared, seconds: f64) -> Report {
    let histogram = shared.histogram.lock().expect("never poisoned");
    let statuses = shared.statuses.lock().expect("never poisoned");
    let mut report = Report {
        requests: histogram.len(),
        seconds,
        requests_per_second: histogram.len() as f64 / seconds.max(1e-9),
        latency: Latency {
            p50_us: histogram.value_at_quantile(0.5),
            p90_us: histogram.value_at_quantile(0.9),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        },
        failed: shared.failed.load(Ordering::Relaxed),
        late: shared.late.load(Ordering::Relaxed),
        ..Report::default()
    };
    for ((principal, status, code), n) in statuses.iter() {
        let principal = format!("token-{}", principal + 1);
        *report.statuses.entry(*status).or_default() += n;
        if let Some(code) = code {
            *report.codes.entry(code.clone()).or_default() += n;
            *report
                .codes_by_principal
                .entry(principal.clone())
                .or_default()
                .entry(code.clone())
                .or_default() += n;
        }
        *report
            .by_principal
            .entry(principal)
            .or_default()
            .entry(*status)
            .or_default() += n;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_parse_from_their_short_form() {
        assert!(matches!(
            Call::parse("GET /demo/hello"),
            Ok(Call::Rest { body: None, .. })
        ));
        assert!(matches!(
            Call::parse(r#"POST /demo/orders {"item":"book"}"#),
            Ok(Call::Rest { body: Some(_), .. })
        ));
        match Call::parse(r#"mcp:get-order {"id":"42"}"#) {
            Ok(Call::Tool { name, arguments }) => {
                assert_eq!(
                    (name.as_str(), &arguments["id"]),
                    ("get-order", &json!("42"))
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(Call::parse("/no-method").is_err());
        assert!(Call::parse("GET no-slash").is_err());
        assert!(Call::parse("mcp:tool {not json").is_err());
    }

    #[test]
    fn refused_tool_calls_count_as_the_status_they_name() {
        let call = Call::parse("mcp:t").unwrap();
        let detail = json!({"status": 429, "code": "rate_limited"}).to_string();
        let body =
            json!({"result": {"isError": true, "content": [{"type": "text", "text": detail}]}});
        assert_eq!(
            classify(&call, 200, body.to_string().as_bytes()),
            (429, Some("rate_limited".into()))
        );
        let rest = Call::parse("GET /x").unwrap();
        let body = json!({"error": {"code": "quota_exhausted"}});
        assert_eq!(
            classify(&rest, 429, body.to_string().as_bytes()),
            (429, Some("quota_exhausted".into()))
        );
        assert_eq!(classify(&rest, 200, b"{}"), (200, None));
    }
}
