//! A file sent as the body of one HTTP request, fed chunk by chunk from a bounded channel
//! while the file is read, hashed and paced: memory stays at two chunks whatever the file's
//! size. WebDAV's uploads (`dav`) and S3's uploads with their SHA-256 (`s3`) are sent so.

use super::backend::{Failure, Io, Sink};
use super::failure::{Retry, os_cause};

/// Chunks in flight between the file reader and the request body.
const IN_FLIGHT: usize = 2;

/// What an answer's status means, for one service.
pub type Answer = fn(status: u16, body: &str) -> (Retry, String);

/// A request whose body is being sent; None once it ended.
pub struct Streamed {
    request: Option<Request>,
    answer: Answer,
}

struct Request {
    sender: tokio::sync::mpsc::Sender<std::result::Result<Vec<u8>, std::io::Error>>,
    sent: tokio::task::JoinHandle<std::result::Result<reqwest::Response, reqwest::Error>>,
}

impl Streamed {
    /// Send `request` (its headers set, Content-Length among them) with the body to come;
    /// its answer is read with `answer`.
    pub fn start(request: reqwest::RequestBuilder, answer: Answer) -> Streamed {
        let (sender, receiver) = tokio::sync::mpsc::channel(IN_FLIGHT);
        let body = futures_util::stream::unfold(receiver, |mut r| async move {
            r.recv().await.map(|item| (item, r))
        });
        let request = request.body(reqwest::Body::wrap_stream(body));
        Streamed {
            request: Some(Request {
                sender,
                sent: tokio::spawn(request.send()),
            }),
            answer,
        }
    }
}

impl Request {
    /// Cut the request short: the server sees an incomplete body.
    fn abort(self) {
        let _ = self
            .sender
            .try_send(Err(std::io::Error::other("upload aborted")));
        self.sent.abort();
    }

    /// End the body and wait for the server's answer.
    async fn finish(self, answer: Answer) -> std::result::Result<(), Failure> {
        drop(self.sender);
        let sent = self
            .sent
            .await
            .map_err(|e| Failure::other(Retry::Useless, format!("the upload task failed: {e}")))?;
        let response = sent.map_err(|e| request_failure(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        let (retry, cause) = answer(status.as_u16(), &body);
        Err(Failure::other(retry, cause))
    }
}

impl Sink for Streamed {
    fn write(&mut self, chunk: Vec<u8>) -> Io<'_, ()> {
        Box::pin(async move {
            let request = self.request.as_ref().expect("an upload under way");
            if request.sender.send(Ok(chunk)).await.is_ok() {
                return Ok(());
            }
            // The request ended early: its answer says why.
            let request = self.request.take().expect("an upload under way");
            Err(request.finish(self.answer).await.err().unwrap_or_else(|| {
                Failure::other(Retry::Helps, "the server ended the upload early")
            }))
        })
    }

    fn close(&mut self) -> Io<'_, ()> {
        Box::pin(async move {
            match self.request.take() {
                Some(request) => request.finish(self.answer).await,
                None => Ok(()),
            }
        })
    }

    fn abort(&mut self) -> Io<'_, ()> {
        if let Some(request) = self.request.take() {
            request.abort();
        }
        Box::pin(async { Ok(()) })
    }
}

/// A failed request, with its OS-level cause where there is one.
pub fn request_failure(e: &reqwest::Error) -> Failure {
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

/// The value of `key` among a destination's resolved options.
pub fn option(options: &[(String, String)], key: &str) -> Option<String> {
    options
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

/// Percent-encode one path segment (everything but RFC 3986's unreserved characters), as
/// WebDAV and S3's signatures want it.
pub fn encode(segment: &str) -> String {
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
