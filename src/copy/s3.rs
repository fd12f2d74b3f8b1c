//! What OpenDAL's S3 service does not do: send each file with its SHA-256, which the server
//! checks against the bytes it receives and keeps (`x-amz-checksum-sha256`), and read that
//! checksum back with the object's size (a HEAD), so a copy is proven without downloading it.
//! Requests are signed here (AWS Signature Version 4) with the destination's static keys.

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::backend::{Failure, Io, Sink};
use super::failure::Retry;
use super::streamed::{Streamed, encode, option, request_failure};

/// The largest object one PUT may carry.
pub const SINGLE_PUT_MAX: u64 = 5 << 30;

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
}

impl S3 {
    /// From the destination's resolved options; None without static keys (credentials from
    /// the environment or an instance role are left to OpenDAL, without checksums).
    pub fn new(options: &[(String, String)]) -> Option<S3> {
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
        })
    }

    /// The request's host and path for the object at `path` (relative to the root).
    fn target(&self, path: &str) -> (String, String) {
        let key = match self.root.as_str() {
            "" => path.trim_start_matches('/').to_owned(),
            root => format!("{root}/{}", path.trim_start_matches('/')),
        };
        let key: Vec<String> = key.split('/').map(encode).collect();
        let key = key.join("/");
        match self.virtual_host {
            true => (format!("{}.{}", self.bucket, self.host), format!("/{key}")),
            false => (
                self.host.clone(),
                format!("/{}/{key}", encode(&self.bucket)),
            ),
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
        mut headers: Vec<(&'static str, String)>,
    ) -> reqwest::RequestBuilder {
        let (host, uri) = self.target(path);
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
        let canonical =
            format!("{method}\n{uri}\n\n{canonical_headers}\n{signed_headers}\nUNSIGNED-PAYLOAD");
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
        let mut request = self.client.request(method, self.url(&host, &uri));
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
        let request = self.signed(reqwest::Method::PUT, path, headers);
        Box::new(Streamed::start(request, answer))
    }

    /// The object's size and the SHA-256 the server keeps for it (None when it keeps none:
    /// an object another tool uploaded); `NotFound` when there is no object.
    pub fn stored<'a>(&'a self, path: &'a str) -> Io<'a, (u64, Option<String>)> {
        Box::pin(async move {
            let headers = vec![("x-amz-checksum-mode", "ENABLED".to_owned())];
            let request = self.signed(reqwest::Method::HEAD, path, headers);
            let response = request.send().await.map_err(|e| request_failure(&e))?;
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
            let size = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let sha256 = header("x-amz-checksum-sha256").and_then(|b| hex_of_base64(&b));
            Ok((size, sha256))
        })
    }
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
