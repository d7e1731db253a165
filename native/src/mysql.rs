//! The MySQL/MariaDB output of the native sink path: the same decode and collapse as the
//! PostgreSQL one (lib.rs), written as the text rows `LOAD DATA LOCAL INFILE` reads (tab
//! separated, `\N` for null, backslash escapes) for the sink's staging table.
//!
//! Each value is written as the Python path binds it for MariaDB (consumers/mysql_target.py
//! and PyMySQL's literals): booleans as 1/0, timestamps as their UTC wall time, uuids in their
//! canonical lower-case form, decimals with exactly their scale. Whatever the Python path
//! would write differently or refuse (PostgreSQL infinities, NaN and infinite floats, a
//! decimal with more digits than its precision, a uuid in another spelling) answers
//! "fallback", so the Python path decides it.

use std::io::Write;

use super::{
    boxed_plan, collapse_abi, collapse_with, free_boxed, parse_spec, push_i64, write_date,
    write_decimal, write_time_of_day, zigzag, Col, Collapsed, Fail, HwResult, Plan, Res,
};

/// How a column's value differs for MySQL from its Avro type alone.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Plain,
    /// A `string` of logicalType uuid: Python rebuilds it as uuid.UUID, then str().
    Uuid,
    /// A decimal of this precision: Python's decoder rounds to it.
    Precision(u32),
}

/// A plan of lib.rs plus how each column is written for MySQL.
#[derive(Debug)]
pub struct MysqlPlan {
    base: Plan,
    kinds: Vec<Kind>,
}

/// The lib.rs spec, plus a line `mysql <kind per column>`: `.` plain, `u` uuid, `p<N>` a
/// decimal of precision N.
fn parse_mysql_spec(spec: &str) -> Option<MysqlPlan> {
    let mut base = String::with_capacity(spec.len());
    let mut kinds = None;
    for line in spec.lines() {
        match line.strip_prefix("mysql") {
            Some(rest) => {
                let mut found = Vec::new();
                for w in rest.split_whitespace() {
                    found.push(match w {
                        "." => Kind::Plain,
                        "u" => Kind::Uuid,
                        _ => Kind::Precision(w.strip_prefix('p')?.parse().ok()?),
                    });
                }
                kinds = Some(found);
            }
            None => {
                base.push_str(line);
                base.push('\n');
            }
        }
    }
    let base = parse_spec(&base)?;
    let kinds = kinds?;
    let fits = kinds.len() == base.cols.len()
        && kinds.iter().zip(&base.cols).all(|(k, c)| match k {
            Kind::Plain => true,
            Kind::Uuid => *c == Col::Str,
            Kind::Precision(p) => matches!(c, Col::Decimal(_)) && *p >= 1,
        });
    fits.then_some(MysqlPlan { base, kinds })
}

/// LOAD DATA's default escapes (FIELDS ESCAPED BY '\\'): the separators, the escape itself,
/// and NUL and CR so the file reads back byte for byte.
fn write_escaped(out: &mut Vec<u8>, text: &[u8]) {
    for &b in text {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0 => out.extend_from_slice(b"\\0"),
            _ => out.push(b),
        }
    }
}

/// A double as PyMySQL binds a Python float: the shortest digits that read back the same
/// value (MariaDB reads the same double from them); NaN and infinities are refused there.
fn write_double(out: &mut Vec<u8>, value: f64) -> Res<()> {
    if !value.is_finite() {
        return Err(Fail::Fallback);
    }
    write!(out, "{value:e}").map_err(|_| Fail::Malformed)
}

/// A uuid in its canonical 8-4-4-4-12 form, lower-cased as str(uuid.UUID(...)) writes it;
/// other spellings Python accepts are left to Python.
fn write_uuid(out: &mut Vec<u8>, raw: &[u8]) -> Res<()> {
    let canonical = raw.len() == 36
        && raw.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if !canonical {
        return Err(Fail::Fallback);
    }
    out.extend(raw.iter().map(u8::to_ascii_lowercase));
    Ok(())
}

