//! Marks the tests that build container images `#[ignore]`d unless they are asked for
//! (`SHOAL_TEST_DOCKER=1` or `CI=true`; see `src/skip.rs`), so a plain `cargo test` neither
//! builds ~3.5 GB of images nor installs packages, and lists those tests as `ignored` with the
//! reason. Cargo reruns this script when either variable changes.

// Shared with the library, which uses the rest of the file.
#[allow(dead_code)]
#[path = "src/skip.rs"]
mod skip;

fn main() {
    println!("cargo::rerun-if-changed=src/skip.rs");
    println!("cargo::rerun-if-env-changed={}", skip::CI);
    println!("cargo::rerun-if-env-changed={}", skip::DOCKER_OPT_IN);
    println!("cargo::rustc-check-cfg=cfg(shoal_test_docker)");
    let var = |name: &str| std::env::var(name).ok();
    if skip::docker_wanted(var(skip::CI).as_deref(), var(skip::DOCKER_OPT_IN).as_deref()) {
        println!("cargo::rustc-cfg=shoal_test_docker");
    }
}
