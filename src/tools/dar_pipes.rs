//! An archive served to `dar -x -` through a pair of named pipes, the way `dar_slave` serves
//! one, every byte proven before dar gets it.
//!
//! A restore of one file from a set of 1 GiB slices needs a few MiB of them; proving whole
//! slices against their SHA-256 costs reading all of them. Served this way, darvault reads
//! and proves (by the PAR2 index's per-block MD5, see `set::par2_index`) only the blocks dar
//! asks for. What dar asks for is its own business: nothing here assumes which bytes it
//! will want.
//!
//! The protocol, as dar 2.7 speaks it: dar writes orders, each a serial byte, an offset (an
//! "infinint", below) and a size (16 bits, big-endian). A size of 0 is a special order
//! named by its offset (the end, the archive's size, a context change followed by a
//! NUL-terminated string, and so on). Each answer repeats the serial and is either data
//! (`D`, a 16-bit size, the bytes) or a number (`I`, an infinint). The bytes served are the
//! archive's logical stream: the slices one after another, each without its header and its
//! last byte (a flag: `N` in every slice but the last, `T` in the last). Those facts are
//! checked on every slice dar reads: a slice that does not look so stops the serving, and
//! the caller restores another way.

use std::fs::File;
use std::io::{Read, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// Proven bytes of a set's slices.
pub trait SliceReader: Send {
    /// Bytes `range` of slice `n` (numbered from 1), each proven against what the set
    /// recorded; an error when they cannot be read or proven.
    fn read(&mut self, n: u32, range: Range<u64>) -> Result<Vec<u8>>;
}

/// Bytes of a slice's start read to find its header (which is about 50 bytes long).
const HEADER_PROBE: u64 = 4096;
const MAGIC: [u8; 4] = [0, 0, 0, 0x7b];
/// The header extension dar 2.7 writes: a list of type-length-value fields.
const EXTENSION_TLV: u8 = b'T';
/// The field holding the archive's data name (the name every slice of it shares).
const TLV_DATA_NAME: u16 = 3;
const LABEL: usize = 10;
const FLAG_NOT_LAST: u8 = b'N';
const FLAG_LAST: u8 = b'T';

/// A slice header's length and the data name it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    len: u64,
    data_name: [u8; LABEL],
}

/// The header a slice starts with, or None when it is not one this module knows.
fn parse_header(bytes: &[u8]) -> Option<Header> {
    if bytes.get(..4)? != MAGIC || *bytes.get(4 + LABEL + 1)? != EXTENSION_TLV {
        return None;
    }
    let mut at = 4 + LABEL + 2;
    let (count, used) = decode_infinint(bytes.get(at..)?)?;
    at += used;
    let mut data_name = None;
    for _ in 0..count {
        let kind = u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?);
        let (len, used) = decode_infinint(bytes.get(at + 2..)?)?;
        at += 2 + used;
        let value = bytes.get(at..at.checked_add(usize::try_from(len).ok()?)?)?;
        if kind == TLV_DATA_NAME {
            data_name = Some(value.try_into().ok()?);
        }
        at += value.len();
    }
    Some(Header {
        len: at as u64,
        data_name: data_name?,
    })
}

/// An infinint as dar writes it: a run of zero bytes and one byte with a single bit set
/// tell how many 4-byte groups follow (8 per zero byte, plus the bit's place), then the
/// value, big-endian. The value and the bytes it took; None when it is malformed or does
/// not fit 64 bits.
fn decode_infinint(bytes: &[u8]) -> Option<(u64, usize)> {
    let zeros = bytes.iter().position(|b| *b != 0)?;
    let marker = bytes[zeros];
    if !marker.is_power_of_two() {
        return None;
    }
    let groups = zeros * 8 + marker.leading_zeros() as usize + 1;
    let start = zeros + 1;
    let value = bytes.get(start..start + groups * 4)?;
    let significant = value.iter().skip_while(|b| **b == 0).count();
    if significant > 8 {
        return None;
    }
    let n = value[value.len() - significant..]
        .iter()
        .fold(0u64, |n, b| n << 8 | u64::from(*b));
    Some((n, start + groups * 4))
}

/// `n` as an infinint (see `decode_infinint`), in as few groups as hold it.
fn encode_infinint(n: u64) -> Vec<u8> {
    let significant = (8 - n.leading_zeros() as usize / 8).max(1);
    let groups = significant.div_ceil(4);
    let (whole, rest) = (groups / 8, groups % 8);
    let mut out = match rest {
        0 => vec![0; whole - 1],
        _ => vec![0; whole],
    };
    out.push(match rest {
        0 => 0x01,
        r => 0x80 >> (r - 1),
    });
    out.extend(std::iter::repeat_n(0, groups * 4 - significant));
    out.extend_from_slice(&n.to_be_bytes()[8 - significant..]);
    out
}

