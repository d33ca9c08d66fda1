//! A small JSON reader for the plugin configs: a tokenizer over the config bytes, with two
//! front ends that accept the same documents and refuse the others with the same messages:
//!
//! - [`from_slice`], what the filters use: each config type reads itself by hand
//!   ([`FromJson`], impls in `configs`) through non-generic helpers of [`Reader`];
//! - [`serde_from_slice`], a `serde::Deserializer` for any `Deserialize` type: the oracle the
//!   hand-written readers are tested against (the config types keep their serde derives for the
//!   builder and the JSON schemas; a derive the wasm never instantiates costs it nothing).
//!
//! Why not `serde_json`: the filters parse one small JSON document per configuration, yet
//! serde_json's reader, its number parsers and the float formatting its error messages link
//! (serde's `Unexpected::Float` Display) cost each wasm module tens of KB (BENCHMARKS.md,
//! "Module size"), and serde's derived visitors tens of KB more ("Suite module size"). Both
//! front ends accept exactly the JSON text grammar (RFC 8259): the same documents parse to the
//! same values as with serde_json. Errors read like serde_json's (`unknown field `x`,
//! expected ... at line 1 column 20`); only their wording for a few invalid-JSON cases
//! differs. One deliberate difference: a struct must be a JSON object (serde_json also takes
//! an array of its field values, a form no sluice config uses).
//!
//! Borrowed strings are handed to visitors without copying when they have no escape.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};

mod configs;

/// Nesting limit of arrays and objects, as serde_json's: a hostile config cannot exhaust the
/// stack.
const MAX_DEPTH: u32 = 128;

/// Why a document was refused, with the line (1-based) and column (bytes consumed on that
/// line) where reading stopped, as serde_json reports them.
///
/// Boxed, so that every `Result<T, Error>` the config types' visitors pass around is one
/// pointer wider than `T` rather than five words: that alone is several KB of the modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(Box<Located>);

/// An [`Error`]'s message and position (`line` 0: not located yet).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Located {
    message: String,
    line: usize,
    column: usize,
}

impl Error {
    fn unlocated(message: String) -> Self {
        Error(Box::new(Located {
            message,
            line: 0,
            column: 0,
        }))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Located {
            message,
            line,
            column,
        } = &*self.0;
        if *line == 0 {
            f.write_str(message)
        } else {
            write!(f, "{message} at line {line} column {column}")
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Error::unlocated(message.to_string())
    }

    // serde's defaults print `Unexpected` with its Display, which formats floats: that alone
    // links core's float formatting (~16 KB) into every module. Same words, no float digits.
    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "invalid type: {}, expected {expected}",
            Describe(unexpected)
        ))
    }

    fn invalid_value(unexpected: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "invalid value: {}, expected {expected}",
            Describe(unexpected)
        ))
    }
}

/// serde's wording of an unexpected value (serde_json's for `null`), floats without digits.
struct Describe<'a>(Unexpected<'a>);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Unexpected::Bool(b) => write!(f, "boolean `{b}`"),
            Unexpected::Unsigned(n) => write!(f, "integer `{n}`"),
            Unexpected::Signed(n) => write!(f, "integer `{n}`"),
            Unexpected::Float(_) => f.write_str("floating point number"),
            Unexpected::Char(c) => write!(f, "character `{c}`"),
            Unexpected::Str(s) => write!(f, "string {s:?}"),
            Unexpected::Bytes(_) => f.write_str("byte array"),
            Unexpected::Unit => f.write_str("null"),
            Unexpected::Option => f.write_str("Option value"),
            Unexpected::NewtypeStruct => f.write_str("newtype struct"),
            Unexpected::Seq => f.write_str("sequence"),
            Unexpected::Map => f.write_str("map"),
            Unexpected::Enum => f.write_str("enum"),
            Unexpected::UnitVariant => f.write_str("unit variant"),
            Unexpected::NewtypeVariant => f.write_str("newtype variant"),
            Unexpected::TupleVariant => f.write_str("tuple variant"),
            Unexpected::StructVariant => f.write_str("struct variant"),
            Unexpected::Other(other) => f.write_str(other),
        }
    }
}

/// Reads a `T` from one JSON document (surrounding whitespace allowed, nothing else) with its
/// hand-written [`FromJson`] reader: what the filters use.
pub fn from_slice<T: FromJson>(input: &[u8]) -> Result<T, Error> {
    let mut reader = Reader::new(input);
    let value = T::read(&mut reader)?;
    reader.end()?;
    Ok(value)
}

/// Deserializes a `T` through serde from one JSON document: the same grammar, values and
/// messages as [`from_slice`] for the config types (the differential tests in `configs` hold
/// both to that), for any `Deserialize` type. The filters do not use it: serde's derived
/// visitors cost each module tens of KB (BENCHMARKS.md, "Suite module size").
pub fn serde_from_slice<'de, T: de::Deserialize<'de>>(input: &'de [u8]) -> Result<T, Error> {
    let mut reader = Reader::new(input);
    let value = T::deserialize(&mut reader).map_err(|e| reader.locate(e))?;
    reader.end()?;
    Ok(value)
}

/// The cursor over the document, for the [`FromJson`] readers.
pub struct Reader<'de> {
    input: &'de [u8],
    pos: usize,
    depth: u32,
}

