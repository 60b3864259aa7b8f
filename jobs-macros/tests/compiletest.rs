//! `#[derive(Job)]`: right use compiles; each mistake is one error at the user's code.
#![allow(clippy::unwrap_used)]

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/pass/*.rs");
    t.compile_fail("tests/ui/*.rs");
}
