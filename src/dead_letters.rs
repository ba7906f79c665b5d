//! Dead-letter inspection and replay (`ferry dead-letters …`).
//!
//! Works on the embedded queue store directly when Ferry is stopped, or
//! through a running Ferry's admin endpoint (the store file can be open in one
//! process only). Replay takes each message out of the dead-letter queue only
//! once its target has it: moved into a queue in one transaction, or handed to
//! a running route whose outcome said handled. A message whose replay fails
//! stays in the dead-letter queue.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::message::{Body, Headers, Message, Outcome};
use crate::queue_store::{FsyncPolicy, QueueInfo, QueueStore, StoredMessage};

/// A queued message as the tools show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageView {
    pub seq: u64,
    pub id: String,
    pub source: String,
    pub received_at: String,
    pub headers: Headers,
    /// JSON bodies as JSON text; other bodies as text (invalid UTF-8 replaced).
    pub body: String,
}

impl MessageView {
    fn new(seq: u64, m: &StoredMessage) -> Self {
        let body = match &m.body {
            Body::Json(v) => v.to_string(),
            Body::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        };
        MessageView {
            seq,
            id: m.id.clone(),
            source: m.source.clone(),
            received_at: m.received_at.to_rfc3339(),
            headers: m.headers.clone(),
            body,
        }
    }
}

/// Where replayed messages go.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ReplayRequest {
    /// Into this queue.
    pub to_queue: Option<String>,
    /// Into this running route (its steps and sinks, as if its source had it).
    pub to_route: Option<String>,
    /// At most this many messages (default 100).
    pub limit: Option<usize>,
}

/// What one replay call did.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ReplayResult {
    pub replayed: usize,
    /// Messages that stayed in the dead-letter queue, with the reason.
    pub failed: Vec<String>,
    /// Messages left in the dead-letter queue.
    pub remaining: u64,
}

/// The queue a dead letter originally came from, when it came from a queue
/// (its `ferry-source` header reads `queue NAME`).
fn original_queue(m: &StoredMessage) -> Option<String> {
    m.headers
        .get("ferry-source")
        .and_then(|s| s.strip_prefix("queue "))
        .map(str::to_string)
}

fn remaining(store: &QueueStore, queue: &str) -> u64 {
    store
        .queues()
        .into_iter()
        .find(|q| q.name == queue)
        .map_or(0, |q| q.messages)
}

