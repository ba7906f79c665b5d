//! `file`: a drop-folder source and an atomic-write sink.
//!
//! **Source.** Watches a folder (notify, debounced) and also rescans it on a
//! timer, because file events can be lost (queue overflow, network mounts). A
//! file is taken only when it is complete: not hidden, not `*.tmp`/`*.part`/
//! `*~`, matching the glob, and not modified for `settle`. Each file is one
//! message. After the engine's answer it is moved to `.done/` (delivered,
//! dropped or dead-lettered) or to `.error/` with a `NAME.reason` file
//! (permanent failure); after a retryable failure it stays and is tried again
//! after `retry_interval`. A file being processed is claimed in the shared
//! [`FileClaims`], so a new version of the route (hot reload) never takes it a
//! second time.
//!
//! **Sink.** Writes each message to `path/NAME` through a hidden temp file and
//! a rename, so readers never see half a file; or appends it as one JSON line
//! (`append: true`). A delivery is confirmed only once its bytes are in the
//! kernel (with `fsync`, on disk): all file I/O is plain `std::fs` on the
//! blocking pool, awaited to the end, because `tokio::fs::File::write_all`
//! returns before its background write has run.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use globset::{Glob, GlobMatcher};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Location;
use tokio::sync::mpsc;

use super::{DeliveryError, Resources, Sink, Source, SourceContext, SourceError};
use crate::config::{BuildContext, ConfigError, HumanDuration};
use crate::message::{Body, FailureKind, Message, Outcome, outcome_of};
use crate::template::Template;

/// Files currently being processed, across all routes and route versions.
#[derive(Default)]
pub struct FileClaims {
    claimed: Arc<Mutex<HashSet<PathBuf>>>,
}

impl FileClaims {
    /// Claim a file; None if someone already has it.
    fn claim(&self, path: &Path) -> Option<Claim> {
        let fresh = self
            .claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_path_buf());
        fresh.then(|| Claim {
            set: self.claimed.clone(),
            path: path.to_path_buf(),
            keep: false,
        })
    }
}

/// One claimed file. The claim ends when this is dropped, on every path
/// (including a source task aborted at its drain timeout), so a file is never
/// stuck unprocessed until a restart; `keep` holds it for the rest of the run.
struct Claim {
    set: Arc<Mutex<HashSet<PathBuf>>>,
    path: PathBuf,
    keep: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.keep {
            self.set
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.path);
        }
    }
}

/// One lock per file that `append` sinks write to, shared by every route and
/// route version, so two sinks on one file never interleave and a new version
/// never looks at the file's end while an old one is writing it.
#[derive(Default, Clone)]
pub struct FileAppends {
    files: Arc<Mutex<HashMap<PathBuf, AppendLock>>>,
}

/// Held while appending; `true` once this run checked the file for a torn end.
type AppendLock = Arc<Mutex<bool>>;

impl FileAppends {
    fn lock_for(&self, path: &Path) -> AppendLock {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if files.len() > 64 {
            // Forget files no sink is writing (yesterday's `{date}` log).
            files.retain(|_, l| Arc::strong_count(l) > 1);
        }
        files.entry(path.to_path_buf()).or_default().clone()
    }
}

// ---------------------------------------------------------------- source

/// Options of a `file` source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Folder to watch (created if missing). Relative paths start at the working directory.
    pub path: PathBuf,
    /// Only files whose name matches this glob, e.g. `*.xml` (default `*`).
    #[serde(default = "default_glob")]
    pub glob: String,
    /// A file must be unchanged this long before it is read (default 500ms), so
    /// files still being written are left alone.
    pub settle: Option<HumanDuration>,
    /// Rescan the folder this often even without file events (default 2s).
    pub poll_interval: Option<HumanDuration>,
    /// Wait before trying a file again after a retryable failure (default 5s).
    pub retry_interval: Option<HumanDuration>,
}

fn default_glob() -> String {
    "*".into()
}