fn write_value(out: &mut Vec<u8>, col: Col, kind: Kind, raw: &[u8]) -> Res<()> {
    match col {
        Col::Long => push_i64(out, zigzag(raw)?),
        // The Python decoder reads `byte == 1`; PyMySQL binds True/False as 1/0.
        Col::Bool => out.push(if raw == [1] { b'1' } else { b'0' }),
        Col::Float => {
            let v = f32::from_le_bytes(raw.try_into().map_err(|_| Fail::Malformed)?);
            write_double(out, f64::from(v))?;
        }
        Col::Double => write_double(
            out,
            f64::from_le_bytes(raw.try_into().map_err(|_| Fail::Malformed)?),
        )?,
        Col::Str => {
            if std::str::from_utf8(raw).is_err() {
                return Err(Fail::Fallback); // the Python path reports the bad message
            }
            if kind == Kind::Uuid {
                write_uuid(out, raw)?;
            } else {
                write_escaped(out, raw);
            }
        }
        Col::Bytes => write_escaped(out, raw),
        Col::Decimal(scale) => match kind {
            Kind::Precision(p) => write_decimal(out, raw, scale, p)?,
            _ => return Err(Fail::Fallback),
        },
        Col::Date => match zigzag(raw)? {
            // PostgreSQL's infinities: the Python path binds them as numbers MariaDB refuses.
            v if v == i64::from(i32::MAX) || v == i64::from(i32::MIN) => {
                return Err(Fail::Fallback)
            }
            v => write_date(out, v)?,
        },
        Col::Time => {
            let v = zigzag(raw)?;
            if !(0..86_400_000_000).contains(&v) {
                return Err(Fail::Fallback);
            }
            write_time_of_day(out, v)?;
        }
        // Both as the UTC wall time: DATETIME has no zone (consumers/mysql_target._utc_naive).
        Col::Timestamp | Col::LocalTimestamp => match zigzag(raw)? {
            i64::MAX | i64::MIN => return Err(Fail::Fallback),
            v => {
                write_date(out, v.div_euclid(86_400_000_000))?;
                out.push(b' ');
                write_time_of_day(out, v.rem_euclid(86_400_000_000))?;
            }
        },
    }
    Ok(())
}

fn write_rows(
    c: &Collapsed,
    plan: &MysqlPlan,
    deleted: i64,
    upserted: i64,
) -> Res<(Vec<u8>, u64, u64)> {
    let cols = &plan.base.cols;
    let mut out = Vec::with_capacity(c.entries.len() * (8 + 16 * cols.len()));
    let (mut upserts, mut deletes) = (0, 0);
    for entry in &c.entries {
        if entry.delete {
            deletes += 1;
            push_i64(&mut out, deleted);
        } else {
            upserts += 1;
            push_i64(&mut out, upserted);
        }
        for (i, (&col, &kind)) in cols.iter().zip(&plan.kinds).enumerate() {
            out.push(b'\t');
            let written = !entry.delete || plan.base.key.contains(&i);
            match c.row(&entry.row)[i] {
                Some(raw) if written => write_value(&mut out, col, kind, raw)?,
                _ => out.extend_from_slice(b"\\N"),
            }
        }
        out.push(b'\n');
    }
    Ok((out, upserts, deletes))
}

// --- C ABI ----------------------------------------------------------------------------------

/// A MySQL plan from its text spec; null when the spec is bad.
///
/// # Safety
/// `spec` must point to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn hw_mysql_plan_new(spec: *const u8, len: usize) -> *mut MysqlPlan {
    boxed_plan(spec, len, parse_mysql_spec)
}

/// # Safety
/// `plan` must come from `hw_mysql_plan_new` and not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn hw_mysql_plan_free(plan: *mut MysqlPlan) {
    free_boxed(plan)
}

