//! The bounded labels SIP messages are counted under: a fixed set of methods
//! (`other` for the rest) and of status codes (any other code counts as its class,
//! `4xx`), so that a peer inventing methods or codes cannot grow the counter map or
//! the `callbridge_sip_messages_total` label set.

/// Methods counted by name; any other is `other`.
pub const METHODS: &[&str] = &[
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
    "PUBLISH",
];

/// Status codes counted as themselves; any other in 100-699 is its class.
const STATUSES: &[&str] = &[
    "100", "180", "181", "183", "200", "202", "302", "400", "401", "403", "404", "405", "407",
    "408", "413", "420", "422", "480", "481", "482", "483", "486", "487", "488", "491", "500",
    "501", "502", "503", "504", "600", "603",
];

/// The class labels, by hundreds digit minus one.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

/// The bounded method label: one of [`METHODS`] (case-insensitive), else `other`.
pub fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .copied()
        .unwrap_or("other")
}

/// The bounded status label: `none` for a request, a well-known code as itself,
/// another 100-699 code as its class (`4xx`), anything else `invalid`.
pub fn status_label(status: Option<u16>) -> &'static str {
    let Some(code) = status else {
        return "none";
    };
    let text = code.to_string();
    if let Some(known) = STATUSES.iter().find(|s| **s == text) {
        return known;
    }
    match code {
        100..=699 => CLASSES[usize::from(code / 100 - 1)],
        _ => "invalid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label("invite"), "INVITE");
        assert_eq!(method_label("FOO"), "other");
        assert_eq!(status_label(None), "none");
        assert_eq!(status_label(Some(486)), "486");
        assert_eq!(status_label(Some(499)), "4xx");
        assert_eq!(status_label(Some(199)), "1xx");
        assert_eq!(status_label(Some(999)), "invalid");
        assert_eq!(status_label(Some(0)), "invalid");
        let mut all = std::collections::BTreeSet::new();
        for code in 0..=u16::MAX {
            all.insert(status_label(Some(code)));
        }
        assert_eq!(all.len(), STATUSES.len() + CLASSES.len() + 1);
    }
}
