//! What the broker's integration tests share (a module of each test binary, not a test of its own).

use std::process::Output;

/// `predictivectl ARGS` through its library (a test of this package cannot name another package's binary; the
/// binary is `predictivectl::cli` on the process's streams), as a process's output.
pub fn predictivectl(args: Vec<String>) -> Output {
    use std::os::unix::process::ExitStatusExt;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let code = predictivectl::cli(args, &mut stdout, &mut stderr);
    Output {
        status: std::process::ExitStatus::from_raw(i32::from(code) << 8),
        stdout,
        stderr,
    }
}
