//! How a TOML value becomes a setting: the engine's enums by their
//! snake_case names, human durations, and the keyword (`"auto"`, `"none"`)
//! that stands for a setting's unset default.
//!
//! The engine's types carry no serde attributes; these functions are the
//! whole mapping, used through `deserialize_with` on the settings' fields.

use core::fmt;
use core::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Unexpected, Visitor};

use crate::config::{Backpressure, LaneAssignment};
use crate::shape::{Linger, Oversize};
use crate::wait::WaitStrategy;

/// An engine enum read from its snake_case name.
pub(crate) trait Named: Copy + 'static {
    /// The names, in the order of [`VALUES`](Self::VALUES).
    const NAMES: &'static [&'static str];
    /// The values the names stand for.
    const VALUES: &'static [Self];
}

impl Named for Backpressure {
    const NAMES: &'static [&'static str] = &[
        "block",
        "reject",
        "drop_newest",
        "drop_oldest",
        "increase_batch_size",
    ];
    const VALUES: &'static [Self] = &[
        Backpressure::Block,
        Backpressure::Reject,
        Backpressure::DropNewest,
        Backpressure::DropOldest,
        Backpressure::IncreaseBatchSize,
    ];
}

impl Named for WaitStrategy {
    const NAMES: &'static [&'static str] = &["busy_spin", "yield", "backoff", "park"];
    const VALUES: &'static [Self] = &[
        WaitStrategy::BusySpin,
        WaitStrategy::Yield,
        WaitStrategy::Backoff,
        WaitStrategy::Park,
    ];
}

impl Named for LaneAssignment {
    const NAMES: &'static [&'static str] = &["current_core", "round_robin"];
    const VALUES: &'static [Self] = &[LaneAssignment::CurrentCore, LaneAssignment::RoundRobin];
}

impl Named for Oversize {
    const NAMES: &'static [&'static str] = &["fail", "alone"];
    const VALUES: &'static [Self] = &[Oversize::Fail, Oversize::Alone];
}

#[cfg(feature = "durable")]
impl Named for crate::durable::CorruptTail {
    const NAMES: &'static [&'static str] = &["truncate", "refuse"];
    const VALUES: &'static [Self] = &[
        crate::durable::CorruptTail::Truncate,
        crate::durable::CorruptTail::Refuse,
    ];
}

/// `Some` of the value named by the string.
pub(crate) fn named<'de, D: Deserializer<'de>, T: Named>(d: D) -> Result<Option<T>, D::Error> {
    struct NameVisitor<T>(PhantomData<T>);

    impl<T: Named> Visitor<'_> for NameVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "one of {}", quoted(T::NAMES))
        }

        fn visit_str<E: de::Error>(self, name: &str) -> Result<T, E> {
            T::NAMES
                .iter()
                .position(|&known| known == name)
                .map(|at| T::VALUES[at])
                .ok_or_else(|| E::unknown_variant(name, T::NAMES))
        }
    }

    d.deserialize_str(NameVisitor(PhantomData)).map(Some)
}

/// The names as serde lists them in its messages: `` `a`, `b` or `c` ``.
fn quoted(names: &[&str]) -> String {
    let mut out = String::new();
    for (at, name) in names.iter().enumerate() {
        if at > 0 {
            out.push_str(if at + 1 == names.len() { " or " } else { ", " });
        }
        out.push('`');
        out.push_str(name);
        out.push('`');
    }
    out
}

/// A value a TOML scalar can give: a count, a ratio or a duration.
pub(crate) trait Scalar: Sized {
    /// What the value looks like, for error messages.
    const EXPECTING: &'static str;
    /// Whether a string can give the value (beside the keyword).
    const FROM_STR: bool = false;

    fn from_u64<E: de::Error>(value: u64) -> Result<Self, E> {
        Err(E::invalid_type(
            Unexpected::Unsigned(value),
            &Self::EXPECTING,
        ))
    }

