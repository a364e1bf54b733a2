//! What changed between two snapshots: outputs and resources by address, serial and lineage.
//! A data structure first; the CLI renders it.

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
