//! Prometheus metrics of one gateway instance (a registry per instance, so several
//! instances can run in one test process).
//!
//! Every label set is bounded: labels come from fixed lists (direction, end reason,
//! SIP method, status code or class (`sip::labels`), delivery outcome, event type,
//! limit name).

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

use crate::sip::{ConnectionStats, MessageCount, SipEndpoint};

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
    /// Post-dial delay of outbound calls: `call` to the first ringing or progress
    /// (`callbridge_call_pdd_seconds`).
    pub call_pdd_seconds: Histogram,
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
    /// Outbound calls admitted on the instance's own count because Redis could not
    /// be asked for the fleet's (`callbridge_fleet_limit_unchecked_total`).
    pub fleet_limit_unchecked_total: prometheus::IntCounter,
    /// The TURN server's allocation limit, `turn.max_allocations` (0: no TURN)
    /// (`callbridge_turn_allocations_max`).
    pub turn_allocations_max: IntGauge,
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
    /// Events the database kept refusing, moved to the dead-letter table, by event
    /// type (`callbridge_events_dead_letter_total`).
    pub events_dead_letter_total: IntCounterVec,
    /// Recordings not started or cut short, by reason `quota|error`
    /// (`callbridge_recordings_skipped_total`).
    pub recordings_skipped_total: IntCounterVec,
    /// Bytes of recordings on disk, as counted against `media.recording_max_total_bytes`
    /// (`callbridge_recordings_disk_bytes`).
    pub recordings_disk_bytes: IntGauge,
    /// Requests refused by a rate limit, by limit `http|ws|call|session`
    /// (`callbridge_rate_limited_total`).
    pub rate_limited_total: IntCounterVec,
    /// 1 while the instance drains (`callbridge_draining`).
    pub draining: IntGauge,
    /// SIP-side RTP/RTCP datagrams dropped, by `reason` (`foreign_source`: not from the
    /// far end's SDP or latched address) (`callbridge_rtp_dropped_total`).
    pub rtp_dropped_total: IntCounterVec,
    /// Datagrams dropped on the media workers' shared WebRTC ports, by `reason`
    /// (`callbridge_webrtc_dropped_total`).
    pub webrtc_dropped_total: IntCounterVec,
}

/// Errors creating metrics (only on duplicate registration, a programming error).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Result<Histogram, prometheus::Error> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
}

/// `direction` of `callbridge_calls_total`.
pub const CALL_DIRECTIONS: &[&str] = &["inbound", "outbound"];
/// `outcome` of `callbridge_calls_total`: every protocol v1 `ended` reason
/// (`signaling::protocol::EndReason::as_str`; a test there keeps the two in step).
pub const CALL_OUTCOMES: &[&str] = &[
    "hangup",
    "remote_hangup",
    "busy",
    "rejected",
    "no_answer",
    "not_found",
    "unavailable",
    "forbidden",
    "limit",
    "media_failed",
    "signaling_lost",
    "answered_elsewhere",
    "error",
];
/// `outcome` of `callbridge_webhook_deliveries_total` (`events` `AttemptOutcome`).
pub const DELIVERY_OUTCOMES: &[&str] = &["delivered", "failed", "dead"];
/// `event` of `callbridge_events_dropped_total` and `..._dead_letter_total`
/// (`events::EventKind::as_str`).
pub const EVENT_KINDS: &[&str] = &[
    "call.started",
    "call.ringing",
    "call.answered",
    "call.ended",
    "recording.ready",
    "webhook.test",
];
/// `reason` of `callbridge_recordings_skipped_total`.
pub const RECORDING_SKIPS: &[&str] = &["quota", "quota_cut", "error"];
/// `limit` of `callbridge_rate_limited_total`.
pub const RATE_LIMITS: &[&str] = &["http", "ws", "call", "session"];

