//! Shared helpers for integration tests: `mod common;` in a test file.
#![allow(dead_code)]

pub mod browser;
