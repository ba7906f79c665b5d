//! Steps (processors): run in order on each message of a route.
//!
//! One file per step kind. Each declares its options (serde + schemars, doc
//! comments become the schema and the docs) and builds into a [`Step`]. Everything
//! a step needs (scripts, JSONPath, templates) is compiled when the route file is
//! loaded, so a bad expression is a load error, never a message-time surprise.
//! Registering a step kind is one line in [`StepConfig`] and one in `build`.

pub mod charset;
pub mod csv;
pub mod filter;
pub mod fixed_width;
pub mod hl7_to_json;
pub mod json_to_hl7;
pub mod json_to_xml;
pub mod jsonpath;
pub mod log;
pub mod remove_header;
pub mod script;
pub mod set_header;
pub mod tcp_call;
pub mod xml_to_json;

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;

use crate::config::{BuildContext, ConfigError};
use crate::connectors::Resources;
use crate::jsonpath::JsonPath;
use crate::message::{Body, FailureKind, Message};
use crate::script::{CompiledScript, ScriptError, ScriptInput, ScriptKind, ScriptMessage};

/// One entry of a route's `steps:` list: `{ KIND: options }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StepConfig {
    /// Parse an XML body into JSON.
    XmlToJson(#[serde(default)] xml_to_json::XmlToJsonConfig),
    /// Turn a JSON body into XML.
    JsonToXml(#[serde(default)] json_to_xml::JsonToXmlConfig),
    /// Replace the body with the result of a JSONPath query (RFC 9535).
    Jsonpath(
        #[serde(deserialize_with = "string_or_struct")]
        #[schemars(with = "StringOr<jsonpath::JsonPathConfig>")]
        jsonpath::JsonPathConfig,
    ),
    /// Set a header from a literal, a JSONPath query or a script.
    SetHeader(set_header::SetHeaderConfig),
    /// Remove one or more headers.
    RemoveHeader(
        #[serde(deserialize_with = "string_or_struct")]
        #[schemars(with = "StringOr<remove_header::RemoveHeaderConfig>")]
        remove_header::RemoveHeaderConfig,
    ),
    /// Keep the message only if a Rhai boolean expression is true; otherwise
    /// drop it (the source is acknowledged: dropping is handling).
    Filter(#[schemars(with = "String")] Spanned<String>),
    /// Run a Rhai script that can read and change `body`, `headers` and `meta`,
    /// or call `drop()`.
    Script(#[schemars(with = "String")] Spanned<String>),
    /// Write a log line (a template such as `order {header.order-id} from {source}`).
    Log(
        #[serde(deserialize_with = "string_or_struct")]
        #[schemars(with = "StringOr<log::LogConfig>")]
        log::LogConfig,
    ),
    /// Parse an HL7 v2 message into JSON (segments in order, fields by number).
    Hl7ToJson(#[serde(default)] hl7_to_json::Hl7ToJsonConfig),
    /// Write the JSON form of an HL7 v2 message back as HL7.
    JsonToHl7(#[serde(default)] json_to_hl7::JsonToHl7Config),
    /// Parse fixed-width records into JSON, or format JSON into records.
    FixedWidth(fixed_width::FixedWidthConfig),
    /// Parse CSV into JSON, or format JSON into CSV.
    Csv(#[serde(default)] csv::CsvConfig),
    /// Convert the body between character sets (e.g. cp037 EBCDIC → UTF-8).
    Charset(charset::CharsetConfig),
    /// Send the body over TCP and replace it with the reply.
    TcpCall(crate::connectors::tcp::TcpClientConfig),
}

impl StepConfig {
    /// The step's kind, as written in route files.
    pub fn kind(&self) -> &'static str {
        match self {
            StepConfig::XmlToJson(_) => "xml_to_json",
            StepConfig::JsonToXml(_) => "json_to_xml",
            StepConfig::Jsonpath(_) => "jsonpath",
            StepConfig::SetHeader(_) => "set_header",
            StepConfig::RemoveHeader(_) => "remove_header",
            StepConfig::Filter(_) => "filter",
            StepConfig::Script(_) => "script",
            StepConfig::Log(_) => "log",
            StepConfig::Hl7ToJson(_) => "hl7_to_json",
            StepConfig::JsonToHl7(_) => "json_to_hl7",
            StepConfig::FixedWidth(_) => "fixed_width",
            StepConfig::Csv(_) => "csv",
            StepConfig::Charset(_) => "charset",
            StepConfig::TcpCall(_) => "tcp_call",
        }
    }

    pub fn build(
        cfg: &Spanned<StepConfig>,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Step>, ConfigError> {
        let loc = &cfg.referenced;
        Ok(match &cfg.value {
            StepConfig::XmlToJson(c) => Arc::new(c.build(loc, ctx)?),
            StepConfig::JsonToXml(c) => Arc::new(c.build(loc, ctx)?),
            StepConfig::Jsonpath(c) => Arc::new(c.build(loc, ctx)?),
            StepConfig::SetHeader(c) => Arc::new(c.build(loc, ctx)?),
            StepConfig::RemoveHeader(c) => Arc::new(c.build(loc, ctx)?),
            StepConfig::Filter(src) => Arc::new(filter::Filter::build(src, ctx)?),
            StepConfig::Script(src) => Arc::new(script::Script::build(src, ctx)?),
            StepConfig::Log(c) => Arc::new(c.build(loc, ctx)?),
            StepConfig::Hl7ToJson(c) => Arc::new(c.build(loc, ctx)?),
            StepConfig::JsonToHl7(c) => Arc::new(c.build(loc, ctx)?),
            StepConfig::FixedWidth(c) => Arc::new(c.build(loc, ctx)?),
            StepConfig::Csv(c) => Arc::new(c.build(loc, ctx)?),
            StepConfig::Charset(c) => Arc::new(c.build(loc, ctx)?),
            StepConfig::TcpCall(c) => Arc::new(tcp_call::TcpCall::build(c, loc, ctx)?),
        })
    }
}

/// What happens to the message after a step.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop here and acknowledge the message as handled, with the reason.
    Drop(String),
}

/// A step failed on this message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub kind: FailureKind,
    pub message: String,
}

impl StepError {
    pub fn bad_input(message: impl Into<String>) -> Self {
        StepError {
            kind: FailureKind::BadInput,
            message: message.into(),
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        StepError {
            kind: FailureKind::Permanent,
            message: message.into(),
        }
    }
}

/// A processing step, built once per route version and shared by its workers.
#[async_trait]
pub trait Step: Send + Sync + 'static {
    /// Called when a route using this step starts, before its source takes
    /// input: take shared connections from `resources` (like
    /// [`Sink::start`](crate::connectors::Sink::start)). An error stops the
    /// route from starting.
    async fn start(&self, _resources: &Arc<Resources>) -> Result<(), String> {
        Ok(())
    }

    async fn apply(&self, msg: &mut Message) -> Result<Flow, StepError>;
}

/// A JSONPath compiled while the route file is read, so a bad path is reported
/// at its line and column.
#[derive(Debug, Clone)]
pub struct JsonPathExpr(pub JsonPath);

impl<'de> Deserialize<'de> for JsonPathExpr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        JsonPath::compile(&s)
            .map(JsonPathExpr)
            .map_err(|e| de::Error::custom(format!("invalid JSONPath `{s}`: {e}")))
    }
}

impl JsonSchema for JsonPathExpr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "JsonPath".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "An RFC 9535 JSONPath query, e.g. $.order.lines[*].sku",
            "pattern": "^\\$"
        })
    }
}

