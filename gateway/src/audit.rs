//! The audit trail: one [`RequestRecord`] for every data-plane request, whatever its outcome,
//! hash-chained per node and kept in the store's database.
//!
//! The pipeline fills a [`Draft`] as the request goes; [`Audit::finish`] wraps the response
//! body so the record is emitted when the body ends — or when it is dropped because the client
//! went away — exactly once. The [`writer`] journals every record to a local file before it is
//! written to the database in batches, off the request path; when the database is slow or down
//! the journal is the spool, and it drains when the database returns.

mod capture;
pub mod change;
pub mod record;
pub mod writer;

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body::{Body as _, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::body::{Body, BoxError};
use crate::error::ErrorCode;
pub use record::{LimitUse, Outcome, RequestRecord};

/// What the operator chose for when records cannot be kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditMode {
    /// Keep serving; records wait in the local journal until the database takes them.
    Spool,
    /// Refuse traffic (503 `audit_unavailable`) while records cannot be written to the
    /// database: the compliance setting.
    Refuse,
    /// Record nothing. For measuring the cost of recording only.
    Off,
}

/// Counters of the audit trail (shown by `/readyz`, exported as metrics).
#[derive(Debug, Default)]
pub struct Stats {
    /// Records emitted but not yet journaled.
    pub queued: AtomicU64,
    /// Records written to the database.
    pub written: AtomicU64,
    /// Records journaled but not yet in the database.
    pub spooled: AtomicU64,
    /// Records lost: neither journaled nor written. Must stay 0.
    pub dropped: AtomicU64,
    /// Whether the last database write succeeded.
    pub sink_ok: AtomicBool,
    /// Whether the last journal write succeeded.
    pub journal_ok: AtomicBool,
}

