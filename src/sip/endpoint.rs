//! placeholder
/// x
pub struct SipEndpoint;
/// x
pub struct SipCallHandle;
/// x
pub struct MessageCount;