/// Schema helper for options that accept a short string form or a full map.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // only its schema is used
pub enum StringOr<T> {
    Short(String),
    Full(T),
}

/// Options with a short string form (`jsonpath: "$.a"`) and a full map form.
pub trait FromShort: Sized {
    fn from_short(s: String) -> Result<Self, String>;
}

/// Deserialize `T` from either its short string form or its full map form,
/// keeping the YAML parser's locations for errors in either.
pub fn string_or_struct<'de, T, D>(d: D) -> Result<T, D::Error>
where
    T: Deserialize<'de> + FromShort,
    D: Deserializer<'de>,
{
    struct V<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de> + FromShort> Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or a map of options")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            T::from_short(v.to_string()).map_err(E::custom)
        }
        fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<T, M::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_any(V(PhantomData))
}

/// The body of a step that reads text: raw bytes as they are, a JSON string
/// (e.g. set by a script) as its text.
pub fn text_body(msg: &Message, kind: &str) -> Result<bytes::Bytes, StepError> {
    match &msg.body {
        Body::Bytes(b) => Ok(b.clone()),
        Body::Json(serde_json::Value::String(s)) => Ok(bytes::Bytes::from(s.clone())),
        Body::Json(_) => Err(StepError::bad_input(format!(
            "{kind}: body is already JSON, not text"
        ))),
    }
}

