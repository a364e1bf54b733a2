//! Reading and writing state format v4, in Terraform's exact layout.

use super::json::{GoIndenter, MAX_DEPTH, RawJson, TooDeep, write_go_string};
use super::scan::{ScanError, Scanner};
use super::{OutputValue, STATE_FORMAT_VERSION, State};
use indexmap::IndexMap;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// Why bytes could not be read as a Terraform state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body is empty (or only whitespace): there is no state.
    #[error("no state: the object is empty")]
    Empty,
    /// The body is not valid JSON, or not a JSON object.
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    InvalidJson {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// The state has no `version` field, so its format is unknown.
    #[error("the state has no \"version\" field, so its format is unknown")]
    MissingVersion,
    /// The state was written in a newer format than this crate reads.
    #[error(
        "the state uses format version {found}, but this s3state reads up to version {supported}; \
         upgrade s3state to read it"
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: u64,
        /// The newest version this crate reads.
        supported: u64,
    },
    /// The state uses a format older than v4, written by Terraform before 0.12.
    #[error(
        "the state uses the legacy format version {found} (Terraform before 0.12); s3state reads version {supported}. \
         Run `terraform refresh` with Terraform 0.12 or newer once to upgrade it"
    )]
    LegacyVersion {
        /// The version in the file.
        found: u64,
        /// The version this crate reads.
        supported: u64,
    },
    /// A known field is missing or has the wrong type.
    #[error("invalid field \"{field}\": {message}")]
    InvalidField {
        /// The field's path, such as `outputs.name.type`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl From<serde_json::Error> for DecodeError {
    fn from(err: serde_json::Error) -> Self {
        DecodeError::InvalidJson {
            line: err.line(),
            column: err.column(),
            message: err.to_string(),
        }
    }
}

/// A JSON object's fields, borrowing their text from the input (no copy of large values).
type RawFields<'a> = IndexMap<String, &'a RawValue>;

/// A JSON object whose keys must be unique. Go keeps the last of duplicate keys silently; a
/// state with two `serial`s is corrupt or forged, so it is refused.
struct Unique<V>(IndexMap<String, V>);

impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for Unique<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visitor<V> {
            type Value = Unique<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut fields = IndexMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if fields.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
                    }
                    let value = map.next_value()?;
                    fields.insert(key, value);
                }
                Ok(Unique(fields))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

impl State {
    /// Decodes a state file (format v4).
    ///
    /// ```
    /// use s3state::{DecodeError, State};
    /// assert!(matches!(State::from_slice(b""), Err(DecodeError::Empty)));
    /// assert!(matches!(
    ///     State::from_slice(br#"{"version": 5}"#),
    ///     Err(DecodeError::UnsupportedVersion { found: 5, supported: 4 })
    /// ));
    /// ```
    pub fn from_slice(bytes: &[u8]) -> Result<State, DecodeError> {
        // Valid states are read in one pass. The one-pass reader gives up on anything it would
        // have to explain (invalid JSON, a missing, mistyped or duplicate field), and the
        // serde_json reader then re-reads the body and describes the problem exactly as it
        // always has (serde_json's wording, line and column).
        match Self::from_slice_in_one_pass(bytes) {
            Some(state) => Ok(state),
            None => Self::from_slice_with_serde_json(bytes),
        }
    }

    /// [`State::from_slice`] by the one-pass reader alone: `None` where it gives up. Public
    /// only so that tests and benchmarks can compare it with
    /// [`State::from_slice_with_serde_json`].
    #[doc(hidden)]
    pub fn from_slice_in_one_pass(bytes: &[u8]) -> Option<State> {
        decode_in_one_pass(bytes).ok()
    }

