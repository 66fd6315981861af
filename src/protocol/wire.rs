//! The seed's message object as a client sends it, read as Go's
//! `encoding/json` reads it into the seed's struct.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// The seed's message struct, every field optional as in Go (absent = "").
/// Fields borrow from the message unless they hold escapes: no allocation for
/// a plain message (serde's `Option<Cow<str>>` would always allocate a `String`).
///
/// Keys are matched as Go's `encoding/json` matches them: exactly, or else
/// case-insensitively (`messagetype` is `MessageType`); of duplicate keys
/// the last wins, and `null` leaves a field as it was.
#[derive(Default)]
pub(super) struct Wire<'a> {
    pub message_type: Cow<'a, str>,
    pub data: Cow<'a, str>,
    pub reciever: Cow<'a, str>,
    pub sender: Cow<'a, str>,
}

/// The field a key names.
enum Field {
    MessageType,
    Data,
    Reciever,
    Sender,
    Other,
}

impl Field {
    const ALL: [(&'static str, Field); 4] = [
        ("messagetype", Field::MessageType),
        ("data", Field::Data),
        ("reciever", Field::Reciever),
        ("sender", Field::Sender),
    ];

    /// Exact names first (every seed client), then Go's case folding.
    fn of(key: &str) -> Field {
        match key {
            "MessageType" => Field::MessageType,
            "Data" => Field::Data,
            "Reciever" => Field::Reciever,
            "Sender" => Field::Sender,
            _ => Field::ALL.into_iter().find(|(name, _)| folds_to(key, name)).map_or(Field::Other, |(_, f)| f),
        }
    }
}

/// Whether `key` equals the lowercase ASCII `name` under Unicode simple case
/// folding, as Go's `bytes.EqualFold`: besides ASCII case, U+017F (long s)
/// folds to `s` and U+212A (Kelvin sign) to `k`.
fn folds_to(key: &str, name: &str) -> bool {
    let mut chars = key.chars();
    for expected in name.chars() {
        let folded = match chars.next() {
            Some('\u{17F}') => 's',
            Some('\u{212A}') => 'k',
            Some(c) => c.to_ascii_lowercase(),
            None => return false,
        };
        if folded != expected {
            return false;
        }
    }
    chars.next().is_none()
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(Field::of(v))
            }
        }
        d.deserialize_identifier(Key)
    }
}

/// A JSON string, borrowed where it has no escapes, or `None` for `null`.
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Str;
        impl<'de> Visitor<'de> for Str {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or null")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_str(Str)
            }
        }
        d.deserialize_option(Str)
    }
}

impl<'de> Deserialize<'de> for Wire<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Wire<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Wire<'de>, A::Error> {
                let mut wire = Wire::default();
                while let Some(field) = map.next_key::<Field>()? {
                    let slot = match field {
                        Field::MessageType => &mut wire.message_type,
                        Field::Data => &mut wire.data,
                        Field::Reciever => &mut wire.reciever,
                        Field::Sender => &mut wire.sender,
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    if let Text(Some(value)) = map.next_value()? {
                        *slot = value;
                    }
                }
                Ok(wire)
            }
        }
        d.deserialize_map(Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(text: &str) -> Wire<'_> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn keys_match_as_go_matches_them() {
        let w = wire(r#"{"messagetype":"chatmsg","DATA":"hi","reCiever":"bob","sEnDeR":"x"}"#);
        assert_eq!((&*w.message_type, &*w.data, &*w.reciever, &*w.sender), ("chatmsg", "hi", "bob", "x"));
        // U+017F folds to s, as in Go; an escaped key is unescaped first.
        let w = wire(r#"{"Me\u017f\u017fageType":"loginmsg","\u0053ender":"al"}"#);
        assert_eq!((&*w.message_type, &*w.sender), ("loginmsg", "al"));
        // Near misses stay unknown and are ignored.
        let w = wire(r#"{"MessageTypes":"x","Receiver":"bob","Dat":"y"}"#);
        assert_eq!((&*w.message_type, &*w.reciever, &*w.data), ("", "", ""));
    }

    #[test]
    fn the_last_of_duplicate_keys_wins_and_null_changes_nothing() {
        assert_eq!(wire(r#"{"Data":"a","Data":"b"}"#).data, "b");
        assert_eq!(wire(r#"{"Data":"a","data":"b"}"#).data, "b");
        assert_eq!(wire(r#"{"data":"a","Data":"b"}"#).data, "b");
        assert_eq!(wire(r#"{"Data":"a","Data":null}"#).data, "a");
        assert_eq!(wire(r#"{"Data":null}"#).data, "");
    }

    #[test]
    fn exact_plain_fields_are_borrowed() {
        let text = r#"{"MessageType":"chatmsg","Data":"hi","Reciever":"bob","Sender":"al"}"#;
        let w = wire(text);
        for field in [&w.message_type, &w.data, &w.reciever, &w.sender] {
            assert!(matches!(field, Cow::Borrowed(_)));
        }
        assert!(matches!(wire(r#"{"Data":"a\nb"}"#).data, Cow::Owned(_)));
    }

    #[test]
    fn only_objects_of_strings_are_messages() {
        for text in ["[]", "\"x\"", "5", r#"{"Data":5}"#, r#"{"Data":["x"]}"#, r#"{"Data":"a""#] {
            assert!(serde_json::from_str::<Wire<'_>>(text).is_err(), "{text}");
        }
    }
}
