//! A container whose cgroup systemd owns (the systemd cgroup driver: a transient `<prefix>-<id>.scope`, made by
//! libcontainer's systemd manager at Create): every limit the shim later writes into that cgroup — a broker
//! directive, a user's Update — is also set on the unit (D-Bus `SetUnitProperties`, runtime), as runc does for
//! `runc update`. Otherwise systemd keeps the values the unit was started with and writes them back into the
//! cgroup at its next `daemon-reload`, undoing the rewrite.
//!
//! Blocking (a D-Bus round trip per call): call from tokio's blocking pool.

use libcgroups::common::{CgroupManager, ControllerOpt};
use oci_spec::runtime::LinuxResources;

/// How long libcgroups waits for a process to appear in a unit's cgroup (unused here: the unit exists).
const WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A systemd-owned container cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The spec's `slice:prefix:name`.
    cgroups_path: String,
    /// The container id (libcgroups names the unit's description after it).
    container: String,
}

/// Why the unit could not be updated.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// Connecting to systemd over D-Bus, or naming the unit, failed.
    #[error("reaching systemd for the unit of {cgroups_path}")]
    Connect {
        /// The spec's path.
        cgroups_path: String,
        /// libcgroups' error.
        #[source]
        source: libcgroups::systemd::manager::SystemdManagerError,
    },
    /// systemd refused the properties.
    #[error("setting the unit properties of {cgroups_path}")]
    Apply {
        /// The spec's path.
        cgroups_path: String,
        /// libcgroups' error.
        #[source]
        source: libcgroups::systemd::manager::SystemdManagerError,
    },
}

impl Scope {
    /// The unit of a container created with the systemd driver from `cgroups_path` (`slice:prefix:name`).
    pub fn new(cgroups_path: &str, container: &str) -> Scope {
        Scope {
            cgroups_path: cgroups_path.to_owned(),
            container: container.to_owned(),
        }
    }

    /// Sets the unit's properties for the limits in `resources` (CPU quota and weight, memory max/high/low, pids;
    /// `unified` entries such as `memory.high` included). Fields left out are left as they are.
    pub fn sync(&self, resources: &LinuxResources) -> Result<(), ScopeError> {
        let manager = libcgroups::systemd::manager::Manager::new(
            std::path::PathBuf::from(runtime_hooks::discovery::DEFAULT_CGROUP_ROOT),
            std::path::PathBuf::from(&self.cgroups_path),
            self.container.clone(),
            true,
            WAIT,
        )
        .map_err(|source| ScopeError::Connect {
            cgroups_path: self.cgroups_path.clone(),
            source,
        })?;
        let opt = ControllerOpt {
            resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        };
        manager.apply(&opt).map_err(|source| ScopeError::Apply {
            cgroups_path: self.cgroups_path.clone(),
            source,
        })
    }
}
