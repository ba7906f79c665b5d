//! The engine: loads route files into [`RouteSpec`]s, runs them, and stops them
//! gracefully.
//!
//! The engine owns the wiring (channels, workers, acks, shutdown) and knows
//! nothing of connector details: sources and sinks are trait objects built by
//! their own modules, and the state they share (HTTP listeners, file claims)
//! lives in [`Resources`].

mod pipeline;
mod route;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use pipeline::{NamedSink, NamedStep, Pipeline};
pub use route::{RouteSpec, RunningRoute};

use crate::config::load::{load_connectors, parse_route, yaml_files};
use crate::config::{ConfigError, Defaults};
use crate::connectors::Resources;

/// Everything found in the route and connector files.
pub struct Loaded {
    pub routes: Vec<RouteSpec>,
    pub errors: Vec<ConfigError>,
}

/// Load and build routes from `paths` (folders of route files, or single
/// files), resolving connectors from `connectors_dir`. Every error in every
/// file is reported; routes with errors are left out.
pub fn load(paths: &[PathBuf], connectors_dir: &Path, defaults: &Defaults) -> Loaded {
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
    errors.extend(cross_route_errors(&mut routes));
    Loaded { routes, errors }
}

/// Errors between routes: two routes with one id, or two sources claiming the
/// same resource (HTTP method + path on one listener, one folder). The later
/// file (by name) is reported and left out, so the earlier one still runs.
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

/// The running routes and the resources they share.
pub struct Engine {
    pub resources: Arc<Resources>,
    routes: tokio::sync::Mutex<BTreeMap<Arc<str>, RunningRoute>>,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    pub fn new() -> Self {
        crate::install_crypto_provider();
        Engine {
            resources: Arc::new(Resources::default()),
            routes: Default::default(),
        }
    }

    /// Start routes; returns the ids and reasons of those that could not start.
    pub async fn start(&self, specs: Vec<RouteSpec>) -> Vec<(Arc<str>, String)> {
        let mut failed = Vec::new();
        let mut routes = self.routes.lock().await;
        for spec in specs {
            let id = spec.id.clone();
            match RunningRoute::start(Arc::new(spec), self.resources.clone()).await {
                Ok(r) => {
                    routes.insert(id, r);
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
        self.routes.lock().await.keys().cloned().collect()
    }

    /// Stop every route: HTTP listeners answer 503 to new requests, sources stop
    /// taking input, in-flight messages finish (each route bounded by its drain
    /// timeout), then the listeners close.
    pub async fn shutdown(&self) {
        self.resources.http.start_closing().await;
        let routes = std::mem::take(&mut *self.routes.lock().await);
        futures_util::future::join_all(routes.into_values().map(RunningRoute::stop)).await;
        self.resources.http.stop(Duration::from_secs(5)).await;
    }
}
