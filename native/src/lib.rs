//! headwater's native hot path for a PostgreSQL sink.
//!
//! A sink spends most of its time per event in Python: decoding the Avro envelope, building
//! objects, collapsing the batch to one net change per key and formatting COPY rows. For the
//! common case (a keyed table, one schema version, inserts, updates and deletes without
//! TOAST-unchanged columns) this library does all of it over the raw messages of one
//! partition in one call, and returns the COPY text for the sink's staging table.
//!
//! Anything outside that case (a truncate, a keyless table, unchanged TOAST columns, another
//! schema id, a value Python cannot represent either) answers "fallback", and the Python path
//! handles the batch as before: this library never decides a case the Python rules
//! (consumers/batch.py) have not decided the same way.
//!
//! The C ABI is used through ctypes (consumers/native_collapse.py); no Python headers or
//! crates are needed to build it.

use std::borrow::Cow;
use std::collections::HashMap;

pub mod encode;
pub mod frames;
pub mod pgbinary;
pub mod stream;

/// A primitive type of a `source` field (only skipped, except the commit time).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Prim {
    Null,
    Bool,
    Long,
    Float,
    Double,
    Str,
    Bytes,
}

#[derive(Clone, Copy, Debug)]
struct SourceField {
    nullable: bool,
    prim: Prim,
}

/// The Avro type of a row column (every row field is `[null, T]`) and how it is written.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Col {
    Long,
    Float,
    Double,
    Bool,
    Str,
    Bytes,
    Decimal(u32),
    Date,
    Time,
    Timestamp,
    LocalTimestamp,
}

/// One envelope schema: what the sink needs to decode and write its events.
#[derive(Debug)]
pub struct Plan {
    schema_id: u32,
    source: Vec<SourceField>,
    ts_index: usize,
    cols: Vec<Col>,
    key: Vec<usize>,
}

#[derive(Debug, PartialEq)]
enum Fail {
    /// The Python path must handle this batch (an unsupported event or value).
    Fallback,
    /// The bytes do not follow the schema.
    Malformed,
}

type Res<T> = Result<T, Fail>;

fn parse_spec(spec: &str) -> Option<Plan> {
    let mut plan = Plan {
        schema_id: 0,
        source: Vec::new(),
        ts_index: usize::MAX,
        cols: Vec::new(),
        key: Vec::new(),
    };
    let mut seen_id = false;
    for line in spec.lines() {
        let mut words = line.split_whitespace();
        let head = match words.next() {
            Some(h) => h,
            None => continue,
        };
        match head {
            "id" => {
                plan.schema_id = words.next()?.parse().ok()?;
                seen_id = true;
            }
            "source" => {
                for w in words {
                    let (nullable, code) = match w.strip_prefix('?') {
                        Some(rest) => (true, rest),
                        None => (false, w),
                    };
                    let prim = match code {
                        "n" => Prim::Null,
                        "b" => Prim::Bool,
                        "l" => Prim::Long,
                        "f" => Prim::Float,
                        "d" => Prim::Double,
                        "s" => Prim::Str,
                        "y" => Prim::Bytes,
                        _ => return None,
                    };
                    plan.source.push(SourceField { nullable, prim });
                }
            }
            "ts" => plan.ts_index = words.next()?.parse().ok()?,
            "cols" => {
                for w in words {
                    let col = match w {
                        "l" => Col::Long,
                        "f" => Col::Float,
                        "d" => Col::Double,
                        "b" => Col::Bool,
                        "s" => Col::Str,
                        "y" => Col::Bytes,
                        "a" => Col::Date,
                        "t" => Col::Time,
                        "T" => Col::Timestamp,
                        "L" => Col::LocalTimestamp,
                        _ => Col::Decimal(w.strip_prefix('D')?.parse().ok()?),
                    };
                    plan.cols.push(col);
                }
            }
            "key" => {
                for w in words {
                    plan.key.push(w.parse().ok()?);
                }
            }
            _ => return None,
        }
    }
    let ts_ok = plan
        .source
        .get(plan.ts_index)
        .is_some_and(|f| f.prim == Prim::Long && !f.nullable);
    let key_ok = !plan.key.is_empty() && plan.key.iter().all(|&k| k < plan.cols.len());
    let key_types_ok = plan
        .key
        .iter()
        .all(|&k| !matches!(plan.cols[k], Col::Float | Col::Double));
    (seen_id && ts_ok && key_ok && key_types_ok).then_some(plan)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Res<u8> {
        let b = *self.data.get(self.pos).ok_or(Fail::Malformed)?;
        self.pos += 1;
        Ok(b)
    }

    fn long(&mut self) -> Res<i64> {
        let mut result: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            if shift >= 64 {
                return Err(Fail::Malformed);
            }
            result |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Ok((result >> 1) as i64 ^ -((result & 1) as i64))
    }

    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Fail::Malformed)?;
        let slice = self.data.get(self.pos..end).ok_or(Fail::Malformed)?;
        self.pos = end;
        Ok(slice)
    }

    fn sized(&mut self) -> Res<&'a [u8]> {
        let n = self.long()?;
        if n < 0 {
            return Err(Fail::Malformed);
        }
        self.take(n as usize)
    }

    /// The union branch of a `[null, T]`: false for null.
    fn present(&mut self) -> Res<bool> {
        match self.long()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Fail::Malformed),
        }
    }

    fn skip_prim(&mut self, prim: Prim) -> Res<()> {
        match prim {
            Prim::Null => {}
            Prim::Bool => {
                self.byte()?;
            }
            Prim::Long => {
                self.long()?;
            }
            Prim::Float => {
                self.take(4)?;
            }
            Prim::Double => {
                self.take(8)?;
            }
            Prim::Str | Prim::Bytes => {
                self.sized()?;
            }
        }
        Ok(())
    }

    /// The raw bytes of one column value (after its union branch).
    fn col_value(&mut self, col: Col) -> Res<&'a [u8]> {
        let start = self.pos;
        match col {
            Col::Long | Col::Date | Col::Time | Col::Timestamp | Col::LocalTimestamp => {
                self.long()?;
            }
            Col::Bool => {
                self.byte()?;
            }
            Col::Float => {
                self.take(4)?;
            }
            Col::Double => {
                self.take(8)?;
            }
            Col::Str | Col::Bytes | Col::Decimal(_) => {
                return self.sized();
            }
        }
        Ok(&self.data[start..self.pos])
    }
}

