//! The dial plan: ordered routes, each a regular expression on the dialed number
//! and the trunks to try, in order.

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
}

/// The compiled dial plan.
#[derive(Debug, Clone, Default)]
pub struct Dialplan {
    /// Routes in configuration order.
    routes: Vec<Route>,
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
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Dialplan { routes })
    }

    /// The first route whose pattern matches `number`, if any.
    pub fn route(&self, number: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.pattern.is_match(number))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteConfig;

    fn plan(routes: &[(&str, &[&str])]) -> Dialplan {
        let config = DialplanConfig {
            routes: routes
                .iter()
                .map(|(p, t)| RouteConfig {
                    pattern: p.to_string(),
                    trunks: t.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
        };
        Dialplan::from_config(&config).expect("valid plan")
    }

    #[test]
    fn first_matching_route_wins() {
        let p = plan(&[
            (r"^\+1900[0-9]{7}$", &["premium"]),
            (r"^\+1[0-9]{10}$", &["a", "b"]),
            (r"^\+44", &["uk"]),
        ]);
        let r = p.route("+15551234567").expect("us route");
        assert_eq!(
            (r.index, r.trunks.clone()),
            (1, vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(p.route("+19005551234").expect("premium").index, 0);
        assert_eq!(
            p.route("+442071234567").expect("uk").trunks,
            vec!["uk".to_string()]
        );
    }

    #[test]
    fn no_match_is_none() {
        let p = plan(&[(r"^\+1[0-9]{10}$", &["a"])]);
        assert!(p.route("+4420").is_none());
        assert!(p.route("").is_none());
        assert!(p.route("+1555123456").is_none(), "one digit short");
        assert!(Dialplan::default().route("+15551234567").is_none());
    }

    #[test]
    fn bad_pattern_is_reported_with_its_index() {
        let config = DialplanConfig {
            routes: vec![RouteConfig {
                pattern: "((".into(),
                trunks: vec!["a".into()],
            }],
        };
        let err = Dialplan::from_config(&config).expect_err("bad regex");
        assert!(
            err.to_string().starts_with("dialplan.routes[0].pattern"),
            "{err}"
        );
    }
}