    /// [`State::from_slice`] as it was before the one-pass reader: serde_json validates the
    /// document into `RawValue`s, then a second pass compacts each. Kept as the reference the
    /// one-pass reader is tested and measured against, and to describe invalid input.
    #[doc(hidden)]
    pub fn from_slice_with_serde_json(bytes: &[u8]) -> Result<State, DecodeError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(DecodeError::Empty);
        }
        let Unique(mut fields) = serde_json::from_slice::<Unique<&RawValue>>(bytes)?;

        let version = fields
            .shift_remove("version")
            .ok_or(DecodeError::MissingVersion)?;
        check_version(parse_field("version", version.get())?)?;
        let terraform_version =
            parse_terraform_version(required(&mut fields, "terraform_version")?)?;
        let serial: u64 = required(&mut fields, "serial")?;
        let lineage: String = required(&mut fields, "lineage")?;

        let outputs = match fields.shift_remove("outputs") {
            Some(raw) => decode_outputs(raw)?,
            None => BTreeMap::new(),
        };
        let resources = match fields.shift_remove("resources") {
            Some(raw) => raw_json("resources", raw)?,
            None => RawJson::empty_array(),
        };
        let check_results = match fields.shift_remove("check_results") {
            Some(raw) => raw_json("check_results", raw)?,
            None => RawJson::null(),
        };
        let unknown_fields = fields
            .into_iter()
            .map(|(name, raw)| Ok((name.clone(), raw_json(&name, raw)?)))
            .collect::<Result<_, DecodeError>>()?;

        Ok(State {
            terraform_version,
            serial,
            lineage,
            outputs,
            resources,
            check_results,
            unknown_fields,
        })
    }

    /// Encodes the state as Terraform does: fields in Terraform's order, two-space indent,
    /// Go's string escaping, and a trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Pretty-printing adds roughly half again to the compact size of typical states.
        let raw = self.resources.as_str().len() + self.check_results.as_str().len();
        let mut out = GoIndenter::with_capacity(raw + raw / 2 + 1024);
        let mut piece = String::with_capacity(256);
        piece.push_str("{\"version\":");
        piece.push_str(&STATE_FORMAT_VERSION.to_string());
        piece.push_str(",\"terraform_version\":");
        write_go_string(&mut piece, &self.terraform_version.to_string());
        piece.push_str(",\"serial\":");
        piece.push_str(&self.serial.to_string());
        piece.push_str(",\"lineage\":");
        write_go_string(&mut piece, &self.lineage);
        piece.push_str(",\"outputs\":{");
        for (i, (name, output)) in self.outputs.iter().enumerate() {
            if i > 0 {
                piece.push(',');
            }
            write_go_string(&mut piece, name);
            piece.push_str(":{\"value\":");
            out.push(&piece);
            piece.clear();
            out.push(output.value.as_str());
            piece.push_str(",\"type\":");
            piece.push_str(output.value_type.as_str());
            if output.sensitive {
                piece.push_str(",\"sensitive\":true");
            }
            write_unknown_fields(&mut piece, &output.unknown_fields);
            piece.push('}');
        }
        piece.push_str("},\"resources\":");
        out.push(&piece);
        out.push(self.resources.as_str());
        piece.clear();
        piece.push_str(",\"check_results\":");
        piece.push_str(self.check_results.as_str());
        write_unknown_fields(&mut piece, &self.unknown_fields);
        piece.push('}');
        out.push(&piece);
        let mut text = out.finish();
        text.push(b'\n');
        text
    }
}

/// Why the one-pass reader gave up. It does not say: the serde_json reader re-reads the body to
/// describe the problem.
struct GiveUp;

impl From<ScanError> for GiveUp {
    fn from(_: ScanError) -> Self {
        GiveUp
    }
}

impl From<DecodeError> for GiveUp {
    fn from(_: DecodeError) -> Self {
        GiveUp
    }
}

/// Stores the first value of a field; a second one is a duplicate key.
fn set_once<T>(
    slot: &mut Option<T>,
    value: impl FnOnce() -> Result<T, GiveUp>,
) -> Result<(), GiveUp> {
    if slot.is_some() {
        return Err(GiveUp);
    }
    *slot = Some(value()?);
    Ok(())
}

/// Adds a field this crate does not know; a second one of the same name is a duplicate key.
fn insert_unknown(
    fields: &mut IndexMap<String, RawJson>,
    name: std::borrow::Cow<'_, str>,
    scanner: &mut Scanner<'_>,
) -> Result<(), GiveUp> {
    if fields.contains_key(&*name) {
        return Err(GiveUp);
    }
    fields.insert(name.into_owned(), RawJson::scan(scanner)?);
    Ok(())
}