impl<'de> Reader<'de> {
    fn new(input: &'de [u8]) -> Self {
        Reader {
            input,
            pos: 0,
            depth: MAX_DEPTH,
        }
    }

    /// After the document's value: only whitespace may follow.
    fn end(&mut self) -> Result<(), Error> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters")),
        }
    }

    /// The next byte that is not JSON whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.input.get(self.pos) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    /// Consumes `expected` (after whitespace) or fails with `what`.
    fn expect(&mut self, expected: u8, what: &str) -> Result<(), Error> {
        if self.peek() == Some(expected) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    /// Consumes the literal `word` (`null`, `true`, `false`).
    fn literal(&mut self, word: &[u8]) -> Result<(), Error> {
        if self.input.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error("expected value"))
        }
    }

    /// `message` at the current position.
    fn error(&self, message: &str) -> Error {
        self.locate(Error::unlocated(message.to_owned()))
    }

    /// Adds the current line and column to an error that has none.
    fn locate(&self, mut error: Error) -> Error {
        if error.0.line == 0 {
            let before = self.input.get(..self.pos).unwrap_or(self.input);
            error.0.line = 1 + before.iter().filter(|&&b| b == b'\n').count();
            // Bytes consumed on the line, as serde_json counts (0 before the first byte).
            error.0.column = before.iter().rev().take_while(|&&b| b != b'\n').count();
        }
        error
    }

    fn enter(&mut self) -> Result<(), Error> {
        self.depth = self
            .depth
            .checked_sub(1)
            .ok_or_else(|| self.error("recursion limit exceeded"))?;
        Ok(())
    }

    /// A string whose opening quote is consumed: borrowed from the input when it has no
    /// escape, else unescaped into a new `String`.
    fn string_body(&mut self) -> Result<Text<'de>, Error> {
        let start = self.pos;
        let mut owned: Option<Vec<u8>> = None;
        let mut run = start;
        loop {
            let Some(&b) = self.input.get(self.pos) else {
                return Err(self.error("EOF while parsing a string"));
            };
            match b {
                b'"' => {
                    let tail = self.input.get(run..self.pos).unwrap_or_default();
                    self.pos += 1;
                    return match owned {
                        None => std::str::from_utf8(tail)
                            .map(Text::Borrowed)
                            .map_err(|_| self.error("invalid unicode code point")),
                        Some(mut bytes) => {
                            bytes.extend_from_slice(tail);
                            String::from_utf8(bytes)
                                .map(Text::Owned)
                                .map_err(|_| self.error("invalid unicode code point"))
                        }
                    };
                }
                b'\\' => {
                    let bytes = owned.get_or_insert_with(Vec::new);
                    bytes.extend_from_slice(self.input.get(run..self.pos).unwrap_or_default());
                    self.pos += 1;
                    let escaped = self.escape()?;
                    let mut utf8 = [0; 4];
                    bytes.extend_from_slice(escaped.encode_utf8(&mut utf8).as_bytes());
                    run = self.pos;
                }
                0..=0x1f => {
                    return Err(self.error(
                        "control character (\\u0000-\\u001F) found while parsing a string",
                    ));
                }
                _ => self.pos += 1,
            }
        }
    }

    /// The character of an escape whose backslash is consumed.
    fn escape(&mut self) -> Result<char, Error> {
        let Some(&b) = self.input.get(self.pos) else {
            return Err(self.error("EOF while parsing a string"));
        };
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                if (0xDC00..0xE000).contains(&first) {
                    return Err(self.error("lone trailing surrogate in hex escape"));
                }
                if (0xD800..0xDC00).contains(&first) {
                    if self.input.get(self.pos..self.pos + 2) != Some(b"\\u") {
                        return Err(self.error("lone leading surrogate in hex escape"));
                    }
                    self.pos += 2;
                    let second = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&second) {
                        return Err(self.error("lone leading surrogate in hex escape"));
                    }
                    let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                    char::from_u32(code).ok_or_else(|| self.error("invalid unicode code point"))?
                } else {
                    char::from_u32(first).ok_or_else(|| self.error("invalid unicode code point"))?
                }
            }
            _ => return Err(self.error("invalid escape")),
        })
    }

    fn hex4(&mut self) -> Result<u32, Error> {
        let digits = self
            .input
            .get(self.pos..self.pos + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.error("invalid escape"))?;
        self.pos += 4;
        Ok(digits)
    }

    /// A number per the JSON grammar, as u64, i64 or f64 (integers too large for 64 bits
    /// become f64, as in serde_json).
    fn number(&mut self) -> Result<Token<'de>, Error> {
        let start = self.pos;
        let digits = |r: &mut Self| {
            let from = r.pos;
            while r.input.get(r.pos).is_some_and(u8::is_ascii_digit) {
                r.pos += 1;
            }
            r.pos - from
        };
        let negative = self.input.get(self.pos) == Some(&b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        let int_digits = digits(self);
        if int_digits == 0 {
            return Err(self.error("invalid number"));
        }
        if int_digits > 1 && self.input.get(int_start) == Some(&b'0') {
            return Err(self.error("invalid number"));
        }
        let mut integer = true;
        if self.input.get(self.pos) == Some(&b'.') {
            integer = false;
            self.pos += 1;
            if digits(self) == 0 {
                return Err(self.error("invalid number"));
            }
        }
        if matches!(self.input.get(self.pos), Some(b'e' | b'E')) {
            integer = false;
            self.pos += 1;
            if matches!(self.input.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(self.error("invalid number"));
            }
        }
        // ASCII by construction.
        let text = self
            .input
            .get(start..self.pos)
            .and_then(|t| std::str::from_utf8(t).ok())
            .unwrap_or_default();
        if integer {
            if negative {
                if let Ok(n) = text.parse::<i64>() {
                    return Ok(Token::I64(n));
                }
            } else if let Ok(n) = text.parse::<u64>() {
                return Ok(Token::U64(n));
            }
        }
        Ok(Token::Float(text))
    }

    /// The next value's token: a whole scalar, or the opening of an array or object (consumed).
    /// Not generic, so each visitor's `deserialize_any` is only a dispatch on the token: the
    /// reader's code exists once in the module, not once per config type.
    #[inline(never)]
    fn token(&mut self) -> Result<Token<'de>, Error> {
        let Some(first) = self.peek() else {
            return Err(self.error("EOF while parsing a value"));
        };
        Ok(match first {
            b'n' => {
                self.literal(b"null")?;
                Token::Null
            }
            b't' => {
                self.literal(b"true")?;
                Token::Bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                Token::Bool(false)
            }
            b'"' => {
                self.pos += 1;
                Token::Str(self.string_body()?)
            }
            b'[' | b'{' => {
                self.pos += 1;
                self.enter()?;
                if first == b'[' {
                    Token::SeqStart
                } else {
                    Token::MapStart
                }
            }
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return Err(self.error("expected value")),
        })
    }

    /// After a visited array or object: leaves its nesting level and consumes `close`.
    #[inline(never)]
    fn close(&mut self, close: u8) -> Result<(), Error> {
        self.depth += 1;
        let what = if close == b']' {
            "trailing characters in array"
        } else {
            "trailing characters in object"
        };
        self.expect(close, what)
    }

    /// Before an element or member: whether one follows (consuming the `,` between them); the
    /// container's `close` byte ends it, a `,` before it is a trailing comma.
    #[inline(never)]
    fn has_next(&mut self, close: u8, first: &mut bool) -> Result<bool, Error> {
        if self.peek() == Some(close) {
            return Ok(false);
        }
        if !std::mem::replace(first, false) {
            let what = if close == b']' {
                "expected `,` or `]`"
            } else {
                "expected `,` or `}`"
            };
            self.expect(b',', what)?;
            if self.peek() == Some(close) {
                return Err(self.error("trailing comma"));
            }
        }
        Ok(true)
    }

    /// An object key (the `:` after it is read with the value).
    #[inline(never)]
    fn key(&mut self) -> Result<Text<'de>, Error> {
        self.expect(b'"', "key must be a string")?;
        self.string_body()
    }
}

