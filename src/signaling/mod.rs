//! signaling (in progress)