/// A decoded row: each column's raw value bytes, None for null.
/// A row's column values: a range of `Collapsed::cells`, where every row read is stored (one
/// allocation per batch instead of one per row).
type Row = std::ops::Range<usize>;

/// One column value of a row, borrowed from its message (None: SQL NULL).
type Cell<'a> = Option<&'a [u8]>;

struct Event {
    op: u8,
    before: Option<Row>,
    after: Option<Row>,
    ts: i64,
}

fn read_row<'a>(r: &mut Reader<'a>, plan: &Plan, cells: &mut Vec<Cell<'a>>) -> Res<Option<Row>> {
    if !r.present()? {
        return Ok(None);
    }
    let start = cells.len();
    for &col in &plan.cols {
        cells.push(if r.present()? {
            Some(r.col_value(col)?)
        } else {
            None
        });
    }
    Ok(Some(start..cells.len()))
}

fn read_event<'a>(message: &'a [u8], plan: &Plan, cells: &mut Vec<Cell<'a>>) -> Res<Event> {
    if message.len() < 5 || message[0] != 0 {
        return Err(Fail::Malformed);
    }
    let schema_id = u32::from_be_bytes([message[1], message[2], message[3], message[4]]);
    if schema_id != plan.schema_id {
        return Err(Fail::Fallback);
    }
    let mut r = Reader {
        data: message,
        pos: 5,
    };
    let before = read_row(&mut r, plan, cells)?;
    let after = read_row(&mut r, plan, cells)?;
    let mut ts = 0;
    for (i, field) in plan.source.iter().enumerate() {
        if field.nullable && !r.present()? {
            continue;
        }
        if i == plan.ts_index {
            ts = r.long()?;
        } else {
            r.skip_prim(field.prim)?;
        }
    }
    let op = match r.sized()? {
        [op @ (b'c' | b'r' | b'u' | b'd')] => *op,
        [b't'] => return Err(Fail::Fallback),
        _ => return Err(Fail::Fallback),
    };
    if r.present()? {
        r.long()?; // ts_ms
    }
    if r.present()? && r.long()? != 0 {
        return Err(Fail::Fallback); // columns an update did not carry: the Python rules merge
    }
    if r.pos != message.len() {
        return Err(Fail::Fallback);
    }
    Ok(Event {
        op,
        before,
        after,
        ts,
    })
}