/// One lexical step of a document.
enum Token<'de> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    /// A number with a fraction or exponent (or an integer beyond 64 bits), as written: it is
    /// converted only by `deserialize_f64`, so modules whose configs have no `f64` field do
    /// not link the float parser (6 KB).
    Float(&'de str),
    Str(Text<'de>),
    /// `[`, consumed.
    SeqStart,
    /// `{`, consumed.
    MapStart,
}

/// A parsed string: borrowed from the input or unescaped.
enum Text<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Text<'_> {
    fn as_str(&self) -> &str {
        match self {
            Text::Borrowed(s) => s,
            Text::Owned(s) => s,
        }
    }

    fn into_string(self) -> String {
        match self {
            Text::Borrowed(s) => s.to_owned(),
            Text::Owned(s) => s,
        }
    }
}

impl<'de> Text<'de> {
    fn visit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Text::Borrowed(s) => visitor.visit_borrowed_str(s),
            Text::Owned(s) => visitor.visit_string(s),
        }
    }
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.token()? {
            Token::Null => visitor.visit_unit(),
            Token::Bool(b) => visitor.visit_bool(b),
            Token::U64(n) => visitor.visit_u64(n),
            Token::I64(n) => visitor.visit_i64(n),
            // Only visitors that refuse floats get here (an `f64` is read through
            // `deserialize_f64`, also inside options, sequences and maps) and IgnoredAny: the
            // value is not needed, and the error never prints it (see `Describe`).
            Token::Float(_) => visitor.visit_f64(0.0),
            Token::Str(text) => text.visit(visitor),
            Token::SeqStart => {
                let value = visitor.visit_seq(Elements {
                    reader: self,
                    first: true,
                })?;
                self.close(b']')?;
                Ok(value)
            }
            Token::MapStart => {
                let value = visitor.visit_map(Entries {
                    reader: self,
                    first: true,
                })?;
                self.close(b'}')?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    /// Externally tagged, as serde_json: `"Unit"` or `{"Variant": value}`.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                match self.string_body()? {
                    Text::Borrowed(s) => visitor.visit_enum(s.into_deserializer()),
                    Text::Owned(s) => visitor.visit_enum(s.into_deserializer()),
                }
            }
            Some(b'{') => {
                self.pos += 1;
                self.enter()?;
                let value = visitor.visit_enum(Variant { reader: self })?;
                self.close(b'}')?;
                Ok(value)
            }
            _ => Err(de::Error::invalid_type(Unexpected::Other("value"), &"enum")),
        }
    }

    // Containers and strings accept only their own token (what serde_json's do): through
    // `deserialize_any`, every struct's visitor would also be instantiated for scalars, only
    // to refuse them, which costs bytes in the module per config type.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.container(visitor, false)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.container(visitor, false)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.container(visitor, true)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.token()? {
            Token::Str(text) => text.visit(visitor),
            other => Err(de::Error::invalid_type(other.unexpected(), &visitor)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.token()? {
            Token::U64(n) => visitor.visit_u64(n),
            Token::I64(n) => visitor.visit_i64(n),
            Token::Float(text) => match parse_decimal(text) {
                Some(f) => visitor.visit_f64(f),
                None => Err(self.error(
                    "number out of range (at most 15 significant digits and an exponent of 22)",
                )),
            },
            other => Err(de::Error::invalid_type(other.unexpected(), &visitor)),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 char bytes byte_buf
        unit unit_struct tuple tuple_struct identifier ignored_any
    }
}

