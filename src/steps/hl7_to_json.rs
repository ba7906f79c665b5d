//! `hl7_to_json`: parse an HL7 v2 message (ER7) into JSON: `{"segments": [...]}`
//! in message order, each segment an object of fields keyed by their HL7
//! number (see docs/legacy.md). Sets `hl7.control_id`, `hl7.message_type` and
//! `hl7.version` headers from MSH.
//!
//! A text that is not HL7 (no MSH, bad encoding characters, a bad segment
//! name) fails the message as bad input: an MLLP source answers it with AE.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Location;

use super::{Flow, Step, StepError, text_body};
use crate::codec::hl7;
use crate::config::{BuildContext, ConfigError};
use crate::message::{Body, Message};

/// Options of `hl7_to_json` (none yet: `hl7_to_json: {}`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hl7ToJsonConfig {}

impl Hl7ToJsonConfig {
    pub fn build(&self, _loc: &Location, _ctx: &BuildContext) -> Result<Hl7ToJson, ConfigError> {
        Ok(Hl7ToJson)
    }
}

pub struct Hl7ToJson;

/// Text of MSH-`n` in the JSON form, components joined with `^`.
fn msh_text(v: &Value, n: &str) -> String {
    match v.pointer(&format!("/segments/0/{n}")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(parts)) => {
            let mut out: Vec<String> = Vec::new();
            for (k, p) in parts {
                let i: usize = k.parse().unwrap_or(1);
                out.resize(i.max(out.len()), String::new());
                if let (Some(slot), Some(s)) = (out.get_mut(i.saturating_sub(1)), p.as_str()) {
                    *slot = s.to_string();
                }
            }
            out.join("^")
        }
        _ => String::new(),
    }
}

#[async_trait]
impl Step for Hl7ToJson {
    async fn apply(&self, msg: &mut Message) -> Result<Flow, StepError> {
        let bytes = text_body(msg, "hl7_to_json")?;
        let v =
            hl7::to_json(&bytes).map_err(|e| StepError::bad_input(format!("hl7_to_json: {e}")))?;
        for (header, field) in [
            ("hl7.control_id", "10"),
            ("hl7.message_type", "9"),
            ("hl7.version", "12"),
        ] {
            msg.headers.insert(header.into(), msh_text(&v, field));
        }
        msg.body = Body::Json(v);
        msg.headers
            .insert("content-type".into(), "application/json".into());
        Ok(Flow::Continue)
    }
}
