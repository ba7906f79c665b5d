//! Redis streams: a source that reads with a consumer group, and a sink that
//! `XADD`s.
//!
//! **Invariant (ack mapping):** an entry read with `XREADGROUP` stays in the
//! group's pending list until the route's outcome says handled; only then is
//! it `XACK`ed (and `XDEL`eted with `delete_after_ack`). A failed entry is left
//! pending; `XAUTOCLAIM` takes entries idle longer than `claim_idle` (this
//! consumer's failures, or entries of a consumer that died) and hands them to
//! the route again. On start the source first re-reads its own pending entries
//! (those of a previous run under the same consumer name, e.g. after
//! `kill -9`). An entry still in flight is never handed out a second time by a
//! claim (see [`Busy`]).
//!
//! **Sink:** one `XADD` per message, the body in `body_field` and (with
//! `forward_headers`) the headers as the other fields; `redis.*` headers, which
//! a Redis source added, are not written back.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{StreamAutoClaimOptions, StreamId, StreamReadOptions, StreamReadReply};

use super::{BLOCK, GroupStart, RedisConnection, explain};
use crate::connectors::SourceContext;
use crate::connectors::broker::{InFlight, failure_text};
use crate::message::{Body, Message};
use crate::template::Template;

/// Entry ids this source handed to the route and not yet settled, so a claim
/// never hands the same entry out twice while it is in flight.
pub(super) type Busy = Arc<Mutex<HashSet<String>>>;

/// A `stream:` source: one stream read through one consumer group.
pub(super) struct StreamSource {
    pub(super) key: String,
    pub(super) group: String,
    pub(super) consumer: String,
    pub(super) start: GroupStart,
    pub(super) batch: usize,
    pub(super) claim_idle: Duration,
    pub(super) body_field: String,
    pub(super) delete_after_ack: bool,
}

fn value_bytes(v: &redis::Value) -> Option<Vec<u8>> {
    match v {
        redis::Value::BulkString(b) => Some(b.clone()),
        redis::Value::SimpleString(s) => Some(s.clone().into_bytes()),
        redis::Value::Int(i) => Some(i.to_string().into_bytes()),
        redis::Value::Double(d) => Some(d.to_string().into_bytes()),
        _ => None,
    }
}

impl StreamSource {
    fn entry_message(&self, ctx: &SourceContext, e: &StreamId) -> Message {
        let (key, body_field) = (&self.key, &self.body_field);
        let body = e
            .map
            .get(body_field)
            .and_then(value_bytes)
            .unwrap_or_default();
        let mut msg = Message::new(
            ctx.route_id.clone(),
            format!("redis stream {key}"),
            Body::Bytes(bytes::Bytes::from(body)),
        );
        for (k, v) in &e.map {
            if k == body_field {
                continue;
            }
            if let Some(b) = value_bytes(v) {
                msg.headers.insert(
                    k.to_ascii_lowercase(),
                    String::from_utf8_lossy(&b).into_owned(),
                );
            }
        }
        msg.headers.insert("redis.stream".into(), key.to_string());
        msg.headers.insert("redis.id".into(), e.id.clone());
        msg
    }

