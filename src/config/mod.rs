//! Route and connector files: their types, and the context that turns them into
//! running parts.
//!
//! A route file (`routes/NAME.yaml`, id = file stem) is parsed into [`RouteFile`];
//! connector files (`connectors/NAME.yaml`) into [`ConnectorConfig`]. Parsing is
//! strict (unknown and duplicate keys are errors) and every error carries file, line
//! and column. The types derive `JsonSchema`; their doc comments become the schema
//! descriptions that editors show (`ferry schema`).
//!
//! Building (compiling scripts and JSONPath, resolving `connector: NAME`) happens in
//! the `build` functions of each step and connector with a [`BuildContext`], so a
//! file that builds is a file that can run: nothing is compiled per message.

mod env;
pub mod error;
pub mod load;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use serde_saphyr::{Location, Spanned};

pub use error::{ConfigError, ConfigErrors};

use crate::connectors::{ConnectorConfig, SinkConfig, SourceConfig};
use crate::queue_store::FsyncPolicy;
use crate::script::{ScriptEngine, ScriptLimits};
use crate::steps::StepConfig;

/// A route: one source, steps run in order on each message, and the sinks that
/// must all confirm a message before the source is acknowledged.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Route id. Defaults to the file name without `.yaml`.
    pub id: Option<String>,
    /// What the route is for (shown in status and `ferry graph`).
    pub description: Option<String>,
    /// Where messages come from: `{ KIND: { options } }`.
    #[schemars(with = "SourceConfig")]
    pub from: Spanned<SourceConfig>,
    /// Processing steps, in order.
    #[serde(default)]
    #[schemars(with = "Vec<StepConfig>")]
    pub steps: Vec<Spanned<StepConfig>>,
    /// Where messages go. Several endpoints form a multicast: a message is delivered
    /// when every one of them confirmed it. Empty: the route's result is only
    /// returned to the source (e.g. an HTTP request/reply transformation).
    #[serde(default)]
    #[schemars(with = "Vec<SinkConfig>")]
    pub to: Vec<Spanned<SinkConfig>>,
    /// Retries and dead letters.
    #[serde(default)]
    pub errors: ErrorsConfig,
    /// How many messages this route processes at once (default 4).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How many messages may wait between the source and the workers (default 64).
    /// When full, sources wait (backpressure).
    #[serde(default = "default_buffer")]
    pub buffer: usize,
    /// Limits for this route's scripts (filter, script, set_header).
    #[serde(default)]
    pub script_limits: ScriptLimits,
    /// How long a stopping route waits for in-flight messages (default 30s).
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: HumanDuration,
}

fn default_concurrency() -> usize {
    4
}
fn default_buffer() -> usize {
    64
}
fn default_drain_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// What happens when delivery fails.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorsConfig {
    /// Redelivery of retryable failures (timeouts, connection errors, HTTP 5xx).
    /// Permanent failures (bad input, script errors, HTTP 4xx) are not retried.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Where a message goes when retries are exhausted or the failure is permanent.
    /// Its headers carry the error. Without one, the source is told the message
    /// failed (HTTP error reply, file moved to `.error/`, …).
    #[schemars(with = "Option<SinkConfig>")]
    pub dead_letter: Option<Spanned<SinkConfig>>,
}

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Total delivery attempts, including the first (default 3; 1 = no retry).
    pub attempts: u32,
    /// Wait before the second attempt; doubles each time (default 200ms).
    pub backoff: HumanDuration,
    /// Upper bound of the wait (default 30s).
    pub max_backoff: HumanDuration,
    /// Randomise each wait between 50% and 100% of its value (default true), so
    /// many failing messages do not retry in lockstep.
    pub jitter: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 3,
            backoff: HumanDuration(Duration::from_millis(200)),
            max_backoff: HumanDuration(Duration::from_secs(30)),
            jitter: true,
        }
    }
}

/// A duration written like `200ms`, `5s`, `1m 30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration `{s}`: {e} (examples: 200ms, 5s, 1m)"
                ))
            })
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration such as 200ms, 5s, 1m 30s",
            "pattern": "^\\s*[0-9]"
        })
    }
}

