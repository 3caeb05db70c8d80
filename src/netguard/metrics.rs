//! `callbridge_peer_refused_total{path}`: what the address policies refused, read at
//! scrape time from the counters the TURN guard and the candidate policy keep.
//!
//! `path`: `turn_request` (CreatePermission/ChannelBind answered 403), `turn_data`
//! (Send indications and ChannelData dropped), `ice_candidate` (browser candidates
//! ignored), `ice_send` (datagrams a WebRTC leg's socket dropped).

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts};

use crate::media::candidates::CandidatePolicy;
use crate::turn::TurnServer;

/// Reads the counters: (path, count).
pub type RefusalSource = Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

/// The collector of `callbridge_peer_refused_total`.
pub struct PeerRefusals {
    /// Describes the family (for registration).
    desc: Desc,
    /// Where the counts come from.
    source: RefusalSource,
}

impl PeerRefusals {
    /// A collector reading `source` at each scrape.
    pub fn new(source: RefusalSource) -> Result<PeerRefusals, prometheus::Error> {
        let desc = Self::family()?.desc().into_iter().next().cloned();
        let desc = desc.ok_or_else(|| prometheus::Error::Msg("no descriptor".into()))?;
        Ok(PeerRefusals { desc, source })
    }

    /// The counters of a gateway: its candidate policy and TURN server (if any).
    pub fn of(
        candidates: &Arc<CandidatePolicy>,
        turn: Option<Arc<TurnServer>>,
    ) -> Result<PeerRefusals, prometheus::Error> {
        let candidates = Arc::clone(candidates);
        PeerRefusals::new(Box::new(move || {
            let (requests, data) = turn
                .as_ref()
                .map(|t| (t.refused_peers(), t.dropped_data()))
                .unwrap_or_default();
            vec![
                ("turn_request", requests),
                ("turn_data", data),
                ("ice_candidate", candidates.refused_candidates()),
                ("ice_send", candidates.dropped_sends()),
            ]
        }))
    }

    fn family() -> Result<IntCounterVec, prometheus::Error> {
        IntCounterVec::new(
            Opts::new(
                "callbridge_peer_refused_total",
                "Peers refused by the TURN and ICE address policies (turn_request, turn_data, ice_candidate, ice_send)",
            ),
            &["path"],
        )
    }
}

impl Collector for PeerRefusals {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(family) = Self::family() else {
            return Vec::new();
        };
        for (path, count) in (self.source)() {
            family.with_label_values(&[path]).inc_by(count);
        }
        family.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_exported_by_path() {
        let metrics = crate::metrics::Metrics::new(1).expect("metrics");
        let collector = PeerRefusals::new(Box::new(|| vec![("turn_request", 3), ("ice_send", 0)]))
            .expect("collector");
        metrics.register(Box::new(collector)).expect("register");
        let text = metrics.render();
        assert!(
            text.contains(r#"callbridge_peer_refused_total{path="turn_request"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"callbridge_peer_refused_total{path="ice_send"} 0"#),
            "{text}"
        );
    }
}
