//! Resource addresses over a v4 state: parse and render them exactly as Terraform prints them
//! (`module.a["k"].aws_instance.x[0]`, `data.x.y`), list instances, look one up, remove and
//! move resources, instances and whole modules.
//!
//! Only the resources touched are re-encoded; every other resource keeps its exact JSON text,
//! and new or changed ones are placed where Terraform would write them (sorted by module,
//! mode, type and name; instances by key), so the codec's output stays Go-compatible.

use super::{RawJson, State};
use indexmap::IndexMap;
use serde_json::value::RawValue;
use std::cmp::Ordering;
use std::fmt;

/// An instance key: `[0]` (`count`) or `["k"]` (`for_each`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InstanceKey {
    /// A `count` index.
    Int(i64),
    /// A `for_each` key.
    Str(String),
}

impl InstanceKey {
    fn to_json(&self) -> serde_json::Value {
        match self {
            InstanceKey::Int(n) => serde_json::Value::from(*n),
            InstanceKey::Str(s) => serde_json::Value::from(s.as_str()),
        }
    }

    fn from_json(value: &serde_json::Value) -> Option<InstanceKey> {
        match value {
            serde_json::Value::String(s) => Some(InstanceKey::Str(s.clone())),
            serde_json::Value::Number(n) => n.as_i64().map(InstanceKey::Int),
            _ => None,
        }
    }
}

/// Renders the key with its brackets, as Terraform does: `[0]`, `["a\"b"]`.
impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstanceKey::Int(n) => write!(f, "[{n}]"),
            InstanceKey::Str(s) => write!(f, "[{}]", hcl_quoted(s)),
        }
    }
}

/// Terraform's order of keys: no key, then numbers, then strings.
fn key_cmp(a: &Option<InstanceKey>, b: &Option<InstanceKey>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, _) => Ordering::Less,
        (_, None) => Ordering::Greater,
        (Some(InstanceKey::Int(x)), Some(InstanceKey::Int(y))) => x.cmp(y),
        (Some(InstanceKey::Str(x)), Some(InstanceKey::Str(y))) => x.cmp(y),
        (Some(InstanceKey::Int(_)), Some(InstanceKey::Str(_))) => Ordering::Less,
        (Some(InstanceKey::Str(_)), Some(InstanceKey::Int(_))) => Ordering::Greater,
    }
}

/// One `module.NAME[KEY]` step of a module path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModuleStep {
    /// The module call's name.
    pub name: String,
    /// The instance key, if the call uses `count` or `for_each`.
    pub key: Option<InstanceKey>,
}

/// A module instance path; empty for the root module.
pub type ModulePath = Vec<ModuleStep>;

fn render_module(module: &[ModuleStep]) -> String {
    let mut out = String::new();
    for (i, step) in module.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str("module.");
        out.push_str(&step.name);
        if let Some(key) = &step.key {
            out.push_str(&key.to_string());
        }
    }
    out
}

fn module_cmp(a: &[ModuleStep], b: &[ModuleStep]) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| {
        for (x, y) in a.iter().zip(b) {
            let order = x.name.cmp(&y.name).then_with(|| key_cmp(&x.key, &y.key));
            if order != Ordering::Equal {
                return order;
            }
        }
        Ordering::Equal
    })
}

/// Managed resources (`resource` blocks) or data sources (`data` blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceMode {
    /// A `resource` block.
    Managed,
    /// A `data` block (`data.` in addresses).
    Data,
}

impl ResourceMode {
    fn as_str(self) -> &'static str {
        match self {
            ResourceMode::Managed => "managed",
            ResourceMode::Data => "data",
        }
    }
}

/// A resource: every instance of one `resource` or `data` block in one module instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceAddress {
    /// The module instance holding it (empty: the root module).
    pub module: ModulePath,
    /// Managed resource or data source.
    pub mode: ResourceMode,
    /// The resource type, such as `aws_instance`.
    pub type_name: String,
    /// The resource name.
    pub name: String,
}

impl fmt::Display for ResourceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.module.is_empty() {
            write!(f, "{}.", render_module(&self.module))?;
        }
        if self.mode == ResourceMode::Data {
            f.write_str("data.")?;
        }
        write!(f, "{}.{}", self.type_name, self.name)
    }
}

/// One instance of a resource, as `terraform state list` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceAddress {
    /// The resource.
    pub resource: ResourceAddress,
    /// The instance key (none for a resource without `count` or `for_each`).
    pub key: Option<InstanceKey>,
}

impl fmt::Display for InstanceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.resource)?;
        if let Some(key) = &self.key {
            write!(f, "{key}")?;
        }
        Ok(())
    }
}

impl InstanceAddress {
    /// Terraform's order for `terraform state list`: shallower modules first, then by module,
    /// data sources before managed resources, type, name and key.
    pub fn terraform_cmp(&self, other: &InstanceAddress) -> Ordering {
        let (a, b) = (&self.resource, &other.resource);
        module_cmp(&a.module, &b.module)
            .then_with(|| match (a.mode, b.mode) {
                (x, y) if x == y => Ordering::Equal,
                (ResourceMode::Data, _) => Ordering::Less,
                _ => Ordering::Greater,
            })
            .then_with(|| a.type_name.cmp(&b.type_name))
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| key_cmp(&self.key, &other.key))
    }
}

/// Anything an operator can name: a module instance, a resource, one instance, or a root
/// output (`output.NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// `module.a` or `module.a["k"].module.b`: everything in that module instance and below.
    Module(ModulePath),
    /// `aws_instance.x`: every instance of the resource (or, where one instance is meant,
    /// the one without a key).
    Resource(ResourceAddress),
    /// `aws_instance.x[0]`: one instance.
    Instance(InstanceAddress),
    /// `output.NAME`: a root module output.
    Output(String),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Module(module) => f.write_str(&render_module(module)),
            Address::Resource(resource) => write!(f, "{resource}"),
            Address::Instance(instance) => write!(f, "{instance}"),
            Address::Output(name) => write!(f, "output.{name}"),
        }
    }
}

/// One step of an attribute path: `.name` or `["name"]` (a key), `[0]` (an index).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathStep {
    /// An attribute or map key.
    Key(String),
    /// A list index.
    Index(u64),
}

