//! `[dialplan]`: number normalisation and ordered routes.

use serde::{Deserialize, Serialize};

/// `[dialplan]`: how dialed numbers are normalised and where they go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DialplanConfig {
    /// Normalise dialed numbers to E.164 (`+` and digits) before matching routes.
    pub e164: bool,
    /// Country code for national numbers (dialed without `+` or the international
    /// prefix), e.g. `"1"` or `"44"`; empty: national numbers are refused.
    pub default_country_code: String,
    /// National trunk prefix dropped before the country code is added (e.g. `"0"`).
    pub national_prefix: String,
    /// International call prefix replaced by `+` (e.g. `"00"` or `"011"`).
    pub international_prefix: String,
    /// Tried in order; the first whose pattern matches wins.
    pub routes: Vec<RouteConfig>,
    /// Accept a route matching any dialed text (`.*`) on a non-loopback
    /// `server.listen` (only when the trunk restricts destinations itself).
    pub allow_catch_all: bool,
}

impl Default for DialplanConfig {
    fn default() -> Self {
        DialplanConfig {
            e164: true,
            default_country_code: String::new(),
            national_prefix: "0".into(),
            international_prefix: "00".into(),
            routes: Vec::new(),
            allow_catch_all: false,
        }
    }
}

/// `[[dialplan.routes]]`: one dial plan route.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Regular expression matched against the (normalised) dialed number.
    pub pattern: String,
    /// Trunk names, tried in order on 5xx, 408 or transport errors.
    pub trunks: Vec<String>,
    /// Leading characters removed from the number sent to the trunk.
    #[serde(default)]
    pub strip: usize,
    /// Text put in front of the number sent to the trunk (after `strip`).
    #[serde(default)]
    pub prepend: String,
    /// Withhold the caller id (`Privacy: id`) on this route whatever the client asks.
    #[serde(default)]
    pub privacy: bool,
    /// Record calls on this route (stereo WAV under `media.recording_dir`).
    #[serde(default)]
    pub record: bool,
}

impl RouteConfig {
    /// A route with no number rewriting.
    pub fn new(pattern: impl Into<String>, trunks: Vec<String>) -> RouteConfig {
        RouteConfig {
            pattern: pattern.into(),
            trunks,
            strip: 0,
            prepend: String::new(),
            privacy: false,
            record: false,
        }
    }
}
