//! Plumbing shared by the broker connectors (`amqp`, `nats`, `redis`,
//! `postgres`, `mqtt`): TLS options, reconnect backoff, the pool that lets
//! routes share one connection per connector, and the bookkeeping a source
//! needs to settle broker messages by their outcome.
//!
//! The invariant every broker source keeps with [`InFlight`]: a broker message
//! is acknowledged on the broker only after the route's outcome says handled
//! (`Outcome::is_handled`); otherwise it is negatively acknowledged or left
//! unacknowledged so the broker redelivers it. When a source stops, it waits
//! for the outcomes of everything it handed to the route before it returns, so
//! a reload or shutdown never leaves a message acked without delivery or
//! delivered without an ack attempt.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use serde_saphyr::{Location, Spanned};

use super::ConnectorConfig;
use crate::config::{BuildContext, ConfigError, HumanDuration};
use crate::message::{AckReceiver, Outcome, outcome_of};

/// A broker's connector-file settings, as endpoints resolve them.
pub trait BrokerConnector: Sized + 'static {
    /// The `kind:` of the connector file.
    const KIND: &'static str;
    /// This kind's settings, if `c` is of this kind.
    fn from_config(c: &ConnectorConfig) -> Option<&Self>;
    /// The connector's broker URL.
    fn url(&self) -> &str;
}

/// Resolve an endpoint's connection: the connector file it names (of the
/// broker's kind, if any) and its URL, where the endpoint's own `url` wins.
pub fn resolve_endpoint<'a, C: BrokerConnector>(
    url: &Option<String>,
    connector: &Option<Spanned<String>>,
    loc: &Location,
    ctx: &'a BuildContext,
) -> Result<(Option<&'a C>, String), ConfigError> {
    let conn = match connector {
        None => None,
        Some(n) => C::from_config(ctx.connector(n, C::KIND)?),
    };
    let url = match (url, conn) {
        (Some(u), _) => u.clone(),
        (None, Some(c)) => c.url().to_string(),
        (None, None) => {
            return Err(ctx.error(loc, format!("{} needs `url` or `connector`", C::KIND)));
        }
    };
    Ok((conn, url))
}

/// TLS settings of a broker connection (rustls with the ring provider).
#[derive(Debug, Default, Clone, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// Use TLS even when the URL scheme does not say so (default false; `amqps://`,
    /// `rediss://`, `mqtts://`, `tls://` and `sslmode=require` turn it on).
    #[serde(default)]
    pub enabled: bool,
    /// PEM file with the certificate authorities to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// TLS settings could not be turned into a client configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: String, message: String },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls: `cert_file` and `key_file` go together")]
    HalfIdentity,
}

impl TlsOptions {
    /// Whether the options ask for anything beyond the URL's own choice.
    pub fn is_set(&self) -> bool {
        self.enabled || self.ca_file.is_some() || self.cert_file.is_some()
    }

    pub fn read(path: &PathBuf) -> Result<Vec<u8>, TlsError> {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })
    }

    /// A rustls client configuration: the CA file's roots, or the platform's
    /// verifier; plus the client identity when given.
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        crate::install_crypto_provider();
        let pem_err = |p: &PathBuf, e: rustls_pki_types::pem::Error| TlsError::Pem {
            path: p.display().to_string(),
            message: e.to_string(),
        };
        let builder = match &self.ca_file {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                let data = Self::read(ca)?;
                for cert in CertificateDer::pem_slice_iter(&data) {
                    roots.add(cert.map_err(|e| pem_err(ca, e))?)?;
                }
                rustls::ClientConfig::builder().with_root_certificates(roots)
            }
            None => {
                use rustls_platform_verifier::BuilderVerifierExt;
                rustls::ClientConfig::builder().with_platform_verifier()?
            }
        };
        match (&self.cert_file, &self.key_file) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(c), Some(k)) => {
                let certs = CertificateDer::pem_slice_iter(&Self::read(c)?)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| pem_err(c, e))?;
                let key =
                    PrivateKeyDer::from_pem_slice(&Self::read(k)?).map_err(|e| pem_err(k, e))?;
                Ok(builder.with_client_auth_cert(certs, key)?)
            }
            _ => Err(TlsError::HalfIdentity),
        }
    }
}

/// Add what to fix to a connection error caused by the server's certificate
/// (rustls says `invalid peer certificate: …`); other errors pass unchanged.
pub fn explain_certificate(e: String) -> String {
    if e.contains("UnknownIssuer") {
        format!(
            "{e} (the server's certificate is not signed by a CA Ferry trusts: set `tls.ca_file` to the PEM of the CA that signed it)"
        )
    } else if e.contains("invalid peer certificate") {
        format!("{e} (check the server's certificate and the connector's `tls` options)")
    } else {
        e
    }
}

/// Exponential backoff for reconnecting: 100ms doubling up to `max`, each wait
/// randomised between 50% and 100% so many routes do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Backoff {
            next: Duration::from_millis(100),
            max,
        }
    }

    /// The next wait (and double the one after).
    pub fn next_wait(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        base.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
    }

    pub fn reset(&mut self) {
        self.next = Duration::from_millis(100);
    }
}

