//! broker: the host-local daemon `predictived` and the allocation controller (`predictivectl`, its CLI, is the
//! `predictivectl` crate). See docs/BROKER-API.md and docs/ARCHITECTURE.md.
//!
//! The protocol and what the shim shares with the broker live in the `predictive-api` crate; they are re-exported
//! here under their old paths ([`api`] is `predictive_api::wire`, and [`annotations`], [`client`], [`apply`],
//! [`validate`], [`error_chain`]), so the broker's code reads as before.
//!
//! Modules: [`controller`] (pure allocation logic), [`convert`] (the predictor's values as wire types), [`config`]
//! (the daemon's TOML), [`server`] (the daemon: socket, tick, recorder, retraining), [`cli`] (`predictived`'s
//! flags), [`history`] (per-container usage and allocation over time, decision counters), [`metrics`] (the
//! Prometheus endpoint), [`journal`] (the recorder's queue), [`transfer`] (run
//! histories exported by one node and imported by another).

pub use predictive_api::wire as api;
pub use predictive_api::{annotations, apply, client, error_chain, validate};

pub mod cli;
pub mod clock;
pub mod config;
pub mod controller;
pub mod convert;
pub mod history;
pub mod journal;
pub mod metrics;
pub mod server;
pub mod transfer;
