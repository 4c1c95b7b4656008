//! Cost of sampling one container's cgroup and of applying one limit.
//!
//! As root, on this host's real cgroups: a cgroup of our own (`predictive-bench-<pid>` in every
//! hierarchy) holding one `sleep` process, removed at the end. Without root, on a fake v2 tree (file
//! reads only: the figures are then not the kernel's). Besides criterion's wall-clock figures it prints
//! CPU time per operation (CLOCK_THREAD_CPUTIME_ID over many iterations) and the ratio to one
//! baseline file read measured in the same run.
//!
//! Run: `CARGO_TARGET_DIR=target-hooks cargo bench -p runtime-hooks --bench cgroup`

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use runtime_hooks::discovery::{Hierarchy, HostRoots};
use runtime_hooks::{ContainerCgroup, CpuLimit};

struct BenchCgroup {
    dirs: Vec<PathBuf>,
    child: Option<Child>,
    _fake: Option<tempfile::TempDir>,
    cgroup: ContainerCgroup,
    real: bool,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl BenchCgroup {
    fn real() -> Option<Self> {
        let path = format!("/predictive-bench-{}", std::process::id());
        let roots = HostRoots::default();
        let mounts: Vec<PathBuf> = match Hierarchy::detect(&roots).ok()? {
            Hierarchy::Unified(u) => vec![u.mount_point],
            Hierarchy::Legacy(v1) => v1
                .into_iter()
                .filter(|m| m.root == "/")
                .map(|m| m.mount_point)
                .collect(),
            Hierarchy::Hybrid { v1, unified } => v1
                .into_iter()
                .filter(|m| m.root == "/")
                .map(|m| m.mount_point)
                .chain([unified.mount_point])
                .collect(),
        };
        let mut dirs = Vec::new();
        for m in mounts {
            let dir = m.join(path.trim_start_matches('/'));
            if std::fs::create_dir(&dir).is_ok() {
                dirs.push(dir);
            }
        }
        let mut child = Command::new("sleep").arg("600").spawn().ok()?;
        for d in &dirs {
            let _ = std::fs::write(d.join("cgroup.procs"), child.id().to_string());
        }
        let cgroup = match ContainerCgroup::discover(&roots, &path) {
            Ok(cg) => cg,
            Err(e) => {
                eprintln!("discovery failed: {e}");
                let _ = child.kill();
                let _ = child.wait();
                for d in &dirs {
                    let _ = std::fs::remove_dir(d);
                }
                return None;
            }
        };
        Some(Self {
            dirs,
            child: Some(child),
            _fake: None,
            cgroup,
            real: true,
        })
    }

    fn fake() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("cgroup");
        let dir = root.join("c");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(root.join("cgroup.controllers"), "cpu memory io pids\n").expect("write");
        let psi = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        for (f, c) in [
            ("cgroup.procs", ""),
            (
                "cpu.stat",
                "usage_usec 1\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
            ),
            ("cpu.max", "max 100000\n"),
            ("memory.current", "1000\n"),
            ("memory.peak", "1000\n"),
            ("memory.max", "max\n"),
            ("memory.stat", "anon 1\nfile 2\ninactive_file 1\n"),
            ("memory.events", "max 0\noom 0\noom_kill 0\n"),
            ("io.stat", ""),
            ("pids.current", "1\n"),
            ("pids.max", "max\n"),
            ("cgroup.events", "populated 1\nfrozen 0\n"),
            ("cpu.pressure", psi),
            ("memory.pressure", psi),
            ("io.pressure", psi),
        ] {
            std::fs::write(dir.join(f), c).expect("write");
        }
        let roots = HostRoots {
            cgroup: root,
            proc: tmp.path().join("proc"),
            mountinfo: tmp.path().join("none"),
        };
        let cgroup = ContainerCgroup::discover(&roots, "/c").expect("fake discover");
        Self {
            dirs: Vec::new(),
            child: None,
            _fake: Some(tmp),
            cgroup,
            real: false,
        }
    }

