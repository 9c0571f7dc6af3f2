//! An S3-compatible bucket as the store (`--storage s3://BUCKET/PREFIX`),
//! shared by replicas: records under `PREFIX/<kind>/<hex>`, blobs under
//! `PREFIX/blobs/sha256/<hex>`, the same names as on disk. Requests are
//! signed by rusty-s3 (as presigned URLs, so no header needs signing) and
//! sent by ureq, synchronously like everything else here. A blob's version
//! is its ETag; a blob read is pinned to it with `If-Match`. Blobs above
//! [`multipart::MULTIPART_ABOVE`] go up in parts ([`multipart`]).

mod multipart;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use ureq::http::StatusCode;

use super::{BlobEntry, BlobHandle, Kind, Storage, StorageError, Stored, Version};
use crate::digest::Digest;

/// How long the URLs of the replica's own requests are valid.
const SIGNED_FOR: Duration = Duration::from_secs(300);
/// Records are small; a larger answer is not one of ours.
const RECORD_LIMIT: u64 = 64 << 20;

/// Where the bucket is and how to sign for it (built by the command line).
#[derive(Clone)]
pub struct S3Options {
    pub bucket: String,
    /// Key prefix, without slashes at either end; may be empty.
    pub prefix: String,
    /// `None`: AWS, virtual-hosted. `Some`: a self-hosted store, path-style.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs and debug output.
        write!(f, "s3://{}/{} at {:?} ({})", self.bucket, self.prefix, self.endpoint, self.region)
    }
}

/// What every request needs: shared by the store and its open blobs.
struct Client {
    bucket: Bucket,
    credentials: Credentials,
    agent: ureq::Agent,
    prefix: String,
    /// Whether the last request could not reach the store or got a 5xx.
    down: AtomicBool,
}

pub struct S3Storage {
    client: Arc<Client>,
    staging: PathBuf,
    described: String,
}

impl S3Storage {
    /// Connects to the bucket (it must exist) and readies `staging`, a
    /// local folder blobs are written into before they are uploaded.
    pub fn open(options: &S3Options, staging: PathBuf) -> Result<S3Storage, StorageError> {
        let (endpoint, style) = match &options.endpoint {
            Some(endpoint) => (endpoint.clone(), UrlStyle::Path),
            None => (format!("https://s3.{}.amazonaws.com", options.region), UrlStyle::VirtualHost),
        };
        let url = endpoint.parse().map_err(|e| StorageError::Config(format!("--s3-endpoint {endpoint}: {e}")))?;
        let bucket = Bucket::new(url, style, options.bucket.clone(), options.region.clone())
            .map_err(|e| StorageError::Config(format!("bucket {}: {e}", options.bucket)))?;
        let credentials = match &options.session_token {
            Some(token) => Credentials::new_with_token(&options.access_key, &options.secret_key, token),
            None => Credentials::new(&options.access_key, &options.secret_key),
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .build()
            .into();
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)?;
        let client =
            Client { bucket, credentials, agent, prefix: options.prefix.clone(), down: AtomicBool::new(false) };
        let described = format!("s3://{}/{} at {endpoint}", options.bucket, options.prefix);
        let storage = S3Storage { client: Arc::new(client), staging, described };
        // Fails now, with the store's answer, rather than at the first pull.
        let head = storage.client.bucket.head_bucket(Some(&storage.client.credentials)).sign(SIGNED_FOR);
        crate::metrics::global().storage.request("head");
        let response = storage.client.agent.head(head.as_str()).call().map_err(store_error)?;
        if response.status() != StatusCode::OK {
            return Err(StorageError::Store(format!(
                "bucket {} answers {} to HEAD (it must exist and the credentials be allowed)",
                options.bucket,
                response.status()
            )));
        }
        Ok(storage)
    }

    fn key(&self, kind: Kind, name: &str) -> String {
        self.client.key(&format!("{}/{name}", kind.folder()))
    }

    fn blob_key(&self, digest: &Digest) -> String {
        self.client.key(&format!("blobs/sha256/{}", digest.hex()))
    }

    fn delete(&self, key: &str, at: Option<&Version>) -> Result<(), StorageError> {
        let url = self.client.bucket.delete_object(Some(&self.client.credentials), key).sign(SIGNED_FOR);
        let mut request = self.client.agent.delete(url.as_str());
        if let Some(version) = at.filter(|v| !v.0.is_empty()) {
            request = request.header("If-Match", &version.0);
        }
        let response = self.client.call("delete", request)?;
        match response.status().as_u16() {
            // 412: replaced since it was read; the new one stays.
            200 | 204 | 404 | 412 => Ok(()),
            status => Err(self.client.unexpected("DELETE", key, status)),
        }
    }

