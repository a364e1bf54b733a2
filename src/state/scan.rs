//! A validating JSON scanner that writes Go's compact form in the same pass.
//!
//! Reading a state used to take two passes over its large raw values: serde_json validated them
//! (as `RawValue`s), then a second loop copied them into Go's compact form. This scanner does
//! both at once, and does the per-byte work in bulk: string bodies and indentation are skipped
//! eight bytes at a time, and unchanged runs of input are copied in one piece each.
//!
//! It accepts exactly what serde_json accepts for a `RawValue` (RFC 8259: no trailing commas,
//! no leading zeros, no control characters in strings, only the standard escapes, `\u` with four
//! hex digits and, as serde_json's `RawValue`, unpaired surrogates allowed), plus a nesting
//! limit. Its errors only say where and what; callers that owe the user serde_json's exact
//! wording re-read the (rare) invalid input with serde_json. `tests/suite/codec/props.rs` compares the
//! two on valid and mutated input.
//!
//! The input is a `&str`, so UTF-8 was checked once up front; every place where output and
//! input differ is at an ASCII byte or at the start of a three-byte character, so the copied
//! runs are always whole characters.

use std::borrow::Cow;
use std::fmt;

/// Eight `0x01` bytes: multiplied by a byte, it repeats that byte across a word.
const ONES: u64 = u64::MAX / 255;
/// The high bit of every byte in a word.
const HIGH_BITS: u64 = ONES << 7;
/// Deepest nesting the scanner's container stack can record.
const TRACKABLE_DEPTH: usize = 128;

/// Where scanning stopped and why. Byte offsets count from the start of the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanError {
    /// Byte offset of the offending byte (or the input's length at an unexpected end).
    pub(crate) offset: usize,
    /// What was wrong there.
    pub(crate) problem: &'static str,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.problem, self.offset)
    }
}

