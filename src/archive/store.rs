//! Where archive files are published, through `object_store`: a local
//! directory (the default), an S3-compatible store, or HDFS (cargo feature
//! `hdfs`), and in memory for unit tests.
//!
//! A file is visible only once complete, and never half-written in the
//! final layout:
//! - local filesystem and HDFS: uploaded under `_rockfeed_staging/` (a
//!   directory Hive, Spark and pyarrow ignore: it starts with `_`), then
//!   renamed into place (atomic on both), with fsync on the local disk;
//! - S3: one PUT, or a multipart upload that is only visible once
//!   completed (and aborted on failure).
//!
//! Publishing is idempotent: a name that already exists is accepted if it
//! holds a Parquet file with the same number of rows (a crash after the
//! upload but before the spool segment was deleted), and refused as a
//! conflict otherwise (two writers on one label prefix): nothing is ever
//! overwritten.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::config::ArchiveConfig;

/// Files up to this size go up in one PUT; larger ones in parts.
const SINGLE_PUT_MAX: u64 = 32 << 20;
const PART_BYTES: usize = 16 << 20;
/// Staging area of stores that publish by rename.
pub const STAGING: &str = "_rockfeed_staging";

/// A parsed `archive.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(std::path::PathBuf),
    S3 { bucket: String, prefix: String },
    Hdfs { url: String },
}

impl Location {
    pub fn parse(url: &str) -> Result<Location, String> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("archive.url '{url}' names no bucket"));
            }
            return Ok(Location::S3 { bucket: bucket.into(), prefix: prefix.trim_matches('/').into() });
        }
        if url.starts_with("hdfs://") || url.starts_with("viewfs://") {
            return Ok(Location::Hdfs { url: url.into() });
        }
        if let Some(p) = url.strip_prefix("file://") {
            return Ok(Location::Local(p.into()));
        }
        if url.contains("://") {
            return Err(format!("archive.url '{url}': use a local path, file://, s3:// or hdfs://"));
        }
        if url.is_empty() {
            return Err("archive.url is empty".into());
        }
        Ok(Location::Local(url.into()))
    }
}

/// An opened archive store.
#[derive(Debug, Clone)]
pub struct Store {
    pub inner: Arc<dyn ObjectStore>,
    /// Upload to [`STAGING`], then rename into place.
    pub by_rename: bool,
    /// For logs: the URL (never credentials).
    pub display: String,
}

/// How a publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub bytes: u64,
    /// The file was already there (published before a crash).
    pub already: bool,
}

/// Why a file was not published, and what the uploader does about it.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// May pass by itself (the network, a timeout, the store's 5xx, the
    /// spool's disk): retried with back-off.
    #[error("{0}")]
    Transient(String),
    /// The store refuses rockfeed itself, whatever the file: credentials,
    /// permissions, a missing bucket, a full or read-only disk. Nothing is
    /// wrong with the data; the file waits in the spool and is retried
    /// until an operator fixes the store.
    #[error("{0}")]
    Destination(String),
    /// Another file holds the name: kept in the spool, never overwritten.
    #[error(
        "refusing to overwrite {path}: it holds {found} rows, this file {ours} (another writer with the same label prefix?)"
    )]
    Conflict { path: String, found: i64, ours: u64 },
}

