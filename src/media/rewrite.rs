//! RTP header rewriting for relayed streams: our own SSRC, a continuous sequence and
//! timestamp, whatever the source does (SSRC change, restart, early media → answer).
//!
//! STUB: interface only, to be implemented.
