//! The dial plan: number normalisation (E.164), ordered routes (a regular expression
//! on the normalised number and the trunks to try in order), and the per-route
//! rewriting of the number sent to the trunk.

use regex::Regex;

use crate::config::DialplanConfig;

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Index in `[[dialplan.routes]]`, for logs.
    pub index: usize,
    /// The compiled pattern.
    pattern: Regex,
    /// Trunk names, tried in order.
    pub trunks: Vec<String>,
    /// Leading characters removed before sending.
    strip: usize,
    /// Text put in front after stripping.
    prepend: String,
    /// Whether the caller id is always withheld on this route.
    pub privacy: bool,
    /// Whether calls on this route are recorded.
    pub record: bool,
}

/// The outcome of routing a dialed number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// Index of the matching route.
    pub route: usize,
    /// The normalised number the route matched (E.164 when normalisation is on).
    pub normalized: String,
    /// The number to put in the Request-URI and To (after strip/prepend).
    pub dial: String,
    /// Trunk names, tried in order.
    pub trunks: Vec<String>,
    /// Whether the route withholds the caller id.
    pub privacy: bool,
    /// Whether calls on the route are recorded.
    pub record: bool,
}

/// Why a number could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The dialed text is not a number or a SIP user name.
    #[error("`{0}` is not a phone number; dial digits with an optional leading +")]
    BadNumber(String),
    /// A national number while no default country code is configured.
    #[error("`{0}` has no country code; dial it in international format (+…)")]
    NoCountryCode(String),
    /// No route matches.
    #[error("no dial plan route matches `{0}`; check the number")]
    NoRoute(String),
}

/// The compiled dial plan.
#[derive(Debug, Clone, Default)]
pub struct Dialplan {
    /// Routes in configuration order.
    routes: Vec<Route>,
    /// Normalise to E.164 before matching.
    e164: bool,
    /// Country code for national numbers.
    default_country_code: String,
    /// National trunk prefix (e.g. "0").
    national_prefix: String,
    /// International prefix replaced by "+".
    international_prefix: String,
}

/// Errors building the dial plan (config validation normally catches them first).
#[derive(Debug, thiserror::Error)]
pub enum DialplanError {
    /// A pattern is not a valid regular expression.
    #[error("dialplan.routes[{index}].pattern: {message}")]
    BadPattern {
        /// Route index.
        index: usize,
        /// The regex error.
        message: String,
    },
}

/// Characters people type inside numbers that carry no meaning.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '.' | '(' | ')' | '/')
}

impl Dialplan {
    /// Compiles the configured routes.
    pub fn from_config(config: &DialplanConfig) -> Result<Dialplan, DialplanError> {
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let pattern = Regex::new(&r.pattern).map_err(|e| DialplanError::BadPattern {
                    index,
                    message: e.to_string(),
                })?;
                Ok(Route {
                    index,
                    pattern,
                    trunks: r.trunks.clone(),
                    strip: r.strip,
                    prepend: r.prepend.clone(),
                    privacy: r.privacy,
                    record: r.record,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Dialplan {
            routes,
            e164: config.e164,
            default_country_code: config.default_country_code.clone(),
            national_prefix: config.national_prefix.clone(),
            international_prefix: config.international_prefix.clone(),
        })
    }

    /// Normalises what the user dialed: separators removed; with E.164 on, the
    /// international prefix becomes `+` and national numbers get the default country
    /// code. Names (e.g. `echo`) pass through unchanged.
    pub fn normalize(&self, dialed: &str) -> Result<String, RouteError> {
        let trimmed = dialed.trim();
        let is_name = trimmed.len() <= 64
            && trimmed.chars().any(|c| c.is_ascii_alphabetic())
            && trimmed
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.!~*'-".contains(c));
        if is_name {
            return Ok(trimmed.to_string());
        }
        let compact: String = trimmed.chars().filter(|c| !is_separator(*c)).collect();
        let digits = compact.strip_prefix('+').unwrap_or(&compact);
        if digits.is_empty()
            || !digits
                .chars()
                .all(|c| c.is_ascii_digit() || c == '*' || c == '#')
        {
            return Err(RouteError::BadNumber(trimmed.chars().take(64).collect()));
        }
        if !self.e164 || compact.contains(['*', '#']) {
            return Ok(compact);
        }
        if compact.starts_with('+') {
            return Ok(compact);
        }
        if !self.international_prefix.is_empty()
            && let Some(rest) = compact.strip_prefix(&self.international_prefix)
        {
            return Ok(format!("+{rest}"));
        }
        if self.default_country_code.is_empty() {
            return Err(RouteError::NoCountryCode(compact));
        }
        let national = if self.national_prefix.is_empty() {
            compact.as_str()
        } else {
            compact
                .strip_prefix(&self.national_prefix)
                .unwrap_or(&compact)
        };
        Ok(format!("+{}{national}", self.default_country_code))
    }

    /// Normalises `dialed`, finds the first matching route and rewrites the number
    /// for the trunk.
    pub fn route(&self, dialed: &str) -> Result<Routed, RouteError> {
        let normalized = self.normalize(dialed)?;
        let route = self
            .routes
            .iter()
            .find(|r| r.pattern.is_match(&normalized))
            .ok_or_else(|| RouteError::NoRoute(normalized.clone()))?;
        let stripped: String = normalized.chars().skip(route.strip).collect();
        Ok(Routed {
            route: route.index,
            dial: format!("{}{stripped}", route.prepend),
            normalized,
            trunks: route.trunks.clone(),
            privacy: route.privacy,
            record: route.record,
        })
    }
}

#[cfg(test)]
#[path = "dialplan_tests.rs"]
mod tests;
