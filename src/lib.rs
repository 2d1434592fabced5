//! Tessera: a self-hosted token and session service whose sessions can be
//! ended, everywhere, at once.
//!
//! Layers: [`core`] (domain and lifecycle rules), [`store`] (durable state),
//! [`server`] (HTTP: native API, admin API, dialects), [`cli`].

pub mod cli;
pub mod config;
pub mod core;
pub mod server;
pub mod store;