/// Why an address could not be read, or an operation on addresses was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The text is not an address.
    #[error("invalid address {text:?}: {message}")]
    Syntax {
        /// The text given.
        text: String,
        /// What is wrong.
        message: String,
    },
    /// Nothing in the state has this address.
    #[error("no resource, instance or module in the state matches {0}")]
    NotFound(String),
    /// The destination of a move is already in the state, with other content.
    #[error("the destination {0} already exists in the state")]
    DestinationExists(String),
    /// A move or lookup that cannot be done as asked.
    #[error("{0}")]
    Invalid(String),
    /// The state's `resources` do not have the v4 layout.
    #[error("the state's resources are malformed: {0}")]
    Malformed(String),
}

type Result<T> = std::result::Result<T, AddressError>;

impl std::str::FromStr for Address {
    type Err = AddressError;
    fn from_str(text: &str) -> Result<Address> {
        Address::parse(text)
    }
}

impl Address {
    /// Parses an address as Terraform prints it.
    ///
    /// ```
    /// use s3state::state::Address;
    /// let text = r#"module.a["k"].data.aws_ami.x[0]"#;
    /// assert_eq!(Address::parse(text).unwrap().to_string(), text);
    /// ```
    pub fn parse(text: &str) -> Result<Address> {
        let (address, path) = Address::parse_with_path(text)?;
        if !path.is_empty() {
            return Err(syntax(text, "unexpected text after the address"));
        }
        Ok(address)
    }

    /// Parses an address followed by an optional attribute path, as in
    /// `aws_instance.x[0].tags["Name"]` or `output.vpc.id`.
    pub fn parse_with_path(text: &str) -> Result<(Address, Vec<PathStep>)> {
        let mut p = Parser { text, pos: 0 };
        let address = p.address()?;
        let path = p.path()?;
        Ok((address, path))
    }
}

fn syntax(text: &str, message: impl Into<String>) -> AddressError {
    AddressError::Syntax {
        text: text.to_owned(),
        message: message.into(),
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn err(&self, message: &str) -> AddressError {
        syntax(self.text, format!("{message} at offset {}", self.pos))
    }

    fn eat(&mut self, prefix: &str) -> bool {
        if self.rest().starts_with(prefix) {
            self.pos += prefix.len();
            true
        } else {
            false
        }
    }

    /// An HCL identifier: a letter or `_`, then letters, digits, `_` and `-`.
    fn ident(&mut self) -> Result<String> {
        let rest = self.rest();
        let mut end = 0;
        for (i, c) in rest.char_indices() {
            let ok = if i == 0 {
                c.is_alphabetic() || c == '_'
            } else {
                c.is_alphanumeric() || c == '_' || c == '-'
            };
            if !ok {
                break;
            }
            end = i + c.len_utf8();
        }
        if end == 0 {
            return Err(self.err("expected a name"));
        }
        self.pos += end;
        Ok(rest[..end].to_owned())
    }

    fn key(&mut self) -> Result<Option<InstanceKey>> {
        if !self.eat("[") {
            return Ok(None);
        }
        let key = if self.rest().starts_with('"') {
            InstanceKey::Str(self.string()?)
        } else {
            let digits: String = self
                .rest()
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if digits.is_empty() {
                return Err(self.err("expected a number or a quoted string in brackets"));
            }
            self.pos += digits.len();
            InstanceKey::Int(
                digits
                    .parse()
                    .map_err(|_| self.err("the index is too large"))?,
            )
        };
        if !self.eat("]") {
            return Err(self.err("expected ]"));
        }
        Ok(Some(key))
    }

    /// An HCL quoted string, with its escapes.
    fn string(&mut self) -> Result<String> {
        self.pos += 1; // the opening quote
        let mut out = String::new();
        loop {
            let mut chars = self.rest().chars();
            let Some(c) = chars.next() else {
                return Err(self.err("unterminated string"));
            };
            self.pos += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let Some(e) = chars.next() else {
                        return Err(self.err("unterminated string"));
                    };
                    self.pos += e.len_utf8();
                    match e {
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        '"' => out.push('"'),
                        '\\' => out.push('\\'),
                        'u' | 'U' => {
                            let len = if e == 'u' { 4 } else { 8 };
                            let hex = self.rest().get(..len).unwrap_or("");
                            let c = u32::from_str_radix(hex, 16)
                                .ok()
                                .filter(|_| hex.len() == len)
                                .and_then(char::from_u32)
                                .ok_or_else(|| self.err("invalid unicode escape"))?;
                            self.pos += len;
                            out.push(c);
                        }
                        _ => return Err(self.err("invalid escape")),
                    }
                }
                '$' | '%' => {
                    if self.rest().starts_with(&format!("{c}{{")) {
                        // `$${` is a literal `${`
                        self.pos += 1;
                    } else if self.rest().starts_with('{') {
                        return Err(self.err("templates are not allowed in an address"));
                    }
                    out.push(c);
                }
                '\n' | '\r' => return Err(self.err("unterminated string")),
                _ => out.push(c),
            }
        }
    }

    fn address(&mut self) -> Result<Address> {
        if self.text.is_empty() {
            return Err(syntax(self.text, "the address is empty"));
        }
        if self.eat("output.") {
            return Ok(Address::Output(self.ident()?));
        }
        let mut module = Vec::new();
        while self.eat("module.") {
            let name = self.ident()?;
            let key = self.key()?;
            module.push(ModuleStep { name, key });
            if !self.eat(".") {
                return Ok(Address::Module(module));
            }
        }
        let mode = if self.eat("data.") {
            ResourceMode::Data
        } else {
            ResourceMode::Managed
        };
        let type_name = self.ident()?;
        if !self.eat(".") {
            return Err(self.err("expected TYPE.NAME"));
        }
        let name = self.ident()?;
        let resource = ResourceAddress {
            module,
            mode,
            type_name,
            name,
        };
        Ok(match self.key()? {
            None => Address::Resource(resource),
            key => Address::Instance(InstanceAddress { resource, key }),
        })
    }

    fn path(&mut self) -> Result<Vec<PathStep>> {
        let mut path = Vec::new();
        while !self.rest().is_empty() {
            if self.eat(".") {
                path.push(PathStep::Key(self.ident()?));
            } else if self.rest().starts_with('[') {
                match self.key()? {
                    Some(InstanceKey::Str(s)) => path.push(PathStep::Key(s)),
                    Some(InstanceKey::Int(n)) => path.push(PathStep::Index(n as u64)),
                    None => unreachable!("starts with ["),
                }
            } else {
                return Err(self.err("expected .name or [index]"));
            }
        }
        Ok(path)
    }
}

