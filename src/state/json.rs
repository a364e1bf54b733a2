//! JSON exactly as Go's `encoding/json` writes it.
//!
//! Terraform writes state with `json.MarshalIndent(v, "", "  ")` plus a newline. Parts of the
//! state (resource attributes, output values) are `json.RawMessage`s produced by `ctyjson`, which
//! Go copies through `Compact` without re-encoding: numbers keep their literal text (`1e+30`,
//! `12345678901234567890`) and strings keep their escapes. To re-write such a file byte for byte
//! we keep those parts as text ([`RawJson`]) in Go's compact form and only re-indent them.
//!
//! Go's rules reproduced here:
//! - strings escape `"`, `\`, `\b`, `\f`, `\n`, `\r`, `\t` with short escapes and other control
//!   characters as `\u00xx` (lowercase hex); `<`, `>`, `&`, U+2028 and U+2029 are escaped as
//!   `\u003c`, `\u003e`, `\u0026`, `\u2028`, `\u2029` (HTML-safe escaping, on by default);
//! - `Compact` applies that HTML escaping to raw messages too, and leaves every other byte alone;
//! - `Indent` puts each element on its own line, writes `": "` after keys, and keeps empty
//!   objects and arrays as `{}` and `[]`.

use super::scan::{ScanError, Scanner};
use serde::Serialize;
use serde_json::value::RawValue;
use std::fmt;

/// How deeply a [`RawJson`] value may nest. serde_json's parser stops at 128 levels, so a
/// deeper value could be stored but never turned into a `serde_json::Value`; it is refused when
/// read instead. Terraform states nest a few levels per module and attribute.
pub const MAX_DEPTH: usize = 100;

/// What [`RawJson::scan`] reserves at first; the string doubles from there as needed.
const INITIAL_CAPACITY: usize = 64 * 1024;

/// A JSON value nested deeper than [`MAX_DEPTH`]; carries the depth found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooDeep(pub usize);

/// A JSON value kept as text, in Go's compact form, so that numbers and escapes survive a
/// read–write round trip exactly.
///
/// Equality compares the text: two values are equal when Go would have written them the same.
///
/// ```
/// use s3state::RawJson;
/// let big = RawJson::parse("[ 1e+30, 12345678901234567890 ]").unwrap();
/// assert_eq!(big.as_str(), "[1e+30,12345678901234567890]");
/// let from_value = RawJson::from_value(&serde_json::json!({"b": "<&>", "a": 1}));
/// assert_eq!(from_value.as_str(), r#"{"a":1,"b":"\u003c\u0026\u003e"}"#);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RawJson(Box<str>);

