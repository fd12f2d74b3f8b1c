//! The checksum S3 keeps of a file sent in parts: the SHA-256 of the parts' SHA-256 digests
//! one after another, in base64, then "-" and their count.

use sha2::{Digest, Sha256};

/// The composite checksum of parts with these SHA-256 digests, as S3 shows it: base64 of
/// the SHA-256 of the digests one after another, then "-" and the count.
pub fn composite(digests: &[[u8; 32]]) -> String {
    use base64::Engine as _;
    let mut all = Sha256::new();
    for digest in digests {
        all.update(digest);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(all.finalize());
    format!("{b64}-{}", digests.len())
}

/// The composite checksum of parts with these SHA-256 digests (hex, as a manifest records
/// them); None when one is not a SHA-256.
pub fn composite_of(digests: &[String]) -> Option<String> {
    let bytes: Option<Vec<[u8; 32]>> = digests
        .iter()
        .map(|hex| {
            let mut digest = [0u8; 32];
            for (i, byte) in digest.iter_mut().enumerate() {
                *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            (hex.len() == 64).then_some(digest)
        })
        .collect();
    Some(composite(&bytes?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_composite_checksum_is_the_one_s3_documents() {
        // Three parts of 5 MiB of "A", "B" and "C" (an example of the S3 test suite).
        let digests: Vec<[u8; 32]> = [b'A', b'B', b'C']
            .iter()
            .map(|&b| Sha256::digest(vec![b; 5 << 20]).into())
            .collect();
        assert_eq!(
            composite(&digests),
            "uWBwpe1dxI4Vw8Gf0X9ynOdw/SS6VBzfWm9giiv1sf4=-3"
        );
        let hex: Vec<String> = digests.iter().map(|d| crate::hashing::hex(d)).collect();
        assert_eq!(composite_of(&hex), Some(composite(&digests)));
        assert_eq!(composite_of(&["zz".repeat(32)]), None);
    }
}
