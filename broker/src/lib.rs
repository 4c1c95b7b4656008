//! broker: the host-local daemon `predictived` and its client. See docs/BROKER-API.md and docs/ARCHITECTURE.md.
//!
//! Modules: [`controller`] (pure allocation logic), [`api`] (the wire protocol), [`client`] (blocking client
//! for the shim and `predictivectl`), [`annotations`] (the `io.predictive.*` annotations), [`config`] (the
//! daemon's TOML), [`server`] (the daemon: socket, tick, recorder, retraining).

pub mod controller;
pub mod annotations;
pub mod api;