    fn from_i64<E: de::Error>(value: i64) -> Result<Self, E> {
        Err(E::invalid_type(Unexpected::Signed(value), &Self::EXPECTING))
    }

    fn from_f64<E: de::Error>(value: f64) -> Result<Self, E> {
        Err(E::invalid_type(Unexpected::Float(value), &Self::EXPECTING))
    }

    /// Only called where [`FROM_STR`](Self::FROM_STR) holds.
    fn from_str<E: de::Error>(value: &str) -> Result<Self, E> {
        Err(E::invalid_type(Unexpected::Str(value), &Self::EXPECTING))
    }
}

impl Scalar for usize {
    const EXPECTING: &'static str = "a whole number";

    fn from_u64<E: de::Error>(value: u64) -> Result<Self, E> {
        usize::try_from(value)
            .map_err(|_| E::invalid_value(Unexpected::Unsigned(value), &"a count"))
    }

    fn from_i64<E: de::Error>(value: i64) -> Result<Self, E> {
        usize::try_from(value).map_err(|_| E::invalid_value(Unexpected::Signed(value), &"a count"))
    }
}

impl Scalar for u64 {
    const EXPECTING: &'static str = "a whole number";

    fn from_u64<E: de::Error>(value: u64) -> Result<Self, E> {
        Ok(value)
    }

    fn from_i64<E: de::Error>(value: i64) -> Result<Self, E> {
        u64::try_from(value).map_err(|_| E::invalid_value(Unexpected::Signed(value), &"a count"))
    }
}

impl Scalar for f64 {
    const EXPECTING: &'static str = "a number";

    fn from_u64<E: de::Error>(value: u64) -> Result<Self, E> {
        Ok(value as f64)
    }

    fn from_i64<E: de::Error>(value: i64) -> Result<Self, E> {
        Ok(value as f64)
    }

    fn from_f64<E: de::Error>(value: f64) -> Result<Self, E> {
        Ok(value)
    }
}

impl Scalar for Duration {
    const EXPECTING: &'static str = "a duration such as \"2ms\", \"1s\" or \"1m 30s\"";
    const FROM_STR: bool = true;

    fn from_str<E: de::Error>(value: &str) -> Result<Self, E> {
        // humantime refuses a number too large for a `Duration`, so an
        // absurd value is an error here, never a wrapped one.
        humantime::parse_duration(value).map_err(|e| {
            E::custom(format_args!(
                "invalid duration {value:?}: {e}; expected {}",
                Self::EXPECTING
            ))
        })
    }
}

/// `"every_batch"`, `"never"`, or a duration: an `Interval` of it.
#[cfg(feature = "durable")]
impl Scalar for crate::durable::FsyncPolicy {
    const EXPECTING: &'static str = "\"every_batch\", \"never\" or a duration such as \"10ms\"";
    const FROM_STR: bool = true;

    fn from_str<E: de::Error>(value: &str) -> Result<Self, E> {
        use crate::durable::FsyncPolicy;
        match value {
            "every_batch" => Ok(FsyncPolicy::EveryBatch),
            "never" => Ok(FsyncPolicy::Never),
            _ => humantime::parse_duration(value)
                .map(FsyncPolicy::Interval)
                .map_err(|e| {
                    E::custom(format_args!(
                        "invalid fsync policy {value:?}: {e}; expected {}",
                        Self::EXPECTING
                    ))
                }),
        }
    }
}

/// Reads a `T`, or the keyword `word` as `None`.
struct ScalarVisitor<T> {
    word: Option<&'static str>,
    _value: PhantomData<T>,
}

impl<T: Scalar> Visitor<'_> for ScalarVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.word {
            Some(word) => write!(f, "{} or \"{word}\"", T::EXPECTING),
            None => f.write_str(T::EXPECTING),
        }
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        T::from_u64(value).map(Some)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        T::from_i64(value).map(Some)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        T::from_f64(value).map(Some)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        if self.word == Some(value) {
            return Ok(None);
        }
        if T::FROM_STR {
            T::from_str(value).map(Some)
        } else {
            // The message names the keyword, the only string allowed.
            Err(E::invalid_value(Unexpected::Str(value), &self))
        }
    }
}