/// Creates every series of `counter` for the label values given per label (the
/// cartesian product), at 0: Prometheus' "avoid missing metrics", so that `rate()`
/// and alerts see a series before its first event.
fn zero_series(counter: &IntCounterVec, values: &[&[&str]]) {
    let mut combos: Vec<Vec<&str>> = vec![Vec::new()];
    for options in values {
        combos = combos
            .into_iter()
            .flat_map(|prefix| {
                options.iter().map(move |v| {
                    let mut c = prefix.clone();
                    c.push(v);
                    c
                })
            })
            .collect();
    }
    for labels in combos {
        let _ = counter.with_label_values(&labels);
    }
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
            call_pdd_seconds: histogram(
                "callbridge_call_pdd_seconds",
                "Post-dial delay of outbound calls: call request to the first ringing or progress",
                &[0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 16.0],
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
            fleet_limit_unchecked_total: prometheus::IntCounter::new(
                "callbridge_fleet_limit_unchecked_total",
                "Outbound calls admitted on the instance's own per-user count because Redis (the fleet's) could not be asked",
            )?,
            turn_allocations_max: IntGauge::new(
                "callbridge_turn_allocations_max",
                "Allocation limit of the built-in TURN server (turn.max_allocations; 0: no TURN)",
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
            events_dead_letter_total: counter_vec(
                "callbridge_events_dead_letter_total",
                "Events the database kept refusing, moved to the dead-letter table",
                &["event"],
            )?,
            recordings_skipped_total: counter_vec(
                "callbridge_recordings_skipped_total",
                "Recordings not started (quota full, file error) or cut at the disk quota",
                &["reason"],
            )?,
            recordings_disk_bytes: IntGauge::new(
                "callbridge_recordings_disk_bytes",
                "Bytes of call recordings on disk (counted against the recording quota)",
            )?,
            rate_limited_total: counter_vec(
                "callbridge_rate_limited_total",
                "Requests refused by a rate limit (http, ws, call, session)",
                &["limit"],
            )?,
            draining: IntGauge::new("callbridge_draining", "1 while the instance drains")?,
            rtp_dropped_total: counter_vec(
                "callbridge_rtp_dropped_total",
                "SIP-side RTP/RTCP datagrams dropped, by reason (foreign_source: not from the far end)",
                &["reason"],
            )?,
            webrtc_dropped_total: counter_vec(
                "callbridge_webrtc_dropped_total",
                "Datagrams dropped on the media workers' WebRTC ports, by reason (unknown_source, \
                 unknown_ufrag, too_many_sources, refused_destination, send_failed, bridge_full, handshake_backlog, worker_full)",
                &["reason"],
            )?,
            registry,
        };
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(metrics.active_calls.clone()),
            Box::new(metrics.capacity_calls.clone()),
            Box::new(metrics.calls_total.clone()),
            Box::new(metrics.call_setup_seconds.clone()),
            Box::new(metrics.call_pdd_seconds.clone()),
            Box::new(metrics.call_jitter_seconds.clone()),
            Box::new(metrics.call_packet_loss_ratio.clone()),
            Box::new(metrics.call_mos.clone()),
            Box::new(metrics.ws_sessions.clone()),
            Box::new(metrics.turn_allocations.clone()),
            Box::new(metrics.turn_relayed_bytes.clone()),
            Box::new(metrics.turn_allocations_max.clone()),
            Box::new(metrics.fleet_limit_unchecked_total.clone()),
            Box::new(metrics.trunk_up.clone()),
            Box::new(metrics.trunk_registered.clone()),
            Box::new(metrics.webhook_deliveries_total.clone()),
            Box::new(metrics.webhook_outbox_pending.clone()),
            Box::new(metrics.events_dropped_total.clone()),
            Box::new(metrics.events_dead_letter_total.clone()),
            Box::new(metrics.recordings_skipped_total.clone()),
            Box::new(metrics.recordings_disk_bytes.clone()),
            Box::new(metrics.rate_limited_total.clone()),
            Box::new(metrics.draining.clone()),
            Box::new(metrics.rtp_dropped_total.clone()),
            Box::new(metrics.webrtc_dropped_total.clone()),
        ];
        // Every known series shown from the start (0), so dashboards and alerts can
        // rate() them before the first event.
        let _ = metrics.foreign_rtp_drops();
        zero_series(
            &metrics.webrtc_dropped_total,
            &[&crate::media::worker::DROP_REASONS],
        );
        zero_series(&metrics.calls_total, &[CALL_DIRECTIONS, CALL_OUTCOMES]);
        zero_series(&metrics.webhook_deliveries_total, &[DELIVERY_OUTCOMES]);
        zero_series(&metrics.events_dropped_total, &[EVENT_KINDS]);
        zero_series(&metrics.events_dead_letter_total, &[EVENT_KINDS]);
        zero_series(&metrics.recordings_skipped_total, &[RECORDING_SKIPS]);
        zero_series(&metrics.rate_limited_total, &[RATE_LIMITS]);
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

    /// Exports `callbridge_sip_messages_total{direction,method,status}`,
    /// `callbridge_sip_connections_refused_total{reason}` and
    /// `callbridge_sip_connections_closed_total{reason}` from the endpoint's
    /// counters at each scrape.
    pub fn register_sip(&self, endpoint: Arc<SipEndpoint>) -> Result<(), MetricsError> {
        let counts = Arc::clone(&endpoint);
        let collector = SipMessages::new(Box::new(move || counts.message_counts()))?;
        self.registry.register(Box::new(collector))?;
        let connections = SipConnections::new(Box::new(move || endpoint.connection_stats()))?;
        self.registry.register(Box::new(connections))?;
        Ok(())
    }

    /// Registers a collector another module owns (e.g. `netguard`'s refusal
    /// counters, the HTTP listeners' connection families).
    pub fn register(&self, collector: Box<dyn Collector>) -> Result<(), MetricsError> {
        self.registry.register(collector)?;
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
            family
                .with_label_values(&[direction, count.method, count.status])
                .inc_by(count.count);
        }
        family.collect()
    }
}

/// Reads the SIP endpoint's connection counters.
type ConnectionSource = Box<dyn Fn() -> ConnectionStats + Send + Sync>;

