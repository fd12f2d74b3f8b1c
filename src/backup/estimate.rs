//! A quick estimate of the bytes `dar -c` will save, so that progress shows a total and a
//! time left: the sizes of the regular files under the source (under its included paths
//! when the definition names some); for a DIFF or an INCR only those changed since its base
//! was made. Filters and compression make it approximate. Bounded: a walk that takes longer
//! than two seconds gives up, and progress shows no total.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

const BUDGET: Duration = Duration::from_secs(2);

/// `since`: seconds since the epoch of the base set's creation.
pub fn bytes_to_save(source: &Path, include: &[String], since: Option<i64>) -> Option<u64> {
    let started = Instant::now();
    let roots: Vec<std::path::PathBuf> = match include {
        [] => vec![source.to_owned()],
        some => some.iter().map(|p| source.join(p)).collect(),
    };
    let mut total = 0u64;
    for root in roots {
        for (n, entry) in walkdir::WalkDir::new(root).into_iter().enumerate() {
            if n % 1024 == 0 && started.elapsed() > BUDGET {
                return None;
            }
            let Ok(entry) = entry else { continue };
            if !entry.file_type().is_file() {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if since.is_none_or(|t| meta.mtime() >= t || meta.ctime() >= t) {
                total += meta.len();
            }
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_files_under_the_source_and_only_changed_ones_since_a_base() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/one"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("two"), vec![0u8; 24]).unwrap();
        assert_eq!(bytes_to_save(dir.path(), &[], None), Some(1024));
        assert_eq!(bytes_to_save(dir.path(), &["a".into()], None), Some(1000));
        assert_eq!(bytes_to_save(dir.path(), &[], Some(i64::MAX)), Some(0));
    }
}
