//! Disk I/O priority (Register and adoption): a task's priority becomes a cgroup weight and a per-thread
//! `ioprio` class, sent together in one `set_io_weight` directive; which of the two the kernel honours is
//! per device (its scheduler and the cgroup version, detected by the broker with `runtime_hooks::io::detect`)
//! and said in the directive's reason and in the task's status.
//!
//! The mapping, for an operator sharing a node between batch and serving work:
//! - priority 0 (the default): nothing is written, the kernel's defaults stay;
//! - above 0: best-effort, level 3 (1..=333), 2, 1, down to 0 at 1000: ahead of the default under bfq;
//!   under mq-deadline, which orders by class only, the same as the default;
//! - below 0: idle: the task's I/O waits while any other class has I/O queued on the device (mq-deadline
//!   still serves it after `prio_aging_expire`, 10 s, so it never starves).
//!
//! The real-time class is never used: a container in it could starve the host's own I/O (journald, the
//! container runtime).
//! Limits: the class is set on the threads the container has at Register; its descendants inherit it, a process
//! `exec`ed into the container later from outside does not.

use predictive_api::types::{IoClass, IoDevice, IoPrio, IoView};

/// The host's block devices (`/sys/block`, `/sys/fs/cgroup`) and what carries an I/O priority on each: the one
/// function of this module that reads the kernel (the broker calls it; the controller only keeps the answer).
pub fn host_devices() -> Vec<IoDevice> {
    devices_from(&runtime_hooks::io::detect(
        std::path::Path::new("/sys/block"),
        std::path::Path::new(runtime_hooks::discovery::DEFAULT_CGROUP_ROOT),
    ))
}

/// `runtime-hooks`' detection as the wire's status type.
pub fn devices_from(found: &[runtime_hooks::io::DeviceIo]) -> Vec<IoDevice> {
    found
        .iter()
        .map(|d| IoDevice {
            device: d.name.clone(),
            scheduler: d.scheduler.clone(),
            mechanism: d.mechanism.name().to_owned(),
            why: d.why.clone(),
        })
        .collect()
}

/// The IO weight of a priority: 500 (the kernel's default) at 0, linear to 10 at -1000 and 990 at 1000; `None`
/// at 0, where nothing needs writing.
pub fn io_weight(priority: i32) -> Option<u16> {
    (priority != 0).then(|| (500 + priority.clamp(-1000, 1000) * 49 / 100).clamp(10, 1000) as u16)
}

/// The `ioprio` of a priority (see the module doc); `None` at 0.
pub fn io_class(priority: i32) -> Option<IoPrio> {
    match priority {
        0 => None,
        p if p < 0 => Some(IoPrio {
            class: IoClass::Idle,
            level: 0,
        }),
        p => Some(IoPrio {
            class: IoClass::BestEffort,
            level: (3 - (p.min(1000) * 3 / 1000)) as u8,
        }),
    }
}

/// What a task's status says about its I/O priority, with the host's devices.
pub fn view(priority: i32, devices: &[IoDevice]) -> Option<IoView> {
    Some(IoView {
        weight: io_weight(priority)?,
        ioprio: io_class(priority),
        devices: devices.to_vec(),
    })
}

/// The directive's reason: the priority, what is written, and per device which of it takes effect.
pub fn reason(priority: i32, devices: &[IoDevice]) -> String {
    let (Some(weight), Some(class)) = (io_weight(priority), io_class(priority)) else {
        return format!("priority {priority}");
    };
    let mut out = format!("priority {priority}: weight {weight}, ioprio {class}");
    if devices.is_empty() {
        out.push_str("; no block device detected");
    }
    for d in devices {
        out.push_str(&format!(
            "; {} ({}): {} ({})",
            d.device, d.scheduler, d.mechanism, d.why
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_map_to_classes_that_an_operator_expects() {
        assert_eq!(io_class(0), None);
        let level = |p| io_class(p).map(|c| (c.class, c.level));
        assert_eq!(level(-1), Some((IoClass::Idle, 0)));
        assert_eq!(level(-1000), Some((IoClass::Idle, 0)));
        assert_eq!(level(1), Some((IoClass::BestEffort, 3)));
        assert_eq!(level(500), Some((IoClass::BestEffort, 2)));
        assert_eq!(level(1000), Some((IoClass::BestEffort, 0)));
        assert_eq!(level(5000), Some((IoClass::BestEffort, 0)));
        assert!(view(0, &[]).is_none());
    }

    #[test]
    fn the_reason_names_each_device_and_its_mechanism() {
        let devs = [IoDevice {
            device: "vda".into(),
            scheduler: "mq-deadline".into(),
            mechanism: "ioprio".into(),
            why: "mq-deadline honours the class".into(),
        }];
        let r = reason(-500, &devs);
        assert!(
            r.starts_with("priority -500: weight 255, ioprio idle"),
            "{r}"
        );
        assert!(r.contains("vda (mq-deadline): ioprio"), "{r}");
        assert!(reason(100, &[]).contains("no block device detected"));
        assert_eq!(view(-500, &devs).map(|v| v.devices.len()), Some(1));
    }
}
