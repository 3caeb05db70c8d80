//! call (in progress)
