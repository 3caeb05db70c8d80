//! Prometheus metrics of one gateway instance (a registry per instance, so several
//! instances can run in one test process).
//!
//! Every label set is bounded: labels come from fixed lists (direction, end reason,
//! SIP method, status code or class, delivery outcome, event type, limit name).

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

use crate::sip::{MessageCount, SipEndpoint};

/// The gauges and counters the gateway exports at `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    /// The registry everything below is registered in.
    registry: Registry,
    /// Calls up right now (`callbridge_active_calls`).
    pub active_calls: IntGauge,
    /// Configured capacity (`callbridge_capacity_calls`).
    pub capacity_calls: IntGauge,
    /// Finished calls by direction and outcome (`callbridge_calls_total`).
    pub calls_total: IntCounterVec,
    /// Time from `call` to answer (`callbridge_call_setup_seconds`).
    pub call_setup_seconds: Histogram,
    /// Interarrival jitter of finished calls (`callbridge_call_jitter_seconds`).
    pub call_jitter_seconds: Histogram,
    /// Packet loss of finished calls, 0..1 (`callbridge_call_packet_loss_ratio`).
    pub call_packet_loss_ratio: Histogram,
    /// Estimated MOS of finished calls, 1..5 (`callbridge_call_mos`).
    pub call_mos: Histogram,
    /// Open WebSocket sessions (`callbridge_ws_sessions`).
    pub ws_sessions: IntGauge,
    /// Allocations on the built-in TURN server (`callbridge_turn_allocations`).
    pub turn_allocations: IntGauge,
    /// Bytes relayed by TURN allocations that have closed.
    pub turn_relayed_bytes: IntGauge,
    /// 1 when a trunk answers its health checks (`callbridge_trunk_up{trunk}`).
    pub trunk_up: prometheus::IntGaugeVec,
    /// 1 when a registering trunk is registered (`callbridge_trunk_registered{trunk}`).
    pub trunk_registered: prometheus::IntGaugeVec,
    /// Webhook attempts by outcome `delivered|failed|dead`
    /// (`callbridge_webhook_deliveries_total`).
    pub webhook_deliveries_total: IntCounterVec,
    /// Outbox rows not delivered yet (`callbridge_webhook_outbox_pending`).
    pub webhook_outbox_pending: IntGauge,
    /// Events dropped because the writer queue was full, by event type
    /// (`callbridge_events_dropped_total`).
    pub events_dropped_total: IntCounterVec,
    /// Requests refused by a rate limit, by limit `http|ws|call`
    /// (`callbridge_rate_limited_total`).
    pub rate_limited_total: IntCounterVec,
    /// 1 while the instance drains (`callbridge_draining`).
    pub draining: IntGauge,
    /// SIP-side RTP/RTCP datagrams dropped, by `reason` (`foreign_source`: not from the
    /// far end's SDP or latched address) (`callbridge_rtp_dropped_total`).
    pub rtp_dropped_total: IntCounterVec,
}

/// Errors creating metrics (only on duplicate registration, a programming error).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Result<Histogram, prometheus::Error> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
}

