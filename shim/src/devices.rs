//! The device rules a container's cgroup enforces, made what runc's are, by the create's worker after the create
//! and before the container runs ([`crate::fidelity`]).
//!
//! - **The systemd cgroup driver applied none.** On a cgroup v2 host libcgroups 0.7's systemd manager (a kubelet
//!   node's `SystemdCgroup = true`, Docker's default driver there, every user-namespaced container there) starts
//!   the container's scope with no `DevicePolicy`/`DeviceAllow` and loads no device program: a container's root
//!   could `mknod` the host's disk (CAP_MKNOD is in every default capability set) and read and write it. runc
//!   gives systemd the rules and loads its own program besides.
//! - **The host's console.** libcgroups adds `c 5:1 rwm` (`/dev/console`) to every container's rules; runc's
//!   defaults have not had it for years (a container's terminal is a pts, `c 136:*`). With CAP_MKNOD a container
//!   could open the host's console and read what is typed there. The CRI plugin's spec does not allow it; ctr's
//!   does, and then it stays.
//!
//! - **A spec with no device rules kept its parent's** (v1). A new v1 cgroup starts with its parent's rules,
//!   usually "allow everything", and libcgroups only adds to them; runc's start from "deny everything". Specs from
//!   containerd, Docker and the CRI plugin begin with a "deny everything" rule; a hand-written one may have none.
//!
//! On v2 the worker loads a program of the spec's rules followed by runc's defaults and puts it on the container's
//! cgroup in place of whatever is there (libcgroups' program with the console, or none); on v1 it takes back from
//! the container's `devices` cgroup the console access the spec's rules do not grant, or, for a spec whose rules
//! never reset, writes runc's whole set there.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use libcgroups::v2::devices::bpf::{BpfError, prog};
use libcgroups::v2::devices::emulator::Emulator;
use libcgroups::v2::devices::program::{Program, ProgramError};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, Spec};
use runtime_hooks::discovery::{CgroupMount, Hierarchy};

/// The most bytes of device rules (as JSON) one Create sends its worker: its request is one datagram of at most
/// 64 KiB. A device plugin's allocation is a few rules per device; a privileged container has one.
pub const MAX_RULES_BYTES: usize = 16 * 1024;

/// `/dev/console`.
const CONSOLE: (i64, i64) = (5, 1);