/// Replay up to `limit` messages of `queue` (oldest first). `engine` is needed
/// to replay into a route.
pub async fn replay(
    store: &QueueStore,
    engine: Option<&Engine>,
    queue: &str,
    req: &ReplayRequest,
) -> ReplayResult {
    let mut result = ReplayResult::default();
    let limit = req.limit.unwrap_or(100);
    let batch = match store.peek(queue, limit) {
        Ok(b) => b,
        Err(e) => {
            result.failed.push(e.to_string());
            return result;
        }
    };
    for (seq, m) in batch {
        let outcome =
            match (&req.to_route, &req.to_queue) {
                (Some(route), _) => replay_into_route(store, engine, queue, seq, route).await,
                (None, target) => {
                    let Some(target) = target.clone().or_else(|| original_queue(&m)) else {
                        result.failed.push(format!(
                        "{}: did not come from a queue (source: {}); give --to-queue or --to-route",
                        m.id,
                        m.headers.get("ferry-source").map_or("unknown", String::as_str)
                    ));
                        continue;
                    };
                    match store.move_message(queue, seq, &target).await {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err("being consumed or gone".to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
        match outcome {
            Ok(()) => result.replayed += 1,
            Err(e) => result.failed.push(format!("{}: {e}", m.id)),
        }
    }
    result.remaining = remaining(store, queue);
    result
}

async fn replay_into_route(
    store: &QueueStore,
    engine: Option<&Engine>,
    queue: &str,
    seq: u64,
    route: &str,
) -> Result<(), String> {
    let engine =
        engine.ok_or("replaying into a route needs a running Ferry (its admin endpoint)")?;
    let input = engine
        .route_input(route)
        .await
        .ok_or_else(|| format!("route `{route}` is not running"))?;
    let Some(lease) = store.lease(queue, seq).map_err(|e| e.to_string())? else {
        return Err("being consumed or gone".into());
    };
    let stored = &lease.message;
    let mut msg = Message::new(
        std::sync::Arc::from(route),
        format!("replay from queue {queue}"),
        stored.body.clone(),
    );
    msg.id = stored.id.clone();
    msg.headers = stored.headers.clone();
    match input.process(msg).await {
        Ok(outcome) if outcome.is_handled() => {
            store.ack(&lease).await.map_err(|e| e.to_string())?;
            if let Outcome::DeadLettered(f) = outcome {
                return Err(format!("failed again and was dead-lettered: {f}"));
            }
            Ok(())
        }
        Ok(Outcome::Failed(f)) => {
            store.nack(lease, Duration::ZERO);
            Err(f.to_string())
        }
        Ok(_) => unreachable!("handled outcomes are matched above"),
        Err(e) => {
            store.nack(lease, Duration::ZERO);
            Err(e.to_string())
        }
    }
}

/// The tools' way to the queues: the store itself, or a running Ferry.
pub enum Backend {
    Local(QueueStore),
    Remote {
        base: String,
        client: reqwest::Client,
    },
}

impl Backend {
    /// Open the store in `data_dir`; if a running Ferry holds it, use that
    /// Ferry's admin endpoint instead.
    pub async fn connect(data_dir: &Path, admin: SocketAddr) -> Result<Backend, String> {
        let path = data_dir.join("queues.redb");
        if !path.exists() {
            return Err(format!(
                "no queue store at {} (wrong --data?)",
                path.display()
            ));
        }
        match QueueStore::open(&path, FsyncPolicy::Always) {
            Ok(store) => Ok(Backend::Local(store)),
            Err(e) if e.message.contains("already open") => {
                crate::install_crypto_provider();
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(300))
                    .build()
                    .map_err(|e| e.to_string())?;
                let base = format!("http://{admin}/admin/queues");
                client
                    .get(&base)
                    .send()
                    .await
                    .map_err(|e| format!("{e}; the store is open in another Ferry process, and its admin endpoint {admin} does not answer (use --admin)"))?;
                Ok(Backend::Remote { base, client })
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, url: String) -> Result<T, String> {
        let Backend::Remote { client, .. } = self else {
            return Err("not remote".into());
        };
        let r = client.get(&url).send().await.map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("{url}: {}", r.status()));
        }
        r.json().await.map_err(|e| e.to_string())
    }

    pub async fn queues(&self) -> Result<Vec<QueueInfo>, String> {
        match self {
            Backend::Local(s) => Ok(s.queues()),
            Backend::Remote { base, .. } => self.get(base.clone()).await,
        }
    }

    pub async fn list(&self, queue: &str, limit: usize) -> Result<Vec<MessageView>, String> {
        match self {
            Backend::Local(s) => view_list(s, queue, limit),
            Backend::Remote { base, .. } => {
                self.get(format!("{base}/{queue}/messages?limit={limit}"))
                    .await
            }
        }
    }

    pub async fn show(&self, queue: &str, key: &str) -> Result<Option<MessageView>, String> {
        match self {
            Backend::Local(s) => view_one(s, queue, key),
            Backend::Remote { base, client } => {
                let r = client
                    .get(format!("{base}/{queue}/messages/{key}"))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status() == reqwest::StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                r.json().await.map(Some).map_err(|e| e.to_string())
            }
        }
    }

    pub async fn replay(&self, queue: &str, req: &ReplayRequest) -> Result<ReplayResult, String> {
        match self {
            Backend::Local(s) => Ok(replay(s, None, queue, req).await),
            Backend::Remote { base, client } => client
                .post(format!("{base}/{queue}/replay"))
                .json(req)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string()),
        }
    }

    pub async fn purge(&self, queue: &str) -> Result<usize, String> {
        match self {
            Backend::Local(s) => s.purge(queue).await.map_err(|e| e.to_string()),
            Backend::Remote { base, client } => {
                #[derive(Deserialize)]
                struct Purged {
                    purged: usize,
                }
                let p: Purged = client
                    .delete(format!("{base}/{queue}/messages"))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(p.purged)
            }
        }
    }
}

/// Up to `limit` messages of a queue, oldest first.
pub fn view_list(
    store: &QueueStore,
    queue: &str,
    limit: usize,
) -> Result<Vec<MessageView>, String> {
    Ok(store
        .peek(queue, limit)
        .map_err(|e| e.to_string())?
        .iter()
        .map(|(seq, m)| MessageView::new(*seq, m))
        .collect())
}

/// One message by sequence number or id.
pub fn view_one(store: &QueueStore, queue: &str, key: &str) -> Result<Option<MessageView>, String> {
    Ok(store
        .find(queue, key)
        .map_err(|e| e.to_string())?
        .map(|(seq, m)| MessageView::new(seq, &m)))
}
