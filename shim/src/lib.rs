//! `containerd-shim-predictive-v2`: a containerd shim v2 (runtime `io.containerd.predictive.v2`)
//! that runs containers through youki's libcontainer. See docs/ARCHITECTURE.md.

pub mod batch;
pub mod blocking;
pub mod companions;
pub mod container;
pub mod cwd;
pub mod devices;
pub mod error;
pub mod events;
pub mod fidelity;
pub mod footprint;
pub mod freeze;
pub mod idmap;
pub mod io;
pub mod log_uri;
pub mod logging;
pub mod metrics;
pub mod oom;
pub mod options;
pub mod predict;
pub mod process;
pub mod publisher;
pub mod reaper;
pub mod runtime;
pub mod seams;
pub mod service;
pub mod settings;
pub mod spawn;
pub mod spec_edit;
pub mod systemd;
pub mod task;
pub mod ticker;
pub mod warmup;
pub mod zygote;

/// The runtime name containerd knows this shim by.
pub const RUNTIME_NAME: &str = "io.containerd.predictive.v2";
