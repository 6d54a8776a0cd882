//! Reading the one or two fields `kpl put --format json` needs from a line, without
//! building the line's JSON tree: the line is checked to be one JSON value all the
//! same, the other fields are skipped, a wanted string borrows from the line
//! unless it holds escapes, and a wanted number is the text it was written with
//! (never read through `f64`: 30 digits stay 30 digits, `-0` stays `-0`).

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A wanted field's value.
#[derive(Debug, PartialEq)]
pub(crate) enum Field<'a> {
    /// A string, unescaped (borrowed from the line when it had no escapes).
    Str(Cow<'a, str>),
    /// A number, as written in the line (borrowed from it).
    Number(Cow<'a, str>),
    /// Anything else (`null`, a boolean, an array, an object).
    Other,
}

/// The wanted fields of one line (the last of each name, as a JSON object keeps).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Picked<'a> {
    /// The field named for the partition key.
    pub(crate) key: Option<Field<'a>>,
    /// The field named for the data.
    pub(crate) data: Option<Field<'a>>,
}

/// Reads `line` as one JSON value and picks the top-level fields named `key` and
/// `data` (a value that is not an object has neither). Errors are `serde_json`'s.
pub(crate) fn pick<'a>(
    line: &'a str,
    key: Option<&str>,
    data: Option<&str>,
) -> Result<Picked<'a>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(line);
    let picked = de.deserialize_any(LineVisitor { line, key, data })?;
    de.end()?;
    Ok(picked)
}

struct LineVisitor<'l, 'n> {
    line: &'l str,
    key: Option<&'n str>,
    data: Option<&'n str>,
}

/// Which wanted field a key names.
struct Which {
    key: bool,
    data: bool,
}

impl<'de> Visitor<'de> for LineVisitor<'de, '_> {
    type Value = Picked<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut picked = Picked::default();
        let mut member = 0;
        while let Some(which) = map.next_key_seed(KeySeed {
            key: self.key,
            data: self.data,
        })? {
            member += 1;
            match which {
                Which {
                    key: false,
                    data: false,
                } => {
                    map.next_value::<IgnoredAny>()?;
                }
                Which { key, data } => {
                    let mut value = map.next_value_seed(FieldSeed)?;
                    if let Field::Number(text) = &mut value {
                        // Valid JSON by now (the deserializer read the value).
                        *text = Cow::Borrowed(member_value(self.line, member - 1));
                    }
                    match (key, data) {
                        (true, true) => {
                            picked.data = Some(value.clone_field());
                            picked.key = Some(value);
                        }
                        (true, false) => picked.key = Some(value),
                        _ => picked.data = Some(value),
                    }
                }
            }
        }
        Ok(picked)
    }

    // Any other value is valid JSON without fields.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Picked::default())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Picked::default())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Picked::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Picked::default())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Picked::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Picked::default())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Picked::default())
    }
}

impl Field<'_> {
    fn clone_field(&self) -> Self {
        match self {
            Field::Str(s) => Field::Str(Cow::Owned(s.to_string())),
            Field::Number(n) => Field::Number(n.clone()),
            Field::Other => Field::Other,
        }
    }
}

/// Compares a key with the wanted names without keeping it.
struct KeySeed<'n> {
    key: Option<&'n str>,
    data: Option<&'n str>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Which;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Which, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Which;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Which, E> {
        Ok(Which {
            key: self.key == Some(v),
            data: self.data == Some(v),
        })
    }
}

/// A wanted field's value, borrowed where it can be.
struct FieldSeed;

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Field<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Field<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(v)))
    }
    // A number's text is taken from the line by the map's visitor, which knows
    // where the value is; the deserializer has checked it (a number out of `f64`'s
    // range is refused as `serde_json::Value` refuses it).
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Field<'de>, E> {
        Ok(Field::Number(Cow::Borrowed("")))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Field<'de>, E> {
        Ok(Field::Number(Cow::Borrowed("")))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Field<'de>, E> {
        Ok(Field::Number(Cow::Borrowed("")))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }
}

