//! Where a container's cgroup goes: the OCI `linux.cgroupsPath` as containerd, kubelet and Docker give it, for
//! both cgroup drivers.
//!
//! containerd's CRI plugin turns a pod's `cgroup_parent` ending in `.slice` (kubelet's systemd driver) into
//! `kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`, and any other parent into `/<parent>/<id>`. runc reads
//! the first form only with its systemd driver (`SystemdCgroup = true`); given to a cgroupfs driver it becomes a
//! literal directory named after the whole string at the root of every hierarchy — outside the pod, its QoS class
//! and node allocatable. So:
//!
//! - `slice:prefix:name` on a host booted with systemd and a unified (v2) hierarchy: the systemd driver, which asks
//!   systemd for a transient `<prefix>-<name>.scope` in that slice (libcontainer's systemd manager, over D-Bus);
//! - `slice:prefix:name` elsewhere (no systemd as PID 1, or cgroup v1, where libcontainer has no systemd driver):
//!   the directory systemd would have made, `/<expanded slice>/<prefix>-<name>.scope`, through the cgroupfs driver;
//!   asking for the systemd driver (`SystemdCgroup = true`) on a host without systemd is an error, as with runc;
//! - a plain path: the cgroupfs driver, as given; with `SystemdCgroup = true` that is an error, as with runc.

use std::path::Path;

use crate::discovery::{DiscoveryError, normalize_cgroups_path};

/// Which cgroup driver creates the container's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Directories made in the cgroup filesystem.
    Cgroupfs,
    /// A transient scope unit asked of systemd over D-Bus.
    Systemd,
}

/// What of systemd a host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SystemdHost {
    /// systemd is PID 1 (`/run/systemd/system` exists, sd_booted(3)'s test).
    pub booted: bool,
    /// The cgroup hierarchy is unified (cgroup v2 only).
    pub unified: bool,
}

impl SystemdHost {
    /// Looks at `run` (normally `/run`) and `cgroup_root` (normally `/sys/fs/cgroup`).
    pub fn detect(run: &Path, cgroup_root: &Path) -> Self {
        Self {
            booted: run.join("systemd/system").is_dir(),
            unified: cgroup_root.join("cgroup.controllers").is_file(),
        }
    }

    /// The real host.
    pub fn current() -> Self {
        Self::detect(
            Path::new("/run"),
            Path::new(crate::discovery::DEFAULT_CGROUP_ROOT),
        )
    }
}

/// A container's cgroup, decided before it is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The driver.
    pub driver: Driver,
    /// What `linux.cgroupsPath` must say for that driver (unchanged for the systemd driver and plain paths).
    pub cgroups_path: String,
    /// The cgroup's path from the hierarchy root (`/kubepods.slice/.../cri-containerd-<id>.scope`).
    pub path: String,
    /// The systemd unit that owns the cgroup (`cri-containerd-<id>.scope`), for the systemd driver.
    pub unit: Option<String>,
}

impl Placement {
    /// `true` when the spec's `linux.cgroupsPath` must be rewritten to [`Placement::cgroups_path`].
    pub fn rewrites(&self, given: &str) -> bool {
        self.cgroups_path != given
    }
}

/// Why a `cgroupsPath` cannot be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// The path is malformed.
    #[error(transparent)]
    Path(#[from] DiscoveryError),
    /// The systemd driver was asked for on a host where it cannot run.
    #[error(
        "the systemd cgroup driver was asked for (SystemdCgroup = true) but {why}; set SystemdCgroup = false in \
         the runtime's options or use a cgroupfs cgroup parent"
    )]
    SystemdUnavailable {
        /// What the host lacks.
        why: &'static str,
    },
    /// The systemd driver needs `slice:prefix:name`.
    #[error(
        "cgroupsPath {path:?} is not of the form slice:prefix:name, which the systemd cgroup driver \
         (SystemdCgroup = true) needs"
    )]
    NotSystemdForm {
        /// The path given.
        path: String,
    },
}

/// `true` for `slice:prefix:name`.
pub fn is_systemd_form(cgroups_path: &str) -> bool {
    cgroups_path.split(':').count() == 3 && !cgroups_path.starts_with('/')
}

