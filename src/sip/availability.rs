//! Whether this instance takes new calls, as SIP-side balancers see it: an
//! out-of-dialog OPTIONS is answered 200 while it does and 503 while it drains or is
//! at capacity, so a dispatcher that probes with OPTIONS (Kamailio's `dispatcher`,
//! OpenSIPS' `load_balancer`) stops sending INVITEs here.

use std::sync::Arc;

/// Whether the gateway takes new calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Availability {
    /// New calls are taken.
    #[default]
    Available,
    /// Draining: calls up continue, new ones are refused.
    Draining,
    /// Every call slot is taken.
    AtCapacity,
}

impl Availability {
    /// The reason phrase of the 503 answering an OPTIONS probe (None when available).
    pub fn refusal(self) -> Option<&'static str> {
        match self {
            Availability::Available => None,
            Availability::Draining => Some("Draining"),
            Availability::AtCapacity => Some("At Capacity"),
        }
    }
}

/// Asked for the gateway's availability before each SIP message is handled (it must
/// be cheap: a few atomic loads or an uncontended lock).
#[derive(Clone)]
pub struct AvailabilityProbe(Arc<dyn Fn() -> Availability + Send + Sync>);

impl AvailabilityProbe {
    /// A probe that asks `f`.
    pub fn new(f: impl Fn() -> Availability + Send + Sync + 'static) -> AvailabilityProbe {
        AvailabilityProbe(Arc::new(f))
    }

    /// The gateway's availability now.
    pub fn get(&self) -> Availability {
        (self.0)()
    }
}

impl std::fmt::Debug for AvailabilityProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AvailabilityProbe")
    }
}
