//! The Terraform state model (format v4), and nothing about storage.
//!
//! [`State`] types the fields s3state reasons about (serial, lineage, Terraform version, root
//! outputs) and keeps everything else (`resources`, `check_results`, fields added by future
//! Terraform versions) as exact JSON text, so a tool never drops what it does not understand.

mod address;
mod codec;
mod diff;
mod json;
pub(crate) mod meta;
mod scan;

pub use address::{
    Address, AddressError, Inserted, InstanceAddress, InstanceKey, InstanceView, ModulePath,
    ModuleStep, Moved, PathStep, ResourceAddress, ResourceMode, SENSITIVE_PLACEHOLDER,
};
pub use codec::DecodeError;
pub use diff::{
    AttributeChange, ChangeKind, OutputChange, ResourceChange, StateDiff, attribute_changes,
};
pub use json::RawJson;
pub(crate) use json::to_go_json;

use indexmap::IndexMap;
use std::collections::BTreeMap;

/// The state format version this crate reads and writes.
pub const STATE_FORMAT_VERSION: u64 = 4;

/// The Terraform version s3state stamps on states it creates from nothing, and which it has been
/// tested against.
pub const COMPATIBLE_TERRAFORM_VERSION: semver::Version = semver::Version::new(1, 15, 5);

/// One Terraform state snapshot (format v4).
///
/// Read it with [`State::from_slice`] and write it with [`State::to_bytes`]. A state that
/// Terraform wrote, read and written back unchanged, is byte-identical.
///
/// ```
/// use s3state::{OutputValue, State};
/// let mut state = State::new(semver::Version::new(1, 15, 5));
/// state.outputs.insert("region".into(), OutputValue::new(&"eu-west-1"));
/// let bytes = state.to_bytes();
/// assert_eq!(State::from_slice(&bytes).unwrap(), state);
/// assert!(bytes.ends_with(b"}\n"));
/// ```
///
/// `Debug` shows the identity, the outputs (sensitive values masked) and only the sizes of
/// `resources`, `check_results` and unknown fields, never their content: resource attributes
/// hold secrets such as database passwords, and `Debug` output ends up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct State {
    /// The version of Terraform (or of the tool) that wrote this snapshot.
    pub terraform_version: semver::Version,
    /// Increments by one on every persisted change; set by the state manager.
    pub serial: u64,
    /// Identifies the state's history; fixed when the state is first created. Empty means
    /// "not yet assigned": the first persist assigns a fresh UUID.
    pub lineage: String,
    /// Root module outputs, by name (kept sorted, as Terraform writes them).
    pub outputs: BTreeMap<String, OutputValue>,
    /// The `resources` array, kept exactly.
    pub resources: RawJson,
    /// The `check_results` value, kept exactly (`null` when there are none).
    pub check_results: RawJson,
    /// Top-level fields this crate does not know, in file order, kept exactly.
    pub unknown_fields: IndexMap<String, RawJson>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        /// How much JSON there is, without showing any of it.
        struct Size<'a>(&'a RawJson);
        impl std::fmt::Debug for Size<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "<{} bytes>", self.0.as_str().len())
            }
        }
        /// The number of resources (or `?` if `resources` is not an array) and their size.
        struct Resources<'a>(&'a RawJson);
        impl std::fmt::Debug for Resources<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let bytes = self.0.as_str().len();
                match self.0.deserialize::<Vec<serde::de::IgnoredAny>>() {
                    Ok(items) if items.len() == 1 => write!(f, "<1 resource, {bytes} bytes>"),
                    Ok(items) => write!(f, "<{} resources, {bytes} bytes>", items.len()),
                    Err(_) => write!(f, "<{bytes} bytes>"),
                }
            }
        }
        let unknown: BTreeMap<&str, Size<'_>> = self
            .unknown_fields
            .iter()
            .map(|(name, value)| (name.as_str(), Size(value)))
            .collect();
        f.debug_struct("State")
            .field(
                "terraform_version",
                &format_args!("{}", self.terraform_version),
            )
            .field("serial", &self.serial)
            .field("lineage", &self.lineage)
            .field("outputs", &self.outputs)
            .field("resources", &Resources(&self.resources))
            .field("check_results", &Size(&self.check_results))
            .field("unknown_fields", &unknown)
            .finish()
    }
}