    /// Every key under `folder/` with its size, paged through.
    fn list_folder(&self, folder: &str) -> Result<Vec<(String, u64)>, StorageError> {
        let prefix = self.client.key(&format!("{folder}/"));
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = ListObjectsV2::new(&self.client.bucket, Some(&self.client.credentials));
            action.with_prefix(prefix.as_str());
            if let Some(token) = &token {
                action.with_continuation_token(token.as_str());
            }
            let url = action.sign(SIGNED_FOR);
            let mut response = self.client.call("list", self.client.agent.get(url.as_str()))?;
            if response.status() != StatusCode::OK {
                return Err(self.client.unexpected("LIST", &prefix, response.status().as_u16()));
            }
            let text = response.body_mut().with_config().limit(RECORD_LIMIT).read_to_string().map_err(store_error)?;
            let page = ListObjectsV2::parse_response(&text)
                .map_err(|e| StorageError::Store(format!("an unreadable listing of {prefix}: {e}")))?;
            for object in page.contents {
                if let Some(name) = object.key.strip_prefix(&prefix) {
                    found.push((name.to_string(), object.size));
                }
            }
            match page.next_continuation_token {
                Some(next) => token = Some(next),
                None => return Ok(found),
            }
        }
    }
}

impl Client {
    fn key(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }

    /// Sends a request without a body (`op` in the metrics); a failure to
    /// reach the store is [`StorageError::Unavailable`].
    fn call(
        &self,
        op: &'static str,
        request: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
    ) -> Result<ureq::http::Response<ureq::Body>, StorageError> {
        self.track(op, request.call())
    }

    /// Counts the request `sent` as `op` and notes whether the store
    /// answered (and not with a 5xx).
    fn track(
        &self,
        op: &'static str,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>, StorageError> {
        crate::metrics::global().storage.request(op);
        let reached = sent.as_ref().is_ok_and(|response| !response.status().is_server_error());
        if self.down.swap(!reached, Ordering::Relaxed) == reached {
            match reached {
                true => log::info!("the store answers again"),
                false => log::warn!("the store cannot be reached or fails: answering 503 until it is back"),
            }
        }
        sent.map_err(store_error)
    }

    fn unexpected(&self, method: &str, key: &str, status: u16) -> StorageError {
        if status >= 500 {
            StorageError::Unavailable(format!("the store answers {status} to {method} {key}"))
        } else {
            StorageError::Store(format!("the store answers {status} to {method} {key}"))
        }
    }

    fn get_url(&self, key: &str, valid_for: Duration) -> String {
        self.bucket.get_object(Some(&self.credentials), key).sign(valid_for).to_string()
    }
}

/// The keys of an AWS shared credentials file's `[default]` profile:
/// access key, secret key, session token (if any).
pub fn read_credentials_file(path: &Path) -> Result<(String, String, Option<String>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (mut section, mut key, mut secret, mut token) = (String::new(), None, None, None);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with(['#', ';'])) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        let Some((name, value)) = line.split_once('=') else { continue };
        if section != "default" {
            continue;
        }
        let value = Some(value.trim().to_string());
        match name.trim() {
            "aws_access_key_id" => key = value,
            "aws_secret_access_key" => secret = value,
            "aws_session_token" => token = value,
            _ => {}
        }
    }
    match (key, secret) {
        (Some(key), Some(secret)) => Ok((key, secret, token)),
        _ => Err(format!("{} has no [default] aws_access_key_id and aws_secret_access_key", path.display())),
    }
}

fn store_error(err: ureq::Error) -> StorageError {
    match err {
        ureq::Error::Io(err) => StorageError::Unavailable(err.to_string()),
        other => StorageError::Unavailable(other.to_string()),
    }
}

fn etag(response: &ureq::http::Response<ureq::Body>) -> Version {
    Version(response.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or("").to_string())
}

impl Storage for S3Storage {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn get(&self, kind: Kind, name: &str) -> Result<Option<Stored>, StorageError> {
        let key = self.key(kind, name);
        let url = self.client.get_url(&key, SIGNED_FOR);
        let mut response = self.client.call("get", self.client.agent.get(&url))?;
        match response.status().as_u16() {
            200 => {
                let version = etag(&response);
                let bytes = response.body_mut().with_config().limit(RECORD_LIMIT).read_to_vec().map_err(store_error)?;
                Ok(Some(Stored { bytes, version }))
            }
            404 => Ok(None),
            status => Err(self.client.unexpected("GET", &key, status)),
        }
    }

    fn put(&self, kind: Kind, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let key = self.key(kind, name);
        let url = self.client.bucket.put_object(Some(&self.client.credentials), &key).sign(SIGNED_FOR);
        let response = self.client.track("put", self.client.agent.put(url.as_str()).send(bytes))?;
        match response.status().as_u16() {
            200 | 201 | 204 => Ok(()),
            status => Err(self.client.unexpected("PUT", &key, status)),
        }
    }

