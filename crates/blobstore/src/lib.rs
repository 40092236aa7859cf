//! Content-addressed blob store. Conversation items, tool outputs and
//! conversation segments live here so that workflow history carries only
//! digests. Blobs are immutable and named by the SHA-256 of their bytes, so a
//! retried write is harmless and a read can be cached forever.
//!
//! Backed by `object_store`: a local directory (`file:///path`) by default,
//! `memory://` for tests, and object storage for production — `s3://bucket`,
//! `gs://bucket` and `az://container` (also the longer URL forms
//! object_store accepts), configured from the environment the way each
//! cloud's SDK is (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
//!
//! Each session's blobs live under a prefix of their own
//! ([`BlobStore::for_session`]: `sessions/<key>/sha256/…`), so deleting a
//! session deletes exactly its blobs ([`BlobStore::delete_session`]) and a
//! fork gets copies of its parent's ([`BlobStore::copy_session`]), however
//! many sessions hold the same content. Blobs written before sessions had
//! prefixes stay at `sha256/…`; a session's reads fall back to them.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path as ObjectPath};
use sha2::{Digest as _, Sha256};

pub mod conversation;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("invalid blob store URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid blob digest {0:?}: expected 64 lowercase hex characters")]
    InvalidDigest(String),
    #[error("blob {0} not found")]
    NotFound(String),
    /// The stored bytes are not the blob: something rewrote the store.
    #[error("blob {digest} is corrupt: its content hashes to {actual}")]
    Corrupt { digest: String, actual: String },
    #[error("blob {digest} is not valid JSON for its type: {source}")]
    Decode {
        digest: String,
        source: serde_json::Error,
    },
    #[error("invalid session key {0:?} for the blob store")]
    InvalidSessionKey(String),
    #[error("blob store error: {0}")]
    Store(#[from] object_store::Error),
}

/// The `--blob-url` flag every process that shares the store takes.
#[derive(Debug, Clone, clap::Args)]
pub struct BlobStoreArgs {
    /// The content-addressed blob store session-api, model-proxy and
    /// tool-runner share: `file:///abs/dir` (created if missing),
    /// `s3://bucket[/prefix]`, `gs://bucket`, `az://container` (credentials
    /// and region from the cloud's usual environment), or `memory://`
    /// (tests; not shared between processes).
    #[arg(long = "blob-url", env = "KEEL_BLOB_URL", value_name = "URL")]
    pub blob_url: String,
}

impl BlobStoreArgs {
    /// Opens the store (see [`BlobStore::open`]).
    pub fn open(&self) -> Result<BlobStore, BlobError> {
        BlobStore::open(&self.blob_url)
    }
}

/// Object stores speak HTTPS through reqwest with rustls; Keel builds rustls
/// with ring only, which must be installed as the process default once.
fn install_tls_provider() {
    // Already installed (by this or another component) is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A handle to the store, or to one session's part of it; cheap to clone.
#[derive(Clone, Debug)]
pub struct BlobStore {
    inner: Arc<dyn ObjectStore>,
    /// The session whose prefix puts and gets use; `None`: the shared,
    /// unprefixed part (blobs of no session, and those from before).
    session: Option<Arc<str>>,
    metrics: Option<Arc<BlobMetrics>>,
}

/// What a process's blob store did: puts and gets by outcome, their
/// durations, and the bytes moved (see [`BlobStore::with_metrics`]).
#[derive(Debug)]
struct BlobMetrics {
    operations: prometheus::IntCounterVec,
    duration: prometheus::HistogramVec,
    bytes: prometheus::IntCounterVec,
}

impl BlobMetrics {
    fn record(&self, op: &str, outcome: &str, started: std::time::Instant, bytes: usize) {
        self.operations.with_label_values(&[op, outcome]).inc();
        self.duration
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        if bytes > 0 {
            self.bytes.with_label_values(&[op]).inc_by(bytes as u64);
        }
    }
}

/// The `outcome` label of an operation's result.
fn outcome<T>(result: &Result<T, BlobError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(BlobError::NotFound(_)) => "not_found",
        Err(BlobError::Corrupt { .. }) => "corrupt",
        Err(_) => "error",
    }
}

