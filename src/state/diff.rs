//! What changed between two snapshots: outputs and resources by address, serial and lineage.
//! A data structure first; the CLI renders it.

use super::address::{InstanceView, PathStep, SENSITIVE_PLACEHOLDER};
use super::meta::SnapshotMeta;
use super::{RawJson, State};
use serde::Serialize;
use std::collections::BTreeMap;

/// How an item differs between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Only in the newer snapshot.
    Added,
    /// Only in the older snapshot.
    Removed,
    /// In both, with different content.
    Changed,
}

/// One output that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputChange {
    /// The output's name.
    pub name: String,
    /// How it differs.
    pub kind: ChangeKind,
    /// True if either side is sensitive; the values are then withheld.
    pub sensitive: bool,
    /// The older value; `None` when added, or sensitive.
    pub before: Option<serde_json::Value>,
    /// The newer value; `None` when removed, or sensitive.
    pub after: Option<serde_json::Value>,
}

/// One resource instance that differs, by address (`module.x.aws_s3_bucket.b["k"]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceChange {
    /// The instance address.
    pub address: String,
    /// How it differs.
    pub kind: ChangeKind,
}

/// The differences between two snapshots.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateDiff {
    /// The older snapshot's identity.
    pub from: SnapshotMeta,
    /// The newer snapshot's identity.
    pub to: SnapshotMeta,
    /// Outputs added, removed or changed, by name.
    pub outputs: Vec<OutputChange>,
    /// Resource instances added, removed or changed, by address.
    pub resources: Vec<ResourceChange>,
}

impl StateDiff {
    /// The differences from `from` to `to`.
    ///
    /// ```
    /// use s3state::{OutputValue, State, state::ChangeKind, state::StateDiff};
    /// let before = State::new(semver::Version::new(1, 15, 5));
    /// let mut after = before.clone();
    /// after.outputs.insert("url".into(), OutputValue::new("https://x"));
    /// let diff = StateDiff::between(&before, &after);
    /// assert_eq!(diff.outputs[0].kind, ChangeKind::Added);
    /// ```
    pub fn between(from: &State, to: &State) -> StateDiff {
        StateDiff {
            from: SnapshotMeta::of(from),
            to: SnapshotMeta::of(to),
            outputs: output_changes(from, to),
            resources: changes(&instances(&from.resources), &instances(&to.resources))
                .into_iter()
                .map(|(address, kind)| ResourceChange { address, kind })
                .collect(),
        }
    }

    /// True when nothing but (possibly) the serial differs.
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty() && self.resources.is_empty() && self.from.lineage == self.to.lineage
    }
}

/// One attribute of a resource instance that differs between two snapshots.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttributeChange {
    /// Where it is in the instance's attributes, as Terraform writes a reference to it
    /// (`tags.Name`, `ingress[0].cidr_blocks[1]`, `tags["a b"]`).
    pub path: String,
    /// How it differs.
    pub kind: ChangeKind,
    /// True when either side is sensitive: that side's value is [`SENSITIVE_PLACEHOLDER`].
    pub sensitive: bool,
    /// The older value (masked where sensitive); `None` when added.
    pub before: Option<serde_json::Value>,
    /// The newer value (masked where sensitive); `None` when removed.
    pub after: Option<serde_json::Value>,
}