impl<'de> Reader<'de> {
    /// An array (`array`) or an object for its visitor. Structs are objects only: serde_json
    /// also takes a struct as an array of its field values in order, a form nothing writes for
    /// these configs, and whose code (a `visit_seq` per config type) would cost module bytes.
    fn container<V: Visitor<'de>>(&mut self, visitor: V, array: bool) -> Result<V::Value, Error> {
        match self.token()? {
            Token::SeqStart if array => {
                let value = visitor.visit_seq(Elements {
                    reader: self,
                    first: true,
                })?;
                self.close(b']')?;
                Ok(value)
            }
            Token::MapStart if !array => {
                let value = visitor.visit_map(Entries {
                    reader: self,
                    first: true,
                })?;
                self.close(b'}')?;
                Ok(value)
            }
            other => Err(de::Error::invalid_type(other.unexpected(), &visitor)),
        }
    }
}

impl Token<'_> {
    /// The token as serde names a value of the wrong type.
    fn unexpected(&self) -> Unexpected<'_> {
        match self {
            Token::Null => Unexpected::Unit,
            Token::Bool(b) => Unexpected::Bool(*b),
            Token::U64(n) => Unexpected::Unsigned(*n),
            Token::I64(n) => Unexpected::Signed(*n),
            Token::Float(_) => Unexpected::Float(0.0),
            Token::Str(Text::Borrowed(s)) => Unexpected::Str(s),
            Token::Str(Text::Owned(s)) => Unexpected::Str(s),
            Token::SeqStart => Unexpected::Seq,
            Token::MapStart => Unexpected::Map,
        }
    }
}

/// The elements of an array whose `[` is consumed.
struct Elements<'a, 'de> {
    reader: &'a mut Reader<'de>,
    first: bool,
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if !self.reader.has_next(b']', &mut self.first)? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.reader).map(Some)
    }
}

/// The members of an object whose `{` is consumed.
struct Entries<'a, 'de> {
    reader: &'a mut Reader<'de>,
    first: bool,
}

impl<'de> de::MapAccess<'de> for Entries<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if !self.reader.has_next(b'}', &mut self.first)? {
            return Ok(None);
        }
        let key = self.reader.key()?;
        seed.deserialize(Key(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        self.reader.expect(b':', "expected `:`")?;
        seed.deserialize(&mut *self.reader)
    }
}

/// An object key: a string, whatever type the visitor asks for (field names, map keys).
struct Key<'de>(Text<'de>);

