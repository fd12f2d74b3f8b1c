//! Auditing and repairing a copy that fails on demand (`copy::Memory`): a repair heals from
//! a healthy copy and is proven, a copy that stops answering is the copy's failure (no
//! verdict on sets not read), a source failing mid-repair leaves the damaged file as it was.

use std::sync::Arc;
use std::time::Duration;

use super::check::audit_copy;
use super::{CopyReport, Options, Status};
use crate::copy::backend::Capabilities;
use crate::copy::{Call, Fault, FoundSet, Memory, Store, a_set_on_disk};
use crate::error::{Error, Result};
use crate::set::{MANIFEST, SHA256SUMS};
use crate::state::State;

fn bucket() -> Capabilities {
    Capabilities {
        write_in_pieces: true,
        create_only_if_absent: true,
        ..Capabilities::default()
    }
}

/// A copy in memory holding `set` as replicate leaves it.
fn holding(set: &FoundSet) -> Arc<Memory> {
    let memory = Memory::new(bucket());
    let names = set.manifest.files.iter().map(|f| f.path.as_str());
    for name in names.chain([MANIFEST, SHA256SUMS]) {
        let bytes = std::fs::read(set.dir.join(name)).unwrap();
        memory.put(&at(set, name), &bytes);
    }
    memory
}

fn at(set: &FoundSet, file: &str) -> String {
    format!("docs/{}/{file}", set.manifest.set.name)
}

fn audit(
    copy: &Arc<Memory>,
    others: &[&Arc<Memory>],
    stall: Duration,
    state: &State,
) -> (Result<bool>, CopyReport) {
    let copy = Arc::new(Store::over("copy", copy.clone(), stall));
    let others: Vec<Arc<Store>> = others
        .iter()
        .map(|m| Arc::new(Store::over("healthy", (*m).clone(), stall)))
        .collect();
    let options = Options {
        repair: true,
        ..Options::default()
    };
    let mut report = CopyReport {
        copy: "copy".into(),
        sets: Vec::new(),
        problems: Vec::new(),
        error: None,
        error_code: 0,
        proof: None,
    };
    let rt = crate::copy::runtime().unwrap();
    let audited = rt.block_on(audit_copy(
        &copy,
        &others,
        None,
        &options,
        false,
        state,
        &crate::progress::Silent,
        &mut report,
    ));
    (audited, report)
}

struct Setup {
    dir: tempfile::TempDir,
    set: FoundSet,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let set = a_set_on_disk(&dir.path().join("repository/docs"));
    Setup { dir, set }
}

impl Setup {
    fn state(&self) -> State {
        State::open(&self.dir.path().join("state")).unwrap()
    }

    fn slice(&self) -> String {
        at(&self.set, &self.set.manifest.files[1].path)
    }

    fn original(&self) -> Vec<u8> {
        std::fs::read(self.set.dir.join(&self.set.manifest.files[1].path)).unwrap()
    }

    /// The copy with a byte of the second slice changed.
    fn damaged(&self) -> (Arc<Memory>, Vec<u8>) {
        let memory = holding(&self.set);
        let mut bytes = self.original();
        bytes[1000] ^= 0x40;
        memory.put(&self.slice(), &bytes);
        (memory, bytes)
    }
}

#[test]
fn damage_is_healed_from_a_healthy_copy_and_proven() {
    let setup = setup();
    let (copy, _) = setup.damaged();
    let healthy = holding(&setup.set);
    let (audited, report) = audit(&copy, &[&healthy], Duration::from_secs(5), &setup.state());
    assert!(audited.unwrap());
    assert_eq!(report.sets.len(), 1);
    assert_eq!(
        report.sets[0].status,
        Status::Repaired,
        "{:?}",
        report.sets[0]
    );
    assert_eq!(copy.get(&setup.slice()).unwrap(), setup.original());
}

#[test]
fn a_copy_that_stops_answering_is_the_copys_failure_not_a_sets_verdict() {
    let setup = setup();
    let copy = holding(&setup.set);
    copy.plan(Call::ReadRange, 1, Fault::Stall);
    let (audited, report) = audit(&copy, &[], Duration::from_millis(300), &setup.state());
    assert!(matches!(audited, Err(Error::Stalled { .. })), "{audited:?}");
    assert!(
        report.sets.is_empty(),
        "no verdict on a set not read: {:?}",
        report.sets
    );
}

#[test]
fn a_healthy_copy_failing_mid_repair_leaves_the_damaged_file_as_it_was() {
    let setup = setup();
    let (copy, damaged) = setup.damaged();
    let healthy = holding(&setup.set);
    // Its stat and first chunk answer (the file looks healthy), then it fails for good.
    healthy.plan(Call::ReadRange, 2, Fault::Permanent);
    let (audited, report) = audit(&copy, &[&healthy], Duration::from_secs(5), &setup.state());
    audited.unwrap();
    assert_ne!(report.sets[0].status, Status::Ok);
    assert_ne!(report.sets[0].status, Status::Repaired);
    assert_eq!(copy.get(&setup.slice()).unwrap(), damaged, "left as it was");
}