/// Reads a state in one pass: the scanner validates the whole body and writes each raw value
/// in Go's compact form as it goes; only the small typed fields are then parsed by serde_json.
/// Accepts exactly what [`State::from_slice_with_serde_json`] accepts, with the same result.
fn decode_in_one_pass(bytes: &[u8]) -> Result<State, GiveUp> {
    let text = std::str::from_utf8(bytes).map_err(|_| GiveUp)?;
    let mut scanner = Scanner::new(text);
    let (mut version, mut terraform_version, mut serial, mut lineage) = (None, None, None, None);
    let (mut outputs, mut resources, mut check_results) = (None, None, None);
    let mut unknown_fields = IndexMap::new();
    scanner.object(|scanner, name| match &*name {
        "version" => set_once(&mut version, || Ok(scanner.value_text(MAX_DEPTH)?)),
        "terraform_version" => {
            set_once(
                &mut terraform_version,
                || Ok(scanner.value_text(MAX_DEPTH)?),
            )
        }
        "serial" => set_once(&mut serial, || Ok(scanner.value_text(MAX_DEPTH)?)),
        "lineage" => set_once(&mut lineage, || Ok(scanner.value_text(MAX_DEPTH)?)),
        "outputs" => set_once(&mut outputs, || outputs_in_one_pass(scanner)),
        "resources" => set_once(&mut resources, || Ok(RawJson::scan(scanner)?)),
        "check_results" => set_once(&mut check_results, || Ok(RawJson::scan(scanner)?)),
        _ => insert_unknown(&mut unknown_fields, name, scanner),
    })?;
    scanner.finish()?;

    check_version(parse_field("version", version.ok_or(GiveUp)?)?)?;
    Ok(State {
        terraform_version: parse_terraform_version(parse_field(
            "terraform_version",
            terraform_version.ok_or(GiveUp)?,
        )?)?,
        serial: parse_field("serial", serial.ok_or(GiveUp)?)?,
        lineage: parse_field("lineage", lineage.ok_or(GiveUp)?)?,
        outputs: outputs.unwrap_or_default(),
        resources: resources.unwrap_or_else(RawJson::empty_array),
        check_results: check_results.unwrap_or_else(RawJson::null),
        unknown_fields,
    })
}

/// The `outputs` object, read in one pass (see [`decode_outputs`] for the rules).
fn outputs_in_one_pass(scanner: &mut Scanner<'_>) -> Result<BTreeMap<String, OutputValue>, GiveUp> {
    let mut outputs = BTreeMap::new();
    scanner.object(|scanner, name| {
        if outputs.contains_key(&*name) {
            return Err(GiveUp);
        }
        let (mut value, mut value_type, mut sensitive) = (None, None, None);
        let mut unknown_fields = IndexMap::new();
        scanner.object(|scanner, field| match &*field {
            "value" => set_once(&mut value, || Ok(RawJson::scan(scanner)?)),
            "type" => set_once(&mut value_type, || Ok(RawJson::scan(scanner)?)),
            "sensitive" => set_once(&mut sensitive, || Ok(scanner.value_text(MAX_DEPTH)?)),
            _ => insert_unknown(&mut unknown_fields, field, scanner),
        })?;
        let output = OutputValue {
            value: value.ok_or(GiveUp)?,
            value_type: value_type.ok_or(GiveUp)?,
            sensitive: match sensitive {
                Some(text) => parse_field("sensitive", text)?,
                None => false,
            },
            unknown_fields,
        };
        outputs.insert(name.into_owned(), output);
        Ok(())
    })?;
    Ok(outputs)
}

fn check_version(version: u64) -> Result<(), DecodeError> {
    if version > STATE_FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            found: version,
            supported: STATE_FORMAT_VERSION,
        });
    }
    if version < STATE_FORMAT_VERSION {
        return Err(DecodeError::LegacyVersion {
            found: version,
            supported: STATE_FORMAT_VERSION,
        });
    }
    Ok(())
}

