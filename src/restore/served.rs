//! A set's slices served to dar through pipes (see `tools::dar_pipes`): each block dar reads
//! is read from the copy and proven by the set's PAR2 index first, so a restore of a few
//! files reads a few MiB of a set of 1 GiB slices instead of proving every slice it opens
//! whole.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use super::Fetch;
use crate::copy::{FoundSet, Store};
use crate::error::{Error, Result};
use crate::set::par2_index::BlockSums;
use crate::tools::dar_pipes::SliceReader;

/// Proven blocks kept: dar reads a file's data in pieces of 64 KiB, each block of 1 MiB is
/// then read once; a few more for the catalogue and headers it goes back to.
const KEPT: usize = 8;

struct Slice {
    /// Its path on the copy.
    stored: String,
    name: String,
    sums: Arc<BlockSums>,
}

/// The slices of one set read through its PAR2 block checksums.
pub(super) struct ProvenBlocks<'a> {
    rt: &'a crate::copy::Runtime,
    copy: &'a Store,
    slices: Vec<Slice>,
    /// (slice, block's offset, its bytes), the newest first.
    kept: VecDeque<(u32, u64, Vec<u8>)>,
    /// Bytes read from the copy.
    pub read: u64,
}

impl<'a> ProvenBlocks<'a> {
    /// The slices of `set`, when its PAR2 index proves every one of them block by block.
    pub fn of(fetch: &mut Fetch<'a>, set: &FoundSet) -> Result<Option<Self>> {
        let mut slices = Vec::new();
        for n in 1..=set.manifest.archive.slices {
            let name = format!("{}.{n}.dar", set.manifest.archive.basename);
            let Some(sums) = fetch.block_sums(set, &name)? else {
                return Ok(None);
            };
            let stored = format!("{}/{name}", fetch.copy.location(set));
            slices.push(Slice { stored, name, sums });
        }
        Ok(Some(ProvenBlocks {
            rt: fetch.rt,
            copy: fetch.copy,
            slices,
            kept: VecDeque::new(),
            read: 0,
        }))
    }

    pub fn sizes(&self) -> Vec<u64> {
        self.slices
            .iter()
            .map(|s| s.sums.length(&s.name).expect("checked in of()"))
            .collect()
    }

    /// Where in `kept` the block of slice `n` at `start` is, read and proven if it was not.
    fn block(&mut self, n: u32, start: u64) -> Result<usize> {
        if let Some(i) = self.kept.iter().position(|k| k.0 == n && k.1 == start) {
            return Ok(i);
        }
        let slice = &self.slices[n as usize - 1];
        let length = slice.sums.length(&slice.name).expect("checked in of()");
        let end = (start + slice.sums.block_size()).min(length);
        let read = self
            .rt
            .block_on_stoppable(self.copy.read_range(&slice.stored, start..end))?;
        let bytes = read
            .filter(|b| b.len() as u64 == end - start && slice.sums.proves(&slice.name, start, b))
            .ok_or_else(|| {
                Error::Failed(format!(
                    "{} on {}: the block at {start} is damaged or missing",
                    slice.name, self.copy.name
                ))
            })?;
        self.read += bytes.len() as u64;
        if self.kept.len() == KEPT {
            self.kept.pop_back();
        }
        self.kept.push_front((n, start, bytes));
        Ok(0)
    }
}

impl SliceReader for ProvenBlocks<'_> {
    fn read(&mut self, n: u32, range: Range<u64>) -> Result<Vec<u8>> {
        crate::tools::process::check_stop()?;
        let slice = self
            .slices
            .get(n.wrapping_sub(1) as usize)
            .ok_or_else(|| Error::Failed(format!("dar asked for slice {n}, which is not here")))?;
        let sums = Arc::clone(&slice.sums);
        let covering = sums
            .blocks_covering(&slice.name, range.clone())
            .expect("a slice the sums protect");
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        let mut start = covering.start;
        while start < covering.end {
            let i = self.block(n, start)?;
            let bytes = &self.kept[i].2;
            let from = range.start.max(start) - start;
            let to = (range.end.min(start + bytes.len() as u64) - start).max(from);
            out.extend_from_slice(&bytes[from as usize..to as usize]);
            start += sums.block_size();
        }
        Ok(out)
    }
}