/// Formats a string as HCL's parser would read it back, as Terraform's `toHCLQuotedString`.
fn hcl_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '$' | '%' => {
                out.push(c);
                if chars.peek() == Some(&'{') {
                    out.push(c);
                }
            }
            c if !is_go_printable(c) => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint`, closely: controls, separators other than the ASCII space, and
/// format characters are not printable.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c, '\u{00ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}'))
}

// ---------------------------------------------------------------------------------------------
// The state's resources.

type Object = IndexMap<String, Box<RawValue>>;

/// One element of `resources`: its address, its exact text, and its instances' keys.
struct Entry {
    address: ResourceAddress,
    raw: Box<RawValue>,
}

fn raw_str(value: &serde_json::Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).expect("serde_json writes valid JSON")
}

fn field<T: serde::de::DeserializeOwned>(object: &Object, name: &str) -> Result<Option<T>> {
    object
        .get(name)
        .map(|raw| {
            serde_json::from_str(raw.get())
                .map_err(|err| AddressError::Malformed(format!("field {name:?}: {err}")))
        })
        .transpose()
}

fn parse_object(raw: &RawValue) -> Result<Object> {
    serde_json::from_str(raw.get()).map_err(|err| AddressError::Malformed(err.to_string()))
}

fn module_of(text: &str) -> Result<ModulePath> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    match Address::parse(text)? {
        Address::Module(module) => Ok(module),
        _ => Err(AddressError::Malformed(format!(
            "{text:?} is not a module path"
        ))),
    }
}

fn address_of(object: &Object) -> Result<ResourceAddress> {
    let module: Option<String> = field(object, "module")?;
    let mode: Option<String> = field(object, "mode")?;
    let mode = match mode.as_deref() {
        Some("managed") => ResourceMode::Managed,
        Some("data") => ResourceMode::Data,
        other => {
            return Err(AddressError::Malformed(format!(
                "unknown resource mode {other:?}"
            )));
        }
    };
    let type_name: Option<String> = field(object, "type")?;
    let name: Option<String> = field(object, "name")?;
    Ok(ResourceAddress {
        module: module_of(module.as_deref().unwrap_or(""))?,
        mode,
        type_name: type_name
            .ok_or_else(|| AddressError::Malformed("a resource has no type".into()))?,
        name: name.ok_or_else(|| AddressError::Malformed("a resource has no name".into()))?,
    })
}

fn instances_of(object: &Object) -> Result<Vec<Box<RawValue>>> {
    Ok(field(object, "instances")?.unwrap_or_default())
}

fn instance_key(instance: &RawValue) -> Result<Option<InstanceKey>> {
    let object = parse_object(instance)?;
    let key: Option<serde_json::Value> = field(&object, "index_key")?;
    match key {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => InstanceKey::from_json(&value)
            .map(Some)
            .ok_or_else(|| AddressError::Malformed(format!("invalid index_key {value}"))),
    }
}

fn entries(state: &State) -> Result<Vec<Entry>> {
    let raws: Vec<Box<RawValue>> = state
        .resources
        .deserialize()
        .map_err(|err| AddressError::Malformed(err.to_string()))?;
    raws.into_iter()
        .map(|raw| {
            Ok(Entry {
                address: address_of(&parse_object(&raw)?)?,
                raw,
            })
        })
        .collect()
}

fn store_entries(state: &mut State, entries: &[Entry]) {
    let mut text = String::from("[");
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(entry.raw.get());
    }
    text.push(']');
    state.resources = RawJson::parse(&text).expect("resources re-joined from valid JSON");
}

/// Terraform's order of `resources` in the file: by module text, mode, type and name.
fn file_cmp(a: &ResourceAddress, b: &ResourceAddress) -> Ordering {
    render_module(&a.module)
        .cmp(&render_module(&b.module))
        .then_with(|| a.mode.as_str().cmp(b.mode.as_str()))
        .then_with(|| a.type_name.cmp(&b.type_name))
        .then_with(|| a.name.cmp(&b.name))
}

fn insert_sorted(entries: &mut Vec<Entry>, entry: Entry) {
    let at = entries
        .iter()
        .position(|e| file_cmp(&e.address, &entry.address) == Ordering::Greater)
        .unwrap_or(entries.len());
    entries.insert(at, entry);
}

fn to_raw(object: &Object) -> Box<RawValue> {
    let text = serde_json::to_string(object).expect("an object of raw values serialises");
    // Through RawJson for Go's escaping of the strings written here (`<`, `>`, `&`).
    let compact = RawJson::parse(&text).expect("valid JSON");
    RawValue::from_string(compact.as_str().to_owned()).expect("valid JSON")
}

/// Sets the `module`, `type`, `name` of a resource object (keeping Terraform's field order:
/// `module` first, omitted at the root).
fn readdress(object: &mut Object, to: &ResourceAddress) {
    let module = render_module(&to.module);
    if module.is_empty() {
        object.shift_remove("module");
    } else {
        object.shift_insert(
            0,
            "module".to_owned(),
            raw_str(&serde_json::Value::from(module)),
        );
    }
    object.insert(
        "type".into(),
        raw_str(&serde_json::Value::from(to.type_name.as_str())),
    );
    object.insert(
        "name".into(),
        raw_str(&serde_json::Value::from(to.name.as_str())),
    );
}

/// Sets or removes an instance object's `index_key` (first, as Terraform writes it).
fn rekey(instance: &RawValue, key: &Option<InstanceKey>) -> Result<Box<RawValue>> {
    let mut object = parse_object(instance)?;
    match key {
        None => {
            object.shift_remove("index_key");
        }
        Some(key) => {
            object.shift_insert(0, "index_key".to_owned(), raw_str(&key.to_json()));
        }
    }
    Ok(to_raw(&object))
}

fn set_instances(object: &mut Object, instances: &[Box<RawValue>]) -> Result<()> {
    let mut keyed: Vec<(Option<InstanceKey>, &RawValue)> = Vec::new();
    for instance in instances {
        keyed.push((instance_key(instance)?, instance));
    }
    // Stable: objects of one key (current, then deposed) keep their order.
    keyed.sort_by(|a, b| key_cmp(&a.0, &b.0));
    let text = format!(
        "[{}]",
        keyed
            .iter()
            .map(|(_, raw)| raw.get())
            .collect::<Vec<_>>()
            .join(",")
    );
    object.insert(
        "instances".into(),
        RawValue::from_string(text).expect("valid"),
    );
    // Older states carry `each`; keep it consistent with the keys.
    if object.contains_key("each") {
        let each = match keyed.iter().find_map(|(key, _)| key.as_ref()) {
            Some(InstanceKey::Int(_)) => Some("list"),
            Some(InstanceKey::Str(_)) => Some("map"),
            None => None,
        };
        match each {
            Some(each) => {
                object.insert("each".into(), raw_str(&serde_json::Value::from(each)));
            }
            None => {
                object.shift_remove("each");
            }
        }
    }
    Ok(())
}

/// One instance's stored attributes and which of them are sensitive.
#[derive(Clone, PartialEq, Eq)]
pub struct InstanceView {
    /// The `attributes` object, exactly.
    pub attributes: RawJson,
    /// The `sensitive_attributes` paths.
    pub sensitive_paths: Vec<Vec<PathStep>>,
}

impl fmt::Debug for InstanceView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceView")
            .field(
                "attributes",
                &format_args!("<{} bytes>", self.attributes.as_str().len()),
            )
            .field("sensitive_paths", &self.sensitive_paths)
            .finish()
    }
}

/// What a masked sensitive value is shown as, as Terraform's `state show` shows it.
pub const SENSITIVE_PLACEHOLDER: &str = "(sensitive value)";

fn sensitive_paths(object: &Object) -> Result<Vec<Vec<PathStep>>> {
    let paths: Option<Vec<Vec<serde_json::Value>>> = field(object, "sensitive_attributes")?;
    let mut out = Vec::new();
    for path in paths.unwrap_or_default() {
        let mut steps = Vec::new();
        for step in path {
            let value = step.get("value");
            match (step.get("type").and_then(|t| t.as_str()), value) {
                (Some("get_attr"), Some(serde_json::Value::String(name))) => {
                    steps.push(PathStep::Key(name.clone()))
                }
                (Some("index"), Some(index)) => {
                    let inner = index.get("value").unwrap_or(index);
                    match inner {
                        serde_json::Value::String(s) => steps.push(PathStep::Key(s.clone())),
                        serde_json::Value::Number(n) => {
                            steps.push(PathStep::Index(n.as_u64().unwrap_or(u64::MAX)))
                        }
                        _ => break,
                    }
                }
                _ => break,
            }
        }
        out.push(steps);
    }
    Ok(out)
}

fn step_into<'v>(
    value: &'v mut serde_json::Value,
    step: &PathStep,
) -> Option<&'v mut serde_json::Value> {
    match (value, step) {
        (serde_json::Value::Object(map), PathStep::Key(k)) => map.get_mut(k),
        (serde_json::Value::Array(items), PathStep::Index(i)) => items.get_mut(*i as usize),
        _ => None,
    }
}

/// Like [`step_into`], but also through the `{"value": …, "type": …}` wrapper Terraform
/// writes for attributes of dynamic type (`terraform_data`'s `input`), whose sensitive paths
/// name the value inside.
fn mask_step<'v>(
    value: &'v mut serde_json::Value,
    step: &PathStep,
) -> Option<&'v mut serde_json::Value> {
    let dynamic = match &*value {
        serde_json::Value::Object(map) => {
            map.len() == 2
                && map.contains_key("type")
                && map.contains_key("value")
                && !matches!(step, PathStep::Key(k) if k == "type" || k == "value")
        }
        _ => false,
    };
    if dynamic {
        return value
            .get_mut("value")
            .and_then(|inner| step_into(inner, step));
    }
    step_into(value, step)
}

impl InstanceView {
    /// The attribute at `path` (all attributes for an empty path), with sensitive values
    /// replaced by [`SENSITIVE_PLACEHOLDER`] unless `show_sensitive`. `None` when the path
    /// does not exist.
    pub fn value(&self, path: &[PathStep], show_sensitive: bool) -> Option<serde_json::Value> {
        let mut all = self.attributes.to_value();
        if !show_sensitive {
            for sensitive in &self.sensitive_paths {
                let mut at = Some(&mut all);
                for step in sensitive {
                    at = at.and_then(|v| mask_step(v, step));
                }
                if let Some(v) = at {
                    *v = serde_json::Value::from(SENSITIVE_PLACEHOLDER);
                }
            }
        }
        let mut at = &mut all;
        for step in path {
            if at.as_str() == Some(SENSITIVE_PLACEHOLDER) && !show_sensitive {
                // Inside a masked value: do not reveal whether the path exists.
                return Some(serde_json::Value::from(SENSITIVE_PLACEHOLDER));
            }
            at = step_into(at, step)?;
        }
        Some(at.take())
    }
}

/// What [`State::take_moved`] lifted out of a state, addressed for its destination.
#[derive(Debug, Clone)]
pub struct Moved {
    resources: Vec<MovedResource>,
    /// The instances moved, from and to.
    pub pairs: Vec<(InstanceAddress, InstanceAddress)>,
}

#[derive(Debug, Clone)]
struct MovedResource {
    address: ResourceAddress,
    /// The whole resource object (`whole`), or one with only the moved instances.
    object: String,
    whole: bool,
}

/// Whether [`Moved::insert_into`] wrote something or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The destination did not have them; it has now.
    Added,
    /// The destination already has exactly these instances (a move interrupted after its
    /// destination was written): nothing changed.
    AlreadyPresent,
}

fn module_starts_with(module: &[ModuleStep], prefix: &[ModuleStep]) -> bool {
    module.len() >= prefix.len() && module[..prefix.len()] == *prefix
}

/// Terraform's `TargetContains` for a module path: a step without a key matches any key.
fn module_matches(module: &[ModuleStep], target: &[ModuleStep]) -> bool {
    module.len() >= target.len()
        && target
            .iter()
            .zip(module)
            .all(|(t, m)| t.name == m.name && (t.key.is_none() || t.key == m.key))
}

impl Address {
    /// Whether the instance is in what this address names, as `terraform state list FILTER`
    /// decides: a module names everything in it and below (a module step without a key
    /// matches every key), a resource all its instances.
    pub fn contains(&self, instance: &InstanceAddress) -> bool {
        match self {
            Address::Module(module) => module_matches(&instance.resource.module, module),
            Address::Resource(resource) => instance.resource == *resource,
            Address::Instance(target) => target == instance,
            Address::Output(_) => false,
        }
    }
}

impl State {
    /// Every resource instance, in `terraform state list` order.
    pub fn instances(&self) -> Result<Vec<InstanceAddress>> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for entry in entries(self)? {
            for instance in instances_of(&parse_object(&entry.raw)?)? {
                let address = InstanceAddress {
                    resource: entry.address.clone(),
                    key: instance_key(&instance)?,
                };
                // Deposed objects share their instance's address.
                if seen.insert(address.clone()) {
                    out.push(address);
                }
            }
        }
        out.sort_by(|a, b| a.terraform_cmp(b));
        Ok(out)
    }

    /// One instance's attributes (its current object; deposed objects are not shown).
    /// `None` when the state has no such instance.
    pub fn instance(&self, address: &InstanceAddress) -> Result<Option<InstanceView>> {
        for entry in entries(self)? {
            if entry.address != address.resource {
                continue;
            }
            for instance in instances_of(&parse_object(&entry.raw)?)? {
                let object = parse_object(&instance)?;
                if instance_key(&instance)? != address.key || object.contains_key("deposed") {
                    continue;
                }
                let attributes = match object.get("attributes") {
                    Some(raw) => RawJson::parse(raw.get())
                        .map_err(|err| AddressError::Malformed(err.to_string()))?,
                    None => {
                        return Err(AddressError::Invalid(format!(
                            "{address} has no JSON attributes (a state from before Terraform 0.12?)"
                        )));
                    }
                };
                return Ok(Some(InstanceView {
                    attributes,
                    sensitive_paths: sensitive_paths(&object)?,
                }));
            }
        }
        Ok(None)
    }

    /// Every instance's attributes (current objects only, as [`State::instance`] gives them),
    /// read in one pass over the state: for callers that look at many instances (a diff of
    /// two large snapshots), where one [`State::instance`] call each would read the state
    /// once per instance. Instances without JSON attributes (states from before Terraform
    /// 0.12) are left out.
    pub fn instance_views(&self) -> Result<Vec<(InstanceAddress, InstanceView)>> {
        let mut out = Vec::new();
        for entry in entries(self)? {
            for instance in instances_of(&parse_object(&entry.raw)?)? {
                let object = parse_object(&instance)?;
                if object.contains_key("deposed") {
                    continue;
                }
                let Some(raw) = object.get("attributes") else {
                    continue;
                };
                let attributes = RawJson::parse(raw.get())
                    .map_err(|err| AddressError::Malformed(err.to_string()))?;
                out.push((
                    InstanceAddress {
                        resource: entry.address.clone(),
                        key: instance_key(&instance)?,
                    },
                    InstanceView {
                        attributes,
                        sensitive_paths: sensitive_paths(&object)?,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// Removes what `address` names (a module and everything below it, a resource, or one
    /// instance; a resource left without instances goes too) and returns the instances
    /// removed. Nothing matched is [`AddressError::NotFound`], and the state is unchanged.
    pub fn remove_address(&mut self, address: &Address) -> Result<Vec<InstanceAddress>> {
        if let Address::Output(_) = address {
            return Err(AddressError::Invalid(
                "outputs are not removed by address".into(),
            ));
        }
        let mut removed = Vec::new();
        let mut kept = Vec::new();
        let mut matched = false;
        for entry in entries(self)? {
            let mut object = parse_object(&entry.raw)?;
            let instances = instances_of(&object)?;
            let whole = match address {
                Address::Module(module) => module_matches(&entry.address.module, module),
                Address::Resource(resource) => entry.address == *resource,
                _ => false,
            };
            let mut left = Vec::new();
            for instance in &instances {
                let addr = InstanceAddress {
                    resource: entry.address.clone(),
                    key: instance_key(instance)?,
                };
                if whole || address.contains(&addr) {
                    if !removed.contains(&addr) {
                        removed.push(addr);
                    }
                } else {
                    left.push(instance.clone());
                }
            }
            if whole || (left.is_empty() && !instances.is_empty()) {
                matched = true;
            } else if left.len() == instances.len() {
                kept.push(entry);
            } else {
                matched = true;
                set_instances(&mut object, &left)?;
                kept.push(Entry {
                    address: entry.address,
                    raw: to_raw(&object),
                });
            }
        }
        if !matched {
            return Err(AddressError::NotFound(address.to_string()));
        }
        store_entries(self, &kept);
        Ok(removed)
    }

    /// Lifts what `from` names out of this state (without changing it), addressed as `to`:
    /// a module to a module, a resource to a resource (same mode and type), an instance to an
    /// instance (`aws_instance.x` as an instance means the one without a key). Insert the
    /// result with [`Moved::insert_into`], then remove `from` with
    /// [`State::remove_address`]; [`State::move_address`] does both within one state.
    pub fn take_moved(&self, from: &Address, to: &Address) -> Result<Moved> {
        let all = entries(self)?;
        let mut moved = Moved {
            resources: Vec::new(),
            pairs: Vec::new(),
        };
        let check_kind = |a: &ResourceAddress, b: &ResourceAddress| {
            if a.mode != b.mode || a.type_name != b.type_name {
                Err(AddressError::Invalid(format!(
                    "cannot move {a} to {b}: a resource keeps its mode and type"
                )))
            } else {
                Ok(())
            }
        };
        match (from, to) {
            (Address::Module(src), Address::Module(dst)) => {
                for entry in &all {
                    if !module_starts_with(&entry.address.module, src) {
                        continue;
                    }
                    let mut address = entry.address.clone();
                    address.module = dst
                        .iter()
                        .chain(&entry.address.module[src.len()..])
                        .cloned()
                        .collect();
                    moved.push_whole(entry, address)?;
                }
            }
            (Address::Resource(src), Address::Resource(dst)) => {
                check_kind(src, dst)?;
                if let Some(entry) = all.iter().find(|e| e.address == *src) {
                    moved.push_whole(entry, dst.clone())?;
                }
            }
            (
                Address::Resource(_) | Address::Instance(_),
                Address::Resource(_) | Address::Instance(_),
            ) => {
                let (src, dst) = (as_instance(from), as_instance(to));
                check_kind(&src.resource, &dst.resource)?;
                if let Some(entry) = all.iter().find(|e| e.address == src.resource) {
                    let mut object = parse_object(&entry.raw)?;
                    let mut objects = Vec::new();
                    for instance in instances_of(&object)? {
                        if instance_key(&instance)? == src.key {
                            objects.push(rekey(&instance, &dst.key)?);
                        }
                    }
                    if !objects.is_empty() {
                        readdress(&mut object, &dst.resource);
                        set_instances(&mut object, &objects)?;
                        moved.resources.push(MovedResource {
                            address: dst.resource.clone(),
                            object: to_raw(&object).get().to_owned(),
                            whole: false,
                        });
                        moved.pairs.push((src, dst));
                    }
                }
            }
            _ => {
                return Err(AddressError::Invalid(format!(
                    "cannot move {from} to {to}: move a module to a module, a resource to a \
                     resource, an instance to an instance"
                )));
            }
        }
        if moved.pairs.is_empty() {
            return Err(AddressError::NotFound(from.to_string()));
        }
        Ok(moved)
    }

    /// Moves what `from` names to `to` within this state; see [`State::take_moved`]. The
    /// destination must not exist, and a module cannot move into itself.
    pub fn move_address(&mut self, from: &Address, to: &Address) -> Result<Moved> {
        if let (Address::Module(src), Address::Module(dst)) = (from, to)
            && module_starts_with(dst, src)
        {
            return Err(AddressError::Invalid(format!(
                "cannot move {from} into itself ({to})"
            )));
        }
        let moved = self.take_moved(from, to)?;
        let mut after = self.clone();
        after.remove_address(from)?;
        if moved.insert_into(&mut after)? == Inserted::AlreadyPresent {
            return Err(AddressError::DestinationExists(to.to_string()));
        }
        *self = after;
        Ok(moved)
    }
}

fn as_instance(address: &Address) -> InstanceAddress {
    match address {
        Address::Instance(instance) => instance.clone(),
        Address::Resource(resource) => InstanceAddress {
            resource: resource.clone(),
            key: None,
        },
        _ => unreachable!("only resources and instances"),
    }
}

impl Moved {
    fn push_whole(&mut self, entry: &Entry, address: ResourceAddress) -> Result<()> {
        let mut object = parse_object(&entry.raw)?;
        readdress(&mut object, &address);
        for instance in instances_of(&object)? {
            let key = instance_key(&instance)?;
            let pair = (
                InstanceAddress {
                    resource: entry.address.clone(),
                    key: key.clone(),
                },
                InstanceAddress {
                    resource: address.clone(),
                    key,
                },
            );
            if !self.pairs.contains(&pair) {
                self.pairs.push(pair);
            }
        }
        self.resources.push(MovedResource {
            address,
            object: to_raw(&object).get().to_owned(),
            whole: true,
        });
        Ok(())
    }

    /// Adds the moved resources or instances to `state`. When `state` already has exactly
    /// them (an earlier run wrote the destination and stopped), nothing changes and
    /// [`Inserted::AlreadyPresent`] says so; when it has any of their addresses with other
    /// content, the move is refused with [`AddressError::DestinationExists`].
    pub fn insert_into(&self, state: &mut State) -> Result<Inserted> {
        let mut all = entries(state)?;
        let (mut present, mut absent) = (0, 0);
        for moved in &self.resources {
            let object =
                parse_object(&RawValue::from_string(moved.object.clone()).expect("valid"))?;
            let existing = all.iter().position(|e| e.address == moved.address);
            let exists = || AddressError::DestinationExists(moved.address.to_string());
            match existing {
                None => {
                    absent += 1;
                    insert_sorted(
                        &mut all,
                        Entry {
                            address: moved.address.clone(),
                            raw: RawValue::from_string(moved.object.clone()).expect("valid"),
                        },
                    );
                }
                Some(i) if moved.whole => {
                    if all[i].raw.get() != moved.object {
                        return Err(exists());
                    }
                    present += 1;
                }
                Some(i) => {
                    let mut target = parse_object(&all[i].raw)?;
                    let mut instances = instances_of(&target)?;
                    let new = instances_of(&object)?;
                    let new_keys: Vec<Option<InstanceKey>> =
                        new.iter().map(|i| instance_key(i)).collect::<Result<_>>()?;
                    let mut same = Vec::new();
                    for instance in &instances {
                        if new_keys.contains(&instance_key(instance)?) {
                            same.push(instance.get().to_owned());
                        }
                    }
                    if same.is_empty() {
                        absent += 1;
                        instances.extend(new);
                        set_instances(&mut target, &instances)?;
                        all[i].raw = to_raw(&target);
                    } else if same == new.iter().map(|i| i.get().to_owned()).collect::<Vec<_>>() {
                        present += 1;
                    } else {
                        return Err(AddressError::DestinationExists(
                            self.pairs
                                .first()
                                .map(|p| p.1.to_string())
                                .unwrap_or_else(|| moved.address.to_string()),
                        ));
                    }
                }
            }
        }
        if present > 0 && absent > 0 {
            return Err(AddressError::DestinationExists(format!(
                "{} (in part)",
                self.resources[0].address
            )));
        }
        if present > 0 {
            return Ok(Inserted::AlreadyPresent);
        }
        store_entries(state, &all);
        Ok(Inserted::Added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TF_STATE: &str = r#"{
  "version": 4,
  "terraform_version": "1.15.5",
  "serial": 3,
  "lineage": "l",
  "outputs": {},
  "resources": [
    {"mode":"data","type":"terraform_remote_state","name":"r","provider":"provider[\"terraform.io/builtin/terraform\"]","instances":[{"schema_version":0,"attributes":{"backend":"local"},"sensitive_attributes":[]}]},
    {"mode":"managed","type":"terraform_data","name":"counted","provider":"provider[\"terraform.io/builtin/terraform\"]","instances":[{"index_key":0,"schema_version":0,"attributes":{"input":0}},{"index_key":1,"schema_version":0,"attributes":{"input":1}}]},
    {"mode":"managed","type":"terraform_data","name":"each","provider":"provider[\"terraform.io/builtin/terraform\"]","instances":[{"index_key":"\u003c\u0026\u003e","schema_version":0,"attributes":{"input":"x","id":"1"},"sensitive_attributes":[[{"type":"get_attr","value":"input"}]]},{"index_key":"a\"b","schema_version":0,"attributes":{"input":"y"}}]},
    {"module":"module.c","mode":"managed","type":"terraform_data","name":"inner","provider":"provider[\"terraform.io/builtin/terraform\"]","instances":[{"schema_version":0,"attributes":{"input":{"pw":"x","n":1}},"sensitive_attributes":[[{"type":"get_attr","value":"input"},{"type":"get_attr","value":"pw"}]]}]},
    {"module":"module.m[\"k\u003c1\u003e\"]","mode":"managed","type":"terraform_data","name":"inner","provider":"provider[\"terraform.io/builtin/terraform\"]","instances":[{"schema_version":0,"attributes":{"input":2}}]}
  ],
  "check_results": null
}
"#;

    fn state() -> State {
        State::from_slice(TF_STATE.as_bytes()).unwrap()
    }

    fn addr(text: &str) -> Address {
        Address::parse(text).unwrap()
    }

    fn listed(state: &State) -> Vec<String> {
        state
            .instances()
            .unwrap()
            .iter()
            .map(|i| i.to_string())
            .collect()
    }

    #[test]
    fn addresses_read_back_exactly_as_terraform_prints_them() {
        for text in [
            "aws_instance.x",
            "aws_instance.x[0]",
            r#"aws_instance.x["k"]"#,
            r#"module.a["k"].aws_instance.x[3]"#,
            "module.a.module.b",
            "module.a[2].module.b.data.aws_ami.y",
            "data.x.y",
            r#"x.y["a\"b"]"#,
            r#"x.y["<&>"]"#,
            r#"x.y["back\\slash\nnew\ttab"]"#,
            r#"x.y["$${not} %%{a} $x %y"]"#,
            r#"x.y["\u0007"]"#,
            "module.my-mod.my_type.name-1",
            "output.vpc_id",
        ] {
            assert_eq!(addr(text).to_string(), text, "{text}");
        }
    }

    #[test]
    fn keys_with_quotes_and_html_characters_are_unescaped_when_parsed() {
        let Address::Instance(instance) = addr(r#"module.m["k<1>"].x.y["a\"b<&>"]"#) else {
            panic!("not an instance")
        };
        assert_eq!(instance.key, Some(InstanceKey::Str("a\"b<&>".into())));
        assert_eq!(
            instance.resource.module[0].key,
            Some(InstanceKey::Str("k<1>".into()))
        );
        assert_eq!(
            addr(r#"x.y["\u00e9"]"#),
            addr("x.y[\"\u{e9}\"]"),
            "a unicode escape is its character"
        );
    }

    #[test]
    fn malformed_addresses_are_refused_with_the_text() {
        for text in [
            "",
            "x",
            "x.",
            ".x.y",
            "x.y[",
            "x.y[]",
            "x.y[a]",
            r#"x.y["open]"#,
            r#"x.y["${var.a}"]"#,
            r#"x.y["\q"]"#,
            "module.",
            "module.a.",
            "x.y z",
            "data.x",
            "x.y[-1]",
        ] {
            let err = Address::parse(text).unwrap_err();
            assert!(matches!(err, AddressError::Syntax { .. }), "{text}: {err}");
        }
    }

    #[test]
    fn an_attribute_path_follows_the_address() {
        let (address, path) =
            Address::parse_with_path(r#"module.c.terraform_data.inner.input["pw"][0].n"#).unwrap();
        assert_eq!(address.to_string(), "module.c.terraform_data.inner");
        assert_eq!(
            path,
            vec![
                PathStep::Key("input".into()),
                PathStep::Key("pw".into()),
                PathStep::Index(0),
                PathStep::Key("n".into())
            ]
        );
    }

    #[test]
    fn instances_are_listed_in_terraform_state_list_order() {
        assert_eq!(
            listed(&state()),
            [
                "data.terraform_remote_state.r",
                "terraform_data.counted[0]",
                "terraform_data.counted[1]",
                r#"terraform_data.each["<&>"]"#,
                r#"terraform_data.each["a\"b"]"#,
                "module.c.terraform_data.inner",
                r#"module.m["k<1>"].terraform_data.inner"#,
            ]
        );
    }

    #[test]
    fn filters_match_modules_of_any_key_resources_and_instances() {
        let all = state().instances().unwrap();
        let count = |filter: &str| all.iter().filter(|i| addr(filter).contains(i)).count();
        assert_eq!(count("module.m"), 1);
        assert_eq!(count(r#"module.m["k<1>"]"#), 1);
        assert_eq!(count(r#"module.m["other"]"#), 0);
        assert_eq!(count("terraform_data.counted"), 2);
        assert_eq!(count("terraform_data.counted[1]"), 1);
        assert_eq!(count("terraform_data.inner"), 0, "not in the root module");
    }

    #[test]
    fn sensitive_attributes_are_masked_unless_asked() {
        let s = state();
        let Address::Instance(each) = addr(r#"terraform_data.each["<&>"]"#) else {
            panic!()
        };
        let view = s.instance(&each).unwrap().unwrap();
        assert_eq!(
            view.value(&[], false).unwrap(),
            serde_json::json!({"input": SENSITIVE_PLACEHOLDER, "id": "1"})
        );
        assert_eq!(
            view.value(&[PathStep::Key("input".into())], true).unwrap(),
            "x"
        );
        let inner = InstanceAddress {
            resource: match addr("module.c.terraform_data.inner") {
                Address::Resource(r) => r,
                _ => panic!(),
            },
            key: None,
        };
        let view = s.instance(&inner).unwrap().unwrap();
        assert_eq!(
            view.value(&[PathStep::Key("input".into())], false).unwrap(),
            serde_json::json!({"pw": SENSITIVE_PLACEHOLDER, "n": 1})
        );
        assert_eq!(view.value(&[PathStep::Key("nope".into())], false), None);

        // terraform_data keeps dynamic values as {"value": …, "type": …}; its sensitive paths
        // name what is inside.
        let wrapped = InstanceView {
            attributes: RawJson::parse(
                r#"{"input":{"value":{"pw":"x","n":1},"type":["object",{"n":"number","pw":"string"}]}}"#,
            )
            .unwrap(),
            sensitive_paths: vec![vec![PathStep::Key("input".into()), PathStep::Key("pw".into())]],
        };
        let path = [PathStep::Key("input".into()), PathStep::Key("value".into())];
        assert_eq!(
            wrapped.value(&path, false).unwrap(),
            serde_json::json!({"pw": SENSITIVE_PLACEHOLDER, "n": 1})
        );
        assert_eq!(
            wrapped.value(&path, true).unwrap(),
            serde_json::json!({"pw": "x", "n": 1})
        );
    }

    #[test]
    fn removing_keeps_every_other_byte() {
        let mut s = state();
        let removed = s
            .remove_address(&addr("terraform_data.counted[0]"))
            .unwrap();
        assert_eq!(removed.len(), 1);
        let expected = TF_STATE.replace(
            r#"{"index_key":0,"schema_version":0,"attributes":{"input":0}},"#,
            "",
        );
        assert_eq!(
            s.to_bytes(),
            State::from_slice(expected.as_bytes()).unwrap().to_bytes()
        );
        s.remove_address(&addr("terraform_data.counted[1]"))
            .unwrap();
        assert!(!listed(&s).iter().any(|a| a.contains("counted")));
        assert_eq!(
            s.remove_address(&addr("module.m")).unwrap().len(),
            1,
            "a module without a key names all its instances"
        );
        assert!(matches!(
            s.remove_address(&addr("terraform_data.counted")),
            Err(AddressError::NotFound(_))
        ));
    }

    #[test]
    fn moves_rename_resources_instances_and_modules_where_terraform_would_write_them() {
        let mut s = state();
        s.move_address(
            &addr("terraform_data.counted[1]"),
            &addr(r#"terraform_data.moved["<x>"]"#),
        )
        .unwrap();
        s.move_address(&addr("module.c"), &addr(r#"module.d["q\""].module.e"#))
            .unwrap();
        s.move_address(
            &addr("data.terraform_remote_state.r"),
            &addr("data.terraform_remote_state.z"),
        )
        .unwrap();
        assert_eq!(
            listed(&s),
            [
                "data.terraform_remote_state.z",
                "terraform_data.counted[0]",
                r#"terraform_data.each["<&>"]"#,
                r#"terraform_data.each["a\"b"]"#,
                r#"terraform_data.moved["<x>"]"#,
                r#"module.m["k<1>"].terraform_data.inner"#,
                r#"module.d["q\""].module.e.terraform_data.inner"#,
            ]
        );
        let text = String::from_utf8(s.to_bytes()).unwrap();
        assert!(text.contains(r#""index_key": "\u003cx\u003e""#), "{text}");
        assert!(
            text.contains(r#""module": "module.d[\"q\\\"\"].module.e""#),
            "{text}"
        );
        // Reading and writing again changes nothing: the result is in Terraform's layout.
        let again = State::from_slice(text.as_bytes()).unwrap();
        assert_eq!(again.to_bytes(), text.as_bytes());
        let positions: Vec<usize> = [
            "\"z\"",
            "\"counted\"",
            "\"each\"",
            "\"moved\"",
            "module.d",
            "module.m",
        ]
        .iter()
        .map(|needle| text.find(needle).unwrap())
        .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    }

    #[test]
    fn a_move_refuses_an_existing_destination_an_unknown_source_and_a_change_of_type() {
        let mut s = state();
        let before = s.clone();
        for (from, to) in [
            ("terraform_data.counted[0]", "terraform_data.counted[1]"),
            ("terraform_data.counted", "terraform_data.each"),
            ("module.c", r#"module.m["k<1>"]"#),
        ] {
            assert!(
                matches!(
                    s.move_address(&addr(from), &addr(to)),
                    Err(AddressError::DestinationExists(_))
                ),
                "{from} -> {to}"
            );
        }
        for (from, to) in [
            ("terraform_data.nope", "terraform_data.x"),
            ("module.zz", "module.y"),
        ] {
            assert!(matches!(
                s.move_address(&addr(from), &addr(to)),
                Err(AddressError::NotFound(_))
            ));
        }
        for (from, to) in [
            ("terraform_data.counted", "null_resource.counted"),
            ("terraform_data.counted", "data.terraform_data.counted"),
            ("module.c", "terraform_data.x"),
            ("module.c", "module.c.module.d"),
        ] {
            assert!(matches!(
                s.move_address(&addr(from), &addr(to)),
                Err(AddressError::Invalid(_))
            ));
        }
        assert_eq!(s, before, "a refused move changes nothing");
    }

    #[test]
    fn a_move_across_states_interrupted_after_the_destination_is_recognised_on_a_rerun() {
        let source = state();
        let mut destination = State::new(semver::Version::new(1, 15, 5));
        let from = addr(r#"terraform_data.each["a\"b"]"#);
        let to = addr("terraform_data.single");
        let moved = source.take_moved(&from, &to).unwrap();
        assert_eq!(
            moved.insert_into(&mut destination).unwrap(),
            Inserted::Added
        );
        let written = destination.clone();
        // The source write never happened; the re-run finds the destination done.
        let again = source.take_moved(&from, &to).unwrap();
        assert_eq!(
            again.insert_into(&mut destination).unwrap(),
            Inserted::AlreadyPresent
        );
        assert_eq!(destination, written);
        assert_eq!(listed(&destination), ["terraform_data.single"]);
        let text = String::from_utf8(destination.to_bytes()).unwrap();
        assert!(!text.contains("index_key"), "{text}");
        // Other content at the destination is a refusal.
        let other = source
            .take_moved(&addr("terraform_data.counted[0]"), &to)
            .unwrap();
        assert!(matches!(
            other.insert_into(&mut destination),
            Err(AddressError::DestinationExists(_))
        ));
    }
}
