//! The PostgreSQL binary COPY output of the native sink path: the same decode and collapse as
//! the text output (lib.rs), written in `COPY ... (FORMAT binary)` form for target columns of
//! known types.
//!
//! PostgreSQL parses binary fields with each column type's receive function, which skips the
//! text parsing (numeric, timestamptz and date text are the slow ones) and so cuts the
//! server's share of a COPY by a fifth or more. A binary field must be exactly the column
//! type's own format, so the sink passes the target's type name per column and only the
//! pairs below are written; any other pair leaves the table to the text output. Each pair
//! gives the target the value the text output gives it (same checks, same fallbacks: a date
//! outside years 1-9999, an integer out of the column's range, invalid UTF-8 all answer
//! "fallback", and the Python path decides them as before).

use super::{
    civil, collapse_abi, collapse_with, digits_into, unscaled, zigzag, Col, Collapsed, CopyBatch,
    Digits, Fail, HwResult, Plan, Res,
};

/// A target column type this output writes, by its `pg_type.typname`.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Bin {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bool,
    /// text, varchar and bpchar: the receive function checks length and pads as input does.
    Text,
    Json,
    Jsonb,
    Uuid,
    Bytea,
    Numeric,
    Date,
    Time,
    Timestamptz,
    Timestamp,
}

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
const TRAILER: &[u8] = b"\xff\xff";
/// Microseconds and days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
const PG_EPOCH_DAYS: i64 = 10_957;
const DAY_MICROS: i64 = 86_400_000_000;

/// The binary type for a target type name, when the Avro column type `col` can be written
/// as it exactly (the value the text output would give that column).
fn pair(col: Col, typname: &str) -> Option<Bin> {
    let bin = match (col, typname) {
        (Col::Long, "int2") => Bin::Int2,
        (Col::Long, "int4") => Bin::Int4,
        (Col::Long, "int8") => Bin::Int8,
        // A float's text is its widened double's shortest form: float4 parses it back to
        // the float, float8 to the widened double.
        (Col::Float, "float4") => Bin::Float4,
        (Col::Float | Col::Double, "float8") => Bin::Float8,
        (Col::Bool, "bool") => Bin::Bool,
        (Col::Str, "text" | "varchar" | "bpchar") => Bin::Text,
        (Col::Str, "json") => Bin::Json,
        (Col::Str, "jsonb") => Bin::Jsonb,
        (Col::Str, "uuid") => Bin::Uuid,
        (Col::Bytes, "bytea") => Bin::Bytea,
        (Col::Decimal(_), "numeric") => Bin::Numeric,
        (Col::Date, "date") => Bin::Date,
        (Col::Time, "time") => Bin::Time,
        (Col::Timestamp, "timestamptz") => Bin::Timestamptz,
        (Col::LocalTimestamp, "timestamp") => Bin::Timestamp,
        _ => return None,
    };
    Some(bin)
}

/// The binary type of each column of `plan` from the target type names in `types` (one per
/// column, space separated); None when any column has no exact pair.
fn parse_types(plan: &Plan, types: &str) -> Option<Vec<Bin>> {
    let names: Vec<&str> = types.split_whitespace().collect();
    if names.len() != plan.cols.len() {
        return None;
    }
    plan.cols
        .iter()
        .zip(names)
        .map(|(&col, name)| pair(col, name))
        .collect()
}

/// A field: its length, then its bytes, written by `body` (the length is filled in after).
fn field(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>) -> Res<()>) -> Res<()> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out)?;
    let len = i32::try_from(out.len() - at - 4).map_err(|_| Fail::Fallback)?;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn in_years(days: i64) -> Res<()> {
    let (y, _, _) = civil(days);
    if (1..=9999).contains(&y) {
        Ok(())
    } else {
        Err(Fail::Fallback) // the text output's limit (what the Python path can hold)
    }
}

fn utf8(raw: &[u8]) -> Res<&[u8]> {
    match std::str::from_utf8(raw) {
        Ok(_) => Ok(raw),
        Err(_) => Err(Fail::Fallback), // the Python path reports the bad message
    }
}

fn hex(b: u8) -> Res<u8> {
    match b {
        b'0'..=b'9' => Ok(b - b'0'),
        b'a'..=b'f' => Ok(b - b'a' + 10),
        b'A'..=b'F' => Ok(b - b'A' + 10),
        _ => Err(Fail::Fallback),
    }
}

/// A uuid in its 8-4-4-4-12 spelling as 16 bytes; other spellings go to the text output.
fn write_uuid(out: &mut Vec<u8>, text: &[u8]) -> Res<()> {
    if text.len() != 36 || [8, 13, 18, 23].iter().any(|&i| text[i] != b'-') {
        return Err(Fail::Fallback);
    }
    let mut digits = text.iter().filter(|&&b| b != b'-');
    for _ in 0..16 {
        let (hi, lo) = (digits.next(), digits.next());
        match (hi, lo) {
            (Some(&hi), Some(&lo)) => out.push(hex(hi)? << 4 | hex(lo)?),
            _ => return Err(Fail::Fallback),
        }
    }
    Ok(())
}