/// Bodies above this size are converted on the blocking pool, so a big file
/// never stalls the reactor that serves other messages.
pub const BLOCKING_THRESHOLD: usize = 256 * 1024;

/// Run a conversion of `size` bytes, off the async workers when it is big.
pub async fn convert<T: Send + 'static>(
    kind: &str,
    size: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StepError> {
    if size <= BLOCKING_THRESHOLD {
        return Ok(f());
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StepError::permanent(format!("{kind}: worker failed: {e}")))
}

/// Compile a route script, placing a syntax error at its file line and column.
pub fn compile_script(
    src: &Spanned<String>,
    kind: ScriptKind,
    ctx: &BuildContext,
) -> Result<CompiledScript, ConfigError> {
    ctx.scripts.compile(&src.value, kind).map_err(|e| {
        let (line, col) = match (e.line, e.column) {
            (Some(l), c) => ctx.position_in_scalar(&src.referenced, l, c.unwrap_or(1)),
            _ => (src.referenced.line(), src.referenced.column()),
        };
        ConfigError::new(ctx.file, line, col, format!("script error: {}", e.message))
    })
}

/// Meta fields as scripts see them: Ferry's own plus what scripts set.
fn script_meta(msg: &Message) -> serde_json::Map<String, serde_json::Value> {
    let mut meta = serde_json::Map::new();
    meta.insert("id".into(), msg.id.clone().into());
    meta.insert("route".into(), msg.meta.route.to_string().into());
    meta.insert("source".into(), msg.meta.source.clone().into());
    meta.insert(
        "received_at".into(),
        msg.meta.received_at.to_rfc3339().into(),
    );
    meta.insert("attempt".into(), msg.meta.attempt.into());
    for (k, v) in &msg.meta.vars {
        meta.insert(k.clone(), v.clone());
    }
    meta
}

/// The view of a message that a `script` step gets (owned: the script may
/// change it).
pub fn script_view(msg: &Message) -> Result<ScriptMessage, StepError> {
    let body = msg
        .body
        .to_value()
        .map_err(|e| StepError::bad_input(e.to_string()))?;
    Ok(ScriptMessage {
        body,
        headers: msg.headers.clone(),
        meta: script_meta(msg),
    })
}

/// Evaluate an expression over a message without copying its body or headers
/// (a JSON body is borrowed; only raw bytes are parsed first).
pub fn with_script_input<T>(
    msg: &Message,
    eval: impl FnOnce(ScriptInput) -> T,
) -> Result<T, StepError> {
    let parsed;
    let body = match &msg.body {
        Body::Json(v) => v,
        Body::Bytes(_) => {
            parsed = msg
                .body
                .to_value()
                .map_err(|e| StepError::bad_input(e.to_string()))?;
            &parsed
        }
    };
    let meta = script_meta(msg);
    Ok(eval(ScriptInput {
        body,
        headers: &msg.headers,
        meta: &meta,
    }))
}

/// A script error as a step failure: permanent (rerunning the same script on the
/// same message gives the same error), with the script's line and column.
pub fn script_failure(kind: &str, e: ScriptError) -> StepError {
    let at = match (e.line, e.column) {
        (Some(l), Some(c)) => format!(" at script line {l}, column {c}"),
        (Some(l), None) => format!(" at script line {l}"),
        _ => String::new(),
    };
    StepError::permanent(format!("{kind} failed{at}: {}", e.message))
}
