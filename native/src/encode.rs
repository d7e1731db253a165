//! The full load's hot path: PostgreSQL COPY text rows in, the Avro key and envelope of each
//! row's `r` event out, byte for byte what the Python path (schemas/pg_types.parse_pg_text,
//! then the compiled codec) writes. A value the Python path would refuse or treat in a way
//! not written here answers "fallback" and Python takes the block.

use crate::civil_days;

/// How a column's text becomes its Avro value.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum EncCol {
    Long,
    Float,
    Double,
    Bool,
    Str,
    Bytea,
    Decimal(u32),
    Date,
    Time,
    Timestamp,
    LocalTimestamp,
}

#[derive(Debug)]
pub struct EncPlan {
    pub cols: Vec<EncCol>,
    pub key: Vec<usize>,
}

pub fn parse_enc_spec(spec: &str) -> Option<EncPlan> {
    let mut plan = EncPlan {
        cols: Vec::new(),
        key: Vec::new(),
    };
    for line in spec.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("cols") => {
                for w in words {
                    plan.cols.push(match w {
                        "l" => EncCol::Long,
                        "f" => EncCol::Float,
                        "d" => EncCol::Double,
                        "b" => EncCol::Bool,
                        "s" => EncCol::Str,
                        "y" => EncCol::Bytea,
                        "a" => EncCol::Date,
                        "t" => EncCol::Time,
                        "T" => EncCol::Timestamp,
                        "L" => EncCol::LocalTimestamp,
                        _ => EncCol::Decimal(w.strip_prefix('D')?.parse().ok()?),
                    });
                }
            }
            Some("key") => {
                for w in words {
                    plan.key.push(w.parse().ok()?);
                }
            }
            None => {}
            Some(_) => return None,
        }
    }
    let key_ok = plan.key.iter().all(|&k| k < plan.cols.len());
    (!plan.cols.is_empty() && key_ok).then_some(plan)
}

pub struct Fallback;
type Res<T> = Result<T, Fallback>;

pub(crate) fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n > 0x7F {
        out.push((n as u8 & 0x7F) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

/// A COPY text field without its escapes (PostgreSQL's COPY TO writes only these).
fn unescape<'a>(field: &'a [u8], scratch: &'a mut Vec<u8>) -> Res<&'a [u8]> {
    if !field.contains(&b'\\') {
        return Ok(field);
    }
    scratch.clear();
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' {
            scratch.push(b);
            i += 1;
            continue;
        }
        let next = *field.get(i + 1).ok_or(Fallback)?;
        scratch.push(match next {
            b'\\' => b'\\',
            b'b' => 0x08,
            b'f' => 0x0C,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0B,
            _ => return Err(Fallback),
        });
        i += 2;
    }
    Ok(scratch)
}

fn digits(text: &[u8]) -> Res<i64> {
    if text.is_empty() || text.len() > 18 || !text.iter().all(u8::is_ascii_digit) {
        return Err(Fallback);
    }
    Ok(text.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
}

fn integer(text: &[u8]) -> Res<i64> {
    let (negative, body) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        _ => (false, text),
    };
    if body.is_empty() || body.len() > 19 || !body.iter().all(u8::is_ascii_digit) {
        return Err(Fallback);
    }
    let mut n: i128 = 0;
    for d in body {
        n = n * 10 + i128::from(d - b'0');
    }
    let n = if negative { -n } else { n };
    i64::try_from(n).map_err(|_| Fallback)
}

fn float(text: &[u8]) -> Res<f64> {
    match text {
        b"NaN" => Ok(f64::NAN),
        b"Infinity" => Ok(f64::INFINITY),
        b"-Infinity" => Ok(f64::NEG_INFINITY),
        _ => {
            // Only what float8out/float4out write: digits, sign, point, exponent.
            if !text
                .iter()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(b))
            {
                return Err(Fallback);
            }
            std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or(Fallback)
        }
    }
}

/// `numeric(p,s)` text to fastavro's decimal bytes: the unscaled value in two's complement,
/// big-endian, in (bit length of |value| + 8) / 8 bytes.
fn decimal(out: &mut Vec<u8>, text: &[u8], scale: u32) -> Res<()> {
    let (negative, body) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        _ => (false, text),
    };
    let (int, frac) = match body.iter().position(|&b| b == b'.') {
        Some(at) => (&body[..at], &body[at + 1..]),
        None => (body, &body[body.len()..]),
    };
    let scale = scale as usize;
    if int.is_empty() || frac.len() > scale || int.len() + scale > 38 {
        return Err(Fallback); // NaN, rounding, or more digits than an i128 holds
    }
    let mut unscaled: i128 = 0;
    for &d in int.iter().chain(frac) {
        if !d.is_ascii_digit() {
            return Err(Fallback);
        }
        unscaled = unscaled * 10 + i128::from(d - b'0');
    }
    for _ in frac.len()..scale {
        unscaled *= 10;
    }
    if negative {
        unscaled = -unscaled;
    }
    let bits = 128 - unscaled.unsigned_abs().leading_zeros() as usize;
    let size = (bits + 8) / 8;
    put_long(out, size as i64);
    out.extend_from_slice(&unscaled.to_be_bytes()[16 - size..]);
    Ok(())
}

