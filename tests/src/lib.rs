//! End-to-end test harness: a private containerd per test, driven through `ctr`.
//!
//! Each test starts its own containerd (root, state, sockets under a fresh directory in /tmp),
//! imports a busybox image built by `scripts/make-image.sh`, runs containers through
//! `ctr run --runtime $PREDICTIVE_E2E_RUNTIME`, and ends with [`Containerd::finish`], which stops
//! containerd and checks that the host is clean (no cgroups, mounts, fifos, state dirs or
//! processes left for any container id the test used).
//!
//! Settings come from the environment (see [`Settings`]). Every external command runs with a
//! timeout, so a hung shim fails a test instead of hanging CI.

pub mod clean;
pub mod cmd;
pub mod containerd;
pub mod cri;
pub mod docker;
pub mod kubelet;
pub mod pty;
pub mod settings;
pub mod ttrpc;

pub use cmd::{Bg, Output, run_cmd};
pub use containerd::Containerd;
pub use settings::Settings;

/// Returns false (after printing `SKIPPED: reason`) when the test cannot run here.
/// Under `CI=true` a skip is a failure: CI runs as root and must run everything.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    skip(
        test,
        "needs root (a private containerd, cgroups and mounts)",
    );
    false
}

/// Print a loud skip; panic instead when running in CI.
pub fn skip(test: &str, reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test}: would be skipped under CI ({reason}); CI must run every test");
    }
    println!("SKIPPED: {test}: {reason}");
    eprintln!("SKIPPED: {test}: {reason}");
}
