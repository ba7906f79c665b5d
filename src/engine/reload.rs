//! Reload: re-read the route and connector files and swap only what changed.
//!
//! Per route id: same version → untouched (not even paused); new version →
//! start it, then drain the old one in the background; new version invalid or
//! failing to start → keep the old one and record the error; file removed →
//! check again after a grace period (an editor's delete-then-create must not
//! stop the route), then drain and stop it.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::route::RunningRoute;
use super::{Engine, RouteSpec, load_preferring};

/// A removed route file is checked again after this long before its route
/// stops, so delete-then-create saves do not cause a gap.
const REMOVAL_GRACE: Duration = Duration::from_millis(300);

/// What a reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub at: DateTime<Utc>,
    pub duration_ms: f64,
    /// New routes started.
    pub started: Vec<String>,
    /// Routes whose new version replaced the old one.
    pub restarted: Vec<String>,
    /// Routes whose file was removed (drained, then stopped).
    pub stopped: Vec<String>,
    pub unchanged: Vec<String>,
    /// Routes that keep running their old version because the new one is
    /// invalid or failed to start.
    pub kept_old_version: Vec<String>,
    /// Routes whose (new) version could not start, and why.
    pub failed_to_start: Vec<StartFailure>,
    /// Every error, with file:line:column.
    pub errors: Vec<String>,
}

/// A route version that could not start.
#[derive(Debug, Clone, Serialize)]
pub struct StartFailure {
    pub route: String,
    pub error: String,
}

impl ReloadReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

impl Engine {
    /// Re-read the configuration folders and apply the difference.
    pub async fn reload(&self) -> ReloadReport {
        let started_at = Instant::now();
        let mut report = ReloadReport {
            at: Utc::now(),
            duration_ms: 0.0,
            started: vec![],
            restarted: vec![],
            stopped: vec![],
            unchanged: vec![],
            kept_old_version: vec![],
            failed_to_start: vec![],
            errors: vec![],
        };
        let Some(dirs) = self.dirs.clone() else {
            report
                .errors
                .push("this engine was not started from folders; nothing to reload".into());
            return report;
        };
        // One reload at a time: the state lock is held throughout.
        let mut state = self.state.lock().await;
        let running: HashSet<Arc<str>> = state.routes.keys().cloned().collect();
        let keep = running.clone();
        // Reading files and compiling scripts is blocking work.
        let loaded = tokio::task::spawn_blocking(move || {
            load_preferring(&[dirs.routes], &dirs.connectors, &dirs.defaults, &keep)
        })
        .await;
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => {
                report.errors.push(format!("loading failed: {e}"));
                return report;
            }
        };
        let mut file_errors: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        for e in &loaded.errors {
            file_errors
                .entry(e.file.clone())
                .or_default()
                .push(e.to_string());
            report.errors.push(e.to_string());
        }
        let mut desired: BTreeMap<Arc<str>, RouteSpec> = loaded
            .routes
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();

        // Running routes that the files no longer define.
        let mut removed = Vec::new();
        for id in running.iter().filter(|id| !desired.contains_key(*id)) {
            let file = state.routes[id].spec.file.clone();
            if file_errors.contains_key(&file) {
                report.kept_old_version.push(id.to_string());
            } else {
                removed.push((id.clone(), file));
            }
        }
        let missing: HashSet<PathBuf> = removed
            .iter()
            .filter(|(_, f)| !f.exists())
            .map(|(_, f)| f.clone())
            .collect();
        if !missing.is_empty() {
            tokio::time::sleep(REMOVAL_GRACE).await;
        }
        for (id, file) in removed {
            if missing.contains(&file) && file.exists() {
                // Deleted and written again (some editors save that way): the
                // next reload, triggered by the new file, decides.
                continue;
            }
            if let Some(old) = state.routes.remove(&id) {
                self.draining.spawn(old.stop());
                report.stopped.push(id.to_string());
            }
        }

        for (id, spec) in std::mem::take(&mut desired) {
            let same = state
                .routes
                .get(&id)
                .map(|r| r.spec.version == spec.version);
            match same {
                Some(true) => report.unchanged.push(id.to_string()),
                Some(false) | None => {
                    let file = spec.file.clone();
                    match RunningRoute::start(Arc::new(spec), self.resources.clone()).await {
                        Ok(new) => {
                            if let Some(old) = state.routes.insert(id.clone(), new) {
                                self.draining.spawn(old.stop());
                                report.restarted.push(id.to_string());
                            } else {
                                report.started.push(id.to_string());
                            }
                        }
                        Err(e) => {
                            let msg =
                                format!("{}: route `{id}` failed to start: {e}", file.display());
                            if same.is_some() {
                                report.kept_old_version.push(id.to_string());
                            }
                            file_errors.entry(file).or_default().push(msg.clone());
                            report.errors.push(msg);
                            report.failed_to_start.push(StartFailure {
                                route: id.to_string(),
                                error: e,
                            });
                        }
                    }
                }
            }
        }

        state.file_errors = file_errors;
        report.duration_ms = started_at.elapsed().as_secs_f64() * 1000.0;
        let result = if report.ok() { "ok" } else { "error" };
        metrics::counter!("ferry_reloads_total", "result" => result).increment(1);
        metrics::histogram!("ferry_reload_duration_seconds")
            .record(started_at.elapsed().as_secs_f64());
        metrics::gauge!("ferry_routes_running").set(state.routes.len() as f64);
        for e in &report.errors {
            tracing::error!("reload: {e}");
        }
        tracing::info!(
            started = report.started.len(),
            restarted = report.restarted.len(),
            stopped = report.stopped.len(),
            unchanged = report.unchanged.len(),
            kept_old_version = report.kept_old_version.len(),
            errors = report.errors.len(),
            duration_ms = report.duration_ms,
            "reload done"
        );
        state.last_reload = Some(report.clone());
        report
    }
}
