//! What kubelet does to a node's cgroup tree before it asks the CRI for a pod, for tests that stand in for it:
//! the pod's cgroup, made in every hierarchy with the pod's limits, by the cgroup driver kubelet would use.
//!
//! - cgroupfs driver: `/kubepods/<qos>/pod<uid>` directories (v1: in each controller's hierarchy; v2: in the
//!   unified tree, controllers enabled down to the pod);
//! - systemd driver: the slice `kubepods-<qos>-pod<uid>.slice` (`/kubepods.slice/kubepods-<qos>.slice/...`). On a
//!   host booted with systemd and cgroup v2 it is asked of systemd (`systemctl set-property --runtime`, `start`),
//!   as kubelet does over D-Bus; elsewhere its directories are made as systemd would lay them out.
//!
//! Everything made is removed on drop (deepest first; a directory another test still uses stays).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cmd::run_cmd;

const ROOT: &str = "/sys/fs/cgroup";

/// `/proc/<pid>/cgroup`'s paths, per hierarchy: the v1 controllers, the cgroup2 tree and `name=systemd` (runc's
/// cgroupfs driver joins systemd's named hierarchy too, so `systemd-cgls` and kubelet find the container in its
/// pod); other named hierarchies are left out.
pub fn cgroups_of(pid: i32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            (!ctrl.starts_with("name=") || ctrl == "name=systemd")
                .then(|| (ctrl.to_owned(), path.to_owned()))
        })
        .collect()
}

/// The cgroup hierarchies of this host: (mount point, v1 controllers; empty for cgroup2).
pub fn hierarchies() -> Vec<(PathBuf, Vec<String>)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let opts = r.nth(1)?;
            match fstype {
                "cgroup2" => Some((PathBuf::from(mount), Vec::new())),
                "cgroup" => Some((
                    PathBuf::from(mount),
                    opts.split(',')
                        .filter(|o| {
                            !matches!(*o, "rw" | "ro" | "nosuid" | "nodev" | "noexec" | "relatime")
                        })
                        .map(str::to_owned)
                        .collect(),
                )),
                _ => None,
            }
        })
        .collect()
}

/// A host booted with systemd on a pure cgroup v2 hierarchy: where kubelet's systemd driver really runs.
pub fn systemd_v2_host() -> bool {
    Path::new("/run/systemd/system").is_dir()
        && Path::new(ROOT).join("cgroup.controllers").is_file()
}

/// Kubelet's cgroup driver for a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Cgroupfs,
    Systemd,
}

/// A pod's cgroup, made for a test.
pub struct PodCgroup {
    /// What kubelet passes as the sandbox's `cgroup_parent`.
    pub cgroup_parent: String,
    /// The pod cgroup's path from a hierarchy root.
    pub path: String,
    made: Vec<PathBuf>,
    units: Vec<String>,
}

fn systemctl(args: &[&str]) -> crate::cmd::Output {
    let mut c = Command::new("systemctl");
    c.args(args);
    run_cmd(c, Duration::from_secs(60))
}

impl PodCgroup {
    /// The Burstable pod `uid`'s cgroup for `driver`, with `memory_max` bytes and `cpus` cores as its limits.
    pub fn create(driver: Driver, uid: &str, memory_max: u64, cpus: f64) -> PodCgroup {
        let uid = uid.replace('-', "_");
        match driver {
            Driver::Cgroupfs => {
                let path = format!("/kubepods/burstable/pod{uid}");
                let mut pod = PodCgroup {
                    cgroup_parent: path.clone(),
                    path,
                    made: Vec::new(),
                    units: Vec::new(),
                };
                pod.make_dirs(memory_max, cpus);
                pod
            }
            Driver::Systemd => {
                let slice = format!("kubepods-burstable-pod{uid}.slice");
                let path = format!("/kubepods.slice/kubepods-burstable.slice/{slice}");
                let mut pod = PodCgroup {
                    cgroup_parent: path.clone(),
                    path,
                    made: Vec::new(),
                    units: Vec::new(),
                };
                if systemd_v2_host() {
                    let quota = format!("CPUQuota={}%", (cpus * 100.0).round() as u64);
                    let mem = format!("MemoryMax={memory_max}");
                    systemctl(&["set-property", "--runtime", &slice, &mem, &quota])
                        .expect_ok("systemctl set-property on the pod slice");
                    systemctl(&["start", &slice]).expect_ok("systemctl start the pod slice");
                    pod.units.push(slice);
                } else {
                    pod.make_dirs(memory_max, cpus);
                }
                pod
            }
        }
    }

    fn make_dirs(&mut self, memory_max: u64, cpus: f64) {
        let quota = ((cpus * 100_000.0).round() as u64).to_string();
        // Every hierarchy, named ones (`name=systemd`) too: kubelet's cgroupfs driver (runc's fs manager) makes the
        // pod's directory in each, and its containers' directories go below it.
        for (mount, controllers) in hierarchies() {
            let mut at = mount.clone();
            for part in self.path.trim_start_matches('/').split('/') {
                at.push(part);
                if std::fs::create_dir(&at).is_ok() {
                    self.made.push(at.clone());
                    if controllers.iter().any(|c| c == "cpuset") {
                        // v1 cpuset: a new cgroup has no CPUs or memory nodes until given its parent's.
                        for f in ["cpuset.cpus", "cpuset.mems"] {
                            let parent = at.parent().expect("below the root").join(f);
                            if let Ok(v) = std::fs::read_to_string(&parent) {
                                let _ = std::fs::write(at.join(f), v.trim());
                            }
                        }
                    }
                    if controllers.is_empty() && at.parent() != Some(&mount) {
                        // v2: the controllers a pod's containers need, enabled down the path (kubelet's job).
                        let _ = std::fs::write(
                            at.parent()
                                .expect("below the root")
                                .join("cgroup.subtree_control"),
                            "+cpu +memory +pids +io",
                        );
                    }
                }
            }
            let has = |c: &str| controllers.iter().any(|x| x == c);
            let writes: Vec<(&str, String)> = if controllers.is_empty() {
                let _ = std::fs::write(
                    mount.join("cgroup.subtree_control"),
                    "+cpu +memory +pids +io",
                );
                let _ = std::fs::write(at.join("cgroup.subtree_control"), "+cpu +memory +pids +io");
                vec![
                    ("memory.max", memory_max.to_string()),
                    ("cpu.max", format!("{quota} 100000")),
                ]
            } else {
                let mut w = Vec::new();
                if has("memory") {
                    w.push(("memory.limit_in_bytes", memory_max.to_string()));
                }
                if has("cpu") {
                    w.push(("cpu.cfs_quota_us", quota.clone()));
                }
                w
            };
            for (file, value) in writes {
                let f = at.join(file);
                if f.exists() {
                    std::fs::write(&f, &value)
                        .unwrap_or_else(|e| panic!("writing {value} to {}: {e}", f.display()));
                }
            }
        }
    }

    /// The pod cgroup's directory in the hierarchy mounted at `mount`.
    pub fn dir(&self, mount: &Path) -> PathBuf {
        mount.join(self.path.trim_start_matches('/'))
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        for unit in self.units.iter().rev() {
            let _ = systemctl(&["stop", unit]);
        }
        for dir in self.made.iter().rev() {
            for _ in 0..50 {
                match std::fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(Duration::from_millis(100))
                    }
                    _ => break,
                }
            }
        }
    }
}
