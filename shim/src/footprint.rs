//! The shim's resident memory between lifecycle calls: unmapping the pages of its own code it no longer runs.
//!
//! One shim server and one zygote stay per container (or pod), and most of what they hold resident is not data
//! but the pages of the shim binary their code ran from: the kernel maps up to 64 kB of the page cache around each
//! page fault on code, so the create and start paths (spec parsing, libcontainer's client side, the ttrpc and
//! protobuf code) leave ~5 MB of the binary mapped in the server and ~2 MB in the zygote, though an idle shim runs
//! a few hundred kB of it (a timer, two reads of cgroup files, a report now and then). [`drop_code_pages`] unmaps
//! the binary's read-only, never-written mappings (`MADV_DONTNEED`); the pages stay in the page cache, shared with
//! every other shim, and the code that runs next faults its pages back in (a minor fault each, no I/O). It never
//! touches a mapping that holds a private copy of a page (a relocated one): dropping it would lose the copy.
//! Measured in docs/BENCHMARKS.md ("Shim").

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long after the last lifecycle call the server drops its code pages: a start is a burst of calls (Create,
/// Start, a pod's next container) and their events, and dropping within it would only fault the same pages back.
pub const QUIET: Duration = Duration::from_millis(500);

/// Drops the server's code pages once no lifecycle call came for [`QUIET`].
#[derive(Clone, Default)]
pub struct Trimmer {
    /// Bumped by each call: a pending drop goes ahead only if no call came after it was scheduled.
    generation: Arc<AtomicU64>,
}

impl Trimmer {
    /// A lifecycle call ended: drop the code pages after [`QUIET`] unless another one ends first. Must be called
    /// on a tokio runtime.
    pub fn touched(&self) {
        let mine = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let generation = self.generation.clone();
        tokio::spawn(async move {
            tokio::time::sleep(QUIET).await;
            if generation.load(Ordering::SeqCst) == mine {
                let kb = crate::blocking::blocking("dropping code pages", drop_code_pages).await;
                tracing::debug!(kb = kb.unwrap_or(0), "code pages dropped");
            }
        });
    }
}

/// Unmaps the pages of this process's own executable that belong to read-only mappings without private
/// (copied) pages. Returns the kB that were resident in them before (from `smaps`). Best effort: on any
/// failure nothing is unmapped.
pub fn drop_code_pages() -> u64 {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return 0;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut dropped = 0;
    for m in droppable(&smaps, &exe) {
        // SAFETY: the range is a whole mapping of this process's executable that is read-only and holds no
        // private pages (checked just now from smaps, and a read-only mapping cannot gain one); MADV_DONTNEED on
        // it only removes page-table entries for page-cache pages, which the next access faults back in with the
        // same contents. No Rust object lives in it.
        let rc = unsafe {
            libc::madvise(
                m.start as *mut libc::c_void,
                m.end - m.start,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            dropped += m.rss_kb;
        }
    }
    dropped
}

/// One mapping to drop.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    rss_kb: u64,
}

/// The mappings of `exe` in `smaps` text that are read-only (no `w`), private to the file (no anonymous pages)
/// and resident at all.
fn droppable(smaps: &str, exe: &Path) -> Vec<Mapping> {
    let exe = exe.to_str().unwrap_or("");
    let mut out = Vec::new();
    // The mapping being read: (start, end, eligible so far, Rss kB).
    let mut current: Option<(usize, usize, bool, u64)> = None;
    let finish = |c: Option<(usize, usize, bool, u64)>, out: &mut Vec<Mapping>| {
        if let Some((start, end, true, rss_kb)) = c
            && rss_kb > 0
        {
            out.push(Mapping { start, end, rss_kb });
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((s, e)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16))
        {
            finish(current.take(), &mut out);
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            let readonly = perms.as_bytes().get(1) == Some(&b'-');
            let eligible = readonly && !exe.is_empty() && path == exe && fields.next().is_none();
            current = Some((start, end, eligible, 0));
            continue;
        }
        let Some(c) = current.as_mut() else { continue };
        let kb = fields.next().and_then(|v| v.parse::<u64>().ok());
        match first {
            "Rss:" => c.3 = kb.unwrap_or(0),
            // A page written once (relocated, or copied on write) lives only here: never drop it. (A dirty page
            // of the file itself, not yet written back, is the page cache's: dropping its mapping loses nothing.)
            "Anonymous:" | "Swap:" if kb != Some(0) => c.2 = false,
            _ => {}
        }
    }
    finish(current.take(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
00200000-00514000 r--p 00000000 fe:00 5441503                            /opt/shim
Rss:                1152 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
Swap:                  0 kB
00514000-00b3a000 r-xp 00313000 fe:00 5441503                            /opt/shim
Rss:                5272 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
Swap:                  0 kB
00b3a000-00b41000 r--p 00938000 fe:00 5441503                            /opt/shim
Rss:                  28 kB
Private_Dirty:         0 kB
Anonymous:            28 kB
Swap:                  0 kB
00b41000-00b4b000 rw-p 0093e000 fe:00 5441503                            /opt/shim
Rss:                  40 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
Swap:                  0 kB
00c00000-00c10000 r--p 00000000 fe:00 77                                 /opt/shim-other
Rss:                  64 kB
Anonymous:             0 kB
00d00000-00d10000 r-xp 00000000 fe:00 5441503                            /opt/shim (deleted)
Rss:                  64 kB
Anonymous:             0 kB
00e00000-00e10000 r-xp 00000000 fe:00 5441503                            /opt/shim
Rss:                   0 kB
Anonymous:             0 kB
1534d000-153f4000 rw-p 00000000 00:00 0                                  [heap]
Rss:                 572 kB
Anonymous:           572 kB
";

    #[test]
    fn only_the_binarys_readonly_unwritten_resident_mappings() {
        let got = droppable(SMAPS, Path::new("/opt/shim"));
        assert_eq!(
            got,
            vec![
                Mapping {
                    start: 0x200000,
                    end: 0x514000,
                    rss_kb: 1152
                },
                Mapping {
                    start: 0x514000,
                    end: 0xb3a000,
                    rss_kb: 5272
                },
            ]
        );
    }

    #[test]
    fn a_mapping_with_a_copied_or_swapped_page_is_kept_a_dirty_file_page_is_not() {
        let copied = SMAPS.replacen(
            "Anonymous:             0 kB",
            "Anonymous:             4 kB",
            1,
        );
        let got = droppable(&copied, Path::new("/opt/shim"));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].start, 0x514000);
        let swapped = SMAPS.replacen(
            "Swap:                  0 kB",
            "Swap:                  4 kB",
            2,
        );
        assert!(droppable(&swapped, Path::new("/opt/shim")).is_empty());
        let dirty = SMAPS.replace("Private_Dirty:         0 kB", "Private_Dirty:         4 kB");
        assert_eq!(droppable(&dirty, Path::new("/opt/shim")).len(), 2);
    }

    fn resident_code_kb() -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("own smaps");
        let exe = std::fs::read_link("/proc/self/exe").expect("own exe");
        droppable(&smaps, &exe).iter().map(|m| m.rss_kb).sum()
    }

    #[test]
    fn dropping_our_own_code_pages_unmaps_them_and_the_code_still_runs() {
        let before = resident_code_kb();
        let dropped = drop_code_pages();
        assert!(dropped > 0, "the running test binary has resident code");
        // Only what ran since (reading smaps) is mapped again.
        let after = resident_code_kb();
        assert!(
            after < before,
            "resident code {before} kB before, {after} kB after"
        );
    }
}
