//! Property tests of the state codec: what it writes it reads back identically, and no input
//! makes it panic.

use proptest::prelude::*;
use s3state::{OutputValue, RawJson, State};

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        (-1e300f64..1e300).prop_map(serde_json::Value::from),
        "\\PC*".prop_map(serde_json::Value::from),
        // Characters Go escapes specially.
        "[<>&\u{2028}\u{2029}\"\\\\\u{0}-\u{1f}\u{7f}é😀]{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

fn state() -> impl Strategy<Value = State> {
    (
        (any::<u16>(), any::<u16>(), any::<u16>()),
        any::<u64>(),
        "\\PC{0,40}",
        prop::collection::btree_map("\\PC{1,12}", (json_value(), any::<bool>()), 0..6),
        json_value(),
    )
        .prop_map(
            |((major, minor, patch), serial, lineage, outputs, resources)| {
                let mut state = State::new(semver::Version::new(
                    major.into(),
                    minor.into(),
                    patch.into(),
                ));
                state.serial = serial;
                state.lineage = lineage;
                for (name, (value, sensitive)) in outputs {
                    let output = OutputValue::new(&value);
                    state.outputs.insert(
                        name,
                        if sensitive {
                            output.sensitive()
                        } else {
                            output
                        },
                    );
                }
                state.resources = RawJson::from_value(&serde_json::Value::Array(vec![resources]));
                state
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn what_is_written_reads_back_identically(state in state()) {
        let bytes = state.to_bytes();
        let read = State::from_slice(&bytes).unwrap();
        prop_assert_eq!(&read, &state);
        prop_assert_eq!(read.to_bytes(), bytes);
    }

    #[test]
    fn written_state_is_valid_indented_json_ending_in_a_newline(state in state()) {
        let bytes = state.to_bytes();
        prop_assert!(bytes.ends_with(b"}\n"), "no trailing brace and newline");
        let reparsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(reparsed["serial"].as_u64(), Some(state.serial));
    }

    #[test]
    fn arbitrary_bytes_never_make_the_parser_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = State::from_slice(&bytes);
    }

    #[test]
    fn arbitrary_json_never_makes_the_parser_panic(value in json_value()) {
        let mut document = serde_json::json!({"version": 4, "terraform_version": "1.15.5", "serial": 1, "lineage": "l"});
        document["outputs"] = serde_json::json!({"o": {"value": value.clone(), "type": value.clone()}});
        document["resources"] = value;
        if let Ok(state) = State::from_slice(&serde_json::to_vec(&document).unwrap()) {
            prop_assert_eq!(State::from_slice(&state.to_bytes()).unwrap(), state);
        }
    }
}

// The one-pass reader against the serde_json reader it replaced (serde_json validating into
// `RawValue`s, then Go's compaction in a second pass). Inputs are valid JSON, token soups that
// are valid now and then, and both with bytes inserted, replaced, removed or cut off.

/// Pieces that JSON is made of, and the near misses serde_json refuses.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b" ",
    b"\n",
    b"\t",
    b"\r",
    b"  ",
    b"\x0c",
    b"\"a\"",
    b"\"\"",
    b"\"k\":",
    b"\"<&>\"",
    b"\"\xe2\x80\xa8\xe2\x80\xa9\"",
    b"\"\xe2\x80\xa7\xe2\x82\xac\"",
    b"\"\\u2028\"",
    b"\"\\ud800\"",
    b"\"\\udc00\"",
    b"\"\\ud83d\\ude00\"",
    b"\"\\ud83d\\u0041\"",
    b"\"\\ud83dx\"",
    b"\"\\u12\"",
    b"\"\\uZZZZ\"",
    b"\"\\u00E9\"",
    b"\"\\x\"",
    b"\"\\'\"",
    b"\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"",
    b"\"\x01\"",
    b"\"\x1f\"",
    b"\"\x7f\"",
    b"\"\t\"",
    b"\"\xc3\xa9\xf0\x9f\x98\x80\"",
    b"\"long string with no specials at all, long enough for words\"",
    b"0",
    b"-0",
    b"01",
    b"1.",
    b"-",
    b"1e",
    b"1e+",
    b"1E-5",
    b"0.5",
    b"-1.5e+10",
    b"1e400",
    b"123456789012345678901234567890",
    b".5",
    b"+1",
    b"1.e5",
    b"00",
    b"-01",
    b"0e",
    b"2.0E+0",
    b"true",
    b"false",
    b"null",
    b"tru",
    b"nul",
    b"falsey",
    b"True",
    b"NaN",
    b"\"",
    b"\\",
    b"\xff",
    b"\xe2\x80",
    b"\xc3",
    b"\x00",
];

