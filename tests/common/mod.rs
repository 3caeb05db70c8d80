//! Shared helpers of the integration tests. Each test binary uses a subset.
#![allow(dead_code)]

pub mod browser;
pub mod call;
pub mod gateway;
pub mod http;
pub mod kamailio;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod receiver;
pub mod redis;
pub mod sipp;
pub mod tls;
pub mod turn;