/// A root module output value: its value, its Terraform type, and whether it is sensitive.
///
/// `Debug` never shows a sensitive value.
#[derive(Clone, PartialEq, Eq)]
pub struct OutputValue {
    /// The value, as exact JSON.
    pub value: RawJson,
    /// The Terraform type in `ctyjson` form, for example `"string"` or `["list","number"]`.
    pub value_type: RawJson,
    /// Sensitive outputs are hidden by Terraform's CLI unless asked for.
    pub sensitive: bool,
    /// Fields of the output object this crate does not know, kept exactly.
    pub unknown_fields: IndexMap<String, RawJson>,
}

impl std::fmt::Debug for OutputValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("OutputValue");
        if self.sensitive {
            out.field("value", &format_args!("<sensitive>"));
        } else {
            out.field("value", &self.value);
        }
        out.field("value_type", &self.value_type)
            .field("sensitive", &self.sensitive)
            .finish_non_exhaustive()
    }
}

impl OutputValue {
    /// A non-sensitive output whose type is inferred from the value, as Terraform infers the
    /// type of an `output` expression: strings, numbers and bools map to primitive types,
    /// arrays to tuples and objects to objects.
    pub fn new<T: serde::Serialize + ?Sized>(value: &T) -> Self {
        let value = serde_json::to_value(value).expect("a serde_json::Value always serialises");
        OutputValue {
            value_type: RawJson::from_value(&implied_type(&value)),
            value: RawJson::from_value(&value),
            sensitive: false,
            unknown_fields: IndexMap::new(),
        }
    }

    /// The same output, marked sensitive.
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }

    /// The value as a [`serde_json::Value`] (see [`RawJson::to_value`] on number precision).
    pub fn to_value(&self) -> serde_json::Value {
        self.value.to_value()
    }
}

/// The `ctyjson` type Terraform would infer for a JSON value.
fn implied_type(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::{Value, json};
    match value {
        // An unknown type is the most honest description of null.
        Value::Null => json!("dynamic"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(items) => json!(["tuple", items.iter().map(implied_type).collect::<Vec<_>>()]),
        Value::Object(fields) => {
            let types: serde_json::Map<_, _> = fields
                .iter()
                .map(|(k, v)| (k.clone(), implied_type(v)))
                .collect();
            json!(["object", types])
        }
    }
}

impl State {
    /// How many resources the state holds (entries of `resources`, data sources included),
    /// or `None` when `resources` is not an array.
    pub fn resource_count(&self) -> Option<usize> {
        self.resources
            .deserialize::<Vec<serde::de::IgnoredAny>>()
            .ok()
            .map(|items| items.len())
    }

    /// An empty state (no outputs, no resources), serial 0 and no lineage yet.
    pub fn new(terraform_version: semver::Version) -> Self {
        State {
            terraform_version,
            serial: 0,
            lineage: String::new(),
            outputs: BTreeMap::new(),
            resources: RawJson::empty_array(),
            check_results: RawJson::null(),
            unknown_fields: IndexMap::new(),
        }
    }

    /// The format version, always [`STATE_FORMAT_VERSION`] once read.
    pub fn version(&self) -> u64 {
        STATE_FORMAT_VERSION
    }

    /// True when `self` and `other` hold the same content apart from `serial` and `lineage`,
    /// the fields the state manager owns. A persist only bumps the serial when this is false.
    pub fn same_content(&self, other: &State) -> bool {
        self.terraform_version == other.terraform_version
            && self.outputs == other.outputs
            && self.resources == other.resources
            && self.check_results == other.check_results
            && self.unknown_fields == other.unknown_fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_counts_and_sizes_but_never_resource_content() {
        let mut state = State::new(COMPATIBLE_TERRAFORM_VERSION);
        state.serial = 7;
        state.resources = RawJson::parse(
            r#"[{"mode":"managed","type":"aws_db_instance","name":"db","instances":[{"attributes":{"password":"hunter2"}}]},
                {"mode":"managed","type":"random_password","name":"pw","instances":[{"attributes":{"result":"hunter2"}}]}]"#,
        )
        .unwrap();
        state.check_results = RawJson::parse(r#"[{"note":"hunter2"}]"#).unwrap();
        state.unknown_fields.insert(
            "future_field".into(),
            RawJson::parse(r#""hunter2""#).unwrap(),
        );
        for rendered in [format!("{state:?}"), format!("{state:#?}")] {
            assert!(!rendered.contains("hunter2"), "{rendered}");
            assert!(
                rendered.contains(&format!(
                    "<2 resources, {} bytes>",
                    state.resources.as_str().len()
                )),
                "{rendered}"
            );
            assert!(rendered.contains("serial: 7"), "{rendered}");
            assert!(rendered.contains("future_field"), "{rendered}");
        }
    }
}