/// Bytes worth inserting or substituting: structure, escapes, number parts, invalid UTF-8.
const MUTATION_BYTES: &[u8] = b"\"\\{}[],: \n0-.eE+u<&/\x01\x1f\x7f\xe2\x80\xa8\xff\xc3x";

/// Pieces of string bodies: text crossing eight-byte words, the characters Go escapes, other
/// three-byte characters, every kind of escape, valid or not, and raw control characters.
const STRING_PIECES: &[&[u8]] = &[
    b"a",
    b"plain text ",
    b"0123456789abcdef",
    b"<",
    b">",
    b"&",
    b"\xe2\x80\xa8",
    b"\xe2\x80\xa9",
    b"\xe2\x80\xa7",
    b"\xe2\x82\xac",
    b"\xc3\xa9",
    b"\xf0\x9f\x98\x80",
    b"\\n",
    b"\\\"",
    b"\\\\",
    b"\\/",
    b"\\b\\f\\r\\t",
    b"\\u00e9",
    b"\\uD83D",
    b"\\ude00",
    b"\\u2028",
    b"\\u12",
    b"\\uZZZZ",
    b"\\u00g0",
    b"\\x",
    b"\\'",
    b"\\ ",
    b"\\U0041",
    b"\\",
    b"\x01",
    b"\x1f",
    b"\x7f",
    b"\t",
    b"\n",
    b" ",
];

/// One string, usually valid, built from [`STRING_PIECES`].
fn json_string() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        6 => prop::sample::select(&STRING_PIECES[..22]),
        1 => prop::sample::select(&STRING_PIECES[22..]),
    ];
    (
        prop::collection::vec(piece, 0..12),
        prop::bool::weighted(0.95),
    )
        .prop_map(|(pieces, closed)| {
            let mut text = b"\"".to_vec();
            text.extend(pieces.concat());
            if closed {
                text.push(b'"');
            }
            text
        })
}

/// One number, valid or a near miss: sign, integer part, fraction and exponent.
fn json_number() -> impl Strategy<Value = Vec<u8>> {
    let sign = prop::sample::select(vec!["", "", "-", "+"]);
    let integer = prop::sample::select(vec![
        "0",
        "1",
        "9",
        "123",
        "1234567890123456789012345",
        "01",
        "00",
        "",
        "-",
    ]);
    let fraction = prop::sample::select(vec!["", "", ".0", ".5", ".0123", ".", ".e", "..1"]);
    let exponent = prop::sample::select(vec![
        "", "", "e1", "E+10", "e-07", "e400", "e", "E", "e+", "e-", "e+-1", "ee1",
    ]);
    (sign, integer, fraction, exponent)
        .prop_map(|(s, i, f, e)| format!("{s}{i}{f}{e}").into_bytes())
}

fn token_soup() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..24).prop_map(|tokens| tokens.concat())
}