/// What went wrong with a container's device rules.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "the spec has {rules} device rules ({bytes} bytes as JSON), more than the {MAX_RULES_BYTES} bytes of them this runtime enforces"
    )]
    TooMany { rules: usize, bytes: usize },
    #[error("building the container's device program")]
    Program(#[from] ProgramError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("finding the container's cgroup: {0}")]
    Cgroup(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DeviceError {
    let what = what.into();
    move |source| DeviceError::Io { what, source }
}

fn bpf(what: impl Into<String>) -> impl FnOnce(BpfError) -> DeviceError {
    let what = what.into();
    move |e| DeviceError::Io {
        what,
        source: match e {
            BpfError::Errno(e) => std::io::Error::from_raw_os_error(e.0),
            other => std::io::Error::other(other.to_string()),
        },
    }
}

/// The spec's device rules (`linux.resources.devices`), in order; bounded ([`MAX_RULES_BYTES`]).
pub fn spec_rules(spec: &Spec) -> Result<Vec<LinuxDeviceCgroup>, DeviceError> {
    let rules: Vec<LinuxDeviceCgroup> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    let bytes = serde_json::to_vec(&rules).map_or(usize::MAX, |v| v.len());
    if bytes > MAX_RULES_BYTES {
        return Err(DeviceError::TooMany {
            rules: rules.len(),
            bytes,
        });
    }
    Ok(rules)
}

/// An allow rule: `access` on `typ` `major:minor` (`None`: any).
fn allow(
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(true)
        .set_typ(Some(typ))
        .set_major(major)
        .set_minor(minor)
        .set_access(Some(access.to_owned()));
    rule
}

/// runc's default rules (`specconv.AllowedDevices`), which it appends to the spec's: mknod of any node; null,
/// random, full, tty, zero, urandom; the pts, ptmx and tun/tap. Not the console.
pub fn runc_defaults() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{B, C};
    let mut rules = vec![allow(C, None, None, "m"), allow(B, None, None, "m")];
    for (major, minor) in [(1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9)] {
        rules.push(allow(C, Some(major), Some(minor), "rwm"));
    }
    rules.push(allow(C, Some(136), None, "rwm"));
    rules.push(allow(C, Some(5), Some(2), "rwm"));
    rules.push(allow(C, Some(10), Some(200), "rwm"));
    rules
}

/// The accesses (of `rwm`, in that order) that `rules`, applied in order from "deny everything", grant on the
/// character device `major:minor` (cgroup v1's semantics: an `a` rule resets to all or nothing).
pub fn granted(rules: &[LinuxDeviceCgroup], (major, minor): (i64, i64)) -> String {
    let mut granted = String::new();
    for rule in rules {
        let typ = rule.typ().unwrap_or_default();
        if typ == LinuxDeviceType::A {
            granted = if rule.allow() {
                "rwm".into()
            } else {
                String::new()
            };
            continue;
        }
        let matches = typ == LinuxDeviceType::C
            && rule.major().is_none_or(|m| m == major)
            && rule.minor().is_none_or(|m| m == minor);
        if !matches {
            continue;
        }
        let access = rule.access().as_deref().unwrap_or("rwm");
        for letter in access.chars().filter(|c| "rwm".contains(*c)) {
            granted.retain(|c| c != letter);
            if rule.allow() {
                granted.push(letter);
            }
        }
    }
    "rwm".chars().filter(|l| granted.contains(*l)).collect()
}

/// Makes the device rules of the container whose init is `init` the spec's `rules` and runc's defaults.
pub fn apply(init: i32, rules: &[LinuxDeviceCgroup]) -> Result<(), DeviceError> {
    // The host's layout as the zygote read it once (inherited by its workers): no mountinfo parse per Create.
    let hierarchy = Hierarchy::detect(&runtime_hooks::HostRoots::default())
        .map_err(|e| DeviceError::Cgroup(predictive_api::error_chain(&e)))?;
    let own = std::fs::read_to_string(format!("/proc/{init}/cgroup"))
        .map_err(io(format!("reading the cgroups of the init {init}")))?;
    match &hierarchy {
        Hierarchy::Unified(mount) => {
            let dir = cgroup_dir(&own, mount, str::is_empty)?;
            replace_program(&dir, rules)
        }
        Hierarchy::Legacy(v1) | Hierarchy::Hybrid { v1, .. } => {
            let is_devices = |c: &str| c.split(',').any(|c| c == "devices");
            let Some(mount) = v1
                .iter()
                .find(|m| m.controllers.iter().any(|c| c == "devices"))
            else {
                return Ok(());
            };
            let dir = cgroup_dir(&own, mount, is_devices)?;
            if rules.iter().any(resets) {
                deny_console(&dir, rules)
            } else {
                replay_v1(&dir, rules)
            }
        }
    }
}

/// The directory under `mount` of the cgroup that the `/proc/<pid>/cgroup` text `own` names for the hierarchy
/// whose controller field `which` picks.
fn cgroup_dir(
    own: &str,
    mount: &CgroupMount,
    which: impl Fn(&str) -> bool,
) -> Result<PathBuf, DeviceError> {
    own.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            Some((f.next()?, f.next()?, f.next()?))
        })
        .find(|(_, controllers, _)| which(controllers))
        .and_then(|(_, _, path)| runtime_hooks::discovery::mount_dir(mount, path))
        .ok_or_else(|| {
            DeviceError::Cgroup(format!(
                "the init is in no cgroup under {}",
                mount.mount_point.display()
            ))
        })
        .and_then(|dir| {
            // The host's root cgroup is every process's: a rule set there (a v1 deny exception, a v2 program)
            // would reach the whole host.
            if dir == mount.mount_point {
                Err(DeviceError::Cgroup(format!(
                    "the init is in the root cgroup of {}, whose device rules are the host's",
                    mount.mount_point.display()
                )))
            } else {
                Ok(dir)
            }
        })
}

