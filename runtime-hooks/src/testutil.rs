//! Fake hosts for unit tests: a temp dir with the cgroup files the kernel would have.

use std::path::{Path, PathBuf};

use crate::discovery::HostRoots;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    V1,
    V2,
    Hybrid,
}

pub(crate) struct FakeHost {
    _dir: tempfile::TempDir,
    base: PathBuf,
    pub(crate) layout: Layout,
}

pub(crate) const V1_UNLIMITED: &str = "9223372036854771712";

fn write(path: &Path, content: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create fake dir");
    }
    std::fs::write(path, content).expect("write fake file");
}

impl FakeHost {
    pub(crate) fn new(layout: Layout) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().to_owned();
        let host = Self {
            _dir: dir,
            base,
            layout,
        };
        let mut mountinfo = String::new();
        match layout {
            Layout::V2 => {
                mountinfo
                    .push_str("25 20 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
                write(
                    &host.root().join("cgroup.controllers"),
                    "cpu io memory pids\n",
                );
            }
            Layout::V1 | Layout::Hybrid => {
                mountinfo.push_str("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n");
                for (i, c) in crate::v1::CONTROLLERS.iter().enumerate() {
                    mountinfo.push_str(&format!(
                        "{} 31 0:{} / /sys/fs/cgroup/{c} rw - cgroup cgroup rw,{c}\n",
                        32 + i,
                        29 + i
                    ));
                    write(&host.root().join(c).join("cgroup.procs"), "");
                }
                // Debian's v1 and hybrid hosts mount systemd's named hierarchy too (no controller).
                mountinfo.push_str(
                    "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n",
                );
                write(&host.root().join("systemd/cgroup.procs"), "");
                if layout == Layout::Hybrid {
                    mountinfo
                        .push_str("41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
                    write(&host.root().join("unified/cgroup.controllers"), "");
                }
            }
        }
        mountinfo.push_str("50 23 0:5 / /proc rw - proc proc rw\n");
        write(&host.base.join("mountinfo"), &mountinfo);
        std::fs::create_dir_all(host.base.join("proc")).expect("proc dir");
        host
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.base.join("cgroup")
    }

    pub(crate) fn roots(&self) -> HostRoots {
        HostRoots {
            cgroup: self.root(),
            proc: self.base.join("proc"),
            mountinfo: self.base.join("mountinfo"),
        }
    }

    /// A file of the fake host outside the cgroup root (`mountinfo`).
    pub(crate) fn base_file(&self, rel: &str) -> PathBuf {
        self.base.join(rel)
    }

    pub(crate) fn proc_file(&self, rel: &str, content: &str) {
        write(&self.base.join("proc").join(rel), content);
    }

    /// Writes `content` to `rel` under the cgroup root.
    pub(crate) fn file(&self, rel: &str, content: &str) {
        write(&self.root().join(rel), content);
    }

    pub(crate) fn read_abs(&self, path: &Path) -> String {
        std::fs::read_to_string(path).expect("read fake file")
    }

    pub(crate) fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root().join(rel)).expect("read fake file")
    }

    /// Where a v1 controller's (or, with "", the v2/unified) file for container `path` lives, relative to the root.
    pub(crate) fn rel(&self, controller: &str, path: &str, file: &str) -> String {
        let path = path.trim_start_matches('/');
        match (self.layout, controller) {
            (Layout::V2, _) => format!("{path}/{file}"),
            (_, "") => format!("unified/{path}/{file}"),
            (_, c) => format!("{c}/{path}/{file}"),
        }
    }

    /// Creates the container's directories with the files an idle kernel cgroup would show.
    pub(crate) fn container(&self, path: &str) {
        let f = |c: &str, name: &str, content: &str| self.file(&self.rel(c, path, name), content);
        let pressure = "some avg10=1.00 avg60=0.50 avg300=0.10 total=1000\nfull avg10=0.50 avg60=0.25 avg300=0.05 total=500\n";
        match self.layout {
            Layout::V2 => {
                f("", "cgroup.procs", "");
                f(
                    "",
                    "cpu.stat",
                    "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\nnr_periods 10\nnr_throttled 4\nthrottled_usec 300\nnr_bursts 0\nburst_usec 0\n",
                );
                f("", "cpu.max", "max 100000\n");
                f("", "cpu.max.burst", "0\n");
                f("", "cpu.weight", "100\n");
                f("", "memory.current", "104857600\n");
                f("", "memory.peak", "209715200\n");
                f("", "memory.max", "max\n");
                f("", "memory.high", "max\n");
                f(
                    "",
                    "memory.stat",
                    "anon 62914560\nfile 41943040\nkernel 1000\nactive_file 20971520\ninactive_file 10485760\n",
                );
                f(
                    "",
                    "memory.events",
                    "low 0\nhigh 2\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n",
                );
                f(
                    "",
                    "io.stat",
                    "8:0 rbytes=1000 wbytes=2000 rios=10 wios=20 dbytes=0 dios=0\n8:16 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n",
                );
                f("", "io.weight", "default 100\n");
                f("", "pids.current", "3\n");
                f("", "pids.max", "max\n");
                f("", "cgroup.freeze", "0\n");
                f("", "cgroup.events", "populated 1\nfrozen 0\n");
                f("", "cpu.pressure", pressure);
                f("", "memory.pressure", pressure);
                f("", "io.pressure", pressure);
            }
            Layout::V1 | Layout::Hybrid => {
                for c in crate::v1::CONTROLLERS {
                    f(c, "cgroup.procs", "");
                }
                f(
                    "cpu",
                    "cpu.stat",
                    "nr_periods 10\nnr_throttled 4\nthrottled_time 300000\nnr_bursts 0\nburst_time 0\n",
                );
                f("cpu", "cpu.cfs_period_us", "100000\n");
                f("cpu", "cpu.cfs_quota_us", "-1\n");
                f("cpu", "cpu.cfs_burst_us", "0\n");
                f("cpu", "cpu.shares", "1024\n");
                f("cpuacct", "cpuacct.usage", "2000000\n");
                f("memory", "memory.usage_in_bytes", "104857600\n");
                f("memory", "memory.max_usage_in_bytes", "209715200\n");
                f(
                    "memory",
                    "memory.limit_in_bytes",
                    &format!("{V1_UNLIMITED}\n"),
                );
                f(
                    "memory",
                    "memory.memsw.limit_in_bytes",
                    &format!("{V1_UNLIMITED}\n"),
                );
                f(
                    "memory",
                    "memory.soft_limit_in_bytes",
                    &format!("{V1_UNLIMITED}\n"),
                );
                f("memory", "memory.failcnt", "5\n");
                f(
                    "memory",
                    "memory.stat",
                    "cache 1\nrss 2\ninactive_file 3\ntotal_cache 41943040\ntotal_rss 62914560\ntotal_inactive_file 10485760\n",
                );
                f(
                    "memory",
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
                );
                f("memory", "cgroup.event_control", "");
                f(
                    "blkio",
                    "blkio.throttle.io_service_bytes_recursive",
                    "8:0 Read 1000\n8:0 Write 2000\n8:0 Sync 3000\n8:0 Async 0\n8:0 Discard 0\n8:0 Total 3000\n8:16 Read 1\n8:16 Write 2\nTotal 3003\n",
                );
                f(
                    "blkio",
                    "blkio.throttle.io_serviced_recursive",
                    "8:0 Read 10\n8:0 Write 20\n8:16 Read 3\n8:16 Write 4\nTotal 37\n",
                );
                f("blkio", "blkio.bfq.weight", "100\n");
                f("pids", "pids.current", "3\n");
                f("pids", "pids.max", "max\n");
                f("freezer", "freezer.state", "THAWED\n");
                if self.layout == Layout::Hybrid {
                    f("", "cgroup.procs", "");
                    f("", "cpu.stat", "usage_usec 9\nuser_usec 5\nsystem_usec 4\n");
                    f("", "cpu.pressure", pressure);
                    f("", "memory.pressure", pressure);
                    f("", "io.pressure", pressure);
                }
            }
        }
    }
}

/// Makes `cmd`'s child write itself into each `cgroup.procs` file of `procs` before it execs, so everything it
/// charges is charged there (root tests on cgroups of their own).
pub(crate) fn enter_before_exec(cmd: &mut std::process::Command, procs: Vec<std::ffi::CString>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls async-signal-safe open/write/close on pre-built C strings.
    unsafe {
        cmd.pre_exec(move || {
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if n != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}