/// Valid JSON as serde_json or a person might lay it out.
fn valid_json_text() -> impl Strategy<Value = Vec<u8>> {
    (json_value(), any::<bool>()).prop_map(|(value, pretty)| {
        if pretty {
            serde_json::to_vec_pretty(&value).unwrap()
        } else {
            serde_json::to_vec(&value).unwrap()
        }
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Insert(prop::sample::Index, u8),
    Replace(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Truncate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![prop::sample::select(MUTATION_BYTES), any::<u8>()];
    prop_oneof![
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<prop::sample::Index>(), byte).prop_map(|(at, b)| Mutation::Replace(at, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Remove),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        if bytes.is_empty() {
            break;
        }
        match mutation {
            Mutation::Insert(at, b) => bytes.insert(at.index(bytes.len() + 1), *b),
            Mutation::Replace(at, b) => {
                let at = at.index(bytes.len());
                bytes[at] = *b;
            }
            Mutation::Remove(at) => {
                bytes.remove(at.index(bytes.len()));
            }
            Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len())),
        }
    }
    bytes
}

/// A JSON value's text: valid, soup, or either one mutated.
fn json_ish() -> impl Strategy<Value = Vec<u8>> {
    let base = prop_oneof![
        valid_json_text(),
        token_soup(),
        json_string(),
        json_number(),
        (json_string(), json_string(), json_number()).prop_map(|(key, value, number)| [
            b"{",
            &key[..],
            b":[",
            &value,
            b",",
            &number,
            b"]}"
        ]
        .concat()),
    ];
    (base, prop::collection::vec(mutation(), 0..3)).prop_map(|(text, edits)| mutate(text, &edits))
}

/// Arrays and objects nested around the limit (100 levels), valid or not.
fn deep_json() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(any::<bool>(), 90..140), json_ish()).prop_map(|(levels, inner)| {
        let mut text = Vec::new();
        for &object in &levels {
            text.extend_from_slice(if object { b"{\"k\": " } else { b"[ " });
        }
        text.extend_from_slice(&inner);
        for &object in levels.iter().rev() {
            text.push(if object { b'}' } else { b']' });
        }
        text
    })
}

/// Extra top-level or output members: escaped names, duplicates, fields from the future.
const EXTRA_MEMBERS: &[&str] = &[
    r#""vers\u0069on":4"#,
    r#""serial":2"#,
    r#""lineage":"\ud800""#,
    r#""x\ud800":1"#,
    r#""x\ud83d\ude00":1"#,
    r#""future":[1, {"a<": "&"}]"#,
    r#""future":{}"#,
    r#""check_results":null"#,
    r#""outputs":null"#,
    r#""resources":{}"#,
    r#""sensitive":true"#,
    r#""sensitive":"yes""#,
    r#""terraform_version":"1.x""#,
];

/// A state document around generated values, sometimes with extra members, then mutated.
fn state_ish() -> impl Strategy<Value = Vec<u8>> {
    // Weighted so that about half the documents are valid.
    let value = prop_oneof![
        8 => valid_json_text(),
        1 => json_string(),
        1 => json_number(),
        1 => json_ish(),
        1 => deep_json(),
    ];
    let name = prop_oneof![3 => Just(b"\"o\"".to_vec()), 1 => json_string()];
    let version = prop_oneof![
        8 => Just("4"),
        1 => prop::sample::select(vec!["3", "5", "4.0", "\"4\"", "-4"]),
    ];
    let extras = prop_oneof![
        3 => Just(vec![]),
        1 => prop::collection::vec(prop::sample::select(EXTRA_MEMBERS), 1..3),
    ];
    let edits = prop_oneof![
        3 => Just(vec![]),
        1 => prop::collection::vec(mutation(), 1..3),
    ];
    (
        (version, name, value.clone(), value.clone(), value),
        (extras.clone(), extras, any::<bool>()),
        edits,
    )
        .prop_map(
            |((version, name, output, output_type, resources), (top, inner, pretty), edits)| {
                let join = |extra: &[&str]| extra.iter().map(|m| format!(",{m}")).collect::<String>();
                let mut text = format!(
                    "{{\"version\":{version},\"terraform_version\":\"1.15.5\",\"serial\":7,\"lineage\":\"l\",\"outputs\":{{"
                )
                .into_bytes();
                text.extend_from_slice(&name);
                text.extend_from_slice(b":{\"value\":");
                text.extend_from_slice(&output);
                text.extend_from_slice(b",\"type\":");
                text.extend_from_slice(&output_type);
                text.extend_from_slice(format!("{}}}}},\"resources\":", join(&inner)).as_bytes());
                text.extend_from_slice(&resources);
                text.extend_from_slice(format!("{}}}", join(&top)).as_bytes());
                if pretty {
                    // Re-lay valid documents out the way Terraform does.
                    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&text) {
                        text = serde_json::to_vec_pretty(&value).unwrap();
                    }
                }
                mutate(text, &edits)
            },
        )
}