impl BlobStore {
    /// Opens `file:///abs/dir` (created if missing), `memory://`, or an
    /// object store URL (`s3://`, `gs://`, `az://`, …) with credentials and
    /// region from the environment. Nothing is contacted until first use.
    pub fn open(url: &str) -> Result<Self, BlobError> {
        Self::open_with_options(url, &[])
    }

    /// [`open`](Self::open), with object store settings that win over the
    /// environment: object_store's config keys, e.g. `("aws_endpoint",
    /// "http://127.0.0.1:9000")` or `("aws_allow_http", "true")`.
    pub fn open_with_options(url: &str, options: &[(&str, &str)]) -> Result<Self, BlobError> {
        let invalid = |reason: String| BlobError::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        if !options.is_empty() && matches!(parsed.scheme(), "file" | "memory") {
            return Err(invalid("options apply to object stores only".into()));
        }
        let inner: Arc<dyn ObjectStore> = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| invalid("not an absolute local path".into()))?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| invalid(format!("cannot create {}: {e}", dir.display())))?;
                // Durable once `put` returns: the workflow records the
                // digest in history right after.
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(&dir)
                        .map_err(|e| invalid(e.to_string()))?
                        .with_fsync(true),
                )
            }
            "memory" => Arc::new(object_store::memory::InMemory::new()),
            "s3" | "s3a" => {
                install_tls_provider();
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(url);
                for (key, value) in options {
                    b = b.with_config(key.parse().map_err(|e| invalid(format!("{e}")))?, *value);
                }
                Arc::new(b.build().map_err(|e| invalid(e.to_string()))?)
            }
            "gs" => {
                install_tls_provider();
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(url);
                for (key, value) in options {
                    b = b.with_config(key.parse().map_err(|e| invalid(format!("{e}")))?, *value);
                }
                Arc::new(b.build().map_err(|e| invalid(e.to_string()))?)
            }
            "az" | "adl" | "azure" | "abfs" | "abfss" => {
                install_tls_provider();
                let mut b = object_store::azure::MicrosoftAzureBuilder::from_env().with_url(url);
                for (key, value) in options {
                    b = b.with_config(key.parse().map_err(|e| invalid(format!("{e}")))?, *value);
                }
                Arc::new(b.build().map_err(|e| invalid(e.to_string()))?)
            }
            other => {
                return Err(invalid(format!(
                    "unsupported scheme {other:?} (use file://, memory://, s3://, gs:// or az://)"
                )));
            }
        };
        Ok(Self {
            inner,
            session: None,
            metrics: None,
        })
    }

    /// The same store, counting its puts and gets in `registry`:
    /// `keel_blob_store_operations_total{op,outcome}` (`op` `put` or `get`;
    /// `outcome` `ok`, `not_found`, `corrupt` or `error`),
    /// `keel_blob_store_operation_duration_seconds{op}` and
    /// `keel_blob_store_bytes_total{op}` (bytes written and read).
    pub fn with_metrics(
        mut self,
        registry: &prometheus::Registry,
    ) -> Result<Self, prometheus::Error> {
        let operations = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "keel_blob_store_operations_total",
                "Blob store puts and gets, by outcome (ok, not_found, corrupt, error).",
            ),
            &["op", "outcome"],
        )?;
        let duration = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "keel_blob_store_operation_duration_seconds",
                "Blob store puts and gets, from call to answer (a get includes reading the bytes and checking their digest).",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["op"],
        )?;
        let bytes = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "keel_blob_store_bytes_total",
                "Bytes written to (put) and read from (get) the blob store.",
            ),
            &["op"],
        )?;
        registry.register(Box::new(operations.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        self.metrics = Some(Arc::new(BlobMetrics {
            operations,
            duration,
            bytes,
        }));
        Ok(self)
    }

    /// The same store, reading and writing the blobs of the session with
    /// key `session_key` (its reads also find blobs from before sessions
    /// had prefixes).
    pub fn for_session(&self, session_key: &str) -> Result<Self, BlobError> {
        validate_session_key(session_key)?;
        Ok(Self {
            inner: self.inner.clone(),
            session: Some(session_key.into()),
            metrics: self.metrics.clone(),
        })
    }

    /// The session this handle is scoped to.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// Stores `bytes` and returns their digest.
    pub async fn put(&self, bytes: impl Into<Bytes>) -> Result<String, BlobError> {
        let started = std::time::Instant::now();
        let bytes: Bytes = bytes.into();
        let len = bytes.len();
        let digest = digest(&bytes);
        let result = self
            .inner
            .put(
                &object_path(self.session.as_deref(), &digest),
                PutPayload::from_bytes(bytes),
            )
            .await
            .map(|_| digest)
            .map_err(BlobError::from);
        if let Some(m) = &self.metrics {
            let moved = if result.is_ok() { len } else { 0 };
            m.record("put", outcome(&result), started, moved);
        }
        result
    }

    /// The blob named `digest`. Its bytes are hashed again before they are
    /// returned: a store rewritten behind Keel's back (a file edited in a
    /// `file://` directory, a tampered object) is an error, never content.
    pub async fn get(&self, digest: &str) -> Result<Bytes, BlobError> {
        let started = std::time::Instant::now();
        let result = self.get_unmetered(digest).await;
        if let Some(m) = &self.metrics {
            let moved = result.as_ref().map_or(0, |b| b.len());
            m.record("get", outcome(&result), started, moved);
        }
        result
    }

    async fn get_unmetered(&self, digest: &str) -> Result<Bytes, BlobError> {
        validate_digest(digest)?;
        let mut found = self
            .inner
            .get(&object_path(self.session.as_deref(), digest))
            .await;
        if self.session.is_some() && matches!(found, Err(object_store::Error::NotFound { .. })) {
            found = self.inner.get(&object_path(None, digest)).await;
        }
        let bytes = match found {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BlobError::NotFound(digest.into()));
            }
            Err(e) => return Err(e.into()),
        };
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != digest {
            return Err(BlobError::Corrupt {
                digest: digest.into(),
                actual,
            });
        }
        Ok(bytes)
    }

    pub async fn put_json<T: serde::Serialize + ?Sized>(&self, v: &T) -> Result<String, BlobError> {
        // Serialising plain data to a Vec cannot fail; map it anyway rather than panic.
        let bytes = serde_json::to_vec(v).map_err(|source| BlobError::Decode {
            digest: String::new(),
            source,
        })?;
        self.put(bytes).await
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &str,
    ) -> Result<T, BlobError> {
        let bytes = self.get(digest).await?;
        serde_json::from_slice(&bytes).map_err(|source| BlobError::Decode {
            digest: digest.into(),
            source,
        })
    }
}