/// Two values of a key column (a number, date or time) in their type's order.
fn compare_cells(col: Col, a: Cell, b: Cell) -> std::cmp::Ordering {
    let decimal = |raw: &[u8]| unscaled(raw).unwrap_or(0);
    match (a, b, col) {
        (Some(a), Some(b), Col::Decimal(_)) => decimal(a).cmp(&decimal(b)),
        (Some(a), Some(b), _) => zigzag(a).unwrap_or(0).cmp(&zigzag(b).unwrap_or(0)),
        _ => a.cmp(&b),
    }
}

/// The identity of a row: its key column's bytes as they are when the key has one column
/// (no copy), else each key column's length and bytes; None when a key column is null.
fn key_of<'a>(row: &[Cell<'a>], plan: &Plan) -> Option<Cow<'a, [u8]>> {
    if let [k] = plan.key[..] {
        return row[k].map(Cow::Borrowed);
    }
    let mut out = Vec::with_capacity(32);
    for &k in &plan.key {
        let v = row[k]?;
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    Some(Cow::Owned(out))
}

pub(crate) struct Net {
    pub(crate) delete: bool,
    pub(crate) row: Row,
}

/// FxHash (rustc's): keys are this batch's own primary keys, so no defence against
/// flooding is needed, and SipHash was a tenth of the collapse's time.
#[derive(Default)]
pub(crate) struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            self.add(word);
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_u8(&mut self, b: u8) {
        self.add(u64::from(b));
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FxMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

#[derive(Default)]
pub(crate) struct Collapsed<'a> {
    index: FxMap<Cow<'a, [u8]>, usize>,
    pub(crate) cells: Vec<Cell<'a>>,
    pub(crate) entries: Vec<Net>,
    max_ts: Option<i64>,
    /// An update or a delete was seen: the net changes may touch rows the target has.
    changed: bool,
}

impl<'a> Collapsed<'a> {
    fn set(&mut self, key: Cow<'a, [u8]>, delete: bool, row: Row) {
        match self.index.get(&key[..]) {
            Some(&at) => self.entries[at] = Net { delete, row },
            None => {
                self.index.insert(key, self.entries.len());
                self.entries.push(Net { delete, row });
            }
        }
    }

    /// The column values of `row`.
    pub(crate) fn row(&self, row: &Row) -> &[Cell<'a>] {
        &self.cells[row.clone()]
    }