fn parse_terraform_version(text: String) -> Result<semver::Version, DecodeError> {
    semver::Version::parse(&text).map_err(|err| DecodeError::InvalidField {
        field: "terraform_version".into(),
        message: format!("{text:?} is not a semantic version: {err}"),
    })
}

fn write_unknown_fields(out: &mut String, fields: &IndexMap<String, RawJson>) {
    for (name, value) in fields {
        out.push(',');
        write_go_string(out, name);
        out.push(':');
        out.push_str(value.as_str());
    }
}

fn decode_outputs(raw: &RawValue) -> Result<BTreeMap<String, OutputValue>, DecodeError> {
    let Unique(outputs) =
        serde_json::from_str::<Unique<Unique<&RawValue>>>(raw.get()).map_err(|err| {
            DecodeError::InvalidField {
                field: "outputs".into(),
                message: format!("expected an object of output objects: {err}"),
            }
        })?;
    outputs
        .into_iter()
        .map(|(name, Unique(mut fields))| {
            let path = |field: &str| format!("outputs.{name}.{field}");
            let value = fields
                .shift_remove("value")
                .ok_or_else(|| missing(&path("value")))?;
            let value_type = fields
                .shift_remove("type")
                .ok_or_else(|| missing(&path("type")))?;
            let sensitive = match fields.shift_remove("sensitive") {
                Some(raw) => parse_field(&path("sensitive"), raw.get())?,
                None => false,
            };
            let output = OutputValue {
                value: raw_json(&path("value"), value)?,
                value_type: raw_json(&path("type"), value_type)?,
                sensitive,
                unknown_fields: fields
                    .into_iter()
                    .map(|(k, v)| Ok((k.clone(), raw_json(&path(&k), v)?)))
                    .collect::<Result<_, DecodeError>>()?,
            };
            Ok((name, output))
        })
        .collect()
}

fn raw_json(field: &str, raw: &RawValue) -> Result<RawJson, DecodeError> {
    RawJson::from_raw(raw).map_err(|TooDeep(depth)| DecodeError::InvalidField {
        field: field.into(),
        message: format!(
            "the value is nested {depth} levels deep; s3state reads at most {MAX_DEPTH}"
        ),
    })
}

fn required<T: serde::de::DeserializeOwned>(
    fields: &mut RawFields<'_>,
    name: &str,
) -> Result<T, DecodeError> {
    let raw = fields.shift_remove(name).ok_or_else(|| missing(name))?;
    parse_field(name, raw.get())
}

/// Parses a small typed field from its JSON text.
fn parse_field<T: serde::de::DeserializeOwned>(name: &str, text: &str) -> Result<T, DecodeError> {
    serde_json::from_str(text).map_err(|err| DecodeError::InvalidField {
        field: name.into(),
        message: format!("{err} (found {text})"),
    })
}