/// The text of the value of member `index` (from 0) of the JSON object that is
/// `line`, without the whitespace around it. `line` must be valid JSON: the scan
/// only skips strings and counts brackets.
fn member_value(line: &str, index: usize) -> &str {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let (mut member, mut start) = (0, None);
    for (i, b) in line.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b':' if depth == 1 && member == index && start.is_none() => start = Some(i + 1),
            b',' | b'}' if depth == 1 => {
                if let Some(start) = start {
                    return line[start..i].trim();
                }
                member += 1;
                if b == b'}' {
                    depth -= 1;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// What the picker must agree with: the fields of the whole parsed line.
    fn by_tree(line: &str, name: &str) -> Option<Field<'static>> {
        let value: Value = serde_json::from_str(line).ok()?;
        Some(match value.get(name)? {
            Value::String(s) => Field::Str(Cow::Owned(s.clone())),
            Value::Number(n) => Field::Number(Cow::Owned(n.to_string())),
            _ => Field::Other,
        })
    }

    /// A picked number as the parsed tree writes it (`1e5` is `100000.0` there).
    fn as_the_tree_writes(field: Option<Field<'_>>) -> Option<Field<'static>> {
        Some(match field? {
            Field::Number(text) => Field::Number(Cow::Owned(
                serde_json::from_str::<serde_json::Number>(&text)
                    .unwrap()
                    .to_string(),
            )),
            Field::Str(s) => Field::Str(Cow::Owned(s.into_owned())),
            Field::Other => Field::Other,
        })
    }

    #[test]
    fn picks_what_the_parsed_tree_holds() {
        let lines = [
            r#"{"id":42,"pad":"xx"}"#,
            r#"{"pad":"a\"b\u00e9","id":"k-1"}"#,
            r#"{"id":-7,"id":1.5,"nested":{"id":"no"},"list":[1,{"id":2}]}"#,
            r#"{"id":null,"pad":true}"#,
            r#"{"id":[1,2],"pad":{"a":1}}"#,
            r#"{"id":12345678901234567890,"pad":1.5e300}"#,
            r#"{"id":1e5,"pad":"p"}"#,
            r#"{"other":1}"#,
            r#"[{"id":1}]"#,
            r#""id""#,
            r#"  {"id" : "spaced" , "pad":"p"}  "#,
            r#"{}"#,
        ];
        for line in lines {
            let picked = pick(line, Some("id"), Some("pad")).expect(line);
            assert_eq!(
                as_the_tree_writes(picked.key),
                by_tree(line, "id"),
                "{line}"
            );
            assert_eq!(
                as_the_tree_writes(picked.data),
                by_tree(line, "pad"),
                "{line}"
            );
        }
    }

    #[test]
    fn a_string_without_escapes_is_borrowed_from_the_line() {
        let picked = pick(
            r#"{"id":"plain","pad":"es\"caped"}"#,
            Some("id"),
            Some("pad"),
        )
        .unwrap();
        assert!(matches!(
            picked.key,
            Some(Field::Str(Cow::Borrowed("plain")))
        ));
        assert!(matches!(picked.data, Some(Field::Str(Cow::Owned(ref s))) if s == "es\"caped"));
    }

    #[test]
    fn a_number_keeps_the_text_it_was_written_with() {
        for (line, text) in [
            (
                r#"{"k":123456789012345678901234567890}"#,
                "123456789012345678901234567890",
            ),
            (
                r#"{"k":123456789012345678901234567891}"#,
                "123456789012345678901234567891",
            ),
            (r#"{"k":-0}"#, "-0"),
            (r#"{"k":1.50}"#, "1.50"),
            (r#"{"k":1E5}"#, "1E5"),
            (r#"{"k" : 7 ,"pad":"p"}"#, "7"),
            (
                r#"{"a":{"k":1},"b":[1,"]",{"c":"}"}],"k\u0022":2,"k":-12.5e-3}"#,
                "-12.5e-3",
            ),
            (r#"{"k":1,"x":"\"","k":42}"#, "42"),
        ] {
            let picked = pick(line, Some("k"), Some("k")).expect(line);
            // As `kpl put` makes a partition key of it.
            for field in [picked.key, picked.data] {
                match field {
                    Some(Field::Number(n)) => assert_eq!(n.to_string(), text, "{line}"),
                    other => panic!("{line}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn one_field_for_both_and_none_wanted() {
        let picked = pick(r#"{"id":"x"}"#, Some("id"), Some("id")).unwrap();
        assert_eq!(picked.key, Some(Field::Str("x".into())));
        assert_eq!(picked.data, Some(Field::Str("x".into())));
        assert_eq!(
            pick(r#"{"id":"x"}"#, None, None).unwrap(),
            Picked::default()
        );
    }

    #[test]
    fn what_is_not_one_json_value_is_refused_as_the_tree_refuses_it() {
        for line in [
            r#"{"id":1"#,
            r#"{"id":1} trailing"#,
            r#"{"id":tru}"#,
            r#"{id:1}"#,
            "",
            r#"{"id":1,}"#,
            r#"{"a":[1,2}"#,
            r#"{"id":1e400}"#,
        ] {
            assert!(pick(line, Some("id"), None).is_err(), "{line}");
            assert!(serde_json::from_str::<Value>(line).is_err(), "{line}");
        }
    }
}