fn scalar<'de, D: Deserializer<'de>, T: Scalar>(
    d: D,
    word: Option<&'static str>,
) -> Result<Option<T>, D::Error> {
    d.deserialize_any(ScalarVisitor {
        word,
        _value: PhantomData,
    })
}

/// A plain value: a count, a ratio or a duration.
pub(crate) fn value<'de, D: Deserializer<'de>, T: Scalar>(d: D) -> Result<Option<T>, D::Error> {
    scalar(d, None)
}

/// A value, or `"auto"` for the default that follows other settings.
pub(crate) fn or_auto<'de, D: Deserializer<'de>, T: Scalar>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    scalar(d, Some(AUTO)).map(Some)
}

/// A value, or `"none"` for a setting that is off.
pub(crate) fn or_none<'de, D: Deserializer<'de>, T: Scalar>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    scalar(d, Some(NONE)).map(Some)
}

/// The keyword of a default that follows other settings.
pub(crate) const AUTO: &str = "auto";
/// The keyword of a setting that is off.
pub(crate) const NONE: &str = "none";

/// A linger: `"none"`, a duration (fixed), or `{ adaptive = "5ms" }`.
pub(crate) fn linger<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Linger>, D::Error> {
    struct LingerVisitor;

    impl<'de> Visitor<'de> for LingerVisitor {
        type Value = Linger;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("\"none\", a duration such as \"2ms\", or { adaptive = \"5ms\" }")
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<Linger, E> {
            if value == NONE {
                return Ok(Linger::None);
            }
            Duration::from_str(value).map(Linger::Fixed)
        }

        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Linger, M::Error> {
            let mut target = None;
            while let Some(key) = map.next_key::<String>()? {
                if key != "adaptive" {
                    return Err(de::Error::unknown_field(&key, &["adaptive"]));
                }
                if target.is_some() {
                    return Err(de::Error::duplicate_field("adaptive"));
                }
                target = Some(map.next_value::<DurationValue>()?.0);
            }
            target
                .map(|target| Linger::Adaptive { target })
                .ok_or_else(|| de::Error::missing_field("adaptive"))
        }
    }

    d.deserialize_any(LingerVisitor).map(Some)
}

/// One element of a list of scalars.
struct Element<T>(T);

impl<'de, T: Scalar> serde::Deserialize<'de> for Element<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Without a keyword the visitor gives `Some` or an error.
        value::<D, T>(d)?
            .map(Element)
            .ok_or_else(|| de::Error::custom(T::EXPECTING))
    }
}

/// A list of values (`[1, 2, 4]`, `["1ms", "5ms"]`), or `"auto"` for the
/// default list.
pub(crate) fn list_or_auto<'de, D: Deserializer<'de>, T: Scalar>(
    d: D,
) -> Result<Option<Option<Vec<T>>>, D::Error> {
    struct ListVisitor<T>(PhantomData<T>);

    impl<'de, T: Scalar> Visitor<'de> for ListVisitor<T> {
        type Value = Option<Vec<T>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of {}s, or \"{AUTO}\"", T::EXPECTING)
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
            if value == AUTO {
                Ok(None)
            } else {
                Err(E::invalid_value(Unexpected::Str(value), &self))
            }
        }

        fn visit_seq<S: de::SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
            let mut out = Vec::new();
            while let Some(Element(value)) = seq.next_element::<Element<T>>()? {
                out.push(value);
            }
            Ok(Some(out))
        }
    }

    d.deserialize_any(ListVisitor(PhantomData)).map(Some)
}

/// A duration as a value of its own, for a table's entry.
struct DurationValue(Duration);

impl<'de> serde::Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Without a keyword the visitor gives `Some` or an error.
        let duration = value::<D, Duration>(d)?;
        duration
            .map(DurationValue)
            .ok_or_else(|| de::Error::custom(Duration::EXPECTING))
    }
}