impl RawJson {
    /// Validates `text` as JSON and keeps it in Go's compact form. Values nested more than 100
    /// levels deep are refused (serde_json could not turn them into a `serde_json::Value`).
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        // Invalid input is re-read by serde_json, which describes the problem.
        Self::parse_in_one_pass(text).map_or_else(|| Self::parse_with_serde_json(text), Ok)
    }

    /// [`RawJson::parse`] by the one-pass scanner alone: `None` where it refuses the text.
    /// Public only so that tests and benchmarks can compare it with
    /// [`RawJson::parse_with_serde_json`].
    #[doc(hidden)]
    pub fn parse_in_one_pass(text: &str) -> Option<Self> {
        let mut scanner = Scanner::new(text);
        let raw = Self::scan(&mut scanner).ok()?;
        scanner.finish().ok()?;
        Some(raw)
    }

    /// Validates and compacts the value the scanner stands before, in one pass.
    pub(crate) fn scan(scanner: &mut Scanner<'_>) -> Result<Self, ScanError> {
        // Start small and let the string grow: a small value must not reserve the rest of a
        // large document.
        let mut out = String::with_capacity(scanner.remaining().min(INITIAL_CAPACITY));
        scanner.compact_value(&mut out, MAX_DEPTH)?;
        Ok(RawJson(out.into_boxed_str()))
    }

    /// [`RawJson::parse`] as it was before the one-pass scanner: serde_json validates, then a
    /// second pass compacts. Kept as the reference the scanner is tested and measured
    /// against, and to describe invalid input in serde_json's words.
    #[doc(hidden)]
    pub fn parse_with_serde_json(text: &str) -> Result<Self, serde_json::Error> {
        let raw: &RawValue = serde_json::from_str(text)?;
        Self::from_raw(raw).map_err(|TooDeep(depth)| {
            <serde_json::Error as serde::de::Error>::custom(format!(
                "the value is nested {depth} levels deep; at most {MAX_DEPTH} are supported"
            ))
        })
    }

    pub(crate) fn from_raw(raw: &RawValue) -> Result<Self, TooDeep> {
        let mut out = String::with_capacity(raw.get().len());
        let depth = go_compact_into(&mut out, raw.get());
        if depth > MAX_DEPTH {
            return Err(TooDeep(depth));
        }
        Ok(RawJson(out.into_boxed_str()))
    }

    /// Encodes any serialisable value the way Terraform would (object keys sorted, as Go sorts
    /// map keys; HTML-safe string escaping).
    ///
    /// Numbers are written as Terraform writes output values: cty's JSON encoder formats every
    /// number with `big.Float.Text('f', -1)`, the shortest digits that read back as the same
    /// number, in positional notation. So `1.0` is written `1`, `1e21` is
    /// `1000000000000000000000` and `1e-7` is `0.0000001`, never with an exponent.
    ///
    /// ```
    /// use s3state::RawJson;
    /// assert_eq!(RawJson::from_value(&[1.0, 1e21, 1e-7]).as_str(), "[1,1000000000000000000000,0.0000001]");
    /// ```
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Self {
        let value = serde_json::to_value(value).expect("a serde_json::Value always serialises");
        let mut text = Vec::new();
        value
            .serialize(&mut serde_json::Serializer::with_formatter(
                &mut text,
                TerraformNumbers,
            ))
            .expect("a serde_json::Value always serialises");
        let text = String::from_utf8(text).expect("serde_json writes UTF-8");
        let mut out = String::with_capacity(text.len());
        go_compact_into(&mut out, &text);
        RawJson(out.into_boxed_str())
    }

    /// JSON `null`.
    pub fn null() -> Self {
        RawJson("null".into())
    }

    /// An empty JSON array, `[]`.
    pub fn empty_array() -> Self {
        RawJson("[]".into())
    }

    /// The compact text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the text into a [`serde_json::Value`]. Numbers that do not fit `u64`/`i64`/`f64`
    /// exactly are approximated; the `RawJson` itself stays exact. A value holding a number
    /// beyond `f64`'s range (Terraform allows `1e400`) cannot be a `Value`: it comes back as a
    /// string holding the JSON text. Use [`RawJson::try_to_value`] to tell.
    pub fn to_value(&self) -> serde_json::Value {
        self.try_to_value()
            .unwrap_or_else(|_| serde_json::Value::String(self.0.to_string()))
    }

    /// Parses the text into a [`serde_json::Value`], failing for numbers beyond `f64`'s range.
    pub fn try_to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// Deserialises the text into any type.
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// True when the value is JSON `null`.
    pub fn is_null(&self) -> bool {
        &*self.0 == "null"
    }
}

/// The JSON text itself, as [`Display`](fmt::Display) writes it.
impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// serde_json's compact output, with floats written as cty writes numbers (Go's
/// `big.Float.Text('f', -1)`): the shortest round-trip digits, positional, no `.0`. Rust's
/// `Display` for floats is exactly that. Integers are already written so by serde_json, and a
/// `serde_json::Value` never holds a NaN or an infinity.
struct TerraformNumbers;

/// A `Formatter` method that writes a float of type `$float` by its `Display`.
macro_rules! write_float_by_display {
    ($method:ident, $float:ty) => {
        fn $method<W: ?Sized + std::io::Write>(
            &mut self,
            writer: &mut W,
            value: $float,
        ) -> std::io::Result<()> {
            write!(writer, "{value}")
        }
    };
}

impl serde_json::ser::Formatter for TerraformNumbers {
    write_float_by_display!(write_f32, f32);
    write_float_by_display!(write_f64, f64);
}

/// Any serialisable value as compact JSON, fields in declaration order, with Go's escaping.
pub(crate) fn to_go_json<T: Serialize + ?Sized>(value: &T) -> String {
    let text = serde_json::to_string(value).expect("the value always serialises");
    let mut out = String::with_capacity(text.len());
    go_compact_into(&mut out, &text);
    out
}

