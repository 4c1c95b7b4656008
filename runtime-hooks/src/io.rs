//! Which disk I/O priority mechanism takes effect on each block device of this host, and why.
//!
//! A container's I/O priority is written two ways at once (see `ContainerCgroup::set_io_priority`): the cgroup
//! weight where the file exists, and the per-thread `ioprio` class. Which of them the kernel honours depends on
//! the device's active scheduler (`/sys/block/<dev>/queue/scheduler`) and the cgroup version:
//! - cgroup v2 `io.weight`: bfq (`io.bfq.weight`), or any scheduler once iocost is enabled for the device
//!   (`io.cost.qos` at the cgroup2 root says `enable=1`);
//! - cgroup v1 `blkio.weight` / `blkio.bfq.weight`: bfq with group scheduling (the file exists at the blkio root);
//! - `ioprio` classes: mq-deadline (Linux >= 5.14, class only, levels ignored) and bfq (class and level);
//! - none and kyber honour neither: only a bandwidth cap (`io.max`, `blkio.throttle.*`) would act there, and
//!   a priority carries no bandwidth figure, so nothing is claimed.
//!
//! Limits: devices are the whole disks under `/sys/block` (partitions share their disk's queue); loop devices
//! with no backing file, ram disks and zram are left out.

use std::path::Path;

/// The mechanism that carries a container's I/O priority on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoMechanism {
    /// The cgroup's weight (v2 `io.weight`, v1 `blkio.weight`).
    Weight,
    /// The threads' `ioprio` class.
    Ioprio,
    /// Nothing the scheduler honours.
    None,
}

impl IoMechanism {
    /// A short name for status output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Weight => "weight",
            Self::Ioprio => "ioprio",
            Self::None => "none",
        }
    }
}

/// One device and what carries a priority on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIo {
    /// Kernel name, e.g. `vda`.
    pub name: String,
    /// `MAJ:MIN`.
    pub major_minor: String,
    /// The active scheduler (`none` when the file has no bracketed entry).
    pub scheduler: String,
    /// What takes effect.
    pub mechanism: IoMechanism,
    /// Why, in words.
    pub why: String,
}

/// How the cgroup side of the host looks, as far as weights go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightSupport {
    /// Pure cgroup v2; whether iocost is enabled for the device.
    V2 {
        /// `io.cost.qos` has `enable=1` for it.
        iocost: bool,
    },
    /// cgroup v1 blkio (also on a hybrid host); whether a weight file exists at its root.
    V1 {
        /// `blkio.weight` or `blkio.bfq.weight` exists.
        weight_file: bool,
    },
}

/// The active scheduler in a `queue/scheduler` text: the bracketed one, or the only one listed.
pub fn active_scheduler(text: &str) -> Option<&str> {
    let mut words = text.split_ascii_whitespace();
    let all: Vec<&str> = words.by_ref().collect();
    all.iter()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .or(if all.len() == 1 { Some(all[0]) } else { None })
}

/// The mechanism for one device, and why.
pub fn choose(scheduler: &str, weights: WeightSupport) -> (IoMechanism, String) {
    let honours_class = matches!(scheduler, "mq-deadline" | "bfq");
    match weights {
        WeightSupport::V2 { iocost: true } => (
            IoMechanism::Weight,
            "cgroup v2 io.weight (iocost enabled for this device)".to_owned(),
        ),
        WeightSupport::V2 { iocost: false } if scheduler == "bfq" => (
            IoMechanism::Weight,
            "cgroup v2 io.weight (bfq honours it; the ioprio class is set too)".to_owned(),
        ),
        WeightSupport::V1 { weight_file: true } if scheduler == "bfq" => (
            IoMechanism::Weight,
            "cgroup v1 blkio weight (bfq group scheduling; the ioprio class is set too)".to_owned(),
        ),
        w if honours_class => {
            let no_weight = match w {
                WeightSupport::V2 { .. } => "io.weight needs bfq or iocost",
                WeightSupport::V1 { .. } => "blkio.weight needs bfq group scheduling",
            };
            let how = if scheduler == "bfq" {
                "class and level"
            } else {
                "class only, levels ignored"
            };
            (
                IoMechanism::Ioprio,
                format!("ioprio: {scheduler} honours the {how}; no weight ({no_weight})"),
            )
        }
        _ => (
            IoMechanism::None,
            format!(
                "scheduler {scheduler} honours neither weights nor ioprio classes (set mq-deadline or bfq)"
            ),
        ),
    }
}

/// Whether `io.cost.qos` (cgroup2 root) enables iocost for `maj_min`.
pub fn iocost_enabled(qos: &str, maj_min: &str) -> bool {
    qos.lines().any(|l| {
        let mut f = l.split_ascii_whitespace();
        f.next() == Some(maj_min) && f.any(|kv| kv == "enable=1")
    })
}