impl<'de> de::Deserializer<'de> for Key<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.visit(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// `{"Variant": value}` with its `{` consumed.
struct Variant<'a, 'de> {
    reader: &'a mut Reader<'de>,
}

impl<'a, 'de> de::EnumAccess<'de> for Variant<'a, 'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self), Error> {
        let key = self.reader.key()?;
        let variant = seed.deserialize(Key(key))?;
        self.reader.expect(b':', "expected `:`")?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        de::Deserialize::deserialize(&mut *self.reader)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(&mut *self.reader)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(&mut *self.reader, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(&mut *self.reader, visitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-written readers
// ---------------------------------------------------------------------------------------------

/// A type read from JSON by hand, field by field, on a [`Reader`]: what the filters parse their
/// plugin configs with ([`from_slice`]). The impls (module `configs`) accept the same documents
/// and give the same values and errors as the types' serde derives through
/// [`serde_from_slice`], which the builder and the schemas keep using; a derive that the wasm
/// never instantiates costs the module nothing, whereas each derived visitor it did instantiate
/// cost a few KB (field-identifier visitors, seeds, generic error paths).
///
/// The [`Reader`]'s helpers are not generic, so an impl is little more than a `match` on the
/// field index: the tokenizer, the key lookup and every error message exist once per module.
pub trait FromJson: Sized {
    /// Reads one value, consuming it and nothing after it.
    fn read(reader: &mut Reader<'_>) -> Result<Self, Error>;
}

/// An object being read by a [`FromJson`] impl: [`Reader::object`] opens it,
/// [`Reader::field`] walks its members, [`Reader::end_object`] closes it.
pub struct Object {
    first: bool,
    /// Bit `i`: field `i` of the names list was seen (a duplicate is an error, as serde's).
    seen: u32,
}

impl<'de> Reader<'de> {
    /// `invalid type: <what the token is>, expected <expected>`, where reading stopped.
    #[inline(never)]
    fn invalid_type(&self, token: &Token<'_>, expected: &str) -> Error {
        self.error(&format!(
            "invalid type: {}, expected {expected}",
            Describe(token.unexpected())
        ))
    }

    /// `invalid value: <unexpected>, expected <expected>`, where reading stopped.
    #[inline(never)]
    fn invalid_value(&self, unexpected: Unexpected<'_>, expected: &str) -> Error {
        self.error(&format!(
            "invalid value: {}, expected {expected}",
            Describe(unexpected)
        ))
    }

    /// The opening of an object (a struct's fields); anything else is an `invalid type` error
    /// naming `expecting` (`struct RouterConfig`, as serde's derive words it).
    #[inline(never)]
    pub fn object(&mut self, expecting: &str) -> Result<Object, Error> {
        match self.token()? {
            Token::MapStart => Ok(Object {
                first: true,
                seen: 0,
            }),
            other => Err(self.invalid_type(&other, expecting)),
        }
    }

    /// The next member's index in `names` (its `:` consumed, the value next), or `None` at the
    /// object's end (then [`Reader::end_object`] after the missing-field checks, where serde's
    /// derive makes them). A name not in `names` and a repeated one are errors worded as
    /// serde's (`unknown field `x`, expected one of ...`, `duplicate field `x``).
    #[inline(never)]
    pub fn field(&mut self, object: &mut Object, names: &[&str]) -> Result<Option<usize>, Error> {
        if !self.has_next(b'}', &mut object.first)? {
            return Ok(None);
        }
        let key = self.key()?;
        let key = key.as_str();
        let Some(index) = names.iter().position(|name| *name == key) else {
            return Err(self.error(&format!(
                "unknown field `{key}`, {}",
                Expected {
                    names,
                    none: "there are no fields"
                }
            )));
        };
        // Every config type has fewer than 32 fields.
        let bit = u32::try_from(index)
            .ok()
            .and_then(|i| 1_u32.checked_shl(i))
            .unwrap_or(0);
        if object.seen & bit != 0 {
            return Err(self.error(&format!("duplicate field `{key}`")));
        }
        object.seen |= bit;
        self.expect(b':', "expected `:`")?;
        Ok(Some(index))
    }

    /// After a struct's last member: serde's `missing field `name`` for the first field (in
    /// `names` order, the declaration order serde checks in) whose bit is in `required` but was
    /// not read, then the object's `}`.
    #[inline(never)]
    pub fn end_struct(
        &mut self,
        object: &Object,
        names: &[&str],
        required: u32,
    ) -> Result<(), Error> {
        let lacking = required & !object.seen;
        if lacking != 0 {
            let index = usize::try_from(lacking.trailing_zeros()).unwrap_or(usize::MAX);
            return Err(self.missing(names.get(index).copied().unwrap_or_default()));
        }
        self.close(b'}')
    }

    /// After the value of an enum variant written as `{"name": value}`: the object's `}`.
    #[inline(never)]
    pub fn end_object(&mut self) -> Result<(), Error> {
        self.close(b'}')
    }

    #[inline(never)]
    fn missing(&self, name: &str) -> Error {
        self.error(&format!("missing field `{name}`"))
    }

    /// A custom refusal (a `TryFrom` of a serde `try_from` type), where reading stopped.
    #[inline(never)]
    pub fn refuse(&self, message: &str) -> Error {
        self.error(message)
    }

    /// `true` (consumed) if the next value is `null`: an `Option`'s `None`, as serde reads it.
    #[inline(never)]
    pub fn null(&mut self) -> Result<bool, Error> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// The opening `[` of an array (else `invalid type ... expected a sequence`); then
    /// [`Reader::element`] before each element.
    #[inline(never)]
    pub fn array(&mut self) -> Result<Object, Error> {
        match self.token()? {
            Token::SeqStart => Ok(Object {
                first: true,
                seen: 0,
            }),
            other => Err(self.invalid_type(&other, "a sequence")),
        }
    }

    /// Whether another element follows (its value next); at the end, consumes the `]`.
    #[inline(never)]
    pub fn element(&mut self, array: &mut Object) -> Result<bool, Error> {
        if self.has_next(b']', &mut array.first)? {
            Ok(true)
        } else {
            self.close(b']')?;
            Ok(false)
        }
    }

    /// The opening `{` of a map (else `invalid type ... expected a map`); then
    /// [`Reader::entry`] for each key.
    #[inline(never)]
    pub fn map(&mut self) -> Result<Object, Error> {
        match self.token()? {
            Token::MapStart => Ok(Object {
                first: true,
                seen: 0,
            }),
            other => Err(self.invalid_type(&other, "a map")),
        }
    }

    /// The next key of a map (its `:` consumed, the value next), or `None` after its `}`.
    #[inline(never)]
    pub fn entry(&mut self, map: &mut Object) -> Result<Option<String>, Error> {
        if !self.has_next(b'}', &mut map.first)? {
            self.close(b'}')?;
            return Ok(None);
        }
        let key = self.key()?.into_string();
        self.expect(b':', "expected `:`")?;
        Ok(Some(key))
    }

    /// A string.
    #[inline(never)]
    pub fn string(&mut self) -> Result<String, Error> {
        match self.token()? {
            Token::Str(text) => Ok(text.into_string()),
            other => Err(self.invalid_type(&other, "a string")),
        }
    }

    /// `true` or `false`.
    #[inline(never)]
    pub fn boolean(&mut self) -> Result<bool, Error> {
        match self.token()? {
            Token::Bool(b) => Ok(b),
            other => Err(self.invalid_type(&other, "a boolean")),
        }
    }

    /// An integer in `0..=u32::MAX` (`-0` included, as serde reads it).
    #[inline(never)]
    pub fn u32(&mut self) -> Result<u32, Error> {
        match self.token()? {
            Token::U64(n) => {
                u32::try_from(n).map_err(|_| self.invalid_value(Unexpected::Unsigned(n), "u32"))
            }
            Token::I64(n) => {
                u32::try_from(n).map_err(|_| self.invalid_value(Unexpected::Signed(n), "u32"))
            }
            other => Err(self.invalid_type(&other, "u32")),
        }
    }

    /// A number as the nearest `f64` (decimals through [`parse_decimal`]).
    #[inline(never)]
    pub fn f64(&mut self) -> Result<f64, Error> {
        match self.token()? {
            // As serde's f64 visitor converts integers.
            #[allow(clippy::cast_precision_loss)]
            Token::U64(n) => Ok(n as f64),
            #[allow(clippy::cast_precision_loss)]
            Token::I64(n) => Ok(n as f64),
            Token::Float(text) => parse_decimal(text).ok_or_else(|| {
                self.error(
                    "number out of range (at most 15 significant digits and an exponent of 22)",
                )
            }),
            other => Err(self.invalid_type(&other, "f64")),
        }
    }

    /// The index in `names` of an externally tagged enum's variant, as serde_json writes them:
    /// `"name"` (then `Ok((index, false))`) or `{"name": value}` (`Ok((index, true))`, the `:`
    /// consumed, the value next and [`Reader::end_object`] after it). Errors as serde's.
    #[inline(never)]
    pub fn variant(&mut self, names: &[&str]) -> Result<(usize, bool), Error> {
        let (name, wrapped) = match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                (self.string_body()?, false)
            }
            Some(b'{') => {
                self.pos += 1;
                self.enter()?;
                (self.key()?, true)
            }
            _ => return Err(self.error("invalid type: value, expected enum")),
        };
        let name = name.as_str();
        let Some(index) = names.iter().position(|n| *n == name) else {
            return Err(self.error(&format!(
                "unknown variant `{name}`, {}",
                Expected {
                    names,
                    none: "there are no variants"
                }
            )));
        };
        if wrapped {
            self.expect(b':', "expected `:`")?;
        }
        Ok((index, wrapped))
    }

    /// A newtype variant named by a bare string: serde's refusal.
    #[inline(never)]
    pub fn not_unit_variant(&self) -> Error {
        self.error("invalid type: unit variant, expected newtype variant")
    }

    /// The value of a unit variant written as `{"name": value}`: `null` only.
    #[inline(never)]
    pub fn unit(&mut self) -> Result<(), Error> {
        match self.token()? {
            Token::Null => Ok(()),
            other => Err(self.invalid_type(&other, "unit")),
        }
    }
}

/// serde's list of the expected names (`unknown field`/`unknown variant` messages).
struct Expected<'a> {
    names: &'a [&'a str],
    none: &'a str,
}

