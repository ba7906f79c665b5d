//! The engine: loads route files into [`RouteSpec`]s, runs them, swaps them on
//! reload, and stops them gracefully.
//!
//! The engine owns the wiring (channels, workers, acks, shutdown) and knows
//! nothing of connector details: sources and sinks are trait objects built by
//! their own modules, and the state they share (HTTP listeners, file claims)
//! lives in [`Resources`].
//!
//! Reload invariant: a reload touches only routes whose version (route text +
//! connector files it uses) changed. A changed route's new version starts
//! first and takes new input at once (HTTP registrations are replaced in one
//! atomic swap); the old version then stops taking input and drains in the
//! background. An invalid file or a new version that fails to start leaves the
//! running version in place, with the error kept for the admin API.

mod pipeline;
mod reload;
mod route;
pub mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use pipeline::{NamedSink, NamedStep, Pipeline};
pub use reload::{ReloadReport, StartFailure};
pub use route::{RouteSpec, RunningRoute};

use crate::config::load::{load_connectors, parse_route, yaml_files};
use crate::config::{ConfigError, Defaults};
use crate::connectors::{Resources, RouteInput};
use crate::queue_store::FsyncPolicy;

/// Everything found in the route and connector files.
pub struct Loaded {
    pub routes: Vec<RouteSpec>,
    pub errors: Vec<ConfigError>,
}

/// Load and build routes from `paths` (folders of route files, or single
/// files), resolving connectors from `connectors_dir`. Every error in every
/// file is reported; routes with errors are left out.
pub fn load(paths: &[PathBuf], connectors_dir: &Path, defaults: &Defaults) -> Loaded {
    load_preferring(paths, connectors_dir, defaults, &HashSet::new())
}

/// Like [`load`]; when two routes clash, one in `keep` (already running) wins.
fn load_preferring(
    paths: &[PathBuf],
    connectors_dir: &Path,
    defaults: &Defaults,
    keep: &HashSet<Arc<str>>,
) -> Loaded {
    let (connectors, mut errors) = load_connectors(connectors_dir);
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            match yaml_files(p) {
                Ok(f) => files.extend(f),
                Err(e) => errors.push(e),
            }
        } else if p.exists() {
            files.push(p.clone());
        } else {
            errors.push(ConfigError::whole_file(p, "no such file or folder"));
        }
    }
    let mut routes: Vec<RouteSpec> = Vec::new();
    for file in &files {
        let parsed = match parse_route(file) {
            Ok(p) => p,
            Err(e) => {
                errors.extend(e);
                continue;
            }
        };
        match RouteSpec::build(&parsed, &connectors, defaults) {
            Ok(spec) => routes.push(spec),
            Err(e) => errors.extend(e),
        }
    }
    // Routes already running claim first, so a new file cannot take over
    // their path or folder.
    routes.sort_by_key(|r| !keep.contains(&r.id));
    errors.extend(cross_route_errors(&mut routes));
    Loaded { routes, errors }
}

/// Errors between routes: two routes with one id, or two sources claiming the
/// same resource (HTTP method + path on one listener, one folder). The later
/// one is reported and left out, so the earlier one still runs.
fn cross_route_errors(routes: &mut Vec<RouteSpec>) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut ids: HashMap<Arc<str>, PathBuf> = HashMap::new();
    let mut claims: HashMap<String, (Arc<str>, PathBuf)> = HashMap::new();
    routes.retain(|r| {
        let at = |msg: String| ConfigError::new(&r.file, r.from_at.0, r.from_at.1, msg);
        if let Some(other) = ids.get(&r.id) {
            errors.push(at(format!(
                "route id `{}` is already used by {}",
                r.id,
                other.display()
            )));
            return false;
        }
        let mine = r.source.claims();
        for c in &mine {
            if let Some((other_id, other_file)) = claims.get(c) {
                errors.push(at(format!(
                    "`{c}` is already taken by route `{other_id}` ({})",
                    other_file.display()
                )));
                return false;
            }
        }
        ids.insert(r.id.clone(), r.file.clone());
        for c in mine {
            claims.insert(c, (r.id.clone(), r.file.clone()));
        }
        true
    });
    errors
}

/// Where the engine reads its configuration from (for reloads).
#[derive(Debug, Clone)]
pub struct ConfigDirs {
    pub routes: PathBuf,
    pub connectors: PathBuf,
    pub defaults: Defaults,
}

