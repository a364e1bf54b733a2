//! DynamoDB on moto's server, for the `dynamodb_table` tests: a client, lock tables made as
//! Terraform users make them, and raw item reads and writes (as Terraform would make them).

use super::moto_endpoint;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};

/// A DynamoDB client on moto's server.
pub fn dynamodb() -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(moto_endpoint())
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// A new lock table as a Terraform user creates it: `LockID`, a string hash key.
pub async fn table() -> String {
    table_keyed_by("LockID", "tflocks").await
}

/// A new table named `<prefix>-<random>` whose hash key is the string attribute `key_name`.
pub async fn table_keyed_by(key_name: &str, prefix: &str) -> String {
    let name = format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    dynamodb()
        .create_table()
        .table_name(&name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key_name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key_name)
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("creating the table");
    name
}

/// One string attribute of the item `lock_id` in `table`, if both exist.
pub async fn item(table: &str, lock_id: &str, attribute: &str) -> Option<String> {
    dynamodb()
        .get_item()
        .table_name(table)
        .key("LockID", AttributeValue::S(lock_id.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem")
        .item
        .and_then(|mut item| item.remove(attribute))
        .and_then(|value| value.as_s().ok().cloned())
}

/// Writes the item `lock_id` with one string attribute, unconditionally.
pub async fn put_item(table: &str, lock_id: &str, attribute: &str, value: &str) {
    dynamodb()
        .put_item()
        .table_name(table)
        .item("LockID", AttributeValue::S(lock_id.into()))
        .item(attribute, AttributeValue::S(value.into()))
        .send()
        .await
        .expect("PutItem");
}
