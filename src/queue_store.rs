//! The embedded durable queue: named FIFO queues in one redb file under the data
//! folder (`DATA/queues.redb`), with no broker to run.
//!
//! Invariants:
//! - A message is visible to consumers only after the commit that stored it
//!   (with the `always` fsync policy: after it is on disk), and the producer
//!   is confirmed only then.
//! - A consumer *leases* a message; it leaves the queue only when acked (a
//!   delete, committed like an enqueue). Leases live in memory, so after a crash
//!   or `kill -9` every unacked message is ready again: at-least-once.
//! - Within a queue, messages are handed out in enqueue order (per-queue
//!   sequence numbers); competing consumers share one queue.
//!
//! All writes go through one writer thread that commits whatever is waiting in
//! one transaction (group commit), so many concurrent producers share one fsync.
//! See docs/queue.md for the durability of each fsync policy and
//! docs/adr/0004-queue-store.md for why redb.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use tokio::sync::{Notify, oneshot};

use crate::message::{Body, Headers, Message};

/// How often the store forces data to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every commit is fsynced before producers are confirmed (concurrent
    /// producers share one fsync). Nothing confirmed is lost, even on power loss.
    Always,
    /// Commits are made visible at once but fsynced at most every interval. A
    /// crash of Ferry or the machine can lose what was confirmed since the last
    /// fsync (up to the interval), and redeliver what was acked since then.
    Interval(Duration),
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            other => {
                let d = other.strip_prefix("interval:").ok_or_else(|| {
                    format!("invalid fsync policy `{other}` (use `always` or `interval:100ms`)")
                })?;
                humantime::parse_duration(d)
                    .map(FsyncPolicy::Interval)
                    .map_err(|e| format!("invalid fsync interval `{d}`: {e}"))
            }
        }
    }
}

/// A store problem (disk, corruption, lock).
#[derive(Debug, Clone, thiserror::Error)]
#[error("queue store {path}: {message}")]
pub struct StoreError {
    pub path: String,
    pub message: String,
}

/// A message as kept in a queue.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub id: String,
    pub source: String,
    pub received_at: DateTime<Utc>,
    pub headers: Headers,
    pub body: Body,
}

impl StoredMessage {
    pub fn from_message(m: &Message) -> Self {
        StoredMessage {
            id: m.id.clone(),
            source: m.meta.source.clone(),
            received_at: m.meta.received_at,
            headers: m.headers.clone(),
            body: m.body.clone(),
        }
    }

    /// Encoding: version byte, body kind, id, source, received-at (ms),
    /// header count and pairs, body. Strings and the body are length-prefixed.
    fn encode(&self) -> Vec<u8> {
        let body = self.body.to_bytes();
        let mut out = Vec::with_capacity(body.len() + 128);
        out.push(1u8);
        out.push(u8::from(matches!(self.body, Body::Json(_))));
        put(&mut out, self.id.as_bytes());
        put(&mut out, self.source.as_bytes());
        out.extend_from_slice(&self.received_at.timestamp_millis().to_le_bytes());
        out.extend_from_slice(&(self.headers.len() as u32).to_le_bytes());
        for (k, v) in &self.headers {
            put(&mut out, k.as_bytes());
            put(&mut out, v.as_bytes());
        }
        put(&mut out, &body);
        out
    }

    fn decode(mut b: &[u8]) -> Option<StoredMessage> {
        let version = take_u8(&mut b)?;
        if version != 1 {
            return None;
        }
        let is_json = take_u8(&mut b)? == 1;
        let id = take_str(&mut b)?;
        let source = take_str(&mut b)?;
        let ms = i64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?);
        let n = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?);
        let mut headers = Headers::new();
        for _ in 0..n {
            let k = take_str(&mut b)?;
            let v = take_str(&mut b)?;
            headers.insert(k, v);
        }
        let raw = take_bytes(&mut b)?;
        let body = if is_json {
            Body::Json(serde_json::from_slice(raw).ok()?)
        } else {
            Body::Bytes(Bytes::copy_from_slice(raw))
        };
        Some(StoredMessage {
            id,
            source,
            received_at: Utc
                .timestamp_millis_opt(ms)
                .single()
                .unwrap_or_else(Utc::now),
            headers,
            body,
        })
    }
}

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}
fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, tail) = b.split_at(n);
    *b = tail;
    Some(head)
}
fn take_u8(b: &mut &[u8]) -> Option<u8> {
    take(b, 1).map(|s| s[0])
}
fn take_bytes<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = u32::from_le_bytes(take(b, 4)?.try_into().ok()?) as usize;
    take(b, n)
}
fn take_str(b: &mut &[u8]) -> Option<String> {
    String::from_utf8(take_bytes(b)?.to_vec()).ok()
}

