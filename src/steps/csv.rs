//! `csv`: CSV ⇄ JSON. `direction: parse` (default) gives an array of objects
//! keyed by the header row (all values strings), or of arrays with
//! `header: false`; `direction: format` writes either shape back. A ragged
//! row or a non-UTF-8 field fails the message as bad input naming the line.

use async_trait::async_trait;
use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Location;

use super::fixed_width::Direction;
use super::{Flow, Step, StepError, convert, text_body};
use crate::codec::csv::{CsvOptions, format, parse};
use crate::config::{BuildContext, ConfigError};
use crate::message::{Body, Message};

/// Options of `csv`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CsvConfig {
    /// `parse` (CSV → JSON, default) or `format` (JSON → CSV).
    pub direction: Direction,
    /// Field separator, one character (default `,`; `\t` for tabs).
    pub delimiter: String,
    /// Quote character (default `"`).
    pub quote: String,
    /// The first row holds column names (default true). Without it rows are
    /// arrays, unless `columns` names them.
    pub header: bool,
    /// Column names, instead of (or replacing) the header row.
    pub columns: Option<Vec<String>>,
    /// Accept rows with more or fewer fields than the header.
    pub flexible: bool,
    /// `format`: end lines with CRLF (RFC 4180) instead of LF.
    pub crlf: bool,
}

impl Default for CsvConfig {
    fn default() -> Self {
        CsvConfig {
            direction: Direction::Parse,
            delimiter: ",".into(),
            quote: "\"".into(),
            header: true,
            columns: None,
            flexible: false,
            crlf: false,
        }
    }
}

fn one_byte(s: &str) -> Option<u8> {
    match s {
        "\\t" => Some(b'\t'),
        _ if s.len() == 1 && s.is_ascii() => s.bytes().next(),
        _ => None,
    }
}

impl CsvConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<CsvStep, ConfigError> {
        let byte = |s: &str, what: &str| {
            one_byte(s).ok_or_else(|| {
                ctx.error(
                    loc,
                    format!("csv.{what} must be one ASCII character, not `{s}`"),
                )
            })
        };
        Ok(CsvStep {
            direction: self.direction,
            options: std::sync::Arc::new(CsvOptions {
                delimiter: byte(&self.delimiter, "delimiter")?,
                quote: byte(&self.quote, "quote")?,
                header: self.header,
                columns: self.columns.clone(),
                flexible: self.flexible,
                crlf: self.crlf,
            }),
        })
    }
}

pub struct CsvStep {
    direction: Direction,
    options: std::sync::Arc<CsvOptions>,
}

#[async_trait]
impl Step for CsvStep {
    async fn apply(&self, msg: &mut Message) -> Result<Flow, StepError> {
        let o = self.options.clone();
        match self.direction {
            Direction::Parse => {
                let bytes = text_body(msg, "csv")?;
                let v = convert("csv", bytes.len(), move || parse(&bytes, &o))
                    .await?
                    .map_err(|e| StepError::bad_input(format!("csv: {e}")))?;
                msg.body = Body::Json(v);
                msg.headers
                    .insert("content-type".into(), "application/json".into());
            }
            Direction::Format => {
                let v = msg
                    .body
                    .json_mut()
                    .map_err(|e| StepError::bad_input(format!("csv: {e}")))?
                    .take();
                let text = convert("csv", 0, move || format(&v, &o))
                    .await?
                    .map_err(|e| StepError::bad_input(format!("csv: {e}")))?;
                msg.body = Body::Bytes(Bytes::from(text));
                msg.headers.insert("content-type".into(), "text/csv".into());
            }
        }
        Ok(Flow::Continue)
    }
}