    /// Order the net changes by key, as the target's primary key index orders them: the
    /// target then finds the rows of an update or delete batch page after page instead of
    /// at random (measured: a third off PostgreSQL's upsert of 36k random existing keys).
    /// Only keys of numbers, dates and times, which a target compares as this does: two
    /// strings a target's collation holds equal ('a' and 'A' in MariaDB's default) must
    /// stay in the order the Python path applies them, the last seen last.
    fn sort_by_key(&mut self, plan: &Plan) {
        let exact = |k: &usize| {
            matches!(
                plan.cols[*k],
                Col::Long
                    | Col::Date
                    | Col::Time
                    | Col::Timestamp
                    | Col::LocalTimestamp
                    | Col::Decimal(_)
            )
        };
        if !plan.key.iter().all(exact) {
            return;
        }
        let cells = &self.cells;
        if let [k] = plan.key[..] {
            if !matches!(plan.cols[k], Col::Decimal(_)) {
                // A key cell of these types was read as a long: it decodes.
                let number = |n: &Net| cells[n.row.start + k].map_or(0, |c| zigzag(c).unwrap_or(0));
                self.entries.sort_by_cached_key(number);
                return;
            }
        }
        self.entries.sort_by(|a, b| {
            let (a, b) = (&cells[a.row.clone()], &cells[b.row.clone()]);
            plan.key
                .iter()
                .map(|&k| compare_cells(plan.cols[k], a[k], b[k]))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    }

    /// The rules of consumers/batch.py for full rows: last write wins, an update that moves
    /// the key deletes the old one.
    fn add(&mut self, event: Event, plan: &Plan) -> Res<()> {
        self.max_ts = Some(self.max_ts.map_or(event.ts, |m| m.max(event.ts)));
        self.changed |= matches!(event.op, b'u' | b'd');
        if event.op == b'd' {
            let before = event.before.ok_or(Fail::Fallback)?;
            let key = key_of(self.row(&before), plan).ok_or(Fail::Fallback)?;
            self.set(key, true, before);
            return Ok(());
        }
        let after = event.after.ok_or(Fail::Fallback)?;
        let key = key_of(self.row(&after), plan).ok_or(Fail::Fallback)?;
        if event.op == b'u' {
            if let Some(before) = event.before {
                if let Some(old) = key_of(self.row(&before), plan) {
                    if old != key {
                        self.set(old, true, before);
                    }
                }
            }
        }
        self.set(key, false, after);
        Ok(())
    }
}

// --- COPY text -------------------------------------------------------------------------------

fn write_escaped(out: &mut Vec<u8>, text: &[u8]) {
    // Runs without a byte to escape are copied whole: most text has none.
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0B => b"\\v",
            0x0C => b"\\f",
            _ => continue,
        };
        out.extend_from_slice(&text[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&text[start..]);
}

fn zigzag(raw: &[u8]) -> Res<i64> {
    Reader { data: raw, pos: 0 }.long()
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) to days since 1970-01-01, the inverse of `civil`.
pub fn civil_days(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// Numbers are written by hand: core::fmt (write!) was a fifth of the collapse's time.

/// Room for the digits of any u128 (39), with zeros to pad a decimal's fraction in front.
type Digits = [u8; 48];

/// The decimal digits of `v` at the end of `buf` (zeros before them); where they start.
/// In u64 arithmetic where `v` fits: a u128 division is a library call, and per digit it
/// made integers and timestamps the bulk of a row's cost.
fn digits_into(buf: &mut Digits, v: u128) -> usize {
    let mut at = buf.len();
    let mut small = match u64::try_from(v) {
        Ok(small) => small,
        Err(_) => {
            let mut v = v;
            while v > u128::from(u64::MAX) {
                at -= 1;
                buf[at] = b'0' + (v % 10) as u8;
                v /= 10;
            }
            v as u64
        }
    };
    loop {
        at -= 1;
        buf[at] = b'0' + (small % 10) as u8;
        small /= 10;
        if small == 0 {
            return at;
        }
    }
}

/// The decimal digits of `v`.
pub(crate) fn push_u128(out: &mut Vec<u8>, v: u128) {
    let mut buf: Digits = [b'0'; 48];
    let at = digits_into(&mut buf, v);
    out.extend_from_slice(&buf[at..]);
}

/// `v` in decimal, with a minus sign when negative.
pub(crate) fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u128(out, u128::from(v.unsigned_abs()));
}

/// `v` (non-negative) zero-padded to `width` digits (more when it has more).
pub(crate) fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buf: Digits = [b'0'; 48];
    let at = digits_into(&mut buf, u128::from(v));
    out.extend_from_slice(&buf[at.min(buf.len().saturating_sub(width))..]);
}

pub(crate) fn write_date(out: &mut Vec<u8>, days: i64) -> Res<()> {
    let (y, m, d) = civil(days);
    if !(1..=9999).contains(&y) {
        return Err(Fail::Fallback); // outside what the Python path can hold
    }
    push_padded(out, y as u64, 4);
    out.push(b'-');
    push_padded(out, u64::from(m), 2);
    out.push(b'-');
    push_padded(out, u64::from(d), 2);
    Ok(())
}

pub(crate) fn write_time_of_day(out: &mut Vec<u8>, micros: i64) -> Res<()> {
    if micros < 0 {
        return Err(Fail::Malformed);
    }
    let micros = micros as u64;
    let secs = micros / 1_000_000;
    push_padded(out, secs / 3600, 2);
    out.push(b':');
    push_padded(out, secs / 60 % 60, 2);
    out.push(b':');
    push_padded(out, secs % 60, 2);
    out.push(b'.');
    push_padded(out, micros % 1_000_000, 6);
    Ok(())
}

/// An Avro decimal's unscaled value (big-endian two's complement); a fallback past 128 bits.
pub(crate) fn unscaled(raw: &[u8]) -> Res<i128> {
    if raw.len() > 16 {
        return Err(Fail::Fallback);
    }
    let negative = raw.first().is_some_and(|b| b & 0x80 != 0);
    let init: i128 = if negative { -1 } else { 0 };
    Ok(raw.iter().fold(init, |v, &b| (v << 8) | i128::from(b)))
}

/// The unscaled two's-complement `raw` as decimal text with `scale` digits after the point;
/// a fallback past `max_digits` (Python's decoder would round it to the precision).
pub(crate) fn write_decimal(out: &mut Vec<u8>, raw: &[u8], scale: u32, max_digits: u32) -> Res<()> {
    let value = unscaled(raw)?;
    let mut buf: Digits = [b'0'; 48];
    let at = digits_into(&mut buf, value.unsigned_abs());
    if buf.len() - at > max_digits as usize {
        return Err(Fail::Fallback);
    }
    if value < 0 {
        out.push(b'-');
    }
    let scale = scale as usize;
    if scale >= buf.len() {
        return Err(Fail::Fallback);
    }
    if scale == 0 {
        out.extend_from_slice(&buf[at..]);
    } else {
        // At least one digit before the point: the buffer is zeros in front of the digits.
        let start = at.min(buf.len().saturating_sub(scale + 1));
        let (int, frac) = buf[start..].split_at(buf.len() - start - scale);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    }
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_float(out: &mut Vec<u8>, value: f64, text: String) {
    if value.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 {
            b"Infinity"
        } else {
            b"-Infinity"
        });
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

fn write_value(out: &mut Vec<u8>, col: Col, raw: &[u8]) -> Res<()> {
    match col {
        Col::Long => push_i64(out, zigzag(raw)?),
        Col::Bool => out.push(if raw == [1] { b't' } else { b'f' }),
        Col::Float => {
            let v = f32::from_le_bytes(raw.try_into().map_err(|_| Fail::Malformed)?);
            // As the Python path writes it: the float widened to a double, in its shortest form.
            let wide = f64::from(v);
            write_float(out, wide, wide.to_string());
        }
        Col::Double => {
            let v = f64::from_le_bytes(raw.try_into().map_err(|_| Fail::Malformed)?);
            write_float(out, v, v.to_string());
        }
        Col::Str => {
            if std::str::from_utf8(raw).is_err() {
                return Err(Fail::Fallback); // the Python path reports the bad message
            }
            write_escaped(out, raw);
        }
        Col::Bytes => {
            out.extend_from_slice(b"\\\\x");
            for &b in raw {
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xF)]);
            }
        }
        Col::Decimal(scale) => write_decimal(out, raw, scale, 38)?,
        Col::Date => match zigzag(raw)? {
            v if v == i64::from(i32::MAX) => out.extend_from_slice(b"infinity"),
            v if v == i64::from(i32::MIN) => out.extend_from_slice(b"-infinity"),
            v => write_date(out, v)?,
        },
        Col::Time => {
            let v = zigzag(raw)?;
            if !(0..86_400_000_000).contains(&v) {
                return Err(Fail::Fallback);
            }
            write_time_of_day(out, v)?;
        }
        Col::Timestamp | Col::LocalTimestamp => match zigzag(raw)? {
            i64::MAX => out.extend_from_slice(b"infinity"),
            i64::MIN => out.extend_from_slice(b"-infinity"),
            v => {
                write_date(out, v.div_euclid(86_400_000_000))?;
                out.push(b' ');
                write_time_of_day(out, v.rem_euclid(86_400_000_000))?;
                if col == Col::Timestamp {
                    out.extend_from_slice(b"+00");
                }
            }
        },
    }
    Ok(())
}

