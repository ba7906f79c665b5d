//! `fixed_width`: fixed-width records ⇄ JSON with a layout declared in the
//! route (`fields` for one record type, `records` for several chosen by a
//! discriminator). `direction: parse` (default) turns text into an array of
//! objects; `direction: format` turns that array back into text.
//!
//! The layout is checked when the route loads; a line of the wrong length, a
//! line no record type matches or a value that does not fit its field fails
//! the message as bad input, naming the line (or record) and field.

use async_trait::async_trait;
use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Location;

use super::{Flow, Step, StepError, convert, text_body};
use crate::codec::fixed_width::{FieldSpec, Layout, RecordSpec};
use crate::config::{BuildContext, ConfigError};
use crate::message::{Body, Message};

/// Which way a conversion step works.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Text → JSON (default).
    #[default]
    Parse,
    /// JSON → text.
    Format,
}

/// What separates records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordEnd {
    /// LF (default; CRLF is accepted when parsing).
    #[default]
    Lf,
    Crlf,
    /// Nothing: records follow each other, `record_length` characters each
    /// (mainframe style).
    None,
}

/// Options of `fixed_width`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FixedWidthConfig {
    /// `parse` (text → JSON, default) or `format` (JSON → text).
    #[serde(default)]
    pub direction: Direction,
    /// Every record has exactly this many characters; other lengths are errors
    /// naming the line. Formatting pads records to it.
    pub record_length: Option<usize>,
    /// Accept lines shorter than `record_length` (missing columns read as blank).
    #[serde(default)]
    pub allow_short_lines: bool,
    /// What separates records: `lf` (default), `crlf` or `none`.
    #[serde(default)]
    pub record_end: RecordEnd,
    /// The body is exactly one record (e.g. one TCP frame): parsing gives an
    /// object instead of an array, and any other count is an error.
    #[serde(default)]
    pub single: bool,
    /// Trim string fields when parsing (default true; a field's own `trim`
    /// wins). Set false for byte-exact parse → format round trips.
    #[serde(default = "yes")]
    pub trim: bool,
    /// The fields of a single record type.
    #[serde(default)]
    pub fields: Vec<FieldSpec>,
    /// Several record types, each chosen by `when` (first match wins).
    #[serde(default)]
    pub records: Vec<RecordSpec>,
}

fn yes() -> bool {
    true
}

impl FixedWidthConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<FixedWidth, ConfigError> {
        if self.record_end == RecordEnd::None && self.record_length.is_none() {
            return Err(ctx.error(loc, "fixed_width: `record_end: none` needs `record_length`"));
        }
        let layout = Layout::new(
            &self.fields,
            &self.records,
            self.record_length,
            self.allow_short_lines,
            self.trim,
        )
        .map_err(|e| ctx.error(loc, format!("fixed_width: {e}")))?;
        Ok(FixedWidth {
            layout: std::sync::Arc::new(layout),
            direction: self.direction,
            end: self.record_end,
            single: self.single,
        })
    }
}

pub struct FixedWidth {
    layout: std::sync::Arc<Layout>,
    direction: Direction,
    end: RecordEnd,
    single: bool,
}

#[async_trait]
impl Step for FixedWidth {
    async fn apply(&self, msg: &mut Message) -> Result<Flow, StepError> {
        let layout = self.layout.clone();
        let end = self.end;
        match self.direction {
            Direction::Parse => {
                let bytes = text_body(msg, "fixed_width")?;
                let v = convert("fixed_width", bytes.len(), move || {
                    let text = std::str::from_utf8(&bytes).map_err(|e| {
                        format!(
                            "body is not UTF-8 (byte {}); decode it with a `charset` step first",
                            e.valid_up_to()
                        )
                    })?;
                    layout
                        .parse(text, end == RecordEnd::None)
                        .map_err(|e| e.to_string())
                })
                .await?
                .map_err(|e| StepError::bad_input(format!("fixed_width: {e}")))?;
                let v = match v {
                    serde_json::Value::Array(mut records) if self.single => {
                        if records.len() != 1 {
                            return Err(StepError::bad_input(format!(
                                "fixed_width: expected one record (single: true), found {}",
                                records.len()
                            )));
                        }
                        records.remove(0)
                    }
                    other => other,
                };
                msg.body = Body::Json(v);
                msg.headers
                    .insert("content-type".into(), "application/json".into());
            }
            Direction::Format => {
                let v = msg
                    .body
                    .json_mut()
                    .map_err(|e| StepError::bad_input(format!("fixed_width: {e}")))?
                    .take();
                let sep = match end {
                    RecordEnd::Lf => "\n",
                    RecordEnd::Crlf => "\r\n",
                    RecordEnd::None => "",
                };
                let text = convert("fixed_width", 0, move || layout.format(&v, sep))
                    .await?
                    .map_err(|e| StepError::bad_input(format!("fixed_width: {e}")))?;
                msg.body = Body::Bytes(Bytes::from(text));
                msg.headers
                    .insert("content-type".into(), "text/plain".into());
            }
        }
        Ok(Flow::Continue)
    }
}