/// Appends `s` as a JSON string literal, escaped as Go's encoder escapes it.
pub(crate) fn write_go_string(out: &mut String, s: &str) {
    // serde_json already uses Go's short escapes and lowercase `\u00xx` for control characters;
    // the compact pass adds Go's HTML-safe escapes.
    let quoted = serde_json::to_string(s).expect("a str always serialises");
    go_compact_into(out, &quoted);
}

/// Go's `json.Compact` with HTML escaping: drops insignificant whitespace and escapes `<`, `>`,
/// `&`, U+2028 and U+2029. `text` must be valid JSON. Returns the deepest nesting seen.
///
/// Works on bytes and copies unchanged runs in one go: this is on the read path of every state.
fn go_compact_into(out: &mut String, text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut in_string = false;
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let replacement: Option<&str> = if in_string {
            match b {
                b'\\' => {
                    // Skip the escaped byte; escapes are copied as written.
                    i += 2;
                    continue;
                }
                b'"' => {
                    in_string = false;
                    None
                }
                b'<' => Some("\\u003c"),
                b'>' => Some("\\u003e"),
                b'&' => Some("\\u0026"),
                // U+2028 and U+2029 are E2 80 A8 and E2 80 A9 in UTF-8.
                0xE2 if bytes.get(i + 1) == Some(&0x80)
                    && matches!(bytes.get(i + 2), Some(0xA8 | 0xA9)) =>
                {
                    Some(if bytes[i + 2] == 0xA8 {
                        "\\u2028"
                    } else {
                        "\\u2029"
                    })
                }
                _ => None,
            }
        } else {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => Some(""),
                b'"' => {
                    in_string = true;
                    None
                }
                b'[' | b'{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                    None
                }
                b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    None
                }
                _ => None,
            }
        };
        match replacement {
            None => i += 1,
            Some(with) => {
                out.push_str(&text[run_start..i]);
                out.push_str(with);
                i += if with.starts_with("\\u202") { 3 } else { 1 };
                run_start = i;
            }
        }
    }
    out.push_str(&text[run_start..]);
    deepest
}

/// A line feed and 63 spaces: the start of a new line at depth `d` is its first `1 + 2 * d`
/// bytes, written with one fixed-size copy.
const NEWLINE_AND_INDENT: &[u8; 64] =
    b"\n                                                               ";

/// Eight `0x01` bytes: multiplied by a byte, it repeats that byte across a word.
const ONES: u64 = u64::MAX / 255;
/// The high bit of every byte in a word.
const HIGH_BITS: u64 = ONES << 7;

/// Go's `json.Indent(dst, src, "", "  ")`, fed compact JSON in pieces.
///
/// Writing a state streams its parts (header fields, each output, the raw resources) through
/// one indenter, so the whole document never exists twice in memory.
///
/// Indented output differs from the compact input only after `{`, `[`, `,` and `:` and before
/// `}` and `]` outside strings, so the indenter looks only for those (and for the quotes that
/// begin and end strings): string bodies are skipped a word at a time, the input between two
/// such bytes is copied in one piece, and each new line is one copy from
/// [`NEWLINE_AND_INDENT`]. Every insertion is ASCII and every cut is at an ASCII byte, so the
/// output is UTF-8 when the input is.
pub(crate) struct GoIndenter {
    out: Vec<u8>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The last byte written opened a container; its newline waits to see whether the
    /// container is empty (`{}` and `[]` stay on one line).
    open_pending: bool,
}

