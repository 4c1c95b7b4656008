//! The one rule every test of the workspace follows when it cannot run on this host.
//!
//! A test that cannot run prints `SKIPPED: <test>: <reason>` (on stdout and stderr, so it shows with or without
//! captured output) and returns. Under CI (`CI` set to `true` or `1`, whatever the case) a skip is a failure
//! instead: CI runs as root on a host that has everything, so a skipped test there would be a test that never ran.

/// Whether this run is CI's: `CI` is `true` or `1` (case-insensitive). Any other value, or none, is a developer's.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Say loudly that `test` is skipped and why; panic instead under CI.
pub fn skip(test: &str, reason: &str) {
    assert!(
        !in_ci(),
        "{test}: would be skipped under CI ({reason}); CI must run every test"
    );
    println!("SKIPPED: {test}: {reason}");
    eprintln!("SKIPPED: {test}: {reason}");
}

/// True when running as root; otherwise skips `test` (see [`skip`]) with `needs` as the reason and returns false.
pub fn require_root(test: &str, needs: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    skip(test, &format!("needs root ({needs})"));
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test owns the CI variable: tests of this crate run in one process, and the environment is shared.
    #[test]
    fn ci_is_true_or_1_and_a_skip_under_ci_panics() {
        let saved = std::env::var_os("CI");
        for (value, ci) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("0", false),
            ("false", false),
            ("", false),
        ] {
            // SAFETY: no other test in this crate reads or writes the environment.
            unsafe { std::env::set_var("CI", value) };
            assert_eq!(in_ci(), ci, "CI={value:?}");
            if ci {
                let skipped = std::panic::catch_unwind(|| skip("t", "r"));
                assert!(skipped.is_err(), "CI={value:?}: a skip under CI must fail");
            }
        }
        // SAFETY: as above.
        unsafe {
            match saved {
                Some(v) => std::env::set_var("CI", v),
                None => std::env::remove_var("CI"),
            }
        }
    }
}
