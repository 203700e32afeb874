//! The audit writer. Two workers per node:
//!
//! - the journal thread numbers each record (per-node sequence), chains it to its predecessor
//!   (`hash = SHA-256(prev_hash || "\n" || body)`), and appends it to the local journal file
//!   (`DATA_DIR/audit-journal.ndjson`) — written through to the operating system at once, so
//!   a killed process loses only what had not reached the journal yet. It is a thread of its
//!   own, not a task: a file write can block for milliseconds when the disk is busy, and on a
//!   runtime worker that would hold up every request scheduled there;
//! - the database task writes journaled records to the store in batches. While the database
//!   is slow or down they wait (in memory up to a bound, beyond it in the journal only) and
//!   drain when it returns.
//!
//! On start, journaled records the database lacks are written first. The journal is emptied
//! whenever the database holds everything in it and it has grown past a few megabytes.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::{Audit, AuditMode, Inner, RequestRecord, Stats};
use crate::store::{AuditRow, Store};

/// What the journal thread receives.
pub enum Message {
    /// A request record, and who waits until it is journaled (the response's last bytes).
    Record(Box<RequestRecord>, Option<oneshot::Sender<()>>),
    Change(Box<super::change::ChangeRecord>),
    /// Journal everything before this, then write it to the database within the deadline.
    Flush(Duration, oneshot::Sender<()>),
}

/// A journaled record: its place in the node's chain and its exact body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
    pub body: String,
}

/// The hash of the first record's predecessor.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain link of `body` after `prev`.
pub fn link(prev: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

/// Records kept in memory while the database is down; beyond this they wait in the journal.
const MAX_PENDING: usize = 100_000;
/// Records per database transaction.
const BATCH: usize = 500;
/// How long the database task waits for more records before a transaction (unless a flush
/// waits on it).
const GATHER: Duration = Duration::from_millis(50);
/// The journal is emptied when everything in it is in the database and it is this large.
const ROTATE_BYTES: u64 = 8 * 1024 * 1024;

/// Starts the writer for `node`: replays what the journal holds beyond the database, then
/// serves records until [`Audit::flush`] and shutdown.
pub async fn start(
    store: Store,
    data_dir: &Path,
    node: String,
    mode: AuditMode,
    metrics: Arc<crate::metrics::Metrics>,
) -> anyhow::Result<Audit> {
    if mode == AuditMode::Off {
        return Ok(Audit::off(node, metrics));
    }
    let journal_path = data_dir.join("audit-journal.ndjson");
    let (mut seq, mut prev) = match store.audit_head(&node).await? {
        Some((seq, hash)) => (seq, hash),
        None => (0, GENESIS.to_owned()),
    };
    let committed = Arc::new(AtomicU64::new(seq));
    let replay = read_journal(&journal_path, seq)?;
    if let Some(last) = replay.last() {
        tracing::info!(
            records = replay.len(),
            "replaying journaled request records"
        );
        seq = last.seq;
        prev = last.hash.clone();
    }
    let stats = Arc::new(Stats::default());
    stats.sink_ok.store(true, Ordering::Relaxed);
    stats.journal_ok.store(true, Ordering::Relaxed);
    stats.spooled.store(replay.len() as u64, Ordering::Relaxed);
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&journal_path)?;

    let (tx, rx) = mpsc::unbounded_channel();
    let (db_tx, db_rx) = mpsc::unbounded_channel();
    let journal = JournalState {
        file,
        path: journal_path.clone(),
        seq,
        prev,
    };
    let (journal_stats, journal_committed, journal_node) =
        (stats.clone(), committed.clone(), node.clone());
    std::thread::Builder::new()
        .name("audit-journal".into())
        .spawn(move || {
            journal_thread(
                rx,
                db_tx,
                journal_node,
                journal,
                journal_stats,
                journal_committed,
            )
        })?;
    tokio::spawn(database_task(
        store,
        node.clone(),
        db_rx,
        replay.into_iter().map(|e| row(&node, e)).collect(),
        journal_path,
        stats.clone(),
        committed,
    ));
    Ok(Audit {
        inner: Arc::new(Inner {
            tx: Some(tx),
            node,
            mode,
            stats,
            metrics,
        }),
    })
}

struct JournalState {
    file: std::fs::File,
    path: PathBuf,
    seq: u64,
    prev: String,
}

/// What the database task receives.
enum ToDatabase {
    Rows(Vec<AuditRow>),
    Flush(Duration, oneshot::Sender<()>),
}

