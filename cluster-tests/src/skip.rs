//! Which tests run on this machine, and how the ones that do not say so.
//!
//! - A test that needs an external tool (promtool, Docker, …) skips where the tool is absent,
//!   except under `CI=true`, where the absence fails it: `.ci/run` installs every tool.
//! - A test that changes the host (builds container images; `deploy/docker/base.sh` may
//!   apt-get install debootstrap) runs only when asked: `SHOAL_TEST_DOCKER=1`, or `CI=true`.
//!   `build.rs` reads this file too and, when not asked, marks such tests
//!   `#[ignore = "reason"]`, so libtest prints them as `ignored, <reason>` and counts them.
//!
//! libtest captures what a passing test prints with `print!`/`eprint!`, so a skip is written
//! straight to the process's stderr ([`announce`]), which libtest does not capture.

/// The variable CI sets (`CI=true`): every test must run, a missing tool is a failure.
pub const CI: &str = "CI";

/// The variable that asks for the tests that build container images (`SHOAL_TEST_DOCKER=1`).
pub const DOCKER_OPT_IN: &str = "SHOAL_TEST_DOCKER";

/// What a test that needs an external tool does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolCheck {
    /// The tool is here: the test runs.
    Run,
    /// The tool is absent on a developer's machine: the test says so and passes.
    Skip,
    /// The tool is absent under `CI=true`: the test fails.
    Fail,
}

/// Whether `CI` (its value, if set) says this is CI.
pub fn is_ci(ci: Option<&str>) -> bool {
    ci == Some("true")
}

/// What a test does when its tool was `found` or not, given the value of `CI`.
pub fn tool_check(found: bool, ci: Option<&str>) -> ToolCheck {
    match (found, is_ci(ci)) {
        (true, _) => ToolCheck::Run,
        (false, true) => ToolCheck::Fail,
        (false, false) => ToolCheck::Skip,
    }
}

/// Whether the tests that build container images run, given the values of `CI` and
/// `SHOAL_TEST_DOCKER`.
pub fn docker_wanted(ci: Option<&str>, opt_in: Option<&str>) -> bool {
    is_ci(ci) || matches!(opt_in, Some("1" | "true"))
}

/// The line that says a test did not run: `test` is the test's name (libtest names each
/// test's thread after it), `why` the reason and what would make it run. It starts with a
/// newline: libtest writes `test NAME ... ` and its result in two writes, and a skip of a test
/// running in parallel may fall between them; it must not read as that test's result.
pub fn skip_line(test: Option<&str>, why: &str) -> String {
    let test = test.filter(|t| *t != "main").unwrap_or("a test");
    format!("\nSKIPPED {test}: {why}\n")
}

/// Tells, on stderr and past libtest's capture, that the current test did not run and why.
pub fn announce(why: &str) {
    use std::io::Write;
    let line = skip_line(std::thread::current().name(), why);
    // One write, so no other output splits the line.
    let _ = std::io::stderr().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_skips_except_under_ci_where_it_fails() {
        assert_eq!(tool_check(true, None), ToolCheck::Run);
        assert_eq!(tool_check(true, Some("true")), ToolCheck::Run);
        assert_eq!(tool_check(false, None), ToolCheck::Skip);
        assert_eq!(tool_check(false, Some("false")), ToolCheck::Skip);
        assert_eq!(tool_check(false, Some("")), ToolCheck::Skip);
        assert_eq!(tool_check(false, Some("true")), ToolCheck::Fail);
    }

    #[test]
    fn image_builds_run_only_when_asked_or_under_ci() {
        assert!(!docker_wanted(None, None));
        assert!(!docker_wanted(Some("false"), None));
        assert!(!docker_wanted(None, Some("0")));
        assert!(!docker_wanted(None, Some("")));
        assert!(docker_wanted(None, Some("1")));
        assert!(docker_wanted(None, Some("true")));
        assert!(docker_wanted(Some("true"), None));
        assert!(docker_wanted(Some("true"), Some("0")), "CI runs everything");
    }

    #[test]
    fn a_skip_line_names_the_test_and_the_reason() {
        assert_eq!(
            skip_line(Some("observe::metrics_pass_promtool_check"), "promtool is not installed"),
            "\nSKIPPED observe::metrics_pass_promtool_check: promtool is not installed\n"
        );
        // `--test-threads=1` on a platform without threads runs tests on the main thread.
        assert_eq!(skip_line(Some("main"), "x"), "\nSKIPPED a test: x\n");
        assert_eq!(skip_line(None, "x"), "\nSKIPPED a test: x\n");
    }
}
