//! A file above the single-PUT limit sent to S3 in parts, each with its SHA-256
//! (`x-amz-checksum-sha256`), which the server checks as it receives the part: bytes changed
//! on the way are refused part by part, as a whole file's are. The server keeps the
//! composite checksum S3 defines (the SHA-256 of the parts' digests, then "-" and their
//! count). Parts are held in memory one at a time ([`part_size`]).

use sha2::{Digest, Sha256};

use super::composite::composite;

use super::backend::{Failure, Io, Sink};
use super::failure::Retry;
use super::s3::S3;

use crate::set::manifest::MOST_PARTS;
pub use crate::set::manifest::parts_for;

/// Whether S3 takes a file of `size` bytes in parts of `part` bytes (5 MiB to 5 GiB each,
/// 10,000 at most).
pub fn allowed(size: u64, part: u64) -> bool {
    (5 << 20..=5 << 30).contains(&part) && size.div_ceil(part) <= MOST_PARTS
}

/// A multipart upload under way.
pub struct Parts<'a> {
    s3: &'a S3,
    path: &'a str,
    part: u64,
    upload: Option<String>,
    held: Vec<u8>,
    sent: Vec<(u32, String, [u8; 32])>,
}

impl<'a> Parts<'a> {
    /// An upload of `path` in parts of `part` bytes.
    pub fn new(s3: &'a S3, path: &'a str, part: u64) -> Parts<'a> {
        Parts {
            s3,
            path,
            part,
            upload: None,
            held: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// Send the part held (started on the first one).
    async fn send_held(&mut self) -> Result<(), Failure> {
        let upload = match &self.upload {
            Some(upload) => upload.clone(),
            None => {
                let upload = self.s3.start_parts(self.path).await?;
                self.upload = Some(upload.clone());
                upload
            }
        };
        let bytes = std::mem::take(&mut self.held);
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let number = self.sent.len() as u32 + 1;
        let etag = self
            .s3
            .send_part(self.path, &upload, number, bytes, &digest)
            .await?;
        self.sent.push((number, etag, digest));
        Ok(())
    }
}

impl Sink for Parts<'_> {
    fn write(&mut self, chunk: Vec<u8>) -> Io<'_, ()> {
        Box::pin(async move {
            self.held.extend_from_slice(&chunk);
            while self.held.len() as u64 >= self.part {
                let rest = self.held.split_off(self.part as usize);
                self.send_held().await?;
                self.held = rest;
            }
            Ok(())
        })
    }

    fn close(&mut self) -> Io<'_, ()> {
        Box::pin(async move {
            if !self.held.is_empty() || self.sent.is_empty() {
                self.send_held().await?;
            }
            let upload = self.upload.clone().expect("started by its first part");
            let digests: Vec<[u8; 32]> = self.sent.iter().map(|(_, _, d)| *d).collect();
            let kept = self.s3.finish_parts(self.path, &upload, &self.sent).await?;
            // What the server says it keeps must be what was sent.
            match kept {
                Some(kept) if kept != composite(&digests) => Err(Failure::other(
                    Retry::Helps,
                    format!(
                        "{}: the server keeps another checksum than the parts sent",
                        self.path
                    ),
                )),
                _ => Ok(()),
            }
        })
    }

    fn abort(&mut self) -> Io<'_, ()> {
        Box::pin(async move {
            if let Some(upload) = self.upload.take() {
                let _ = self.s3.drop_parts(self.path, &upload).await;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_big_enough_and_few_enough() {
        let part = |size| crate::set::manifest::part_size(size);
        assert_eq!(part(6 << 30), 16 << 20);
        let huge = 1u64 << 40;
        assert!(huge.div_ceil(part(huge)) <= MOST_PARTS);
        assert!(allowed(huge, part(huge)) && allowed(6 << 30, part(6 << 30)));
        assert_eq!(part(huge) % (1 << 20), 0);
    }
}