    /// `If-None-Match: *` (AWS S3 since 2024, SeaweedFS, MinIO): 412 when
    /// the key exists. A store that ignores the header overwrites: then
    /// every replica that asks believes it created it.
    fn create(&self, kind: Kind, name: &str, bytes: &[u8]) -> Result<Option<Version>, StorageError> {
        let key = self.key(kind, name);
        let url = self.client.bucket.put_object(Some(&self.client.credentials), &key).sign(SIGNED_FOR);
        let response =
            self.client.track("put", self.client.agent.put(url.as_str()).header("If-None-Match", "*").send(bytes))?;
        match response.status().as_u16() {
            200 | 201 | 204 => Ok(Some(etag(&response))),
            // 409: another conditional write to the key is under way.
            412 | 409 => Ok(None),
            status => Err(self.client.unexpected("PUT (If-None-Match)", &key, status)),
        }
    }

    /// With `If-Match` on the version read; a store that does not check it
    /// removes whatever is there (a good copy put in the meantime is made
    /// again when asked for).
    fn remove(&self, kind: Kind, name: &str, version: &Version) -> Result<(), StorageError> {
        self.delete(&self.key(kind, name), Some(version))
    }

    fn list(&self, kind: Kind) -> Result<Vec<String>, StorageError> {
        Ok(self.list_folder(kind.folder())?.into_iter().map(|(name, _)| name).collect())
    }

    fn list_blobs(&self) -> Result<Vec<BlobEntry>, StorageError> {
        Ok(self
            .list_folder("blobs/sha256")?
            .into_iter()
            .filter_map(|(name, size)| {
                let digest = Digest::from_hex(&name).ok()?;
                // The bucket keeps no use times: the order is the listing's.
                Some(BlobEntry { digest, size, used: SystemTime::UNIX_EPOCH })
            })
            .collect())
    }

    fn open_blob(&self, digest: &Digest) -> Result<Option<Box<dyn BlobHandle>>, StorageError> {
        let key = self.blob_key(digest);
        let url = self.client.bucket.head_object(Some(&self.client.credentials), &key).sign(SIGNED_FOR);
        let response = self.client.call("head", self.client.agent.head(url.as_str()))?;
        match response.status().as_u16() {
            200 => {
                let size = response
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .ok_or_else(|| StorageError::Store(format!("HEAD {key} gives no size")))?;
                let version = etag(&response);
                Ok(Some(Box::new(S3Blob { client: self.client.clone(), key, size, version })))
            }
            404 => Ok(None),
            status => Err(self.client.unexpected("HEAD", &key, status)),
        }
    }

    fn put_blob(&self, digest: &Digest, staged: &Path) -> Result<Version, StorageError> {
        let key = self.blob_key(digest);
        let result = (|| {
            let mut file = File::open(staged)?;
            let size = file.metadata()?.len();
            if size > multipart::MULTIPART_ABOVE {
                return self.client.put_in_parts(&key, &mut file, size);
            }
            let url = self.client.bucket.put_object(Some(&self.client.credentials), &key).sign(SIGNED_FOR);
            let sent = self
                .client
                .agent
                .put(url.as_str())
                .header("Content-Length", size.to_string())
                .send(ureq::SendBody::from_reader(&mut file));
            let response = self.client.track("put", sent)?;
            match response.status().as_u16() {
                200 | 201 | 204 => Ok(etag(&response)),
                status => Err(self.client.unexpected("PUT", &key, status)),
            }
        })();
        let _ = std::fs::remove_file(staged);
        result
    }

    fn remove_blob(&self, digest: &Digest, at: Option<&Version>) -> Result<(), StorageError> {
        self.delete(&self.blob_key(digest), at)
    }

    fn staging_dir(&self) -> &Path {
        &self.staging
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn is_down(&self) -> bool {
        self.client.down.load(Ordering::Relaxed)
    }

    fn presign_blob(&self, digest: &Digest, valid_for: Duration) -> Option<String> {
        Some(self.client.get_url(&self.blob_key(digest), valid_for))
    }
}

/// A blob in the bucket as it was when its HEAD answered.
struct S3Blob {
    client: Arc<Client>,
    key: String,
    size: u64,
    version: Version,
}

impl BlobHandle for S3Blob {
    fn size(&self) -> u64 {
        self.size
    }

    fn version(&self) -> io::Result<Version> {
        Ok(self.version.clone())
    }

    /// A ranged GET pinned to the version: one replaced since is an error, not other bytes.
    fn read_range(&self, start: u64, end: u64) -> io::Result<Box<dyn Read + Send + '_>> {
        if start >= end {
            return Ok(Box::new(io::empty()));
        }
        let url = self.client.get_url(&self.key, SIGNED_FOR);
        let mut request = self.client.agent.get(&url).header("Range", format!("bytes={start}-{}", end - 1));
        if !self.version.0.is_empty() {
            request = request.header("If-Match", &self.version.0);
        }
        let response = self.client.track("get", request.call()).map_err(io::Error::other)?;
        match response.status().as_u16() {
            206 => {
                let reader = response.into_body().into_with_config().limit(u64::MAX).reader();
                Ok(Box::new(reader.take(end - start)))
            }
            status => Err(io::Error::other(format!("the store answers {status} to GET {} (range)", self.key))),
        }
    }
}