    /// Create the group if missing; a missing stream is created empty.
    async fn ensure_group(&self, con: &mut MultiplexedConnection) -> Result<(), String> {
        let (key, group) = (&self.key, &self.group);
        let id = match self.start {
            GroupStart::Beginning => "0",
            GroupStart::New => "$",
        };
        match con
            .xgroup_create_mkstream::<_, _, _, ()>(key, group, id)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(explain(format!(
                "cannot create group `{group}` on stream `{key}`: {e}"
            ))),
        }
    }

    /// Submit entries; returns false when the route stops taking input.
    async fn submit_entries(
        &self,
        ctx: &SourceContext,
        entries: Vec<StreamId>,
        shared: &RedisConnection,
        in_flight: &InFlight,
        busy: &Busy,
    ) -> bool {
        for e in entries {
            if !busy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(e.id.clone())
            {
                continue;
            }
            let msg = self.entry_message(ctx, &e);
            let rx = tokio::select! {
                _ = ctx.shutdown.cancelled() => { busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&e.id); return false; }
                r = ctx.input.submit(msg) => match r {
                    Ok(rx) => rx,
                    Err(_) => { busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&e.id); return false; }
                },
            };
            let manager = shared.manager().await;
            let (key, group, id, del) = (
                self.key.clone(),
                self.group.clone(),
                e.id.clone(),
                self.delete_after_ack,
            );
            let (route, busy) = (ctx.route_id.clone(), busy.clone());
            in_flight.settle(rx, move |outcome| async move {
                if outcome.is_handled() {
                    let acked = async {
                        let mut m = manager?;
                        let _: usize = m.xack(&key, &group, &[&id]).await.map_err(|e| e.to_string())?;
                        if del {
                            let _: usize = m.xdel(&key, &[&id]).await.map_err(|e| e.to_string())?;
                        }
                        Ok::<(), String>(())
                    }
                    .await;
                    if let Err(e) = acked {
                        tracing::warn!(route = %route, entry = %id, error = %e, "redis: XACK failed; the entry stays pending and is claimed again");
                    }
                } else {
                    tracing::debug!(route = %route, entry = %id, error = %failure_text(&outcome), "redis: entry left pending for a retry");
                }
                busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            });
        }
        true
    }

    /// One connected session of a stream source; Ok(()) when asked to stop.
    pub(super) async fn session(
        &self,
        ctx: &mut SourceContext,
        shared: &RedisConnection,
        in_flight: &InFlight,
        busy: &Busy,
        started: &mut bool,
    ) -> Result<(), String> {
        let (key, group, consumer, batch) = (&self.key, &self.group, &self.consumer, self.batch);
        let mut con = shared.dedicated(BLOCK).await?;
        self.ensure_group(&mut con).await?;
        shared.manager().await?;
        if !*started {
            *started = true;
            ctx.ready();
        }
        // Entries a previous run of this consumer read and never acked.
        let own = StreamReadOptions::default()
            .group(group, consumer)
            .count(batch);
        let mut from = "0".to_string();
        loop {
            let reply: Option<StreamReadReply> = con
                .xread_options(&[key], &[&from], &own)
                .await
                .map_err(|e| format!("XREADGROUP (own pending): {e}"))?;
            let entries: Vec<StreamId> = reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default();
            let Some(last) = entries.last() else { break };
            from = last.id.clone();
            if !self
                .submit_entries(ctx, entries, shared, in_flight, busy)
                .await
            {
                return Ok(());
            }
        }
        let read = StreamReadOptions::default()
            .group(group, consumer)
            .count(batch)
            .block(BLOCK.as_millis() as usize);
        let claim_every =
            (self.claim_idle / 2).clamp(Duration::from_millis(200), Duration::from_secs(10));
        let mut last_claim = tokio::time::Instant::now();
        loop {
            if ctx.shutdown.is_cancelled() {
                return Ok(());
            }
            if last_claim.elapsed() >= claim_every {
                last_claim = tokio::time::Instant::now();
                let mut start = "0-0".to_string();
                loop {
                    let reply: redis::streams::StreamAutoClaimReply = con
                        .xautoclaim_options(
                            key,
                            group,
                            consumer,
                            self.claim_idle.as_millis() as u64,
                            &start,
                            StreamAutoClaimOptions::default().count(batch),
                        )
                        .await
                        .map_err(|e| format!("XAUTOCLAIM: {e}"))?;
                    let done = reply.next_stream_id == "0-0" || reply.claimed.is_empty();
                    start = reply.next_stream_id.clone();
                    if !self
                        .submit_entries(ctx, reply.claimed, shared, in_flight, busy)
                        .await
                    {
                        return Ok(());
                    }
                    if done {
                        break;
                    }
                }
            }
            let (keys, ids) = ([key], [">"]);
            let reply: Option<StreamReadReply> = tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                r = con.xread_options(&keys, &ids, &read) => r.map_err(|e| format!("XREADGROUP: {e}"))?,
            };
            let entries: Vec<StreamId> = reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default();
            if !self
                .submit_entries(ctx, entries, shared, in_flight, busy)
                .await
            {
                return Ok(());
            }
        }
    }
}

/// A `stream:` sink: the stream key (a template) and how entries are written.
pub(super) struct StreamSink {
    pub(super) key: Template,
    pub(super) maxlen: Option<usize>,
    pub(super) body_field: String,
    pub(super) forward_headers: bool,
}

impl StreamSink {
    /// `XADD` one message; the caller maps the error to a delivery outcome.
    pub(super) async fn xadd(
        &self,
        m: &mut ConnectionManager,
        msg: &Message,
        body: &[u8],
    ) -> redis::RedisResult<()> {
        let key = self.key.render(msg);
        let mut fields: Vec<(String, Vec<u8>)> = vec![(self.body_field.clone(), body.to_vec())];
        if self.forward_headers {
            for (k, v) in &msg.headers {
                if !k.starts_with("redis.") && *k != self.body_field {
                    fields.push((k.clone(), v.clone().into_bytes()));
                }
            }
        }
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&key);
        if let Some(n) = self.maxlen {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*");
        for (k, v) in &fields {
            cmd.arg(k).arg(v.as_slice());
        }
        cmd.query_async::<String>(m).await.map(|_| ())
    }
}
