//! A UBJSON (Universal Binary JSON) reader, enough for XGBoost's `.ubj` model files.
//!
//! XGBoost writes objects with length-prefixed keys and optimized containers (`$` element
//! type and `#` count), e.g. a tree's `split_conditions` as one typed array of big-endian
//! float32. Decoding yields the same [`serde_json::Value`] tree its JSON format parses to, so
//! one model reader serves both formats. Float32 values are widened to f64 exactly.

use serde_json::{Map, Number, Value};

/// Containers nested deeper than this are refused (a corrupt or hostile file).
const MAX_DEPTH: usize = 128;

/// Decodes one UBJSON value from `bytes`; trailing bytes are an error.
pub fn decode(bytes: &[u8]) -> Result<Value, String> {
    let mut reader = Reader { bytes, at: 0 };
    let value = reader.value(0)?;
    if reader.at != bytes.len() {
        return Err(format!(
            "{} unexpected bytes after the document at offset {}",
            bytes.len() - reader.at,
            reader.at
        ));
    }
    Ok(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "truncated: {n} bytes needed at offset {} of {}",
                self.at,
                self.bytes.len()
            ));
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn marker(&mut self) -> Result<u8, String> {
        // `N` is a no-op marker that may appear anywhere a value may.
        loop {
            let marker = self.take(1)?[0];
            if marker != b'N' {
                return Ok(marker);
            }
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// An integer of the type `marker` (a length or count).
    fn integer(&mut self, marker: u8) -> Result<i64, String> {
        Ok(match marker {
            b'i' => i64::from(i8::from_be_bytes(self.array()?)),
            b'U' => i64::from(u8::from_be_bytes(self.array()?)),
            b'I' => i64::from(i16::from_be_bytes(self.array()?)),
            b'l' => i64::from(i32::from_be_bytes(self.array()?)),
            b'L' => i64::from_be_bytes(self.array()?),
            other => {
                return Err(format!(
                    "expected an integer type at offset {}, found {:?}",
                    self.at - 1,
                    char::from(other)
                ));
            }
        })
    }

    fn length(&mut self) -> Result<usize, String> {
        let marker = self.marker()?;
        let n = self.integer(marker)?;
        let n = usize::try_from(n).map_err(|_| format!("negative length {n}"))?;
        if n > self.bytes.len() - self.at {
            // Every element takes at least one byte: a larger count cannot be real.
            return Err(format!("length {n} at offset {} exceeds the file", self.at));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.length()?;
        let at = self.at;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| format!("invalid UTF-8 in a string at offset {at}"))
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        let marker = self.marker()?;
        self.typed_value(marker, depth)
    }

    fn typed_value(&mut self, marker: u8, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("containers nested deeper than {MAX_DEPTH}"));
        }
        Ok(match marker {
            b'Z' => Value::Null,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            b'i' | b'U' | b'I' | b'l' | b'L' => Value::from(self.integer(marker)?),
            b'd' => float(f64::from(f32::from_be_bytes(self.array()?))),
            b'D' => float(f64::from_be_bytes(self.array()?)),
            b'C' => Value::String(char::from(self.take(1)?[0]).to_string()),
            b'S' => Value::String(self.string()?),
            b'H' => {
                let text = self.string()?;
                serde_json::from_str(&text)
                    .map_err(|_| format!("invalid high-precision number {text:?}"))?
            }
            b'[' => Value::Array(
                self.container(depth, |_, _| Ok(None))
                    .map(|items| items.into_iter().map(|(_, v)| v).collect())?,
            ),
            b'{' => {
                let entries = self.container(depth, |r, _| r.string().map(Some))?;
                let mut map = Map::with_capacity(entries.len());
                for (key, value) in entries {
                    map.insert(key.unwrap_or_default(), value);
                }
                Value::Object(map)
            }
            other => {
                return Err(format!(
                    "unknown UBJSON marker {:?} at offset {}",
                    char::from(other),
                    self.at - 1
                ));
            }
        })
    }

    /// The elements of an array or object (whose opening marker was read); `key` reads an
    /// object's key before each value.
    fn container(
        &mut self,
        depth: usize,
        key: impl Fn(&mut Self, usize) -> Result<Option<String>, String>,
    ) -> Result<Vec<(Option<String>, Value)>, String> {
        let mut element_type = None;
        let mut count = None;
        let mut next = self.marker()?;
        if next == b'$' {
            element_type = Some(self.take(1)?[0]);
            next = self.marker()?;
            if next != b'#' {
                return Err(format!(
                    "a typed container needs a count at offset {}",
                    self.at - 1
                ));
            }
        }
        if next == b'#' {
            count = Some(self.length()?);
        } else {
            self.at -= 1;
        }
        let mut items = Vec::with_capacity(count.unwrap_or(0));
        match count {
            Some(n) => {
                for i in 0..n {
                    let name = key(self, i)?;
                    let value = match element_type {
                        Some(t) => self.typed_value(t, depth + 1)?,
                        None => self.value(depth + 1)?,
                    };
                    items.push((name, value));
                }
            }
            None => loop {
                let closing = self.marker()?;
                if closing == b']' || closing == b'}' {
                    break;
                }
                self.at -= 1;
                let name = key(self, items.len())?;
                items.push((name, self.value(depth + 1)?));
            },
        }
        Ok(items)
    }
}

fn float(value: f64) -> Value {
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_typed_and_untyped_containers() {
        // {"a": [1, 2.5f32], "b": $d#2 [0.5, -1], "s": "hi"}
        let mut bytes = vec![b'{'];
        bytes.extend([b'i', 1, b'a', b'[', b'i', 1, b'd']);
        bytes.extend(2.5f32.to_be_bytes());
        bytes.push(b']');
        bytes.extend([b'i', 1, b'b', b'[', b'$', b'd', b'#', b'i', 2]);
        bytes.extend(0.5f32.to_be_bytes());
        bytes.extend((-1.0f32).to_be_bytes());
        bytes.extend([b'U', 1, b's', b'S', b'i', 2, b'h', b'i', b'}']);
        let value = decode(&bytes).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"a": [1, 2.5], "b": [0.5, -1.0], "s": "hi"})
        );
    }

    #[test]
    fn truncated_input_is_an_error() {
        let error = decode(&[b'[', b'$', b'd', b'#', b'i', 3, 0, 0]).unwrap_err();
        assert!(
            error.contains("exceeds") || error.contains("truncated"),
            "{error}"
        );
        assert!(decode(&[b'{', b'i', 5, b'a']).is_err());
    }
}
