//! `Store`'s policies over a storage that fails on demand (`memory`): one deadline, the
//! retry budget, temporary names and proof after upload, removal last, the writer lock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::backend::Capabilities;
use super::held::LOCK;
use super::memory::{Call, Fault, Memory};
use super::{Expected, Limiter, PARTIAL, Store};
use crate::error::{Error, Result};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An S3-like service: no rename, objects written in parts, created only if absent.
fn object_store() -> Capabilities {
    Capabilities {
        write_in_pieces: true,
        create_only_if_absent: true,
        ..Capabilities::default()
    }
}

/// An SFTP-like server: files renamed into place.
fn file_server() -> Capabilities {
    Capabilities {
        atomic_rename: true,
        write_in_pieces: true,
        ..Capabilities::default()
    }
}

fn copy(memory: &Arc<Memory>, stall: Duration) -> Store {
    Store::over("memory", memory.clone(), stall)
}

const FILE: &str = "docs/s/s.1.dar";

#[test]
fn a_temporary_failure_is_tried_again_and_a_permanent_one_is_not() {
    let memory = Memory::new(object_store());
    memory.put(FILE, b"bytes");
    let store = copy(&memory, Duration::from_secs(5));
    let rt = runtime();
    memory.plan(Call::Read, 1, Fault::Temporary);
    let read = rt.block_on(store.read_small(FILE)).unwrap();
    assert_eq!(read.as_deref(), Some(&b"bytes"[..]));
    assert_eq!(memory.calls(Call::Read), 2);
    memory.plan(Call::Read, 1, Fault::Permanent);
    let failed = rt.block_on(store.read_small(FILE)).unwrap_err();
    assert!(!failed.retry_helps(), "{failed}");
    assert!(failed.to_string().contains("access denied"), "{failed}");
    assert_eq!(memory.calls(Call::Read), 3, "not tried again");
    // Not there is an answer, not a failure.
    assert_eq!(rt.block_on(store.read_small("docs/none")).unwrap(), None);
    assert_eq!(memory.calls(Call::Read), 4);
}

#[test]
fn a_request_that_never_answers_fails_once_at_the_stall_timeout() {
    let memory = Memory::new(object_store());
    memory.put(FILE, b"bytes");
    let store = copy(&memory, Duration::from_millis(300));
    memory.plan(Call::Read, 1, Fault::Stall);
    let failed = runtime().block_on(store.read_small(FILE)).unwrap_err();
    assert!(matches!(failed, Error::Stalled { .. }), "{failed}");
    assert_eq!(memory.calls(Call::Read), 1, "a stall is not tried again");
}

/// The tries after a first failure share one stall timeout: with 1.5 s, the pause of 1 s
/// before the second try fits, the 2 s before a third does not.
#[test]
fn the_retries_of_a_request_share_one_stall_timeout() {
    let memory = Memory::new(object_store());
    memory.put(FILE, b"bytes");
    let store = copy(&memory, Duration::from_millis(1500));
    for nth in 1..=5 {
        memory.plan(Call::Read, nth, Fault::Temporary);
    }
    let failed = runtime().block_on(store.read_small(FILE)).unwrap_err();
    assert!(failed.retry_helps(), "{failed}");
    assert!(failed.to_string().contains("after 1 tries"), "{failed}");
    assert_eq!(memory.calls(Call::Read), 2);
}

/// A local file of `size` pseudo-random bytes, and its SHA-256.
fn local_file(dir: &tempfile::TempDir, size: usize) -> (PathBuf, String) {
    let mut bytes = vec![0u8; size];
    fastrand::Rng::with_seed(size as u64).fill(&mut bytes);
    let path = dir.path().join("slice");
    std::fs::write(&path, &bytes).unwrap();
    (path, crate::hashing::sha256_hex(&bytes))
}

/// Put a 17 MiB file (three chunks) at FILE, where `old` is already.
fn put(memory: &Arc<Memory>, readback: bool) -> (Result<()>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (local, sha256) = local_file(&dir, 17 << 20);
    let expected = Expected {
        size: 17 << 20,
        sha256: &sha256,
        executable: false,
        part: None,
    };
    memory.put(FILE, b"old");
    let store = copy(memory, Duration::from_secs(5));
    let limiter = Limiter::new(None);
    let sent = runtime().block_on(store.put_file(
        &local,
        FILE,
        &expected,
        &limiter,
        &crate::progress::Silent,
        readback,
    ));
    (sent, std::fs::read(local).unwrap())
}

fn no_partial_file(memory: &Memory) {
    let partial: Vec<String> = memory
        .paths()
        .into_iter()
        .filter(|p| p.ends_with(PARTIAL))
        .collect();
    assert!(partial.is_empty(), "left behind: {partial:?}");
}

