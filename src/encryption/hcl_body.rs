//! An HCL `encryption` body in the JSON shape the rest of the module reads: blocks become
//! objects nested by their labels, literals stay literals, and references
//! (`key_provider.pbkdf2.k`) become their text.

use super::EncryptionError;
use hcl::{Body, Expression, ObjectKey};
use serde_json::{Map, Value};

/// The JSON shape of `body`.
pub(crate) fn to_json(body: &Body) -> Result<Map<String, Value>, EncryptionError> {
    let mut out = Map::new();
    for attribute in body.attributes() {
        out.insert(attribute.key().to_owned(), expression(attribute.expr())?);
    }
    for block in body.blocks() {
        let mut slot = out
            .entry(block.identifier().to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        for label in block.labels() {
            let Value::Object(map) = slot else { break };
            slot = map
                .entry(label.as_str().to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        if let Value::Object(map) = slot {
            for (key, value) in to_json(block.body())? {
                map.insert(key, value);
            }
        }
    }
    Ok(out)
}

fn expression(expr: &Expression) -> Result<Value, EncryptionError> {
    Ok(match expr {
        Expression::Null => Value::Null,
        Expression::Bool(b) => Value::Bool(*b),
        Expression::Number(n) => serde_json::to_value(n).unwrap_or(Value::Null),
        Expression::String(s) => Value::String(s.clone()),
        Expression::Array(items) => Value::Array(
            items
                .iter()
                .map(expression)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Expression::Object(object) => {
            let mut map = Map::new();
            for (key, value) in object.iter() {
                let key = match key {
                    ObjectKey::Identifier(identifier) => identifier.as_str().to_owned(),
                    ObjectKey::Expression(Expression::String(text)) => text.clone(),
                    _ => {
                        return Err(EncryptionError::Config(
                            "object keys must be names or literal strings".into(),
                        ));
                    }
                };
                map.insert(key, expression(value)?);
            }
            Value::Object(map)
        }
        Expression::Traversal(_) | Expression::Variable(_) => Value::String(expr.to_string()),
        // Functions and variables are OpenTofu's to evaluate; s3state cannot, and says so
        // without echoing the expression (it may hold a passphrase).
        _ => {
            return Err(EncryptionError::Config(
                "only literal values and references (key_provider.<type>.<name>, method.<type>.<name>) can be read; \
                 functions and variables cannot be evaluated outside OpenTofu"
                    .into(),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::EncryptionConfig;

    #[test]
    fn blocks_labels_and_references_read_as_the_json_form() {
        let hcl = r#"
            key_provider "pbkdf2" "mykey" {
              passphrase = "correct-horse-battery-staple"
              iterations = 300000
            }
            method "aes_gcm" "new" {
              keys = key_provider.pbkdf2.mykey
            }
            method "unencrypted" "migrate" {}
            state {
              method = method.aes_gcm.new
              fallback {
                method = method.unencrypted.migrate
              }
            }
        "#;
        let json = r#"{"key_provider":{"pbkdf2":{"mykey":{"passphrase":"correct-horse-battery-staple","iterations":300000}}},
            "method":{"aes_gcm":{"new":{"keys":"key_provider.pbkdf2.mykey"}},"unencrypted":{"migrate":{}}},
            "state":{"method":"method.aes_gcm.new","fallback":{"method":"method.unencrypted.migrate"}}}"#;
        assert_eq!(
            EncryptionConfig::parse(hcl).unwrap(),
            EncryptionConfig::parse(json).unwrap()
        );
    }
}
