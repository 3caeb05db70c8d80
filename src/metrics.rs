//! Prometheus metrics of one gateway instance (a registry per instance, so several
//! instances can run in one test process).

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

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
    /// Open WebSocket sessions (`callbridge_ws_sessions`).
    pub ws_sessions: IntGauge,
    /// SIP messages by method and status (`callbridge_sip_messages_total`).
    pub sip_messages_total: IntCounterVec,
}

/// Errors creating metrics (only on duplicate registration, a programming error).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Creates and registers the metric set.
    pub fn new(capacity: usize) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let active_calls = IntGauge::new("callbridge_active_calls", "Calls in progress")?;
        let capacity_calls = IntGauge::new(
            "callbridge_capacity_calls",
            "Maximum concurrent calls (server.max_calls)",
        )?;
        capacity_calls.set(i64::try_from(capacity).unwrap_or(i64::MAX));
        let calls_total = IntCounterVec::new(
            Opts::new(
                "callbridge_calls_total",
                "Finished calls by direction and outcome",
            ),
            &["direction", "outcome"],
        )?;
        let call_setup_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "callbridge_call_setup_seconds",
                "Time from call request to answer",
            )
            .buckets(vec![0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
        )?;
        let ws_sessions = IntGauge::new("callbridge_ws_sessions", "Open WebSocket sessions")?;
        let sip_messages_total = IntCounterVec::new(
            Opts::new(
                "callbridge_sip_messages_total",
                "SIP messages sent and received",
            ),
            &["method", "status"],
        )?;
        registry.register(Box::new(active_calls.clone()))?;
        registry.register(Box::new(capacity_calls.clone()))?;
        registry.register(Box::new(calls_total.clone()))?;
        registry.register(Box::new(call_setup_seconds.clone()))?;
        registry.register(Box::new(ws_sessions.clone()))?;
        registry.register(Box::new(sip_messages_total.clone()))?;
        Ok(Metrics {
            registry,
            active_calls,
            capacity_calls,
            calls_total,
            call_setup_seconds,
            ws_sessions,
            sip_messages_total,
        })
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
