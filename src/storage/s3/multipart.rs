//! Large blobs go up to the bucket in parts (S3 multipart upload): one PUT
//! is refused above 5 GiB, and a failed one starts again from zero. Each
//! part is read from the staged file when it is sent (memory stays bounded
//! whatever the blob's size) and sent again on a transport error or a 5xx.
//! The object appears only when the upload is completed; an upload that
//! fails is aborted, so no parts are left behind (and billed).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use rusty_s3::actions::CreateMultipartUpload;
use rusty_s3::S3Action;

use super::{etag, store_error, Client, SIGNED_FOR};
use crate::storage::{StorageError, Version};

/// Blobs larger than this go up in parts; smaller ones in one PUT.
pub const MULTIPART_ABOVE: u64 = 64 << 20;
/// The size of every part but the last (S3: at least 5 MiB), unless the
/// blob needs more than [`MAX_PARTS`] of them.
const PART_SIZE: u64 = 16 << 20;
/// S3's limit on the parts of one upload.
const MAX_PARTS: u64 = 10_000;
// S3's minimum part is 5 MiB (except the last one); a blob in parts has two at least.
const _: () = assert!(PART_SIZE >= 5 << 20 && MULTIPART_ABOVE > PART_SIZE);
/// Tries of each request of an upload before it is given up.
const ATTEMPTS: u32 = 4;
/// The answers to create and complete are a few hundred bytes.
const ANSWER_LIMIT: u64 = 1 << 20;

/// The part size for a blob of `size` bytes: [`PART_SIZE`], or whole MiBs
/// enough to stay within [`MAX_PARTS`].
pub fn part_size(size: u64) -> u64 {
    PART_SIZE.max(size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20))
}

impl Client {
    /// Uploads the `size` bytes of `file` as `key` in parts; the ETag of
    /// the object, as HEAD gives it. On failure the upload is aborted.
    pub(super) fn put_in_parts(&self, key: &str, file: &mut File, size: u64) -> Result<Version, StorageError> {
        let upload_id = self.create_upload(key)?;
        let result =
            self.upload_parts(key, &upload_id, file, size).and_then(|etags| self.complete(key, &upload_id, &etags));
        if let Err(err) = &result {
            log::warn!("uploading {key} in parts failed ({err}): aborting the upload");
            if let Err(err) = self.abort(key, &upload_id) {
                log::warn!("cannot abort the upload {upload_id} of {key} ({err}): its parts stay until a lifecycle rule removes them");
            }
        }
        result
    }

    fn create_upload(&self, key: &str) -> Result<String, StorageError> {
        let url = CreateMultipartUpload::new(&self.bucket, Some(&self.credentials), key).sign(SIGNED_FOR);
        let mut response = self.retried("create_multipart", "POST (create upload)", key, is_success, || {
            self.agent.post(url.as_str()).send_empty()
        })?;
        let text = response.body_mut().with_config().limit(ANSWER_LIMIT).read_to_string().map_err(store_error)?;
        let created = CreateMultipartUpload::parse_response(&text)
            .map_err(|e| StorageError::Store(format!("an unreadable answer to creating an upload of {key}: {e}")))?;
        Ok(created.upload_id().to_string())
    }

