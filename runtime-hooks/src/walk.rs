//! Walking a cgroup's subtree (a leaf module: `cgroup` and `subtree` both use it).

use std::io;
use std::path::{Path, PathBuf};

/// Every directory below `dir` (not `dir` itself), each before the directories below it, without following symbolic
/// links (the type comes from the directory entry); one gone meanwhile is no failure, one that cannot be listed is
/// kept without what is below it, and the first such failure returned. Iterative: a deep tree costs heap, not stack.
pub fn dirs_below(dir: &Path) -> (Vec<PathBuf>, Option<(PathBuf, io::Error)>) {
    let mut out = Vec::new();
    let mut failed = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        match std::fs::read_dir(&d) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(entry.path());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                failed.get_or_insert((d.clone(), e));
            }
        }
        if d != dir {
            out.push(d);
        }
    }
    (out, failed)
}
