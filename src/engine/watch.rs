//! Watching `routes/` and `connectors/` for changes.
//!
//! Correctness comes from a fingerprint of the folders (the real folder each
//! path resolves to, and every config file's name and content), polled every
//! `poll`; notify events and manual triggers (SIGHUP, `POST /admin/reload`)
//! only make it look sooner. A change is applied once the fingerprint has been
//! stable for `debounce`, so a file written in several chunks is read when
//! complete, and a Kubernetes ConfigMap (a `..data` symlink swapped to a new
//! folder, or a folder path that is itself a symlink) is seen like any edit.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::config::load::yaml_files;

/// How the watcher paces itself.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// The folders must be unchanged this long before a reload (default 200ms).
    pub debounce: Duration,
    /// Fingerprint the folders this often even without events (default 1s).
    pub poll: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: Duration::from_millis(200),
            poll: Duration::from_secs(1),
        }
    }
}

/// Ask the watcher to reload now, whether or not files changed (SIGHUP).
#[derive(Clone, Default)]
pub struct ReloadTrigger(Arc<Notify>);

impl ReloadTrigger {
    pub fn reload_now(&self) {
        self.0.notify_one();
    }
}

/// A fingerprint of everything a reload reads.
fn fingerprint(dirs: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for dir in dirs {
        std::fs::canonicalize(dir).ok().hash(&mut h);
        for file in yaml_files(dir).unwrap_or_default() {
            file.hash(&mut h);
            std::fs::read(&file).ok().hash(&mut h);
        }
    }
    h.finish()
}

async fn fingerprint_async(dirs: &Arc<Vec<PathBuf>>) -> u64 {
    let dirs = dirs.clone();
    tokio::task::spawn_blocking(move || fingerprint(&dirs))
        .await
        .unwrap_or_default()
}

/// Watch the engine's folders and reload on change until `shutdown`.
pub fn spawn(
    engine: Arc<Engine>,
    options: WatchOptions,
    trigger: ReloadTrigger,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(cfg) = engine.dirs().cloned() else {
            return;
        };
        let dirs = Arc::new(vec![cfg.routes.clone(), cfg.connectors.clone()]);
        let (event_tx, mut events) = mpsc::channel::<()>(1);
        // Keep the debouncer alive for as long as we watch.
        let _watcher = watch_dirs(&dirs, event_tx);
        let mut last = fingerprint_async(&dirs).await;
        loop {
            let forced = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = trigger.0.notified() => true,
                _ = events.recv() => false,
                _ = tokio::time::sleep(options.poll) => false,
            };
            let mut current = fingerprint_async(&dirs).await;
            if current == last && !forced {
                continue;
            }
            // Wait for the files to settle (editors and ConfigMap updates write
            // in several steps).
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(options.debounce) => {}
                }
                let again = fingerprint_async(&dirs).await;
                if again == current {
                    break;
                }
                current = again;
            }
            last = current;
            engine.reload().await;
        }
    })
}

fn watch_dirs(
    dirs: &[PathBuf],
    tx: mpsc::Sender<()>,
) -> Option<
    notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
> {
    let mut debouncer = notify_debouncer_full::new_debouncer(
        Duration::from_millis(50),
        None,
        move |_r: notify_debouncer_full::DebounceEventResult| {
            let _ = tx.try_send(());
        },
    )
    .map_err(|e| tracing::warn!(error = %e, "file events unavailable; polling only"))
    .ok()?;
    for dir in dirs {
        if let Err(e) = debouncer.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::debug!(dir = %dir.display(), error = %e, "not watching folder (polling covers it)");
        }
    }
    Some(debouncer)
}
