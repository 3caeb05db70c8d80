//! Built-in STUN/TURN on the `turn` crate, with REST API credentials, a peer
//! address policy and allocation quotas.
//!
//! ```text
//! UDP socket ─┐
//! TCP/TLS mux ┼─> GuardedConn (policy, quotas) ─> turn::server::Server ─> relays
//! ```
//!
//! I/O contract: [`TurnServer::start`] binds the listeners and spawns the crate's
//! server; [`TurnServer::close`] stops it. The decisions (policy, quotas,
//! credentials) are plain functions of their inputs.

pub mod auth;
pub mod guard;
pub mod policy;
mod server;
mod stream;

pub use server::{TurnError, TurnServer};
