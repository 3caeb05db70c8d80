//! callbridge: a WebRTC-to-SIP gateway.
//!
//! Browsers connect over WebSocket (`signaling`), authenticate with a JWT (`auth`) and
//! place calls (`call`) that leave through our SIP user agent (`sip`); the audio is
//! relayed between the WebRTC leg and the RTP leg by `media`. `api` serves `/ws` and
//! health on the public listener and the operator API (`/v1`) and metrics on the admin
//! listener, `events` keeps call records and delivers webhooks, `drain` is the drain
//! switch everything consults, and `server` wires it all together.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod call;
pub mod config;
pub mod drain;
pub mod events;
pub mod media;
pub mod metrics;
pub mod netguard;
pub mod private_fs;
pub mod secret;
pub mod server;
pub mod service_manager;
pub mod signaling;
pub mod sip;
pub mod turn;