/// The node's audit trail.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Option<mpsc::UnboundedSender<writer::Message>>,
    node: String,
    mode: AuditMode,
    stats: Arc<Stats>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Audit {
    /// An audit trail that records nothing (`--audit-mode off`).
    pub fn off(node: String, metrics: Arc<crate::metrics::Metrics>) -> Self {
        let stats = Stats::default();
        stats.sink_ok.store(true, Ordering::Relaxed);
        stats.journal_ok.store(true, Ordering::Relaxed);
        Self {
            inner: Arc::new(Inner {
                tx: None,
                node,
                mode: AuditMode::Off,
                stats: Arc::new(stats),
                metrics,
            }),
        }
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The metrics derived from the records.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// Whether requests may be served: always, except in `refuse` mode while the database
    /// cannot take records.
    pub fn accepting(&self) -> bool {
        match self.inner.mode {
            AuditMode::Spool | AuditMode::Off => true,
            AuditMode::Refuse => {
                self.inner.stats.sink_ok.load(Ordering::Relaxed)
                    && self.inner.stats.journal_ok.load(Ordering::Relaxed)
            }
        }
    }

    /// Hands a finished record to the writer; the receiver resolves once it is journaled
    /// (none when records are off).
    fn emit(&self, record: RequestRecord) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.inner.metrics.observe(&record);
        self.inner.tx.as_ref()?;
        let (ack, journaled) = tokio::sync::oneshot::channel();
        self.send(writer::Message::Record(Box::new(record), Some(ack)));
        Some(journaled)
    }

    /// Records a control-plane action: the same chain, journal and database as request
    /// records.
    pub fn record_change(&self, record: change::ChangeRecord) {
        self.send(writer::Message::Change(Box::new(record)));
    }

    fn send(&self, message: writer::Message) {
        let Some(tx) = &self.inner.tx else { return };
        self.inner.stats.queued.fetch_add(1, Ordering::Relaxed);
        if tx.send(message).is_err() {
            // Only after shutdown: the writer is gone.
            self.inner.stats.queued.fetch_sub(1, Ordering::Relaxed);
            self.inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!("a request record was emitted after the audit writer stopped");
        }
    }

    /// Waits until every record emitted so far is journaled and, within `deadline`, written
    /// to the database (what is not stays in the journal for the next start).
    pub async fn flush(&self, deadline: Duration) {
        let Some(tx) = &self.inner.tx else { return };
        let (done, wait) = tokio::sync::oneshot::channel();
        if tx.send(writer::Message::Flush(deadline, done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Starts the record of a request that has just arrived.
    pub fn draft(&self, request_id: &str, method: &str, path: &str, peer: IpAddr) -> Draft {
        let now = time::OffsetDateTime::now_utc();
        Draft {
            audit: Some(self.clone()),
            started: Instant::now(),
            limiter: Duration::ZERO,
            upstream_started: None,
            bytes_in: Arc::new(AtomicU64::new(0)),
            capture: None,
            status: None,
            refusal: None,
            response_kept: None,
            record: RequestRecord {
                schema: record::SCHEMA_VERSION,
                request_id: request_id.to_owned(),
                timestamp: timestamp(now),
                node: self.inner.node.clone(),
                channel: "rest".to_owned(),
                who: record::Who {
                    source_ip: peer.to_string(),
                    ..Default::default()
                },
                what: record::What {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    ..Default::default()
                },
                ..Default::default()
            },
        }
    }

    /// Completes the draft with the answer (`status` is the one to record: the response's own,
    /// or for an MCP tool call the operation's) and arranges for the record to be emitted when the
    /// response body ends (or is dropped).
    pub fn finish(
        &self,
        mut draft: Draft,
        code: Option<ErrorCode>,
        status: u16,
        response: Response<Body>,
    ) -> Response<Body> {
        if draft.audit.take().is_none() {
            return response;
        }
        let r = &mut draft.record;
        r.status = status;
        match code {
            Some(code) => {
                r.outcome = Outcome::of(code);
                r.reason = Some(code.as_str().to_owned());
            }
            None => r.outcome = Outcome::Allowed,
        }
        let (parts, body) = response.into_parts();
        let keep = draft
            .capture
            .as_ref()
            .map(|(settings, _)| settings.max_bytes);
        let body = Recorded {
            inner: body,
            journaled: None,
            held: None,
            draft: Some(Box::new(draft)),
            audit: self.clone(),
            bytes_out: 0,
            failed: false,
            kept: keep.map(Vec::with_capacity),
        };
        Response::from_parts(parts, http_body_util::BodyExt::boxed(body))
    }
}

/// A record's time: RFC 3339 in UTC with microseconds, fixed width, so that stored times
/// sort and compare as text.
pub fn timestamp(t: time::OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_default()
}

/// A request's record as the pipeline fills it. Dropped unfinished — the client went away
/// before the answer, so the server dropped the request — it still emits its record.
pub struct Draft {
    /// Set until the record's emission is arranged.
    audit: Option<Audit>,
    started: Instant,
    /// Time spent asking the limiter.
    pub limiter: Duration,
    /// When the request was sent upstream.
    pub upstream_started: Option<Instant>,
    /// Request body bytes read (counted as they stream).
    pub bytes_in: Arc<AtomicU64>,
    /// Body capture, when the operation asks for it: its settings and the request body kept.
    capture: Option<(crate::model::BodyCapture, Arc<std::sync::Mutex<Vec<u8>>>)>,
    /// The status to record when it is not the response's: an MCP tool call answers 200 with
    /// the operation's outcome inside.
    pub status: Option<u16>,
    /// The refusal to record when the response does not carry it: a tool call's own (its
    /// JSON-RPC answer is a 200).
    pub refusal: Option<ErrorCode>,
    /// The operation's response body, when it is not the body sent (see
    /// [`Draft::capture_response`]).
    response_kept: Option<bytes::Bytes>,
    pub record: RequestRecord,
}

impl Drop for Draft {
    fn drop(&mut self) {
        if let Some(audit) = self.audit.take() {
            let mut record = std::mem::take(&mut self.record);
            record.status = CLIENT_CLOSED_STATUS;
            record.outcome = Outcome::Error;
            record.reason = Some(CLIENT_DISCONNECTED.to_owned());
            record.completed = false;
            record.latency_us = self.latency();
            record.bytes_in = self.bytes_in.load(Ordering::Relaxed);
            audit.emit(record);
        }
    }
}

/// The status recorded for a request whose client left before it was answered (none was
/// sent; 499 by the common convention).
pub const CLIENT_CLOSED_STATUS: u16 = 499;

impl Draft {
    /// Where the time went so far.
    fn latency(&self) -> record::Latency {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let total = self.started.elapsed();
        let upstream = self
            .upstream_started
            .map_or(Duration::ZERO, |t| t.elapsed());
        record::Latency {
            total: micros(total),
            gateway: micros(total.saturating_sub(upstream).saturating_sub(self.limiter)),
            limiter: micros(self.limiter),
            upstream: micros(upstream),
        }
    }

    /// The response body to capture when the answer sent is not the operation's own: a tool
    /// call's JSON-RPC envelope carries the operation's body, which is what is kept (and
    /// redacted).
    pub fn capture_response(&mut self, body: bytes::Bytes) {
        if self.capture.is_some() {
            self.response_kept = Some(body);
        }
    }

    /// Keeps the request and response bodies in the record, as `capture` says.
    pub fn capture(&mut self, capture: &crate::model::BodyCapture) {
        self.capture = Some((capture.clone(), Arc::default()));
    }

    /// Counts the request body's bytes as it streams (and keeps the first of them when bodies
    /// are captured).
    pub fn count_inbound(&self, body: Body) -> Body {
        http_body_util::BodyExt::boxed(Counted {
            inner: body,
            bytes: self.bytes_in.clone(),
            keep: self
                .capture
                .as_ref()
                .map(|(settings, kept)| (settings.max_bytes, kept.clone())),
        })
    }
}

/// A body that adds its data's length to a counter, and keeps its first bytes if asked.
struct Counted {
    inner: Body,
    bytes: Arc<AtomicU64>,
    keep: Option<(usize, Arc<std::sync::Mutex<Vec<u8>>>)>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            if let Some((max, kept)) = &self.keep {
                let mut kept = kept.lock().expect("the capture lock is never poisoned");
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&data[..room.min(data.len())]);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body, which emits the request's record when it ends or is dropped. Its end
/// (the last frame) reaches the client only once the record is in the journal, so a response
/// the client saw complete always has its record, even if the process is killed next.
struct Recorded {
    inner: Body,
    /// Resolves when the emitted record is journaled.
    journaled: Option<tokio::sync::oneshot::Receiver<()>>,
    /// What to answer then: the last frame, or the end.
    held: Option<Option<Frame<Bytes>>>,
    draft: Option<Box<Draft>>,
    audit: Audit,
    bytes_out: u64,
    failed: bool,
    /// The first bytes of the response, when bodies are captured.
    kept: Option<Vec<u8>>,
}

impl Recorded {
    /// Emits the record (once); the receiver resolves when it is journaled.
    fn emit(&mut self, completed: bool) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let mut draft = self.draft.take()?;
        let mut record = std::mem::take(&mut draft.record);
        record.latency_us = draft.latency();
        record.bytes_in = draft.bytes_in.load(Ordering::Relaxed);
        if let Some((settings, kept)) = &draft.capture {
            let request = kept.lock().expect("the capture lock is never poisoned");
            record.request_body = capture::render(&request, record.bytes_in, settings);
            record.response_body = match draft.response_kept.take() {
                Some(body) => {
                    let kept = &body[..body.len().min(settings.max_bytes)];
                    capture::render(kept, body.len() as u64, settings)
                }
                None => {
                    let response = self.kept.take().unwrap_or_default();
                    capture::render(&response, self.bytes_out, settings)
                }
            };
        }
        record.bytes_out = self.bytes_out;
        record.completed = completed;
        if !completed {
            if self.failed {
                // The upstream broke off its response.
                record.outcome = Outcome::Error;
                record.reason = Some(ErrorCode::UpstreamError.as_str().to_owned());
            } else if record.reason.is_none() {
                record.reason = Some(CLIENT_DISCONNECTED.to_owned());
            }
        }
        self.audit.emit(record)
    }
}

/// The reason recorded when the client went away before the response ended.
pub const CLIENT_DISCONNECTED: &str = "client_disconnected";

impl http_body::Body for Recorded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(journaled) = self.journaled.as_mut() {
                // Journaled, or the writer is gone (shutdown): either way, finish.
                let _ = std::task::ready!(Pin::new(journaled).poll(cx));
                self.journaled = None;
                return Poll::Ready(self.held.take().flatten().map(Ok));
            }
            let polled = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
            match polled {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.bytes_out += data.len() as u64;
                        let max = self
                            .draft
                            .as_ref()
                            .and_then(|d| d.capture.as_ref())
                            .map(|c| c.0.max_bytes);
                        if let (Some(kept), Some(max)) = (self.kept.as_mut(), max) {
                            let room = max.saturating_sub(kept.len());
                            kept.extend_from_slice(&data[..room.min(data.len())]);
                        }
                    }
                    if self.inner.is_end_stream()
                        && let Some(journaled) = self.emit(true)
                    {
                        self.journaled = Some(journaled);
                        self.held = Some(Some(frame));
                        continue;
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Some(Err(e)) => {
                    self.failed = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    if let Some(journaled) = self.emit(true) {
                        self.journaled = Some(journaled);
                        self.held = Some(None);
                        continue;
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Not before the record is emitted and journaled: even an empty body is polled once.
        self.draft.is_none()
            && self.journaled.is_none()
            && self.held.is_none()
            && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        // A body never polled because it was empty is complete; any other body dropped
        // before its end was abandoned by the client (or broken by the upstream).
        let completed = !self.failed && self.inner.is_end_stream();
        // Nobody is left to wait for the journal.
        let _ = self.emit(completed);
    }
}
