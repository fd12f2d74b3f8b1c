//! FULL, DIFF and INCR over the realistic corpus (scripts/corpus: home video and RAW photos
//! dar fails to compress, a video crossing slices, small files, a sparse image, hard links):
//! every published set proves itself with tools we did not write (sha256sum, Debian's par2,
//! dar) and with darvault's own audit, and the chain restores the source exactly.

mod common;

use common::*;

/// A cycle over the corpus; with `s3`, an S3 copy of it too, audited through a proxy that
/// counts what the server sends back.
fn cycle(slice_size: &str, whole_slice_max: &str, s3: bool) {
    let env = Env::new();
    let src = env.path("src");
    corpus(&src, 40, 20);
    let s = servers();
    let upstream = s["S3_ENDPOINT"].trim_start_matches("http://").to_owned();
    let (proxy, downloaded) = counting_proxy(upstream);
    let copy = match s3 {
        true => destination("s3", "corpus", "")
            .0
            .replace(&s["S3_ENDPOINT"], &format!("http://127.0.0.1:{proxy}")),
        false => String::new(),
    };
    env.config(&format!(
        "[[definition]]\nname = \"media\"\nsource = {:?}\nslice_size = {slice_size:?}\n\
         par2_whole_slice_max = {whole_slice_max:?}\n\n{copy}",
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
    let out = env.run(&["audit", "--deep", "repository"]);
    assert_eq!(code(&out), 0, "audit: {}", stdout(&out));
    if s3 {
        // The S3 copy is proven by the checksums the server keeps: counted at the proxy, an
        // audit downloads less than 0.1% of the copy.
        assert_eq!(code(&env.run(&["replicate"])), 0);
        let copy_bytes: u64 = walkdir::WalkDir::new(env.repo())
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .map(|e| e.metadata().unwrap().len())
            .sum();
        downloaded.store(0, std::sync::atomic::Ordering::Relaxed);
        let out = env.run(&["audit", "s3"]);
        assert_eq!(code(&out), 0, "audit: {}", stdout(&out));
        let read = downloaded.load(std::sync::atomic::Ordering::Relaxed);
        println!("audit of the S3 copy: {read} bytes downloaded of {copy_bytes}");
        assert!(
            read * 1000 < copy_bytes,
            "{read} bytes downloaded of {copy_bytes}"
        );
    }
    // The whole chain, with plain dar, is the source as of the INCR.
    let target = env.path("restored");
    extract_chain(&sets, &target);
    assert_same_tree(expected.last().unwrap(), &snapshot(&target));
}

/// Small slices, PAR2 in groups of slices made after dar has finished.
#[test]
fn a_realistic_cycle_proves_itself_with_small_slices() {
    cycle("1M", "64M", false);
}

/// Slices above par2_whole_slice_max: each slice's PAR2 is made while dar writes the next one,
/// and the big video's slices are rewritten by dar after that. The chain is also replicated
/// to S3, whose audit downloads almost nothing.
#[test]
fn a_realistic_cycle_proves_itself_with_per_slice_par2() {
    cycle("8M", "4M", true);
}
