//! `json_to_hl7`: write the JSON form made by `hl7_to_json` (or built by a
//! script) back as an HL7 v2 message. The delimiters come from MSH-1 and
//! MSH-2 of the JSON (default `|^~\&`); values are escaped.

use async_trait::async_trait;
use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Location;

use super::{Flow, Step, StepError};
use crate::codec::hl7;
use crate::config::{BuildContext, ConfigError};
use crate::message::{Body, Message};

/// Segment terminator written after each segment.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SegmentEnd {
    /// CR, as on the wire (default).
    #[default]
    Cr,
    Lf,
    Crlf,
}

/// Options of `json_to_hl7`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonToHl7Config {
    /// What ends each segment: `cr` (default), `lf` or `crlf`.
    #[serde(default)]
    pub segment_end: SegmentEnd,
}

impl JsonToHl7Config {
    pub fn build(&self, _loc: &Location, _ctx: &BuildContext) -> Result<JsonToHl7, ConfigError> {
        Ok(JsonToHl7 {
            end: match self.segment_end {
                SegmentEnd::Cr => "\r",
                SegmentEnd::Lf => "\n",
                SegmentEnd::Crlf => "\r\n",
            },
        })
    }
}

pub struct JsonToHl7 {
    end: &'static str,
}

#[async_trait]
impl Step for JsonToHl7 {
    async fn apply(&self, msg: &mut Message) -> Result<Flow, StepError> {
        let v = msg
            .body
            .json_mut()
            .map_err(|e| StepError::bad_input(format!("json_to_hl7: {e}")))?;
        let text = hl7::from_json(v, self.end)
            .map_err(|e| StepError::bad_input(format!("json_to_hl7: {e}")))?;
        msg.body = Body::Bytes(Bytes::from(text));
        msg.headers
            .insert("content-type".into(), "x-application/hl7-v2+er7".into());
        Ok(Flow::Continue)
    }
}
