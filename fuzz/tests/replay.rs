//! Replays every checked-in fuzz input through its target's checks, on
//! stable: the seed corpora (`corpus/<target>/seed-*`), what fuzzing kept
//! after minimization (`corpus/<target>/*`), and every crash found and fixed
//! (`regressions/<target>/*`, named after what it found). One test: the
//! checks bound the process's heap, so nothing else may run beside them.

use std::path::Path;

#[test]
fn every_checked_in_input_replays_through_its_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut total = 0;
    for (target, check) in cairn_fuzz::TARGETS {
        let mut inputs = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            let mut paths: Vec<_> = entries.map(|e| e.expect("a corpus entry").path()).collect();
            paths.sort();
            for path in paths {
                let bytes = std::fs::read(&path).expect("a corpus file");
                eprintln!("replay {}", path.display());
                check(&bytes);
                inputs += 1;
            }
        }
        assert!(
            inputs > 0,
            "no corpus for fuzz target {target}: run `cargo run -p cairn-fuzz --example seeds`"
        );
        println!("{target:<22} {inputs:>6} inputs replayed");
        total += inputs;
    }
    println!(
        "replay: {total} inputs through {} targets, all checks held",
        cairn_fuzz::TARGETS.len()
    );
}