impl BlobStore {
    /// Deletes every blob of the session `session_key` (not the shared ones
    /// from before sessions had prefixes); returns how many.
    pub async fn delete_session(&self, session_key: &str) -> Result<usize, BlobError> {
        validate_session_key(session_key)?;
        let prefix = session_prefix(session_key);
        let mut listed = self.inner.list(Some(&prefix));
        let mut deleted = 0;
        while let Some(meta) = listed.next().await {
            match self.inner.delete(&meta?.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(deleted)
    }

    /// Copies every blob of the session `from` to the session `to`; returns
    /// how many.
    pub async fn copy_session(&self, from: &str, to: &str) -> Result<usize, BlobError> {
        validate_session_key(from)?;
        validate_session_key(to)?;
        let (source, target) = (session_prefix(from), session_prefix(to));
        let mut listed = self.inner.list(Some(&source));
        let mut copied = 0;
        while let Some(meta) = listed.next().await {
            let location = meta?.location;
            let Some(rest) = location.prefix_match(&source) else {
                continue;
            };
            let to = rest.fold(target.clone(), |path, part| path.join(part));
            self.inner.copy(&location, &to).await?;
            copied += 1;
        }
        Ok(copied)
    }
}

/// Checks that a session key is safe as one path segment:
/// `[A-Za-z0-9._-]`, at most 200 characters, not `.` or `..`.
pub fn validate_session_key(key: &str) -> Result<(), BlobError> {
    if key.is_empty()
        || key.len() > 200
        || key == "."
        || key == ".."
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(BlobError::InvalidSessionKey(key.into()));
    }
    Ok(())
}

fn session_prefix(key: &str) -> ObjectPath {
    ObjectPath::from_iter(["sessions", key])
}

/// The digest `bytes` are stored under: their SHA-256, in lowercase hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks that `digest` is a SHA-256 hex digest, so it is safe as a path.
pub fn validate_digest(digest: &str) -> Result<(), BlobError> {
    if digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(BlobError::InvalidDigest(digest.into()))
    }
}