/// The reconnect ceiling used when a connector does not set one.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long connecting may take before it counts as failed.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `Some(d)` → d, else the default.
pub fn or_default(d: Option<HumanDuration>, default: Duration) -> Duration {
    d.map(|d| d.0).unwrap_or(default)
}

/// Sleep for `d` unless `shutdown` fires first; false when it fired.
pub async fn sleep_or_stop(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Run `fut` with a deadline, turning a timeout into `what` timed out.
pub async fn with_timeout<T, E: std::fmt::Display>(
    d: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(d, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {d:?}")),
    }
}

/// Connections shared by every endpoint with the same settings (the key).
/// Entries are weak: a connection closes once the last route using it stops.
pub struct Pool<T> {
    entries: Mutex<HashMap<String, Weak<T>>>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Pool<T> {
    /// The live entry for `key`, or a new one made by `make`.
    pub fn get_or_insert(&self, key: &str, make: impl FnOnce() -> T) -> Arc<T> {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = map.get(key).and_then(Weak::upgrade) {
            return existing;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let fresh = Arc::new(make());
        map.insert(key.to_string(), Arc::downgrade(&fresh));
        fresh
    }
}

/// The messages a broker source handed to its route and not yet settled on the
/// broker. Each one gets a task that waits for its outcome and then runs the
/// source's settle action (ack or nack); [`InFlight::wait`] waits for them all.
#[derive(Default, Clone)]
pub struct InFlight {
    tasks: TaskTracker,
}

impl InFlight {
    /// Wait for `rx`'s outcome in the background, then call `settle` with it.
    pub fn settle<F, Fut>(&self, rx: AckReceiver, settle: F)
    where
        F: FnOnce(Outcome) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(async move {
            let outcome = outcome_of(rx).await;
            settle(outcome).await;
        });
    }

    /// Track a settle task the source drives itself (e.g. one that also sends
    /// "still working" signals to the broker while it waits).
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Wait until every message handed out so far is settled.
    pub async fn wait(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }
}

/// Why an outcome was not handled, for logs.
pub fn failure_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Failed(f) => f.to_string(),
        _ => String::new(),
    }
}

/// This machine's host name (stable across restarts), for consumer names.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "ferry".into())
}

/// Hide the password of a URL (or of a PostgreSQL `key=value` string) for
/// logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return redact_password_keyword(url);
    };
    // A password typed unencoded may hold `@`, `/` or `%`: the user info ends
    // at the last `@` before the query. This can hide a host whose path holds
    // an `@`, which is the safe way to be wrong.
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return url.to_string();
    };
    let (auth, host) = (&rest[..at], &rest[at + 1..]);
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://{auth}@{host}"),
    }
}

/// `host=h password=secret user=u` → `host=h password=*** user=u`; a quoted
/// value (`password='a b'`, with `\'` escapes) is hidden whole.
fn redact_password_keyword(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find("password") {
        let after = &rest[pos + "password".len()..];
        let value = after.trim_start();
        let Some(value) = value.strip_prefix('=') else {
            out.push_str(&rest[..pos + "password".len()]);
            rest = after;
            continue;
        };
        out.push_str(&rest[..pos]);
        out.push_str("password=***");
        let value = value.trim_start();
        let len = if let Some(quoted) = value.strip_prefix('\'') {
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '\'' => {
                        end = i + 1;
                        break;
                    }
                    _ => {}
                }
            }
            1 + end
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        rest = &value[len.min(value.len())..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("redis://127.0.0.1/0"), "redis://127.0.0.1/0");
        // Unencoded `@`, `/` and `%` in the password.
        assert_eq!(
            redact_url("amqp://u:p@1/x%y@127.0.0.1:5672/%2f"),
            "amqp://u:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("redis://u:p%40s@h:6379/0?x=a@b"),
            "redis://u:***@h:6379/0?x=a@b"
        );
        assert_eq!(
            redact_url("host=h password='p@ss \\' w' user=u password=x"),
            "host=h password=*** user=u password=***"
        );
        assert_eq!(
            redact_url("host=h password = s3cret dbname=d"),
            "host=h password=*** dbname=d"
        );
        assert_eq!(redact_url("host=h user=u"), "host=h user=u");
    }

    #[test]
    fn certificate_errors_say_what_to_fix() {
        let e = explain_certificate("invalid peer certificate: UnknownIssuer".into());
        assert!(e.contains("set `tls.ca_file`"), "{e}");
        assert_eq!(explain_certificate("refused".into()), "refused");
    }

    #[test]
    fn backoff_grows_to_its_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(400));
        let waits: Vec<Duration> = (0..5).map(|_| b.next_wait()).collect();
        assert!(waits[0] <= Duration::from_millis(100));
        assert!(waits[4] <= Duration::from_millis(400));
        assert!(waits[4] >= Duration::from_millis(200));
    }

    #[test]
    fn pool_shares_while_someone_holds_the_entry() {
        let pool: Pool<u32> = Pool::default();
        let a = pool.get_or_insert("k", || 1);
        let b = pool.get_or_insert("k", || 2);
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        assert_eq!(*pool.get_or_insert("k", || 3), 3);
    }
}
