//! An event's payload serialized on its own. Events are adjacently tagged enums
//! (`{"type": "<name>", "payload": {…}}`); the envelope stores the name and the payload
//! apart. [`Payload`] serializes only the payload, through the same serializer, and checks
//! on the way that the tag serde writes is the event's `event_type()`: a payload comes out
//! as JSON by construction, so turning it into a `RawValue` needs no parse to check it (a
//! parse that took ~3% of `semsd`'s instructions per ingested alert).

use serde::{
    Serialize, Serializer,
    ser::{Error as _, Impossible, SerializeStruct},
};

/// `event`'s payload, serialized as the value of its `payload` field; refused when serde's
/// tag for it is not `event_type`, or when it has no payload.
pub(crate) struct Payload<'a, E> {
    pub(crate) event: &'a E,
    pub(crate) event_type: &'static str,
}

impl<E: Serialize> Serialize for Payload<'_, E> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.event.serialize(Fields {
            inner: serializer,
            event_type: self.event_type,
        })
    }
}

/// Refuses every shape an adjacently tagged event does not serialize as.
macro_rules! refuse {
    ($($method:ident($($arg:ty),*) -> $ok:ty;)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$ok, Self::Error> {
            Err(Self::Error::custom("an event serializes as a tagged struct"))
        })*
    };
}

