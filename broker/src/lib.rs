//! broker: the host-local daemon `predictived` and its client. See docs/BROKER-API.md and docs/ARCHITECTURE.md.
//!
//! Modules: [`controller`] (pure allocation logic), [`api`] (the wire protocol), [`client`] (blocking client
//! for the shim and `predictivectl`), [`annotations`] (the `io.predictive.*` annotations), [`config`] (the
//! daemon's TOML), [`server`] (the daemon: socket, tick, recorder, retraining), [`apply`] (a directive to
//! cgroup writes, for the shim), [`cli`] (`predictived`'s flags), [`history`] (per-container usage and
//! allocation over time, decision counters), [`metrics`] (the Prometheus endpoint), [`ctl`] (`predictivectl`),
//! [`transfer`] (run histories exported by one node and imported by another).

pub mod annotations;
pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod controller;
pub mod ctl;
pub mod history;
pub mod journal;
pub mod metrics;
pub mod server;
pub mod transfer;
pub mod validate;

/// An error with its sources, `a: b: c`, for the one line a binary prints.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
pub mod apply;