/// A cursor over JSON text.
pub(crate) struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Scanner {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        }
    }

    /// Bytes not yet scanned: an upper bound for the compact size of what follows.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn error(&self, problem: &'static str) -> ScanError {
        ScanError {
            offset: self.pos,
            problem,
        }
    }

    /// The next byte, or an "unexpected end" error.
    fn peek_or_end(&self, context: &'static str) -> Result<u8, ScanError> {
        self.bytes
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.error(context))
    }

    /// Skips JSON whitespace (space, tab, line feed, carriage return).
    #[inline]
    pub(crate) fn skip_whitespace(&mut self) {
        if self.bytes.get(self.pos).is_some_and(|&b| b > b' ') {
            return;
        }
        self.skip_whitespace_run();
    }

    /// Skips a run of whitespace. Indentation is a line feed and then a long run of spaces,
    /// so line feeds are taken one at a time and spaces sixteen at a time.
    fn skip_whitespace_run(&mut self) {
        loop {
            match self.bytes.get(self.pos) {
                Some(b'\n' | b'\t' | b'\r') => self.pos += 1,
                Some(b' ') => self.skip_spaces(),
                _ => return,
            }
        }
    }

    /// Skips spaces up to the next other byte (or the end).
    #[inline(always)]
    fn skip_spaces(&mut self) {
        const SPACES: u64 = ONES * b' ' as u64;
        while let Some(pair) = self.bytes.get(self.pos..self.pos + 16) {
            let (low, high) = pair.split_at(8);
            let low = u64::from_le_bytes(low.try_into().expect("eight bytes")) ^ SPACES;
            let high = u64::from_le_bytes(high.try_into().expect("eight bytes")) ^ SPACES;
            if low != 0 {
                self.pos += low.trailing_zeros() as usize / 8;
                return;
            }
            if high != 0 {
                self.pos += 8 + high.trailing_zeros() as usize / 8;
                return;
            }
            self.pos += 16;
        }
        while self.bytes.get(self.pos) == Some(&b' ') {
            self.pos += 1;
        }
    }

    /// The eight bytes at `at`, first byte lowest, if there are eight left.
    #[inline(always)]
    fn word_at(&self, at: usize) -> Option<u64> {
        let chunk = self.bytes.get(at..at + 8)?;
        Some(u64::from_le_bytes(chunk.try_into().expect("eight bytes")))
    }

    /// Skips whitespace, first copying the pending run `[*run, pos)` to `out`, so that the
    /// whitespace is dropped.
    #[inline(always)]
    fn drop_whitespace(&mut self, out: &mut Vec<u8>, run: &mut usize) {
        if self.bytes.get(self.pos).is_some_and(|&b| b > b' ') {
            return;
        }
        self.copy_run(out, *run);
        // Indented JSON has a line feed and then spaces: skip those here, without a call.
        if self.bytes.get(self.pos) == Some(&b'\n') {
            self.pos += 1;
            self.skip_spaces();
            if self.bytes.get(self.pos).is_some_and(|&b| b > b' ') {
                *run = self.pos;
                return;
            }
        }
        self.skip_whitespace_run();
        *run = self.pos;
    }

    /// Copies the input from `from` up to the current position to `out`. Runs are short
    /// (tokens between indentation), so those are copied as one fixed 16-byte block and cut
    /// back, which compiles to two moves instead of a call to `memcpy`.
    #[inline(always)]
    fn copy_run(&self, out: &mut Vec<u8>, from: usize) {
        let len = self.pos - from;
        if len <= 16
            && let Some(block) = self.bytes.get(from..from + 16)
        {
            let block: &[u8; 16] = block.try_into().expect("sixteen bytes");
            let end = out.len() + len;
            out.extend_from_slice(block);
            out.truncate(end);
            return;
        }
        out.extend_from_slice(&self.bytes[from..self.pos]);
    }

    /// Consumes `byte` if it comes next (after whitespace).
    pub(crate) fn eat(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        if self.bytes.get(self.pos) == Some(&byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Fails unless only whitespace is left.
    pub(crate) fn finish(&mut self) -> Result<(), ScanError> {
        self.skip_whitespace();
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(self.error("trailing characters"))
        }
    }

    /// Reads one JSON object, calling `member` with each key (decoded, as serde_json decodes
    /// keys: escapes resolved, surrogates required to pair) while the scanner stands before
    /// that member's value, which `member` must consume.
    pub(crate) fn object<E: From<ScanError>>(
        &mut self,
        mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.eat(b'{') {
            return Err(self.error("expected an object").into());
        }
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            let key = self.key()?;
            if !self.eat(b':') {
                return Err(self.error("expected ':'").into());
            }
            self.skip_whitespace();
            member(self, key)?;
            if self.eat(b',') {
                continue;
            }
            if self.eat(b'}') {
                return Ok(());
            }
            return Err(self.error("expected ',' or '}'").into());
        }
    }

    /// Reads an object key as a string.
    fn key(&mut self) -> Result<Cow<'a, str>, ScanError> {
        if self.bytes.get(self.pos) != Some(&b'"') {
            return Err(self.error("a key must be a string"));
        }
        let start = self.pos;
        let (mut scratch, mut run) = (Vec::new(), start);
        self.string(&mut scratch, &mut run)?;
        let quoted = &self.text[start..self.pos];
        let body = &quoted[1..quoted.len() - 1];
        if !body.contains('\\') {
            return Ok(Cow::Borrowed(body));
        }
        // Rare: let serde_json decode the escapes, so keys compare exactly as it would.
        serde_json::from_str::<String>(quoted)
            .map(Cow::Owned)
            .map_err(|_| ScanError {
                offset: start,
                problem: "invalid escape in a key",
            })
    }

    /// Validates the value that comes next and returns its text as written (no compaction).
    /// Meant for small typed fields; the value is still checked in full.
    pub(crate) fn value_text(&mut self, max_depth: usize) -> Result<&'a str, ScanError> {
        self.skip_whitespace();
        let start = self.pos;
        self.compact_into(&mut Vec::new(), max_depth)?;
        Ok(&self.text[start..self.pos])
    }

    /// Validates the value that comes next and appends it to `out` in Go's compact form:
    /// whitespace between tokens dropped, `<`, `>`, `&`, U+2028 and U+2029 inside strings
    /// escaped, everything else copied as written. Values nested deeper than `max_depth`
    /// are refused.
    pub(crate) fn compact_value(
        &mut self,
        out: &mut String,
        max_depth: usize,
    ) -> Result<(), ScanError> {
        let start = self.pos;
        let mut bytes = std::mem::take(out).into_bytes();
        let scanned = self.compact_into(&mut bytes, max_depth);
        // The input is UTF-8 and every change is at a character boundary, so this holds; it
        // costs a fraction of the scan and keeps the scanner free of `unsafe`.
        *out = String::from_utf8(bytes).map_err(|_| ScanError {
            offset: start,
            problem: "compaction broke a character (a bug)",
        })?;
        scanned
    }

    fn compact_into(&mut self, out: &mut Vec<u8>, max_depth: usize) -> Result<(), ScanError> {
        assert!(
            max_depth <= TRACKABLE_DEPTH,
            "depth beyond the container stack"
        );
        self.skip_whitespace();
        // `[run, pos)` is input already validated and not yet copied.
        let mut run = self.pos;
        // `in_object[d]` tells whether the container at depth `d + 1` is an object.
        let mut in_object = [false; TRACKABLE_DEPTH];
        let mut depth = 0usize;
        loop {
            // A value starts here; whitespace before it is already skipped.
            match self.peek_or_end("unexpected end, expected a value")? {
                b'"' => self.string(out, &mut run)?,
                open @ (b'{' | b'[') => {
                    if depth == max_depth {
                        return Err(self.error("nested too deeply"));
                    }
                    let is_object = open == b'{';
                    in_object[depth] = is_object;
                    depth += 1;
                    self.pos += 1;
                    self.drop_whitespace(out, &mut run);
                    let close = if is_object { b'}' } else { b']' };
                    if self.bytes.get(self.pos) == Some(&close) {
                        self.pos += 1;
                        depth -= 1;
                    } else {
                        if is_object {
                            self.member_key(out, &mut run)?;
                        }
                        continue;
                    }
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return Err(self.error("expected a value")),
            }
            // A value ended: close containers until one continues with a comma.
            loop {
                if depth == 0 {
                    self.copy_run(out, run);
                    return Ok(());
                }
                self.drop_whitespace(out, &mut run);
                let in_object = in_object[depth - 1];
                match self.bytes.get(self.pos) {
                    Some(b',') => {
                        self.pos += 1;
                        self.drop_whitespace(out, &mut run);
                        if in_object {
                            self.member_key(out, &mut run)?;
                        }
                        break;
                    }
                    Some(b'}') if in_object => {
                        self.pos += 1;
                        depth -= 1;
                    }
                    Some(b']') if !in_object => {
                        self.pos += 1;
                        depth -= 1;
                    }
                    Some(_) => {
                        return Err(self.error(if in_object {
                            "expected ',' or '}'"
                        } else {
                            "expected ',' or ']'"
                        }));
                    }
                    None => return Err(self.error("unexpected end inside a container")),
                }
            }
        }
    }

    /// Inside a compacted object: a key, `:`, and the whitespace before the value.
    #[inline(always)]
    fn member_key(&mut self, out: &mut Vec<u8>, run: &mut usize) -> Result<(), ScanError> {
        if self.bytes.get(self.pos) != Some(&b'"') {
            return Err(self.error("a key must be a string"));
        }
        self.string(out, run)?;
        self.drop_whitespace(out, run);
        if self.bytes.get(self.pos) != Some(&b':') {
            return Err(self.error("expected ':'"));
        }
        self.pos += 1;
        // Indented JSON has exactly one space after a colon: drop it without a search.
        if self.bytes.get(self.pos) == Some(&b' ')
            && self.bytes.get(self.pos + 1).is_some_and(|&b| b > b' ')
        {
            self.copy_run(out, *run);
            self.pos += 1;
            *run = self.pos;
        } else {
            self.drop_whitespace(out, run);
        }
        Ok(())
    }

    /// A string starting at its opening quote. Escapes are checked and kept as written; the
    /// characters Go escapes for HTML safety are written escaped.
    #[inline(always)]
    fn string(&mut self, out: &mut Vec<u8>, run: &mut usize) -> Result<(), ScanError> {
        self.pos += 1;
        loop {
            self.pos = self.next_special_in_string(self.pos);
            let Some(&byte) = self.bytes.get(self.pos) else {
                return Err(self.error("unexpected end inside a string"));
            };
            // Most strings hold nothing special: test for their end first.
            if byte == b'"' {
                self.pos += 1;
                return Ok(());
            }
            let escaped: &[u8] = match byte {
                b'\\' => {
                    self.escape()?;
                    continue;
                }
                b'<' => b"\\u003c",
                b'>' => b"\\u003e",
                b'&' => b"\\u0026",
                // U+2028 and U+2029 are E2 80 A8 and E2 80 A9; other E2 characters pass.
                0xE2 => match self.bytes.get(self.pos + 1..self.pos + 3) {
                    Some([0x80, 0xA8]) => b"\\u2028",
                    Some([0x80, 0xA9]) => b"\\u2029",
                    _ => {
                        self.pos += 1;
                        continue;
                    }
                },
                _ => return Err(self.error("control character inside a string")),
            };
            self.copy_run(out, *run);
            out.extend_from_slice(escaped);
            self.pos += if byte == 0xE2 { 3 } else { 1 };
            *run = self.pos;
        }
    }

    /// The position of the first byte from `at` on that a string cannot copy blindly: `"`,
    /// `\`, `<`, `>`, `&`, a control character or 0xE2; or the end of the input.
    #[inline(always)]
    fn next_special_in_string(&self, mut at: usize) -> usize {
        while let Some(word) = self.word_at(at) {
            let found = special_bytes(word);
            if found != 0 {
                return at + found.trailing_zeros() as usize / 8;
            }
            at += 8;
        }
        while at < self.bytes.len() && !is_special_byte(self.bytes[at]) {
            at += 1;
        }
        at
    }

    /// A backslash escape: `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t` or `\u` with four
    /// hex digits (any code unit, as serde_json's `RawValue` allows).
    fn escape(&mut self) -> Result<(), ScanError> {
        let Some(&kind) = self.bytes.get(self.pos + 1) else {
            self.pos = self.bytes.len();
            return Err(self.error("unexpected end inside an escape"));
        };
        match kind {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 2,
            b'u' => match self.bytes.get(self.pos + 2..self.pos + 6) {
                Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => self.pos += 6,
                Some(_) => {
                    self.pos += 2;
                    return Err(self.error("invalid \\u escape"));
                }
                None => {
                    self.pos = self.bytes.len();
                    return Err(self.error("unexpected end inside an escape"));
                }
            },
            _ => {
                self.pos += 1;
                return Err(self.error("invalid escape"));
            }
        }
        Ok(())
    }

    /// `true`, `false` or `null`.
    fn literal(&mut self, word: &'static [u8]) -> Result<(), ScanError> {
        if self.bytes.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error("invalid literal"))
        }
    }

    /// A number: `-`? (`0` | [1-9][0-9]*) (`.` [0-9]+)? ([eE] [+-]? [0-9]+)?
    fn number(&mut self) -> Result<(), ScanError> {
        if self.bytes[self.pos] == b'-' {
            self.pos += 1;
        }
        match self.bytes.get(self.pos) {
            Some(b'0') => {
                self.pos += 1;
                if self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
                    return Err(self.error("a number cannot have a leading zero"));
                }
            }
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return Err(self.error("invalid number")),
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if !self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
                return Err(self.error("a decimal point must be followed by a digit"));
            }
            self.skip_digits();
        }
        if matches!(self.bytes.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.bytes.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
                return Err(self.error("an exponent must have a digit"));
            }
            self.skip_digits();
        }
        Ok(())
    }

    fn skip_digits(&mut self) {
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
    }
}

