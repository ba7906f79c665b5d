//! Building a route from its file, and running it.
//!
//! A running route is: source → bounded channel (backpressure) → up to
//! `concurrency` workers running the [`Pipeline`] → the message's ack. Stopping a
//! route stops its source first (no new input), lets the workers finish what is
//! in flight within `drain_timeout`, and only then drops the rest, whose acks
//! then answer "failed, redeliver": nothing a source was told is lost.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::pipeline::{NamedSink, NamedStep, Pipeline};
use crate::config::load::ParsedRoute;
use crate::config::{BuildContext, ConfigError, Connectors, Defaults};
use crate::connectors::{Resources, RouteInput, SinkConfig, Source, SourceConfig, SourceContext};
use crate::message::{Envelope, Outcome};
use crate::script::ScriptEngine;
use crate::steps::StepConfig;

/// A route file built into runnable parts (scripts and paths compiled,
/// connectors resolved). Can be started more than once (e.g. a rollback).
pub struct RouteSpec {
    pub id: Arc<str>,
    pub file: PathBuf,
    pub description: Option<String>,
    /// Fingerprint of the route's text and the connector files it uses: equal
    /// versions mean nothing changed.
    pub version: String,
    /// Where `from:` is written, for errors that involve several routes.
    pub from_at: (u64, u64),
    pub source: Arc<dyn Source>,
    pub pipeline: Arc<Pipeline>,
    pub concurrency: usize,
    pub buffer: usize,
    pub drain_timeout: Duration,
}

