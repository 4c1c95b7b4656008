//! Shim logs: `tracing` events written to containerd's `log` fifo in the bundle.
//!
//! containerd reads `<bundle>/log` and copies each line into its own log. The fifo is opened
//! read-write and non-blocking, so the shim never waits for containerd and, if nobody reads and
//! the fifo fills, lines are dropped rather than stalling the shim. `log` records from the
//! containerd-shim crate are forwarded into `tracing`.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;

use tracing_subscriber::EnvFilter;

/// Sets up logging into `./log` (the working directory is the bundle when this runs).
pub fn init(debug: bool) {
    let path = std::path::Path::new("log");
    if !path.exists() {
        let _ = nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    // libcgroups warns once per missing controller on every create and delete: noise, not news.
    let level = if debug {
        "debug"
    } else {
        "info,libcgroups=error"
    };
    let filter =
        EnvFilter::try_from_env("PREDICTIVE_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_log::LogTracer::init();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false);
    let _ = match file {
        Ok(file) => builder.with_writer(std::sync::Mutex::new(file)).try_init(),
        Err(_) => builder.with_writer(std::io::sink).try_init(),
    };
}