/// Queue names become table names; keep them to a safe alphabet.
pub fn valid_queue_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

const TABLE_PREFIX: &str = "queue/";

fn table_name(queue: &str) -> String {
    format!("{TABLE_PREFIX}{queue}")
}

#[derive(Default)]
struct QueueState {
    /// Sequence numbers stored and not leased, in order.
    ready: BTreeSet<u64>,
    leased: HashSet<u64>,
    next_seq: u64,
    notify: Arc<Notify>,
}

enum WriteOp {
    Enqueue {
        queue: String,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Delete {
        queue: String,
        seqs: Vec<u64>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Move {
        from: String,
        to: String,
        seq: u64,
        reply: oneshot::Sender<Result<Option<u64>, StoreError>>,
    },
}

impl WriteOp {
    /// Tell the waiter its operation was not committed.
    fn fail(self, e: StoreError) {
        // A waiter that gave up is not an error.
        let _ = match self {
            WriteOp::Enqueue { reply, .. } => reply.send(Err(e)).map_err(drop),
            WriteOp::Delete { reply, .. } => reply.send(Err(e)).map_err(drop),
            WriteOp::Move { reply, .. } => reply.send(Err(e)).map_err(drop),
        };
    }
}

struct Inner {
    db: Database,
    path: PathBuf,
    queues: Mutex<HashMap<String, QueueState>>,
    writer: std::sync::mpsc::Sender<WriteOp>,
}

/// Handle to the store; cheap to clone, shared by every queue endpoint.
#[derive(Clone)]
pub struct QueueStore {
    inner: Arc<Inner>,
}

/// A leased message: ack or nack it.
pub struct Lease {
    pub queue: String,
    pub seq: u64,
    pub message: StoredMessage,
}

/// One queue's size.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QueueInfo {
    pub name: String,
    pub messages: u64,
    pub leased: usize,
}

/// redb's page cache. Its default (1 GiB) kept every page written in memory,
/// so a backlog behind a stalled sink grew the process by its own size
/// (tests/crash.rs `a_stalled_sink_under_load_keeps_memory_bounded`); the
/// backlog belongs on disk, and the OS page cache serves re-reads.
const CACHE_BYTES: usize = 4 * 1024 * 1024;

impl QueueStore {
    /// Open (or create) the store at `path`. Fails if another process has it open.
    pub fn open(path: &Path, policy: FsyncPolicy) -> Result<QueueStore, StoreError> {
        let err = |message: String| StoreError {
            path: path.display().to_string(),
            message,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| err(format!("cannot create folder: {e}")))?;
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_repair_callback(|_| {})
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => err(
                    "already open in another Ferry process (stop it, or use its admin endpoint)"
                        .into(),
                ),
                other => err(other.to_string()),
            })?;
        let mut queues = HashMap::new();
        {
            let txn = db.begin_read().map_err(|e| err(e.to_string()))?;
            let tables: Vec<String> = txn
                .list_tables()
                .map_err(|e| err(e.to_string()))?
                .map(|t| t.name().to_string())
                .collect();
            for t in tables {
                let Some(name) = t.strip_prefix(TABLE_PREFIX) else {
                    continue;
                };
                let def: TableDefinition<u64, &[u8]> = TableDefinition::new(&t);
                let table = txn.open_table(def).map_err(|e| err(e.to_string()))?;
                let mut state = QueueState::default();
                for entry in table.iter().map_err(|e| err(e.to_string()))? {
                    let (k, _) = entry.map_err(|e| err(e.to_string()))?;
                    state.ready.insert(k.value());
                }
                state.next_seq = state.ready.last().map_or(0, |s| s + 1);
                queues.insert(name.to_string(), state);
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let inner = Arc::new(Inner {
            db,
            path: path.to_path_buf(),
            queues: Mutex::new(queues),
            writer: tx,
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("ferry-queue-writer".into())
            .spawn(move || writer_loop(weak, rx, policy))
            .map_err(|e| err(format!("cannot start writer thread: {e}")))?;
        Ok(QueueStore { inner })
    }

    fn error(&self, message: impl Into<String>) -> StoreError {
        StoreError {
            path: self.inner.path.display().to_string(),
            message: message.into(),
        }
    }

    fn state<R>(&self, queue: &str, f: impl FnOnce(&mut QueueState) -> R) -> R {
        let mut map = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(queue.to_string()).or_default())
    }

    /// Hand an operation to the writer thread and wait for its commit.
    async fn write<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> WriteOp,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .writer
            .send(op(reply))
            .map_err(|_| self.error("writer stopped"))?;
        rx.await.map_err(|_| self.error("writer stopped"))?
    }

    /// Store a message at the end of `queue`; returns once it is committed.
    pub async fn enqueue(&self, queue: &str, message: &StoredMessage) -> Result<u64, StoreError> {
        let payload = message.encode();
        self.write(|reply| WriteOp::Enqueue {
            queue: queue.to_string(),
            payload,
            reply,
        })
        .await
    }

    /// Lease the oldest ready message of `queue`, waiting for one to arrive.
    pub async fn dequeue(&self, queue: &str) -> Result<Lease, StoreError> {
        loop {
            let (next, notify) = self.state(queue, |s| {
                let next = s.ready.pop_first();
                if let Some(seq) = next {
                    s.leased.insert(seq);
                }
                (next, s.notify.clone())
            });
            let Some(seq) = next else {
                let notified = notify.notified();
                tokio::pin!(notified);
                // Register before re-checking, so an enqueue in between is not missed.
                notified.as_mut().enable();
                if self.state(queue, |s| s.ready.is_empty()) {
                    notified.await;
                }
                continue;
            };
            match self.read(queue, seq) {
                Ok(Some(message)) => {
                    return Ok(Lease {
                        queue: queue.to_string(),
                        seq,
                        message,
                    });
                }
                Ok(None) => {
                    // Deleted meanwhile (purged): forget it.
                    self.state(queue, |s| s.leased.remove(&seq));
                }
                Err(e) => {
                    self.state(queue, |s| {
                        s.leased.remove(&seq);
                        s.ready.insert(seq);
                    });
                    return Err(e);
                }
            }
        }
    }

    /// A read transaction's view of `queue`'s table; None if the queue never existed.
    fn table(
        &self,
        queue: &str,
    ) -> Result<Option<redb::ReadOnlyTable<u64, &'static [u8]>>, StoreError> {
        let name = table_name(queue);
        let def: TableDefinition<u64, &[u8]> = TableDefinition::new(&name);
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(|e| self.error(e.to_string()))?;
        match txn.open_table(def) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.error(e.to_string())),
        }
    }

    fn read(&self, queue: &str, seq: u64) -> Result<Option<StoredMessage>, StoreError> {
        let Some(table) = self.table(queue)? else {
            return Ok(None);
        };
        let Some(raw) = table.get(seq).map_err(|e| self.error(e.to_string()))? else {
            return Ok(None);
        };
        StoredMessage::decode(raw.value())
            .map(Some)
            .ok_or_else(|| self.error(format!("message {seq} in queue {queue} is unreadable")))
    }

    /// Lease one particular ready message (by sequence number), e.g. to replay it.
    pub fn lease(&self, queue: &str, seq: u64) -> Result<Option<Lease>, StoreError> {
        if !self.state(queue, |s| {
            let taken = s.ready.remove(&seq);
            if taken {
                s.leased.insert(seq);
            }
            taken
        }) {
            return Ok(None);
        }
        match self.read(queue, seq) {
            Ok(Some(message)) => Ok(Some(Lease {
                queue: queue.to_string(),
                seq,
                message,
            })),
            other => {
                self.state(queue, |s| {
                    s.leased.remove(&seq);
                    if other.is_err() {
                        s.ready.insert(seq);
                    }
                });
                other.map(|_| None)
            }
        }
    }

    /// The message was handled: remove it for good.
    pub async fn ack(&self, lease: &Lease) -> Result<(), StoreError> {
        let r = self
            .write(|reply| WriteOp::Delete {
                queue: lease.queue.clone(),
                seqs: vec![lease.seq],
                reply,
            })
            .await;
        self.state(&lease.queue, |s| s.leased.remove(&lease.seq));
        r
    }

    /// The message was not handled: make it ready again after `delay` (in its
    /// original place in the order).
    pub fn nack(&self, lease: Lease, delay: Duration) {
        let store = self.clone();
        let release = move || {
            store.state(&lease.queue, |s| {
                if s.leased.remove(&lease.seq) {
                    s.ready.insert(lease.seq);
                    s.notify.notify_waiters();
                    s.notify.notify_one();
                }
            })
        };
        if delay.is_zero() {
            release();
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                release();
            });
        }
    }

    /// Every queue with its size.
    pub fn queues(&self) -> Vec<QueueInfo> {
        let map = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<QueueInfo> = map
            .iter()
            .map(|(name, s)| QueueInfo {
                name: name.clone(),
                messages: (s.ready.len() + s.leased.len()) as u64,
                leased: s.leased.len(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Up to `limit` messages of `queue` from the oldest, without leasing them.
    pub fn peek(&self, queue: &str, limit: usize) -> Result<Vec<(u64, StoredMessage)>, StoreError> {
        let Some(table) = self.table(queue)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table
            .iter()
            .map_err(|e| self.error(e.to_string()))?
            .take(limit)
        {
            let (k, v) = entry.map_err(|e| self.error(e.to_string()))?;
            if let Some(m) = StoredMessage::decode(v.value()) {
                out.push((k.value(), m));
            }
        }
        Ok(out)
    }

    /// One message by sequence number or message id.
    pub fn find(&self, queue: &str, key: &str) -> Result<Option<(u64, StoredMessage)>, StoreError> {
        if let Ok(seq) = key.parse::<u64>()
            && let Some(m) = self.read(queue, seq)?
        {
            return Ok(Some((seq, m)));
        }
        Ok(self
            .peek(queue, usize::MAX)?
            .into_iter()
            .find(|(_, m)| m.id == key))
    }

    /// Move one message (not leased) from `from` to the end of `to`, in one
    /// transaction. Returns its new sequence number, or None if it is gone or
    /// being consumed.
    pub async fn move_message(
        &self,
        from: &str,
        seq: u64,
        to: &str,
    ) -> Result<Option<u64>, StoreError> {
        let taken = self.state(from, |s| s.ready.remove(&seq));
        if !taken {
            return Ok(None);
        }
        let r = self
            .write(|reply| WriteOp::Move {
                from: from.to_string(),
                to: to.to_string(),
                seq,
                reply,
            })
            .await;
        if r.is_err() {
            self.state(from, |s| s.ready.insert(seq));
        }
        r
    }

    /// Delete every message of `queue` that is not being consumed; returns how many.
    pub async fn purge(&self, queue: &str) -> Result<usize, StoreError> {
        let seqs: Vec<u64> = self.state(queue, |s| {
            std::mem::take(&mut s.ready).into_iter().collect()
        });
        let n = seqs.len();
        let r = self
            .write(|reply| WriteOp::Delete {
                queue: queue.to_string(),
                seqs: seqs.clone(),
                reply,
            })
            .await;
        if let Err(e) = r {
            self.state(queue, |s| s.ready.extend(seqs));
            return Err(e);
        }
        Ok(n)
    }
}

/// The single writer: commit everything waiting in one transaction, answer
/// the waiters, then publish the new messages to consumers.
fn writer_loop(
    inner: std::sync::Weak<Inner>,
    rx: std::sync::mpsc::Receiver<WriteOp>,
    policy: FsyncPolicy,
) {
    let mut last_sync = std::time::Instant::now();
    let mut dirty = false;
    loop {
        let first = match policy {
            FsyncPolicy::Interval(every) if dirty => match rx.recv_timeout(every) {
                Ok(op) => Some(op),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            },
            _ => match rx.recv() {
                Ok(op) => Some(op),
                Err(_) => return,
            },
        };
        let Some(inner) = inner.upgrade() else { return };
        let mut batch: Vec<WriteOp> = first.into_iter().collect();
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let durable = match policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(every) => last_sync.elapsed() >= every,
        };
        if batch.is_empty() && !durable {
            continue;
        }
        let result = commit(&inner, &batch, durable);
        if durable {
            last_sync = std::time::Instant::now();
            dirty = false;
        } else {
            dirty = true;
        }
        answer(&inner, batch, result);
    }
}

/// What one committed op produced: the sequence numbers it took.
enum Done {
    Enqueued(String, u64),
    Deleted,
    Moved(String, u64),
}

fn commit(inner: &Inner, batch: &[WriteOp], durable: bool) -> Result<Vec<Done>, StoreError> {
    let err = |m: String| StoreError {
        path: inner.path.display().to_string(),
        message: m,
    };
    let mut txn = inner.db.begin_write().map_err(|e| err(e.to_string()))?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })
    .map_err(|e| err(e.to_string()))?;
    let mut done = Vec::with_capacity(batch.len());
    {
        let mut map = inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = |q: &str| {
            let s = map.entry(q.to_string()).or_default();
            let seq = s.next_seq;
            s.next_seq += 1;
            seq
        };
        for op in batch {
            match op {
                WriteOp::Enqueue { queue, payload, .. } => {
                    let name = table_name(queue);
                    let mut t = txn
                        .open_table(TableDefinition::<u64, &[u8]>::new(&name))
                        .map_err(|e| err(e.to_string()))?;
                    let seq = next(queue);
                    t.insert(seq, payload.as_slice())
                        .map_err(|e| err(e.to_string()))?;
                    done.push(Done::Enqueued(queue.clone(), seq));
                }
                WriteOp::Delete { queue, seqs, .. } => {
                    let name = table_name(queue);
                    let mut t = txn
                        .open_table(TableDefinition::<u64, &[u8]>::new(&name))
                        .map_err(|e| err(e.to_string()))?;
                    for s in seqs {
                        t.remove(*s).map_err(|e| err(e.to_string()))?;
                    }
                    done.push(Done::Deleted);
                }
                WriteOp::Move { from, to, seq, .. } => {
                    let from_name = table_name(from);
                    let payload = {
                        let mut t = txn
                            .open_table(TableDefinition::<u64, &[u8]>::new(&from_name))
                            .map_err(|e| err(e.to_string()))?;
                        t.remove(*seq)
                            .map_err(|e| err(e.to_string()))?
                            .map(|v| v.value().to_vec())
                    };
                    match payload {
                        Some(p) => {
                            let to_name = table_name(to);
                            let mut t = txn
                                .open_table(TableDefinition::<u64, &[u8]>::new(&to_name))
                                .map_err(|e| err(e.to_string()))?;
                            let new_seq = next(to);
                            t.insert(new_seq, p.as_slice())
                                .map_err(|e| err(e.to_string()))?;
                            done.push(Done::Moved(to.clone(), new_seq));
                        }
                        None => done.push(Done::Deleted),
                    }
                }
            }
        }
    }
    txn.commit().map_err(|e| err(e.to_string()))?;
    Ok(done)
}