/// v1: the console accesses the spec's rules do not grant, taken back (libcgroups granted `rwm`).
fn deny_console(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), DeviceError> {
    let granted = granted(rules, CONSOLE);
    let denied: String = "rwm".chars().filter(|l| !granted.contains(*l)).collect();
    if denied.is_empty() {
        return Ok(());
    }
    let file = dir.join("devices.deny");
    std::fs::write(&file, format!("c {}:{} {denied}", CONSOLE.0, CONSOLE.1))
        .map_err(io(format!("writing {}", file.display())))
}

/// Whether `rule` is about every device (`a`, or no type): on v1 it sets the cgroup's default and drops every
/// exception, whatever its access.
fn resets(rule: &LinuxDeviceCgroup) -> bool {
    rule.typ().unwrap_or_default() == LinuxDeviceType::A
}

/// `rule` as a line for v1's `devices.allow` or `devices.deny` (`c 10:229 rwm`; no access means all three, as
/// [`granted`] reads it).
fn v1_line(rule: &LinuxDeviceCgroup) -> String {
    let part = |n: Option<i64>| n.map_or_else(|| "*".to_owned(), |n| n.to_string());
    let access = rule
        .access()
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or("rwm");
    format!(
        "{} {}:{} {access}",
        rule.typ().unwrap_or_default().as_str(),
        part(rule.major()),
        part(rule.minor())
    )
}

/// v1, a spec whose rules never reset (hand-written: containerd's, Docker's and the CRI plugin's begin with "deny
/// everything"): the cgroup started with its parent's rules, usually "allow everything", and libcgroups only
/// added to them. runc's are "deny everything", the spec's, then its defaults: written so, in that order.
fn replay_v1(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), DeviceError> {
    let write = |file: &str, line: &str| {
        let path = dir.join(file);
        std::fs::write(&path, line).map_err(io(format!("writing `{line}` to {}", path.display())))
    };
    write("devices.deny", "a")?;
    for rule in rules.iter().chain(&runc_defaults()) {
        let file = if rule.allow() {
            "devices.allow"
        } else {
            "devices.deny"
        };
        write(file, &v1_line(rule))?;
    }
    Ok(())
}

