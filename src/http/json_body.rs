//! The one rule every JSON request body passes, whatever route parses it:
//!
//! - the body is a JSON object (a top-level array or scalar is 422);
//! - no string, key or value, holds a NUL (PostgreSQL text cannot store one);
//! - every string has a length limit: [`DEFAULT_MAX_CHARS`] unless
//!   [`max_chars`] names a larger one for that field;
//! - where the target type expects an object, only an object is accepted:
//!   serde's derived structs also take arrays (`["pk_…"]` as `{public_key}`,
//!   `{"profile": []}` as an empty profile), which [`Strict`] refuses;
//! - errors name the field path (`profile.facts[2]`), never a Rust type.

use std::fmt;

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, Expected, IntoDeserializer,
    MapAccess, SeqAccess, Unexpected, VariantAccess, Visitor,
};
use serde::forward_to_deserialize_any;
use serde_json::Value;

/// Longest string accepted in any field not listed by [`max_chars`].
pub const DEFAULT_MAX_CHARS: usize = 1_000;

/// Fields allowed more than [`DEFAULT_MAX_CHARS`], by path without indices.
/// `None`: the handler checks the field against a configured limit
/// (the request body limit still bounds it).
pub fn max_chars(path: &str) -> Option<usize> {
    match path {
        // Handler-checked against knowledge.max_document_chars and
        // widget.max_message_chars.
        "content" | "text" => None,
        "system_prompt" => Some(crate::domain::MAX_SYSTEM_PROMPT_CHARS),
        "notes" => Some(10_000),
        "url" | "base_url" => Some(2_048),
        _ => Some(DEFAULT_MAX_CHARS),
    }
}

/// Parses and checks `bytes` into `T`; see the module documentation.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|error| BodyError {
        path: Vec::new(),
        message: format!("malformed JSON: {error}"),
        syntax: true,
    })?;
    from_value(&value)
}

/// Checks an already parsed body (an MCP tool's arguments) into `T`, by the same rules.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, BodyError> {
    if !value.is_object() {
        return Err(BodyError::message("the request body must be a JSON object"));
    }
    check_strings(value, &mut Vec::new())?;
    T::deserialize(Strict(value))
}

/// A body refused: 400 for malformed JSON (`syntax`), else 422 with the field path.
#[derive(Debug)]
pub struct BodyError {
    path: Vec<Segment>,
    message: String,
    pub syntax: bool,
}

#[derive(Debug, Clone)]
enum Segment {
    Key(String),
    Index(usize),
}

fn render(path: &[Segment], with_indices: bool) -> String {
    let mut text = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            Segment::Index(index) if with_indices => text.push_str(&format!("[{index}]")),
            Segment::Index(_) => {}
        }
    }
    text
}

impl BodyError {
    fn message(message: impl Into<String>) -> Self {
        Self {
            path: Vec::new(),
            message: message.into(),
            syntax: false,
        }
    }

    fn at(mut self, segment: Segment) -> Self {
        self.path.insert(0, segment);
        self
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", render(&self.path, true), self.message)
        }
    }
}

impl std::error::Error for BodyError {}

impl de::Error for BodyError {
    fn custom<M: fmt::Display>(message: M) -> Self {
        let text = message.to_string();
        // serde's untagged enums and similar name the Rust type: say what it means instead.
        if text.contains("untagged enum") || text.contains("struct ") {
            return Self::message("is not one of the accepted forms");
        }
        Self::message(text)
    }

    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn Expected) -> Self {
        Self::message(format!(
            "expected {}, found {}",
            describe_expected(expected),
            describe_unexpected(unexpected)
        ))
    }

    fn invalid_value(unexpected: Unexpected<'_>, expected: &dyn Expected) -> Self {
        Self::message(format!(
            "expected {}, found {}",
            describe_expected(expected),
            describe_unexpected(unexpected)
        ))
    }

    fn invalid_length(length: usize, expected: &dyn Expected) -> Self {
        Self::message(format!(
            "expected {}, found {length} items",
            describe_expected(expected)
        ))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::message(format!(
            "unknown value `{variant}`, expected one of: {}",
            expected.join(", ")
        ))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        // The map access adds the field itself to the path.
        let _ = field;
        Self::message(if expected.is_empty() {
            "is not an accepted field".to_owned()
        } else {
            format!(
                "is not an accepted field (accepted: {})",
                expected.join(", ")
            )
        })
    }

    fn missing_field(field: &'static str) -> Self {
        Self::message("is required").at(Segment::Key(field.to_owned()))
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self::message("is given twice").at(Segment::Key(field.to_owned()))
    }
}