impl fmt::Display for Expected<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.names {
            [] => f.write_str(self.none),
            [one] => write!(f, "expected `{one}`"),
            [a, b] => write!(f, "expected `{a}` or `{b}`"),
            names => {
                f.write_str("expected one of ")?;
                for (i, name) in names.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "`{name}`")?;
                }
                Ok(())
            }
        }
    }
}

impl FromJson for String {
    fn read(reader: &mut Reader<'_>) -> Result<Self, Error> {
        reader.string()
    }
}

impl FromJson for bool {
    fn read(reader: &mut Reader<'_>) -> Result<Self, Error> {
        reader.boolean()
    }
}

impl FromJson for u32 {
    fn read(reader: &mut Reader<'_>) -> Result<Self, Error> {
        reader.u32()
    }
}

impl FromJson for f64 {
    fn read(reader: &mut Reader<'_>) -> Result<Self, Error> {
        reader.f64()
    }
}

impl<T: FromJson> FromJson for Option<T> {
    fn read(reader: &mut Reader<'_>) -> Result<Self, Error> {
        if reader.null()? {
            Ok(None)
        } else {
            T::read(reader).map(Some)
        }
    }
}

impl<T: FromJson> FromJson for Vec<T> {
    fn read(reader: &mut Reader<'_>) -> Result<Self, Error> {
        let mut array = reader.array()?;
        let mut values = Vec::new();
        while reader.element(&mut array)? {
            values.push(T::read(reader)?);
        }
        Ok(values)
    }
}

