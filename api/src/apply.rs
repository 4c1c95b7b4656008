//! Applying a [`Directive`] to a container's cgroup through `runtime-hooks`: what the shim does with the
//! directives a Report returns. Directives marked `applied: false` (mode observe) and the informational ones
//! (leases, holds) change nothing.
//!
//! [`Action::SetNetEgress`] and [`Action::SetNetIngress`] are no cgroup writes: [`apply_net`] sets them in the
//! container's network namespace (egress) or on the host-side peers of its veth interfaces (ingress).
//!
//! Order matters where a kill could slip in between two writes: on cgroup v1 the OOM killer is disabled
//! before the limit is written, and re-enabled only after the limit has reached the user's own.

use runtime_hooks::ioprio::IoPriority;
use runtime_hooks::{ActuateError, ContainerCgroup, CpuLimit, MemoryLimitPolicy};

use std::path::Path;

use runtime_hooks::net::{EgressLimit, NetError, Netns};

use crate::types::{Action, Directive, IoClass, IoPrio, MAX_NET_EGRESS, MIN_NET_EGRESS};

/// The wire's `ioprio` as `runtime-hooks` takes it; a level above 7 is refused.
fn hooks_ioprio(p: IoPrio) -> Result<IoPriority, ActuateError> {
    let class = match p.class {
        IoClass::Realtime => runtime_hooks::ioprio::IoClass::RealTime,
        IoClass::BestEffort => runtime_hooks::ioprio::IoClass::BestEffort,
        IoClass::Idle => runtime_hooks::ioprio::IoClass::Idle,
    };
    Ok(IoPriority::new(class, p.level)?)
}