/// The slices of one archive as dar sees them through the pipes.
pub struct Archive<'r> {
    sizes: Vec<u64>,
    reader: &'r mut dyn SliceReader,
    /// The header of the first slice; every other slice read must carry the same.
    header: Header,
    /// Slices whose header and last byte were checked.
    checked: Vec<bool>,
    /// Bytes given to dar.
    pub served: u64,
}

impl<'r> Archive<'r> {
    /// The archive of slices of `sizes` (slice 1 first), read through `reader`; None when
    /// its first slice does not start with a header this module knows.
    pub fn open(sizes: Vec<u64>, reader: &'r mut dyn SliceReader) -> Result<Option<Self>> {
        let Some(first) = sizes.first() else {
            return Ok(None);
        };
        let start = reader.read(1, 0..HEADER_PROBE.min(*first))?;
        let Some(header) = parse_header(&start) else {
            return Ok(None);
        };
        if sizes.iter().any(|s| *s <= header.len + 1) {
            return Ok(None);
        }
        let checked = vec![false; sizes.len()];
        Ok(Some(Archive {
            sizes,
            reader,
            header,
            checked,
            served: 0,
        }))
    }

    /// The bytes each slice gives to the logical stream.
    fn carried(&self, size: u64) -> u64 {
        size - self.header.len - 1
    }

    fn logical_size(&self) -> u64 {
        self.sizes.iter().map(|s| self.carried(*s)).sum()
    }

    /// Whether slice `i` (from 0) starts with the first slice's header and ends with the
    /// flag its place calls for: the layout the logical offsets rest on.
    fn check_slice(&mut self, i: usize) -> Result<()> {
        if self.checked[i] {
            return Ok(());
        }
        let n = i as u32 + 1;
        let size = self.sizes[i];
        let start = self.reader.read(n, 0..HEADER_PROBE.min(size))?;
        let end = self.reader.read(n, size - 1..size)?;
        let flag = match i + 1 == self.sizes.len() {
            true => FLAG_LAST,
            false => FLAG_NOT_LAST,
        };
        if parse_header(&start) != Some(self.header) || end != [flag] {
            return Err(Error::Failed(format!(
                "slice {n} is not laid out as its archive's first slice says"
            )));
        }
        self.checked[i] = true;
        Ok(())
    }