/// COPY text rows `(group, columns...)`; rows of inserts only without the group (all are
/// upserts), ready to COPY straight into the target table.
fn write_rows(c: &Collapsed, plan: &Plan, deleted: i64, upserted: i64) -> Res<(Vec<u8>, u64, u64)> {
    let mut out = Vec::with_capacity(c.entries.len() * (8 + 16 * plan.cols.len()));
    let (mut upserts, mut deletes) = (0, 0);
    let grouped = c.changed;
    for entry in &c.entries {
        if entry.delete {
            deletes += 1;
        } else {
            upserts += 1;
        }
        if grouped {
            push_i64(&mut out, if entry.delete { deleted } else { upserted });
        }
        for (i, &col) in plan.cols.iter().enumerate() {
            if grouped || i > 0 {
                out.push(b'\t');
            }
            let written = !entry.delete || plan.key.contains(&i);
            match c.row(&entry.row)[i] {
                Some(raw) if written => write_value(&mut out, col, raw)?,
                _ => out.extend_from_slice(b"\\N"),
            }
        }
        out.push(b'\n');
    }
    Ok((out, upserts, deletes))
}

/// Collapse the messages (each a Confluent-framed Avro envelope) of one partition, in offset
/// order, and write their net changes as COPY text rows `(group, columns...)`.
pub fn collapse_to_copy(
    plan: &Plan,
    messages: &[&[u8]],
    deleted_group: i64,
    upsert_group: i64,
) -> Result<CopyBatch, (i32, u64)> {
    collapse_with(plan, messages, |c| {
        write_rows(c, plan, deleted_group, upsert_group)
    })
}

