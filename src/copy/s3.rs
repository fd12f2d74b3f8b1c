//! What OpenDAL's S3 service does not do: send each file with its SHA-256, which the server
//! checks against the bytes it receives and keeps (`x-amz-checksum-sha256`), and read that
//! checksum back with the object's size (a HEAD), so a copy is proven without downloading it;
//! upload each file of a set locked (Object Lock), check that the bucket locks, list an
//! object's older versions and bring one back by a copy on the server.
//! Requests are signed here (AWS Signature Version 4) with the destination's static keys.

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::backend::{Failure, Io, Kept, Sink};
use super::failure::Retry;
use super::streamed::{Streamed, encode, option, request_failure};

/// An S3 bucket, as the checksum requests reach it.
pub struct S3 {
    client: reqwest::Client,
    /// scheme://host[:port]
    endpoint: String,
    host: String,
    bucket: String,
    region: String,
    /// The root inside the bucket, without slashes at its ends ("" for the bucket's root).
    root: String,
    access_key: String,
    secret_key: String,
    virtual_host: bool,
    /// The storage class of every upload, if one is set.
    storage_class: Option<String>,
    /// The lock every file of a set is uploaded with, if one is set.
    lock: Option<Lock>,
    /// What the bucket keeps, once asked.
    keeping: std::sync::OnceLock<Keeping>,
    /// The longest a small request (a page of a listing, a HEAD) may take.
    stall: std::time::Duration,
}

/// The lock each file of a set gets when uploaded: its mode, and for how long.
#[derive(Debug, Clone)]
pub struct Lock {
    pub mode: crate::config::LockMode,
    pub retention: super::retention::LockSpan,
}

/// One version of an object, as the bucket lists them (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub id: String,
    /// The object's current version.
    pub latest: bool,
    /// A delete marker: the object was deleted (its older versions stay).
    pub deleted: bool,
}

/// What a bucket keeps: older versions, and locks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keeping {
    pub versions: bool,
    pub object_lock: bool,
}

