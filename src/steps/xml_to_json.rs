//! `xml_to_json`: parse an XML body into JSON with Ferry's conventions
//! (`@attr`, `#text`, arrays for repeated elements; see docs/xml-json.md).
//!
//! Malformed XML fails the message as bad input (HTTP 400, `.error/` for files).
//! Large documents are converted on the blocking pool so a big file never stalls
//! the reactor that serves other messages.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Location;

use super::{Flow, Step, StepError};
use crate::codec::xml::{ArrayPaths, XmlToJsonOptions, xml_to_json};
use crate::config::{BuildContext, ByteSize, ConfigError};
use crate::message::{Body, Message};

/// Bodies above this size are converted off the async worker threads.
const BLOCKING_THRESHOLD: usize = 256 * 1024;

/// Options of `xml_to_json`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct XmlToJsonConfig {
    /// Paths that are always arrays, even with one element, e.g. `$.order.line`
    /// or `$..item`. Without them a single `<line>` becomes an object and two
    /// become an array.
    #[serde(default)]
    pub arrays: Vec<String>,
    /// Remove namespace prefixes from names and drop `xmlns` attributes.
    #[serde(default)]
    pub strip_namespaces: bool,
    /// Turn numbers and `true`/`false` into JSON numbers and booleans (values with
    /// leading zeros such as `007` stay strings). Default: everything is a string.
    #[serde(default)]
    pub infer_types: bool,
    /// Deepest element nesting accepted (default 128).
    pub max_depth: Option<usize>,
    /// Largest document accepted (default 64MiB).
    pub max_size: Option<ByteSize>,
}

impl XmlToJsonConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<XmlToJson, ConfigError> {
        let arrays = ArrayPaths::parse(&self.arrays)
            .map_err(|e| ctx.error(loc, format!("xml_to_json.arrays: {e}")))?;
        let mut options = XmlToJsonOptions {
            arrays,
            strip_namespaces: self.strip_namespaces,
            infer_types: self.infer_types,
            ..XmlToJsonOptions::default()
        };
        if let Some(d) = self.max_depth {
            options.max_depth = d;
        }
        if let Some(s) = self.max_size {
            options.max_bytes = usize::try_from(s.0).unwrap_or(usize::MAX);
        }
        Ok(XmlToJson {
            options: std::sync::Arc::new(options),
        })
    }
}

pub struct XmlToJson {
    options: std::sync::Arc<XmlToJsonOptions>,
}

#[async_trait]
impl Step for XmlToJson {
    async fn apply(&self, msg: &mut Message) -> Result<Flow, StepError> {
        let bytes = match &msg.body {
            Body::Bytes(b) => b.clone(),
            // A JSON string body holding XML (e.g. set by a script) converts too.
            Body::Json(serde_json::Value::String(s)) => bytes::Bytes::from(s.clone()),
            Body::Json(_) => {
                return Err(StepError::bad_input(
                    "xml_to_json: body is already JSON, not XML",
                ));
            }
        };
        let value = if bytes.len() > BLOCKING_THRESHOLD {
            let options = self.options.clone();
            tokio::task::spawn_blocking(move || xml_to_json(&bytes, &options))
                .await
                .map_err(|e| StepError::permanent(format!("xml_to_json: worker failed: {e}")))?
        } else {
            xml_to_json(&bytes, &self.options)
        }
        .map_err(|e| StepError::bad_input(format!("xml_to_json: {e}")))?;
        msg.body = Body::Json(value);
        msg.headers
            .insert("content-type".into(), "application/json".into());
        Ok(Flow::Continue)
    }
}
