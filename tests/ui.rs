//! Compile-time tests of `#[redcache::cached]`: programs that must build (`ui/pass`) and
//! mistakes that must be rejected with a clear message at the right span (`ui/fail`, each
//! with its expected `.stderr`).
//!
//! Compiler output changes between Rust releases, so the expected `.stderr` files are tied
//! to the release they were generated with: on any other compiler the test is ignored.
//! Regenerate them with `TRYBUILD=overwrite cargo test --test ui` and read the diff.

#[rustversion::attr(
    not(stable(1.95)),
    ignore = "compiler messages differ between Rust releases; the .stderr files were generated with 1.95"
)]
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