fn counter_vec(
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

impl Metrics {
    /// Creates and registers the metric set.
    pub fn new(capacity: usize) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let capacity_calls = IntGauge::new(
            "callbridge_capacity_calls",
            "Maximum concurrent calls (server.max_calls)",
        )?;
        capacity_calls.set(i64::try_from(capacity).unwrap_or(i64::MAX));
        let metrics = Metrics {
            active_calls: IntGauge::new("callbridge_active_calls", "Calls in progress")?,
            capacity_calls,
            calls_total: counter_vec(
                "callbridge_calls_total",
                "Finished calls by direction and outcome",
                &["direction", "outcome"],
            )?,
            call_setup_seconds: histogram(
                "callbridge_call_setup_seconds",
                "Time from call request to answer",
                &[0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            )?,
            call_jitter_seconds: histogram(
                "callbridge_call_jitter_seconds",
                "Interarrival jitter of finished calls",
                &[0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32],
            )?,
            call_packet_loss_ratio: histogram(
                "callbridge_call_packet_loss_ratio",
                "Packet loss of finished calls (0..1)",
                &[0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
            )?,
            call_mos: histogram(
                "callbridge_call_mos",
                "Estimated mean opinion score of finished calls (1..5)",
                &[1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4],
            )?,
            ws_sessions: IntGauge::new("callbridge_ws_sessions", "Open WebSocket sessions")?,
            turn_allocations: IntGauge::new(
                "callbridge_turn_allocations",
                "Allocations on the built-in TURN server",
            )?,
            turn_relayed_bytes: IntGauge::new(
                "callbridge_turn_relayed_bytes",
                "Bytes relayed by closed TURN allocations since start",
            )?,
            trunk_up: prometheus::IntGaugeVec::new(
                Opts::new(
                    "callbridge_trunk_up",
                    "1 when the trunk answers its OPTIONS health checks",
                ),
                &["trunk"],
            )?,
            trunk_registered: prometheus::IntGaugeVec::new(
                Opts::new(
                    "callbridge_trunk_registered",
                    "1 when the trunk's REGISTER is current",
                ),
                &["trunk"],
            )?,
            webhook_deliveries_total: counter_vec(
                "callbridge_webhook_deliveries_total",
                "Webhook delivery attempts by outcome (delivered, failed, dead)",
                &["outcome"],
            )?,
            webhook_outbox_pending: IntGauge::new(
                "callbridge_webhook_outbox_pending",
                "Webhook deliveries waiting in the outbox",
            )?,
            events_dropped_total: counter_vec(
                "callbridge_events_dropped_total",
                "Events dropped because the writer queue was full",
                &["event"],
            )?,
            rate_limited_total: counter_vec(
                "callbridge_rate_limited_total",
                "Requests refused by a rate limit (http, ws, call)",
                &["limit"],
            )?,
            draining: IntGauge::new("callbridge_draining", "1 while the instance drains")?,
            rtp_dropped_total: counter_vec(
                "callbridge_rtp_dropped_total",
                "SIP-side RTP/RTCP datagrams dropped, by reason (foreign_source: not from the far end)",
                &["reason"],
            )?,
            registry,
        };
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(metrics.active_calls.clone()),
            Box::new(metrics.capacity_calls.clone()),
            Box::new(metrics.calls_total.clone()),
            Box::new(metrics.call_setup_seconds.clone()),
            Box::new(metrics.call_jitter_seconds.clone()),
            Box::new(metrics.call_packet_loss_ratio.clone()),
            Box::new(metrics.call_mos.clone()),
            Box::new(metrics.ws_sessions.clone()),
            Box::new(metrics.turn_allocations.clone()),
            Box::new(metrics.turn_relayed_bytes.clone()),
            Box::new(metrics.trunk_up.clone()),
            Box::new(metrics.trunk_registered.clone()),
            Box::new(metrics.webhook_deliveries_total.clone()),
            Box::new(metrics.webhook_outbox_pending.clone()),
            Box::new(metrics.events_dropped_total.clone()),
            Box::new(metrics.rate_limited_total.clone()),
            Box::new(metrics.draining.clone()),
            Box::new(metrics.rtp_dropped_total.clone()),
        ];
        // Shown from the start (0), so a dashboard can rate() it.
        let _ = metrics.foreign_rtp_drops();
        for c in collectors {
            metrics.registry.register(c)?;
        }
        Ok(metrics)
    }

    /// The counter of SIP-side media from strangers
    /// (`callbridge_rtp_dropped_total{reason="foreign_source"}`).
    pub fn foreign_rtp_drops(&self) -> prometheus::IntCounter {
        self.rtp_dropped_total
            .with_label_values(&["foreign_source"])
    }

    /// Exports `callbridge_sip_messages_total{direction,method,status}` from the
    /// endpoint's counters at each scrape.
    pub fn register_sip(&self, endpoint: Arc<SipEndpoint>) -> Result<(), MetricsError> {
        let collector = SipMessages::new(Box::new(move || endpoint.message_counts()))?;
        self.registry.register(Box::new(collector))?;
        Ok(())
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// SIP methods exported by name; any other is `other`.
const SIP_METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "UPDATE",
    "PRACK",
    "REFER",
    "NOTIFY",
    "SUBSCRIBE",
    "MESSAGE",
];

/// Status codes exported as themselves; any other is its class (`4xx`).
const SIP_STATUSES: &[u16] = &[
    100, 180, 181, 183, 200, 202, 401, 403, 404, 407, 408, 480, 481, 486, 487, 488, 500, 502, 503,
    504, 600, 603,
];

/// The bounded `method` label of a SIP message.
pub fn sip_method_label(method: &str) -> &'static str {
    SIP_METHODS
        .iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .copied()
        .unwrap_or("other")
}

/// The bounded `status` label: `none` for requests, the code when well known,
/// else its class.
pub fn sip_status_label(status: Option<u16>) -> String {
    match status {
        None => "none".into(),
        Some(code) if SIP_STATUSES.contains(&code) => code.to_string(),
        Some(code @ 100..=699) => format!("{}xx", code / 100),
        Some(_) => "invalid".into(),
    }
}

/// Reads the SIP endpoint's counters.
type CountSource = Box<dyn Fn() -> Vec<MessageCount> + Send + Sync>;

/// A collector that turns [`SipEndpoint::message_counts`] into a counter family
/// with bounded labels at scrape time.
struct SipMessages {
    /// Describes the family (for registration).
    desc: Desc,
    /// Where the counts come from.
    source: CountSource,
}

impl SipMessages {
    fn new(source: CountSource) -> Result<SipMessages, prometheus::Error> {
        let desc = Self::family()?.desc().into_iter().next().cloned();
        let desc = desc.ok_or_else(|| prometheus::Error::Msg("no descriptor".into()))?;
        Ok(SipMessages { desc, source })
    }

    fn family() -> Result<IntCounterVec, prometheus::Error> {
        counter_vec(
            "callbridge_sip_messages_total",
            "SIP messages sent (out) and received (in), retransmissions included",
            &["direction", "method", "status"],
        )
    }
}

impl Collector for SipMessages {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(family) = Self::family() else {
            return Vec::new();
        };
        for count in (self.source)() {
            let direction = match count.direction {
                crate::sip::Direction::Inbound => "in",
                crate::sip::Direction::Outbound => "out",
            };
            let status = sip_status_label(count.status);
            family
                .with_label_values(&[direction, sip_method_label(&count.method), &status])
                .inc_by(count.count);
        }
        family.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Direction;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(sip_method_label("invite"), "INVITE");
        assert_eq!(sip_method_label("FOO"), "other");
        assert_eq!(sip_status_label(None), "none");
        assert_eq!(sip_status_label(Some(486)), "486");
        assert_eq!(sip_status_label(Some(499)), "4xx");
        assert_eq!(sip_status_label(Some(999)), "invalid");
    }

    #[test]
    fn sip_collector_aggregates_into_bounded_labels() {
        let metrics = Metrics::new(10).expect("metrics");
        let collector = SipMessages::new(Box::new(|| {
            vec![
                MessageCount {
                    direction: Direction::Outbound,
                    method: "INVITE".into(),
                    status: None,
                    count: 3,
                },
                MessageCount {
                    direction: Direction::Inbound,
                    method: "INVITE".into(),
                    status: Some(499),
                    count: 1,
                },
                MessageCount {
                    direction: Direction::Inbound,
                    method: "INVITE".into(),
                    status: Some(498),
                    count: 2,
                },
                MessageCount {
                    direction: Direction::Inbound,
                    method: "X-CUSTOM".into(),
                    status: None,
                    count: 5,
                },
            ]
        }))
        .expect("collector");
        metrics
            .registry
            .register(Box::new(collector))
            .expect("register");
        let text = metrics.render();
        assert!(
            text.contains(
                r#"callbridge_sip_messages_total{direction="out",method="INVITE",status="none"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"callbridge_sip_messages_total{direction="in",method="INVITE",status="4xx"} 3"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"method="other""#), "{text}");
        assert!(text.contains("callbridge_call_mos_bucket"), "{text}");
        assert!(text.contains("callbridge_turn_allocations 0"), "{text}");
        assert!(
            text.contains(r#"callbridge_rtp_dropped_total{reason="foreign_source"} 0"#),
            "{text}"
        );
    }
}