impl FileSourceConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<FileSource, ConfigError> {
        let glob = Glob::new(&self.glob)
            .map_err(|e| ctx.error(loc, format!("file.glob `{}`: {e}", self.glob)))?
            .compile_matcher();
        if self.path.as_os_str().is_empty() {
            return Err(ctx.error(loc, "file.path is empty"));
        }
        Ok(FileSource {
            dir: self.path.clone(),
            glob,
            settle: self
                .settle
                .map(|d| d.0)
                .unwrap_or(Duration::from_millis(500)),
            poll: self
                .poll_interval
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(2)),
            retry: self
                .retry_interval
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(5)),
        })
    }
}

pub struct FileSource {
    dir: PathBuf,
    glob: GlobMatcher,
    settle: Duration,
    poll: Duration,
    retry: Duration,
}

/// Names that are never input: hidden files, temp files, editor backups.
fn is_incomplete_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with(".tmp")
        || name.ends_with(".part")
        || name.ends_with('~')
        || name.ends_with(".swp")
}

/// What a file source does with a file after the engine's answer.
enum Disposition {
    Done,
    Error(String),
    Retry,
}

impl FileSource {
    /// Files ready to read now, and how long until the next unsettled one might be.
    fn scan(
        &self,
        backoff: &HashMap<PathBuf, tokio::time::Instant>,
    ) -> (Vec<PathBuf>, Option<Duration>) {
        let mut ready = Vec::new();
        let mut next: Option<Duration> = None;
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (ready, None);
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if is_incomplete_name(name) || !self.glob.is_match(name) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            if backoff
                .get(&path)
                .is_some_and(|t| *t > tokio::time::Instant::now())
            {
                continue;
            }
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if age >= self.settle {
                ready.push(path);
            } else {
                let wait = self.settle - age;
                next = Some(next.map_or(wait, |n| n.min(wait)));
            }
        }
        ready.sort();
        (ready, next)
    }
}

#[async_trait]
impl Source for FileSource {
    async fn run(&self, mut ctx: SourceContext) -> Result<(), SourceError> {
        for d in [
            self.dir.clone(),
            self.dir.join(".done"),
            self.dir.join(".error"),
        ] {
            tokio::fs::create_dir_all(&d)
                .await
                .map_err(|e| SourceError(format!("cannot create {}: {e}", d.display())))?;
        }
        let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
        let mut debouncer = notify_debouncer_full::new_debouncer(
            Duration::from_millis(100),
            None,
            move |_res: notify_debouncer_full::DebounceEventResult| {
                // A full channel already holds a wake-up: nothing is lost.
                let _ = wake_tx.try_send(());
            },
        )
        .map_err(|e| SourceError(format!("cannot watch {}: {e}", self.dir.display())))?;
        debouncer
            .watch(&self.dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| SourceError(format!("cannot watch {}: {e}", self.dir.display())))?;
        ctx.ready();

        let claims = &ctx.resources.files;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Claim, Disposition)>();
        let mut backoff: HashMap<PathBuf, tokio::time::Instant> = HashMap::new();
        let mut in_flight = 0usize;
        loop {
            let (ready, unsettled) = self.scan(&backoff);
            for path in ready {
                if ctx.shutdown.is_cancelled() {
                    break;
                }
                let Some(claim) = claims.claim(&path) else {
                    continue;
                };
                let msg = match read_message(&ctx, &path).await {
                    Ok(m) => m,
                    Err(e) => {
                        // Gone (another process took it) or unreadable: try later.
                        tracing::debug!(file = %path.display(), error = %e, "cannot read file");
                        continue;
                    }
                };
                let rx = tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    r = ctx.input.submit(msg) => match r {
                        Ok(rx) => rx,
                        Err(_) => break,
                    },
                };
                in_flight += 1;
                let done_tx = done_tx.clone();
                tokio::spawn(async move {
                    let d = match outcome_of(rx).await {
                        Outcome::Failed(f)
                            if matches!(f.kind, FailureKind::BadInput | FailureKind::Permanent) =>
                        {
                            Disposition::Error(f.to_string())
                        }
                        Outcome::Failed(_) => Disposition::Retry,
                        _ => Disposition::Done,
                    };
                    // If the source is gone, dropping the claim releases the file.
                    let _ = done_tx.send((claim, d));
                });
            }
            if ctx.shutdown.is_cancelled() {
                break;
            }
            let wait =
                unsettled.map_or(self.poll, |u| u.min(self.poll) + Duration::from_millis(20));
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = wake_rx.recv() => {}
                _ = tokio::time::sleep(wait) => {}
                Some((claim, d)) = done_rx.recv() => {
                    in_flight -= 1;
                    self.finish(&ctx, claim, d, &mut backoff).await;
                }
            }
        }
        // Stop watching, then settle every file already handed to the route.
        drop(debouncer);
        while in_flight > 0 {
            let Some((claim, d)) = done_rx.recv().await else {
                break;
            };
            in_flight -= 1;
            self.finish(&ctx, claim, d, &mut backoff).await;
        }
        Ok(())
    }

    fn claims(&self) -> Vec<String> {
        let dir = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        vec![format!("file {}", dir.display())]
    }

    fn describe(&self) -> String {
        format!("file {}", self.dir.display())
    }
}

