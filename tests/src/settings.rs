//! Test settings from the environment.
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `PREDICTIVE_E2E_RUNTIME` | `io.containerd.predictive.v2` | runtime passed to `ctr run --runtime` |
//! | `PREDICTIVE_E2E_CONTAINERD` | `1.6` | containerd version: 1.6 (Debian 12), 1.7 (Debian 13), 2.1 (Debian sid) |
//! | `PREDICTIVE_E2E_SHIM_DIR` | `<workspace>/target/release` | put first on containerd's PATH |
//! | `PREDICTIVE_E2E_CACHE` | `/var/cache/predictive-e2e` | unpacked containerd packages, the image tar |
//! | `PREDICTIVE_E2E_KEEP` | unset | `1`: keep a failed test's containerd dir (log, state) |
//! | `PREDICTIVE_E2E_GUEST` | unset | `1`: running in the emulated cgroup v2 guest (scripts/guest-lane.sh): [`Settings::slow`] is 3 |

use std::path::PathBuf;

pub const PREDICTIVE_RUNTIME: &str = "io.containerd.predictive.v2";
pub const PREDICTIVE_SHIM_BINARY: &str = "containerd-shim-predictive-v2";
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
pub const IMAGE: &str = "docker.io/predictive/busybox:latest";

#[derive(Debug, Clone)]
pub struct Settings {
    pub runtime: String,
    pub containerd: String,
    pub shim_dir: PathBuf,
    pub cache: PathBuf,
    pub workspace: PathBuf,
    pub keep: bool,
    /// Running in the emulated cgroup v2 guest (scripts/guest-lane.sh).
    pub guest: bool,
}

impl Settings {
    pub fn from_env() -> Self {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ lives inside the workspace")
            .to_path_buf();
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let containerd = match var("PREDICTIVE_E2E_CONTAINERD").as_deref() {
            None => "1.6".to_string(),
            Some("2") | Some("2.x") => "2.1".to_string(),
            Some(v) => v.to_string(),
        };
        Settings {
            runtime: var("PREDICTIVE_E2E_RUNTIME")
                .unwrap_or_else(|| PREDICTIVE_RUNTIME.to_string()),
            containerd,
            shim_dir: var("PREDICTIVE_E2E_SHIM_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace.join("target/release")),
            cache: var("PREDICTIVE_E2E_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/cache/predictive-e2e")),
            keep: var("PREDICTIVE_E2E_KEEP").is_some_and(|v| v == "1"),
            guest: var("PREDICTIVE_E2E_GUEST").is_some_and(|v| v == "1"),
            workspace,
        }
    }

    /// How much slower than this host the machine under test is: 3 in the emulated guest (software CPU emulation,
    /// measured 3-8x), else 1. Bounds on external commands and broker ticks are multiplied by it; what a test
    /// asserts in ticks stays the same.
    pub fn slow(&self) -> u32 {
        if self.guest { 3 } else { 1 }
    }

    /// The shims' Register budget (`register_budget_ms`) for tests that need Create-time registration: the shipped
    /// default (50 ms) here, where Register answers in 1-10 ms; 1 s in the emulated guest, where it takes 10-200 ms.
    pub fn register_budget_ms(&self) -> u64 {
        if self.slow() > 1 {
            1000
        } else {
            broker::config::Config::default().register_budget_ms
        }
    }

    pub fn is_predictive(&self) -> bool {
        self.runtime == PREDICTIVE_RUNTIME
    }

    pub fn script(&self, name: &str) -> PathBuf {
        self.workspace.join("scripts").join(name)
    }

    /// containerd >= 2.0 (task API v3, different ctr output in places).
    pub fn is_v2(&self) -> bool {
        self.containerd.starts_with('2')
    }
}
