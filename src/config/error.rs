//! Configuration errors that say what and where: file, line, column, and a hint
//! ("did you mean `steps`?") when the mistake looks like a typo.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::Location;

/// One problem in a route or connector file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem concerns the whole file.
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub hint: Option<String>,
}

impl ConfigError {
    pub fn new(file: &Path, line: u64, column: u64, message: impl Into<String>) -> Self {
        let message = message.into();
        let hint = typo_hint(&message);
        ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            message,
            hint,
        }
    }

    /// An error at a location recorded by the YAML parser.
    pub fn at(file: &Path, loc: &Location, message: impl Into<String>) -> Self {
        ConfigError::new(file, loc.line(), loc.column(), message)
    }

    /// An error about the file as a whole (unreadable, wrong name).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError::new(file, 0, 0, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Turn a serde-saphyr error into our form, keeping its location.
    pub fn from_yaml(file: &Path, err: &serde_saphyr::Error) -> Self {
        let text = err.without_snippet().to_string();
        // serde-saphyr appends " at line L, column C"; we print the location ourselves.
        let message = match text.rsplit_once(" at line ") {
            Some((msg, _)) => msg.to_string(),
            None => text,
        };
        let message = message.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
        match err.location() {
            Some(loc) => ConfigError::at(file, &loc, message),
            None => ConfigError::whole_file(file, message),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )?;
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// All the problems found while loading, in file order.
#[derive(Debug, Clone, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// For serde's "unknown field `x`, expected one of a, b" (and unknown variant)
/// messages, suggest the closest expected name.
fn typo_hint(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (given, rest) = rest.split_once('`')?;
    let expected = rest
        .split_once("expected one of ")
        .map(|(_, l)| l)
        .or_else(|| rest.split_once("expected ").map(|(_, l)| l))?;
    let candidates = expected.split(',').map(|c| {
        c.trim()
            .trim_matches('`')
            .trim_start_matches("or ")
            .trim_matches('`')
    });
    suggest(given, candidates).map(|best| format!("did you mean `{best}`?"))
}

/// The closest candidate to `given`, if it is close enough to be a typo.
pub fn suggest<'a>(given: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(given, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_gets_did_you_mean() {
        let e = ConfigError::new(
            Path::new("r.yaml"),
            3,
            1,
            "unknown field `stpes`, expected one of from, steps, to",
        );
        assert_eq!(e.hint.as_deref(), Some("did you mean `steps`?"));
        assert_eq!(
            e.to_string(),
            "r.yaml:3:1: unknown field `stpes`, expected one of from, steps, to (hint: did you mean `steps`?)"
        );
    }

    #[test]
    fn far_names_get_no_hint() {
        assert_eq!(suggest("banana", ["from", "steps"]), None);
        assert_eq!(
            suggest("xml_to_jsn", ["xml_to_json", "json_to_xml"]),
            Some("xml_to_json")
        );
    }
}