/// The serde_json reader's result, with errors as text so results compare.
fn reference(bytes: &[u8]) -> Result<State, String> {
    State::from_slice_with_serde_json(bytes).map_err(|err| format!("{err:?}"))
}

fn assert_state_readers_agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    let expected = reference(bytes);
    prop_assert_eq!(
        State::from_slice_in_one_pass(bytes),
        expected.clone().ok(),
        "one-pass reader against serde_json on {:?}",
        String::from_utf8_lossy(bytes)
    );
    prop_assert_eq!(
        State::from_slice(bytes).map_err(|err| format!("{err:?}")),
        expected
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_one_pass_scanner_accepts_and_writes_exactly_what_serde_json_and_the_compact_pass_did(
        bytes in prop_oneof![2 => valid_json_text(), 3 => json_ish(), 1 => deep_json()],
    ) {
        let text = String::from_utf8_lossy(&bytes);
        let expected = RawJson::parse_with_serde_json(&text);
        prop_assert_eq!(
            RawJson::parse_in_one_pass(&text),
            expected.as_ref().ok().cloned(),
            "on {:?}", text
        );
        // The public parse falls back to serde_json for errors, so its errors are unchanged.
        prop_assert_eq!(
            RawJson::parse(&text).map_err(|err| err.to_string()),
            expected.map_err(|err| err.to_string())
        );
    }

    #[test]
    fn the_one_pass_state_reader_agrees_with_the_serde_json_reader_on_states(bytes in state_ish()) {
        assert_state_readers_agree(&bytes)?;
    }

    #[test]
    fn the_one_pass_state_reader_agrees_with_the_serde_json_reader_on_any_bytes(
        bytes in prop_oneof![json_ish(), prop::collection::vec(any::<u8>(), 0..64)],
    ) {
        assert_state_readers_agree(&bytes)?;
    }
}

#[test]
fn the_one_pass_reader_reads_terraform_written_states_without_falling_back() {
    for sample in std::fs::read_dir("tests/data/terraform-1.15.5").unwrap() {
        let path = sample.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if !path.to_string_lossy().ends_with(".tfstate.json") {
            continue;
        }
        let read = State::from_slice_in_one_pass(&bytes)
            .unwrap_or_else(|| panic!("{} fell back to serde_json", path.display()));
        assert_eq!(read, State::from_slice_with_serde_json(&bytes).unwrap());
        assert_eq!(read.to_bytes(), bytes, "{}", path.display());
    }
}

#[test]
fn nesting_limits_and_awkward_strings_agree_with_serde_json() {
    let mut cases: Vec<String> = Vec::new();
    for depth in [99, 100, 101, 127, 128, 129, 1000] {
        cases.push(format!("{}{}", "[".repeat(depth), "]".repeat(depth)));
        cases.push(format!(
            "{}1{}",
            "{\"a\":[".repeat(depth / 2),
            "]}".repeat(depth / 2)
        ));
    }
    cases.extend(
        [
            r#""\ud800""#,
            r#""\udc00\ud800""#,
            r#""\ud800\u""#,
            r#""\u0000""#,
            "\"\u{2028}\"",
            "\"\u{2029}<>&\u{2027}\u{20ac}\"",
            r#"{"<":">"}"#,
            "-0.0e-0",
            "1E+2",
            "[1,2,]",
            "{,}",
            "[,1]",
            "{\"a\":1,}",
            "{\"a\"}",
            "{\"a\":}",
            "[1 2]",
            "\"a\"b",
            " \t\r\n1 \n",
            "",
            " ",
            "[-]",
            "[1.]",
            "[.1]",
            "[1e]",
            "[01]",
            "[-01]",
            "[0x1]",
            "[\"\\u00e9\\n\"]",
        ]
        .map(String::from),
    );
    for text in &cases {
        assert_eq!(
            RawJson::parse_in_one_pass(text),
            RawJson::parse_with_serde_json(text).ok(),
            "{text}"
        );
        let document = format!(
            r#"{{"version":4,"terraform_version":"1.15.5","serial":1,"lineage":"l","resources":{text}}}"#
        );
        assert_state_readers_agree(document.as_bytes()).unwrap();
    }
}

