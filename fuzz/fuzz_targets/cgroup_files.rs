//! The cgroup v2 files the sampler reads (cpu.stat, memory.*, io.stat, *.pressure, pids.current), from arbitrary
//! bytes split on NUL: read through runtime-hooks' public `ContainerCgroup` over a temp directory; no panic.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

const FILES: [&str; 9] = [
    "cpu.stat",
    "memory.current",
    "memory.stat",
    "memory.peak",
    "memory.max",
    "io.stat",
    "cpu.pressure",
    "memory.pressure",
    "pids.current",
];

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    // tmpfs: the target writes nine files per input.
    DIR.get_or_init(|| tempfile::tempdir_in("/dev/shm").expect("tempdir in /dev/shm"))
}

fuzz_target!(|data: &[u8]| {
    let d = dir().path();
    let mut parts = data.split(|b| *b == 0);
    for f in FILES {
        std::fs::write(d.join(f), parts.next().unwrap_or_default()).expect("write");
    }
    let cg = runtime_hooks::ContainerCgroup::new(
        runtime_hooks::cgroup::CgroupDirs::V2(runtime_hooks::v2::Dirs { dir: d.to_owned() }),
        d.join("proc"),
    );
    let _ = cg.sample();
});
