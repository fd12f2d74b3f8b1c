//! Sending sets to a copy that fails on demand (`copy::Memory`): what a failed or stalled
//! run leaves, and that the next one finishes it without sending twice what arrived.

use std::sync::Arc;
use std::time::Duration;

use super::send_missing;
use crate::config::Destination;
use crate::copy::backend::Capabilities;
use crate::copy::{Call, Fault, Memory, Store, a_set_on_disk};
use crate::error::Error;
use crate::set::{MANIFEST, SHA256SUMS, WRITING};
use crate::state::State;

fn bucket() -> Capabilities {
    Capabilities {
        write_in_pieces: true,
        create_only_if_absent: true,
        ..Capabilities::default()
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    set: crate::copy::FoundSet,
    state: Arc<State>,
    destination: Destination,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let set = a_set_on_disk(&dir.path().join("repository/docs"));
    let state = Arc::new(State::open(&dir.path().join("state")).unwrap());
    let destination: Destination =
        toml::from_str("name = \"bucket\"\nkind = \"s3\"\nconcurrency = 1\n").unwrap();
    Setup {
        _dir: dir,
        set,
        state,
        destination,
    }
}

fn replicate(
    setup: &Setup,
    memory: &Arc<Memory>,
    stall: Duration,
) -> crate::Result<super::Summary> {
    let store = Arc::new(Store::over("bucket", memory.clone(), stall));
    let rt = crate::copy::runtime().unwrap();
    rt.block_on(send_missing(
        &setup.destination,
        std::slice::from_ref(&setup.set),
        &setup.state,
        &crate::progress::Silent,
        &store,
        std::time::Instant::now(),
    ))
}

fn on_copy(setup: &Setup, file: &str) -> String {
    format!("docs/{}/{file}", setup.set.manifest.set.name)
}

/// Every file of the set is on the copy as in the repository, and nothing else.
fn complete(setup: &Setup, memory: &Memory) {
    let mut expected: Vec<String> = setup
        .set
        .manifest
        .files
        .iter()
        .map(|f| f.path.as_str())
        .chain([MANIFEST, SHA256SUMS])
        .map(|f| on_copy(setup, f))
        .collect();
    expected.sort();
    assert_eq!(memory.paths(), expected);
    for f in &expected {
        let name = f.rsplit('/').next().unwrap();
        let local = std::fs::read(setup.set.dir.join(name)).unwrap();
        assert!(memory.get(f) == Some(local), "{f} differs");
    }
}

#[test]
fn a_set_cut_short_by_a_failure_is_being_written_and_the_next_run_finishes_it() {
    let setup = setup();
    let memory = Memory::new(bucket());
    // The second file's second chunk: the first file arrived.
    memory.plan(Call::Chunk, 4, Fault::Permanent);
    let failed = replicate(&setup, &memory, Duration::from_secs(5)).unwrap_err();
    assert!(failed.to_string().contains("access denied"), "{failed}");
    let record = on_copy(&setup, WRITING);
    assert!(
        memory.get(&record).is_some(),
        "the record of a set being written"
    );
    assert!(memory.get(&on_copy(&setup, MANIFEST)).is_none());
    let writers = memory.calls(Call::Writer);
    let summary = replicate(&setup, &memory, Duration::from_secs(5)).unwrap();
    assert_eq!(summary.sent.len(), 1);
    // The first file is not sent again: two more data files and the two descriptors.
    assert_eq!(memory.calls(Call::Writer) - writers, 4);
    complete(&setup, &memory);
    // Complete: the next run sends nothing.
    let summary = replicate(&setup, &memory, Duration::from_secs(5)).unwrap();
    assert_eq!((summary.sent.len(), summary.present), (0, 1));
}

#[test]
fn a_copy_that_stops_answering_fails_the_run_once_and_begins_nothing_more() {
    let setup = setup();
    let memory = Memory::new(bucket());
    memory.plan(Call::Chunk, 2, Fault::Stall);
    let failed = replicate(&setup, &memory, Duration::from_millis(300)).unwrap_err();
    assert!(matches!(failed, Error::Stalled { .. }), "{failed}");
    assert_eq!(memory.calls(Call::Writer), 1, "no other file begun");
    let summary = replicate(&setup, &memory, Duration::from_secs(5)).unwrap();
    assert_eq!(summary.sent.len(), 1);
    complete(&setup, &memory);
}

#[test]
fn a_full_copy_is_not_tried_again_and_a_reset_is() {
    let setup = setup();
    let memory = Memory::new(bucket());
    memory.plan(Call::Chunk, 1, Fault::Temporary);
    replicate(&setup, &memory, Duration::from_secs(5)).unwrap();
    complete(&setup, &memory);

    let setup = self::setup();
    let memory = Memory::new(bucket());
    memory.plan(Call::Close, 1, Fault::NoSpace);
    let failed = replicate(&setup, &memory, Duration::from_secs(5)).unwrap_err();
    assert!(failed.to_string().contains("disk is full"), "{failed}");
    assert!(!failed.retry_helps());
    assert_eq!(memory.calls(Call::Writer), 1);
}
