//! Tessera: a self-hosted token and session service whose sessions can be
//! ended, everywhere, at once.
//!
//! Layers: [`core`] (domain and lifecycle rules), [`store`] (durable state),
//! [`server`] (HTTP: native API, admin API, dialects), [`cli`].

pub mod core;
pub mod store;