impl FileSource {
    /// Move a file according to the engine's answer; its claim ends here.
    async fn finish(
        &self,
        ctx: &SourceContext,
        mut claim: Claim,
        d: Disposition,
        backoff: &mut HashMap<PathBuf, tokio::time::Instant>,
    ) {
        let path = claim.path.clone();
        let path = path.as_path();
        let name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let result = match &d {
            Disposition::Done => move_into(path, &self.dir.join(".done"), &name).await,
            Disposition::Error(reason) => {
                let r = move_to_error(path, &self.dir.join(".error"), &name, reason).await;
                if r.is_ok() {
                    tracing::warn!(route = %ctx.route_id, file = %path.display(), error = %reason, "file moved to .error");
                }
                r
            }
            Disposition::Retry => {
                backoff.insert(path.to_path_buf(), tokio::time::Instant::now() + self.retry);
                Ok(path.to_path_buf())
            }
        };
        if !matches!(d, Disposition::Retry) {
            backoff.remove(path);
        }
        if let Err(e) = result {
            // The message was handled but the file could not be moved: it would be
            // read again, so keep it claimed for this run rather than duplicate it.
            tracing::error!(file = %path.display(), error = %e, "cannot move processed file; leaving it claimed");
            claim.keep = true;
        }
    }
}

async fn read_message(ctx: &SourceContext, path: &Path) -> std::io::Result<Message> {
    let bytes = tokio::fs::read(path).await?;
    let meta = tokio::fs::metadata(path).await?;
    let mut msg = Message::new(
        ctx.route_id.clone(),
        format!("file {}", path.display()),
        Body::Bytes(Bytes::from(bytes)),
    );
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    msg.headers.insert("file.name".into(), name);
    msg.headers
        .insert("file.path".into(), path.display().to_string());
    msg.headers
        .insert("file.size".into(), meta.len().to_string());
    if let Ok(m) = meta.modified() {
        let dt: chrono::DateTime<chrono::Utc> = m.into();
        msg.headers.insert("file.modified".into(), dt.to_rfc3339());
    }
    Ok(msg)
}

/// Move `path` into `dir`, adding a timestamp suffix if the name is taken.
async fn move_into(path: &Path, dir: &Path, name: &std::ffi::OsStr) -> std::io::Result<PathBuf> {
    let (path, dir, name) = (path.to_path_buf(), dir.to_path_buf(), name.to_os_string());
    blocking(move || {
        let target = free_name(&dir, &name);
        std::fs::rename(&path, &target)?;
        Ok(target)
    })
    .await
}