/// Refuses every scalar but strings, and every sequence, tuple and map: neither an event nor
/// its tag is one of those.
macro_rules! refuse_scalars_and_sequences {
    () => {
        refuse! {
            serialize_bool(bool) -> Self::Ok;
            serialize_i8(i8) -> Self::Ok;
            serialize_i16(i16) -> Self::Ok;
            serialize_i32(i32) -> Self::Ok;
            serialize_i64(i64) -> Self::Ok;
            serialize_u8(u8) -> Self::Ok;
            serialize_u16(u16) -> Self::Ok;
            serialize_u32(u32) -> Self::Ok;
            serialize_u64(u64) -> Self::Ok;
            serialize_f32(f32) -> Self::Ok;
            serialize_f64(f64) -> Self::Ok;
            serialize_char(char) -> Self::Ok;
            serialize_bytes(&[u8]) -> Self::Ok;
            serialize_none() -> Self::Ok;
            serialize_unit() -> Self::Ok;
            serialize_unit_struct(&'static str) -> Self::Ok;
            serialize_seq(Option<usize>) -> Self::SerializeSeq;
            serialize_tuple(usize) -> Self::SerializeTuple;
            serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
            serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
            serialize_map(Option<usize>) -> Self::SerializeMap;
            serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
        }
    };
}

/// Takes the tagged struct an event serializes as.
struct Fields<S> {
    inner: S,
    event_type: &'static str,
}

impl<S: Serializer> Serializer for Fields<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Impossible<S::Ok, S::Error>;
    type SerializeTuple = Impossible<S::Ok, S::Error>;
    type SerializeTupleStruct = Impossible<S::Ok, S::Error>;
    type SerializeTupleVariant = Impossible<S::Ok, S::Error>;
    type SerializeMap = Impossible<S::Ok, S::Error>;
    type SerializeStruct = PayloadField<S>;
    type SerializeStructVariant = Impossible<S::Ok, S::Error>;

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Self::Error> {
        Ok(PayloadField {
            inner: Some(self.inner),
            event_type: self.event_type,
            tag_checked: false,
            written: None,
        })
    }

    refuse_scalars_and_sequences!();
    refuse! {
        serialize_str(&str) -> Self::Ok;
        serialize_unit_variant(&'static str, u32, &'static str) -> Self::Ok;
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<Self::Ok, Self::Error> {
        Err(Self::Error::custom(
            "an event serializes as a tagged struct",
        ))
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<Self::Ok, Self::Error> {
        Err(Self::Error::custom(
            "an event serializes as a tagged struct",
        ))
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Self::Ok, Self::Error> {
        Err(Self::Error::custom(
            "an event serializes as a tagged struct",
        ))
    }
}

/// Checks the `type` field and writes the `payload` field's value with the inner serializer.
struct PayloadField<S: Serializer> {
    inner: Option<S>,
    event_type: &'static str,
    tag_checked: bool,
    written: Option<S::Ok>,
}

impl<S: Serializer> SerializeStruct for PayloadField<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        match key {
            "type" => {
                value
                    .serialize(Tag(self.event_type))
                    .map_err(S::Error::custom)?;
                self.tag_checked = true;
                Ok(())
            }
            "payload" => {
                let inner = self
                    .inner
                    .take()
                    .ok_or_else(|| S::Error::custom("an event with two payloads"))?;
                self.written = Some(value.serialize(inner)?);
                Ok(())
            }
            other => Err(S::Error::custom(format!("an event with a field {other}"))),
        }
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        if !self.tag_checked {
            return Err(S::Error::custom("an event without its type"));
        }
        self.written
            .ok_or_else(|| S::Error::custom(format!("event {} has no payload", self.event_type)))
    }
}

/// Checks the tag serde writes for an adjacently tagged event (the variant's name, as a unit
/// variant; as a string too, should a serde version write it so) against the event type.
struct Tag(&'static str);

impl Tag {
    fn check(&self, tag: &str) -> Result<(), TagError> {
        if tag == self.0 {
            Ok(())
        } else {
            Err(TagError(format!(
                "event {} serializes under the tag {tag}",
                self.0
            )))
        }
    }
}

/// Why a tag could not be read.
#[derive(Debug)]
struct TagError(String);

impl std::fmt::Display for TagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TagError {}

impl serde::ser::Error for TagError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

impl Serializer for Tag {
    type Ok = ();
    type Error = TagError;
    type SerializeSeq = Impossible<(), TagError>;
    type SerializeTuple = Impossible<(), TagError>;
    type SerializeTupleStruct = Impossible<(), TagError>;
    type SerializeTupleVariant = Impossible<(), TagError>;
    type SerializeMap = Impossible<(), TagError>;
    type SerializeStruct = Impossible<(), TagError>;
    type SerializeStructVariant = Impossible<(), TagError>;

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), TagError> {
        self.check(variant)
    }

    fn serialize_str(self, tag: &str) -> Result<(), TagError> {
        self.check(tag)
    }

    refuse_scalars_and_sequences!();
    refuse! {
        serialize_struct(&'static str, usize) -> Self::SerializeStruct;
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<Self::Ok, Self::Error> {
        Err(TagError("a tag is a unit variant".into()))
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<Self::Ok, Self::Error> {
        Err(TagError("a tag is a unit variant".into()))
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Self::Ok, Self::Error> {
        Err(TagError("a tag is a unit variant".into()))
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::Payload;

    #[derive(Serialize)]
    #[serde(tag = "type", content = "payload")]
    enum Event {
        Opened {
            title: String,
        },
        #[serde(rename = "Renamed")]
        Closed(u32),
        Unit,
    }

    fn payload(event: &Event, event_type: &'static str) -> Result<String, String> {
        serde_json::to_string(&Payload { event, event_type }).map_err(|e| e.to_string())
    }

    #[test]
    fn writes_the_payload_field_and_checks_the_tag() {
        let opened = Event::Opened {
            title: "a \"b\"".into(),
        };
        assert_eq!(
            payload(&opened, "Opened").unwrap(),
            r#"{"title":"a \"b\""}"#
        );
        let err = payload(&opened, "Closed").unwrap_err();
        assert!(err.contains("serializes under the tag Opened"), "{err}");
        // serde's name for a variant is what is checked, not the Rust one.
        assert_eq!(payload(&Event::Closed(7), "Renamed").unwrap(), "7");
        assert!(payload(&Event::Closed(7), "Closed").is_err());
        let err = payload(&Event::Unit, "Unit").unwrap_err();
        assert!(err.contains("has no payload"), "{err}");
    }
}
