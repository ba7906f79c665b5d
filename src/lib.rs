//! Ferry: an integration router. Declarative route files describe pipelines;
//! Ferry pulls messages from connectors, transforms them and delivers them.
//!
//! Architecture in brief:
//! - [`config`] reads route and connector files (YAML, strict, `${ENV}`
//!   interpolation) and reports errors with file:line:column.
//! - [`engine`] builds each route into a [`engine::RouteSpec`] (source, compiled
//!   steps, sinks, retry and dead-letter policy) and runs it: source → bounded
//!   channel → `concurrency` workers → sinks.
//! - [`message`] is what flows: a [`message::Message`] plus an
//!   [`message::Ack`] that answers the source exactly once, only after every
//!   sink confirmed (at-least-once).
//! - [`connectors`] holds one file per endpoint kind (`http`, `file`, `timer`,
//!   `stdin`/`stdout`); [`steps`] one file per processing step.
//! - [`codec`] holds pure conversions (XML ⇄ JSON); [`script`] is the Rhai
//!   sandbox; [`jsonpath`] compiles RFC 9535 queries once per route.
//! - [`admin`] serves health, readiness, metrics, route status and reload;
//!   [`engine::watch`] reloads when route or connector files change.
//! - [`schema`] generates the JSON Schema of route and connector files.

pub mod admin;
pub mod codec;
pub mod config;
pub mod connectors;
pub mod dead_letters;
pub mod engine;
pub mod jsonpath;
pub mod message;
pub mod queue_store;
pub mod schema;
pub mod script;
pub mod steps;
pub mod template;

/// Make ring the process-wide TLS provider (reqwest and rustls need exactly
/// one). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