/// Applies one directive; `Ok(false)` when there was nothing to write.
pub fn apply(d: &Directive, cg: &ContainerCgroup) -> Result<bool, ActuateError> {
    if !d.applied {
        return Ok(false);
    }
    match &d.action {
        Action::SetCpu { cores } => {
            let limit = cores.map_or_else(CpuLimit::unlimited, CpuLimit::cores);
            cg.set_cpu_limit(&limit)?;
        }
        Action::SetMemoryHigh {
            high_bytes,
            max_bytes,
        } => {
            // memory.max is the user's limit or the host ceiling: at or above the allocation, never below usage
            // on purpose, so the default refusal only guards against a stale directive.
            cg.set_memory_limit(*max_bytes, MemoryLimitPolicy::RefuseBelowUsage)?;
            cg.set_memory_high(*high_bytes)?;
        }
        Action::SetMemoryLimit {
            limit_bytes,
            oom_kill_disabled,
        } => {
            if *oom_kill_disabled {
                cg.set_oom_kill_disabled(true)?;
            }
            cg.set_memory_limit(*limit_bytes, MemoryLimitPolicy::RefuseBelowUsage)?;
            if !*oom_kill_disabled {
                cg.set_oom_kill_disabled(false)?;
            }
        }
        Action::SetIoWeight { weight, ioprio } => {
            let prio = ioprio.map(hooks_ioprio).transpose()?;
            let done = cg.set_io_priority(*weight, prio)?;
            return Ok(done.weight_written || done.threads.set > 0);
        }
        Action::SetCpuWeight { shares } => cg.set_cpu_shares(*shares)?,
        Action::Freeze => cg.freeze()?,
        Action::Thaw => cg.thaw()?,
        Action::LeaseGranted { .. }
        | Action::LeaseRevoked { .. }
        | Action::Hold { .. }
        | Action::SetNetEgress { .. }
        | Action::SetNetIngress { .. }
        | Action::Unknown => {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Errors from an egress or ingress directive.
#[derive(Debug, thiserror::Error)]
pub enum NetApplyError {
    /// The rate is outside [`MIN_NET_EGRESS`]..=[`MAX_NET_EGRESS`].
    #[error("{direction} rate {rate} B/s is outside {MIN_NET_EGRESS}..={MAX_NET_EGRESS}")]
    OutOfRange {
        /// `egress` or `ingress`.
        direction: &'static str,
        /// The rate asked for.
        rate: u64,
    },
    /// Reading the namespaces or writing the qdisc failed.
    #[error("{direction} limit for the network namespace of pid {pid}")]
    Net {
        /// `egress` or `ingress`.
        direction: &'static str,
        /// The container's init.
        pid: i32,
        /// What failed.
        #[source]
        source: NetError,
    },
}

/// What [`apply_net`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetApplied {
    /// The limit is set on these interfaces.
    Set(Vec<String>),
    /// The limit is removed from these interfaces (none: there was none).
    Cleared(Vec<String>),
    /// The container shares the host's network namespace: nothing was written (out of reach: a limit there
    /// would shape the whole host).
    HostNetwork,
}

/// Applies a [`Action::SetNetEgress`] to the network namespace of `pid` (the container's init; `proc_root` is
/// `/proc`), or a [`Action::SetNetIngress`] to the host-side peers of its interfaces in the caller's own
/// namespace (`proc_root/self/ns/net`: a shim runs in the host's); `Ok(None)` for any other directive or one
/// not meant to be applied. An ingress peer that cannot be verified is an error and nothing is written.
pub fn apply_net(
    d: &Directive,
    pid: i32,
    proc_root: &Path,
) -> Result<Option<NetApplied>, NetApplyError> {
    let (direction, rate) = match d.action {
        Action::SetNetEgress { rate_bytes_per_sec } => ("egress", rate_bytes_per_sec),
        Action::SetNetIngress { rate_bytes_per_sec } => ("ingress", rate_bytes_per_sec),
        _ => return Ok(None),
    };
    if !d.applied {
        return Ok(None);
    }
    if let Some(rate) = rate
        && !(MIN_NET_EGRESS..=MAX_NET_EGRESS).contains(&rate)
    {
        return Err(NetApplyError::OutOfRange { direction, rate });
    }
    let net = |source| NetApplyError::Net {
        direction,
        pid,
        source,
    };
    if runtime_hooks::net::in_host_netns(proc_root, pid).map_err(net)? {
        return Ok(Some(NetApplied::HostNetwork));
    }
    let ns = Netns::Path(runtime_hooks::net::netns_path(proc_root, pid));
    if direction == "ingress" {
        let host = Netns::Path(proc_root.join("self/ns/net"));
        let pairs = |links: Vec<runtime_hooks::net::PeerLink>| {
            links
                .into_iter()
                .map(|p| format!("{} (host side {})", p.iface, p.peer))
                .collect()
        };
        return Ok(Some(match rate {
            Some(rate) => NetApplied::Set(pairs(
                runtime_hooks::net::set_ingress_limit(&ns, &host, None, &EgressLimit::new(rate))
                    .map_err(net)?,
            )),
            None => NetApplied::Cleared(pairs(
                runtime_hooks::net::clear_ingress_limit(&ns, &host, None).map_err(net)?,
            )),
        }));
    }
    Ok(Some(match rate {
        Some(rate) => NetApplied::Set(
            runtime_hooks::net::set_egress_limit(&ns, None, &EgressLimit::new(rate))
                .map_err(net)?,
        ),
        None => {
            NetApplied::Cleared(runtime_hooks::net::clear_egress_limit(&ns, None).map_err(net)?)
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime_hooks::CgroupDirs;

    fn directive(action: Action, applied: bool) -> Directive {
        Directive {
            container_id: "c".to_owned(),
            action,
            reason: "test".to_owned(),
            applied,
            old_value: None,
        }
    }

    /// A fake cgroup2 directory with the files the kernel would have.
    fn fake_v2() -> (tempfile::TempDir, ContainerCgroup) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (f, v) in [
            ("cpu.max", "max 100000\n"),
            ("memory.max", "max\n"),
            ("memory.high", "max\n"),
            ("memory.current", "1048576\n"),
        ] {
            std::fs::write(dir.path().join(f), v).expect("fixture");
        }
        let cg = ContainerCgroup::new(
            CgroupDirs::V2(runtime_hooks::v2::Dirs {
                dir: dir.path().to_owned(),
            }),
            dir.path().join("proc"),
        );
        (dir, cg)
    }

    fn read(dir: &tempfile::TempDir, f: &str) -> String {
        std::fs::read_to_string(dir.path().join(f))
            .expect("read")
            .trim()
            .to_owned()
    }

    #[test]
    fn cpu_and_memory_directives_write_v2_files() {
        let (dir, cg) = fake_v2();
        let wrote = apply(&directive(Action::SetCpu { cores: Some(1.5) }, true), &cg).expect("cpu");
        assert!(wrote);
        assert_eq!(read(&dir, "cpu.max"), "150000 100000");
        apply(
            &directive(
                Action::SetMemoryHigh {
                    high_bytes: Some(64 << 20),
                    max_bytes: Some(128 << 20),
                },
                true,
            ),
            &cg,
        )
        .expect("memory");
        assert_eq!(read(&dir, "memory.high"), (64u64 << 20).to_string());
        assert_eq!(read(&dir, "memory.max"), (128u64 << 20).to_string());
    }

    #[test]
    fn observe_and_informational_directives_write_nothing() {
        let (dir, cg) = fake_v2();
        assert!(
            !apply(&directive(Action::SetCpu { cores: Some(1.0) }, false), &cg).expect("observe")
        );
        assert_eq!(read(&dir, "cpu.max"), "max 100000");
        let hold = Action::Hold {
            resource: crate::types::ResourceKind::Memory,
        };
        assert!(!apply(&directive(hold, true), &cg).expect("hold"));
    }

    #[test]
    fn io_weight_is_written_in_the_cgroup_versions_units() {
        let (dir, cg) = fake_v2();
        std::fs::write(dir.path().join("io.weight"), "default 100\n").expect("fixture");
        let io = |ioprio| Action::SetIoWeight {
            weight: 990,
            ioprio,
        };
        assert!(apply(&directive(io(None), true), &cg).expect("io"));
        assert_eq!(
            read(&dir, "io.weight"),
            format!(
                "default {}",
                runtime_hooks::actuate::blkio_weight_to_io_weight(990)
            )
        );
        // The class goes to every thread the cgroup lists: here our own main thread.
        let tid = i32::try_from(std::process::id()).expect("a pid fits i32");
        std::fs::write(dir.path().join("cgroup.threads"), format!("{tid}\n")).expect("fixture");
        let be1 = IoPrio {
            class: IoClass::BestEffort,
            level: 1,
        };
        assert!(apply(&directive(io(Some(be1)), true), &cg).expect("ioprio"));
        let now = runtime_hooks::ioprio::get_thread(tid).expect("ioprio_get");
        assert_eq!(now.map(|p| p.to_string()), Some(be1.to_string()));
        let bad = IoPrio {
            class: IoClass::BestEffort,
            level: 9,
        };
        let e = apply(&directive(io(Some(bad)), true), &cg).expect_err("level 9");
        assert!(crate::error_chain(&e).contains("level 9"), "{e}");
        // No weight file and no ioprio (an older broker on a v1 host without bfq): nothing written, no error.
        std::fs::remove_file(dir.path().join("io.weight")).expect("rm");
        assert!(!apply(&directive(io(None), true), &cg).expect("no weight file"));
    }

    #[test]
    fn cpu_weight_is_written_as_v2_weight_and_out_of_range_shares_are_refused() {
        let (dir, cg) = fake_v2();
        std::fs::write(dir.path().join("cpu.weight"), "100\n").expect("fixture");
        let w = |shares| directive(Action::SetCpuWeight { shares }, true);
        assert!(apply(&w(4096), &cg).expect("weight"));
        assert_eq!(
            read(&dir, "cpu.weight"),
            runtime_hooks::actuate::shares_to_weight(4096).to_string()
        );
        let e = apply(&w(1), &cg).expect_err("1 share");
        assert!(crate::error_chain(&e).contains("cpu shares"), "{e}");
    }

    #[test]
    fn egress_out_of_bounds_is_refused_and_other_directives_are_not_network() {
        let me = i32::try_from(std::process::id()).expect("a pid fits i32");
        let proc_root = Path::new("/proc");
        for rate in [MIN_NET_EGRESS - 1, MAX_NET_EGRESS + 1] {
            let rate_bytes_per_sec = Some(rate);
            for (action, direction) in [
                (Action::SetNetEgress { rate_bytes_per_sec }, "egress"),
                (Action::SetNetIngress { rate_bytes_per_sec }, "ingress"),
            ] {
                let e =
                    apply_net(&directive(action, true), me, proc_root).expect_err("out of range");
                assert!(e.to_string().contains(&rate.to_string()), "{e}");
                assert!(e.to_string().starts_with(direction), "{e}");
            }
        }
        // Our own process shares our namespace: neither direction is touched.
        for action in [
            Action::SetNetEgress {
                rate_bytes_per_sec: Some(1 << 20),
            },
            Action::SetNetIngress {
                rate_bytes_per_sec: Some(1 << 20),
            },
        ] {
            assert_eq!(
                apply_net(&directive(action, true), me, proc_root).expect("host network"),
                Some(NetApplied::HostNetwork)
            );
        }
        let cpu = directive(Action::SetCpu { cores: Some(1.0) }, true);
        assert_eq!(apply_net(&cpu, me, proc_root).expect("not network"), None);
        let observe = directive(
            Action::SetNetEgress {
                rate_bytes_per_sec: Some(MIN_NET_EGRESS),
            },
            false,
        );
        assert_eq!(apply_net(&observe, me, proc_root).expect("observe"), None);
        // The cgroup side writes nothing for it.
        let (_dir, cg) = fake_v2();
        assert!(!apply(&observe, &cg).expect("no cgroup write"));
        // A pid that does not exist: the namespace cannot be read, an error names the pid.
        let d = directive(
            Action::SetNetEgress {
                rate_bytes_per_sec: Some(1 << 20),
            },
            true,
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let e = apply_net(&d, me, dir.path()).expect_err("no such namespace");
        assert!(crate::error_chain(&e).contains(&format!("pid {me}")), "{e}");
    }

    #[test]
    fn a_memory_max_below_usage_is_refused() {
        let (_dir, cg) = fake_v2();
        let e = apply(
            &directive(
                Action::SetMemoryHigh {
                    high_bytes: Some(1024),
                    max_bytes: Some(1024),
                },
                true,
            ),
            &cg,
        )
        .expect_err("below usage");
        assert!(matches!(e, ActuateError::BelowUsage { .. }), "{e:?}");
    }
}