/// What differs in one resource instance's attributes (from [`crate::State::instance`] or
/// [`crate::State::instance_views`]; `None` for a side that lacks the instance), leaf by leaf,
/// in path order. Sensitive values (the instance's `sensitive_attributes`) are masked as
/// Terraform masks them, `(sensitive value)`, and their structure is not shown; a sensitive
/// value that changed is reported as changed, masked on both sides.
///
/// ```
/// use s3state::state::{ChangeKind, RawJson, attribute_changes, InstanceView, PathStep};
/// let view = |json: &str| InstanceView {
///     attributes: RawJson::parse(json).unwrap(),
///     sensitive_paths: vec![vec![PathStep::Key("password".into())]],
/// };
/// let before = view(r#"{"size":1,"password":"old"}"#);
/// let after = view(r#"{"size":2,"password":"new"}"#);
/// let changes = attribute_changes(Some(&before), Some(&after));
/// assert_eq!(changes[0].path, "password");
/// assert_eq!(changes[0].after, Some("(sensitive value)".into()));
/// assert_eq!((changes[1].path.as_str(), changes[1].kind), ("size", ChangeKind::Changed));
/// ```
pub fn attribute_changes(
    before: Option<&InstanceView>,
    after: Option<&InstanceView>,
) -> Vec<AttributeChange> {
    let leaves = |view: Option<&InstanceView>| {
        let mut out = BTreeMap::new();
        if let Some(masked) = view.and_then(|view| view.value(&[], false)) {
            flatten(&masked, &mut Vec::new(), &mut out);
        }
        out
    };
    let (old, new) = (leaves(before), leaves(after));
    let mut paths: Vec<&String> = old.keys().chain(new.keys()).collect();
    paths.sort();
    paths.dedup();
    let is_masked = |value: &serde_json::Value| value.as_str() == Some(SENSITIVE_PLACEHOLDER);
    let mut out = Vec::new();
    for path in paths {
        let (o, n) = (old.get(path), new.get(path));
        let kind = match (o, n) {
            (Some((steps, o)), Some((_, n))) if o == n => {
                // Both masked: whether the secret changed is told only by the real values,
                // which are compared here and never returned.
                let real = |view: Option<&InstanceView>| view.and_then(|v| v.value(steps, true));
                if is_masked(o) && real(before) != real(after) {
                    ChangeKind::Changed
                } else {
                    continue;
                }
            }
            (Some(_), Some(_)) => ChangeKind::Changed,
            (Some(_), None) => ChangeKind::Removed,
            (None, _) => ChangeKind::Added,
        };
        let before = o.map(|(_, value)| value.clone());
        let after = n.map(|(_, value)| value.clone());
        out.push(AttributeChange {
            path: path.clone(),
            kind,
            sensitive: before.as_ref().is_some_and(is_masked)
                || after.as_ref().is_some_and(is_masked),
            before,
            after,
        });
    }
    out
}

/// The leaves of a JSON value (scalars, empty objects and lists, masked values) by path.
fn flatten(
    value: &serde_json::Value,
    steps: &mut Vec<PathStep>,
    out: &mut BTreeMap<String, (Vec<PathStep>, serde_json::Value)>,
) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (key, inner) in map {
                steps.push(PathStep::Key(key.clone()));
                flatten(inner, steps, out);
                steps.pop();
            }
        }
        serde_json::Value::Array(items) if !items.is_empty() => {
            for (index, inner) in items.iter().enumerate() {
                steps.push(PathStep::Index(index as u64));
                flatten(inner, steps, out);
                steps.pop();
            }
        }
        leaf => {
            out.insert(path_text(steps), (steps.clone(), leaf.clone()));
        }
    }
}