fn date_days(text: &[u8]) -> Res<i64> {
    // YYYY-MM-DD, years 1..9999 (the Python path refuses BC and five-digit years).
    if text.len() != 10 || text[4] != b'-' || text[7] != b'-' {
        return Err(Fallback);
    }
    let (y, m, d) = (
        digits(&text[..4])?,
        digits(&text[5..7])?,
        digits(&text[8..])?,
    );
    if y < 1 || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(Fallback);
    }
    Ok(civil_days(y, m as u32, d as u32))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// HH:MM:SS[.ffffff] to microseconds of the day; the rest of the text after it.
fn time_micros(text: &[u8]) -> Res<(i64, &[u8])> {
    if text.len() < 8 || text[2] != b':' || text[5] != b':' {
        return Err(Fallback);
    }
    let (h, m, s) = (
        digits(&text[..2])?,
        digits(&text[3..5])?,
        digits(&text[6..8])?,
    );
    if h > 23 || m > 59 || s > 59 {
        return Err(Fallback); // 24:00:00 and leap seconds: Python refuses them
    }
    let mut micros = ((h * 60 + m) * 60 + s) * 1_000_000;
    let mut rest = &text[8..];
    if rest.first() == Some(&b'.') {
        let end = rest[1..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .map_or(rest.len(), |p| p + 1);
        let frac = &rest[1..end];
        if frac.is_empty() || frac.len() > 6 {
            return Err(Fallback);
        }
        let mut value = digits(frac)?;
        for _ in frac.len()..6 {
            value *= 10;
        }
        micros += value;
        rest = &rest[end..];
    }
    Ok((micros, rest))
}

fn timestamp_micros(text: &[u8], with_zone: bool) -> Res<i64> {
    if text.len() < 19 || text[10] != b' ' {
        return Err(Fallback);
    }
    let days = date_days(&text[..10])?;
    let (micros, rest) = time_micros(&text[11..])?;
    let offset = if with_zone {
        zone_seconds(rest)?
    } else if rest.is_empty() {
        0
    } else {
        return Err(Fallback);
    };
    Ok(days * 86_400_000_000 + micros - offset * 1_000_000)
}

/// +HH[:MM[:SS]] or -HH[:MM[:SS]] to seconds east of UTC.
fn zone_seconds(text: &[u8]) -> Res<i64> {
    let sign = match text.first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(Fallback),
    };
    let parts: Vec<&[u8]> = text[1..].split(|&b| b == b':').collect();
    if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.len() != 2) {
        return Err(Fallback);
    }
    let mut seconds = 0;
    for (i, part) in parts.iter().enumerate() {
        seconds += digits(part)? * [3600, 60, 1][i];
    }
    Ok(sign * seconds)
}

fn hex_value(b: u8) -> Res<u8> {
    match b {
        b'0'..=b'9' => Ok(b - b'0'),
        b'a'..=b'f' => Ok(b - b'a' + 10),
        b'A'..=b'F' => Ok(b - b'A' + 10),
        _ => Err(Fallback),
    }
}

/// One column's text (unescaped) as its Avro value, without the union branch.
pub(crate) fn value(out: &mut Vec<u8>, col: EncCol, text: &[u8]) -> Res<()> {
    match col {
        EncCol::Long => put_long(out, integer(text)?),
        EncCol::Float => out.extend_from_slice(&(float(text)? as f32).to_le_bytes()),
        EncCol::Double => out.extend_from_slice(&float(text)?.to_le_bytes()),
        EncCol::Bool => out.push(match text {
            b"t" | b"true" => 1,
            _ => 0,
        }),
        EncCol::Str => {
            std::str::from_utf8(text).map_err(|_| Fallback)?;
            put_bytes(out, text);
        }
        EncCol::Bytea => {
            let hex = text.strip_prefix(b"\\x").ok_or(Fallback)?;
            if hex.len() % 2 != 0 {
                return Err(Fallback);
            }
            put_long(out, (hex.len() / 2) as i64);
            for pair in hex.chunks(2) {
                out.push(hex_value(pair[0])? << 4 | hex_value(pair[1])?);
            }
        }
        EncCol::Decimal(scale) => decimal(out, text, scale)?,
        EncCol::Date => put_long(
            out,
            match text {
                b"infinity" => i64::from(i32::MAX),
                b"-infinity" => i64::from(i32::MIN),
                _ => date_days(text)?,
            },
        ),
        EncCol::Time => {
            let (micros, rest) = time_micros(text)?;
            if !rest.is_empty() {
                return Err(Fallback);
            }
            put_long(out, micros);
        }
        EncCol::Timestamp | EncCol::LocalTimestamp => put_long(
            out,
            match text {
                b"infinity" => i64::MAX,
                b"-infinity" => i64::MIN,
                _ => timestamp_micros(text, col == EncCol::Timestamp)?,
            },
        ),
    }
    Ok(())
}