impl Store {
    pub fn open(cfg: &ArchiveConfig) -> Result<Store, String> {
        match Location::parse(&cfg.url)? {
            Location::Local(dir) => {
                std::fs::create_dir_all(&dir).map_err(|e| format!("archive directory {}: {e}", dir.display()))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| format!("archive directory {}: {e}", dir.display()))?
                    .with_fsync(true);
                Ok(Store { inner: Arc::new(fs), by_rename: true, display: dir.display().to_string() })
            }
            Location::S3 { bucket, prefix } => {
                let s3 = &cfg.s3;
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&bucket)
                    .with_region(&s3.region)
                    .with_virtual_hosted_style_request(!s3.path_style)
                    .with_allow_http(s3.allow_http)
                    // A few quick retries inside object_store; past that the
                    // uploader's own back-off takes over, so failures show
                    // in the metrics within seconds.
                    .with_retry(object_store::RetryConfig {
                        max_retries: 3,
                        retry_timeout: std::time::Duration::from_secs(10),
                        ..Default::default()
                    });
                if let Some(e) = &s3.endpoint {
                    b = b.with_endpoint(e);
                }
                if let Some(k) = &s3.access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(k) = &s3.secret_access_key {
                    b = b.with_secret_access_key(k);
                }
                if let Some(ca) = &s3.tls_ca_file {
                    let pem = std::fs::read(ca).map_err(|e| format!("archive.s3.tls_ca_file {}: {e}", ca.display()))?;
                    let mut opts = object_store::ClientOptions::new().with_allow_http(s3.allow_http);
                    for c in object_store::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())? {
                        opts = opts.with_root_certificate(c);
                    }
                    b = b.with_client_options(opts);
                }
                let store = b.build().map_err(|e| format!("archive S3 store: {e}"))?;
                let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(store)
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(store, prefix.as_str()))
                };
                Ok(Store { inner, by_rename: false, display: format!("s3://{bucket}/{prefix}") })
            }
            Location::Hdfs { url } => hdfs(&url),
        }
    }

    /// An in-memory store (tests).
    pub fn memory() -> Store {
        Store { inner: Arc::new(object_store::memory::InMemory::new()), by_rename: false, display: "memory".into() }
    }

    /// Publishes the Parquet file at `local` (holding `rows` rows) as `rel`;
    /// `writer` names this writer's staging directory.
    pub async fn publish(
        &self,
        rel: &str,
        local: &std::path::Path,
        rows: u64,
        writer: &str,
    ) -> Result<Published, PublishError> {
        let dest = ObjPath::from(rel);
        if let Some(p) = self.existing(&dest, rows).await? {
            return Ok(p);
        }
        let size =
            std::fs::metadata(local).map_err(|e| PublishError::Transient(format!("{}: {e}", local.display())))?.len();
        let target = if self.by_rename {
            let name = rel.rsplit('/').next().unwrap_or(rel);
            ObjPath::from(format!("{STAGING}/{writer}/{name}"))
        } else {
            dest.clone()
        };
        self.upload(&target, local, size).await?;
        if self.by_rename {
            self.inner
                .rename(&target, &dest)
                .await
                .map_err(|e| failed(format!("rename {target} -> {dest}"), e, false))?;
        }
        Ok(Published { bytes: size, already: false })
    }

    /// `Some` when `dest` already holds this file.
    async fn existing(&self, dest: &ObjPath, rows: u64) -> Result<Option<Published>, PublishError> {
        match self.inner.head(dest).await {
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(failed(format!("head {dest}"), e, false)),
            Ok(meta) => {
                // Not a readable Parquet file counts as other content.
                let found = self
                    .footer_rows(dest, meta.size)
                    .await
                    .map_err(|e| failed(format!("read {dest}"), e, false))?
                    .unwrap_or(-1);
                if found == rows as i64 {
                    Ok(Some(Published { bytes: meta.size, already: true }))
                } else {
                    Err(PublishError::Conflict { path: dest.to_string(), found, ours: rows })
                }
            }
        }
    }

    async fn upload(&self, to: &ObjPath, local: &std::path::Path, size: u64) -> Result<(), PublishError> {
        let spool = |e: std::io::Error| PublishError::Transient(format!("{}: {e}", local.display()));
        let store = |e| failed(format!("upload {to}"), e, true);
        let mut f = std::fs::File::open(local).map_err(spool)?;
        if size <= SINGLE_PUT_MAX {
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf).map_err(spool)?;
            self.inner.put(to, PutPayload::from(Bytes::from(buf))).await.map_err(store)?;
            return Ok(());
        }
        let mut up = self.inner.put_multipart(to).await.map_err(store)?;
        let r: Result<(), PublishError> = async {
            loop {
                let mut part = Vec::with_capacity(PART_BYTES);
                (&mut f).take(PART_BYTES as u64).read_to_end(&mut part).map_err(spool)?;
                if part.is_empty() {
                    break;
                }
                up.put_part(PutPayload::from(Bytes::from(part))).await.map_err(store)?;
            }
            up.complete().await.map(|_| ()).map_err(store)
        }
        .await;
        if r.is_err() {
            let _ = up.abort().await;
        }
        r
    }

    /// `rockfeed check --connect`: writes a small object under
    /// `_rockfeed-check/` (a name Hive and Spark skip) and deletes it.
    pub async fn probe(&self) -> Result<String, String> {
        let p = ObjPath::from(format!("_rockfeed-check/{}-{}", std::process::id(), crate::util::now_ms()));
        self.inner
            .put(&p, PutPayload::from(Bytes::from_static(b"rockfeed check\n")))
            .await
            .map_err(|e| format!("{}: writing {p}: {e}", self.display))?;
        self.inner.delete(&p).await.map_err(|e| format!("{}: deleting {p}: {e}", self.display))?;
        Ok(format!("{} took a probe object and deleted it", self.display))
    }

    /// Removes what a crash left in this writer's staging directory.
    pub async fn clean_staging(&self, writer: &str) {
        if !self.by_rename {
            return;
        }
        use futures_util::StreamExt;
        let prefix = ObjPath::from(format!("{STAGING}/{writer}"));
        let mut list = self.inner.list(Some(&prefix));
        while let Some(Ok(meta)) = list.next().await {
            let _ = self.inner.delete(&meta.location).await;
        }
    }

    /// Every published file under `table`, with its size.
    pub async fn list(&self, table: &str) -> Result<Vec<(String, u64)>, String> {
        use futures_util::StreamExt;
        let prefix = ObjPath::from(table);
        let mut out = Vec::new();
        let mut list = self.inner.list(Some(&prefix));
        while let Some(m) = list.next().await {
            let m = m.map_err(|e| e.to_string())?;
            let p = m.location.to_string();
            if p.ends_with(".parquet") {
                out.push((p, m.size));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The row count of a published file, from its footer alone (two
    /// ranged reads, never the whole file).
    pub async fn rows(&self, rel: &str) -> Result<i64, String> {
        let p = ObjPath::from(rel);
        let size = self.inner.head(&p).await.map_err(|e| format!("{rel}: {e}"))?.size;
        self.footer_rows(&p, size).await.map_err(|e| format!("{rel}: {e}"))?.map_err(|e| format!("{rel}: {e}"))
    }

    /// The footer's row count of the `size`-byte object `p`: the outer
    /// error is the store's, the inner one says it is not a Parquet file.
    async fn footer_rows(&self, p: &ObjPath, size: u64) -> Result<Result<i64, String>, object_store::Error> {
        if size < 12 {
            return Ok(Err(format!("{size} bytes is not a Parquet file")));
        }
        let tail = self.inner.get_range(p, size - 8..size).await?;
        if &tail[4..] != b"PAR1" {
            return Ok(Err("not a Parquet file".into()));
        }
        let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        if len + 12 > size {
            return Ok(Err(format!("footer length {len} exceeds the file")));
        }
        let footer = self.inner.get_range(p, size - 8 - len..size - 8).await?;
        Ok(parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&footer)
            .map(|md| md.file_metadata().num_rows())
            .map_err(|e| e.to_string()))
    }
}

/// A store's failure of `what`, by what it says about the store. The store
/// refusing rockfeed itself is [`PublishError::Destination`]: credentials
/// or permissions (HTTP 401/403, or the disk's), an operation the store
/// does not have, a full or read-only disk, and on a write a missing
/// bucket (`write`: a write's NotFound is the bucket's, not the object's).
/// Anything else may pass.
fn failed(what: String, e: object_store::Error, write: bool) -> PublishError {
    use object_store::Error as E;
    use std::io::ErrorKind as K;
    let destination = match &e {
        E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. } => true,
        E::NotFound { .. } => write,
        _ => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let mut found = false;
            while let Some(s) = source {
                if let Some(io) = s.downcast_ref::<std::io::Error>() {
                    found |= matches!(
                        io.kind(),
                        K::PermissionDenied | K::ReadOnlyFilesystem | K::StorageFull | K::QuotaExceeded
                    );
                }
                source = s.source();
            }
            found
        }
    };
    let message = format!("{what}: {e}");
    if destination { PublishError::Destination(message) } else { PublishError::Transient(message) }
}