/// An Avro decimal (unscaled two's complement, `scale` digits after the point) as
/// PostgreSQL's numeric: base-10000 digits aligned on the point, weight, sign, scale.
pub(crate) fn write_numeric(out: &mut Vec<u8>, raw: &[u8], scale: u32) -> Res<()> {
    if scale > 38 {
        return Err(Fail::Fallback);
    }
    let value = unscaled(raw)?;
    // The decimal digits, zero-filled in front: the buffer holds at least scale + 4 of them.
    let mut buf: Digits = [b'0'; 48];
    let at = digits_into(&mut buf, value.unsigned_abs());
    if buf.len() - at > 38 {
        return Err(Fail::Fallback); // past 38 digits, as the text output
    }
    let point = buf.len() - scale as usize;
    // Groups of four digits on either side of the point, the fraction's padded with zeros.
    let group = |from: usize| -> u16 {
        (from..from + 4).fold(0u16, |acc, i| {
            let d = if i < buf.len() { buf[i] - b'0' } else { 0 };
            acc * 10 + u16::from(d)
        })
    };
    let int_groups = (point - at.min(point)).div_ceil(4);
    let frac_groups = (scale as usize).div_ceil(4);
    let mut digits: Vec<u16> = Vec::with_capacity(int_groups + frac_groups);
    for g in (1..=int_groups).rev() {
        digits.push(group(point - 4 * g));
    }
    for g in 0..frac_groups {
        digits.push(group(point + 4 * g));
    }
    // Leading and trailing zero groups are dropped, as PostgreSQL stores numerics.
    let mut weight = int_groups as i32 - 1;
    let lead = digits.iter().take_while(|&&d| d == 0).count();
    weight -= lead as i32;
    let trail = digits[lead..].iter().rev().take_while(|&&d| d == 0).count();
    let digits = &digits[lead..digits.len() - trail];
    let (sign, weight) = match (digits.is_empty(), value < 0) {
        (true, _) => (0u16, 0i32),
        (false, true) => (0x4000, weight),
        (false, false) => (0, weight),
    };
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(scale as u16).to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
    Ok(())
}

fn write_timestamp(out: &mut Vec<u8>, micros: i64) -> Res<()> {
    let pg = match micros {
        i64::MAX | i64::MIN => micros, // infinity and -infinity are the same sentinels
        v => {
            in_years(v.div_euclid(DAY_MICROS))?;
            v - PG_EPOCH_MICROS
        }
    };
    out.extend_from_slice(&pg.to_be_bytes());
    Ok(())
}

fn write_value(out: &mut Vec<u8>, col: Col, bin: Bin, raw: &[u8]) -> Res<()> {
    let float = |raw: &[u8]| -> Res<f32> {
        Ok(f32::from_le_bytes(
            raw.try_into().map_err(|_| Fail::Malformed)?,
        ))
    };
    match bin {
        Bin::Int2 => {
            let v = i16::try_from(zigzag(raw)?).map_err(|_| Fail::Fallback)?;
            out.extend_from_slice(&v.to_be_bytes());
        }
        Bin::Int4 => {
            let v = i32::try_from(zigzag(raw)?).map_err(|_| Fail::Fallback)?;
            out.extend_from_slice(&v.to_be_bytes());
        }
        Bin::Int8 => out.extend_from_slice(&zigzag(raw)?.to_be_bytes()),
        Bin::Float4 => out.extend_from_slice(&float(raw)?.to_be_bytes()),
        Bin::Float8 => {
            let v = if col == Col::Float {
                f64::from(float(raw)?)
            } else {
                f64::from_le_bytes(raw.try_into().map_err(|_| Fail::Malformed)?)
            };
            out.extend_from_slice(&v.to_be_bytes());
        }
        Bin::Bool => out.push(u8::from(raw == [1])),
        Bin::Text | Bin::Json => out.extend_from_slice(utf8(raw)?),
        Bin::Jsonb => {
            out.push(1); // jsonb's binary format version
            out.extend_from_slice(utf8(raw)?);
        }
        Bin::Uuid => write_uuid(out, raw)?,
        Bin::Bytea => out.extend_from_slice(raw),
        Bin::Numeric => match col {
            Col::Decimal(scale) => write_numeric(out, raw, scale)?,
            _ => return Err(Fail::Fallback),
        },
        Bin::Date => {
            let days = zigzag(raw)?;
            let pg = if days == i64::from(i32::MAX) || days == i64::from(i32::MIN) {
                days // infinity and -infinity are the same sentinels
            } else {
                in_years(days)?;
                days - PG_EPOCH_DAYS
            };
            out.extend_from_slice(&(pg as i32).to_be_bytes());
        }
        Bin::Time => {
            let v = zigzag(raw)?;
            if !(0..DAY_MICROS).contains(&v) {
                return Err(Fail::Fallback);
            }
            out.extend_from_slice(&v.to_be_bytes());
        }
        Bin::Timestamptz | Bin::Timestamp => write_timestamp(out, zigzag(raw)?)?,
    }
    Ok(())
}