/// Journals what arrives until every sender is gone (shutdown), then ends, which tells the
/// database task that nothing more will come.
fn journal_thread(
    mut rx: mpsc::UnboundedReceiver<Message>,
    db: mpsc::UnboundedSender<ToDatabase>,
    node: String,
    mut state: JournalState,
    stats: Arc<Stats>,
    committed: Arc<AtomicU64>,
) {
    let mut messages = Vec::with_capacity(1024);
    while rx.blocking_recv_many(&mut messages, 1024) > 0 {
        let mut entries = Vec::new();
        let mut text = String::new();
        let mut flushes = Vec::new();
        let mut journaled_acks = Vec::new();
        // Links a record's body into the chain and the journal text.
        let mut append = |body: String| {
            state.seq += 1;
            let hash = link(&state.prev, &body);
            let entry = Entry {
                seq: state.seq,
                prev: std::mem::replace(&mut state.prev, hash.clone()),
                hash,
                body,
            };
            text.push_str(&serde_json::to_string(&entry).expect("an entry serializes"));
            text.push('\n');
            export(&entry);
            entry
        };
        for message in messages.drain(..) {
            match message {
                Message::Record(r, ack) => {
                    let entry = append(serde_json::to_string(&r).expect("a record serializes"));
                    entries.push(row_of(&node, entry, &r));
                    journaled_acks.extend(ack);
                }
                Message::Change(c) => {
                    let entry = append(serde_json::to_string(&c).expect("a record serializes"));
                    entries.push(change_row(&node, entry, &c));
                }
                Message::Flush(deadline, done) => flushes.push((deadline, done)),
            }
        }
        if !entries.is_empty() {
            // One write per batch, straight to the operating system (no user-space buffer).
            let journaled = state.file.write_all(text.as_bytes());
            if let Err(e) = &journaled {
                tracing::error!(error = %e, "cannot append to the audit journal");
            }
            stats.journal_ok.store(journaled.is_ok(), Ordering::Relaxed);
            let n = entries.len() as u64;
            stats.queued.fetch_sub(n, Ordering::Relaxed);
            stats.spooled.fetch_add(n, Ordering::Relaxed);
            let _ = db.send(ToDatabase::Rows(entries));
        }
        // In the journal (or failed to be, which `journal_ok` reports): the responses waiting
        // for their records may end.
        for ack in journaled_acks {
            let _ = ack.send(());
        }
        for (deadline, done) in flushes {
            let _ = db.send(ToDatabase::Flush(deadline, done));
        }
        // Everything journaled is in the database: start the journal afresh.
        if committed.load(Ordering::Relaxed) == state.seq
            && state.file.metadata().map(|m| m.len()).unwrap_or(0) > ROTATE_BYTES
            && let Err(e) = state.file.set_len(0)
        {
            tracing::warn!(error = %e, path = %state.path.display(), "cannot empty the audit journal");
        }
    }
}

