//! The HTML the web UI is made of: escaping, URL encoding, the page frame and its stylesheet.
//! Every text that comes from a state, a lock, a request or the store goes through [`esc`]
//! (element content and attribute values alike) or [`query_value`] (URL query values), so
//! an attacker-controlled state can add text to a page and never markup.

use std::fmt::Write as _;

/// The stylesheet, served from the gateway itself (`/ui/style.css`) so that the
/// Content-Security-Policy can allow `style-src 'self'` and nothing else.
pub(crate) const STYLESHEET: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d232a; background: #f6f7f9; }
header { background: #1d3557; color: #fff; padding: 10px 24px; display: flex; gap: 24px; align-items: baseline; }
header a { color: #fff; text-decoration: none; font-weight: 600; }
header .who { margin-left: auto; opacity: .85; }
main { padding: 16px 24px; max-width: 1200px; }
h1 { font-size: 20px; margin: 8px 0 12px; word-break: break-all; }
h2 { font-size: 16px; margin: 20px 0 8px; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e3e6ea; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 13px; word-break: break-all; }
.added { color: #137333; } .removed { color: #b3261e; } .changed { color: #8a5a00; }
.locked { color: #b3261e; font-weight: 600; } .free { color: #5f6b7a; }
.masked { color: #5f6b7a; font-style: italic; }
.crumbs { margin: 4px 0 12px; } .crumbs a { text-decoration: none; }
.pager { margin: 12px 0; display: flex; gap: 16px; }
.box { background: #fff; border: 1px solid #e3e6ea; padding: 10px 14px; margin: 8px 0; }
.warn { border-color: #e8b4b0; background: #fff6f5; }
form.inline { display: inline; }
button { background: #b3261e; color: #fff; border: 0; padding: 6px 12px; border-radius: 4px; cursor: pointer; }
input[type=search] { padding: 4px 6px; width: 280px; }
.muted { color: #5f6b7a; }
"#;

/// `text` with `& < > " '` replaced by character references: safe in element content and
/// in quoted attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` percent-encoded for a URL query value (everything but unreserved characters).
pub(crate) fn query_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A whole page: the frame (title, header with the principal's name) around `body`, which
/// the caller built from escaped parts.
pub(crate) fn page(title: &str, principal: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · s3state</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head>\
         <body><header><a href=\"/ui/\">s3state</a><span>Terraform states</span>\
         <span class=\"who\">signed in as <b>{principal}</b></span></header>\
         <main>{body}</main></body></html>\n",
        title = esc(title),
        principal = esc(principal),
    )
}

/// A JSON value for a table cell, as compact JSON (strings quoted), and
/// the masked placeholder set apart.
pub(crate) fn value_cell(value: Option<&serde_json::Value>, placeholder: &str) -> String {
    match value {
        None => "<span class=\"muted\">—</span>".into(),
        Some(serde_json::Value::String(text)) if text == placeholder => {
            format!("<span class=\"masked\">{}</span>", esc(text))
        }
        // Anything else as JSON, strings quoted, as Terraform shows values.
        Some(other) => format!("<code>{}</code>", esc(&other.to_string())),
    }
}

/// An RFC 3339 time, to the second, in UTC.
pub(crate) fn time(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_text_is_escaped_and_query_values_are_encoded() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(query_value("a b&c=d/é"), "a%20b%26c%3Dd/%C3%A9");
        let page = page("<t>", "<u>", "");
        assert!(!page.contains("<t>") && !page.contains("<u>"));
    }
}
