//! The message model: what flows through a route, and the acknowledgement that
//! travels with it.
//!
//! A [`Message`] has an id, a [`Body`] (raw bytes until a step needs a parsed form,
//! then JSON), string headers and [`Meta`]data. A source hands the engine an
//! [`Envelope`]: the message plus an [`Ack`]. The engine answers the ack exactly once
//! with an [`Outcome`], and only when every sink has answered (or the message was
//! filtered, dropped or dead-lettered). If the envelope is lost on any path (a task
//! panics, a route is torn down), dropping the `Ack` answers `Failed` with a
//! retryable failure, so a source is never left waiting and never acknowledges
//! something that was not delivered. That is the at-least-once invariant.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::oneshot;

/// Message headers: ordered for stable output, string-valued like HTTP headers.
pub type Headers = BTreeMap<String, String>;

/// A unit of work moving through a route.
#[derive(Debug, Clone)]
pub struct Message {
    /// Unique id (UUIDv7: sortable by creation time).
    pub id: String,
    pub body: Body,
    pub headers: Headers,
    pub meta: Meta,
}

/// Where a message came from and how often it has been tried.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Id of the route processing the message.
    pub route: Arc<str>,
    /// Human-readable source description, e.g. `http POST /orders` or a file path.
    pub source: String,
    pub received_at: DateTime<Utc>,
    /// Delivery attempt, starting at 1.
    pub attempt: u32,
    /// Values that scripts set on `meta` beyond the fields above (like Camel's
    /// exchange properties): travel with the message, never sent by sinks.
    pub vars: serde_json::Map<String, Value>,
}

/// Message payload. Bytes stay bytes until a step needs structure.
#[derive(Debug, Clone)]
pub enum Body {
    Bytes(Bytes),
    Json(Value),
}

/// The body could not be read the way a step needed it.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body is not valid UTF-8 (first bad byte at offset {0})")]
    NotUtf8(usize),
    #[error("body is not valid JSON: {0}")]
    NotJson(serde_json::Error),
}

impl Message {
    /// A new message with a fresh id, received now.
    pub fn new(route: Arc<str>, source: impl Into<String>, body: Body) -> Self {
        Message {
            id: uuid::Uuid::now_v7().to_string(),
            body,
            headers: Headers::new(),
            meta: Meta {
                route,
                source: source.into(),
                received_at: Utc::now(),
                attempt: 1,
                vars: serde_json::Map::new(),
            },
        }
    }
}

impl Body {
    /// The serialized form: raw bytes as they are, JSON as compact text.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Body::Bytes(b) => b.clone(),
            // Serializing a Value cannot fail: its keys are strings.
            Body::Json(v) => Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
        }
    }

    /// The body as JSON, parsing raw bytes if needed (and keeping the parsed form).
    pub fn json_mut(&mut self) -> Result<&mut Value, BodyError> {
        if let Body::Bytes(b) = self {
            let v = serde_json::from_slice(b).map_err(BodyError::NotJson)?;
            *self = Body::Json(v);
        }
        match self {
            Body::Json(v) => Ok(v),
            Body::Bytes(_) => unreachable!("converted above"),
        }
    }

    /// The body as a value for scripts and templates: JSON stays JSON; raw bytes
    /// become parsed JSON when they are JSON, otherwise a string.
    pub fn to_value(&self) -> Result<Value, BodyError> {
        match self {
            Body::Json(v) => Ok(v.clone()),
            Body::Bytes(b) => match serde_json::from_slice(b) {
                Ok(v) => Ok(v),
                Err(_) => std::str::from_utf8(b)
                    .map(|s| Value::String(s.to_owned()))
                    .map_err(|e| BodyError::NotUtf8(e.valid_up_to())),
            },
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Body::Bytes(b) => b.is_empty(),
            Body::Json(_) => false,
        }
    }
}

/// Why a message was not delivered, and whether trying again could help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// The input itself is wrong (malformed XML, not JSON, not UTF-8): retrying cannot help.
    BadInput,
    /// A permanent error in a step or sink (script error, HTTP 4xx).
    Permanent,
    /// A transient error (timeout, connection refused, HTTP 5xx): the source should redeliver.
    Retryable,
    /// The route is not taking messages (shutting down, saturated).
    Unavailable,
}

/// A failed delivery: what went wrong and where.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    /// Where it failed, e.g. `step 2 (xml_to_json)` or `sink 1 (http)`.
    pub stage: String,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stage, self.message)
    }
}

/// The engine's single answer to a source about one message.
#[derive(Debug)]
pub enum Outcome {
    /// Every sink confirmed. Carries the message as it left the last step (the
    /// route's result, e.g. for an HTTP reply).
    Delivered(Message),
    /// A filter or script dropped the message on purpose; it counts as handled.
    Dropped { reason: String },
    /// Delivery failed and the dead-letter endpoint took the message: handled.
    DeadLettered(Failure),
    /// Not handled: the source must not acknowledge (reply with an error, nack,
    /// leave the file, …).
    Failed(Failure),
}

impl Outcome {
    /// True when the source may acknowledge the message (at-least-once holds).
    pub fn is_handled(&self) -> bool {
        !matches!(self, Outcome::Failed(_))
    }
}

/// The acknowledgement handle that travels with a message. Answered exactly once;
/// dropping it unanswered answers `Failed` (retryable).
#[derive(Debug)]
pub struct Ack {
    tx: Option<oneshot::Sender<Outcome>>,
}

/// The source's side of an [`Ack`]: resolves to the outcome.
pub type AckReceiver = oneshot::Receiver<Outcome>;

impl Ack {
    pub fn new() -> (Ack, AckReceiver) {
        let (tx, rx) = oneshot::channel();
        (Ack { tx: Some(tx) }, rx)
    }

    /// Answer the source. A source that stopped listening is not an error here.
    pub fn settle(mut self, outcome: Outcome) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(outcome);
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Outcome::Failed(Failure {
                kind: FailureKind::Retryable,
                stage: "engine".into(),
                message: "message abandoned before delivery (route stopped)".into(),
            }));
        }
    }
}

/// A message and its acknowledgement, as handed from a source to the engine.
#[derive(Debug)]
pub struct Envelope {
    pub message: Message,
    pub ack: Ack,
}

/// Await an ack receiver; a vanished engine counts as a retryable failure.
pub async fn outcome_of(rx: AckReceiver) -> Outcome {
    rx.await.unwrap_or_else(|_| {
        Outcome::Failed(Failure {
            kind: FailureKind::Retryable,
            stage: "engine".into(),
            message: "engine stopped before answering".into(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropped_ack_answers_retryable_failure() {
        let (ack, rx) = Ack::new();
        drop(ack);
        match outcome_of(rx).await {
            Outcome::Failed(f) => assert_eq!(f.kind, FailureKind::Retryable),
            other => panic!("expected failure, got {other:?}"),
        }
    }

    #[test]
    fn raw_body_becomes_string_when_not_json() {
        let b = Body::Bytes(Bytes::from_static(b"<a/>"));
        assert_eq!(b.to_value().unwrap(), Value::String("<a/>".into()));
        let b = Body::Bytes(Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(b.to_value().unwrap()["a"], 1);
        let b = Body::Bytes(Bytes::from_static(b"\xff\xfe"));
        assert!(matches!(b.to_value(), Err(BodyError::NotUtf8(0))));
    }
}
