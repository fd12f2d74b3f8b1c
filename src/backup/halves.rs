//! `dar -t` of a large archive as two halves side by side: dar tests on one core, and after a
//! FULL its test is the longest step left. One half is some subtrees (`-g`), the other is
//! everything but those same subtrees (`-P`), so together they test every entry whatever the
//! sizes below were; each reads the catalogue. The subtrees are chosen from the files dar
//! reported while it saved them, to give the halves about equal bytes. Only an archive that
//! was just written and still fits in memory is split: one read from a disk is faster than
//! two readers seeking against each other on it.

use std::collections::HashMap;

/// Below this many bytes saved one `dar -t` is short, and a second catalogue read would
/// cost about what the split saves.
const SPLIT_FROM: u64 = 256 << 20;
/// At most this many subtrees in the first half (each is an argument of both commands).
const MOST_SUBTREES: usize = 256;
/// At most this many second-level paths are counted (memory stays small for a folder of many
/// files; its paths beyond these stay with the folder's own total).
const MOST_SECOND_LEVEL: usize = 4096;

/// Bytes saved per top-level path of the source, and per path one level below.
#[derive(Default)]
pub struct Sizes {
    top: HashMap<String, u64>,
    second: HashMap<String, u64>,
    total: u64,
}

impl Sizes {
    /// dar saved `rel` (relative to the source), of `bytes`.
    pub fn add(&mut self, rel: &str, bytes: u64) {
        self.total += bytes;
        let mut parts = rel.splitn(3, '/');
        let Some(first) = parts.next().filter(|p| !p.is_empty()) else {
            return;
        };
        add_to(&mut self.top, first, bytes, usize::MAX);
        if let Some(second) = parts.next() {
            let path = &rel[..first.len() + 1 + second.len()];
            add_to(&mut self.second, path, bytes, MOST_SECOND_LEVEL);
        }
    }

    /// The subtrees of the first half, or None when one `dar -t` is as good: little data,
    /// more than half of `memory` (bytes the page cache can hold), or no subtrees that make a
    /// fair half.
    pub fn first_half(&self, memory: u64) -> Option<Vec<String>> {
        if self.total < SPLIT_FROM || self.total > memory / 2 {
            return None;
        }
        let mut candidates: Vec<(&str, u64)> =
            self.top.iter().map(|(p, n)| (p.as_str(), *n)).collect();
        // One folder holding most of the data: its own subtrees are the candidates.
        if let Some(&(big, bytes)) = candidates.iter().max_by_key(|c| c.1)
            && bytes > self.total / 5 * 3
        {
            let prefix = format!("{big}/");
            let below: Vec<(&str, u64)> = self
                .second
                .iter()
                .filter(|(p, _)| p.starts_with(&prefix))
                .map(|(p, n)| (p.as_str(), *n))
                .collect();
            if below.len() > 1 {
                candidates.retain(|c| c.0 != big);
                candidates.extend(below);
            }
        }
        // -P reads glob patterns and -g literal paths: only names that both read alike. A
        // tiny subtree would only lengthen both command lines.
        candidates.retain(|(p, n)| literal(p) && *n >= self.total / 100);
        candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let half = self.total / 2;
        let (mut chosen, mut bytes) = (Vec::new(), 0u64);
        for (path, n) in candidates {
            if chosen.len() == MOST_SUBTREES {
                break;
            }
            if bytes + n <= half + half / 10 {
                chosen.push(path.to_owned());
                bytes += n;
            }
        }
        (bytes >= self.total / 10 * 3).then_some(chosen)
    }
}

/// Count `bytes` for `key` (a new key only while there are fewer than `most`); no allocation
/// for a key already counted (dar reports a file at a time).
fn add_to(map: &mut HashMap<String, u64>, key: &str, bytes: u64, most: usize) {
    if let Some(n) = map.get_mut(key) {
        *n += bytes;
    } else if map.len() < most {
        map.insert(key.to_owned(), bytes);
    }
}

/// Bytes the system can give the page cache now (`MemAvailable`), 0 when unknown.
pub fn available_memory() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// A path that dar reads the same as a literal path (`-g`) and as a glob (`-P`).
fn literal(path: &str) -> bool {
    !path
        .chars()
        .any(|c| matches!(c, '*' | '?' | '[' | ']' | '\\') || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const MEMORY: u64 = 64 << 30;

    #[test]
    fn little_data_is_tested_whole() {
        let mut s = Sizes::default();
        s.add("a/x", 100 * MIB);
        s.add("b/y", 100 * MIB);
        assert_eq!(s.first_half(MEMORY), None);
    }

    #[test]
    fn top_level_folders_make_halves_of_about_equal_bytes() {
        let mut s = Sizes::default();
        s.add("video/a.m2ts", 600 * MIB);
        s.add("photos/1.jpg", 300 * MIB);
        s.add("documents/x.odt", 200 * MIB);
        s.add("music/y.flac", 100 * MIB);
        assert_eq!(s.first_half(MEMORY), Some(vec!["video".to_owned()]));
    }

    #[test]
    fn one_folder_with_most_of_the_data_is_split_below() {
        let mut s = Sizes::default();
        for year in 2015..2025 {
            s.add(&format!("Photos/{year}/img.CR2"), 100 * MIB);
        }
        s.add("notes.txt", MIB);
        let half = s.first_half(MEMORY).unwrap();
        let years = half.iter().filter(|p| p.starts_with("Photos/")).count();
        assert_eq!(years, 5, "{half:?}");
    }

    #[test]
    fn names_that_are_globs_stay_in_the_second_half() {
        let mut s = Sizes::default();
        s.add("big*/a", 700 * MIB);
        s.add("[odd]/b", 300 * MIB);
        s.add("plain/c", 400 * MIB);
        s.add("other/d", 300 * MIB);
        assert_eq!(
            s.first_half(MEMORY),
            Some(vec!["plain".to_owned(), "other".to_owned()])
        );
    }

    #[test]
    fn an_archive_the_page_cache_cannot_hold_is_tested_whole() {
        let mut s = Sizes::default();
        s.add("a/x", 3000 * MIB);
        s.add("b/y", 3000 * MIB);
        assert!(s.first_half(MEMORY).is_some());
        assert_eq!(s.first_half(8 << 30), None);
    }

    #[test]
    fn the_memory_available_is_read() {
        assert!(available_memory() > 0);
    }

    #[test]
    fn no_fair_half_means_one_test() {
        let mut s = Sizes::default();
        s.add("one-big-file.iso", 4000 * MIB);
        s.add("small/x", 10 * MIB);
        assert_eq!(s.first_half(MEMORY), None);
    }
}
