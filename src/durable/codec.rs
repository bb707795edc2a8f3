//! How items become bytes in the store and back.

use core::fmt;

/// Turns items into bytes for the durable store and back.
///
/// [`Postcard`] does it for any `serde` type; [`codec_fn`] takes a pair of
/// functions. Both run on the drainer thread (encode, as a batch is
/// dispatched) and at build (decode, for the replay); a panic in either is
/// contained: an item that cannot be encoded makes its batch non-durable
/// ([`Batch::store_error`](crate::Batch::store_error)), one that cannot be
/// decoded stays in the store and is counted
/// (`DurableStats::decode_errors`).
pub trait Codec<T>: Send + Sync {
    /// Appends `item`'s bytes to `out`.
    ///
    /// # Errors
    ///
    /// Why the item cannot be encoded.
    fn encode(&self, item: &T, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// The item `bytes` encode.
    ///
    /// # Errors
    ///
    /// Why the bytes are not an item.
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// A codec's error: what it says went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError {
    message: String,
}

impl CodecError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        CodecError {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CodecError {}

/// The [`postcard`](https://docs.rs/postcard) format for any `serde` type:
/// compact (variable-length integers, no field names) and stable across
/// its 1.x releases.
///
/// ```
/// use ringbatch::durable::{Codec, Postcard};
///
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct Event { user: u64, name: String }
///
/// let event = Event { user: 7, name: "login".into() };
/// let mut bytes = Vec::new();
/// Postcard.encode(&event, &mut bytes).unwrap();
/// assert_eq!(bytes.len(), 7); // 1 byte for 7, 1 for the length, 5 for the name
/// assert_eq!(Codec::<Event>::decode(&Postcard, &bytes).unwrap(), event);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

impl<T> Codec<T> for Postcard
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    fn encode(&self, item: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let taken = core::mem::take(out);
        match postcard::to_extend(item, taken) {
            Ok(bytes) => {
                *out = bytes;
                Ok(())
            }
            Err(error) => Err(CodecError::new(error.to_string())),
        }
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        postcard::from_bytes(bytes).map_err(|error| CodecError::new(error.to_string()))
    }
}

/// A codec from an encode and a decode function ([`codec_fn`]).
pub struct FnCodec<E, D> {
    encode: E,
    decode: D,
}

impl<E, D> fmt::Debug for FnCodec<E, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnCodec").finish_non_exhaustive()
    }
}

/// A codec from a pair of functions.
///
/// ```
/// use ringbatch::durable::{Codec, CodecError, codec_fn};
///
/// let codec = codec_fn(
///     |x: &u64, out: &mut Vec<u8>| {
///         out.extend_from_slice(&x.to_le_bytes());
///         Ok(())
///     },
///     |bytes: &[u8]| {
///         let bytes: [u8; 8] = bytes.try_into().map_err(|_| CodecError::new("not 8 bytes"))?;
///         Ok(u64::from_le_bytes(bytes))
///     },
/// );
/// let mut out = Vec::new();
/// codec.encode(&42, &mut out).unwrap();
/// assert_eq!(codec.decode(&out).unwrap(), 42);
/// ```
pub fn codec_fn<T, E, D>(encode: E, decode: D) -> FnCodec<E, D>
where
    E: Fn(&T, &mut Vec<u8>) -> Result<(), CodecError> + Send + Sync + 'static,
    D: Fn(&[u8]) -> Result<T, CodecError> + Send + Sync + 'static,
{
    FnCodec { encode, decode }
}

impl<T, E, D> Codec<T> for FnCodec<E, D>
where
    E: Fn(&T, &mut Vec<u8>) -> Result<(), CodecError> + Send + Sync + 'static,
    D: Fn(&[u8]) -> Result<T, CodecError> + Send + Sync + 'static,
{
    fn encode(&self, item: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        (self.encode)(item, out)
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        (self.decode)(bytes)
    }
}