impl GoIndenter {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        GoIndenter {
            out: Vec::with_capacity(capacity),
            depth: 0,
            in_string: false,
            escaped: false,
            open_pending: false,
        }
    }

    /// A line feed and the indentation of the current depth.
    #[inline(always)]
    fn newline(&mut self) {
        let len = 1 + 2 * self.depth;
        if len <= NEWLINE_AND_INDENT.len() {
            // One fixed-size copy, cut back: cheaper than a variable-length `memcpy` call.
            let end = self.out.len() + len;
            self.out.extend_from_slice(NEWLINE_AND_INDENT);
            self.out.truncate(end);
        } else {
            self.out.push(b'\n');
            self.out.resize(self.out.len() + len - 1, b' ');
        }
    }

    /// Appends the next piece of compact JSON.
    pub(crate) fn push(&mut self, compact: &str) {
        let bytes = compact.as_bytes();
        let mut at = 0;
        if self.open_pending
            && let Some(&first) = bytes.first()
        {
            self.open_pending = false;
            if first == b'}' || first == b']' {
                self.depth -= 1;
                self.out.push(first);
                at = 1;
            } else {
                self.newline();
            }
        }
        // `[run, at)` is input to be copied as it is, not yet written.
        let mut run = at;
        if self.in_string {
            at = self.string_end(bytes, at);
        }
        while let Some(&byte) = bytes.get(at) {
            match byte {
                b'"' => at = self.string_end(bytes, at + 1),
                b'{' | b'[' => match bytes.get(at + 1) {
                    // An empty container stays as written.
                    Some(b'}' | b']') => at += 2,
                    next => {
                        at += 1;
                        copy_run(&mut self.out, bytes, run, at);
                        run = at;
                        self.depth += 1;
                        if next.is_some() {
                            self.newline();
                        } else {
                            // The next piece tells whether the container is empty.
                            self.open_pending = true;
                        }
                    }
                },
                b'}' | b']' => {
                    copy_run(&mut self.out, bytes, run, at);
                    at += 1;
                    run = at;
                    self.depth = self.depth.saturating_sub(1);
                    self.newline();
                    self.out.push(byte);
                }
                b',' => {
                    at += 1;
                    copy_run(&mut self.out, bytes, run, at);
                    run = at;
                    self.newline();
                }
                b':' => {
                    at += 1;
                    copy_run(&mut self.out, bytes, run, at);
                    run = at;
                    self.out.push(b' ');
                }
                _ => at += 1,
            }
        }
        copy_run(&mut self.out, bytes, run, bytes.len());
    }

    /// Inside a string, from `at`: the position just after its closing quote, or the end of
    /// the piece if the string goes on into the next one (then `in_string`, and `escaped` if
    /// the piece ends inside an escape, carry over).
    #[inline(always)]
    fn string_end(&mut self, bytes: &[u8], mut at: usize) -> usize {
        loop {
            if self.escaped {
                if at >= bytes.len() {
                    self.in_string = true;
                    return bytes.len();
                }
                // The escaped byte, whatever it is, neither ends the string nor escapes.
                self.escaped = false;
                at += 1;
            }
            at = next_quote_or_backslash(bytes, at);
            match bytes.get(at) {
                Some(b'"') => {
                    self.in_string = false;
                    return at + 1;
                }
                Some(_) => {
                    self.escaped = true;
                    at += 1;
                }
                None => {
                    self.in_string = true;
                    return bytes.len();
                }
            }
        }
    }

    /// The indented JSON (UTF-8 when every piece was).
    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// Appends `bytes[from..to]` to `out`. Runs between indentation are short (a key, a short
/// value), so those are copied as one fixed 32-byte block and cut back, which compiles to a
/// few moves instead of a call to `memcpy`.
#[inline(always)]
fn copy_run(out: &mut Vec<u8>, bytes: &[u8], from: usize, to: usize) {
    const BLOCK: usize = 32;
    if to - from <= BLOCK
        && let Some(block) = bytes.get(from..from + BLOCK)
    {
        let block: &[u8; BLOCK] = block.try_into().expect("a whole block");
        let end = out.len() + (to - from);
        out.extend_from_slice(block);
        out.truncate(end);
        return;
    }
    out.extend_from_slice(&bytes[from..to]);
}