/// As `hw_collapse`, with LOAD DATA rows in the result's text (free it with
/// `hw_result_free`).
///
/// # Safety
/// `plan` from `hw_mysql_plan_new`; `data` readable for `data_len` bytes; `ends` for `n`.
#[no_mangle]
pub unsafe extern "C" fn hw_collapse_mysql(
    plan: *const MysqlPlan,
    data: *const u8,
    data_len: usize,
    ends: *const u64,
    n: usize,
    deleted_group: i64,
    upsert_group: i64,
) -> *mut HwResult {
    collapse_abi(!plan.is_null(), data, data_len, ends, n, |messages| {
        let plan = &*plan;
        collapse_with(&plan.base, messages, |c| {
            write_rows(c, plan, deleted_group, upsert_group)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zz(v: i64) -> Vec<u8> {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            if z < 0x80 {
                out.push(z as u8);
                return out;
            }
            out.push((z as u8 & 0x7F) | 0x80);
            z >>= 7;
        }
    }

    fn written(col: Col, kind: Kind, raw: &[u8]) -> Res<Vec<u8>> {
        let mut out = Vec::new();
        write_value(&mut out, col, kind, raw).map(|_| out)
    }

    #[test]
    fn spec() {
        let plan =
            parse_mysql_spec("id 7\nsource l\nts 0\ncols l s D2\nkey 0\nmysql . u p12\n").unwrap();
        assert_eq!(
            plan.kinds,
            vec![Kind::Plain, Kind::Uuid, Kind::Precision(12)]
        );
        assert!(parse_mysql_spec("id 7\nsource l\nts 0\ncols l s\nkey 0\n").is_none()); // no kinds
        assert!(parse_mysql_spec("id 7\nsource l\nts 0\ncols l l\nkey 0\nmysql . u\n").is_none());
        assert!(parse_mysql_spec("id 7\nsource l\nts 0\ncols l\nkey 0\nmysql . .\n").is_none());
    }

    #[test]
    fn values() {
        assert_eq!(written(Col::Bool, Kind::Plain, &[1]).unwrap(), b"1");
        assert_eq!(written(Col::Bool, Kind::Plain, &[0]).unwrap(), b"0");
        assert_eq!(
            written(Col::Double, Kind::Plain, &1.5f64.to_le_bytes()).unwrap(),
            b"1.5e0"
        );
        assert_eq!(
            written(Col::Float, Kind::Plain, &1.1f32.to_le_bytes()).unwrap(),
            b"1.100000023841858e0"
        );
        assert!(written(Col::Double, Kind::Plain, &f64::NAN.to_le_bytes()).is_err());
        assert!(written(Col::Double, Kind::Plain, &f64::INFINITY.to_le_bytes()).is_err());
        assert_eq!(
            written(Col::Bytes, Kind::Plain, b"a\t\\\n\0\r").unwrap(),
            b"a\\t\\\\\\n\\0\\r"
        );
        assert_eq!(
            written(Col::Timestamp, Kind::Plain, &zz(-1)).unwrap(),
            b"1969-12-31 23:59:59.999999"
        );
        assert!(written(Col::Timestamp, Kind::Plain, &zz(i64::MAX)).is_err());
        assert!(written(Col::Date, Kind::Plain, &zz(i64::from(i32::MIN))).is_err());
        assert_eq!(
            written(Col::Decimal(2), Kind::Precision(3), &[0xFF, 0x85]).unwrap(),
            b"-1.23"
        );
        assert!(written(Col::Decimal(2), Kind::Precision(2), &[0xFF, 0x85]).is_err());
        let upper = b"0123ABCD-0123-4567-89ab-0123456789AB";
        assert_eq!(
            written(Col::Str, Kind::Uuid, upper).unwrap(),
            b"0123abcd-0123-4567-89ab-0123456789ab"
        );
        assert!(written(
            Col::Str,
            Kind::Uuid,
            b"{0123abcd-0123-4567-89ab-0123456789ab}"
        )
        .is_err());
    }
}