    /// `len` bytes of the logical stream from `offset` (fewer at its end).
    fn read_logical(&mut self, mut offset: u64, len: u64) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(self.logical_size());
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut slice_start = 0;
        for i in 0..self.sizes.len() {
            let carried = self.carried(self.sizes[i]);
            let slice_end = slice_start + carried;
            if offset < end && offset < slice_end {
                self.check_slice(i)?;
                let from = self.header.len + (offset - slice_start);
                let to = self.header.len + (end.min(slice_end) - slice_start);
                out.extend(self.reader.read(i as u32 + 1, from..to)?);
                offset = end.min(slice_end);
            }
            slice_start = slice_end;
        }
        self.served += out.len() as u64;
        Ok(out)
    }

    /// The answer to one order, or None for the order to end.
    fn answer(&mut self, order: &Order) -> Result<Option<Vec<u8>>> {
        let mut out = vec![order.serial];
        let number = |out: &mut Vec<u8>, n: u64| {
            out.push(b'I');
            out.extend(encode_infinint(n));
        };
        let data = |out: &mut Vec<u8>, bytes: &[u8]| {
            out.push(b'D');
            out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            out.extend_from_slice(bytes);
        };
        match (order.size, order.offset) {
            (0, 0) => return Ok(None),
            (0, 1) => number(&mut out, self.logical_size()),
            (0, 2) => number(&mut out, 1),
            (0, 3) => number(&mut out, 0),
            (0, 4) => data(&mut out, &self.header.data_name),
            (0, 5 | 6) => number(&mut out, self.header.len),
            (0, special) => {
                return Err(Error::Failed(format!(
                    "dar sent an order this darvault does not know ({special})"
                )));
            }
            (size, offset) => data(&mut out, &self.read_logical(offset, u64::from(size))?),
        }
        Ok(Some(out))
    }

    /// Answer dar's orders from `orders` on `answers` until it says it is done, or `ended`
    /// is set (dar has exited) and nothing is left to read.
    pub fn serve(&mut self, orders: &File, answers: &File, ended: &AtomicBool) -> Result<()> {
        let mut input = Pipe {
            file: orders,
            ended,
        };
        let mut output = Pipe {
            file: answers,
            ended,
        };
        loop {
            let order = match Order::read(&mut input) {
                Ok(order) => order,
                // dar has exited: what it says of its run judges it.
                Err(_) if ended.load(Ordering::Relaxed) => return Ok(()),
                Err(e) => return Err(e),
            };
            match self.answer(&order) {
                Ok(Some(answer)) => output.write_all(&answer).map_err(pipe_error)?,
                Ok(None) => {
                    // The end is acknowledged with an empty block.
                    let end = [order.serial, b'D', 0, 0];
                    return output.write_all(&end).map_err(pipe_error);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// One order from dar.
struct Order {
    serial: u8,
    offset: u64,
    size: u16,
}

impl Order {
    fn read(input: &mut impl Read) -> Result<Order> {
        let mut byte = [0u8; 1];
        let mut next = |input: &mut dyn Read| -> Result<u8> {
            input.read_exact(&mut byte).map_err(pipe_error)?;
            Ok(byte[0])
        };
        let serial = next(input)?;
        let mut offset = Vec::new();
        loop {
            let b = next(input)?;
            offset.push(b);
            if b != 0 {
                break;
            }
            if offset.len() > 16 {
                return Err(Error::Failed("dar sent an offset out of bounds".into()));
            }
        }
        let marker = *offset.last().expect("one byte");
        if marker.is_power_of_two() {
            let groups = (offset.len() - 1) * 8 + marker.leading_zeros() as usize + 1;
            let mut rest = vec![0u8; groups * 4];
            input.read_exact(&mut rest).map_err(pipe_error)?;
            offset.extend(rest);
        }
        let (offset, _) = decode_infinint(&offset)
            .ok_or_else(|| Error::Failed("dar sent an offset out of bounds".into()))?;
        let mut size = [0u8; 2];
        input.read_exact(&mut size).map_err(pipe_error)?;
        let size = u16::from_be_bytes(size);
        if size == 0 && offset == 2 {
            // A context change names the new context: read, and of no use here.
            while next(input)? != 0 {}
        }
        Ok(Order {
            serial,
            offset,
            size,
        })
    }
}

fn pipe_error(e: std::io::Error) -> Error {
    Error::Failed(format!("dar's pipes: {e}"))
}

/// One end of a named pipe, opened for reading and writing (so that opening it never waits
/// for dar) and read or written only when ready: each wait ends when dar has exited.
struct Pipe<'a> {
    file: &'a File,
    ended: &'a AtomicBool,
}

impl Pipe<'_> {
    /// Wait until the pipe is ready for `events`; an error once dar has exited.
    fn ready(&self, events: libc::c_short) -> std::io::Result<()> {
        loop {
            let mut fd = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events,
                revents: 0,
            };
            // SAFETY: one pollfd, valid for the call.
            let n = unsafe { libc::poll(&mut fd, 1, 100) };
            if n > 0 {
                return Ok(());
            }
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            if self.ended.load(Ordering::Relaxed) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "dar has exited",
                ));
            }
        }
    }
}

impl Read for Pipe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            self.ready(libc::POLLIN)?;
            match (&mut &*self.file).read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                done => return done,
            }
        }
    }
}

impl Write for Pipe<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            self.ready(libc::POLLOUT)?;
            match (&mut &*self.file).write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                done => return done,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A named pipe at `path`, opened for reading and writing without blocking.