/// `a.b[0]["c d"]`: a key that is an identifier after a dot, any other in brackets.
fn path_text(steps: &[PathStep]) -> String {
    let mut text = String::new();
    for step in steps {
        match step {
            PathStep::Key(key)
                if !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    && !key.starts_with(|c: char| c.is_ascii_digit()) =>
            {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            PathStep::Key(key) => {
                text.push('[');
                text.push_str(&serde_json::Value::from(key.as_str()).to_string());
                text.push(']');
            }
            PathStep::Index(index) => text.push_str(&format!("[{index}]")),
        }
    }
    text
}

fn output_changes(from: &State, to: &State) -> Vec<OutputChange> {
    let before: BTreeMap<_, _> = from.outputs.iter().collect();
    let after: BTreeMap<_, _> = to.outputs.iter().collect();
    changes(&before, &after)
        .into_iter()
        .map(|(name, kind)| {
            let (old, new) = (before.get(&name), after.get(&name));
            let sensitive = old.is_some_and(|o| o.sensitive) || new.is_some_and(|o| o.sensitive);
            let shown = |output: Option<&&crate::state::OutputValue>| {
                output.filter(|_| !sensitive).map(|o| o.to_value())
            };
            OutputChange {
                before: shown(old),
                after: shown(new),
                name: name.to_string(),
                kind,
                sensitive,
            }
        })
        .collect()
}

/// Keys added, removed or changed between two maps, in key order.
fn changes<K: Ord + Clone + ToString, V: PartialEq>(
    before: &BTreeMap<K, V>,
    after: &BTreeMap<K, V>,
) -> Vec<(String, ChangeKind)> {
    let mut out = Vec::new();
    for (key, old) in before {
        match after.get(key) {
            None => out.push((key.to_string(), ChangeKind::Removed)),
            Some(new) if new != old => out.push((key.to_string(), ChangeKind::Changed)),
            Some(_) => {}
        }
    }
    for key in after.keys().filter(|key| !before.contains_key(*key)) {
        out.push((key.to_string(), ChangeKind::Added));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every resource instance in a `resources` array, by address, with its JSON.
fn instances(resources: &RawJson) -> BTreeMap<String, String> {
    #[derive(serde::Deserialize)]
    struct Resource {
        #[serde(default)]
        module: Option<String>,
        #[serde(default)]
        mode: Option<String>,
        #[serde(rename = "type")]
        kind: String,
        name: String,
        #[serde(default)]
        instances: Vec<Box<serde_json::value::RawValue>>,
    }
    #[derive(serde::Deserialize)]
    struct Instance {
        #[serde(default)]
        index_key: Option<serde_json::Value>,
    }
    let Ok(resources) = resources.deserialize::<Vec<Resource>>() else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for resource in resources {
        let mut base = String::new();
        if let Some(module) = resource.module.as_deref().filter(|m| !m.is_empty()) {
            base.push_str(module);
            base.push('.');
        }
        if resource.mode.as_deref() == Some("data") {
            base.push_str("data.");
        }
        base.push_str(&resource.kind);
        base.push('.');
        base.push_str(&resource.name);
        for raw in resource.instances {
            let index = serde_json::from_str::<Instance>(raw.get())
                .ok()
                .and_then(|i| i.index_key);
            let address = match index {
                Some(serde_json::Value::String(key)) => {
                    format!("{base}[{}]", serde_json::Value::String(key))
                }
                Some(key) => format!("{base}[{key}]"),
                None => base.clone(),
            };
            out.insert(address, raw.get().to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::OutputValue;

    fn with_resources(json: &str) -> State {
        let mut state = State::new(semver::Version::new(1, 15, 5));
        state.resources = RawJson::parse(json).unwrap();
        state
    }

    fn output_kinds(diff: &StateDiff) -> Vec<(&str, ChangeKind)> {
        diff.outputs
            .iter()
            .map(|c| (c.name.as_str(), c.kind))
            .collect()
    }

    fn resource_kinds(diff: &StateDiff) -> Vec<(&str, ChangeKind)> {
        diff.resources
            .iter()
            .map(|c| (c.address.as_str(), c.kind))
            .collect()
    }

    fn view(attributes: &str, sensitive: &[&[PathStep]]) -> InstanceView {
        InstanceView {
            attributes: RawJson::parse(attributes).unwrap(),
            sensitive_paths: sensitive.iter().map(|path| path.to_vec()).collect(),
        }
    }

    /// From issue 26's web page: a diff by attribute must not show, or hint at the shape of,
    /// a sensitive value, yet must say that it changed.
    #[test]
    fn attribute_changes_mask_sensitive_values_and_still_report_that_they_changed() {
        let key = |k: &str| PathStep::Key(k.into());
        let secret: &[PathStep] = &[key("auth")];
        let before = view(
            r#"{"size":1,"auth":{"user":"u","password":"old"},"same":"x","tags":{"a b":"1"},"list":[1,2]}"#,
            &[secret],
        );
        let after = view(
            r#"{"size":1,"auth":{"user":"u","password":"new","extra":1},"same":"x","tags":{"a b":"2"},"list":[1]}"#,
            &[secret],
        );
        let changes = attribute_changes(Some(&before), Some(&after));
        let summary: Vec<_> = changes
            .iter()
            .map(|c| (c.path.as_str(), c.kind, c.sensitive))
            .collect();
        assert_eq!(
            summary,
            [
                ("auth", ChangeKind::Changed, true),
                ("list[1]", ChangeKind::Removed, false),
                ("tags[\"a b\"]", ChangeKind::Changed, false),
            ]
        );
        let masked = serde_json::Value::from(SENSITIVE_PLACEHOLDER);
        assert_eq!(changes[0].before.as_ref(), Some(&masked));
        assert_eq!(changes[0].after.as_ref(), Some(&masked));
        // An unchanged secret is not reported; a new instance shows every leaf, masked.
        assert!(attribute_changes(Some(&before), Some(&before)).is_empty());
        let added = attribute_changes(None, Some(&after));
        assert!(added.iter().all(|c| c.kind == ChangeKind::Added));
        assert!(!format!("{added:?}").contains("new") && !format!("{added:?}").contains("extra"));
    }

    #[test]
    fn resource_instances_are_addressed_as_terraform_addresses_them() {
        let state = with_resources(
            r#"[{"module":"module.net","mode":"managed","type":"aws_vpc","name":"main","instances":[{"index_key":0},{"index_key":1}]},
                {"mode":"data","type":"terraform_remote_state","name":"shared","instances":[{}]},
                {"mode":"managed","type":"terraform_data","name":"each","instances":[{"index_key":"a b"}]}]"#,
        );
        let addresses: Vec<_> = instances(&state.resources).into_keys().collect();
        assert_eq!(
            addresses,
            [
                "data.terraform_remote_state.shared",
                "module.net.aws_vpc.main[0]",
                "module.net.aws_vpc.main[1]",
                "terraform_data.each[\"a b\"]"
            ]
        );
    }

    #[test]
    fn changes_in_outputs_and_resources_are_reported_with_sensitive_values_withheld() {
        let mut before = with_resources(
            r#"[{"mode":"managed","type":"t","name":"kept","instances":[{"attributes":{"v":1}}]},
                {"mode":"managed","type":"t","name":"gone","instances":[{}]}]"#,
        );
        before.outputs.insert("same".into(), OutputValue::new(&1));
        before
            .outputs
            .insert("secret".into(), OutputValue::new("a").sensitive());
        before.outputs.insert("old".into(), OutputValue::new(&true));
        let mut after = with_resources(
            r#"[{"mode":"managed","type":"t","name":"kept","instances":[{"attributes":{"v":2}}]},
                {"mode":"managed","type":"t","name":"new","instances":[{}]}]"#,
        );
        after.outputs = before.outputs.clone();
        after.outputs.remove("old");
        after
            .outputs
            .insert("secret".into(), OutputValue::new("b").sensitive());
        after.outputs.insert("fresh".into(), OutputValue::new("x"));

        let diff = StateDiff::between(&before, &after);
        assert_eq!(
            output_kinds(&diff),
            [
                ("fresh", ChangeKind::Added),
                ("old", ChangeKind::Removed),
                ("secret", ChangeKind::Changed)
            ]
        );
        let secret = &diff.outputs[2];
        assert!(secret.sensitive && secret.before.is_none() && secret.after.is_none());
        assert_eq!(diff.outputs[0].after, Some(serde_json::json!("x")));
        assert_eq!(
            resource_kinds(&diff),
            [
                ("t.gone", ChangeKind::Removed),
                ("t.kept", ChangeKind::Changed),
                ("t.new", ChangeKind::Added)
            ]
        );
    }
}