/// A route as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    pub id: String,
    pub file: String,
    pub description: Option<String>,
    pub source: String,
    pub version: String,
    pub state: &'static str,
    pub started_at: Option<DateTime<Utc>>,
    /// The last reload error that concerns this route's file (the running
    /// version stayed in place), if the file is still invalid.
    pub last_reload_error: Option<String>,
}

#[derive(Default)]
struct State {
    routes: BTreeMap<Arc<str>, RunningRoute>,
    /// Current errors per file, from the last load (kept for the admin API).
    file_errors: BTreeMap<PathBuf, Vec<String>>,
    last_reload: Option<ReloadReport>,
}

/// The running routes and the resources they share.
pub struct Engine {
    pub resources: Arc<Resources>,
    dirs: Option<ConfigDirs>,
    state: tokio::sync::Mutex<State>,
    /// Old route versions still draining after a swap or removal.
    draining: tokio_util::task::TaskTracker,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    /// An engine for routes given directly with [`Engine::start`].
    pub fn new() -> Self {
        Self::with_resources(
            Resources::new(PathBuf::from("data"), FsyncPolicy::Always),
            None,
        )
    }

    fn with_resources(resources: Resources, dirs: Option<ConfigDirs>) -> Self {
        crate::install_crypto_provider();
        Engine {
            resources: Arc::new(resources),
            dirs,
            state: Default::default(),
            draining: Default::default(),
        }
    }

    /// An engine that reads (and re-reads on [`Engine::reload`]) `dirs`.
    pub fn with_dirs(dirs: ConfigDirs) -> Self {
        let resources = Resources::new(dirs.defaults.data_dir.clone(), dirs.defaults.queue_fsync);
        Self::with_resources(resources, Some(dirs))
    }

    /// A door into a running route (for dead-letter replay).
    pub async fn route_input(&self, id: &str) -> Option<RouteInput> {
        self.state
            .lock()
            .await
            .routes
            .get(id)
            .and_then(|r| r.input())
    }

    pub fn dirs(&self) -> Option<&ConfigDirs> {
        self.dirs.as_ref()
    }

    /// Start routes; returns the ids and reasons of those that could not start.
    pub async fn start(&self, specs: Vec<RouteSpec>) -> Vec<(Arc<str>, String)> {
        let mut failed = Vec::new();
        let mut state = self.state.lock().await;
        for spec in specs {
            let id = spec.id.clone();
            match RunningRoute::start(Arc::new(spec), self.resources.clone()).await {
                Ok(r) => {
                    state.routes.insert(id, r);
                }
                Err(e) => {
                    tracing::error!(route = %id, error = %e, "route failed to start");
                    failed.push((id, e));
                }
            }
        }
        failed
    }

    /// Ids of the running routes.
    pub async fn route_ids(&self) -> Vec<Arc<str>> {
        self.state.lock().await.routes.keys().cloned().collect()
    }

    /// Every running route, plus files whose errors keep them from running.
    pub async fn status(&self) -> (Vec<RouteStatus>, BTreeMap<String, Vec<String>>) {
        let state = self.state.lock().await;
        let mut running_files = HashSet::new();
        let routes = state
            .routes
            .values()
            .map(|r| {
                running_files.insert(r.spec.file.clone());
                RouteStatus {
                    id: r.spec.id.to_string(),
                    file: r.spec.file.display().to_string(),
                    description: r.spec.description.clone(),
                    source: r.spec.source.describe(),
                    version: r.spec.version.clone(),
                    state: "running",
                    started_at: Some(r.started_at),
                    last_reload_error: state.file_errors.get(&r.spec.file).map(|e| e.join("; ")),
                }
            })
            .collect();
        let other = state
            .file_errors
            .iter()
            .filter(|(f, _)| !running_files.contains(*f))
            .map(|(f, e)| (f.display().to_string(), e.clone()))
            .collect();
        (routes, other)
    }

    /// The report of the last reload, if any.
    pub async fn last_reload(&self) -> Option<ReloadReport> {
        self.state.lock().await.last_reload.clone()
    }

    /// Stop every route: HTTP listeners answer 503 to new requests, sources stop
    /// taking input, in-flight messages finish (each route bounded by its drain
    /// timeout), then the listeners close.
    pub async fn shutdown(&self) {
        self.resources.http.start_closing().await;
        let routes = std::mem::take(&mut self.state.lock().await.routes);
        futures_util::future::join_all(routes.into_values().map(RunningRoute::stop)).await;
        self.draining.close();
        self.draining.wait().await;
        self.resources.http.stop(Duration::from_secs(5)).await;
    }
}