#[test]
fn an_upload_that_fails_midway_leaves_the_old_file_and_nothing_partial() {
    let memory = Memory::new(file_server());
    memory.plan(Call::Chunk, 2, Fault::Permanent);
    let (sent, _) = put(&memory, false);
    assert!(sent.is_err());
    assert_eq!(memory.get(FILE).unwrap(), b"old");
    no_partial_file(&memory);
}

#[test]
fn bytes_the_server_shortened_or_changed_are_never_moved_into_place() {
    for (fault, readback, said) in [
        (Fault::ShortWrite, false, "bytes after upload"),
        (Fault::Corrupt, true, "read back differs"),
    ] {
        let memory = Memory::new(file_server());
        memory.plan(Call::Chunk, 2, fault);
        let (sent, _) = put(&memory, readback);
        let failed = sent.unwrap_err();
        assert!(failed.to_string().contains(said), "{failed}");
        assert_eq!(memory.get(FILE).unwrap(), b"old");
        assert_eq!(memory.calls(Call::Rename), 0);
        no_partial_file(&memory);
    }
}

#[test]
fn a_full_disk_fails_the_upload_at_once_and_a_reset_sends_it_again() {
    let memory = Memory::new(file_server());
    memory.plan(Call::Chunk, 1, Fault::NoSpace);
    let (sent, _) = put(&memory, false);
    let failed = sent.unwrap_err();
    assert!(failed.to_string().contains("disk is full"), "{failed}");
    assert_eq!(memory.calls(Call::Writer), 1, "not tried again");

    let memory = Memory::new(file_server());
    memory.plan(Call::Chunk, 2, Fault::Temporary);
    let (sent, local) = put(&memory, true);
    sent.unwrap();
    assert_eq!(memory.calls(Call::Writer), 2, "sent again from the start");
    assert_eq!(memory.get(FILE).unwrap(), local);
    no_partial_file(&memory);
}

#[test]
fn an_object_store_gets_each_file_under_its_own_name_in_one_upload() {
    let memory = Memory::new(object_store());
    let (sent, local) = put(&memory, false);
    sent.unwrap();
    assert_eq!(memory.get(FILE).unwrap(), local);
    assert_eq!(memory.paths(), vec![FILE.to_owned()]);
    assert_eq!(memory.calls(Call::Rename), 0);
}

/// A lock naming a live holder on another machine.
fn held_elsewhere() -> Vec<u8> {
    let now = jiff::Timestamp::now().to_string();
    serde_json::json!({
        "host": "another-host", "pid": 1, "run": "r", "command": "cleanup",
        "started": now, "heartbeat": now,
    })
    .to_string()
    .into_bytes()
}

/// Two runs that find the copy free at the same moment: the one whose create comes second
/// is refused by the service and names the other.
#[test]
fn of_two_runs_that_find_a_copy_free_at_once_one_takes_its_lock() {
    let memory = Memory::new(object_store());
    let store = copy(&memory, Duration::from_secs(5));
    let elsewhere = held_elsewhere();
    memory.plan(
        Call::CreateNew,
        1,
        Fault::Raced {
            path: LOCK.to_owned(),
            bytes: elsewhere.clone(),
        },
    );
    let rt = runtime();
    let busy = rt
        .block_on(store.take_copy_lock("replicate"))
        .err()
        .expect("busy");
    assert!(matches!(busy, Error::Busy { .. }), "{busy}");
    assert!(busy.to_string().contains("another-host"), "{busy}");
    assert_eq!(
        memory.get(LOCK).unwrap(),
        elsewhere,
        "the other's lock stands"
    );

    // Free again: taken, held against another run, and released.
    let _ = rt.block_on(store.backend.remove(LOCK));
    rt.block_on(async {
        let lock = store.take_copy_lock("replicate").await.unwrap().unwrap();
        let other = copy(&memory, Duration::from_secs(5));
        let busy = other.take_copy_lock("audit").await.err().expect("busy");
        assert!(busy.to_string().contains("replicate (pid"), "{busy}");
        lock.release(&Ok(())).await;
    });
    assert_eq!(memory.get(LOCK), None);
}

/// A removal cut short (the second file's removal fails) leaves its record, and the next one
/// finishes it.
#[test]
fn a_removal_cut_short_keeps_its_record_until_the_next_finishes_it() {
    let memory = Memory::new(object_store());
    let record = format!("docs/s/{}", crate::set::REMOVING);
    for file in [
        "docs/s/MANIFEST.toml",
        "docs/s/s.1.dar",
        "docs/s/s.2.dar",
        &record,
    ] {
        memory.put(file, b"x");
    }
    let store = copy(&memory, Duration::from_secs(5));
    let rt = runtime();
    memory.plan(Call::Remove, 2, Fault::Permanent);
    let remove = || store.remove_folder_last("docs/s", Some(crate::set::REMOVING));
    assert!(rt.block_on(remove()).is_err());
    assert!(memory.get(&record).is_some(), "the record stays");
    rt.block_on(remove()).unwrap();
    assert_eq!(memory.paths(), Vec::<String>::new());
}
