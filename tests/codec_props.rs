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