impl S3 {
    /// From the destination's resolved options; None without static keys (credentials from
    /// the environment or an instance role are left to OpenDAL, without checksums).
    pub fn new(
        options: &[(String, String)],
        lock: Option<Lock>,
        stall: std::time::Duration,
    ) -> Option<S3> {
        let get = |key: &str| option(options, key);
        let region = get("region").unwrap_or_else(|| "us-east-1".into());
        let endpoint = get("endpoint")
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"))
            .trim_end_matches('/')
            .to_owned();
        let host = endpoint.split_once("://")?.1.split('/').next()?.to_owned();
        let virtual_host = get("enable_virtual_host_style").is_some_and(|v| v == "true");
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(20))
            .build()
            .ok()?;
        Some(S3 {
            client,
            endpoint,
            host,
            bucket: get("bucket")?,
            region,
            root: get("root").unwrap_or_default().trim_matches('/').to_owned(),
            access_key: get("access_key_id")?,
            secret_key: get("secret_access_key")?,
            virtual_host,
            storage_class: get("default_storage_class"),
            lock,
            keeping: std::sync::OnceLock::new(),
            stall,
        })
    }

    /// The request's host and path for the object at `path` (relative to the root).
    /// ("" for the bucket itself).
    fn target(&self, path: &str) -> (String, String) {
        let key: Vec<String> = match path {
            "" => Vec::new(),
            path => self.key(path).split('/').map(encode).collect(),
        };
        let key = key.join("/");
        match (self.virtual_host, key.as_str()) {
            (true, _) => (format!("{}.{}", self.bucket, self.host), format!("/{key}")),
            (false, "") => (self.host.clone(), format!("/{}", encode(&self.bucket))),
            (false, _) => (
                self.host.clone(),
                format!("/{}/{key}", encode(&self.bucket)),
            ),
        }
    }

    /// The object key of `path` (relative to the root).
    fn key(&self, path: &str) -> String {
        match self.root.as_str() {
            "" => path.trim_start_matches('/').to_owned(),
            root => format!("{root}/{}", path.trim_start_matches('/')),
        }
    }

    fn url(&self, host: &str, path: &str) -> String {
        let scheme = self.endpoint.split("://").next().unwrap_or("https");
        format!("{scheme}://{host}{path}")
    }

    /// A request to `path` signed with `headers` (lowercase names) among what it signs.
    fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: Vec<(&'static str, String)>,
    ) -> reqwest::RequestBuilder {
        self.signed_query(method, path, &[], headers)
    }

    /// The same with a query (`path` "" and a query: a request to the bucket itself).
    fn signed_query(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        mut headers: Vec<(&'static str, String)>,
    ) -> reqwest::RequestBuilder {
        let (host, uri) = self.target(path);
        let mut query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        query.sort();
        let query = query.join("&");
        let now = jiff::Timestamp::now();
        let amz_date = now.strftime("%Y%m%dT%H%M%SZ").to_string();
        let date = now.strftime("%Y%m%d").to_string();
        headers.push(("host", host.clone()));
        headers.push(("x-amz-content-sha256", "UNSIGNED-PAYLOAD".into()));
        headers.push(("x-amz-date", amz_date.clone()));
        headers.sort();
        let canonical_headers: String = headers
            .iter()
            .map(|(k, v)| format!("{k}:{}\n", v.trim()))
            .collect();
        let signed_headers: Vec<&str> = headers.iter().map(|(k, _)| *k).collect();
        let signed_headers = signed_headers.join(";");
        let canonical = format!(
            "{method}\n{uri}\n{query}\n{canonical_headers}\n{signed_headers}\nUNSIGNED-PAYLOAD"
        );
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            crate::hashing::hex(&Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac(
            format!("AWS4{}", self.secret_key).as_bytes(),
            date.as_bytes(),
        );
        for part in [self.region.as_str(), "s3", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let signature = crate::hashing::hex(&hmac(&key, to_sign.as_bytes()));
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key
        );
        let url = match query.as_str() {
            "" => self.url(&host, &uri),
            query => format!("{}?{query}", self.url(&host, &uri)),
        };
        let mut request = self.client.request(method, url);
        for (k, v) in headers.into_iter().filter(|(k, _)| *k != "host") {
            request = request.header(k, v);
        }
        request.header("authorization", authorization)
    }

    /// A PUT of `size` bytes whose SHA-256 is `sha256` (hex): the server refuses bytes that
    /// do not hash to it, and keeps it.
    pub fn put(&self, path: &str, size: u64, sha256: &str) -> Box<dyn Sink> {
        let mut headers = vec![
            ("content-length", size.to_string()),
            ("x-amz-checksum-sha256", base64_of_hex(sha256)),
        ];
        if let Some(class) = &self.storage_class {
            headers.push(("x-amz-storage-class", class.clone()));
        }
        headers.extend(self.lock_headers(path));
        let request = self.signed(reqwest::Method::PUT, path, headers);
        Box::new(Streamed::start(request, answer))
    }

    /// The headers that lock an object written now, if this copy locks them.
    fn lock_headers(&self, path: &str) -> Vec<(&'static str, String)> {
        let Some(lock) = &self.lock else {
            return Vec::new();
        };
        let until = lock.retention.until(path, jiff::Timestamp::now());
        vec![
            ("x-amz-object-lock-mode", lock.mode.as_s3().to_owned()),
            ("x-amz-object-lock-retain-until-date", s3_date(until)),
        ]
    }

    /// Whether this copy locks what it uploads.
    pub fn locks(&self) -> bool {
        self.lock.is_some()
    }

    /// Until when the file at `path` is due to be locked now, where this copy lengthens its
    /// locks while their sets are kept.
    pub fn lock_target(&self, path: &str) -> Option<jiff::Timestamp> {
        let lock = self.lock.as_ref().filter(|l| l.retention.renews())?;
        Some(lock.retention.until(path, jiff::Timestamp::now()))
    }

    /// Lock the object at `path` until the end its set is due now, where less than half of
    /// that is left (a lock is never shortened: the server would refuse it). When it is
    /// locked until.
    pub async fn renew_lock(&self, path: &str) -> Result<Option<jiff::Timestamp>, Failure> {
        let Some(lock) = &self.lock else {
            return Ok(None);
        };
        let until = lock.retention.until(path, jiff::Timestamp::now());
        let now_until = self.head(path, &[]).await?.locked_until;
        if let Some(now_until) = now_until
            && !super::retention::renewal_due(now_until, until, jiff::Timestamp::now())
        {
            return Ok(Some(now_until));
        }
        let xml = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            lock.mode.as_s3(),
            s3_date(until)
        );
        let headers = vec![
            ("content-length", xml.len().to_string()),
            (
                "x-amz-checksum-sha256",
                base64_of_hex(&crate::hashing::sha256_hex(xml.as_bytes())),
            ),
        ];
        let put = self.signed_query(reqwest::Method::PUT, path, &[("retention", "")], headers);
        let response = self.sent(put.body(xml)).await?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body = response.text().await.unwrap_or_default();
            let (retry, cause) = answer(status, &body);
            return Err(Failure::other(retry, cause));
        }
        Ok(Some(until))
    }

    /// `request` sent, with the stall deadline for the whole of it: its answer.
    async fn sent(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        request
            .timeout(self.stall)
            .send()
            .await
            .map_err(|e| request_failure(&e))
    }

    /// A small request to the bucket or one object, its answer's body (an error for any
    /// answer but success; `NotFound` for 404 when `path` names an object).
    async fn ask(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        headers: Vec<(&'static str, String)>,
    ) -> Result<String, Failure> {
        // Each page of a long listing has the stall deadline, not the listing.
        let response = self
            .sent(self.signed_query(method, path, query, headers))
            .await?;
        let status = response.status().as_u16();
        let body = response.text().await;
        if (200..300).contains(&status) {
            return body.map_err(|e| request_failure(&e));
        }
        let body = body.unwrap_or_default();
        match status {
            404 if !path.is_empty() && !body.contains("NoSuchBucket") => {
                Err(Failure::not_found(format!("{path}: not found")))
            }
            _ => {
                let (retry, cause) = answer(status, &body);
                Err(Failure::other(retry, cause))
            }
        }
    }

    /// Whether the bucket keeps (or kept: versioning suspended) older versions: else
    /// there is no history to list.
    pub async fn keeps_versions(&self) -> Result<bool, Failure> {
        match self.keeping().await {
            Ok(keeping) => Ok(keeping.versions),
            // Keys that may not ask (least privilege), a service without versions: no
            // history to use, and nothing else changes.
            Err(failure) if failure.retry == Retry::Useless => {
                if self.keeping.set(Keeping::default()).is_ok() {
                    tracing::warn!(
                        "cannot ask the bucket whether it keeps older versions ({}): its history is not used",
                        failure.cause
                    );
                }
                Ok(false)
            }
            Err(failure) => Err(failure),
        }
    }

    /// Whether the bucket keeps older versions and has object lock enabled (asked once).
    pub async fn keeping(&self) -> Result<Keeping, Failure> {
        if let Some(keeping) = self.keeping.get() {
            return Ok(*keeping);
        }
        let keeping = self.ask_keeping().await?;
        Ok(*self.keeping.get_or_init(|| keeping))
    }

    async fn ask_keeping(&self) -> Result<Keeping, Failure> {
        let get = reqwest::Method::GET;
        let versioning = self
            .ask(get.clone(), "", &[("versioning", "")], vec![])
            .await?;
        let versions = xml_record(&versioning, "VersioningConfiguration")?
            .and_then(|r| r.get("Status").cloned())
            .is_some_and(|s| s == "Enabled" || s == "Suspended");
        // A bucket without object lock answers this with an error.
        let object_lock = match self.ask(get, "", &[("object-lock", "")], vec![]).await {
            Ok(body) => xml_record(&body, "ObjectLockConfiguration")?
                .and_then(|r| r.get("ObjectLockEnabled").cloned())
                .is_some_and(|s| s == "Enabled"),
            Err(failure) if failure.retry == Retry::Helps => return Err(failure),
            Err(_) => false,
        };
        Ok(Keeping {
            versions,
            object_lock,
        })
    }

    /// The versions of the object at `path`, newest first (delete markers among them).
    pub async fn versions(&self, path: &str) -> Result<Vec<Version>, Failure> {
        if !self.keeps_versions().await? {
            return Ok(Vec::new());
        }
        let key = self.key(path);
        let mut listed = self.versions_under(&key).await?;
        listed.retain(|(k, _)| *k == key);
        Ok(listed.into_iter().map(|(_, v)| v).collect())
    }

    /// Every version of every object whose key starts with `prefix` (the root's included),
    /// with its key relative to the root; each object's newest first. Page by page.
    async fn versions_under(&self, prefix: &str) -> Result<Vec<(String, Version)>, Failure> {
        let mut found = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut query = vec![("versions", ""), ("prefix", prefix)];
            if let Some((key, version)) = &marker {
                query.push(("key-marker", key));
                query.push(("version-id-marker", version));
            }
            let body = self.ask(reqwest::Method::GET, "", &query, vec![]).await?;
            // In the answer's order: by key, each key's newest version first.
            for (tag, record) in xml_records(&body, &["Version", "DeleteMarker"])? {
                let (Some(key), Some(id)) = (record.get("Key"), record.get("VersionId")) else {
                    continue;
                };
                let version = Version {
                    id: id.clone(),
                    latest: record.get("IsLatest").is_some_and(|l| l == "true"),
                    deleted: tag == "DeleteMarker",
                };
                found.push((key.clone(), version));
            }
            let page = xml_record(&body, "ListVersionsResult")?.unwrap_or_default();
            if page.get("IsTruncated").is_none_or(|t| t != "true") {
                break;
            }
            let next = match (page.get("NextKeyMarker"), page.get("NextVersionIdMarker")) {
                (Some(key), Some(version)) => Some((key.clone(), version.clone())),
                _ => None,
            };
            if next.is_none() || next == marker {
                return Err(Failure::other(
                    Retry::Useless,
                    "the server's listing of versions does not say where its next page starts",
                ));
            }
            marker = next;
        }
        Ok(found)
    }

    /// The files under `dir` (relative to the root) whose current version is a delete
    /// marker and that keep an older version: deleted, and can be brought back.
    pub async fn deleted_under(&self, dir: &str) -> Result<Vec<String>, Failure> {
        let prefix = match dir.trim_matches('/') {
            "" => match self.root.as_str() {
                "" => String::new(),
                root => format!("{root}/"),
            },
            dir => format!("{}/", self.key(dir)),
        };
        if !self.keeps_versions().await? {
            return Ok(Vec::new());
        }
        let listed = self.versions_under(&prefix).await?;
        let mut deleted = Vec::new();
        for (key, versions) in listed.chunk_by(|a, b| a.0 == b.0).map(|c| (&c[0].0, c)) {
            let gone = versions.iter().any(|(_, v)| v.latest && v.deleted);
            let kept = versions.iter().any(|(_, v)| !v.deleted);
            if gone && kept {
                let relative = match self.root.as_str() {
                    "" => key.as_str(),
                    root => key.strip_prefix(&format!("{root}/")).unwrap_or(key),
                };
                deleted.push(relative.to_owned());
            }
        }
        Ok(deleted)
    }

    /// The size and kept SHA-256 of one version of the object at `path`.
    pub async fn stored_version(
        &self,
        path: &str,
        version: &str,
    ) -> Result<(u64, Option<Kept>), Failure> {
        let head = self.head(path, &[("versionId", version)]).await?;
        Ok((head.size, head.kept))
    }

    /// Start a multipart upload of `path` whose parts carry their SHA-256: its id.
    pub async fn start_parts(&self, path: &str) -> Result<String, Failure> {
        let mut headers = vec![("x-amz-checksum-algorithm", "SHA256".to_owned())];
        if let Some(class) = &self.storage_class {
            headers.push(("x-amz-storage-class", class.clone()));
        }
        headers.extend(self.lock_headers(path));
        let body = self
            .ask(reqwest::Method::POST, path, &[("uploads", "")], headers)
            .await?;
        xml_record(&body, "InitiateMultipartUploadResult")?
            .and_then(|r| r.get("UploadId").cloned())
            .ok_or_else(|| {
                Failure::other(Retry::Helps, "the server did not start the upload in parts")
            })
    }

    /// Part `number` of the upload `upload`, with its SHA-256: its ETag.
    pub async fn send_part(
        &self,
        path: &str,
        upload: &str,
        number: u32,
        bytes: Vec<u8>,
        digest: &[u8; 32],
    ) -> Result<String, Failure> {
        let number = number.to_string();
        let query = [("partNumber", number.as_str()), ("uploadId", upload)];
        let headers = vec![
            ("content-length", bytes.len().to_string()),
            (
                "x-amz-checksum-sha256",
                base64_of_hex(&crate::hashing::hex(digest)),
            ),
        ];
        let request = self.signed_query(reqwest::Method::PUT, path, &query, headers);
        let response = request
            .body(bytes)
            .send()
            .await
            .map_err(|e| request_failure(&e))?;
        let response = succeeded(response).await?;
        response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| Failure::other(Retry::Helps, "the server sent no ETag for a part"))
    }

    /// Complete the upload `upload` of these parts (number, ETag, SHA-256): the composite
    /// checksum the server says it keeps, if it says.
    pub async fn finish_parts(
        &self,
        path: &str,
        upload: &str,
        parts: &[(u32, String, [u8; 32])],
    ) -> Result<Option<String>, Failure> {
        let listed: String = parts
            .iter()
            .map(|(n, etag, digest)| {
                let etag = quick_xml::escape::escape(etag.as_str());
                let sha = base64_of_hex(&crate::hashing::hex(digest));
                format!("<Part><ChecksumSHA256>{sha}</ChecksumSHA256><ETag>{etag}</ETag><PartNumber>{n}</PartNumber></Part>")
            })
            .collect();
        let xml = format!("<CompleteMultipartUpload>{listed}</CompleteMultipartUpload>");
        let query = [("uploadId", upload)];
        let headers = vec![("content-length", xml.len().to_string())];
        let request = self.signed_query(reqwest::Method::POST, path, &query, headers);
        let response = request
            .body(xml)
            .send()
            .await
            .map_err(|e| request_failure(&e))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| request_failure(&e))?;
        // A completion can fail after its 200 has been sent: the body says so.
        if !(200..300).contains(&status) || body.contains("<Error>") {
            let (retry, cause) = answer(status.max(500), &body);
            return Err(Failure::other(retry, cause));
        }
        Ok(xml_record(&body, "CompleteMultipartUploadResult")?
            .and_then(|r| r.get("ChecksumSHA256").cloned()))
    }

    /// Give up the upload `upload`: its parts go.
    pub async fn drop_parts(&self, path: &str, upload: &str) -> Result<(), Failure> {
        let query = [("uploadId", upload)];
        self.ask(reqwest::Method::DELETE, path, &query, vec![])
            .await
            .map(|_| ())
    }

    /// The bytes `range` of `version` of the object at `path`.
    pub async fn read_version_range(
        &self,
        path: &str,
        version: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<u8>, Failure> {
        let headers = vec![(
            "range",
            format!("bytes={}-{}", range.start, range.end.saturating_sub(1)),
        )];
        let query = [("versionId", version)];
        let request = self.signed_query(reqwest::Method::GET, path, &query, headers);
        let response = request.send().await.map_err(|e| request_failure(&e))?;
        let response = succeeded(response).await?;
        let bytes = response.bytes().await.map_err(|e| request_failure(&e))?;
        Ok(bytes.to_vec())
    }

    /// Make `version` of the object at `path` its current one again: copied onto itself
    /// by the server (nothing downloaded), with its checksum, locked like any upload.
    pub async fn bring_back(&self, path: &str, version: &str) -> Result<(), Failure> {
        let (_, uri) = self.target(path);
        let source = match self.virtual_host {
            true => format!("/{}{uri}", encode(&self.bucket)),
            false => uri,
        };
        let mut headers = vec![
            (
                "x-amz-copy-source",
                format!("{source}?versionId={}", encode(version)),
            ),
            ("x-amz-checksum-algorithm", "SHA256".to_owned()),
        ];
        headers.extend(self.lock_headers(path));
        let body = self.ask(reqwest::Method::PUT, path, &[], headers).await?;
        // A copy can fail after its 200 has been sent: the body says so.
        match body.contains("<Error>") {
            true => Err(Failure::other(
                Retry::Helps,
                format!("the copy of {path} failed"),
            )),
            false => Ok(()),
        }
    }

    /// The object's size and the SHA-256 the server keeps for it (None when it keeps none:
    /// an object another tool uploaded); `NotFound` when there is no object.
    pub fn stored<'a>(&'a self, path: &'a str) -> Io<'a, (u64, Option<Kept>)> {
        Box::pin(async move { self.head(path, &[]).await.map(|h| (h.size, h.kept)) })
    }

    /// One HEAD of the object at `path` (`query` names a version): what the server says of it.
    async fn head(&self, path: &str, query: &[(&str, &str)]) -> Result<Head, Failure> {
        let headers = vec![("x-amz-checksum-mode", "ENABLED".to_owned())];
        let request = self.signed_query(reqwest::Method::HEAD, path, query, headers);
        let response = self.sent(request).await?;
        let status = response.status().as_u16();
        if status == 404 {
            return Err(Failure::not_found(format!("{path}: not found")));
        }
        if !response.status().is_success() {
            let (retry, cause) = answer(status, "");
            return Err(Failure::other(retry, cause));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok(Head {
            size: header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            kept: header("x-amz-checksum-sha256").and_then(|b| kept_of(&b)),
            locked_until: header("x-amz-object-lock-retain-until-date")
                .and_then(|v| v.parse::<jiff::Timestamp>().ok()),
        })
    }
}

/// What a HEAD of an object says of it.
struct Head {
    size: u64,
    /// The SHA-256 the server keeps (None when it keeps none: an object another tool uploaded).
    kept: Option<Kept>,
    /// The end of its lock, where it has one.
    locked_until: Option<jiff::Timestamp>,
}

/// One element of an S3 answer: the text of its child elements, by child name.
type Record = std::collections::HashMap<String, String>;

/// Every element named one of `tags` in an S3 answer, in the answer's order, with its tag;
/// an error for an answer that is not whole XML (cut short on the way).
fn xml_records(xml: &str, tags: &[&str]) -> Result<Vec<(String, Record)>, Failure> {
    use quick_xml::events::Event;
    let cut = || {
        Failure::other(
            Retry::Helps,
            "the server's answer is not whole XML (cut short on the way?)",
        )
    };
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut records = Vec::new();
    let mut record: Option<(String, Record)> = None;
    let mut child: Option<String> = None;
    loop {
        match reader.read_event().map_err(|_| cut())? {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_owned();
                match &record {
                    None if tags.contains(&name.as_str()) => {
                        record = Some((name, Record::new()));
                    }
                    Some(_) => child = Some(name),
                    None => {}
                }
            }
            Event::Text(t) => {
                if let (Some((_, record)), Some(child)) = (&mut record, &child) {
                    let text = t.xml10_content().into_owned();
                    record.entry(child.clone()).or_default().push_str(&text);
                }
            }
            Event::GeneralRef(r) => {
                if let (Some((_, record)), Some(child)) = (&mut record, &child) {
                    let text = match (r.resolve_char_ref(), &*r) {
                        (Ok(Some(c)), _) => c.to_string(),
                        (_, name) => quick_xml::escape::resolve_predefined_entity(name)
                            .unwrap_or_default()
                            .to_owned(),
                    };
                    record.entry(child.clone()).or_default().push_str(&text);
                }
            }
            Event::End(e) => {
                let name = e.local_name().as_ref().to_owned();
                if record.as_ref().is_some_and(|(tag, _)| *tag == name) {
                    records.extend(record.take());
                }
                child = None;
            }
            Event::Eof if record.is_some() => return Err(cut()),
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(records)
}

/// The first element named `tag` of an S3 answer.
fn xml_record(xml: &str, tag: &str) -> Result<Option<Record>, Failure> {
    Ok(xml_records(xml, &[tag])?.into_iter().next().map(|(_, r)| r))
}

/// `response` when it says the request succeeded; else what its status and body mean.
async fn succeeded(response: reqwest::Response) -> Result<reqwest::Response, Failure> {
    let status = response.status().as_u16();
    if response.status().is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let (retry, cause) = answer(status, &body);
    Err(Failure::other(retry, cause))
}

/// What an S3 answer's status means.
fn answer(status: u16, body: &str) -> (Retry, String) {
    let code = body
        .split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split("</Code>").next())
        .unwrap_or("");
    match (status, code) {
        (400, "BadDigest" | "InvalidDigest" | "XAmzContentChecksumMismatch") => (
            Retry::Helps,
            "the server refused the bytes: their SHA-256 is not the manifest's (changed on the way; sent again)".into(),
        ),
        (403, _) => (
            Retry::Useless,
            "access denied: check the credentials and their rights".into(),
        ),
        (404, "NoSuchBucket") => (Retry::Useless, "no such bucket".into()),
        (429, _) | (503, "SlowDown") => (Retry::Helps, "the service asks to slow down".into()),
        (501, _) => (
            Retry::Useless,
            "the service does not implement this request".into(),
        ),
        (s, _) if s >= 500 => (Retry::Helps, format!("server error {s}")),
        (s, "") => (Retry::Useless, format!("the server answered {s}")),
        (s, code) => (Retry::Useless, format!("the server answered {s} ({code})")),
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// A time as S3 takes it in a lock.
fn s3_date(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The checksum an S3 server shows: a whole file's SHA-256, or the composite of a file sent
/// in parts ("<base64>-<count>").
fn kept_of(text: &str) -> Option<Kept> {
    let text = text.trim();
    match text.rsplit_once('-') {
        Some((_, count)) if count.parse::<u32>().is_ok() => Some(Kept::Composite(text.to_owned())),
        _ => hex_of_base64(text).map(Kept::Sha256),
    }
}

/// The base64 of the bytes a hex string spells (the form S3 wants checksums in).
fn base64_of_hex(hex: &str) -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The hex of base64 text; None when it is not base64.
fn hex_of_base64(text: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    Some(crate::hashing::hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_of_versions_is_read_record_by_record() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>
<Prefix>r/a&amp;b.dar</Prefix>
<DeleteMarker><Key>r/a&amp;b.dar</Key><VersionId>3</VersionId><IsLatest>true</IsLatest><LastModified>2026-12-07T10:00:02Z</LastModified></DeleteMarker>
<Version><Key>r/a&amp;b.dar</Key><VersionId>2</VersionId><IsLatest>false</IsLatest><LastModified>2026-12-07T10:00:01Z</LastModified><Size>5</Size></Version>
<Version><Key>r/a&#38;b.dar.par2</Key><VersionId>1</VersionId><IsLatest>true</IsLatest><LastModified>2026-12-07T10:00:00Z</LastModified></Version>
</ListVersionsResult>"#;
        let records = xml_records(xml, &["Version", "DeleteMarker"]).unwrap();
        let tags: Vec<&str> = records.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(tags, ["DeleteMarker", "Version", "Version"], "in order");
        let (_, marker) = &records[0];
        assert_eq!(marker["IsLatest"], "true");
        let (_, version) = &records[1];
        assert_eq!(version["Key"], "r/a&b.dar");
        assert_eq!(version["VersionId"], "2");
        assert_eq!(records[2].1["Key"], "r/a&b.dar.par2");
        // The name of the listing is no record's.
        assert!(records.iter().all(|(_, v)| !v.contains_key("Name")));
        // An answer cut short is not taken for a whole one.
        let cut = &xml[..xml.find("<Version>").unwrap() + 20];
        assert!(xml_records(cut, &["Version", "DeleteMarker"]).is_err());
    }

    #[test]
    fn checksums_go_to_base64_and_back() {
        let sha = crate::hashing::sha256_hex(b"darvault");
        let b64 = base64_of_hex(&sha);
        assert_eq!(b64.len(), 44);
        assert!(b64.ends_with('='));
        assert_eq!(hex_of_base64(&b64).as_deref(), Some(sha.as_str()));
        // A known value: SHA-256 of "" in base64.
        let empty = crate::hashing::sha256_hex(b"");
        assert_eq!(
            base64_of_hex(&empty),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    /// The signing key of AWS's own example (Signature Version 4, "deriving the signing key").
    #[test]
    fn the_signing_key_is_derived_as_aws_documents() {
        let mut key = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", b"20120215");
        for part in ["us-east-1", "iam", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        assert_eq!(
            crate::hashing::hex(&key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }
}
