//! Inbound calls: the router that takes INVITEs from the SIP endpoint and decides —
//! ring this instance's sessions, redirect (or proxy) to the instance that holds the
//! user, or refuse — and the presence task that keeps the location store current.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{Instrument, info, info_span, warn};

use super::CallManager;
use super::inbound_job::InboundJob;
use crate::sip::IncomingCall;

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The location-store key of a DID (so instances find DIDs claimed by tokens).
pub fn did_key(did: &str) -> String {
    format!("did:{did}")
}

/// Starts routing inbound INVITEs and refreshing this instance's presence.
pub fn start(manager: &Arc<CallManager>) {
    if let Some(mut incoming) = manager.sip.take_incoming() {
        let router = Arc::clone(manager);
        // Not tracked: it ends when the SIP endpoint stops, after the calls.
        tokio::spawn(async move {
            while let Some(call) = incoming.recv().await {
                let m = Arc::clone(&router);
                let span = info_span!(
                    "inbound",
                    sip_call_id = %call.sip_call_id,
                    correlation_id = %call.correlation_id,
                    to = %call.to_user,
                );
                tokio::spawn(async move { m.route(call).await }.instrument(span));
            }
        });
    }
    let (gone_tx, mut gone_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<String>>();
    manager.directory.on_departure(gone_tx);
    let leaving = Arc::clone(manager);
    let stop_leaving = manager.presence_stop.clone();
    tokio::spawn(async move {
        loop {
            let keys = tokio::select! {
                keys = gone_rx.recv() => match keys {
                    Some(keys) => keys,
                    None => break,
                },
                _ = stop_leaving.cancelled() => break,
            };
            let uri = leaving.instance_uri();
            for key in keys {
                if let Err(e) = leaving.location.unregister(&key, &uri).await {
                    warn!(error = %e, "location store removal failed");
                }
            }
        }
    });
    let presence = Arc::clone(manager);
    let stop = manager.presence_stop.clone();
    tokio::spawn(async move {
        let every = presence.config.cluster.location_ttl / 3;
        loop {
            presence.refresh_presence().await;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => break,
            }
        }
    });
}

impl CallManager {
    /// This instance's SIP URI as other instances redirect to it.
    pub fn instance_uri(&self) -> String {
        if let Some(uri) = &self.config.cluster.instance_uri {
            return uri.clone();
        }
        let port = self.sip.local_addr().port();
        let ip = self
            .config
            .sip
            .external_address
            .unwrap_or_else(|| self.config.server.advertised_ip());
        let addr = SocketAddr::new(ip, port);
        format!("sip:{addr}")
    }

    /// Registers every user (and token DID) with live sessions here.
    pub async fn refresh_presence(&self) {
        let expires = now_ms() + self.config.cluster.location_ttl.as_millis() as u64;
        let uri = self.instance_uri();
        for key in self.directory.presence_keys() {
            if let Err(e) = self.location.register(&key, &uri, expires).await {
                warn!(error = %e, "location store refresh failed");
                return;
            }
        }
    }

    /// Announces a session's user and DIDs at once (not waiting for the refresh).
    pub fn announce(self: &Arc<Self>, user: &str, dids: &[String]) {
        let mut keys = vec![user.to_string()];
        keys.extend(dids.iter().map(|d| did_key(d)));
        let manager = Arc::clone(self);
        tokio::spawn(async move {
            let expires = now_ms() + manager.config.cluster.location_ttl.as_millis() as u64;
            let uri = manager.instance_uri();
            for key in keys {
                if let Err(e) = manager.location.register(&key, &uri, expires).await {
                    warn!(error = %e, "location store update failed");
                }
            }
        });
    }

    /// Decides what happens to one inbound INVITE.
    async fn route(self: Arc<Self>, call: IncomingCall) {
        info!(from = %call.from_user, trunk = ?call.trunk, "inbound INVITE");
        if self.drain.is_draining() {
            let _ = call.handle.reject(503, "Service Unavailable (draining)");
            return;
        }
        let did = self.normalize_number(&call.to_user);
        let owner = self.directory.owner_of(&did);
        if let Some(user) = &owner {
            let sessions = self.directory.sessions_of(user);
            if !sessions.is_empty() {
                let job = InboundJob::new(Arc::clone(&self), call, user.clone(), did, sessions);
                match job {
                    Ok(job) => {
                        self.tasks.spawn(job.run().in_current_span());
                    }
                    Err((handle, status, why)) => {
                        info!(status, %why, "inbound call refused");
                        let _ = handle.reject(status, "");
                    }
                }
                return;
            }
        }
        // Not here: another instance may hold the user's (or the DID's) sessions.
        let key = owner.clone().unwrap_or_else(|| did_key(&did));
        let me = self.instance_uri();
        let elsewhere = match self.location.lookup(&key, now_ms()).await {
            Ok(list) => list.into_iter().find(|uri| *uri != me),
            Err(e) => {
                warn!(error = %e, "location store lookup failed");
                None
            }
        };
        match elsewhere {
            Some(instance) => self.forward(call, &instance).await,
            None if owner.is_some() => {
                info!("nobody online for this DID: 480");
                let _ = call.handle.reject(480, "");
            }
            None => {
                info!(%did, "unknown DID: 404");
                let _ = call.handle.reject(404, "");
            }
        }
    }

    /// Redirects (302) or proxies the INVITE to `instance` (a `sip:host:port` URI).
    async fn forward(&self, call: IncomingCall, instance: &str) {
        let hostport = instance.trim_start_matches("sip:");
        if self.config.cluster.inbound_mode == "proxy" {
            match tokio::net::lookup_host(hostport)
                .await
                .ok()
                .and_then(|mut a| a.next())
            {
                Some(target) => {
                    info!(%instance, "proxying INVITE to the instance holding the user");
                    if let Err(e) = self.sip.proxy(call, target).await {
                        warn!(error = %e, "proxying failed");
                    }
                }
                None => {
                    warn!(%instance, "cannot resolve instance; 480");
                    let _ = call.handle.reject(480, "");
                }
            }
            return;
        }
        let contact = format!("sip:{}@{hostport}", call.to_user);
        info!(%contact, "redirecting INVITE to the instance holding the user");
        if let Err(e) = call.handle.redirect(&contact) {
            warn!(error = %e, "redirect refused; 480");
            let _ = call.handle.reject(480, "");
        }
    }
}