    /// Sends the parts one after the other: their ETags, in order.
    fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        file: &mut File,
        size: u64,
    ) -> Result<Vec<String>, StorageError> {
        let part_size = part_size(size);
        let mut etags = Vec::new();
        for (index, offset) in (0..size).step_by(part_size as usize).enumerate() {
            let number = u16::try_from(index + 1).expect("at most 10,000 parts");
            let length = part_size.min(size - offset);
            let url = self.bucket.upload_part(Some(&self.credentials), key, number, upload_id).sign(SIGNED_FOR);
            let response = self.retried("upload_part", "PUT (part)", key, is_success, || {
                file.seek(SeekFrom::Start(offset)).map_err(ureq::Error::Io)?;
                self.agent
                    .put(url.as_str())
                    .header("Content-Length", length.to_string())
                    .send(ureq::SendBody::from_reader(&mut Read::by_ref(file).take(length)))
            })?;
            let Version(etag) = etag(&response);
            if etag.is_empty() {
                return Err(StorageError::Store(format!("the store gives no ETag for part {number} of {key}")));
            }
            etags.push(etag);
        }
        Ok(etags)
    }

    fn complete(&self, key: &str, upload_id: &str, etags: &[String]) -> Result<Version, StorageError> {
        let action = self.bucket.complete_multipart_upload(
            Some(&self.credentials),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNED_FOR);
        let body = action.body();
        let mut response = self.retried("complete_multipart", "POST (complete upload)", key, is_success, || {
            self.agent.post(url.as_str()).send(body.as_bytes())
        })?;
        // A 200 may still carry an error (S3 answers before it has joined the parts).
        let text = response.body_mut().with_config().limit(ANSWER_LIMIT).read_to_string().map_err(store_error)?;
        if text.contains("<Error>") {
            let code = xml_element(&text, "Code").unwrap_or_default();
            return Err(StorageError::Store(format!("the store did not complete the upload of {key}: {code}")));
        }
        Ok(Version(xml_element(&text, "ETag").map(quoted).unwrap_or_default()))
    }

    fn abort(&self, key: &str, upload_id: &str) -> Result<(), StorageError> {
        let url = self.bucket.abort_multipart_upload(Some(&self.credentials), key, upload_id).sign(SIGNED_FOR);
        // 404: gone already.
        let done = |status: u16| is_success(status) || status == 404;
        self.retried("abort_multipart", "DELETE (abort upload)", key, done, || self.agent.delete(url.as_str()).call())
            .map(drop)
    }

    /// Sends a request `op` up to [`ATTEMPTS`] times, while it cannot reach
    /// the store or gets a 5xx; an answer `done` accepts, or the error.
    fn retried(
        &self,
        op: &'static str,
        method: &str,
        key: &str,
        done: fn(u16) -> bool,
        mut send: impl FnMut() -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>, StorageError> {
        let mut attempt = 1;
        loop {
            let error = match self.track(op, send()) {
                Ok(response) if done(response.status().as_u16()) => return Ok(response),
                Ok(response) => self.unexpected(method, key, response.status().as_u16()),
                Err(err) => err,
            };
            if attempt == ATTEMPTS || !matches!(error, StorageError::Unavailable(_)) {
                return Err(error);
            }
            std::thread::sleep(Duration::from_secs(1 << (attempt - 1)));
            attempt += 1;
        }
    }
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// The text of the first `<name>` element of `xml`, its entities replaced.
fn xml_element(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    let text = &xml[start..end];
    Some(text.replace("&quot;", "\"").replace("&#34;", "\"").replace("&amp;", "&"))
}

/// An ETag as HEAD gives it: in double quotes.
fn quoted(etag: String) -> String {
    if etag.starts_with('"') {
        etag
    } else {
        format!("\"{etag}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_16_mib_until_a_blob_needs_more_than_10000() {
        assert_eq!(part_size(MULTIPART_ABOVE + 1), 16 << 20);
        assert_eq!(part_size(10_000 * (16 << 20)), 16 << 20);
        let huge = 10_000 * (16 << 20) + 1;
        assert_eq!(part_size(huge), 17 << 20);
        let five_tib = 5u64 << 40;
        let size = part_size(five_tib);
        assert!(five_tib.div_ceil(size) <= MAX_PARTS && size % (1 << 20) == 0, "{size}");
        assert_eq!(size, 525 << 20, "the README's figure");
    }

    #[test]
    fn the_etag_of_a_completed_upload_is_read_as_head_gives_it() {
        let answer = r#"<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Location>http://s/b/k</Location><Bucket>b</Bucket><Key>k</Key><ETag>&#34;3858f62230ac3c915f300c664312c11f-9&#34;</ETag></CompleteMultipartUploadResult>"#;
        assert_eq!(xml_element(answer, "ETag").map(quoted).unwrap(), "\"3858f62230ac3c915f300c664312c11f-9\"");
        let aws = "<CompleteMultipartUploadResult><ETag>&quot;abc-2&quot;</ETag></CompleteMultipartUploadResult>";
        assert_eq!(xml_element(aws, "ETag").map(quoted).unwrap(), "\"abc-2\"");
        assert_eq!(xml_element("<R><ETag>abc-2</ETag></R>", "ETag").map(quoted).unwrap(), "\"abc-2\"");
        let error = "<Error><Code>InvalidPart</Code><Message>m</Message></Error>";
        assert_eq!(xml_element(error, "Code").unwrap(), "InvalidPart");
    }
}
