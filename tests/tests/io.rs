//! End-to-end test of the disk I/O priority (issue 17's disk half): two real containers write with direct I/O to
//! one loop device (over a file in a temp dir, its queue scheduler set to mq-deadline, removed at the end), one
//! with a high priority and one with a low one; the broker's priority reaches their threads as `ioprio` classes,
//! its status names the mechanism per device, and the high-priority container gets the larger share of the
//! device. Root only; `SKIPPED:` otherwise (a failure under CI=true).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use broker::client::Client;
use predictive_e2e::Containerd;
use predictive_e2e::cmd::wait_until;
use predictive_e2e::settings::Settings;

const TEST: &str = "higher_priority_gets_the_larger_share_of_a_shared_device";

/// `n` seconds on this host, `n` x [`Settings::slow`] in the emulated guest.
fn secs(n: u64) -> Duration {
    Duration::from_secs(n * u64::from(Settings::from_env().slow()))
}

/// A loop device over a sparse file, removed (device and file) on drop.
struct Loop {
    dir: PathBuf,
    dev: String,
}

impl Loop {
    /// A 2 GiB loop device with mq-deadline, or why not.
    fn create(dir: PathBuf) -> Result<Self, String> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let file = dir.join("disk.img");
        let f = std::fs::File::create(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        f.set_len(2 << 30)
            .map_err(|e| format!("sizing {}: {e}", file.display()))?;
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&file)
            .output()
            .map_err(|e| format!("running losetup: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!(
                "losetup: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let l = Loop { dir, dev };
        let sched = l.sys("queue/scheduler");
        std::fs::write(&sched, "mq-deadline")
            .map_err(|e| format!("setting mq-deadline on {}: {e}", l.dev))?;
        Ok(l)
    }

    fn name(&self) -> &str {
        self.dev.trim_start_matches("/dev/")
    }

    fn sys(&self, file: &str) -> PathBuf {
        Path::new("/sys/block").join(self.name()).join(file)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// MiB the container has written: its writer appends one byte to `DIR/<name>` per MiB written (the v1 blkio
/// counters stay at 0 on this kernel when no throttle rule is set).
fn written(dir: &Path, name: &str) -> Option<u64> {
    std::fs::metadata(dir.join(name)).ok().map(|m| m.len())
}

/// What `ionice -p` says about a process.
fn ionice(pid: i32) -> String {
    let out = Command::new("ionice")
        .args(["-p", &pid.to_string()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    out.unwrap_or_else(|e| format!("ionice: {e}"))
}

#[test]
fn higher_priority_gets_the_larger_share_of_a_shared_device() {
    let Some(c) = Containerd::start_with_own_broker(TEST, "tick_ms = 500\n") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("predictive-io-{}", std::process::id()));
    let disk = match Loop::create(dir) {
        Ok(l) => l,
        Err(why) => {
            testkit::skip(TEST, &format!("no loop device: {why}"));
            c.finish();
            return;
        }
    };
    let out = disk.dir.join("out");
    std::fs::create_dir_all(&out).expect("the counters' directory");
    // Each container rewrites its own 16 MiB (256 x 64 KiB direct writes) again and again from WRITERS loops, one
    // byte of count per MiB. mq-deadline holds an idle-class request only while a best-effort one is pending, so
    // the high-priority container's share is the time it has a write in flight: a dd per MiB (one fork and exec
    // each) left it none for much of the time under emulation (the guest's idle writer got 1 MiB for every 1.7
    // of the other's with one loop of 1 MiB; 1 for 20 with four of 16 MiB).
    const WRITERS: usize = 4;
    let writer = |seek_blocks: u32, name: &str| {
        let one = format!(
            "while :; do dd if=/dev/zero of={} bs=64k count=256 seek={seek_blocks} oflag=direct 2>/dev/null; printf xxxxxxxxxxxxxxxx >> /out/{name}; done",
            disk.dev
        );
        format!("{} wait", format!("( {one} ) & ").repeat(WRITERS))
    };
    let flags = |prio: &str| {
        vec![
            "--annotation".to_owned(),
            "io.predictive.task-type=e2e-io".to_owned(),
            "--annotation".to_owned(),
            format!("io.predictive.priority={prio}"),
            "--device".to_owned(),
            disk.dev.clone(),
            "--mount".to_owned(),
            format!("type=bind,src={},dst=/out,options=rbind:rw", out.display()),
        ]
    };
    let (low, high) = (c.id("io-low"), c.id("io-high"));
    // The low-priority writer starts first: it has the device to itself until the other arrives.
    for (id, prio, seek, name) in [(&low, "-500", 0, "low"), (&high, "500", 8192, "high")] {
        let f = flags(prio);
        let f: Vec<&str> = f.iter().map(String::as_str).collect();
        c.run_detached(id, &f, &["sh", "-c", &writer(seek, name)]);
    }
    // The broker's priority reached each container's threads (its init, the shell whose dd children inherit it).
    let classes = (ionice(c.task_pid(&low)), ionice(c.task_pid(&high)));
    println!("ionice: low {:?}, high {:?}", classes.0, classes.1);
    assert_eq!(classes.0, "idle", "the low-priority container's class");
    assert!(
        classes.1.starts_with("best-effort"),
        "the high-priority container's class: {}",
        classes.1
    );
    // The broker says which mechanism carries the priority on this device, and why.
    let mut client = Client::new(c.broker_socket(), secs(5));
    let status = client.status().expect("broker status");
    let view = status
        .tasks
        .iter()
        .find(|t| t.container_id == c.broker_id(&high))
        .and_then(|t| t.io.clone())
        .expect("the high-priority task has an I/O view");
    let dev = view
        .devices
        .iter()
        .find(|d| d.device == disk.name())
        .unwrap_or_else(|| panic!("{} is not in the status: {view:?}", disk.name()));
    println!(
        "status: {} ({}): {}: {}",
        dev.device, dev.scheduler, dev.mechanism, dev.why
    );
    assert_eq!(dev.scheduler, "mq-deadline");
    assert_ne!(dev.mechanism, "none", "{dev:?}");
    // The share of the next 512 MiB the device serves to the two of them (a condition, not a fixed window).
    let both = || Some((written(&out, "low")?, written(&out, "high")?));
    let start = wait_until(secs(30), || both().filter(|(l, h)| *l > 0 && *h > 0))
        .expect("both containers write to the device");
    let end = wait_until(secs(120), || {
        both().filter(|(l, h)| (l - start.0) + (h - start.1) >= 512)
    })
    .expect("512 MiB written within 120 s");
    let (l, h) = (end.0 - start.0, end.1 - start.1);
    let ratio = h as f64 / (l.max(1)) as f64;
    println!(
        "RESULT io share on {} (mq-deadline): high {h} MiB, low {l} MiB, ratio {ratio:.1}",
        disk.name(),
    );
    assert!(
        ratio >= 3.0,
        "the high-priority container got {h} MiB, the low-priority one {l} MiB: ratio {ratio:.2} < 3"
    );
    c.remove(&low);
    c.remove(&high);
    c.finish();
    drop(disk);
}