/// Decode and collapse `messages`, then write the net changes with `write` (COPY text for
/// PostgreSQL, LOAD DATA text for MySQL): `(status, message index)` when Python must take them.
pub(crate) fn collapse_with(
    plan: &Plan,
    messages: &[&[u8]],
    write: impl FnOnce(&Collapsed) -> Res<(Vec<u8>, u64, u64)>,
) -> Result<CopyBatch, (i32, u64)> {
    let mut collapsed = Collapsed {
        index: FxMap::with_capacity_and_hasher(messages.len(), Default::default()),
        cells: Vec::with_capacity(messages.len() * plan.cols.len()),
        ..Collapsed::default()
    };
    let code = |f: Fail| match f {
        Fail::Fallback => 1,
        Fail::Malformed => 2,
    };
    for (i, message) in messages.iter().enumerate() {
        read_event(message, plan, &mut collapsed.cells)
            .and_then(|event| collapsed.add(event, plan))
            .map_err(|f| (code(f), i as u64))?;
    }
    collapsed.sort_by_key(plan);
    let (copy, upserts, deletes) = write(&collapsed).map_err(|f| (code(f), 0))?;
    Ok(CopyBatch {
        copy,
        upserts,
        deletes,
        max_ts: collapsed.max_ts,
        inserts_only: !collapsed.changed,
    })
}

pub struct CopyBatch {
    pub copy: Vec<u8>,
    pub upserts: u64,
    pub deletes: u64,
    pub max_ts: Option<i64>,
    /// Only inserts and snapshot reads: the rows may go straight into the target table.
    pub inserts_only: bool,
}

// --- C ABI ----------------------------------------------------------------------------------

/// The same collapse written as LOAD DATA rows for a MySQL/MariaDB target.
pub mod mysql;

/// What `hw_collapse` hands back; Python reads the leading fields (ctypes) and frees it.
#[repr(C)]
pub struct HwResult {
    /// 0: done; 1: the Python path must take this batch; 2: a message is malformed.
    pub status: i32,
    pub has_ts: i32,
    pub max_ts: i64,
    pub upserts: u64,
    pub deletes: u64,
    /// The message the status is about (for 1 and 2).
    pub at: u64,
    pub copy_ptr: *const u8,
    pub copy_len: usize,
    /// 1 when every event was an insert or a snapshot read.
    pub inserts_only: i32,
    copy: Vec<u8>,
}

/// A plan from its text spec (see consumers/native_collapse.py); null when the spec is bad.
///
/// # Safety
/// `spec` must point to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn hw_plan_new(spec: *const u8, len: usize) -> *mut Plan {
    boxed_plan(spec, len, parse_spec)
}

/// A plan parsed from the text spec at `spec`, boxed for Python; null when it is bad.
///
/// # Safety
/// `spec` must point to `len` readable bytes (or be null).
pub(crate) unsafe fn boxed_plan<T>(
    spec: *const u8,
    len: usize,
    parse: impl FnOnce(&str) -> Option<T>,
) -> *mut T {
    if spec.is_null() {
        return std::ptr::null_mut();
    }
    let bytes = std::slice::from_raw_parts(spec, len);
    match std::str::from_utf8(bytes).ok().and_then(parse) {
        Some(plan) => Box::into_raw(Box::new(plan)),
        None => std::ptr::null_mut(),
    }
}

/// Free what `boxed_plan` (or a result constructor) boxed.
///
/// # Safety
/// `ptr` must come from `Box::into_raw` and not be used afterwards.
pub(crate) unsafe fn free_boxed<T>(ptr: *mut T) {
    if !ptr.is_null() {
        drop(Box::from_raw(ptr));
    }
}

/// # Safety
/// `plan` must come from `hw_plan_new` and not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn hw_plan_free(plan: *mut Plan) {
    free_boxed(plan)
}

/// Collapse `n` messages laid end to end in `data`; `ends[i]` is where message i ends.
///
/// # Safety
/// `plan` from `hw_plan_new`; `data` readable for `data_len` bytes; `ends` for `n` values.
#[no_mangle]
pub unsafe extern "C" fn hw_collapse(
    plan: *const Plan,
    data: *const u8,
    data_len: usize,
    ends: *const u64,
    n: usize,
    deleted_group: i64,
    upsert_group: i64,
) -> *mut HwResult {
    collapse_abi(!plan.is_null(), data, data_len, ends, n, |messages| {
        collapse_to_copy(&*plan, messages, deleted_group, upsert_group)
    })
}