/// The position of the first `"` or `\` in `bytes` from `at` on, or the end of `bytes`.
#[inline(always)]
fn next_quote_or_backslash(bytes: &[u8], mut at: usize) -> usize {
    /// Marks each zero byte of `x` with its high bit. A borrow may also mark bytes above a
    /// real zero byte, never below one, so the lowest mark is exact; only the lowest is used.
    fn zero_bytes(x: u64) -> u64 {
        x.wrapping_sub(ONES) & !x
    }
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let quote = zero_bytes(word ^ (ONES * u64::from(b'"')));
        let backslash = zero_bytes(word ^ (ONES * u64::from(b'\\')));
        let found = (quote | backslash) & HIGH_BITS;
        if found != 0 {
            return at + found.trailing_zeros() as usize / 8;
        }
        at += 8;
    }
    while let Some(&byte) = bytes.get(at) {
        if byte == b'"' || byte == b'\\' {
            break;
        }
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indent(compact: &str) -> String {
        let mut indenter = GoIndenter::with_capacity(0);
        indenter.push(compact);
        String::from_utf8(indenter.finish()).unwrap()
    }

    #[test]
    fn indenting_in_pieces_equals_indenting_at_once() {
        let compact = r#"{"a":[],"b":{"c":[1,{"d":"x,y:{z}\"]"}]},"e":{}}"#;
        for split in 0..=compact.len() {
            let mut indenter = GoIndenter::with_capacity(0);
            indenter.push(&compact[..split]);
            indenter.push(&compact[split..]);
            let indented = String::from_utf8(indenter.finish()).unwrap();
            assert_eq!(indented, indent(compact), "split at {split}");
        }
    }

    /// Go's `json.Indent` one byte at a time, as the indenter was first written: the
    /// reference the word-at-a-time indenter is compared with.
    fn indent_byte_by_byte(compact: &str) -> String {
        let (mut out, mut depth, mut in_string, mut escaped) =
            (String::new(), 0usize, false, false);
        let newline = |out: &mut String, depth: usize| {
            out.push('\n');
            out.push_str(&"  ".repeat(depth));
        };
        let chars: Vec<char> = compact.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            out.push(c);
            i += 1;
            if in_string {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_string = false;
                }
                continue;
            }
            match c {
                '"' => in_string = true,
                '{' | '[' if matches!(chars.get(i), Some('}' | ']')) => {
                    out.push(chars[i]);
                    i += 1;
                }
                '{' | '[' => {
                    depth += 1;
                    newline(&mut out, depth);
                }
                '}' | ']' => {
                    out.pop();
                    depth -= 1;
                    newline(&mut out, depth);
                    out.push(c);
                }
                ',' => newline(&mut out, depth),
                ':' => out.push(' '),
                _ => {}
            }
        }
        out
    }

    /// JSON values with strings full of what the indenter looks for, nested deeper than the
    /// indentation block covers.
    fn awkward_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-z\"\\\\{}\\[\\],: <&é\u{2028}]{0,24}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(40, 200, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z\"\\\\{:,]{0,10}", inner, 0..4)
                    .prop_map(|fields| serde_json::Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn indenting_in_three_pieces_matches_indenting_byte_by_byte(
            value in awkward_json(),
            cuts in (0.0..=1.0f64, 0.0..=1.0f64),
        ) {
            let compact = RawJson::from_value(&value).as_str().to_owned();
            let at = |fraction: f64| {
                let mut at = (compact.len() as f64 * fraction) as usize;
                while !compact.is_char_boundary(at) {
                    at -= 1;
                }
                at
            };
            let (first, second) = (at(cuts.0.min(cuts.1)), at(cuts.0.max(cuts.1)));
            let mut indenter = GoIndenter::with_capacity(0);
            for piece in [&compact[..first], &compact[first..second], &compact[second..]] {
                indenter.push(piece);
            }
            let indented = String::from_utf8(indenter.finish()).unwrap();
            proptest::prop_assert_eq!(indented, indent_byte_by_byte(&compact));
        }
    }

    #[test]
    fn indentation_deeper_than_the_block_matches_indenting_byte_by_byte() {
        for depth in [30, 31, 32, 33, 40, 100] {
            let compact = format!("{}1,{{}},[]{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(
                indent(&compact),
                indent_byte_by_byte(&compact),
                "depth {depth}"
            );
        }
    }

    #[test]
    fn numbers_beyond_f64_stay_exact_and_never_panic_when_converted() {
        let raw = RawJson::parse("[1e400]").unwrap();
        assert_eq!(raw.as_str(), "[1e400]");
        assert!(raw.try_to_value().is_err());
        assert_eq!(raw.to_value(), serde_json::json!("[1e400]"));
    }

    #[test]
    fn compact_keeps_number_literals_and_escapes_verbatim() {
        let raw = RawJson::parse("{ \"n\" : 1E+30 , \"s\": \"a\\/b\\u00e9\" }").unwrap();
        assert_eq!(raw.as_str(), r#"{"n":1E+30,"s":"a\/b\u00e9"}"#);
    }

    #[test]
    fn strings_are_escaped_like_go_with_html_safety() {
        let mut out = String::new();
        write_go_string(
            &mut out,
            "<a&b>\u{2028}\u{2029}\"\\\n\r\t\u{8}\u{c}\u{1}\u{7f}é",
        );
        // DEL (U+007F) is printable to Go and stays raw.
        assert_eq!(
            out,
            "\"\\u003ca\\u0026b\\u003e\\u2028\\u2029\\\"\\\\\\n\\r\\t\\b\\f\\u0001\u{7f}é\""
        );
    }

    #[test]
    fn html_characters_inside_raw_strings_are_escaped_but_structure_is_not() {
        let raw = RawJson::parse(r#"{"k<":"<>&"}"#).unwrap();
        assert_eq!(raw.as_str(), r#"{"k\u003c":"\u003c\u003e\u0026"}"#);
    }

    #[test]
    fn indent_matches_go_layout_including_empty_containers() {
        assert_eq!(
            indent(r#"{"a":[],"b":{},"c":[1,{"d":"x,y:{z}"}]}"#),
            "{\n  \"a\": [],\n  \"b\": {},\n  \"c\": [\n    1,\n    {\n      \"d\": \"x,y:{z}\"\n    }\n  ]\n}"
        );
    }

    #[test]
    fn indent_does_not_treat_escaped_quotes_as_string_ends() {
        assert_eq!(indent(r#"["a\"[,",1]"#), "[\n  \"a\\\"[,\",\n  1\n]");
    }

    #[test]
    fn numbers_from_values_are_written_as_terraform_writes_them() {
        // Terraform writes output values with cty's JSON marshaller, which formats every
        // number with big.Float's Text('f', -1): positional notation, never an exponent, and
        // no fraction on whole numbers.
        for (value, expected) in [
            (serde_json::json!(1.0), "1"),
            (serde_json::json!(-1.0), "-1"),
            (serde_json::json!(-0.0), "-0"),
            (serde_json::json!(1e21), "1000000000000000000000"),
            (serde_json::json!(1e-7), "0.0000001"),
            (serde_json::json!(1.5), "1.5"),
            (serde_json::json!(-0.000123), "-0.000123"),
            (serde_json::json!(123456.789), "123456.789"),
            (serde_json::json!(2.5e-10), "0.00000000025"),
            (serde_json::json!(u64::MAX), "18446744073709551615"),
            (serde_json::json!(i64::MIN), "-9223372036854775808"),
            (
                serde_json::json!(f64::MAX),
                &format!("17976931348623157{}", "0".repeat(292)),
            ),
            (
                serde_json::json!(5e-324),
                &format!("0.{}5", "0".repeat(323)),
            ),
            (
                serde_json::json!([1.0, {"n": 1e100}]),
                &format!("[1,{{\"n\":1{}}}]", "0".repeat(100)),
            ),
        ] {
            assert_eq!(RawJson::from_value(&value).as_str(), expected, "{value}");
        }
        assert_eq!(RawJson::from_value(&2.0f32).as_str(), "2");
        assert_eq!(
            RawJson::from_value(&1e21f64).as_str(),
            "1000000000000000000000"
        );
    }

    proptest::proptest! {
        #[test]
        fn every_float_is_written_without_exponent_and_reads_back_equal(
            bits in proptest::num::u64::ANY,
        ) {
            let number = f64::from_bits(bits);
            proptest::prop_assume!(number.is_finite());
            let text = RawJson::from_value(&number).as_str().to_owned();
            proptest::prop_assert!(!text.contains(['e', 'E']), "{}", text);
            proptest::prop_assert!(!text.ends_with(".0"), "{}", text);
            proptest::prop_assert!(!text.ends_with('.'), "{}", text);
            let back: f64 = text.parse().unwrap();
            proptest::prop_assert_eq!(back.to_bits(), number.to_bits(), "{}", text);
            // What Terraform reads back (the RawJson itself) equals what a parse would keep.
            let reparsed = RawJson::parse(&text).unwrap();
            proptest::prop_assert_eq!(reparsed.as_str(), text.as_str());
        }

        #[test]
        fn whole_floats_are_written_as_integers(n in -(1i64 << 53)..=(1i64 << 53)) {
            // Beyond 2^53 a float64 stands for a range of integers, and Go, like Rust, writes
            // the shortest digits of that range (padded with zeros), not one exact integer.
            proptest::prop_assume!(n != 0);
            let written = RawJson::from_value(&(n as f64));
            proptest::prop_assert_eq!(written.as_str(), n.to_string());
        }
    }

    #[test]
    fn values_from_serde_sort_object_keys_as_go_sorts_map_keys() {
        let raw = RawJson::from_value(&serde_json::json!({"z": 1, "a": {"y": true, "b": null}}));
        assert_eq!(raw.as_str(), r#"{"a":{"b":null,"y":true},"z":1}"#);
    }
}