/// Binary COPY rows `(group, columns...)`; rows of inserts only without the group, as the
/// text output writes them.
fn write_rows(
    c: &Collapsed,
    plan: &Plan,
    bins: &[Bin],
    deleted: i64,
    upserted: i64,
) -> Res<(Vec<u8>, u64, u64)> {
    let mut out = Vec::with_capacity(c.entries.len() * (8 + 16 * plan.cols.len()) + 32);
    out.extend_from_slice(SIGNATURE);
    let (mut upserts, mut deletes) = (0, 0);
    let grouped = c.changed;
    let fields = plan.cols.len() as i16 + i16::from(grouped);
    for entry in &c.entries {
        if entry.delete {
            deletes += 1;
        } else {
            upserts += 1;
        }
        out.extend_from_slice(&fields.to_be_bytes());
        if grouped {
            let group = if entry.delete { deleted } else { upserted };
            let group = i16::try_from(group).map_err(|_| Fail::Fallback)?;
            out.extend_from_slice(&2i32.to_be_bytes());
            out.extend_from_slice(&group.to_be_bytes());
        }
        for (i, (&col, &bin)) in plan.cols.iter().zip(bins).enumerate() {
            let written = !entry.delete || plan.key.contains(&i);
            match c.row(&entry.row)[i] {
                Some(raw) if written => field(&mut out, |out| write_value(out, col, bin, raw))?,
                _ => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
    }
    out.extend_from_slice(TRAILER);
    Ok((out, upserts, deletes))
}

/// Collapse the messages of one partition, in offset order, and write their net changes as
/// binary COPY rows for target columns of the types named in `types`.
pub fn collapse_to_binary(
    plan: &Plan,
    types: &str,
    messages: &[&[u8]],
    deleted_group: i64,
    upsert_group: i64,
) -> Result<CopyBatch, (i32, u64)> {
    let bins = parse_types(plan, types).ok_or((1, 0))?;
    collapse_with(plan, messages, |c| {
        write_rows(c, plan, &bins, deleted_group, upsert_group)
    })
}

unsafe fn text<'a>(ptr: *const u8, len: usize) -> Option<&'a str> {
    if ptr.is_null() {
        return None;
    }
    std::str::from_utf8(std::slice::from_raw_parts(ptr, len)).ok()
}

/// 1 when every column of `plan` can be written in binary for the target type names
/// `types` (space separated, one per column), else 0.
///
/// # Safety
/// `plan` from `hw_plan_new`; `types` readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn hw_binary_ok(plan: *const Plan, types: *const u8, len: usize) -> i32 {
    if plan.is_null() {
        return 0;
    }
    match text(types, len) {
        Some(t) => i32::from(parse_types(&*plan, t).is_some()),
        None => 0,
    }
}

/// `hw_collapse` written as binary COPY rows for the target type names `types`.
///
/// # Safety
/// As `hw_collapse`; `types` readable for `types_len` bytes.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn hw_collapse_binary(
    plan: *const Plan,
    data: *const u8,
    data_len: usize,
    ends: *const u64,
    n: usize,
    deleted_group: i64,
    upsert_group: i64,
    types: *const u8,
    types_len: usize,
) -> *mut HwResult {
    let types = text(types, types_len);
    collapse_abi(
        !plan.is_null() && types.is_some(),
        data,
        data_len,
        ends,
        n,
        |messages| {
            collapse_to_binary(
                &*plan,
                types.unwrap_or(""),
                messages,
                deleted_group,
                upsert_group,
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(unscaled: i128, scale: u32) -> Vec<u8> {
        let mut out = Vec::new();
        write_numeric(&mut out, &unscaled.to_be_bytes(), scale).unwrap();
        out
    }

    fn words(v: &[u8]) -> Vec<i16> {
        v.chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn numeric_groups_align_on_the_point() {
        // 123456.78: groups 12 3456 7800, weight 1, scale 2
        assert_eq!(words(&numeric(12_345_678, 2)), [3, 1, 0, 2, 12, 3456, 7800]);
        // -0.05: one group 500 at weight -1
        assert_eq!(words(&numeric(-5, 2)), [1, -1, 0x4000u16 as i16, 2, 500]);
        // 10000 (scale 0): trailing zero group dropped, weight 1
        assert_eq!(words(&numeric(10_000, 0)), [1, 1, 0, 0, 1]);
        // zero keeps its scale and no digits
        assert_eq!(words(&numeric(0, 3)), [0, 0, 0, 3]);
        // 0.00001234 (scale 8): groups 0000 1234 after the point: weight -2
        assert_eq!(words(&numeric(1234, 8)), [1, -2, 0, 8, 1234]);
    }

    #[test]
    fn uuid_spellings() {
        let mut out = Vec::new();
        write_uuid(&mut out, b"0123abcd-4567-89ef-0123-456789ABCDEF").unwrap();
        assert_eq!(out[..4], [0x01, 0x23, 0xab, 0xcd]);
        assert_eq!(out.len(), 16);
        assert!(write_uuid(&mut out, b"0123abcd456789ef0123456789abcdef").is_err());
    }
}