/// What both collapse functions share: the messages cut from `data` at `ends`, `run` over
/// them, and the result handed to Python (status 2 when the framing is wrong).
///
/// # Safety
/// `data` readable for `data_len` bytes; `ends` for `n` values.
pub(crate) unsafe fn collapse_abi(
    ready: bool,
    data: *const u8,
    data_len: usize,
    ends: *const u64,
    n: usize,
    run: impl FnOnce(&[&[u8]]) -> Result<CopyBatch, (i32, u64)>,
) -> *mut HwResult {
    let mut result = HwResult {
        status: 2,
        has_ts: 0,
        max_ts: 0,
        upserts: 0,
        deletes: 0,
        at: 0,
        copy_ptr: std::ptr::null(),
        copy_len: 0,
        inserts_only: 0,
        copy: Vec::new(),
    };
    if ready && (n == 0 || (!data.is_null() && !ends.is_null())) {
        let bytes: &[u8] = if data_len == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(data, data_len)
        };
        let ends: &[u64] = if n == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(ends, n)
        };
        let mut messages = Vec::with_capacity(n);
        let mut start = 0usize;
        let mut framed = true;
        for &end in ends {
            let end = end as usize;
            if end < start || end > bytes.len() {
                framed = false;
                break;
            }
            messages.push(&bytes[start..end]);
            start = end;
        }
        if framed {
            match run(&messages) {
                Ok(batch) => {
                    result.status = 0;
                    result.has_ts = i32::from(batch.max_ts.is_some());
                    result.max_ts = batch.max_ts.unwrap_or(0);
                    result.upserts = batch.upserts;
                    result.deletes = batch.deletes;
                    result.inserts_only = i32::from(batch.inserts_only);
                    result.copy = batch.copy;
                }
                Err((status, at)) => {
                    result.status = status;
                    result.at = at;
                }
            }
        }
    }
    result.copy_ptr = result.copy.as_ptr();
    result.copy_len = result.copy.len();
    Box::into_raw(Box::new(result))
}

/// # Safety
/// `result` must come from `hw_collapse` and not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn hw_result_free(result: *mut HwResult) {
    free_boxed(result)
}

/// What `hw_encode` hands back (the full load's rows as Avro keys and values).
#[repr(C)]
pub struct HwEncoded {
    /// 0: every complete line encoded; 1: the Python path must take this block.
    pub status: i32,
    pub rows: u64,
    /// For status 1: the line concerned.
    pub at: u64,
    /// Bytes of the input taken: complete lines only.
    pub consumed: u64,
    pub buf_ptr: *const u8,
    pub buf_len: usize,
    /// Two per row: the end of its key and the end of its value in the buffer.
    pub ends_ptr: *const u64,
    buf: Vec<u8>,
    ends: Vec<u64>,
}

/// An encoder plan from its text spec (see producers/postgres/native_rows.py); null when bad.
///
/// # Safety
/// `spec` must point to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn hw_enc_plan_new(spec: *const u8, len: usize) -> *mut encode::EncPlan {
    boxed_plan(spec, len, encode::parse_enc_spec)
}

/// # Safety
/// `plan` must come from `hw_enc_plan_new` and not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn hw_enc_plan_free(plan: *mut encode::EncPlan) {
    free_boxed(plan)
}

unsafe fn slice<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(ptr, len)
    }
}

/// Encode the complete COPY text lines of `data` as `r` events (see encode::encode_rows).
///
/// # Safety
/// `plan` from `hw_enc_plan_new`; each pointer readable for its length.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn hw_encode(
    plan: *const encode::EncPlan,
    data: *const u8,
    data_len: usize,
    key_header: *const u8,
    key_header_len: usize,
    prefix: *const u8,
    prefix_len: usize,
    suffix: *const u8,
    suffix_len: usize,
) -> *mut HwEncoded {
    let mut result = HwEncoded {
        status: 1,
        rows: 0,
        at: 0,
        consumed: 0,
        buf_ptr: std::ptr::null(),
        buf_len: 0,
        ends_ptr: std::ptr::null(),
        buf: Vec::new(),
        ends: Vec::new(),
    };
    if !plan.is_null() {
        let found = encode::encode_rows(
            &*plan,
            slice(data, data_len),
            slice(key_header, key_header_len),
            slice(prefix, prefix_len),
            slice(suffix, suffix_len),
        );
        match found {
            Ok(enc) => {
                result.status = 0;
                result.rows = enc.rows;
                result.consumed = enc.consumed as u64;
                result.buf = enc.buf;
                result.ends = enc.ends;
            }
            Err(at) => result.at = at,
        }
    }
    result.buf_ptr = result.buf.as_ptr();
    result.buf_len = result.buf.len();
    result.ends_ptr = result.ends.as_ptr();
    Box::into_raw(Box::new(result))
}

