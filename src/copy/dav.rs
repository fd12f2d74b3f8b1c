//! WebDAV uploads as one streamed PUT. OpenDAL's webdav writer takes a file in a single
//! write (the whole file in memory; a second write fails), so a 1 GiB slice could not be
//! sent; here the request body is fed from a bounded channel while the file is read, hashed
//! and paced, so memory stays at two chunks whatever the file size.

use std::time::Duration;

use super::backend::{Failure, Io, Sink};
use super::failure::{Retry, os_cause};
use crate::error::{Error, Result};

/// Chunks in flight between the file reader and the request body.
const IN_FLIGHT: usize = 2;

/// Where and as whom to PUT.
pub struct Dav {
    client: reqwest::Client,
    /// endpoint + root, without a trailing '/'.
    base: String,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
}

/// The body of one PUT, fed chunk by chunk; None once it ended.
pub struct Upload(Option<Request>);

struct Request {
    sender: tokio::sync::mpsc::Sender<std::result::Result<Vec<u8>, std::io::Error>>,
    request: tokio::task::JoinHandle<std::result::Result<reqwest::Response, reqwest::Error>>,
}

impl Dav {
    /// From the destination's resolved options (endpoint, root, username, password, token).
    pub fn new(options: &[(String, String)]) -> Result<Dav> {
        let get = |key: &str| {
            options
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let endpoint = get("endpoint")
            .ok_or_else(|| Error::Config("a webdav destination needs an endpoint".into()))?;
        let root = get("root").unwrap_or_default();
        let mut base = endpoint.trim_end_matches('/').to_owned();
        for segment in root.split('/').filter(|s| !s.is_empty()) {
            base.push('/');
            base.push_str(&encode(segment));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| Error::Failed(format!("cannot set up HTTP: {e}")))?;
        Ok(Dav {
            client,
            base,
            user: get("username"),
            password: get("password"),
            token: get("token"),
        })
    }

    fn url(&self, path: &str) -> String {
        let mut url = self.base.clone();
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            url.push('/');
            url.push_str(&encode(segment));
        }
        url
    }

    /// Whether the server takes the credentials: a refusal (401, 403) is named as such before
    /// anything else is asked (OpenDAL reports it as an unexpected error with the whole
    /// response). Anything else is left to the requests that follow.
    pub async fn check_access(&self) -> std::result::Result<(), Failure> {
        let method = reqwest::Method::from_bytes(b"PROPFIND").expect("a valid method");
        let mut request = self
            .client
            .request(method, format!("{}/", self.base))
            .header("Depth", "0");
        if let Some(user) = &self.user {
            request = request.basic_auth(user, self.password.as_ref());
        } else if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let Ok(response) = request.send().await else {
            return Ok(());
        };
        match response.status().as_u16() {
            401 | 403 => Err(Failure::other(
                Retry::Useless,
                format!(
                    "the server refused the user name or password (HTTP {}): check `username` and `password` (or `token`) of the destination",
                    response.status().as_u16()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Start a PUT of `size` bytes to `path`; feed it with `Upload::send`.
    pub fn start(&self, path: &str, size: u64) -> Upload {
        let (sender, receiver) = tokio::sync::mpsc::channel(IN_FLIGHT);
        let body = futures_util::stream::unfold(receiver, |mut r| async move {
            r.recv().await.map(|item| (item, r))
        });
        let mut request = self
            .client
            .put(self.url(path))
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(body));
        if let Some(user) = &self.user {
            request = request.basic_auth(user, self.password.as_ref());
        } else if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        Upload(Some(Request {
            sender,
            request: tokio::spawn(request.send()),
        }))
    }
}

impl Request {
    /// Hand one chunk to the request; waits while the server is not reading. Err when the
    /// request ended early.
    async fn send(&self, chunk: Vec<u8>) -> std::result::Result<(), ()> {
        self.sender.send(Ok(chunk)).await.map_err(|_| ())
    }

    /// Cut the request short: the server sees an incomplete body.
    fn abort(self) {
        let _ = self
            .sender
            .try_send(Err(std::io::Error::other("upload aborted")));
        self.request.abort();
    }

    /// End the body and wait for the server's answer.
    async fn finish(self) -> std::result::Result<(), Failure> {
        drop(self.sender);
        let answer = self
            .request
            .await
            .map_err(|e| Failure::other(Retry::Useless, format!("the upload task failed: {e}")))?;
        let response = answer.map_err(|e| request_failure(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let (retry, cause) = match status.as_u16() {
            401 | 403 => (
                Retry::Useless,
                "the server refused the credentials".to_owned(),
            ),
            404 | 409 => (
                Retry::Useless,
                "the folder does not exist on the server".to_owned(),
            ),
            413 => (
                Retry::Useless,
                "the server refuses a file this large".to_owned(),
            ),
            507 => (Retry::Useless, "the server's storage is full".to_owned()),
            429 => (Retry::Helps, "the server asks to slow down".to_owned()),
            s if s >= 500 => (Retry::Helps, format!("server error {status}")),
            _ => (Retry::Useless, format!("the server answered {status}")),
        };
        Err(Failure::other(retry, cause))
    }
}

impl Sink for Upload {
    fn write(&mut self, chunk: Vec<u8>) -> Io<'_, ()> {
        Box::pin(async move {
            let request = self.0.as_ref().expect("an upload under way");
            if request.send(chunk).await.is_ok() {
                return Ok(());
            }
            // The request ended early: its answer says why.
            let request = self.0.take().expect("an upload under way");
            Err(request.finish().await.err().unwrap_or_else(|| {
                Failure::other(Retry::Helps, "the server ended the upload early")
            }))
        })
    }

    fn close(&mut self) -> Io<'_, ()> {
        Box::pin(async move {
            match self.0.take() {
                Some(request) => request.finish().await,
                None => Ok(()),
            }
        })
    }

    fn abort(&mut self) -> Io<'_, ()> {
        if let Some(request) = self.0.take() {
            request.abort();
        }
        Box::pin(async { Ok(()) })
    }
}

/// A failed request, with its OS-level cause where there is one.
fn request_failure(e: &reqwest::Error) -> Failure {
    use std::error::Error as _;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && let Some((retry, text)) = os_cause(io)
        {
            return Failure::other(retry, text);
        }
        cause = c.source();
    }
    let retry = e.is_timeout() || e.is_request() || e.is_body();
    Failure::other(
        if retry { Retry::Helps } else { Retry::Useless },
        crate::secrets::mask(&format!("{e}")).into_owned(),
    )
}

/// Percent-encode one path segment (everything but RFC 3986's unreserved characters).
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_are_encoded_segment_by_segment() {
        let options = vec![
            ("endpoint".to_owned(), "http://h:1/".to_owned()),
            ("root".to_owned(), "/back ups/".to_owned()),
        ];
        let dav = super::Dav::new(&options).unwrap();
        assert_eq!(
            dav.url("docs/s_FULL.vol00+01.par2"),
            "http://h:1/back%20ups/docs/s_FULL.vol00%2B01.par2"
        );
    }
}
