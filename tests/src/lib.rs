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
pub mod cni;
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

/// Returns false (after printing `SKIPPED: reason`) when the test cannot run here; under CI a skip is a failure
/// (`testkit`'s one rule).
pub fn require_root(test: &str) -> bool {
    testkit::require_root(test, "a private containerd, cgroups and mounts")
}

pub use testkit::skip;

/// The block device behind `/` (`major:minor` from mountinfo), the disk a container must not read.
pub fn root_disk() -> (u32, u32) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    let dev = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .and_then(|l| l.split(' ').nth(2))
        .expect("a mount at / in mountinfo");
    let (major, minor) = dev.split_once(':').expect("major:minor");
    let dev = (major.parse().expect("major"), minor.parse().expect("minor"));
    assert_ne!(dev.0, 0, "/ is not on a block device here ({dev:?})");
    dev
}