/// `[sessions/<key>/]sha256/ab/abcdef…`: two-character fan-out keeps
/// directories small.
fn object_path(session: Option<&str>, digest: &str) -> ObjectPath {
    match session {
        Some(key) => ObjectPath::from_iter(["sessions", key, "sha256", &digest[..2], digest]),
        None => ObjectPath::from(format!("sha256/{}/{digest}", &digest[..2])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn puts_and_gets_are_counted_by_outcome() {
        let registry = prometheus::Registry::new();
        let store = BlobStore::open("memory://")
            .unwrap()
            .with_metrics(&registry)
            .unwrap();
        // A session's handle counts into the same metrics.
        let session = store.for_session("t.s1").unwrap();
        let d = session.put(&b"hello"[..]).await.unwrap();
        session.get(&d).await.unwrap();
        let missing = digest(b"never stored");
        assert!(matches!(
            store.get(&missing).await,
            Err(BlobError::NotFound(_))
        ));
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        // The sample `name{labels}` (labels in Prometheus' order: by name).
        let count = |name: &str, labels: &[(&str, &str)]| -> f64 {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let key = format!("{name}{{{}}} ", labels.join(","));
            text.lines()
                .find_map(|l| l.strip_prefix(&key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {key} in\n{text}"))
        };
        let ops = "keel_blob_store_operations_total";
        assert_eq!(count(ops, &[("op", "put"), ("outcome", "ok")]), 1.0);
        assert_eq!(count(ops, &[("op", "get"), ("outcome", "ok")]), 1.0);
        assert_eq!(count(ops, &[("op", "get"), ("outcome", "not_found")]), 1.0);
        assert_eq!(count("keel_blob_store_bytes_total", &[("op", "put")]), 5.0);
        assert_eq!(count("keel_blob_store_bytes_total", &[("op", "get")]), 5.0);
        assert_eq!(
            count(
                "keel_blob_store_operation_duration_seconds_count",
                &[("op", "get")]
            ),
            2.0
        );
    }

    #[tokio::test]
    async fn put_get_roundtrip_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("blobs").display());
        let store = BlobStore::open(&url).unwrap();
        let d = store.put(&b"hello"[..]).await.unwrap();
        assert_eq!(
            d,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(&store.get(&d).await.unwrap()[..], b"hello");
        // Idempotent.
        assert_eq!(store.put(&b"hello"[..]).await.unwrap(), d);
        // Reopened store sees the blob.
        let again = BlobStore::open(&url).unwrap();
        assert_eq!(&again.get(&d).await.unwrap()[..], b"hello");
    }

    #[tokio::test]
    async fn a_rewritten_blob_is_an_error_not_content() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("blobs").display());
        let store = BlobStore::open(&url).unwrap();
        let d = store.put(&br#"{"output":"ok"}"#[..]).await.unwrap();
        let file = dir.path().join("blobs/sha256").join(&d[..2]).join(&d);
        std::fs::write(&file, br#"{"output":"forged"}"#).unwrap();
        match store.get(&d).await {
            Err(BlobError::Corrupt { digest, actual }) => {
                assert_eq!(digest, d);
                assert_ne!(actual, d);
            }
            other => panic!("a forged blob was read: {other:?}"),
        }
        assert!(store.get_json::<serde_json::Value>(&d).await.is_err());
    }

    #[test]
    fn object_store_urls_open_without_contacting_the_cloud() {
        // Buckets named in the URL; credentials and region would come from
        // the environment and are only needed on first use.
        assert!(BlobStore::open("s3://keel-blobs").is_ok());
        assert!(BlobStore::open("gs://keel-blobs").is_ok());
        // Azure needs an account; without one the error says so.
        let err = BlobStore::open("az://keel-blobs").unwrap_err().to_string();
        assert!(err.contains("az://keel-blobs"), "{err}");
        let err = BlobStore::open("ftp://x").unwrap_err().to_string();
        assert!(err.contains("s3://"), "{err}");
    }

    #[tokio::test]
    async fn sessions_have_their_own_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("blobs").display());
        let store = BlobStore::open(&url).unwrap();
        let legacy = store.put(&b"from before"[..]).await.unwrap();
        let a = store.for_session("t.a").unwrap();
        let b = store.for_session("t.b").unwrap();
        let same_a = a.put(&b"same text"[..]).await.unwrap();
        let same_b = b.put(&b"same text"[..]).await.unwrap();
        assert_eq!(same_a, same_b);
        let only_a = a.put(&b"only a"[..]).await.unwrap();
        assert!(
            dir.path()
                .join("blobs/sessions/t.a/sha256")
                .join(&only_a[..2])
                .join(&only_a)
                .exists()
        );
        // A session reads its own blobs and the shared ones, not another's.
        assert_eq!(&a.get(&legacy).await.unwrap()[..], b"from before");
        assert!(matches!(b.get(&only_a).await, Err(BlobError::NotFound(_))));
        assert!(matches!(
            store.get(&only_a).await,
            Err(BlobError::NotFound(_))
        ));

        // A fork gets copies; deleting a session leaves the others whole.
        let fork = store.for_session("t.fork").unwrap();
        assert_eq!(store.copy_session("t.a", "t.fork").await.unwrap(), 2);
        assert_eq!(store.delete_session("t.a").await.unwrap(), 2);
        assert!(matches!(a.get(&only_a).await, Err(BlobError::NotFound(_))));
        assert_eq!(&fork.get(&only_a).await.unwrap()[..], b"only a");
        assert_eq!(&b.get(&same_b).await.unwrap()[..], b"same text");
        assert_eq!(&a.get(&legacy).await.unwrap()[..], b"from before");
        assert_eq!(store.delete_session("t.a").await.unwrap(), 0);
    }

    #[test]
    fn session_keys_are_one_safe_path_segment() {
        let store = BlobStore::open("memory://").unwrap();
        for bad in ["", ".", "..", "a/b", "a b", "../x", &"k".repeat(201)] {
            assert!(
                matches!(store.for_session(bad), Err(BlobError::InvalidSessionKey(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            store.for_session("tenant.id-1_x").unwrap().session(),
            Some("tenant.id-1_x")
        );
    }

    #[tokio::test]
    async fn missing_and_invalid_digests() {
        let store = BlobStore::open("memory://").unwrap();
        let missing = "0".repeat(64);
        assert!(matches!(
            store.get(&missing).await,
            Err(BlobError::NotFound(_))
        ));
        assert!(matches!(
            store.get("../etc/passwd").await,
            Err(BlobError::InvalidDigest(_))
        ));
        assert!(matches!(
            BlobStore::open("s4://x"),
            Err(BlobError::InvalidUrl { .. })
        ));
    }
}
