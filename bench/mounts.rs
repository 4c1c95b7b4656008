//! Extra mounts on the host for the length of a run (`PREDICTIVE_BENCH_MOUNTS`, default 0): a node running a few
//! hundred pods has thousands of mounts (each container's rootfs, each pod's volumes, secrets and service account
//! token), and every read of `/proc/self/mountinfo` on the start and exec paths costs in proportion
//! (docs/BENCHMARKS.md, "A node with many mounts"). They are small tmpfs mounts under one new directory of the
//! bench's own, in the host's mount namespace, where containerd and both runtimes' shims see them; unmounted and
//! removed when the run ends. A run killed before that leaves them: `umount /tmp/predictive-bench-mounts-*/*`.

use std::ffi::CString;
use std::path::{Path, PathBuf};

/// The mounts a run made, unmounted and removed on drop.
pub struct ExtraMounts {
    dir: PathBuf,
    mounted: Vec<PathBuf>,
}

impl ExtraMounts {
    /// Mounts `n` tmpfs (4 kB each) under a new directory of `/tmp`. On an error, what was mounted is undone.
    pub fn make(n: usize) -> Result<Self, String> {
        let dir =
            std::env::temp_dir().join(format!("predictive-bench-mounts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut made = ExtraMounts {
            dir,
            mounted: Vec::with_capacity(n),
        };
        for i in 0..n {
            let target = made.dir.join(i.to_string());
            std::fs::create_dir(&target)
                .map_err(|e| format!("creating {}: {e}", target.display()))?;
            mount_tmpfs(&target)?;
            made.mounted.push(target);
        }
        Ok(made)
    }

    /// How many mounts the process sees now (lines of `/proc/self/mountinfo`).
    pub fn mountinfo_lines() -> usize {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for ExtraMounts {
    fn drop(&mut self) {
        for target in self.mounted.iter().rev() {
            if let Ok(path) = CString::new(target.as_os_str().as_encoded_bytes()) {
                // SAFETY: a valid C string; detaching a tmpfs of ours.
                unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One 4 kB tmpfs at `target`.
fn mount_tmpfs(target: &Path) -> Result<(), String> {
    let path = CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} has a NUL byte", target.display()))?;
    // SAFETY: valid C strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"none".as_ptr(),
            path.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"size=4k".as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "mounting a tmpfs at {}: {}",
            target.display(),
            std::io::Error::last_os_error()
        ))
    }
}