/// A collector for the endpoint's refused and closed TCP/TLS connections (labels:
/// the fixed reasons of `sip::Refusal` and `sip::CloseReason`).
struct SipConnections {
    /// Describes the two families (for registration).
    descs: Vec<Desc>,
    /// Where the counts come from.
    source: ConnectionSource,
}

impl SipConnections {
    fn new(source: ConnectionSource) -> Result<SipConnections, prometheus::Error> {
        let (refused, closed) = Self::families()?;
        let descs = refused
            .desc()
            .into_iter()
            .chain(closed.desc())
            .cloned()
            .collect();
        Ok(SipConnections { descs, source })
    }

    fn families() -> Result<(IntCounterVec, IntCounterVec), prometheus::Error> {
        Ok((
            counter_vec(
                "callbridge_sip_connections_refused_total",
                "Inbound SIP TCP/TLS connections closed at accept by a cap (per_ip, total, trunk_total, tls_handshakes)",
                &["reason"],
            )?,
            counter_vec(
                "callbridge_sip_connections_closed_total",
                "SIP TCP/TLS connections closed by us (idle, write_timeout, framing, tls_handshake)",
                &["reason"],
            )?,
        ))
    }
}

impl Collector for SipConnections {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok((refused, closed)) = Self::families() else {
            return Vec::new();
        };
        let stats = (self.source)();
        for (reason, n) in stats.refused {
            refused.with_label_values(&[reason]).inc_by(n);
        }
        for (reason, n) in stats.closed {
            closed.with_label_values(&[reason]).inc_by(n);
        }
        let mut out = refused.collect();
        out.extend(closed.collect());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Direction;

    #[test]
    fn every_metric_the_deployed_rules_and_dashboard_use_is_exported() {
        let rules = [
            include_str!("../deploy/prometheus/callbridge.rules.yml"),
            include_str!("../deploy/grafana/callbridge.json"),
        ]
        .concat();
        let metrics = Metrics::new(10).expect("metrics");
        // Label-keyed families appear once a trunk is known.
        metrics.trunk_up.with_label_values(&["t"]).set(1);
        metrics.trunk_registered.with_label_values(&["t"]).set(1);
        let text = metrics.render();
        let mut used: Vec<&str> = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("callbridge_"))
            .collect();
        used.sort_unstable();
        used.dedup();
        assert!(used.len() >= 10, "{used:?}");
        for name in used {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| text.contains(&format!("# TYPE {base} histogram")))
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "the rules use {name}, which the gateway does not export"
            );
        }
    }

    #[test]
    fn known_counter_series_are_exported_at_zero_from_the_start() {
        let metrics = Metrics::new(10).expect("metrics");
        let text = metrics.render();
        for series in [
            r#"callbridge_calls_total{direction="outbound",outcome="busy"} 0"#,
            r#"callbridge_calls_total{direction="inbound",outcome="answered_elsewhere"} 0"#,
            r#"callbridge_webhook_deliveries_total{outcome="dead"} 0"#,
            r#"callbridge_events_dropped_total{event="call.ended"} 0"#,
            r#"callbridge_events_dead_letter_total{event="recording.ready"} 0"#,
            r#"callbridge_recordings_skipped_total{reason="quota_cut"} 0"#,
            r#"callbridge_rate_limited_total{limit="session"} 0"#,
            r#"callbridge_webrtc_dropped_total{reason="worker_full"} 0"#,
            r#"callbridge_rtp_dropped_total{reason="foreign_source"} 0"#,
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
        let calls = text
            .lines()
            .filter(|l| l.starts_with("callbridge_calls_total{"))
            .count();
        assert_eq!(calls, CALL_DIRECTIONS.len() * CALL_OUTCOMES.len());
    }

    #[test]
    fn sip_collector_aggregates_into_bounded_labels() {
        let metrics = Metrics::new(10).expect("metrics");
        let collector = SipMessages::new(Box::new(|| {
            vec![
                MessageCount {
                    direction: Direction::Outbound,
                    method: "INVITE",
                    status: "none",
                    count: 3,
                },
                MessageCount {
                    direction: Direction::Inbound,
                    method: "INVITE",
                    status: "4xx",
                    count: 3,
                },
                MessageCount {
                    direction: Direction::Inbound,
                    method: "other",
                    status: "none",
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

    #[test]
    fn sip_connection_counters_are_exported_by_reason() {
        let metrics = Metrics::new(10).expect("metrics");
        let collector = SipConnections::new(Box::new(|| ConnectionStats {
            refused: vec![("per_ip", 3), ("total", 0)],
            closed: vec![("idle", 2)],
        }))
        .expect("collector");
        metrics
            .registry
            .register(Box::new(collector))
            .expect("register");
        let text = metrics.render();
        assert!(
            text.contains(r#"callbridge_sip_connections_refused_total{reason="per_ip"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"callbridge_sip_connections_closed_total{reason="idle"} 2"#),
            "{text}"
        );
    }
}
