//! FULL, DIFF and INCR over the realistic corpus (scripts/corpus: home video and RAW photos
//! dar fails to compress, a video crossing slices, small files, a sparse image, hard links):
//! every published set proves itself with tools we did not write (sha256sum, Debian's par2,
//! dar) and with darvault's own audit, and the chain restores the source exactly.

mod common;

use common::*;

fn cycle(slice_size: &str, whole_slice_max: &str) {
    let env = Env::new();
    let src = env.path("src");
    corpus(&src, 40, 20);
    env.config(&format!(
        "[[definition]]\nname = \"media\"\nsource = {:?}\nslice_size = {slice_size:?}\n\
         par2_whole_slice_max = {whole_slice_max:?}\n",
        src.display().to_string()
    ));
    let mut expected = Vec::new();
    for (round, level) in ["--full", "--diff", "--incr"].iter().enumerate() {
        if round > 0 {
            corpus_change(&src, round as u32);
        }
        expected.push(snapshot(&src));
        let out = env.run(&["backup", level]);
        assert_eq!(code(&out), 0, "{level}: {}", stderr(&out));
    }
    let sets = env.sets("media");
    assert_eq!(sets.len(), 3);
    for set in &sets {
        sha256sum_check(set);
        par2_verify_all(set);
        dar_test(set);
    }
    let out = env.run(&["audit", "--deep"]);
    assert_eq!(code(&out), 0, "audit: {}", stdout(&out));
    // The whole chain, with plain dar, is the source as of the INCR.
    let target = env.path("restored");
    extract_chain(&sets, &target);
    assert_same_tree(expected.last().unwrap(), &snapshot(&target));
}

/// Small slices, PAR2 in groups of slices made after dar has finished.
#[test]
fn a_realistic_cycle_proves_itself_with_small_slices() {
    cycle("1M", "64M");
}

/// Slices above par2_whole_slice_max: each slice's PAR2 is made while dar writes the next one,
/// and the big video's slices are rewritten by dar after that.
#[test]
fn a_realistic_cycle_proves_itself_with_per_slice_par2() {
    cycle("8M", "4M");
}