/// Marks (with the byte's high bit) the bytes of `word` that [`is_special_byte`] picks.
///
/// Each test is the classic "has a zero byte" trick, `(x - 0x01..) & !x & 0x80..`. It may also
/// mark bytes above a real match (the subtraction borrows), never below, so the lowest mark is
/// always exact, and only the lowest is used.
#[inline(always)]
fn special_bytes(word: u64) -> u64 {
    fn zero_bytes(x: u64) -> u64 {
        x.wrapping_sub(ONES) & !x
    }
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    // `"` (0x22) and `&` (0x26) differ only in bit 2; `<` (0x3C) and `>` (0x3E) in bit 1.
    let quote_or_ampersand = zero_bytes((word | (ONES * 0x04)) ^ (ONES * 0x26));
    let angle_bracket = zero_bytes((word | (ONES * 0x02)) ^ (ONES * 0x3E));
    let backslash = zero_bytes(word ^ (ONES * u64::from(b'\\')));
    let e2 = zero_bytes(word ^ (ONES * 0xE2));
    (control | quote_or_ampersand | angle_bracket | backslash | e2) & HIGH_BITS
}

/// The bytes a string body cannot copy without a look: its end, escapes, the characters Go
/// escapes for HTML, control characters (invalid) and 0xE2 (which starts U+2028 and U+2029).
fn is_special_byte(byte: u8) -> bool {
    matches!(byte, b'"' | b'\\' | b'<' | b'>' | b'&' | 0xE2) || byte < 0x20
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compact(text: &str) -> Result<String, ScanError> {
        let mut scanner = Scanner::new(text);
        let mut out = String::new();
        scanner.compact_value(&mut out, 100)?;
        scanner.finish()?;
        Ok(out)
    }

    #[test]
    fn the_word_test_finds_the_same_first_special_byte_as_the_byte_test() {
        // Every byte value at every lane, behind ordinary and special neighbours.
        for filler in [b'a', 0x80, 0xE1, b' '] {
            for lane in 0..8 {
                for byte in 0..=255u8 {
                    let mut word = [filler; 8];
                    word[lane] = byte;
                    let expected = word.iter().position(|&b| is_special_byte(b));
                    let found = special_bytes(u64::from_le_bytes(word));
                    let found = (found != 0).then(|| found.trailing_zeros() as usize / 8);
                    assert_eq!(found, expected, "{word:?}");
                }
            }
        }
    }

    #[test]
    fn whitespace_goes_and_html_characters_are_escaped_only_inside_strings() {
        assert_eq!(
            compact(" {\n  \"k<\" : [ 1 ,\t\"a&b>\u{2028}\u{2029}\u{2027}\" ] }\r\n").unwrap(),
            "{\"k\\u003c\":[1,\"a\\u0026b\\u003e\\u2028\\u2029\u{2027}\"]}"
        );
    }

    #[test]
    fn errors_name_the_offending_byte() {
        assert_eq!(compact("[1,]").unwrap_err().offset, 3);
        assert_eq!(compact("[01]").unwrap_err().offset, 2);
        assert_eq!(compact("\"a\u{1}\"").unwrap_err().offset, 2);
        assert_eq!(compact("{\"a\" 1}").unwrap_err().offset, 5);
        assert_eq!(compact("[1] x").unwrap_err().offset, 4);
        assert_eq!(compact("[").unwrap_err().offset, 1);
    }

    #[test]
    fn nesting_is_limited() {
        let at_limit = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(compact(&at_limit).unwrap(), at_limit);
        let beyond = format!("{}{}", "[".repeat(101), "]".repeat(101));
        assert_eq!(compact(&beyond).unwrap_err().problem, "nested too deeply");
    }

    #[test]
    fn object_keys_are_decoded_and_surrogates_must_pair() {
        let mut keys = Vec::new();
        let mut scanner = Scanner::new(r#"{"a\u00e9":1, "\ud83d\ude00": 2}"#);
        scanner
            .object(|scanner, key| {
                keys.push(key.into_owned());
                scanner.value_text(100).map(|_| ())
            })
            .unwrap();
        assert_eq!(keys, ["aé", "😀"]);
        let mut scanner = Scanner::new(r#"{"\ud83d": 1}"#);
        assert!(
            scanner
                .object(|scanner, _| scanner.value_text(100).map(|_| ()))
                .is_err()
        );
    }
}
