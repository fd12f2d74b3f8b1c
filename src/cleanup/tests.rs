//! Removing a set from a copy that fails on demand (`copy::Memory`): a removal cut short
//! leaves its record, which tells every verb the folder is no set, and the next cleanup
//! finishes it; a copy that stops answering fails once.

use std::sync::Arc;
use std::time::Duration;

use super::{Request, finish_removal, policy::Verdict, remove_set};
use crate::config::Config;
use crate::copy::backend::Capabilities;
use crate::copy::{Call, Fault, FoundSet, Memory, Store, a_set_on_disk};
use crate::error::Error;
use crate::set::{MANIFEST, REMOVING, SHA256SUMS};
use crate::state::State;

struct Setup {
    dir: tempfile::TempDir,
    config: Config,
    set: FoundSet,
    memory: Arc<Memory>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let set = a_set_on_disk(&dir.path().join("repository/docs"));
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        format!(
            "repository = {:?}\nstate_dir = {:?}\n\n[[definition]]\nname = \"docs\"\nsource = {:?}\n",
            dir.path().join("repository"),
            dir.path().join("state"),
            dir.path()
        ),
    )
    .unwrap();
    let config = Config::load(&file).unwrap();
    let memory = Memory::new(Capabilities::default());
    let names = set.manifest.files.iter().map(|f| f.path.as_str());
    for name in names.chain([MANIFEST, SHA256SUMS]) {
        let bytes = std::fs::read(set.dir.join(name)).unwrap();
        memory.put(&format!("docs/{}/{name}", set.manifest.set.name), &bytes);
    }
    Setup {
        dir,
        config,
        set,
        memory,
    }
}

/// A cleanup of everything, confirmed.
fn everything() -> Request {
    Request {
        definitions: Vec::new(),
        destinations: Vec::new(),
        sets: Vec::new(),
        dry_run: false,
        yes: true,
    }
}

impl Setup {
    /// Remove the set from the copy in memory; as found there.
    fn remove(&self, stall: Duration) -> crate::Result<bool> {
        let store = Store::over("bucket", self.memory.clone(), stall);
        let rt = crate::copy::runtime().unwrap();
        let found = rt.block_on(store.sets("docs")).unwrap();
        let Some(set) = found.sets.first() else {
            return Ok(false);
        };
        assert_eq!(set.manifest.set.name, self.set.manifest.set.name);
        let state = State::open(&self.dir.path().join("state")).unwrap();
        let request = everything();
        let verdict = Verdict {
            set: set.manifest.set.name.clone(),
            remove: true,
            reason: "expired".into(),
        };
        rt.block_on(remove_set(
            &self.config,
            &request,
            &state,
            &store,
            true,
            set,
            verdict,
            None,
        ))
        .map(|r| r.removed)
    }

    /// Finish what the copy says is being removed.
    fn finish(&self) -> Vec<String> {
        let store = Store::over("bucket", self.memory.clone(), Duration::from_secs(5));
        let rt = crate::copy::runtime().unwrap();
        let found = rt.block_on(store.sets("docs")).unwrap();
        assert!(found.sets.is_empty(), "no set while being removed");
        let request = everything();
        for dir in &found.removing {
            rt.block_on(finish_removal(&request, &store, dir)).unwrap();
        }
        found.removing
    }
}

#[test]
fn a_removal_cut_short_is_no_set_and_the_next_cleanup_finishes_it() {
    // The manifest goes, then SHA256SUMS fails: cut short.
    let setup = setup();
    setup.memory.plan(Call::Remove, 2, Fault::Permanent);
    assert!(setup.remove(Duration::from_secs(5)).is_err());
    let record = format!("docs/{}/{REMOVING}", setup.set.manifest.set.name);
    assert!(setup.memory.get(&record).is_some(), "the record stays");
    assert_eq!(setup.finish().len(), 1);
    assert_eq!(setup.memory.paths(), Vec::<String>::new());
}

#[test]
fn a_copy_that_stops_answering_mid_removal_fails_once_and_keeps_the_record() {
    let setup = setup();
    setup.memory.plan(Call::Remove, 3, Fault::Stall);
    let failed = setup.remove(Duration::from_millis(300)).unwrap_err();
    assert!(matches!(failed, Error::Stalled { .. }), "{failed}");
    assert_eq!(setup.memory.calls(Call::Remove), 3, "not tried again");
    let record = format!("docs/{}/{REMOVING}", setup.set.manifest.set.name);
    assert!(setup.memory.get(&record).is_some());
    setup.finish();
    assert_eq!(setup.memory.paths(), Vec::<String>::new());
    assert!(
        !setup.remove(Duration::from_secs(5)).unwrap(),
        "nothing left"
    );
}