/// Move a failed file into `.error/` with its `NAME.reason` beside it. The
/// reason is complete (written to a temp file, renamed) before the original
/// moves, so whoever sees the file in `.error/` can read why at once.
async fn move_to_error(
    path: &Path,
    dir: &Path,
    name: &std::ffi::OsStr,
    reason: &str,
) -> std::io::Result<PathBuf> {
    let (path, dir, name) = (path.to_path_buf(), dir.to_path_buf(), name.to_os_string());
    let text = format!("{reason}\n");
    blocking(move || {
        let target = free_name(&dir, &name);
        let mut reason_file = target.clone().into_os_string();
        reason_file.push(".reason");
        let reason_file = PathBuf::from(reason_file);
        let tmp = dir.join(format!(".{}.reason.tmp", uuid::Uuid::now_v7()));
        let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &reason_file));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            // The move matters more than its note: a file left in place would be read again.
            tracing::warn!(file = %path.display(), error = %e, "cannot write .reason file");
        }
        if let Err(e) = std::fs::rename(&path, &target) {
            let _ = std::fs::remove_file(&reason_file);
            return Err(e);
        }
        Ok(target)
    })
    .await
}

/// `dir/name`, or `dir/name.TIMESTAMP` if that is taken.
fn free_name(dir: &Path, name: &std::ffi::OsStr) -> PathBuf {
    let target = dir.join(name);
    if !target.exists() {
        return target;
    }
    let mut n = name.to_os_string();
    n.push(format!(
        ".{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.6f")
    ));
    dir.join(n)
}

// ---------------------------------------------------------------- sink

/// Options of a `file` sink.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Folder to write into (created if missing).
    pub path: PathBuf,
    /// File name template: `{id}`, `{route}`, `{header.NAME}`, `{meta.KEY}`,
    /// `{timestamp}`, `{date}`, `{time}`. Default: `{id}` plus an extension from
    /// the body (`.json`, `.xml`, `.txt` or `.bin`). `/` and `\` in rendered
    /// values become `_`, so a header can never write outside the folder.
    pub name: Option<String>,
    /// Append each message as one line (JSON bodies compact) to the file `name`
    /// instead of writing one file per message.
    #[serde(default)]
    pub append: bool,
    /// fsync each file (and its folder) before confirming (default false: a
    /// written file survives a Ferry crash, but not a power loss, without it).
    #[serde(default)]
    pub fsync: bool,
}

impl FileSinkConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<FileSink, ConfigError> {
        let name = match &self.name {
            Some(n) => {
                Some(Template::parse(n).map_err(|e| ctx.error(loc, format!("file.name: {e}")))?)
            }
            None if self.append => {
                return Err(ctx.error(loc, "file sink with `append: true` needs `name`"));
            }
            None => None,
        };
        Ok(FileSink {
            dir: self.path.clone(),
            name,
            append: self.append,
            fsync: self.fsync,
            appends: std::sync::OnceLock::new(),
            created: tokio::sync::OnceCell::new(),
        })
    }
}

pub struct FileSink {
    dir: PathBuf,
    name: Option<Template>,
    append: bool,
    fsync: bool,
    /// The shared per-file append locks, taken from the resources at start.
    appends: std::sync::OnceLock<FileAppends>,
    created: tokio::sync::OnceCell<()>,
}

fn default_extension(msg: &Message) -> &'static str {
    match &msg.body {
        Body::Json(_) => "json",
        Body::Bytes(_) => match msg.headers.get("content-type").map(String::as_str) {
            Some(ct) if ct.contains("json") => "json",
            Some(ct) if ct.contains("xml") => "xml",
            Some(ct) if ct.starts_with("text/") => "txt",
            _ => "bin",
        },
    }
}

