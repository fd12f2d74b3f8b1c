//! `darvault demo`: the main job on sample data in a scratch directory, narrated step by step.

use std::fs;
use std::path::{Path, PathBuf};

use crate::backup;
use crate::config::{Config, toml_string};
use crate::error::{Error, Result, exit};
use crate::list;
use crate::progress::Progress;
use crate::set::Level;

/// Sample data: documents (compressible), "photos" (incompressible), nested folders, awkward
/// names, a hard link, a symlink, an empty folder and a cache folder that is skipped.
pub fn make_sample_data(dir: &Path, seed: u64) -> Result<()> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let words = [
        "archive", "proof", "photo", "family", "letter", "tax", "holiday", "garden",
    ];
    let w = |p: &Path, bytes: &[u8]| -> Result<()> {
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(Error::io("cannot create", parent))?;
        }
        fs::write(p, bytes).map_err(Error::io("cannot write", p))
    };
    for i in 0..24 {
        let len = rng.usize(200..20_000);
        let text: Vec<&str> = (0..len).map(|_| words[rng.usize(..words.len())]).collect();
        w(
            &dir.join(format!("documents/year-{}/note-{i:02}.txt", 2019 + i % 6)),
            text.join(" ").as_bytes(),
        )?;
    }
    for i in 0..6 {
        let mut bytes = vec![0u8; rng.usize(100_000..400_000)];
        rng.fill(&mut bytes);
        w(&dir.join(format!("photos/IMG_{:04}.jpg", 1000 + i)), &bytes)?;
    }
    w(
        &dir.join("odd names/with spaces & $ymbols;|'\".txt"),
        b"awkward\n",
    )?;
    w(&dir.join("odd names/caf\u{e9} \u{2615}.txt"), b"unicode\n")?;
    w(
        &dir.join("odd names/new\nline.txt"),
        b"a newline in a name\n",
    )?;
    w(
        &dir.join("cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n",
    )?;
    w(&dir.join("cache/skipped.bin"), b"caches are skipped\n")?;
    fs::create_dir_all(dir.join("empty folder")).map_err(Error::io("cannot create", dir))?;
    let original = dir.join("documents/year-2019/note-00.txt");
    fs::hard_link(&original, dir.join("documents/hard link to note-00.txt"))
        .map_err(Error::io("cannot link", &original))?;
    std::os::unix::fs::symlink("year-2020/note-01.txt", dir.join("documents/latest-note"))
        .map_err(Error::io("cannot link", dir))?;
    Ok(())
}

/// Change the sample data as a week of use would: edit, add, delete.
pub fn change_sample_data(dir: &Path, round: u32) -> Result<()> {
    let edit = dir.join(format!("documents/year-2020/note-{:02}.txt", 1 + round * 6));
    let mut text = fs::read(&edit).map_err(Error::io("cannot read", &edit))?;
    text.extend_from_slice(format!("\nedited in round {round}\n").as_bytes());
    fs::write(&edit, text).map_err(Error::io("cannot write", &edit))?;
    let added = dir.join(format!("photos/IMG_2{round:03}.jpg"));
    let mut bytes = vec![0u8; 150_000];
    fastrand::Rng::with_seed(u64::from(round)).fill(&mut bytes);
    fs::write(&added, bytes).map_err(Error::io("cannot write", &added))?;
    let gone = dir.join(format!("documents/year-2021/note-{:02}.txt", 2 + round * 6));
    fs::remove_file(&gone).map_err(Error::io("cannot remove", &gone))?;
    Ok(())
}

/// The demo's folders and config, and where it narrates.
struct Demo<'a> {
    dir: &'a Path,
    data: PathBuf,
    offsite: PathBuf,
    config: Config,
    progress: &'a dyn Progress,
    say: &'a mut dyn FnMut(&str),
}

/// Run the demo in `dir` (created; it must be empty or new). `say` narrates each step.
/// `kept`: whether `dir` outlives the demo (else the closing hint says how to keep it).
pub fn run(
    dir: &Path,
    kept: bool,
    progress: &dyn Progress,
    say: &mut dyn FnMut(&str),
) -> Result<u8> {
    let mut demo = Demo::prepare(dir, progress, say)?;
    let mut worst = demo.backups()?;
    let listing = demo.show_repository()?;
    worst = worst.max(demo.replicate()?);
    // The FULL: damaged on the offsite disk, repaired, then restored from as of its date.
    if let Some(full) = listing.definitions.first().and_then(|d| d.sets.first()) {
        worst = worst.max(demo.bitrot(&full.name)?);
        demo.restore_as_of(&full.created)?;
    }
    let newest: Option<PathBuf> = listing
        .definitions
        .first()
        .and_then(|d| d.sets.last())
        .map(|s| demo.offsite.join("demo").join(&s.name));
    match newest {
        Some(set) if kept => (demo.say)(&format!(
            "   Each set proves itself: cd {} && sha256sum -c SHA256SUMS",
            set.display()
        )),
        Some(_) => (demo.say)(
            "   Each set proves itself with `sha256sum -c SHA256SUMS` inside its folder. This demo's \
             folder is removed now; run `darvault demo --dir DIR` to keep one and look.",
        ),
        None => {}
    }
    Ok(worst)
}