async fn database_task(
    store: Store,
    node: String,
    mut rx: mpsc::UnboundedReceiver<ToDatabase>,
    mut pending: VecDeque<AuditRow>,
    journal: PathBuf,
    stats: Arc<Stats>,
    committed: Arc<AtomicU64>,
) {
    // Set when records were let go from memory: until the journal has been read up to its
    // end, records are taken from it, not from the channel.
    let mut spilled = false;
    let mut backoff = Duration::from_millis(100);
    let mut flushes: Vec<(tokio::time::Instant, oneshot::Sender<()>)> = Vec::new();
    let mut closed = false;
    loop {
        if pending.is_empty() && !spilled {
            for (_, done) in flushes.drain(..) {
                let _ = done.send(());
            }
            if closed {
                return;
            }
            match rx.recv().await {
                Some(message) => receive(message, &mut pending, spilled, &committed, &mut flushes),
                None => closed = true,
            }
        }
        // Gather for a moment when nobody waits: fewer, larger transactions (the records are
        // already safe in the journal). Sleeping the moment out, rather than waking for every
        // arrival, saves a wake-up per record on a busy node.
        if !closed && flushes.is_empty() && pending.len() < BATCH && !spilled {
            tokio::time::sleep(GATHER).await;
        }
        loop {
            match rx.try_recv() {
                Ok(message) => receive(message, &mut pending, spilled, &committed, &mut flushes),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if pending.len() > MAX_PENDING {
            pending.clear();
            spilled = true;
        }
        if spilled && pending.is_empty() {
            match read_journal(&journal, committed.load(Ordering::Relaxed)) {
                Ok(entries) => {
                    spilled = entries.len() > MAX_PENDING;
                    pending = entries
                        .into_iter()
                        .take(MAX_PENDING)
                        .map(|e| row(&node, e))
                        .collect();
                }
                Err(e) => tracing::error!(error = %e, "cannot read the audit journal"),
            }
        }
        if pending.is_empty() {
            continue;
        }
        let n = pending.len().min(BATCH);
        let batch: Vec<AuditRow> = pending.drain(..n).collect();
        let written =
            tokio::time::timeout(Duration::from_secs(5), store.insert_audit(&batch)).await;
        if !matches!(written, Ok(Ok(()))) {
            // Back to the front of the queue, in order, for the next attempt.
            for r in batch.iter().rev() {
                pending.push_front(r.clone());
            }
        }
        match written {
            Ok(Ok(())) => {
                let last = batch.last().map_or(0, |e| e.seq);
                committed.store(last, Ordering::Relaxed);
                stats.written.fetch_add(n as u64, Ordering::Relaxed);
                stats.spooled.fetch_sub(n as u64, Ordering::Relaxed);
                if !stats.sink_ok.swap(true, Ordering::Relaxed) {
                    tracing::info!("the audit sink is writable again; draining the journal");
                }
                backoff = Duration::from_millis(100);
            }
            Ok(Err(e)) => failed(&stats, &e.to_string()),
            Err(_) => failed(&stats, "no answer within 5 s"),
        }
        if !stats.sink_ok.load(Ordering::Relaxed) {
            // Answer flushes whose deadline passed; the records stay in the journal.
            let now = tokio::time::Instant::now();
            for (_, done) in flushes.extract_if(.., |(deadline, _)| *deadline <= now) {
                let _ = done.send(());
            }
            if closed && flushes.is_empty() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                message = rx.recv() => match message {
                    Some(m) => receive(m, &mut pending, spilled, &committed, &mut flushes),
                    None => closed = true,
                },
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// Takes a message: new entries join the queue in order (an entry already queued or written
/// is not taken twice; while spilled, entries are read from the journal instead).
fn receive(
    message: ToDatabase,
    pending: &mut VecDeque<AuditRow>,
    spilled: bool,
    committed: &AtomicU64,
    flushes: &mut Vec<(tokio::time::Instant, oneshot::Sender<()>)>,
) {
    match message {
        ToDatabase::Rows(entries) if !spilled => {
            let last = pending
                .back()
                .map_or_else(|| committed.load(Ordering::Relaxed), |e| e.seq);
            pending.extend(entries.into_iter().filter(|e| e.seq > last));
        }
        ToDatabase::Rows(_) => {}
        ToDatabase::Flush(deadline, done) => {
            flushes.push((tokio::time::Instant::now() + deadline, done));
        }
    }
}

fn failed(stats: &Stats, reason: &str) {
    if stats.sink_ok.swap(false, Ordering::Relaxed) {
        tracing::warn!(%reason, "cannot write request records to the database; keeping them in the journal");
    }
}

/// Sends the record to the OTLP collector (when one is configured) as a log record: the
/// record's fields as attributes (`who.client`, …) and its chain position.
fn export(entry: &Entry) {
    use portcullis_limiter::telemetry;
    if !telemetry::exporting() {
        return;
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&entry.body) else {
        return;
    };
    let mut attributes = telemetry::attributes(&value);
    attributes.push((
        "seq".to_owned(),
        i64::try_from(entry.seq).unwrap_or(i64::MAX).into(),
    ));
    attributes.push(("hash".to_owned(), entry.hash.clone().into()));
    let event = if value.get("kind").and_then(|k| k.as_str()) == Some("change") {
        "portcullis.change"
    } else {
        "portcullis.request"
    };
    telemetry::export_event("portcullis.audit", event, &entry.body, attributes);
}

/// The row of a journaled entry, its columns read back from its body (replay).
fn row(node: &str, e: Entry) -> AuditRow {
    let value: serde_json::Value = serde_json::from_str(&e.body).unwrap_or_default();
    if value.get("kind").and_then(|k| k.as_str()) == Some("change") {
        let c: super::change::ChangeRecord = serde_json::from_value(value).unwrap_or_default();
        return AuditRow {
            kind: "change".to_owned(),
            ..change_row(node, e, &c)
        };
    }
    let r: RequestRecord = serde_json::from_str(&e.body).unwrap_or_default();
    row_of(node, e, &r)
}

/// The row of a change record: who acted is in the body; the columns that filter request
/// records by client or product stay empty.
fn change_row(node: &str, e: Entry, c: &super::change::ChangeRecord) -> AuditRow {
    AuditRow {
        node: node.to_owned(),
        seq: e.seq,
        kind: "change".to_owned(),
        recorded_at: c.timestamp.clone(),
        channel: c.channel.clone(),
        outcome: c.outcome.as_str().to_owned(),
        reason: c.reason.clone(),
        status: c.status,
        client: None,
        profile: None,
        partner: None,
        collection: None,
        operation: None,
        body: e.body,
        prev_hash: e.prev,
        hash: e.hash,
    }
}

/// The row of an entry whose record is at hand: the indexed columns and the exact body.
fn row_of(node: &str, e: Entry, r: &RequestRecord) -> AuditRow {
    AuditRow {
        node: node.to_owned(),
        seq: e.seq,
        kind: "request".to_owned(),
        recorded_at: r.timestamp.clone(),
        channel: r.channel.clone(),
        outcome: r.outcome.as_str().to_owned(),
        reason: r.reason.clone(),
        status: r.status,
        client: r.who.client.clone(),
        profile: r.who.profile.clone(),
        partner: r.who.partner.clone(),
        collection: r.what.collection.clone(),
        operation: r.what.operation.clone(),
        body: e.body,
        prev_hash: e.prev,
        hash: e.hash,
    }
}

/// The journal's entries after `after`, in order. A torn last line (the process died while
/// writing it) is ignored.
fn read_journal(path: &Path, after: u64) -> std::io::Result<Vec<Entry>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        match serde_json::from_str::<Entry>(&line) {
            Ok(e) if e.seq > after => entries.push(e),
            Ok(_) => {}
            Err(_) => tracing::warn!("skipping an unreadable line in the audit journal"),
        }
    }
    Ok(entries)
}