impl FileSink {
    fn file_name(&self, msg: &Message) -> String {
        let raw = match &self.name {
            Some(t) => t.render(msg),
            None => format!("{}.{}", msg.id, default_extension(msg)),
        };
        let clean: String = raw
            .chars()
            .map(|c| {
                if c == '/' || c == '\\' || c == '\0' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        match clean.as_str() {
            "" | "." | ".." => format!("{}.{}", msg.id, default_extension(msg)),
            _ => clean,
        }
    }

    /// Write `data` to a hidden temp file, then rename it to `target`. Runs on
    /// the blocking pool with plain `std::fs`, so when this returns the bytes
    /// are in the kernel (and, with `fsync`, on disk) and the rename came
    /// strictly after them: a reader or a `kill -9` never finds half a file.
    async fn write_atomic(&self, target: PathBuf, data: Bytes) -> std::io::Result<()> {
        let dir = self.dir.clone();
        let fsync = self.fsync;
        blocking(move || {
            let tmp = dir.join(format!(
                ".{}.{}.tmp",
                uuid::Uuid::now_v7(),
                std::process::id()
            ));
            let result = (|| {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&data)?;
                if fsync {
                    f.sync_all()?;
                }
                drop(f);
                std::fs::rename(&tmp, &target)?;
                if fsync {
                    sync_dir(&dir)?;
                }
                Ok(())
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result
        })
        .await
    }

    /// Append `data` and a newline to `target` in one `write` on the blocking
    /// pool. The file's lock is taken inside the blocking task, so a caller
    /// that gives up (a sink timeout) cannot let the next append interleave
    /// with a write still running.
    async fn append_line(&self, target: PathBuf, data: Bytes) -> std::io::Result<()> {
        let lock = self
            .appends
            .get()
            .ok_or_else(|| std::io::Error::other("file sink used before its route started"))?
            .lock_for(&target);
        let fsync = self.fsync;
        blocking(move || {
            let mut checked = lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&target)?;
            let mut line = Vec::with_capacity(data.len() + 2);
            // A crash during an earlier run's write can leave a torn last line;
            // end it so this message starts a line of its own.
            if !*checked {
                if !ends_with_newline_or_empty(&f)? {
                    line.push(b'\n');
                }
                *checked = true;
            }
            line.extend_from_slice(&data);
            line.push(b'\n');
            let result = f.write_all(&line).and_then(|()| match fsync {
                true => f.sync_data(),
                false => Ok(()),
            });
            if result.is_err() {
                // A failed write may have left part of the line: check again next time.
                *checked = false;
            }
            result
        })
        .await
    }
}

/// Run blocking file I/O on tokio's blocking pool and wait for it to finish.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(format!("file writer task failed: {e}")))?
}

/// fsync a folder, so a rename or a new file in it survives a power loss.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn ends_with_newline_or_empty(f: &std::fs::File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    let mut last = [0u8; 1];
    f.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] == b'\n')
}

#[async_trait]
impl Sink for FileSink {
    async fn start(&self, resources: &Arc<Resources>) -> Result<(), String> {
        let _ = self.appends.set(resources.file_appends.clone());
        Ok(())
    }

    async fn deliver(&self, msg: &Message) -> Result<(), DeliveryError> {
        self.created
            .get_or_try_init(|| tokio::fs::create_dir_all(&self.dir))
            .await
            .map_err(|e| {
                DeliveryError::retryable(format!("cannot create {}: {e}", self.dir.display()))
            })?;
        let target = self.dir.join(self.file_name(msg));
        let result = if self.append {
            let mut data = msg.body.to_bytes();
            // One message per line: a raw body's own newlines would split it.
            if matches!(msg.body, Body::Bytes(_)) && data.iter().any(|b| matches!(b, b'\n' | b'\r'))
            {
                let mut v = data.to_vec();
                v.retain(|b| *b != b'\n' && *b != b'\r');
                data = Bytes::from(v);
            }
            self.append_line(target.clone(), data).await
        } else {
            self.write_atomic(target.clone(), msg.body.to_bytes()).await
        };
        result.map_err(|e| {
            let text = format!("cannot write {}: {e}", target.display());
            // A full disk or a permission problem may be fixed by an operator.
            DeliveryError::retryable(text)
        })
    }

    fn describe(&self) -> String {
        format!("file {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_and_hidden_files_are_not_input() {
        for n in [".x.xml", "a.xml.tmp", "a.part", "a.xml~", ".a.swp"] {
            assert!(is_incomplete_name(n), "{n}");
        }
        assert!(!is_incomplete_name("order-1.xml"));
    }
}
