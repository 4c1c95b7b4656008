//! predictive-api: the protocol between the shim (or `predictivectl`) and the broker `predictived`, and what both
//! sides share, in a crate that links nothing of the broker's internals (no store, no models, no TOML) — what
//! `containerd-shim-protos` is to containerd's shims. See docs/BROKER-API.md for the protocol and
//! docs/ARCHITECTURE.md ("Crates").
//!
//! Modules: [`wire`] (the messages, version [`wire::PROTOCOL_VERSION`], and their encoding), [`types`] (the
//! controller's data types that travel in them: limits, allocations, directives), [`prediction`] (the
//! predictor's answers as wire types), [`validate`] (the range checks on what a peer sends), [`client`] (the
//! blocking client), [`history_file`] (the run-history export file), [`annotations`] (the `io.predictive.*`
//! annotations), [`apply`] (a directive to cgroup writes, for the shim), [`settings`] (the shim's keys of
//! predictived's configuration file) and [`toml_keys`] (the small TOML reader behind it).

pub mod annotations;
pub mod apply;
pub mod client;
pub mod history_file;
pub mod prediction;
pub mod settings;
pub mod toml_keys;
pub mod types;
pub mod validate;
pub mod wire;

/// An error with its sources, `a: b: c`: runtime-hooks' formatter (the leaf crate, so its hook binary prints
/// chains the same way), re-exported where the shim and the broker already find it.
pub use runtime_hooks::error_chain;
