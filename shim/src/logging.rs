//! Shim logs: `tracing` events written to containerd's `log` fifo in the bundle.
//!
//! containerd reads `<bundle>/log` and copies each line into its own log. The fifo is opened
//! read-write and non-blocking, so the shim never waits for containerd and, if nobody reads and
//! the fifo fills, lines are dropped rather than stalling the shim. `log` records from the
//! containerd-shim crate are forwarded into `tracing`.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::str::FromStr;

use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Sets up logging into `./log` (the working directory is the bundle when this runs).
///
/// The level is `info` (`debug` with containerd's `-debug`); `PREDICTIVE_LOG` in containerd's
/// environment overrides it with `level,target=level` directives (tracing's `Targets`); a value that does not
/// parse is logged as a warning and the default applies.
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
    let default = if debug {
        "debug"
    } else {
        "info,libcgroups=error"
    };
    // `Targets`, not `EnvFilter`: the same directive syntax at a fraction of the memory.
    let asked = std::env::var("PREDICTIVE_LOG").ok();
    let parsed = asked.as_deref().map(Targets::from_str);
    let filter = match &parsed {
        Some(Ok(t)) => t.clone(),
        _ => Targets::from_str(default).unwrap_or_default(),
    };
    let _ = tracing_log::LogTracer::init();
    // A line the log pipe does not take (containerd not reading it: full, or containerd down) is dropped, not
    // reported with `eprintln!`, which panics where stderr fails too.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .log_internal_errors(false);
    let _ = match file {
        Ok(file) => tracing_subscriber::registry()
            .with(
                fmt.with_writer(std::sync::Mutex::new(file))
                    .with_filter(filter),
            )
            .try_init(),
        Err(_) => tracing_subscriber::registry()
            .with(fmt.with_writer(std::io::sink).with_filter(filter))
            .try_init(),
    };
    if let (Some(value), Some(Err(e))) = (asked, parsed) {
        tracing::warn!(
            "PREDICTIVE_LOG={:?} is not a list of level or target=level directives ({e}); logging at {default}",
            value.chars().take(200).collect::<String>()
        );
    }
}