// Exhaustive and boundary-placed inputs for the one-pass reader (a reviewer's attack on it):
// every short text over small alphabets, each awkward character at every offset of the
// eight-byte words and at the very end of the buffer, and every truncation and one-byte edit
// of Terraform's own states.

/// Calls `check` with every sequence of at most `max_len` items of `alphabet`, concatenated.
fn for_every_sequence<T: AsRef<[u8]>>(
    alphabet: &[T],
    max_len: usize,
    mut check: impl FnMut(&[u8]),
) {
    let mut indices: Vec<usize> = Vec::with_capacity(max_len);
    let mut text = Vec::new();
    loop {
        text.clear();
        for &i in &indices {
            text.extend_from_slice(alphabet[i].as_ref());
        }
        check(&text);
        // The next sequence, shortest first: count up in base `alphabet.len()`.
        let mut position = indices.len();
        loop {
            if position == 0 {
                if indices.len() == max_len {
                    return;
                }
                indices.iter_mut().for_each(|i| *i = 0);
                indices.push(0);
                break;
            }
            position -= 1;
            indices[position] += 1;
            if indices[position] < alphabet.len() {
                break;
            }
            indices[position] = 0;
        }
    }
}

/// The one-pass `RawJson` reader against serde_json and the compact pass, on `bytes` taken as
/// text (only valid UTF-8 is given to it; the state reader takes any bytes).
fn assert_raw_readers_agree(text: &str) {
    assert_eq!(
        RawJson::parse_in_one_pass(text),
        RawJson::parse_with_serde_json(text).ok(),
        "one-pass scanner against serde_json on {text:?}"
    );
}

/// `value` as the resources of an otherwise valid state.
fn state_with_resources(value: &[u8]) -> Vec<u8> {
    [
        &br#"{"version":4,"terraform_version":"1.15.5","serial":1,"lineage":"l","resources":"#[..],
        value,
        b"}",
    ]
    .concat()
}

#[test]
fn every_short_structure_number_and_literal_reads_as_serde_json_reads_it() {
    let structure: &[&str] = &["[", "]", "{", "}", ",", ":", "\"", "1", " "];
    for_every_sequence(structure, 6, |text| {
        assert_raw_readers_agree(std::str::from_utf8(text).unwrap())
    });
    let number: &[&str] = &["-", "0", "1", ".", "e", "+", "E"];
    for_every_sequence(number, 7, |text| {
        let text = std::str::from_utf8(text).unwrap();
        assert_raw_readers_agree(text);
        assert_raw_readers_agree(&format!("[{text}]"));
    });
    let literal: &[&str] = &["t", "r", "u", "e", "n", "l", "f", "a", "s"];
    for_every_sequence(literal, 5, |text| {
        assert_raw_readers_agree(std::str::from_utf8(text).unwrap())
    });
}

#[test]
fn every_short_string_body_reads_as_serde_json_reads_it() {
    // Escapes (valid, bad hex, lone and paired surrogates), the characters Go escapes, other
    // three-byte characters, control characters and the quote itself.
    let body: &[&str] = &[
        "\\", "u", "d", "8", "0", "\"", "<", "\u{2028}", "\u{2027}", "\u{1}", "/", "é",
    ];
    for_every_sequence(body, 5, |text| {
        let text = std::str::from_utf8(text).unwrap();
        assert_raw_readers_agree(&format!("\"{text}\""));
        // Unterminated at the very end of the buffer, and as an object key.
        assert_raw_readers_agree(&format!("\"{text}"));
        assert_raw_readers_agree(&format!("{{\"{text}\":1}}"));
    });
}

