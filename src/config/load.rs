//! Reading route and connector files from disk: listing, interpolation, strict
//! YAML parsing. Produces parsed files or errors with file:line:column; building
//! them into running parts is the engine's job.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::{Connectors, LoadedConnector, RouteFile};
use crate::connectors::ConnectorConfig;

/// A route file that parsed.
#[derive(Debug)]
pub struct ParsedRoute {
    pub id: String,
    pub file: PathBuf,
    /// The interpolated text (for placing errors inside scripts).
    pub text: String,
    pub config: RouteFile,
    /// Fingerprint of the interpolated text.
    pub hash: u64,
}

/// YAML files directly inside `dir`, sorted by name. Dotfiles, editor backups and
/// temp files are skipped, so a half-saved file never becomes a route. A missing
/// folder is an empty list.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ConfigError::whole_file(
                dir,
                format!("cannot read folder: {e}"),
            ));
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| is_config_file(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Whether `path` names a route or connector file (`*.yaml`/`*.yml`, not hidden).
pub fn is_config_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml")) && path.is_file()
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string()
}

fn read_interpolated(file: &Path) -> Result<String, Vec<ConfigError>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| vec![ConfigError::whole_file(file, format!("cannot read: {e}"))])?;
    super::env::interpolate(file, &text, |name| std::env::var(name).ok())
}

fn fingerprint(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// Parse one route file.
pub fn parse_route(file: &Path) -> Result<ParsedRoute, Vec<ConfigError>> {
    let text = read_interpolated(file)?;
    if text.trim().is_empty() {
        return Err(vec![ConfigError::whole_file(
            file,
            "route file is empty (a route needs at least `from:`)",
        )]);
    }
    let config: RouteFile =
        serde_saphyr::from_str(&text).map_err(|e| vec![ConfigError::from_yaml(file, &e)])?;
    let id = config.id.clone().unwrap_or_else(|| file_stem(file));
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(vec![ConfigError::whole_file(
            file,
            format!("route id `{id}` may only contain letters, digits, `-`, `_` and `.`"),
        )]);
    }
    Ok(ParsedRoute {
        id,
        file: file.to_path_buf(),
        hash: fingerprint(&text),
        text,
        config,
    })
}

/// Parse one connector file.
pub fn parse_connector(file: &Path) -> Result<LoadedConnector, Vec<ConfigError>> {
    let text = read_interpolated(file)?;
    let config: ConnectorConfig =
        serde_saphyr::from_str(&text).map_err(|e| vec![ConfigError::from_yaml(file, &e)])?;
    Ok(LoadedConnector {
        file: file.to_path_buf(),
        config,
        hash: fingerprint(&text),
    })
}

/// Every connector file in `dir`, by name; broken ones are reported and left out.
pub fn load_connectors(dir: &Path) -> (Connectors, Vec<ConfigError>) {
    let mut connectors = Connectors::default();
    let mut errors = Vec::new();
    let files = match yaml_files(dir) {
        Ok(f) => f,
        Err(e) => return (connectors, vec![e]),
    };
    for file in files {
        match parse_connector(&file) {
            Ok(c) => {
                connectors.by_name.insert(file_stem(&file), c);
            }
            Err(e) => errors.extend(e),
        }
    }
    (connectors, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_in_route_names_line_column_and_hint() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("orders.yaml");
        std::fs::write(
            &file,
            "from:\n  timer: { interval: 1s }\nstpes: []\nto:\n  - stdout: {}\n",
        )
        .unwrap();
        let errs = parse_route(&file).unwrap_err();
        let e = &errs[0];
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        assert!(e.message.contains("unknown field `stpes`"), "{e}");
        assert_eq!(e.hint.as_deref(), Some("did you mean `steps`?"));
    }

    #[test]
    fn duplicate_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.yaml");
        std::fs::write(
            &file,
            "from:\n  timer: { interval: 1s }\nfrom:\n  timer: { interval: 2s }\n",
        )
        .unwrap();
        let e = &parse_route(&file).unwrap_err()[0];
        assert_eq!((e.line, e.column), (3, 1));
        assert!(e.message.contains("duplicate mapping key"), "{e}");
    }

    #[test]
    fn hidden_and_temp_files_are_not_routes() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "a.yaml",
            ".a.yaml.swp",
            "b.yaml.tmp",
            "c.yml",
            ".hidden.yaml",
        ] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        let names: Vec<String> = yaml_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.yaml", "c.yml"]);
    }
}