pub fn make_pipe(path: &std::path::Path) -> Result<File> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Failed(format!("{} holds a NUL byte", path.display())))?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
        return Err(Error::io("cannot create", path)(
            std::io::Error::last_os_error(),
        ));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(Error::io("cannot open", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infinints_as_dar_writes_them() {
        // Read off real slices: the count 2 and a slice size of 1 MiB.
        assert_eq!(encode_infinint(2), [0x80, 0, 0, 0, 2]);
        assert_eq!(encode_infinint(1 << 20), [0x80, 0, 0x10, 0, 0]);
        assert_eq!(encode_infinint(0), [0x80, 0, 0, 0, 0]);
        assert_eq!(encode_infinint(1 << 32), [0x40, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(encode_infinint(u64::MAX)[0], 0x40);
        for n in [0, 1, 255, 1 << 31, (1 << 32) + 7, 2_596_531_364, u64::MAX] {
            let bytes = encode_infinint(n);
            assert_eq!(decode_infinint(&bytes), Some((n, bytes.len())), "{n}");
        }
        // Eight groups take a zero byte and the lowest bit.
        let mut long = vec![0x01];
        long.extend([0; 31]);
        long.push(9);
        assert_eq!(decode_infinint(&long), Some((9, 33)));
        assert_eq!(encode_infinint(9).len(), 5);
        assert_eq!(decode_infinint(&[0x81, 0, 0, 0, 1]), None);
        assert_eq!(decode_infinint(&[0x80, 0, 0]), None);
    }

    /// The header of a slice dar 2.7.8 wrote (`-s 1M`).
    const HEADER: [u8; 50] = [
        0, 0, 0, 0x7b, 0xd6, 0x7c, 0x14, 0x6b, 0, 0, 0, 0, 0x0a, 0x1a, b'E', b'T', 0x80, 0, 0, 0,
        2, 0, 1, 0x80, 0, 0, 0, 5, 0x80, 0, 0x10, 0, 0, 0, 3, 0x80, 0, 0, 0, 0x0a, 0xd6, 0x7c,
        0x14, 0x6b, 0, 0, 0, 0, 0x0a, 0x1a,
    ];

    #[test]
    fn a_slice_header_gives_its_length_and_data_name() {
        let mut slice = HEADER.to_vec();
        slice.extend_from_slice(b"0;1.nN/A");
        let header = parse_header(&slice).unwrap();
        assert_eq!(header.len, 50);
        assert_eq!(header.data_name, HEADER[4..14]);
        assert_eq!(parse_header(&slice[..40]), None, "cut short");
        let mut other = slice.clone();
        other[15] = b'N';
        assert_eq!(parse_header(&other), None, "another extension");
    }

    /// Slices in memory: the header, then `body` bytes, then the flag.
    struct Memory(Vec<Vec<u8>>);

    impl SliceReader for Memory {
        fn read(&mut self, n: u32, range: Range<u64>) -> Result<Vec<u8>> {
            let slice = &self.0[n as usize - 1];
            let end = (range.end as usize).min(slice.len());
            Ok(slice[range.start as usize..end].to_vec())
        }
    }

    fn slices(bodies: &[&[u8]]) -> Memory {
        Memory(
            bodies
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    let mut s = HEADER.to_vec();
                    s.extend_from_slice(body);
                    s.push(if i + 1 == bodies.len() { b'T' } else { b'N' });
                    s
                })
                .collect(),
        )
    }

    #[test]
    fn the_logical_stream_runs_across_slices_without_headers_or_flags() {
        let mut memory = slices(&[b"abcd", b"efg", b"hi"]);
        let sizes = memory.0.iter().map(|s| s.len() as u64).collect();
        let mut archive = Archive::open(sizes, &mut memory).unwrap().unwrap();
        assert_eq!(archive.logical_size(), 9);
        assert_eq!(archive.read_logical(0, 9).unwrap(), b"abcdefghi");
        assert_eq!(archive.read_logical(3, 3).unwrap(), b"def");
        assert_eq!(archive.read_logical(7, 100).unwrap(), b"hi");
        assert_eq!(archive.read_logical(20, 4).unwrap(), b"");
        let order = Order {
            serial: 7,
            offset: 1,
            size: 0,
        };
        assert_eq!(
            archive.answer(&order).unwrap().unwrap(),
            [7, b'I', 0x80, 0, 0, 0, 9]
        );
        let name = Order { offset: 4, ..order };
        let answer = archive.answer(&name).unwrap().unwrap();
        assert_eq!(&answer[..4], &[7, b'D', 0, 10]);
        assert_eq!(answer[4..], HEADER[4..14]);
    }

    #[test]
    fn a_slice_laid_out_otherwise_stops_the_serving() {
        let mut memory = slices(&[b"abcd", b"efg"]);
        memory.0[0].pop();
        memory.0[0].push(b'T');
        let sizes = memory.0.iter().map(|s| s.len() as u64).collect();
        let mut archive = Archive::open(sizes, &mut memory).unwrap().unwrap();
        assert!(archive.read_logical(0, 2).is_err());
    }

    #[test]
    fn orders_are_read_as_dar_writes_them() {
        let mut bytes = vec![3u8];
        bytes.extend(encode_infinint(1_073_741_773));
        bytes.extend(65535u16.to_be_bytes());
        bytes.push(4);
        bytes.extend(encode_infinint(2));
        bytes.extend([0, 0]);
        bytes.extend(b"init\0");
        bytes.push(5);
        bytes.extend(encode_infinint(0));
        bytes.extend([0, 0]);
        let mut input = &bytes[..];
        let first = Order::read(&mut input).unwrap();
        assert_eq!(
            (first.serial, first.offset, first.size),
            (3, 1_073_741_773, 65535)
        );
        let context = Order::read(&mut input).unwrap();
        assert_eq!((context.offset, context.size), (2, 0));
        let end = Order::read(&mut input).unwrap();
        assert_eq!((end.serial, end.offset, end.size), (5, 0, 0));
        assert!(Order::read(&mut input).is_err());
    }
}
