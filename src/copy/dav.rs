//! WebDAV uploads as one streamed PUT (`streamed`). OpenDAL's webdav writer takes a file in
//! a single write (the whole file in memory; a second write fails), so a 1 GiB slice could
//! not be sent.

use std::time::Duration;

use super::backend::Failure;
use super::failure::Retry;
use super::streamed::{Streamed, encode, option};
use crate::error::{Error, Result};

/// Where and as whom to PUT.
pub struct Dav {
    client: reqwest::Client,
    /// endpoint + root, without a trailing '/'.
    base: String,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
}

impl Dav {
    /// From the destination's resolved options (endpoint, root, username, password, token).
    pub fn new(options: &[(String, String)]) -> Result<Dav> {
        let get = |key: &str| option(options, key);
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

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if let Some(user) = &self.user {
            request.basic_auth(user, self.password.as_ref())
        } else if let Some(token) = &self.token {
            request.bearer_auth(token)
        } else {
            request
        }
    }

    /// Whether the server takes the credentials: a refusal (401, 403) is named as such before
    /// anything else is asked (OpenDAL reports it as an unexpected error with the whole
    /// response). Anything else is left to the requests that follow.
    pub async fn check_access(&self) -> std::result::Result<(), Failure> {
        let method = reqwest::Method::from_bytes(b"PROPFIND").expect("a valid method");
        let request = self
            .client
            .request(method, format!("{}/", self.base))
            .header("Depth", "0");
        let Ok(response) = self.authorized(request).send().await else {
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

    /// Start a PUT of `size` bytes to `path`, fed chunk by chunk.
    pub fn start(&self, path: &str, size: u64) -> Streamed {
        let request = self
            .client
            .put(self.url(path))
            .header(reqwest::header::CONTENT_LENGTH, size);
        Streamed::start(self.authorized(request), answer)
    }
}

/// What a WebDAV server's answer to a PUT means.
fn answer(status: u16, _body: &str) -> (Retry, String) {
    match status {
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
        s if s >= 500 => (Retry::Helps, format!("server error {s}")),
        s => (Retry::Useless, format!("the server answered {s}")),
    }
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