    fn baseline_file(&self) -> PathBuf {
        match self.cgroup.dirs() {
            runtime_hooks::CgroupDirs::V1(d) => d.cpu.clone().unwrap_or_default().join("cpu.stat"),
            runtime_hooks::CgroupDirs::V2(d) => d.dir.join("cpu.stat"),
        }
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// (user, system) CPU microseconds of this thread so far.
fn thread_rusage_us() -> (f64, f64) {
    // SAFETY: rusage is plain data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid rusage to write into.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    (us(ru.ru_utime), us(ru.ru_stime))
}

/// CPU microseconds per call of `f`, over `n` calls.
fn cpu_us_per_op(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let start = thread_cpu_ns();
    for _ in 0..n {
        f();
    }
    (thread_cpu_ns() - start) as f64 / f64::from(n) / 1000.0
}

/// The files a sample reads, for the kernel-floor figure (mirrors the v1/v2 controller modules).
fn sampled_files(cg: &ContainerCgroup) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut add = |dir: &Option<PathBuf>, names: &[&str]| {
        if let Some(d) = dir {
            out.extend(names.iter().map(|n| d.join(n)).filter(|p| p.exists()));
        }
    };
    match cg.dirs() {
        runtime_hooks::CgroupDirs::V1(d) => {
            add(&d.cpu, &["cpu.stat"]);
            add(&d.cpuacct, &["cpuacct.usage"]);
            add(
                &d.memory,
                &[
                    "memory.usage_in_bytes",
                    "memory.max_usage_in_bytes",
                    "memory.limit_in_bytes",
                    "memory.failcnt",
                    "memory.stat",
                    "memory.oom_control",
                ],
            );
            add(
                &d.blkio,
                &[
                    "blkio.throttle.io_service_bytes_recursive",
                    "blkio.throttle.io_serviced_recursive",
                ],
            );
            add(&d.pids, &["pids.current", "pids.max"]);
            add(&d.freezer, &["freezer.state"]);
            add(
                &d.unified,
                &["cpu.pressure", "memory.pressure", "io.pressure"],
            );
        }
        runtime_hooks::CgroupDirs::V2(d) => {
            let dir = Some(d.dir.clone());
            add(
                &dir,
                &[
                    "cpu.stat",
                    "memory.current",
                    "memory.peak",
                    "memory.max",
                    "memory.stat",
                    "memory.events",
                    "io.stat",
                    "pids.current",
                    "pids.max",
                    "cgroup.events",
                    "cpu.pressure",
                    "memory.pressure",
                    "io.pressure",
                ],
            );
        }
    }
    if let Some(pid) = cg.procs().first() {
        out.push(PathBuf::from(format!("/proc/{pid}/net/dev")));
    }
    out
}

fn read_file(p: &Path) {
    std::hint::black_box(std::fs::read_to_string(p).ok());
}

fn bench(c: &mut Criterion) {
    let want_real = is_root() && std::env::var_os("PREDICTIVE_BENCH_FAKE").is_none();
    let bc = if want_real { BenchCgroup::real() } else { None }.unwrap_or_else(|| {
        eprintln!("not root or no cgroup: benchmarking a fake v2 tree (no kernel cost)");
        BenchCgroup::fake()
    });
    let cg = &bc.cgroup;
    let where_ = if bc.real {
        format!("real {:?} cgroup", cg.version())
    } else {
        "fake v2 tree".to_owned()
    };
    let baseline = bc.baseline_file();

    let mut group = c.benchmark_group(format!("runtime-hooks ({where_})"));
    group.bench_function("baseline: read one cgroup file", |b| {
        b.iter(|| read_file(&baseline))
    });
    group.bench_function("ContainerCgroup::sample (opens every file)", |b| {
        b.iter(|| std::hint::black_box(cg.sample()))
    });
    let mut sampler = cg.sampler();
    group.bench_function("Sampler::sample (files kept open)", |b| {
        b.iter(|| std::hint::black_box(sampler.sample()))
    });
    let mut flip = false;
    group.bench_function("set_pids_limit", |b| {
        b.iter(|| {
            flip = !flip;
            cg.set_pids_limit(Some(if flip { 100 } else { 101 }))
                .expect("pids limit");
        })
    });
    group.bench_function("set_cpu_limit", |b| {
        b.iter(|| {
            flip = !flip;
            let quota = if flip { 50_000 } else { 60_000 };
            cg.set_cpu_limit(&CpuLimit {
                quota_us: Some(quota),
                period_us: 100_000,
                burst_us: None,
            })
            .expect("cpu limit");
        })
    });
    group.finish();

    let n = 5000;
    let base = cpu_us_per_op(n, || read_file(&baseline));
    let oneoff = cpu_us_per_op(n, || {
        std::hint::black_box(cg.sample());
    });
    let (u0, s0) = thread_rusage_us();
    let sample = cpu_us_per_op(n, || {
        std::hint::black_box(sampler.sample());
    });
    let (u1, s1) = thread_rusage_us();
    let core = cpu_us_per_op(n, || {
        std::hint::black_box(sampler.sample_scope(runtime_hooks::SampleScope::CORE));
    });
    let runs = f64::from(n + n / 10);
    let (user, sys) = ((u1 - u0) / runs, (s1 - s0) / runs);
    let open: Vec<std::fs::File> = sampled_files(cg)
        .iter()
        .filter_map(|p| std::fs::File::open(p).ok())
        .collect();
    let mut buf = vec![0u8; 16384];
    let floor = cpu_us_per_op(n, || {
        for f in &open {
            std::hint::black_box(std::os::unix::fs::FileExt::read_at(f, &mut buf, 0).ok());
        }
    });
    let pids = cpu_us_per_op(n, || {
        flip = !flip;
        cg.set_pids_limit(Some(if flip { 100 } else { 101 }))
            .expect("pids limit");
    });
    let cpu = cpu_us_per_op(n, || {
        flip = !flip;
        let quota = if flip { 50_000 } else { 60_000 };
        cg.set_cpu_limit(&CpuLimit {
            quota_us: Some(quota),
            period_us: 100_000,
            burst_us: None,
        })
        .expect("cpu");
    });
    println!("\nCPU time per operation on a {where_} ({n} iterations, CLOCK_THREAD_CPUTIME_ID):");
    println!("  baseline read of one file  {base:8.2} us");
    println!(
        "  ContainerCgroup::sample()  {oneoff:8.2} us  ({:.1}x baseline; opens every file)",
        oneoff / base
    );
    println!(
        "  Sampler::sample()          {sample:8.2} us  ({:.1}x baseline; target < 50 us)",
        sample / base
    );
    println!("    of which user {user:.2} us, system {sys:.2} us (getrusage, tick-sampled)");
    println!(
        "  Sampler::sample_scope(CORE) {core:7.2} us  ({:.1}x baseline; no PSI, no net counters)",
        core / base
    );
    println!(
        "  kernel floor: one pread of each of the {} files a sample reads {floor:6.2} us ({:.0}% of Sampler::sample)",
        open.len(),
        100.0 * floor / sample
    );
    println!(
        "  set_pids_limit() + readback {pids:7.2} us  ({:.1}x baseline; target < 20 us)",
        pids / base
    );
    println!(
        "  set_cpu_limit() + readback {cpu:8.2} us  ({:.1}x baseline; period+quota, 2 writes + 2 reads)",
        cpu / base
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(30);
    targets = bench
}
criterion_main!(benches);