impl<'a> Demo<'a> {
    /// Steps 1 and 2: sample data and a config, in a new or empty `dir`.
    fn prepare(
        dir: &'a Path,
        progress: &'a dyn Progress,
        say: &'a mut dyn FnMut(&str),
    ) -> Result<Demo<'a>> {
        fs::create_dir_all(dir).map_err(Error::io("cannot create", dir))?;
        if fs::read_dir(dir)
            .map_err(Error::io("cannot read", dir))?
            .next()
            .is_some()
        {
            return Err(Error::Usage(format!(
                "{} is not empty: give the demo a new or empty directory",
                dir.display()
            )));
        }
        let data = dir.join("data");
        let repository = dir.join("repository");
        let config_path = dir.join("config.toml");
        make_sample_data(&data, 7)?;
        say(&format!("1. Made sample data in {}", data.display()));
        let offsite = dir.join("offsite-disk");
        let config_text = format!(
            "repository = {}\nstate_dir = {}\n\n[[definition]]\nname = \"demo\"\nsource = {}\nslice_size = \"512K\"\n\n[definition.restore_test]\ncount = 3\n\n[[destination]]\nname = \"offsite\"\nkind = \"fs\"\nroot = {}\n",
            toml_string(&repository.display().to_string()),
            toml_string(&dir.join("state").display().to_string()),
            toml_string(&data.display().to_string()),
            toml_string(&offsite.display().to_string()),
        );
        fs::write(&config_path, &config_text).map_err(Error::io("cannot write", &config_path))?;
        say(&format!(
            "2. Wrote a config to {}:\n{}",
            config_path.display(),
            indent(&config_text)
        ));
        let config = Config::load(&config_path)?;
        Ok(Demo {
            dir,
            data,
            offsite,
            config,
            progress,
            say,
        })
    }

    /// Steps 3 to 7: a FULL, a week of changes, a DIFF, more changes, an INCR.
    fn backups(&mut self) -> Result<u8> {
        let mut worst = exit::OK;
        let steps: [(Level, Option<u32>); 3] = [
            (Level::Full, None),
            (Level::Diff, Some(1)),
            (Level::Incr, Some(2)),
        ];
        for (i, (level, change_round)) in steps.into_iter().enumerate() {
            if let Some(round) = change_round {
                change_sample_data(&self.data, round)?;
                (self.say)(&format!(
                    "{}. Changed the data: edited a note, added a photo, deleted a note",
                    3 + 2 * i - 1
                ));
            }
            let report = backup::run(&self.config, level, &[], self.progress)?;
            worst = worst.max(report.exit_code());
            for d in &report.definitions {
                match &d.result {
                    backup::Outcome::Published(s) => (self.say)(&format!(
                        "{}. backup --{}: published {} ({} slices, {} files saved; dar -t passed; restore test {}: {} files compared)",
                        3 + 2 * i,
                        level.as_str().to_lowercase(),
                        s.set,
                        s.slices,
                        s.saved_files,
                        s.restore_test.outcome,
                        s.restore_test.compared
                    )),
                    backup::Outcome::Failed { error, .. } => (self.say)(&format!(
                        "backup --{} failed: {error}",
                        level.as_str().to_lowercase()
                    )),
                }
            }
        }
        Ok(worst)
    }

    /// Step 8: the chain in the repository, and what its FULL holds.
    fn show_repository(&mut self) -> Result<list::Listing> {
        let say = &mut self.say;
        let listing = list::list(&crate::copy::repository(&self.config)?, &[])?;
        for d in &listing.definitions {
            say(&format!(
                "8. The repository now holds the chain of {:?}:",
                d.definition
            ));
            for s in &d.sets {
                say(&format!(
                    "     {}  {} bytes  base: {}",
                    s.name,
                    s.size,
                    s.base.as_deref().unwrap_or("-")
                ));
            }
        }
        let repository = self.config.repository.path();
        if let Some(full) = crate::copy::LocalCopy::new(repository)
            .sets("demo")?
            .sets
            .first()
        {
            say(&format!("   {} holds:", full.manifest.set.name));
            for f in &full.manifest.files {
                say(&format!(
                    "     {:<52} {:>9} bytes  {:?}  sha256 {}…",
                    f.path,
                    f.size,
                    f.role,
                    &f.sha256[..16]
                ));
            }
            say(
                "     MANIFEST.toml, SHA256SUMS (which sha256sum -c checks: every file and the manifest)",
            );
        }
        Ok(listing)
    }

    /// Step 9: the chain to the offsite disk.
    fn replicate(&mut self) -> Result<u8> {
        let replicated = crate::replicate::run(&self.config, &[], &[], self.progress)?;
        for d in &replicated.destinations {
            match &d.result {
                crate::replicate::Outcome::Done(s) => (self.say)(&format!(
                    "9. replicate: {} set(s), {} files sent to {:?} ({}), each hashed on the way and checked against its manifest",
                    s.sent.len(),
                    s.files_sent,
                    d.destination,
                    self.offsite.display()
                )),
                crate::replicate::Outcome::Failed { error, .. } => {
                    (self.say)(&format!("replicate failed: {error}"))
                }
            }
        }
        Ok(replicated.exit_code())
    }

    /// Steps 10 to 12: bitrot on the offsite disk (bytes flipped in a slice of the FULL),
    /// found by an audit, repaired by another.
    fn bitrot(&mut self, full: &str) -> Result<u8> {
        let slice = self
            .offsite
            .join("demo")
            .join(full)
            .join(format!("{full}.2.dar"));
        let mut bytes = fs::read(&slice).map_err(Error::io("cannot read", &slice))?;
        for b in bytes.iter_mut().skip(1000).take(64) {
            *b ^= 0xff;
        }
        fs::write(&slice, bytes).map_err(Error::io("cannot write", &slice))?;
        (self.say)(&format!(
            "10. Flipped 64 bytes in {} on the offsite disk (bitrot)",
            slice.display()
        ));
        let state = crate::state::State::open(&self.config.state_dir())?;
        let offsite_name = ["offsite".to_owned()];
        let mut worst = exit::OK;
        for (step, repair) in [(11, false), (12, true)] {
            let options = crate::audit::Options {
                repair,
                ..Default::default()
            };
            let report = crate::audit::run(
                Some(&self.config),
                &offsite_name,
                &options,
                &state,
                self.progress,
                None,
            )?;
            let files: Vec<String> = report
                .copies
                .iter()
                .flat_map(|c| c.sets.iter())
                .flat_map(|s| s.files.iter())
                .map(|f| {
                    let from = f
                        .repaired_from
                        .as_deref()
                        .map(|r| format!(" from {r}"))
                        .unwrap_or_default();
                    format!("{} {} -> {}{from}", f.path, f.found, f.status.as_str())
                })
                .collect();
            (self.say)(&format!(
                "{step}. audit offsite{}: exit code {}: {}",
                if repair { " --repair" } else { "" },
                report.exit_code(),
                if files.is_empty() {
                    "every file matches its manifest".to_owned()
                } else {
                    files.join("; ")
                }
            ));
            if repair {
                worst = report.exit_code();
            }
        }
        Ok(worst)
    }

    /// Step 13: two files as they were at the FULL, from the offsite copy: the note edited
    /// since, and the one deleted since (absent as of today).
    fn restore_as_of(&mut self, created: &str) -> Result<()> {
        let target = self.dir.join("restored");
        let edited = "documents/year-2020/note-07.txt";
        let deleted = "documents/year-2021/note-08.txt";
        let request = crate::restore::Request {
            from: Some("offsite".into()),
            definition: "demo".into(),
            as_of: Some(created.to_owned()),
            target: target.clone(),
            paths: vec![edited.into(), deleted.into()],
            overwrite: false,
            trust_bundle: false,
        };
        let report = crate::restore::run(Some(&self.config), &request)?;
        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        (self.say)(&format!(
            "13. restore --from offsite --as-of {created} {edited} {deleted}: from {} into {}:\n     {edited}: {} bytes then, {} bytes today; {deleted}: restored as it was (deleted since)",
            report.chain.join(" + "),
            target.display(),
            size(&target.join(edited)),
            size(&self.data.join(edited)),
        ));
        Ok(())
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("     {l}\n")).collect()
}