fn answer(inner: &Inner, batch: Vec<WriteOp>, result: Result<Vec<Done>, StoreError>) {
    match result {
        Ok(done) => {
            // Publish to consumers before confirming producers, so a confirmed
            // message is always visible.
            let mut wake = Vec::new();
            {
                let mut map = inner.queues.lock().unwrap_or_else(|p| p.into_inner());
                for d in &done {
                    if let Done::Enqueued(q, seq) | Done::Moved(q, seq) = d {
                        let s = map.entry(q.clone()).or_default();
                        s.ready.insert(*seq);
                        wake.push(s.notify.clone());
                    }
                }
            }
            for n in wake {
                n.notify_waiters();
                n.notify_one();
            }
            for (op, d) in batch.into_iter().zip(done) {
                match (op, d) {
                    (WriteOp::Enqueue { reply, .. }, Done::Enqueued(_, seq)) => {
                        let _ = reply.send(Ok(seq));
                    }
                    (WriteOp::Delete { reply, .. }, _) => {
                        let _ = reply.send(Ok(()));
                    }
                    (WriteOp::Move { reply, .. }, Done::Moved(_, seq)) => {
                        let _ = reply.send(Ok(Some(seq)));
                    }
                    (WriteOp::Move { reply, .. }, _) => {
                        let _ = reply.send(Ok(None));
                    }
                    (op @ WriteOp::Enqueue { .. }, _) => op.fail(StoreError {
                        path: inner.path.display().to_string(),
                        message: "internal: enqueue without a sequence".into(),
                    }),
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "queue store commit failed");
            for op in batch {
                op.fail(e.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u32) -> StoredMessage {
        let mut headers = Headers::new();
        headers.insert("n".into(), n.to_string());
        StoredMessage {
            id: format!("id-{n}"),
            source: "test".into(),
            received_at: Utc::now(),
            headers,
            body: if n.is_multiple_of(2) {
                Body::Json(serde_json::json!({ "n": n }))
            } else {
                Body::Bytes(Bytes::from(format!("raw {n}")))
            },
        }
    }

    #[tokio::test]
    async fn fifo_ack_and_nack() {
        let dir = tempfile::tempdir().unwrap();
        let store = QueueStore::open(&dir.path().join("q.redb"), FsyncPolicy::Always).unwrap();
        for n in 0..3 {
            store.enqueue("orders", &msg(n)).await.unwrap();
        }
        let a = store.dequeue("orders").await.unwrap();
        let b = store.dequeue("orders").await.unwrap();
        assert_eq!(
            (a.message.id.as_str(), b.message.id.as_str()),
            ("id-0", "id-1")
        );
        store.nack(a, Duration::ZERO);
        store.ack(&b).await.unwrap();
        // The nacked message is first again.
        let again = store.dequeue("orders").await.unwrap();
        assert_eq!(again.message.id, "id-0");
        assert!(matches!(again.message.body, Body::Json(_)));
        assert_eq!(store.queues()[0].messages, 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn competing_consumers_each_get_distinct_messages() {
        let dir = tempfile::tempdir().unwrap();
        let store = QueueStore::open(&dir.path().join("q.redb"), FsyncPolicy::Always).unwrap();
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    for _ in 0..25 {
                        let lease = store.dequeue("shared").await.unwrap();
                        got.push(lease.message.id.clone());
                        store.ack(&lease).await.unwrap();
                    }
                    got
                })
            })
            .collect();
        for n in 0..100 {
            store.enqueue("shared", &msg(n)).await.unwrap();
        }
        let mut all = Vec::new();
        for c in consumers {
            all.extend(c.await.unwrap());
        }
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 100, "every message went to exactly one consumer");
        assert_eq!(store.queues()[0].messages, 0);
    }

    #[tokio::test]
    async fn unacked_messages_come_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        {
            let store = QueueStore::open(&path, FsyncPolicy::Always).unwrap();
            for n in 0..5 {
                store.enqueue("q", &msg(n)).await.unwrap();
            }
            let first = store.dequeue("q").await.unwrap();
            store.ack(&first).await.unwrap();
            let _leased_but_never_acked = store.dequeue("q").await.unwrap();
        }
        // The writer thread ends when the store is dropped; wait for the lock.
        let store = loop {
            match QueueStore::open(&path, FsyncPolicy::Always) {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let ids: Vec<String> = store
            .peek("q", 10)
            .unwrap()
            .into_iter()
            .map(|(_, m)| m.id)
            .collect();
        assert_eq!(ids, ["id-1", "id-2", "id-3", "id-4"]);
        let next = store.dequeue("q").await.unwrap();
        assert_eq!(next.message.id, "id-1");
        assert_eq!(next.message.headers["n"], "1");
    }

    #[tokio::test]
    async fn move_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let store = QueueStore::open(
            &dir.path().join("q.redb"),
            FsyncPolicy::Interval(Duration::from_millis(5)),
        )
        .unwrap();
        for n in 0..4 {
            store.enqueue("dead", &msg(n)).await.unwrap();
        }
        let first = store.peek("dead", 1).unwrap()[0].0;
        assert!(
            store
                .move_message("dead", first, "orders")
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(store.dequeue("orders").await.unwrap().message.id, "id-0");
        assert_eq!(store.purge("dead").await.unwrap(), 3);
        assert!(store.peek("dead", 10).unwrap().is_empty());
        assert_eq!(store.find("orders", "id-0").unwrap().unwrap().1.id, "id-0");
    }

    #[test]
    fn fsync_policy_parses() {
        assert_eq!(
            "always".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Always
        );
        assert_eq!(
            "interval:50ms".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Interval(Duration::from_millis(50))
        );
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }
}