fn missing(name: &str) -> DecodeError {
    DecodeError::InvalidField {
        field: name.into(),
        message: "the field is required".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TERRAFORM_SAMPLE: &[u8] =
        include_bytes!("../../tests/data/terraform-1.15.5/terraform.tfstate.json");

    #[test]
    fn a_terraform_written_state_round_trips_byte_for_byte() {
        let state = State::from_slice(TERRAFORM_SAMPLE).unwrap();
        assert_eq!(
            String::from_utf8(state.to_bytes()).unwrap(),
            std::str::from_utf8(TERRAFORM_SAMPLE).unwrap()
        );
    }

    #[test]
    fn the_sample_decodes_into_typed_fields() {
        let state = State::from_slice(TERRAFORM_SAMPLE).unwrap();
        assert_eq!(state.serial, 1);
        assert_eq!(state.lineage, "17be2140-cb35-fcbf-2b9f-a8e4e43cbc8b");
        assert_eq!(state.terraform_version, semver::Version::new(1, 15, 5));
        assert!(state.outputs["secret"].sensitive);
        assert!(!state.outputs["greeting"].sensitive);
        assert_eq!(
            state.outputs["numbers"].to_value(),
            serde_json::json!([1, 2, 3])
        );
        assert_eq!(
            state.outputs["numbers"].value_type.as_str(),
            r#"["tuple",["number","number","number"]]"#
        );
    }

    #[test]
    fn exotic_numbers_escapes_and_unknown_fields_survive_a_round_trip() {
        let text = concat!(
            "{\n",
            "  \"version\": 4,\n",
            "  \"terraform_version\": \"1.16.0-alpha20261101\",\n",
            "  \"serial\": 18446744073709551615,\n",
            "  \"lineage\": \"l\",\n",
            "  \"outputs\": {\n",
            "    \"big\": {\n",
            "      \"value\": [\n",
            "        1e+30,\n",
            "        0.30000000000000004,\n",
            "        123456789012345678901234567890,\n",
            "        -0\n",
            "      ],\n",
            "      \"type\": \"dynamic\",\n",
            "      \"future\": {}\n",
            "    },\n",
            "    \"html\": {\n",
            "      \"value\": \"\\u003cb\\u003e \\u0026 \\u2028 é \\ud83d\\ude00 \\u0001\",\n",
            "      \"type\": \"string\"\n",
            "    }\n",
            "  },\n",
            "  \"resources\": [],\n",
            "  \"check_results\": null,\n",
            "  \"from_the_future\": {\n",
            "    \"x\": [\n",
            "      true\n",
            "    ]\n",
            "  }\n",
            "}\n"
        );
        let state = State::from_slice(text.as_bytes()).unwrap();
        assert_eq!(state.serial, u64::MAX);
        assert_eq!(String::from_utf8(state.to_bytes()).unwrap(), text);
    }

    #[test]
    fn empty_bodies_mean_no_state() {
        assert!(matches!(State::from_slice(b""), Err(DecodeError::Empty)));
        assert!(matches!(State::from_slice(b" \n"), Err(DecodeError::Empty)));
    }

    #[test]
    fn invalid_json_reports_its_position() {
        let err = State::from_slice(b"{\n  \"version\": 4,\n  oops\n}").unwrap_err();
        match err {
            DecodeError::InvalidJson { line, column, .. } => assert_eq!((line, column), (3, 3)),
            other => panic!("expected InvalidJson, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_version_is_refused() {
        let err = State::from_slice(br#"{"serial": 1}"#).unwrap_err();
        assert!(matches!(err, DecodeError::MissingVersion), "{err:?}");
    }

    #[test]
    fn newer_formats_are_refused_naming_both_versions() {
        let err = State::from_slice(br#"{"version": 5, "anything": []}"#).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("version 5") && message.contains("version 4"),
            "{message}"
        );
    }

    #[test]
    fn legacy_formats_get_an_upgrade_hint() {
        let err = State::from_slice(br#"{"version": 3, "serial": 1}"#).unwrap_err();
        assert!(matches!(err, DecodeError::LegacyVersion { found: 3, .. }));
        assert!(err.to_string().contains("Terraform 0.12"));
    }

    #[test]
    fn a_non_semver_terraform_version_names_the_field() {
        let text = br#"{"version":4,"terraform_version":"one","serial":1,"lineage":"x"}"#;
        match State::from_slice(text).unwrap_err() {
            DecodeError::InvalidField { field, .. } => assert_eq!(field, "terraform_version"),
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    #[test]
    fn an_output_without_a_type_names_its_path() {
        let text = br#"{"version":4,"terraform_version":"1.0.0","serial":1,"lineage":"x","outputs":{"o":{"value":1}}}"#;
        match State::from_slice(text).unwrap_err() {
            DecodeError::InvalidField { field, .. } => assert_eq!(field, "outputs.o.type"),
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    #[test]
    fn new_outputs_get_go_compatible_types_and_layout() {
        let mut state = State::new(semver::Version::new(1, 15, 5));
        state.outputs.insert(
            "m".into(),
            OutputValue::new(&serde_json::json!({"b": [1, "x"], "a": true})).sensitive(),
        );
        let text = String::from_utf8(state.to_bytes()).unwrap();
        assert!(
            text.contains(
                "\"type\": [\n        \"object\",\n        {\n          \"a\": \"bool\","
            ),
            "{text}"
        );
        assert!(text.contains("\"sensitive\": true"), "{text}");
        assert_eq!(State::from_slice(text.as_bytes()).unwrap(), state);
    }
}