fn describe_expected(expected: &dyn Expected) -> String {
    let text = expected.to_string();
    let text = text.as_str();
    if text.starts_with("struct ") || text.contains("map") {
        "an object".into()
    } else if text.contains("sequence") || text.starts_with("tuple") {
        "an array".into()
    } else if text.starts_with("enum ") || text.contains("untagged") {
        "one of the accepted values".into()
    } else if text.contains("string") {
        "a string".into()
    } else if matches!(
        text,
        "i8" | "i16"
            | "i32"
            | "i64"
            | "i128"
            | "u8"
            | "u16"
            | "u32"
            | "u64"
            | "u128"
            | "isize"
            | "usize"
    ) {
        "an integer".into()
    } else if matches!(text, "f32" | "f64") {
        "a number".into()
    } else {
        text.to_owned()
    }
}

fn describe_unexpected(unexpected: Unexpected<'_>) -> &'static str {
    match unexpected {
        Unexpected::Bool(_) => "a boolean",
        Unexpected::Unsigned(_) | Unexpected::Signed(_) => "an integer",
        Unexpected::Float(_) => "a number",
        Unexpected::Char(_) | Unexpected::Str(_) => "a string",
        Unexpected::Unit | Unexpected::Option => "null",
        Unexpected::Seq => "an array",
        Unexpected::Map => "an object",
        _ => "another type",
    }
}

/// NUL and length, everywhere: keys included, and fields the target type
/// would ignore or keep as raw JSON.
fn check_strings(value: &Value, path: &mut Vec<Segment>) -> Result<(), BodyError> {
    let failing = |path: &[Segment], message: String| BodyError {
        path: path.to_vec(),
        message,
        syntax: false,
    };
    match value {
        Value::String(text) => {
            if text.contains('\0') {
                return Err(failing(path, "must not contain NUL characters".into()));
            }
            if let Some(max) = max_chars(&render(path, false)) {
                if text.chars().count() > max {
                    return Err(failing(path, format!("must be at most {max} characters")));
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push(Segment::Index(index));
                check_strings(item, path)?;
                path.pop();
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                if key.contains('\0') || key.chars().count() > DEFAULT_MAX_CHARS {
                    let shown: String = key
                        .chars()
                        .filter(|c| *c != '\0')
                        .take(40)
                        .collect::<String>();
                    return Err(failing(
                        path,
                        format!("field name `{shown}` is not acceptable (NUL or too long)"),
                    ));
                }
                path.push(Segment::Key(key.clone()));
                check_strings(item, path)?;
                path.pop();
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// A deserializer over a parsed body that accepts an object only where the
/// target expects one, and records the path of any error.
struct Strict<'de>(&'de Value);

impl<'de> Strict<'de> {
    fn unexpected(&self) -> Unexpected<'de> {
        match self.0 {
            Value::Null => Unexpected::Unit,
            Value::Bool(b) => Unexpected::Bool(*b),
            Value::Number(_) => Unexpected::Float(0.0),
            Value::String(_) => Unexpected::Str(""),
            Value::Array(_) => Unexpected::Seq,
            Value::Object(_) => Unexpected::Map,
        }
    }
}

impl<'de> Deserializer<'de> for Strict<'de> {
    type Error = BodyError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, BodyError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visitor.visit_seq(Seq {
                iter: items.iter(),
                index: 0,
            }),
            Value::Object(map) => visitor.visit_map(Map {
                iter: map.iter(),
                pending: None,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, BodyError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, BodyError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, BodyError> {
        match self.0 {
            Value::Object(_) => self.deserialize_any(visitor),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, BodyError> {
        match self.0 {
            Value::String(s) => {
                visitor.visit_enum(IntoDeserializer::<BodyError>::into_deserializer(s.as_str()))
            }
            Value::Object(map) if map.len() == 1 => {
                let (variant, value) = map.iter().next().expect("one entry");
                visitor
                    .visit_enum(Enum { variant, value })
                    .map_err(|e| e.at(Segment::Key(variant.clone())))
            }
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

struct Seq<'de> {
    iter: std::slice::Iter<'de, Value>,
    index: usize,
}

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = BodyError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, BodyError> {
        let Some(value) = self.iter.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        seed.deserialize(Strict(value))
            .map(Some)
            .map_err(|e| e.at(Segment::Index(index)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct Map<'de> {
    iter: serde_json::map::Iter<'de>,
    pending: Option<(&'de String, &'de Value)>,
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = BodyError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, BodyError> {
        let Some((key, value)) = self.iter.next() else {
            return Ok(None);
        };
        self.pending = Some((key, value));
        seed.deserialize(BorrowedStrDeserializer::<BodyError>::new(key))
            .map(Some)
            .map_err(|e| e.at(Segment::Key(key.clone())))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, BodyError> {
        let (key, value) = self
            .pending
            .take()
            .ok_or_else(|| BodyError::message("a value without its field"))?;
        seed.deserialize(Strict(value))
            .map_err(|e| e.at(Segment::Key(key.clone())))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct Enum<'de> {
    variant: &'de String,
    value: &'de Value,
}

impl<'de> EnumAccess<'de> for Enum<'de> {
    type Error = BodyError;
    type Variant = Strict<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Strict<'de>), BodyError> {
        let variant = seed.deserialize(BorrowedStrDeserializer::<BodyError>::new(self.variant))?;
        Ok((variant, Strict(self.value)))
    }
}

impl<'de> VariantAccess<'de> for Strict<'de> {
    type Error = BodyError;

    fn unit_variant(self) -> Result<(), BodyError> {
        match self.0 {
            Value::Null => Ok(()),
            _ => Err(de::Error::invalid_type(self.unexpected(), &"null")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, BodyError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, BodyError> {
        self.deserialize_seq(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, BodyError> {
        self.deserialize_struct("", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        items: Vec<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[allow(dead_code)]
        name: String,
        #[allow(dead_code)]
        inner: Option<Inner>,
    }

    fn error(body: &str) -> String {
        parse::<Outer>(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn arrays_are_not_objects_at_any_depth() {
        assert_eq!(error(r#"["x"]"#), "the request body must be a JSON object");
        assert_eq!(
            error(r#"{"name":"x","inner":[["a"]]}"#),
            "inner: expected an object, found an array"
        );
        assert!(parse::<Outer>(br#"{"name":"x","inner":{"items":["a"]}}"#).is_ok());
    }

    #[test]
    fn nul_is_refused_in_values_and_keys_with_the_path() {
        assert_eq!(
            error(r#"{"name":"x","inner":{"items":["a","b\u0000"]}}"#),
            "inner.items[1]: must not contain NUL characters"
        );
        assert!(error("{\"na\\u0000me\":\"x\"}").contains("NUL"));
    }

    #[test]
    fn messages_name_fields_not_types() {
        assert_eq!(
            error(r#"{"name":42}"#),
            "name: expected a string, found an integer"
        );
        assert_eq!(error(r#"{}"#), "name: is required");
        assert!(error(r#"{"name":"x","nmae":1}"#).starts_with("nmae: is not an accepted field"));
        assert_eq!(
            error(r#"{"name":"x","inner":{"items":[1]}}"#),
            "inner.items[0]: expected a string, found an integer"
        );
        let long = "y".repeat(DEFAULT_MAX_CHARS + 1);
        assert_eq!(
            error(&format!(r#"{{"name":"{long}"}}"#)),
            format!("name: must be at most {DEFAULT_MAX_CHARS} characters")
        );
    }
}