/// Decides the driver and the path for `cgroups_path`; `systemd_requested` is the runtime option
/// `SystemdCgroup` (runc's name).
pub fn place(
    cgroups_path: &str,
    systemd_requested: bool,
    host: SystemdHost,
) -> Result<Placement, PlacementError> {
    let path = normalize_cgroups_path(cgroups_path)?;
    if !is_systemd_form(cgroups_path) {
        if systemd_requested {
            return Err(PlacementError::NotSystemdForm {
                path: cgroups_path.to_owned(),
            });
        }
        return Ok(Placement {
            driver: Driver::Cgroupfs,
            cgroups_path: cgroups_path.to_owned(),
            path,
            unit: None,
        });
    }
    if host.booted && host.unified {
        let unit = path.rsplit('/').next().map(str::to_owned);
        return Ok(Placement {
            driver: Driver::Systemd,
            cgroups_path: cgroups_path.to_owned(),
            path,
            unit,
        });
    }
    if systemd_requested && !host.booted {
        return Err(PlacementError::SystemdUnavailable {
            why: "systemd is not running on this host (no /run/systemd/system)",
        });
    }
    // No systemd, or cgroup v1 (where libcontainer has no systemd driver): the directory systemd would have made.
    Ok(Placement {
        driver: Driver::Cgroupfs,
        cgroups_path: path.clone(),
        path,
        unit: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "kubepods-burstable-pod12.slice:cri-containerd:abc";
    const EXPANDED: &str = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice/cri-containerd-abc.scope";
    const V2_SYSTEMD: SystemdHost = SystemdHost {
        booted: true,
        unified: true,
    };
    const NO_SYSTEMD: SystemdHost = SystemdHost {
        booted: false,
        unified: false,
    };

    #[test]
    fn a_slice_path_goes_to_systemd_on_a_v2_systemd_host() {
        for requested in [false, true] {
            let p = place(POD, requested, V2_SYSTEMD).expect("placed");
            assert_eq!(p.driver, Driver::Systemd);
            assert_eq!(
                p.cgroups_path, POD,
                "libcontainer's systemd manager reads the slice form"
            );
            assert_eq!(p.path, EXPANDED);
            assert_eq!(p.unit.as_deref(), Some("cri-containerd-abc.scope"));
            assert!(!p.rewrites(POD));
        }
    }

    #[test]
    fn a_slice_path_without_systemd_goes_where_systemd_would_have_put_it() {
        let p = place(POD, false, NO_SYSTEMD).expect("placed");
        assert_eq!(p.driver, Driver::Cgroupfs);
        assert_eq!(p.cgroups_path, EXPANDED);
        assert!(p.rewrites(POD));
        // systemd on a v1 host: libcontainer has no systemd driver there, the same directories.
        let v1 = SystemdHost {
            booted: true,
            unified: false,
        };
        for requested in [false, true] {
            assert_eq!(
                place(POD, requested, v1).expect("placed").cgroups_path,
                EXPANDED
            );
        }
    }

    #[test]
    fn asking_for_systemd_where_it_cannot_work_is_a_clear_error() {
        let e = place(POD, true, NO_SYSTEMD).expect_err("no systemd");
        assert!(e.to_string().contains("systemd is not running"), "{e}");
        let e = place("/kubepods/pod1/abc", true, V2_SYSTEMD).expect_err("plain path");
        assert!(e.to_string().contains("slice:prefix:name"), "{e}");
    }

    #[test]
    fn plain_paths_stay_as_given() {
        for host in [V2_SYSTEMD, NO_SYSTEMD] {
            let p = place("/kubepods/burstable/pod1/abc", false, host).expect("placed");
            assert_eq!(p.driver, Driver::Cgroupfs);
            assert_eq!(p.cgroups_path, "/kubepods/burstable/pod1/abc");
            assert!(!p.rewrites("/kubepods/burstable/pod1/abc"));
        }
        assert!(place("/a/../b", false, NO_SYSTEMD).is_err());
        assert!(place("x:y", false, NO_SYSTEMD).is_err());
    }

    #[test]
    fn detect_reads_run_and_the_cgroup_root() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (run, cg) = (tmp.path().join("run"), tmp.path().join("cg"));
        std::fs::create_dir_all(&cg).expect("cg");
        std::fs::create_dir_all(&run).expect("run");
        assert_eq!(SystemdHost::detect(&run, &cg), SystemdHost::default());
        std::fs::create_dir_all(run.join("systemd/system")).expect("systemd");
        std::fs::write(cg.join("cgroup.controllers"), "cpu memory\n").expect("controllers");
        assert_eq!(SystemdHost::detect(&run, &cg), V2_SYSTEMD);
    }
}