/// # Safety
/// `result` must come from `hw_encode` and not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn hw_encoded_free(result: *mut HwEncoded) {
    free_boxed(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-719_162, -1, 0, 1, 19_358, 2_932_896] {
            let (y, m, d) = civil(days);
            assert_eq!(civil_days(y, m, d), days);
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(-1), (1969, 12, 31));
        assert_eq!(civil(19_358), (2023, 1, 1));
        assert_eq!(civil(-719_162), (1, 1, 1));
        assert_eq!(civil(2_932_896), (9999, 12, 31));
    }

    #[test]
    fn decimals() {
        let mut out = Vec::new();
        write_decimal(&mut out, &[0xFF, 0x85], 2, 38).unwrap(); // -123
        assert_eq!(out, b"-1.23");
        out.clear();
        write_decimal(&mut out, &[0x05], 3, 38).unwrap();
        assert_eq!(out, b"0.005");
        out.clear();
        write_decimal(&mut out, &[], 0, 38).unwrap();
        assert_eq!(out, b"0");
    }

    #[test]
    fn key_order() {
        use std::cmp::Ordering::*;
        // zigzag varints: -1 = 01, 1 = 02, 64 = 80 01 (bytewise above 02, and larger)
        let (minus_one, one, big) = (&[0x01u8][..], &[0x02u8][..], &[0x80u8, 0x01][..]);
        assert_eq!(compare_cells(Col::Long, Some(minus_one), Some(one)), Less);
        assert_eq!(compare_cells(Col::Long, Some(big), Some(one)), Greater);
        // decimals: two's complement big-endian of any length
        let (minus, small, large) = (&[0xFFu8][..], &[0x05u8][..], &[0x01u8, 0x00][..]);
        assert_eq!(
            compare_cells(Col::Decimal(2), Some(minus), Some(small)),
            Less
        );
        assert_eq!(
            compare_cells(Col::Decimal(2), Some(large), Some(small)),
            Greater
        );
    }

    #[test]
    fn hand_written_numbers() {
        let mut out = Vec::new();
        push_i64(&mut out, i64::MIN);
        out.push(b' ');
        push_i64(&mut out, i64::MAX);
        out.push(b' ');
        push_i64(&mut out, 0);
        out.push(b' ');
        push_padded(&mut out, 7, 4);
        out.push(b' ');
        push_padded(&mut out, 123_456, 2);
        assert_eq!(
            out,
            b"-9223372036854775808 9223372036854775807 0 0007 123456".to_vec()
        );
        out.clear();
        let max = i128::MAX.to_be_bytes(); // 39 digits: past 38, a fallback
        assert!(write_decimal(&mut out, &max, 2, 38).is_err());
        assert!(write_decimal(&mut out, &[0x05], 60, 38).is_err());
    }

    #[test]
    fn timestamps() {
        let mut out = Vec::new();
        let raw = {
            let v: i64 = -1; // one microsecond before the epoch
            let z = ((v << 1) ^ (v >> 63)) as u64;
            vec![z as u8]
        };
        write_value(&mut out, Col::Timestamp, &raw).unwrap();
        assert_eq!(out, b"1969-12-31 23:59:59.999999+00");
    }

    #[test]
    fn spec() {
        let plan = parse_spec("id 7\nsource s ?l l\nts 2\ncols l s D2\nkey 0\n").unwrap();
        assert_eq!(plan.schema_id, 7);
        assert_eq!(plan.cols, vec![Col::Long, Col::Str, Col::Decimal(2)]);
        assert!(parse_spec("id 7\nsource l\nts 0\ncols d\nkey 0\n").is_none()); // float key
        assert!(parse_spec("id 7\nsource ?l\nts 0\ncols l\nkey 0\n").is_none());
        // nullable ts
    }
}
