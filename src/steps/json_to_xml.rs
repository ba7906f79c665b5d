//! `json_to_xml`: turn a JSON body into XML, inverting the `xml_to_json`
//! conventions (`@attr` → attribute, `#text` → text, arrays → repeated elements).

use async_trait::async_trait;
use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Location;

use super::{Flow, Step, StepError};
use crate::codec::xml::{JsonToXmlOptions, json_to_xml};
use crate::config::{BuildContext, ConfigError};
use crate::message::{Body, Message};

/// Options of `json_to_xml`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct JsonToXmlConfig {
    /// Root element to wrap the body in. Needed when the JSON is not an object
    /// with exactly one key (that key is the root otherwise).
    pub root: Option<String>,
    /// Write `<?xml version="1.0" encoding="UTF-8"?>` first (default true).
    pub declaration: bool,
    /// Indent nested elements by this many spaces (default: compact output).
    pub indent: Option<usize>,
}

impl Default for JsonToXmlConfig {
    fn default() -> Self {
        JsonToXmlConfig {
            root: None,
            declaration: true,
            indent: None,
        }
    }
}

impl JsonToXmlConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<JsonToXml, ConfigError> {
        if let Some(root) = &self.root {
            let valid = root
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && root
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
            if !valid {
                return Err(ctx.error(
                    loc,
                    format!("json_to_xml.root `{root}` is not an XML element name"),
                ));
            }
        }
        Ok(JsonToXml {
            options: JsonToXmlOptions {
                root: self.root.clone(),
                declaration: self.declaration,
                indent: self.indent,
            },
        })
    }
}

pub struct JsonToXml {
    options: JsonToXmlOptions,
}

#[async_trait]
impl Step for JsonToXml {
    async fn apply(&self, msg: &mut Message) -> Result<Flow, StepError> {
        let value = msg
            .body
            .json_mut()
            .map_err(|e| StepError::bad_input(format!("json_to_xml: {e}")))?;
        let xml = json_to_xml(value, &self.options)
            .map_err(|e| StepError::bad_input(format!("json_to_xml: {e}")))?;
        msg.body = Body::Bytes(Bytes::from(xml));
        msg.headers
            .insert("content-type".into(), "application/xml".into());
        Ok(Flow::Continue)
    }
}