/// Every whole disk under `sys_block` (normally `/sys/block`) with its mechanism; `cgroup_root` (normally
/// `/sys/fs/cgroup`) tells v2 (a `cgroup.controllers` at the root) from v1 (a `blkio` hierarchy).
pub fn detect(sys_block: &Path, cgroup_root: &Path) -> Vec<DeviceIo> {
    let v2 = cgroup_root.join("cgroup.controllers").is_file();
    let qos = if v2 {
        std::fs::read_to_string(cgroup_root.join("io.cost.qos")).unwrap_or_default()
    } else {
        String::new()
    };
    let blkio = cgroup_root.join("blkio");
    let v1_weight = ["blkio.weight", "blkio.bfq.weight"]
        .iter()
        .any(|f| blkio.join(f).is_file());
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut out: Vec<DeviceIo> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let dev = e.path();
            if name.starts_with("ram") || name.starts_with("zram") {
                return None;
            }
            if name.starts_with("loop") && !dev.join("loop/backing_file").is_file() {
                return None;
            }
            let text = std::fs::read_to_string(dev.join("queue/scheduler")).ok()?;
            let scheduler = active_scheduler(&text).unwrap_or("none").to_owned();
            let major_minor = std::fs::read_to_string(dev.join("dev"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            let weights = if v2 {
                WeightSupport::V2 {
                    iocost: iocost_enabled(&qos, &major_minor),
                }
            } else {
                WeightSupport::V1 {
                    weight_file: v1_weight,
                }
            };
            let (mechanism, why) = choose(&scheduler, weights);
            Some(DeviceIo {
                name,
                major_minor,
                scheduler,
                mechanism,
                why,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_active_scheduler_is_the_bracketed_one() {
        assert_eq!(
            active_scheduler("none [mq-deadline] kyber bfq\n"),
            Some("mq-deadline")
        );
        assert_eq!(active_scheduler("[none] mq-deadline\n"), Some("none"));
        assert_eq!(active_scheduler("none\n"), Some("none"));
        assert_eq!(active_scheduler("none bfq\n"), None);
        assert_eq!(active_scheduler(""), None);
    }

    #[test]
    fn the_choice_follows_scheduler_and_cgroup_version() {
        let v1 = |w| WeightSupport::V1 { weight_file: w };
        let v2 = |c| WeightSupport::V2 { iocost: c };
        assert_eq!(choose("mq-deadline", v1(false)).0, IoMechanism::Ioprio);
        assert!(
            choose("mq-deadline", v1(false))
                .1
                .contains("levels ignored")
        );
        assert_eq!(choose("bfq", v1(true)).0, IoMechanism::Weight);
        assert_eq!(choose("bfq", v1(false)).0, IoMechanism::Ioprio);
        assert_eq!(choose("none", v1(true)).0, IoMechanism::None);
        assert_eq!(choose("kyber", v2(false)).0, IoMechanism::None);
        assert_eq!(choose("none", v2(true)).0, IoMechanism::Weight);
        assert_eq!(choose("bfq", v2(false)).0, IoMechanism::Weight);
        let (m, why) = choose("mq-deadline", v2(false));
        assert_eq!(m, IoMechanism::Ioprio);
        assert!(why.contains("io.weight needs bfq or iocost"), "{why}");
    }

    #[test]
    fn iocost_is_read_per_device() {
        let qos = "253:0 enable=1 ctrl=auto rpct=0.00\n8:0 enable=0 ctrl=auto\n";
        assert!(iocost_enabled(qos, "253:0"));
        assert!(!iocost_enabled(qos, "8:0"));
        assert!(!iocost_enabled(qos, "7:0"));
    }

    fn disk(root: &Path, name: &str, sched: &str, dev: &str) {
        let d = root.join(name);
        fs::create_dir_all(d.join("queue")).expect("fixture");
        fs::write(d.join("queue/scheduler"), sched).expect("fixture");
        fs::write(d.join("dev"), format!("{dev}\n")).expect("fixture");
    }

    /// A fake /sys/block and cgroupfs: a v1 host without weights, then a v2 host with iocost on one disk.
    #[test]
    fn detection_reads_a_fake_sysfs_and_cgroupfs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let block = tmp.path().join("block");
        disk(&block, "vda", "none [mq-deadline] kyber bfq\n", "253:0");
        disk(&block, "sda", "[none] mq-deadline\n", "8:0");
        disk(&block, "loop0", "[mq-deadline] none\n", "7:0");
        disk(&block, "loop1", "[none] mq-deadline\n", "7:1");
        fs::create_dir_all(block.join("loop0/loop")).expect("fixture");
        fs::write(block.join("loop0/loop/backing_file"), "/tmp/x\n").expect("fixture");
        disk(&block, "zram0", "[none]\n", "252:0");
        let v1 = tmp.path().join("cg1");
        fs::create_dir_all(v1.join("blkio")).expect("fixture");
        let devs = detect(&block, &v1);
        let names: Vec<_> = devs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["loop0", "sda", "vda"]);
        assert_eq!(devs[0].mechanism, IoMechanism::Ioprio);
        assert_eq!(devs[1].mechanism, IoMechanism::None);
        assert_eq!(devs[2].scheduler, "mq-deadline");
        assert_eq!(devs[2].major_minor, "253:0");
        assert!(
            devs[2].why.contains("blkio.weight needs bfq"),
            "{}",
            devs[2].why
        );

        let v2 = tmp.path().join("cg2");
        fs::create_dir_all(&v2).expect("fixture");
        fs::write(v2.join("cgroup.controllers"), "cpu io memory\n").expect("fixture");
        fs::write(v2.join("io.cost.qos"), "8:0 enable=1 ctrl=auto\n").expect("fixture");
        let devs = detect(&block, &v2);
        assert_eq!(devs[1].name, "sda");
        assert_eq!(devs[1].mechanism, IoMechanism::Weight);
        assert!(devs[1].why.contains("iocost"), "{}", devs[1].why);
        assert_eq!(devs[2].mechanism, IoMechanism::Ioprio);
        assert!(devs[2].why.contains("io.weight needs"), "{}", devs[2].why);
        assert!(detect(&tmp.path().join("absent"), &v2).is_empty());
    }
}