/// v2: a device program of `rules` then runc's defaults, attached to `dir` in place of the programs there.
fn replace_program(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), DeviceError> {
    let mut emulator = Emulator::with_default_allow(false);
    emulator.add_rules(rules);
    emulator.add_rules(&runc_defaults());
    let program = Program::from_rules(&emulator.rules, emulator.default_allow)?;
    let cgroup = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(io(format!("opening {}", dir.display())))?;
    // The license is read up to its NUL.
    let loaded =
        prog::load("Apache\0", program.bytecodes()).map_err(bpf("loading the device program"))?;
    // SAFETY: load just returned this descriptor; nothing else owns it.
    let loaded = unsafe { OwnedFd::from_raw_fd(loaded) };
    let old = prog::query(cgroup.as_raw_fd()).map_err(bpf(format!(
        "listing the device programs of {}",
        dir.display()
    )))?;
    // SAFETY: query opened these descriptors for this process; each is owned here and closed on drop.
    let old: Vec<OwnedFd> = old
        .into_iter()
        .map(|p| unsafe { OwnedFd::from_raw_fd(p.fd) })
        .collect();
    prog::attach(loaded.as_raw_fd(), cgroup.as_raw_fd()).map_err(bpf(format!(
        "attaching the device program to {}",
        dir.display()
    )))?;
    for p in &old {
        prog::detach2(p.as_raw_fd(), cgroup.as_raw_fd()).map_err(bpf(format!(
            "detaching the previous device program of {}",
            dir.display()
        )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(v: serde_json::Value) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_value(v).expect("device rules")
    }

    #[test]
    fn the_console_is_granted_only_by_a_rule_that_names_it_or_allows_everything() {
        let cri = rules(serde_json::json!([{"allow": false, "access": "rwm"}]));
        assert_eq!(granted(&cri, CONSOLE), "");
        let ctr = rules(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 1, "access": "rwm"}
        ]));
        assert_eq!(granted(&ctr, CONSOLE), "rwm");
        let privileged = rules(serde_json::json!([{"allow": true, "access": "rwm"}]));
        assert_eq!(granted(&privileged, CONSOLE), "rwm");
        let partial = rules(serde_json::json!([
            {"allow": true, "access": "rwm"},
            {"allow": false, "type": "c", "major": 5, "access": "w"},
            {"allow": false, "type": "b", "major": 5, "minor": 1, "access": "r"}
        ]));
        assert_eq!(granted(&partial, CONSOLE), "rm");
        let every_char = rules(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "access": "r"}
        ]));
        assert_eq!(granted(&every_char, CONSOLE), "r");
        // runc's defaults grant the console nothing but mknod.
        assert_eq!(granted(&[cri, runc_defaults()].concat(), CONSOLE), "m");
    }

    #[test]
    fn a_cri_spec_with_runcs_defaults_denies_the_console_and_a_disk() {
        let mut emulator = Emulator::with_default_allow(false);
        emulator.add_rules(&rules(
            serde_json::json!([{"allow": false, "access": "rwm"}]),
        ));
        emulator.add_rules(&runc_defaults());
        let program =
            Program::from_rules(&emulator.rules, emulator.default_allow).expect("a program");
        let run = |typ, major, minor, access: &str| {
            program
                .execute(typ, major, minor, access.to_owned())
                .expect("the program runs")
                == 1
        };
        use LinuxDeviceType::{B, C};
        assert!(run(C, 1, 3, "rw"), "/dev/null");
        assert!(run(C, 136, 4, "rw"), "a pts");
        assert!(run(B, 8, 0, "m"), "mknod of a disk");
        assert!(!run(B, 8, 0, "r"), "reading a disk");
        assert!(!run(C, 5, 1, "r"), "reading the console");
        assert!(!run(C, 5, 1, "w"), "writing the console");
    }

    #[test]
    fn a_v1_cgroup_of_a_spec_that_never_resets_gets_runcs_rules_from_deny_everything() {
        // A fake v1 `devices` directory: each write replaces the file, so each holds the last line written to it.
        let dir = tempfile::tempdir().expect("a temp dir");
        let spec = rules(serde_json::json!([
            {"allow": true, "type": "c", "major": 10, "minor": 229},
            {"allow": false, "type": "b", "major": 8, "access": "w"}
        ]));
        assert!(!spec.iter().any(resets));
        assert!(
            rules(serde_json::json!([{"allow": false, "access": "rwm"}]))
                .iter()
                .all(resets)
        );
        let lines: Vec<String> = spec.iter().chain(&runc_defaults()).map(v1_line).collect();
        assert_eq!(lines[0], "c 10:229 rwm", "no access is all three");
        assert_eq!(lines[1], "b 8:* w");
        assert_eq!(lines[2], "c *:* m");
        assert!(lines.contains(&"c 136:* rwm".to_owned()));
        replay_v1(dir.path(), &spec).expect("a replay into a directory");
        // The last line of each file is the last rule of its kind.
        assert_eq!(
            std::fs::read_to_string(dir.path().join("devices.deny")).expect("deny"),
            "b 8:* w"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("devices.allow")).expect("allow"),
            "c 10:200 rwm"
        );
        // What the cgroup then grants, as runc's would: FUSE by the spec, not the console.
        let all = [
            rules(serde_json::json!([{"allow": false}])),
            spec,
            runc_defaults(),
        ]
        .concat();
        assert_eq!(granted(&all, (10, 229)), "rwm");
        assert_eq!(granted(&all, CONSOLE), "m");
    }

    #[test]
    fn a_spec_with_too_many_device_rules_is_refused_by_name() {
        let many: Vec<serde_json::Value> = (0..1000)
            .map(|n| serde_json::json!({"allow": true, "type": "c", "major": 240, "minor": n, "access": "rwm"}))
            .collect();
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"resources": {"devices": many}}
        }))
        .expect("a spec");
        let e = spec_rules(&spec).expect_err("1,000 rules are more than a Create carries");
        assert!(e.to_string().contains("1000 device rules"), "{e}");
        let few: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]}}
        }))
        .expect("a spec");
        assert_eq!(spec_rules(&few).expect("one rule").len(), 1);
    }
}