/// The encoded rows of one block: `buf` holds each row's key then its value; `ends` the
/// end of each key and each value in `buf`.
pub struct Encoded {
    pub buf: Vec<u8>,
    pub ends: Vec<u64>,
    pub rows: u64,
    /// Bytes of the input taken (whole lines only).
    pub consumed: usize,
}

/// Encode the complete lines of `data` (COPY text) as `r` events: key = `key_header` + the
/// key columns; value = `prefix` + [null, row] branch + row + `suffix` (the envelope's
/// `before` is in `prefix`, its `source`, `op`, `ts_ms`, `unavailable` in `suffix`).
pub fn encode_rows(
    plan: &EncPlan,
    data: &[u8],
    key_header: &[u8],
    prefix: &[u8],
    suffix: &[u8],
) -> Result<Encoded, u64> {
    let mut enc = Encoded {
        buf: Vec::with_capacity(data.len() * 2),
        ends: Vec::new(),
        rows: 0,
        consumed: 0,
    };
    let mut fields: Vec<Option<&[u8]>> = Vec::with_capacity(plan.cols.len());
    let mut scratch: Vec<Vec<u8>> = vec![Vec::new(); plan.cols.len()];
    let mut row_bytes = Vec::with_capacity(256);
    let mut start = 0;
    while let Some(len) = data[start..].iter().position(|&b| b == b'\n') {
        let line = &data[start..start + len];
        let row = enc.rows;
        fields.clear();
        for field in line.split(|&b| b == b'\t') {
            fields.push(if field == b"\\N" { None } else { Some(field) });
        }
        if fields.len() != plan.cols.len() {
            return Err(row);
        }
        // Unescaped text of each field (borrowing the line where nothing is escaped).
        let mut texts: Vec<Option<&[u8]>> = Vec::with_capacity(fields.len());
        for (field, scratch) in fields.iter().zip(scratch.iter_mut()) {
            texts.push(match field {
                None => None,
                Some(f) => Some(unescape(f, scratch).map_err(|_| row)?),
            });
        }
        enc.buf.extend_from_slice(key_header);
        for &k in &plan.key {
            let text = texts[k].ok_or(row)?; // a null key: Python says what is wrong
            value(&mut enc.buf, plan.cols[k], text).map_err(|_| row)?;
        }
        enc.ends.push(enc.buf.len() as u64);
        row_bytes.clear();
        for (col, text) in plan.cols.iter().zip(&texts) {
            match text {
                None => row_bytes.push(0),
                Some(t) => {
                    row_bytes.push(2);
                    value(&mut row_bytes, *col, t).map_err(|_| row)?;
                }
            }
        }
        enc.buf.extend_from_slice(prefix);
        enc.buf.push(2);
        enc.buf.extend_from_slice(&row_bytes);
        enc.buf.extend_from_slice(suffix);
        enc.ends.push(enc.buf.len() as u64);
        enc.rows += 1;
        start += len + 1;
    }
    enc.consumed = start;
    Ok(enc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(col: EncCol, text: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        value(&mut out, col, text).ok().map(|_| out)
    }

    #[test]
    fn decimals_as_fastavro() {
        assert_eq!(enc(EncCol::Decimal(2), b"-1.28"), Some(vec![4, 0xFF, 0x80]));
        assert_eq!(enc(EncCol::Decimal(2), b"0.00"), Some(vec![2, 0]));
        assert_eq!(enc(EncCol::Decimal(2), b"1.5"), Some(vec![4, 0, 150]));
        assert!(enc(EncCol::Decimal(2), b"NaN").is_none());
        assert!(enc(EncCol::Decimal(1), b"1.25").is_none());
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            timestamp_micros(b"1970-01-01 00:00:00+00", true).ok(),
            Some(0)
        );
        assert_eq!(
            timestamp_micros(b"1970-01-01 01:00:00.5+01", true).ok(),
            Some(500_000)
        );
        assert_eq!(
            timestamp_micros(b"1969-12-31 23:59:59.999999", false).ok(),
            Some(-1)
        );
        assert!(timestamp_micros(b"0044-03-15 00:00:00 BC", false).is_err());
        assert!(time_micros(b"24:00:00").is_err());
    }

    #[test]
    fn copy_escapes() {
        let mut scratch = Vec::new();
        assert_eq!(
            unescape(b"a\\tb\\\\c\\n", &mut scratch).ok(),
            Some(&b"a\tb\\c\n"[..])
        );
    }
}