/// Later duplicates of a key replace earlier ones, as serde's `BTreeMap` visitor does.
impl<T: FromJson> FromJson for std::collections::BTreeMap<String, T> {
    fn read(reader: &mut Reader<'_>) -> Result<Self, Error> {
        let mut map = reader.map()?;
        let mut values = Self::new();
        while let Some(key) = reader.entry(&mut map)? {
            values.insert(key, T::read(reader)?);
        }
        Ok(values)
    }
}

/// A JSON decimal number (`-12.5e-3`) as the nearest `f64`, for numbers of at most 15
/// significant digits whose decimal exponent is at most 22 in size: both the digits and the
/// power of ten are then exact `f64`s, so one multiplication or division rounds correctly
/// (Clinger's fast path) and the result equals `str::parse::<f64>`'s. Anything else is `None`.
///
/// Why not `str::parse::<f64>`: it links core's general decimal-to-float algorithm, about
/// 8 KB of every module that reads a float (the fault filter's percentages), and plugin configs
/// never need more than this (a percentage of 0.0001 has one significant digit).
pub fn parse_decimal(text: &str) -> Option<f64> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa_text, exponent) = match rest.find(['e', 'E']) {
        Some(at) => {
            let (m, e) = rest.split_at(at);
            (m, e.get(1..)?.parse::<i32>().ok()?)
        }
        None => (rest, 0),
    };
    let (int, frac) = mantissa_text.split_once('.').unwrap_or((mantissa_text, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let frac_len = i32::try_from(frac.len()).ok()?;
    let mut exponent = exponent.checked_sub(frac_len)?;
    let all_digits = int.bytes().chain(frac.bytes());
    let mut significant: u64 = 0;
    let mut count = 0_u32;
    let mut pending_zeros = 0_i32;
    for b in all_digits {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        if digit == 0 && count == 0 {
            continue; // a leading zero
        }
        if digit == 0 {
            // Trailing zeros move into the exponent unless a non-zero digit follows.
            pending_zeros = pending_zeros.checked_add(1)?;
            continue;
        }
        for _ in 0..pending_zeros {
            significant = significant.checked_mul(10)?;
            count += 1;
        }
        pending_zeros = 0;
        significant = significant.checked_mul(10)?.checked_add(u64::from(digit))?;
        count += 1;
        if count > 15 {
            return None;
        }
    }
    exponent = exponent.checked_add(pending_zeros)?;
    // At most 15 digits: below 2^53, so exact as an f64.
    #[allow(clippy::cast_precision_loss)]
    let digits = significant as f64;
    let value = if significant == 0 {
        0.0
    } else {
        let power = POWERS_OF_TEN.get(usize::try_from(exponent.unsigned_abs()).ok()?)?;
        if exponent < 0 {
            digits / power
        } else {
            digits * power
        }
    };
    Some(if negative { -value } else { value })
}

/// 10^0 ..= 10^22: every one exact in an f64.
const POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Sample {
        name: String,
        #[serde(default)]
        weight: u32,
        ratio: Option<f64>,
        tags: Vec<String>,
        labels: BTreeMap<String, i64>,
        kind: Kind,
        #[serde(default)]
        unit: Option<Kind>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    enum Kind {
        Plain,
        Cluster(String),
        Pair { a: u8, b: bool },
    }

    /// The same documents give the same values as serde_json (which the builder writes with).
    #[test]
    fn agrees_with_serde_json_on_valid_documents() {
        let docs = [
            r#"{"name":"a","weight":7,"ratio":0.25,"tags":[],"labels":{},"kind":"plain"}"#,
            " {\n \"name\" : \"\\u00e9\\n\\\"q\\\" \\ud83d\\ude00/\\/\" , \"ratio\":null,\
             \"tags\":[\"x\",\"y\"],\"labels\":{\"n\":-5,\"m\":0},\"kind\":{\"cluster\":\"c\"},\
             \"unit\":\"plain\"}\n",
            r#"{"name":"","ratio":1e2,"tags":["é"],"labels":{"z":9223372036854775807},"kind":{"pair":{"a":255,"b":true}}}"#,
            r#"{"kind":"plain","labels":{},"tags":[],"name":"b","ratio":-0.5E-1,"weight":4294967295}"#,
        ];
        for doc in docs {
            let ours: Sample = serde_from_slice(doc.as_bytes()).unwrap();
            let theirs: Sample = serde_json::from_str(doc).unwrap();
            assert_eq!(ours, theirs, "{doc}");
        }
    }

    /// Every document serde_json refuses is refused here too.
    #[test]
    fn refuses_what_serde_json_refuses() {
        let ok = r#""name":"a","tags":[],"labels":{},"kind":"plain""#;
        let docs = [
            String::new(),
            "  ".to_owned(),
            format!("{{{ok}}} x"),
            format!("{{{ok},}}"),
            format!("{{{ok},\"extra\":1}}"),
            format!("{{{ok},\"weight\":-1}}"),
            format!("{{{ok},\"weight\":4294967296}}"),
            format!("{{{ok},\"weight\":1.5}}"),
            format!("{{{ok},\"weight\":01}}"),
            format!("{{{ok},\"weight\":1.}}"),
            format!("{{{ok},\"ratio\":\"1\"}}"),
            format!("{{{ok},\"name\":\"dup\"}}"),
            format!("{{{ok},\"unit\":\"nope\"}}"),
            format!("{{{ok},\"unit\":{{\"cluster\":\"c\",\"plain\":null}}}}"),
            r#"{"name":"a\x","tags":[],"labels":{},"kind":"plain"}"#.to_owned(),
            r#"{"name":"\ud800","tags":[],"labels":{},"kind":"plain"}"#.to_owned(),
            "{\"name\":\"a\u{1}\",\"tags\":[],\"labels\":{},\"kind\":\"plain\"}".to_owned(),
            r#"{"name":"a","tags":["x",],"labels":{},"kind":"plain"}"#.to_owned(),
            r#"{"name":"a","tags":[,],"labels":{},"kind":"plain"}"#.to_owned(),
            r#"{"name":"a","tags":[] "labels":{},"kind":"plain"}"#.to_owned(),
            r#"{name:"a"}"#.to_owned(),
            r#"{"name":"a","tags":[],"labels":{},"kind":plain}"#.to_owned(),
            r#"{"name":"a","tags":[],"labels":{},"kind":"plain""#.to_owned(),
            r#"{"name":"a","tags":[],"labels":{"k":1e999},"kind":"plain"}"#.to_owned(),
            r#"{"name":tru,"tags":[],"labels":{},"kind":"plain"}"#.to_owned(),
        ];
        for doc in &docs {
            assert!(
                serde_json::from_str::<Sample>(doc).is_err(),
                "serde_json accepts {doc}"
            );
            let err = serde_from_slice::<Sample>(doc.as_bytes()).unwrap_err();
            assert!(err.0.line >= 1, "{doc}: {err}");
        }
        let invalid_utf8 = b"{\"name\":\"\xff\",\"tags\":[],\"labels\":{},\"kind\":\"plain\"}";
        assert!(serde_from_slice::<Sample>(invalid_utf8).is_err());
    }

    /// serde's messages, with serde_json's position suffix and no float digits.
    #[test]
    fn errors_read_like_serde_json() {
        let err = serde_from_slice::<Sample>(b"{\n  \"nam\": 1}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown field `nam`, expected one of `name`, `weight`, `ratio`, `tags`, \
             `labels`, `kind`, `unit` at line 2 column 7"
        );
        let err = serde_from_slice::<Sample>(br#"{"name": 2.5}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid type: floating point number, expected a string at line 1 column 12"
        );
        let err = serde_from_slice::<u8>(b"300").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value: integer `300`, expected u8 at line 1 column 3"
        );
    }

    /// f64 values parse the same wherever they sit (fields, options, sequences, maps), from
    /// integers too; out-of-range ones are refused like serde_json does.
    #[test]
    fn floats_in_every_position() {
        type Floats = (f64, Option<f64>, Vec<f64>, BTreeMap<String, f64>, f32);
        for doc in [
            r#"[0.1, 2.5e-3, [1, -2, 3.25, 100000000000000000000], {"a": -0.0, "b": 7}, 0.5]"#,
            r#"[100, null, [], {}, 1e-1]"#,
        ] {
            let ours: Floats = serde_from_slice(doc.as_bytes()).unwrap();
            let theirs: Floats = serde_json::from_str(doc).unwrap();
            assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "{doc}");
        }
        for doc in [
            r#"[1e999, null, [], {}, 0]"#,
            r#"[0, null, [-1e400], {}, 0]"#,
        ] {
            assert!(serde_json::from_str::<Floats>(doc).is_err(), "{doc}");
            assert!(serde_from_slice::<Floats>(doc.as_bytes()).is_err(), "{doc}");
        }
    }

    /// The one deliberate difference from serde_json: no struct as an array of field values.
    #[test]
    fn structs_are_objects_only() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Pair {
            a: u8,
            b: bool,
        }
        assert!(serde_json::from_str::<Pair>("[1,true]").is_ok());
        let err = serde_from_slice::<Pair>(b"[1,true]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid type: sequence, expected struct Pair at line 1 column 1"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        let err = serde_from_slice::<de::IgnoredAny>(deep.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
        let fine = "[".repeat(100) + &"]".repeat(100);
        assert!(serde_from_slice::<de::IgnoredAny>(fine.as_bytes()).is_ok());
    }

    /// The fast path gives exactly what `str::parse::<f64>` gives, wherever it answers.
    #[test]
    fn parse_decimal_agrees_with_std() {
        for text in [
            "0",
            "-0",
            "-0.0",
            "1",
            "0.1",
            "0.29",
            "25",
            "33.333333",
            "1e-7",
            "2.5e-5",
            "100.01",
            "123456.789",
            "1e20",
            "100000000000000000000",
            "0.0001",
            "99.9999",
            "5E2",
            "1.5e+3",
            "999999999999999",
            "0.000000000000000000001",
            "-12.5e-3",
            ".5",
            "7.",
        ] {
            let ours = parse_decimal(text).unwrap_or_else(|| panic!("{text}"));
            let std: f64 = text.parse().unwrap();
            assert_eq!(ours.to_bits(), std.to_bits(), "{text}");
        }
        for text in [
            "1e999",
            "-1e400",
            "1234567890123456",
            "0.1234567890123456",
            "",
            "-",
            "1e",
            "1.2.3",
            "abc",
            "1e23",
        ] {
            assert!(parse_decimal(text).is_none(), "{text}");
        }
    }
}