impl RouteSpec {
    /// Build every part of a parsed route, collecting all errors.
    pub fn build(
        parsed: &ParsedRoute,
        connectors: &Connectors,
        defaults: &Defaults,
    ) -> Result<RouteSpec, Vec<ConfigError>> {
        let cfg = &parsed.config;
        let scripts = ScriptEngine::new(&cfg.script_limits);
        let ctx = BuildContext {
            route_id: &parsed.id,
            file: &parsed.file,
            text: &parsed.text,
            connectors,
            scripts: &scripts,
            defaults,
            used_connectors: Default::default(),
        };
        let mut errors = Vec::new();
        if cfg.concurrency == 0 {
            errors.push(ConfigError::whole_file(
                &parsed.file,
                "concurrency must be at least 1",
            ));
        }
        if cfg.buffer == 0 {
            errors.push(ConfigError::whole_file(
                &parsed.file,
                "buffer must be at least 1",
            ));
        }
        let source = SourceConfig::build(&cfg.from, &ctx)
            .map_err(|e| errors.push(e))
            .ok();
        let mut steps = Vec::new();
        for (i, s) in cfg.steps.iter().enumerate() {
            match StepConfig::build(s, &ctx) {
                Ok(step) => steps.push(NamedStep {
                    label: format!("step {} ({})", i + 1, s.value.kind()),
                    step,
                }),
                Err(e) => errors.push(e),
            }
        }
        let mut sinks = Vec::new();
        for (i, s) in cfg.to.iter().enumerate() {
            match SinkConfig::build(s, &ctx) {
                Ok(sink) => sinks.push(NamedSink {
                    label: format!("sink {} ({})", i + 1, sink.describe()),
                    sink,
                }),
                Err(e) => errors.push(e),
            }
        }
        let dead_letter = match &cfg.errors.dead_letter {
            Some(d) => match SinkConfig::build(d, &ctx) {
                Ok(sink) => Some(NamedSink {
                    label: format!("dead letter ({})", sink.describe()),
                    sink,
                }),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            None => None,
        };
        if cfg.errors.retry.attempts == 0 {
            errors.push(ConfigError::whole_file(
                &parsed.file,
                "errors.retry.attempts must be at least 1 (1 = no retry)",
            ));
        }
        let (Some(source), true) = (source, errors.is_empty()) else {
            return Err(errors);
        };
        let mut h = DefaultHasher::new();
        parsed.hash.hash(&mut h);
        for name in ctx.used_connectors.borrow().iter() {
            if let Some(c) = connectors.by_name.get(name) {
                c.hash.hash(&mut h);
            }
        }
        Ok(RouteSpec {
            id: Arc::from(parsed.id.as_str()),
            file: parsed.file.clone(),
            description: cfg.description.clone(),
            version: format!("{:016x}", h.finish()),
            from_at: (cfg.from.referenced.line(), cfg.from.referenced.column()),
            source,
            pipeline: Arc::new(Pipeline {
                steps,
                sinks,
                retry: cfg.errors.retry.clone(),
                dead_letter,
            }),
            concurrency: cfg.concurrency,
            buffer: cfg.buffer,
            drain_timeout: cfg.drain_timeout.0,
        })
    }
}

/// A started route version.
pub struct RunningRoute {
    pub spec: Arc<RouteSpec>,
    /// Hands messages to the route from outside its source (dead-letter
    /// replay); weak so the channel still closes when the source stops.
    injector: mpsc::WeakSender<Envelope>,
    pub started_at: DateTime<Utc>,
    shutdown: CancellationToken,
    source_task: JoinHandle<()>,
    workers: JoinHandle<()>,
}

/// How long a source may take to start (bind, watch) before the start fails.
const START_TIMEOUT: Duration = Duration::from_secs(10);

impl RunningRoute {
    /// Start the route; returns once its source takes input, or the reason it
    /// could not start.
    pub async fn start(
        spec: Arc<RouteSpec>,
        resources: Arc<Resources>,
    ) -> Result<RunningRoute, String> {
        // Sinks first: a sink that cannot reach its broker stops the start
        // before the source takes anything.
        let sinks = spec
            .pipeline
            .sinks
            .iter()
            .chain(spec.pipeline.dead_letter.iter());
        for s in sinks {
            match tokio::time::timeout(START_TIMEOUT, s.sink.start(&resources)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("{}: {e}", s.label)),
                Err(_) => {
                    return Err(format!(
                        "{}: did not start within {START_TIMEOUT:?}",
                        s.label
                    ));
                }
            }
        }
        for s in &spec.pipeline.steps {
            match tokio::time::timeout(START_TIMEOUT, s.step.start(&resources)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("{}: {e}", s.label)),
                Err(_) => {
                    return Err(format!(
                        "{}: did not start within {START_TIMEOUT:?}",
                        s.label
                    ));
                }
            }
        }
        let (tx, rx) = mpsc::channel::<Envelope>(spec.buffer);
        let injector = tx.downgrade();
        let workers = tokio::spawn(run_workers(spec.pipeline.clone(), rx, spec.concurrency));
        let shutdown = CancellationToken::new();
        let (ctx, ready) = SourceContext::new(
            spec.id.clone(),
            RouteInput::new(tx),
            shutdown.clone(),
            resources,
        );
        let (err_tx, err_rx) = tokio::sync::oneshot::channel::<String>();
        let source = spec.source.clone();
        let id = spec.id.clone();
        let source_task = tokio::spawn(async move {
            if let Err(e) = source.run(ctx).await {
                tracing::error!(route = %id, error = %e, "source stopped with an error");
                let _ = err_tx.send(e.to_string());
            }
        });
        let started = tokio::select! {
            r = ready => r.is_ok(),
            _ = tokio::time::sleep(START_TIMEOUT) => {
                shutdown.cancel();
                return Err(format!("source did not start within {START_TIMEOUT:?}"));
            }
        };
        if !started {
            // The source dropped its context without saying it was ready: it
            // ended, and its error (sent as it returns) is the reason.
            shutdown.cancel();
            let reason = match tokio::time::timeout(Duration::from_secs(1), err_rx).await {
                Ok(Ok(e)) => e,
                _ => "source ended before it started".into(),
            };
            return Err(reason);
        }
        tracing::info!(route = %spec.id, source = %spec.source.describe(), version = %spec.version, "route started");
        Ok(RunningRoute {
            spec,
            injector,
            started_at: Utc::now(),
            shutdown,
            source_task,
            workers,
        })
    }

    /// A door into the route for messages that do not come from its source, while
    /// the route takes input.
    pub fn input(&self) -> Option<RouteInput> {
        self.injector.upgrade().map(RouteInput::new)
    }

    /// Stop taking input, finish in-flight messages (bounded by the route's
    /// drain timeout), then stop.
    pub async fn stop(self) {
        let id = self.spec.id.clone();
        self.shutdown.cancel();
        let RunningRoute {
            mut source_task,
            mut workers,
            spec,
            ..
        } = self;
        let drained = tokio::time::timeout(spec.drain_timeout, async {
            let _ = (&mut source_task).await;
            let _ = (&mut workers).await;
        })
        .await;
        match drained {
            Ok(()) => tracing::info!(route = %id, "route stopped"),
            Err(_) => {
                // Aborting drops the unfinished envelopes; their acks answer
                // "failed, retryable", so every source redelivers them.
                workers.abort();
                source_task.abort();
                tracing::warn!(
                    route = %id,
                    timeout = ?spec.drain_timeout,
                    "drain timeout: unfinished messages were answered 'failed' so their sources redeliver"
                );
            }
        }
    }
}

/// Pull envelopes and process up to `concurrency` at once. Ends when every
/// sender is gone (source stopped) and the last in-flight message is answered.
async fn run_workers(
    pipeline: Arc<Pipeline>,
    mut rx: mpsc::Receiver<Envelope>,
    concurrency: usize,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    // A JoinSet aborts its tasks when dropped: aborting this task (drain
    // timeout) drops the in-flight envelopes, and their acks answer "failed".
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            env = rx.recv() => {
                let Some(env) = env else { break };
                let Ok(permit) = slots.clone().acquire_owned().await else { break };
                let pipeline = pipeline.clone();
                tasks.spawn(async move {
                    let route = env.message.meta.route.to_string();
                    let started = std::time::Instant::now();
                    let outcome = pipeline.process(env.message).await;
                    let label = match &outcome {
                        Outcome::Delivered(_) => "delivered",
                        Outcome::Dropped { .. } => "dropped",
                        Outcome::DeadLettered(_) => "dead_lettered",
                        Outcome::Failed(_) => "failed",
                    };
                    metrics::counter!("ferry_messages_total", "route" => route.clone(), "outcome" => label).increment(1);
                    metrics::histogram!("ferry_message_seconds", "route" => route).record(started.elapsed().as_secs_f64());
                    env.ack.settle(outcome);
                    drop(permit);
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}
