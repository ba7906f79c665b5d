//! A route's processing: steps in order, then every sink, with retries and the
//! dead-letter endpoint.
//!
//! Invariant: the [`Outcome`] returned here is what the source is told, and it
//! says "handled" only when every sink confirmed the message (or it was
//! dropped on purpose, or the dead-letter endpoint confirmed it). A retry only
//! re-sends to the sinks that have not confirmed yet, so a multicast does not
//! duplicate into sinks that already have the message.

use std::sync::Arc;
use std::time::Duration;

use crate::config::RetryConfig;
use crate::connectors::{DeliveryError, Sink};
use crate::message::{Failure, FailureKind, Message, Outcome};
use crate::steps::{Flow, Step};

pub struct NamedStep {
    /// e.g. `step 2 (xml_to_json)`.
    pub label: String,
    pub step: Arc<dyn Step>,
}

pub struct NamedSink {
    /// e.g. `sink 1 (http POST http://…)`.
    pub label: String,
    pub sink: Arc<dyn Sink>,
}

pub struct Pipeline {
    pub steps: Vec<NamedStep>,
    pub sinks: Vec<NamedSink>,
    pub retry: RetryConfig,
    pub dead_letter: Option<NamedSink>,
}

impl Pipeline {
    pub async fn process(&self, mut msg: Message) -> Outcome {
        for s in &self.steps {
            match s.step.apply(&mut msg).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Drop(reason)) => {
                    tracing::debug!(route = %msg.meta.route, message_id = %msg.id, %reason, "message dropped");
                    return Outcome::Dropped { reason };
                }
                Err(e) => {
                    let failure = Failure {
                        kind: e.kind,
                        stage: s.label.clone(),
                        message: e.message,
                    };
                    return self.fail(msg, failure).await;
                }
            }
        }
        match self.deliver(&mut msg).await {
            Ok(()) => Outcome::Delivered(msg),
            Err(failure) => self.fail(msg, failure).await,
        }
    }

    /// Send to every sink, retrying those that failed with a retryable error.
    async fn deliver(&self, msg: &mut Message) -> Result<(), Failure> {
        let mut pending: Vec<usize> = (0..self.sinks.len()).collect();
        let attempts = self.retry.attempts.max(1);
        let mut attempt = 1;
        loop {
            msg.meta.attempt = attempt;
            let results = futures_util::future::join_all(
                pending.iter().map(|&i| self.sinks[i].sink.deliver(msg)),
            )
            .await;
            let mut failed: Vec<(usize, DeliveryError)> = Vec::new();
            for (&i, r) in pending.iter().zip(results) {
                if let Err(e) = r {
                    failed.push((i, e));
                }
            }
            let Some((first_idx, first_err)) = failed.first().cloned() else {
                return Ok(());
            };
            let permanent = failed.iter().find(|(_, e)| !e.retryable);
            if let Some((i, e)) = permanent {
                return Err(Failure {
                    kind: FailureKind::Permanent,
                    stage: self.sinks[*i].label.clone(),
                    message: e.message.clone(),
                });
            }
            if attempt >= attempts {
                return Err(Failure {
                    kind: FailureKind::Retryable,
                    stage: self.sinks[first_idx].label.clone(),
                    message: format!("{} (after {attempt} attempts)", first_err.message),
                });
            }
            let wait = backoff(&self.retry, attempt);
            tracing::debug!(
                route = %msg.meta.route, message_id = %msg.id, attempt,
                error = %first_err, wait_ms = wait.as_millis() as u64, "delivery failed, retrying"
            );
            tokio::time::sleep(wait).await;
            pending = failed.into_iter().map(|(i, _)| i).collect();
            attempt += 1;
        }
    }

    /// Hand a failed message to the dead-letter endpoint, if there is one.
    async fn fail(&self, mut msg: Message, failure: Failure) -> Outcome {
        tracing::warn!(route = %msg.meta.route, message_id = %msg.id, error = %failure, "message failed");
        let Some(dl) = &self.dead_letter else {
            return Outcome::Failed(failure);
        };
        let h = &mut msg.headers;
        h.insert("ferry-error".into(), failure.message.clone());
        h.insert("ferry-error-stage".into(), failure.stage.clone());
        h.insert(
            "ferry-error-kind".into(),
            format!("{:?}", failure.kind).to_ascii_lowercase(),
        );
        h.insert("ferry-attempts".into(), msg.meta.attempt.to_string());
        h.insert("ferry-route".into(), msg.meta.route.to_string());
        h.insert("ferry-source".into(), msg.meta.source.clone());
        h.insert("ferry-message-id".into(), msg.id.clone());
        match dl.sink.deliver(&msg).await {
            Ok(()) => Outcome::DeadLettered(failure),
            Err(e) => {
                tracing::error!(route = %msg.meta.route, message_id = %msg.id, error = %e, "dead-letter endpoint failed too; source must redeliver");
                Outcome::Failed(Failure {
                    kind: FailureKind::Retryable,
                    stage: dl.label.clone(),
                    message: format!("{failure}; dead-letter endpoint also failed: {e}"),
                })
            }
        }
    }
}

/// Wait before attempt `attempt + 1`: exponential, capped, optionally jittered.
fn backoff(retry: &RetryConfig, attempt: u32) -> Duration {
    let base = retry.backoff.0.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1) as i32);
    let capped = base.min(retry.max_backoff.0.as_secs_f64());
    let factor = if retry.jitter {
        // Cheap randomness is enough to spread retries out.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        0.5 + (nanos % 1000) as f64 / 2000.0
    } else {
        1.0
    };
    Duration::from_secs_f64(capped * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    #[test]
    fn backoff_doubles_and_caps() {
        let r = RetryConfig {
            attempts: 10,
            backoff: HumanDuration(Duration::from_millis(100)),
            max_backoff: HumanDuration(Duration::from_millis(350)),
            jitter: false,
        };
        assert_eq!(backoff(&r, 1), Duration::from_millis(100));
        assert_eq!(backoff(&r, 2), Duration::from_millis(200));
        assert_eq!(backoff(&r, 3), Duration::from_millis(350));
    }
}
