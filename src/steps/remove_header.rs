//! `remove_header`: remove headers by name (`remove_header: x-secret`), or every
//! header starting with a prefix (`remove_header: { prefix: "http." }`).

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Location;

use super::{Flow, FromShort, Step, StepError};
use crate::config::{BuildContext, ConfigError};
use crate::message::Message;

/// Options of `remove_header` (or just one name).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveHeaderConfig {
    /// Header names to remove.
    #[serde(default)]
    pub names: Vec<String>,
    /// Remove every header whose name starts with this.
    pub prefix: Option<String>,
}

impl FromShort for RemoveHeaderConfig {
    fn from_short(s: String) -> Result<Self, String> {
        Ok(RemoveHeaderConfig {
            names: vec![s],
            prefix: None,
        })
    }
}

impl RemoveHeaderConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<RemoveHeader, ConfigError> {
        if self.names.is_empty() && self.prefix.is_none() {
            return Err(ctx.error(loc, "remove_header needs a name, `names` or `prefix`"));
        }
        Ok(RemoveHeader {
            names: self.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
            prefix: self.prefix.as_ref().map(|p| p.to_ascii_lowercase()),
        })
    }
}

pub struct RemoveHeader {
    names: Vec<String>,
    prefix: Option<String>,
}

#[async_trait]
impl Step for RemoveHeader {
    async fn apply(&self, msg: &mut Message) -> Result<Flow, StepError> {
        for n in &self.names {
            msg.headers.remove(n);
        }
        if let Some(p) = &self.prefix {
            msg.headers.retain(|k, _| !k.starts_with(p.as_str()));
        }
        Ok(Flow::Continue)
    }
}
