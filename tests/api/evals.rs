//! The eval suite in `evals/` (see `agentry::evals`), run by `cargo test`.

#[test]
fn every_eval_case_passes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("evals");
    let report = agentry::evals::run(&dir).expect("the eval files parse");
    assert!(report.all_passed(), "{}", report.table());
    assert!(
        report.outcomes.len() >= 80,
        "the suite holds {} cases, fewer than 80",
        report.outcomes.len()
    );
}
