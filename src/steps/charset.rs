//! `charset`: convert the body between character sets: `from: cp037` decodes
//! EBCDIC into UTF-8, `to: latin1` encodes UTF-8 text into Latin-1, both
//! together transcode. Unmappable bytes or characters fail the message as
//! bad input naming the offset, or are replaced (`on_error: replace`).

use async_trait::async_trait;
use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Location;

use super::{Flow, Step, StepError, convert};
use crate::codec::charset::{Charset, OnError};
use crate::config::{BuildContext, ConfigError};
use crate::message::{Body, Message};

/// Options of `charset`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CharsetConfig {
    /// Charset of the incoming body (default UTF-8), e.g. `cp037`, `cp500`,
    /// `cp1140`, `latin1`, `windows-1252`, `shift_jis`, `utf-16le`.
    pub from: Option<String>,
    /// Charset to write (default UTF-8).
    pub to: Option<String>,
    /// `fail` (default: the message fails as bad input) or `replace`
    /// (U+FFFD when decoding, `?` when encoding).
    #[serde(default)]
    pub on_error: OnError,
}

impl CharsetConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<CharsetStep, ConfigError> {
        if self.from.is_none() && self.to.is_none() {
            return Err(ctx.error(loc, "charset needs `from`, `to` or both"));
        }
        let get = |name: &Option<String>| -> Result<Charset, ConfigError> {
            match name {
                Some(n) => {
                    Charset::from_name(n).map_err(|e| ctx.error(loc, format!("charset: {e}")))
                }
                None => Ok(Charset::Utf8),
            }
        };
        let from = get(&self.from)?;
        let to = get(&self.to)?;
        to.can_encode()
            .map_err(|e| ctx.error(loc, format!("charset.to: {e}")))?;
        Ok(CharsetStep {
            from,
            to,
            on_error: self.on_error,
        })
    }
}

pub struct CharsetStep {
    from: Charset,
    to: Charset,
    on_error: OnError,
}

#[async_trait]
impl Step for CharsetStep {
    async fn apply(&self, msg: &mut Message) -> Result<Flow, StepError> {
        let input = match &msg.body {
            Body::Bytes(b) => b.clone(),
            // A JSON body is text already: encode its serialized form.
            Body::Json(serde_json::Value::String(s)) => Bytes::from(s.clone()),
            Body::Json(_) => msg.body.to_bytes(),
        };
        let (from, to, on_error) = (self.from, self.to, self.on_error);
        let out = convert("charset", input.len(), move || {
            let text = from.decode(&input, on_error)?;
            to.encode(&text, on_error)
        })
        .await?
        .map_err(|e| StepError::bad_input(format!("charset: {e}")))?;
        msg.body = Body::Bytes(Bytes::from(out));
        Ok(Flow::Continue)
    }
}
