//! [`Secret`]: a string that never shows in `Debug` output (config dumps, `{:?}` in
//! logs, panic messages), for shared secrets, tokens and URLs with passwords.
//!
//! It dereferences to `str`, so code that needs the value (`as_bytes()`, `len()`,
//! passing `&secret` where `&str` is wanted) reads naturally; printing it takes an
//! explicit [`Secret::expose`] or `&*secret`. It serialises as a plain string
//! (the embedded config is built by serialising), so a field that must not appear
//! in a config dump also keeps its `#[serde(skip_serializing)]`.

use serde::{Deserialize, Serialize};

/// A secret string: its `Debug` output is `"<redacted>"`; it has no `Display`.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value, for the one place that needs it (signing, comparing, a
    /// connection string handed to a client library).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<redacted>")
        }
    }
}

impl std::ops::Deref for Secret {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&String> for Secret {
    fn from(value: &String) -> Secret {
        Secret(value.clone())
    }
}

impl PartialEq<str> for Secret {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Secret {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value_but_says_whether_it_is_set() {
        let s = Secret::from("hunter2-hunter2");
        let text = format!("{s:?} {:?}", Some(&s));
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
        assert_eq!(s.expose(), "hunter2-hunter2");
        assert_eq!(s.len(), 15, "derefs to str");
        assert_eq!(s, "hunter2-hunter2");
    }

    #[test]
    fn serde_is_a_plain_string() {
        let s: Secret = serde_json::from_str("\"abc\"").expect("json");
        assert_eq!(s.expose(), "abc");
        assert_eq!(serde_json::to_string(&s).expect("json"), "\"abc\"");
    }
}