/// A size written like `10MiB`, `512KB`, `1GB` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    fn parse(s: &str) -> Option<u64> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().ok()?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1000,
            "kib" | "k" => 1024,
            "mb" => 1000 * 1000,
            "mib" | "m" => 1024 * 1024,
            "gb" => 1000 * 1000 * 1000,
            "gib" | "g" => 1024 * 1024 * 1024,
            _ => return None,
        };
        n.checked_mul(mult)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map(ByteSize).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size `{s}` (examples: 512KiB, 10MiB, 1GB, 4096)"
                ))
            }),
        }
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size in bytes: a number, or a string such as 512KiB, 10MiB, 1GB",
            "type": ["integer", "string"]
        })
    }
}

/// Settings every build can see: defaults from the command line.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Where `http` sources listen unless they say otherwise.
    pub http_listen: SocketAddr,
    /// Where Ferry keeps its state (queues, stores).
    pub data_dir: PathBuf,
    /// When the embedded queue store syncs to disk.
    pub queue_fsync: FsyncPolicy,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            queue_fsync: FsyncPolicy::Always,
        }
    }
}

/// Connector files by name (file stem).
#[derive(Debug, Default)]
pub struct Connectors {
    pub by_name: BTreeMap<String, LoadedConnector>,
}

/// A parsed connector file and a fingerprint of its text (routes that use a
/// connector change version when it changes).
#[derive(Debug)]
pub struct LoadedConnector {
    pub file: PathBuf,
    pub config: ConnectorConfig,
    pub hash: u64,
}

/// What a step or connector needs while it is built from its config.
pub struct BuildContext<'a> {
    pub route_id: &'a str,
    pub file: &'a Path,
    /// The interpolated file text, to place errors inside multi-line scalars.
    pub text: &'a str,
    pub connectors: &'a Connectors,
    pub scripts: &'a ScriptEngine,
    pub defaults: &'a Defaults,
    /// Connector names this route resolved: their changes change its version.
    pub used_connectors: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

impl BuildContext<'_> {
    pub fn error(&self, loc: &Location, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.file, loc, message)
    }

    /// Resolve `connector: NAME` to a connector file of the given kind.
    pub fn connector(
        &self,
        name: &Spanned<String>,
        kind: &str,
    ) -> Result<&ConnectorConfig, ConfigError> {
        match self.connectors.by_name.get(&name.value) {
            Some(c) if c.config.kind() == kind => {
                self.used_connectors.borrow_mut().insert(name.value.clone());
                Ok(&c.config)
            }
            Some(c) => Err(self.error(
                &name.referenced,
                format!(
                    "connector `{}` ({}) is of kind `{}`, but this endpoint is `{kind}`",
                    name.value,
                    c.file.display(),
                    c.config.kind()
                ),
            )),
            None => {
                let known: Vec<&str> = self.connectors.by_name.keys().map(String::as_str).collect();
                let mut err = self.error(
                    &name.referenced,
                    format!(
                        "connector `{}` not found (expected connectors/{}.yaml; known: {})",
                        name.value,
                        name.value,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                if let Some(best) = error::suggest(&name.value, known.iter().copied()) {
                    err = err.with_hint(format!("did you mean `{best}`?"));
                }
                Err(err)
            }
        }
    }

    /// Where line `line`, column `col` (1-based) of a string scalar that starts at
    /// `loc` lands in the file. Block scalars (`|`, `>`) start on the next line, at
    /// their indentation; quoted and plain scalars on the same line.
    pub fn position_in_scalar(&self, loc: &Location, line: usize, col: usize) -> (u64, u64) {
        let start_line = loc.line() as usize;
        let header = self
            .text
            .lines()
            .nth(start_line.saturating_sub(1))
            .unwrap_or("");
        let at = header
            .chars()
            .skip(loc.column().saturating_sub(1) as usize)
            .collect::<String>();
        let at = at.trim_start();
        if at.starts_with('|') || at.starts_with('>') {
            let body_line = start_line + line;
            let indent = self
                .text
                .lines()
                .nth(body_line.saturating_sub(1))
                .map(|l| l.len() - l.trim_start().len())
                .unwrap_or(0);
            (body_line as u64, (indent + col) as u64)
        } else {
            let quote = usize::from(at.starts_with('"') || at.starts_with('\''));
            if line <= 1 {
                (loc.line(), loc.column() + (quote + col - 1) as u64)
            } else {
                ((start_line + line - 1) as u64, col as u64)
            }
        }
    }
}
