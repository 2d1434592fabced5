//! The domain: identifiers, records, time, secrets, signing keys, the
//! revocation index and the engine that holds every lifecycle rule.
//!
//! Nothing here knows about HTTP; dialect adapters in `server` translate
//! wire formats into calls on [`engine::Engine`].

pub mod clock;
pub mod delivery;
pub mod engine;
pub mod error;
pub mod gstin;
pub mod ids;
pub mod keys;
pub mod model;
pub mod revocation;
pub mod secrets;

pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::Engine;
pub use error::EngineError;
pub use ids::{ClientId, SessionId, Subject};