#[test]
fn every_short_byte_soup_as_resources_or_an_output_name_reads_as_serde_json_reads_it() {
    // Invalid UTF-8 (a lone continuation byte, a truncated and an overlong sequence, 0xFF), the
    // first bytes of U+2028, NUL and structure: the state reader takes bytes.
    let bytes: &[&[u8]] = &[
        b"\"",
        b"\\",
        b"[",
        b"]",
        b"\xe2",
        b"\x80",
        b"\xa8",
        b"\xff",
        b"\xc0\xaf",
        b"\x00",
        b"u",
    ];
    for_every_sequence(bytes, 4, |soup| {
        assert_state_readers_agree(&state_with_resources(soup)).unwrap();
        let named = [
            &br#"{"version":4,"terraform_version":"1.15.5","serial":1,"lineage":"l","outputs":{""#
                [..],
            soup,
            br#"":{"value":1,"type":"number"}}}"#,
        ]
        .concat();
        assert_state_readers_agree(&named).unwrap();
    });
    // A byte-order mark, NUL and a form feed around a valid state.
    let valid = state_with_resources(b"[]");
    for (before, after) in [
        (&b"\xef\xbb\xbf"[..], &b""[..]),
        (b"", b"\x00"),
        (b"\x00", b""),
        (b"\x0c", b""),
        (b"", b"\x0c"),
        (b"", b"\n\r\t "),
    ] {
        assert_state_readers_agree(&[before, &valid, after].concat()).unwrap();
    }
}

#[test]
fn escaped_characters_at_every_offset_of_a_word_and_at_the_end_of_the_buffer_agree() {
    let specials: &[&str] = &[
        "<", ">", "&", "\u{2028}", "\u{2029}", "\u{2027}", "\u{202a}", "\u{20ac}", "\u{e000}",
        "\\u003c", "\\u2028", "\\\"", "\\\\", "\\/", "é", "😀", "\u{1}", "\u{1f}", "\u{7f}", "\"",
    ];
    for padding in 0..8 {
        for before in 0..=17 {
            for special in specials {
                for after in 0..=17 {
                    // Two awkward characters, so that one also lands after the other in a word.
                    let text = format!(
                        "{}\"{}{special}{}{special}\"",
                        " ".repeat(padding),
                        "a".repeat(before),
                        "b".repeat(after)
                    );
                    assert_raw_readers_agree(&text);
                    if padding == 0 || padding == 5 {
                        // Cut off at every character boundary, so strings end with the buffer.
                        for (cut, _) in text.char_indices() {
                            assert_raw_readers_agree(&text[..cut]);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn every_truncation_and_one_byte_edit_of_terraforms_samples_agrees_with_serde_json() {
    // Structure, number parts, escapes, the characters Go escapes, NUL, a control character
    // and invalid UTF-8.
    const EDITS: &[u8] = b"\"\\{}],:0-.e<\x00\x1f\xe2\xff";
    let mut samples: Vec<Vec<u8>> = Vec::new();
    for dir in [
        "tests/data/terraform-1.15.5",
        "../shared/samples/terraform-1.15.5",
    ] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            // ../shared holds the originals of tests/data; the crate's own copy is required.
            assert_ne!(
                dir, "tests/data/terraform-1.15.5",
                "the samples are missing"
            );
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let sample = std::fs::read(&path).unwrap();
            if path.to_string_lossy().ends_with(".tfstate.json") && !samples.contains(&sample) {
                samples.push(sample);
            }
        }
    }
    assert!(!samples.is_empty(), "no Terraform sample was read");
    for sample in &samples {
        for cut in 0..sample.len() {
            assert_state_readers_agree(&sample[..cut]).unwrap();
        }
        for at in 0..sample.len() {
            let mut removed = sample.clone();
            removed.remove(at);
            assert_state_readers_agree(&removed).unwrap();
            for &byte in EDITS {
                let mut replaced = sample.clone();
                replaced[at] = byte;
                assert_state_readers_agree(&replaced).unwrap();
                let mut inserted = sample.clone();
                inserted.insert(at, byte);
                assert_state_readers_agree(&inserted).unwrap();
            }
        }
    }
}