#[cfg(feature = "hdfs")]
fn hdfs(url: &str) -> Result<Store, String> {
    let s = hdfs_native_object_store::HdfsObjectStoreBuilder::new()
        .with_url(url)
        .build()
        .map_err(|e| format!("archive HDFS store {url}: {e}"))?;
    Ok(Store { inner: Arc::new(s), by_rename: true, display: url.to_string() })
}

#[cfg(not(feature = "hdfs"))]
fn hdfs(url: &str) -> Result<Store, String> {
    Err(format!("archive.url '{url}': this build has no HDFS support (build with `--features hdfs`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(Location::parse("/data/archive"), Ok(Location::Local("/data/archive".into())));
        assert_eq!(Location::parse("file:///data/a"), Ok(Location::Local("/data/a".into())));
        assert_eq!(
            Location::parse("s3://raw/edge/7/"),
            Ok(Location::S3 { bucket: "raw".into(), prefix: "edge/7".into() })
        );
        assert_eq!(Location::parse("s3://raw"), Ok(Location::S3 { bucket: "raw".into(), prefix: "".into() }));
        assert!(Location::parse("s3:///x").is_err());
        assert!(Location::parse("gs://b/x").is_err());
        assert!(matches!(Location::parse("hdfs://nn:8020/warehouse"), Ok(Location::Hdfs { .. })));
    }

    #[tokio::test]
    async fn an_object_store_without_rename_publishes_with_one_put() {
        let store = Store::memory();
        let dir = tempfile::tempdir().unwrap();
        let mut rows = crate::archive::RawRows::new(1);
        rows.push(
            crate::archive::Raw {
                vin: "V",
                ts_ms: 1,
                seq: Some(1),
                metric: "m",
                value: 0.5,
                kind: crate::archive::ValueKind::Number,
                received_ms: 2,
                source: "s",
            },
            &[None],
        );
        let bytes =
            crate::archive::encode(&rows, &crate::archive::Schema::new(&["fleet".into()]), Default::default()).unwrap();
        let local = dir.path().join("f.parquet");
        std::fs::write(&local, &bytes).unwrap();
        let rel = "t/dt=1970-01-01/hour=00/part-w-0-1-1.parquet";
        assert!(!store.publish(rel, &local, 1, "w").await.unwrap().already);
        assert!(store.publish(rel, &local, 1, "w").await.unwrap().already);
        assert_eq!(store.list("t").await.unwrap(), vec![(rel.to_string(), bytes.len() as u64)]);
        assert_eq!(store.rows(rel).await.unwrap(), 1);
        // Nothing was staged: the one PUT is the publish.
        assert!(store.list(STAGING).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn publishing_is_idempotent_and_refuses_to_overwrite_other_content() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("archive");
        let cfg = ArchiveConfig { url: root.display().to_string(), ..Default::default() };
        let store = Store::open(&cfg).unwrap();
        let mut rows = crate::archive::RawRows::new(0);
        for i in 0..10 {
            rows.push(
                crate::archive::Raw {
                    vin: "V1",
                    ts_ms: i,
                    seq: None,
                    metric: "m",
                    value: 1.0,
                    kind: crate::archive::ValueKind::Number,
                    received_ms: i,
                    source: "s",
                },
                &[],
            );
        }
        let schema = crate::archive::Schema::new(&[]);
        let bytes = crate::archive::encode(&rows, &schema, Default::default()).unwrap();
        let local = dir.path().join("f.parquet");
        std::fs::write(&local, &bytes).unwrap();
        let rel = "t/dt=2026-11-24/hour=10/part-w-0-1-5.parquet";
        let p = store.publish(rel, &local, 10, "w").await.unwrap();
        assert_eq!(p, Published { bytes: bytes.len() as u64, already: false });
        assert_eq!(std::fs::read(root.join(rel)).unwrap(), bytes.to_vec());
        // Nothing is left in staging.
        assert_eq!(std::fs::read_dir(root.join(STAGING).join("w")).map(|d| d.count()).unwrap_or(0), 0);
        // Again (a crash before the spool was cleaned): accepted as is.
        assert!(store.publish(rel, &local, 10, "w").await.unwrap().already);
        // Other content under the same name: refused, the file untouched.
        let e = store.publish(rel, &local, 11, "w").await.unwrap_err();
        assert!(matches!(e, PublishError::Conflict { found: 10, ours: 11, .. }), "{e}");
        assert_eq!(store.list("t").await.unwrap(), vec![(rel.to_string(), bytes.len() as u64)]);
        assert_eq!(store.rows(rel).await.unwrap(), 10);
    }

    /// The store refusing rockfeed is told from a failure that may pass,
    /// by the store's error, not its text.
    #[test]
    fn a_store_refusing_rockfeed_is_a_destination_error() {
        use object_store::Error as E;
        let boxed = |e: std::io::Error| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) };
        let io =
            |k: std::io::ErrorKind| E::Generic { store: "LocalFileSystem", source: boxed(std::io::Error::from(k)) };
        let destination = [
            (E::PermissionDenied { path: "p".into(), source: boxed(std::io::Error::other("403")) }, false),
            (E::Unauthenticated { path: "p".into(), source: boxed(std::io::Error::other("401")) }, false),
            (E::NotFound { path: "p".into(), source: boxed(std::io::Error::other("NoSuchBucket")) }, true),
            (io(std::io::ErrorKind::PermissionDenied), false),
            (io(std::io::ErrorKind::StorageFull), true),
            (io(std::io::ErrorKind::ReadOnlyFilesystem), true),
        ];
        for (e, write) in destination {
            let f = failed("upload t/x.parquet".into(), e, write);
            assert!(matches!(&f, PublishError::Destination(m) if m.starts_with("upload t/x.parquet: ")), "{f:?}");
        }
        let transient = [
            (E::NotFound { path: "p".into(), source: boxed(std::io::Error::other("gone")) }, false),
            (io(std::io::ErrorKind::TimedOut), true),
            (io(std::io::ErrorKind::ConnectionRefused), true),
            (E::Generic { store: "S3", source: boxed(std::io::Error::other("HTTP 503 Slow Down")) }, true),
        ];
        for (e, write) in transient {
            let f = failed("head t/x.parquet".into(), e, write);
            assert!(matches!(f, PublishError::Transient(_)), "{f:?}");
        }
    }
}
