//! The streaming producer's hot path: one pgoutput row message in (an Insert, an Update
//! carrying only its new tuple, a Delete carrying the key-only old tuple), its Avro key and
//! whole envelope out, byte for byte what ChangeBuilder + the compiled codec write.
//!
//! The values go through encode.rs's per-column writers (pgoutput's text values are the
//! types' text output, as COPY writes them before its escaping). The envelope's fixed parts
//! (schema ids, the `source` fields that do not change within a table) are segments the
//! Python side cut from an envelope its codec wrote (producers/postgres/native_stream.py);
//! the varying ones (commit time, txId, lsn, commit_lsn, op) are written here. Anything
//! else (an old tuple of an update, a whole old row, an unchanged TOAST value, a binary
//! value, a value the Python path reads differently) answers "fallback" and the message
//! goes through Python.

use crate::encode::{parse_enc_spec, put_bytes, put_long, value, EncPlan, Fallback};

/// The segments between the envelope's varying values (see `encode_change`).
const SEGMENTS: usize = 9;

pub struct StreamPlan {
    enc: EncPlan,
    is_key: Vec<bool>,
    /// key header, value header, then the seven fixed pieces of the envelope's tail.
    segs: Vec<Vec<u8>>,
    /// The latest message's key then value (read by Python before the next call).
    out: Vec<u8>,
    key_len: usize,
}

impl StreamPlan {
    /// The latest message's key and value.
    pub fn encoded(&self) -> (&[u8], &[u8]) {
        self.out.split_at(self.key_len)
    }
}

/// Where an event is in the log and its transaction (its `source` fields that vary).
pub struct Position {
    pub ts_ms: i64,
    pub xid: i64,
    pub lsn: i64,
    pub commit_lsn: i64,
}

fn hex(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

/// The encoder spec (`cols`, `key` lines, see encode.rs) plus nine `seg <hex>` lines (an
/// empty segment is a bare `seg`).
pub fn parse_stream_spec(spec: &str) -> Option<StreamPlan> {
    let mut enc_lines = String::new();
    let mut segs = Vec::new();
    for line in spec.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("seg") {
            segs.push(hex(words.next().unwrap_or(""))?);
            if words.next().is_some() {
                return None;
            }
        } else {
            enc_lines.push_str(line);
            enc_lines.push('\n');
        }
    }
    let enc = parse_enc_spec(&enc_lines)?;
    if segs.len() != SEGMENTS || enc.key.is_empty() {
        return None;
    }
    let mut is_key = vec![false; enc.cols.len()];
    for &k in &enc.key {
        is_key[k] = true;
    }
    Some(StreamPlan {
        enc,
        is_key,
        segs,
        out: Vec::with_capacity(1024),
        key_len: 0,
    })
}

fn be_u16(data: &[u8], at: usize) -> Result<usize, Fallback> {
    let b = data.get(at..at + 2).ok_or(Fallback)?;
    Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
}

fn be_i32(data: &[u8], at: usize) -> Result<i32, Fallback> {
    let b = data.get(at..at + 4).ok_or(Fallback)?;
    Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// A TupleData of text and null values only, exactly to the end of the message.
fn tuple_values(data: &[u8], columns: usize) -> Result<Vec<Option<&[u8]>>, Fallback> {
    if be_u16(data, 0)? != columns {
        return Err(Fallback); // a count the relation does not have: Python decides
    }
    let mut values = Vec::with_capacity(columns);
    let mut at = 2;
    for _ in 0..columns {
        match data.get(at) {
            Some(b't') => {
                let size = usize::try_from(be_i32(data, at + 1)?).map_err(|_| Fallback)?;
                let start = at + 5;
                values.push(Some(data.get(start..start + size).ok_or(Fallback)?));
                at = start + size;
            }
            Some(b'n') => {
                values.push(None);
                at += 1;
            }
            _ => return Err(Fallback), // 'u' unchanged TOAST, 'b' binary, or malformed
        }
    }
    if at != data.len() {
        return Err(Fallback);
    }
    Ok(values)
}

/// Encode one pgoutput message (its tag byte first) into `plan.out`: the key, then the
/// value. Returns the op (`c`, `u`, `d`).
///
/// value = value header, `before` and `after` branches, seg 2, ts_ms, seg 3, txId, seg 4,
/// lsn, seg 5, commit_lsn, seg 6, op, seg 7, ts_ms, seg 8.
pub fn encode_change(plan: &mut StreamPlan, msg: &[u8], at: &Position) -> Result<u8, Fallback> {
    if msg.len() < 6 {
        return Err(Fallback);
    }
    let op = match (msg[0], msg[5]) {
        (b'I', b'N') => b'c',
        (b'U', b'N') => b'u',
        (b'D', b'K') => b'd',
        _ => return Err(Fallback), // an old tuple of an update, a whole old row: Python
    };
    let texts = tuple_values(&msg[6..], plan.enc.cols.len())?;
    let StreamPlan {
        enc,
        is_key,
        segs,
        out,
        key_len,
    } = plan;
    out.clear();
    out.extend_from_slice(&segs[0]);
    for &k in &enc.key {
        let text = texts[k].ok_or(Fallback)?; // a null key: Python says what is wrong
        value(out, enc.cols[k], text)?;
    }
    *key_len = out.len();
    out.extend_from_slice(&segs[1]);
    let key_only = op == b'd';
    if key_only {
        out.push(2); // `before`: the key-only old row
    } else {
        out.extend_from_slice(&[0, 2]); // `before` null, `after` the new row
    }
    for ((&col, text), &key) in enc.cols.iter().zip(&texts).zip(is_key.iter()) {
        match text {
            // A key-only old tuple: ChangeBuilder leaves the other columns null.
            Some(t) if key || !key_only => {
                out.push(2);
                value(out, col, t)?;
            }
            _ => out.push(0),
        }
    }
    if key_only {
        out.push(0); // `after`: null
    }
    out.extend_from_slice(&segs[2]);
    put_long(out, at.ts_ms);
    out.extend_from_slice(&segs[3]);
    put_long(out, at.xid);
    out.extend_from_slice(&segs[4]);
    put_long(out, at.lsn);
    out.extend_from_slice(&segs[5]);
    put_long(out, at.commit_lsn);
    out.extend_from_slice(&segs[6]);
    put_bytes(out, &[op]);
    out.extend_from_slice(&segs[7]);
    put_long(out, at.ts_ms);
    out.extend_from_slice(&segs[8]);
    Ok(op)
}

/// What `hw_stream_encode` hands back: the key is `buf[..key_len]`, the value the rest.
#[repr(C)]
pub struct HwChange {
    pub buf_ptr: *const u8,
    pub key_len: usize,
    pub total_len: usize,
    pub op: i32,
}

/// A stream plan from its text spec (see producers/postgres/native_stream.py); null if bad.
///
/// # Safety
/// `spec` must point to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn hw_stream_plan_new(spec: *const u8, len: usize) -> *mut StreamPlan {
    crate::boxed_plan(spec, len, parse_stream_spec)
}

/// # Safety
/// `plan` must come from `hw_stream_plan_new` and not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn hw_stream_plan_free(plan: *mut StreamPlan) {
    crate::free_boxed(plan)
}

/// Encode one pgoutput message; 0 and `out` filled (pointing into the plan, valid until its
/// next call), or 1: the Python path takes the message.
///
/// # Safety
/// `plan` from `hw_stream_plan_new`, used by one thread at a time; `msg` readable for
/// `len` bytes; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn hw_stream_encode(
    plan: *mut StreamPlan,
    msg: *const u8,
    len: usize,
    ts_ms: i64,
    xid: i64,
    lsn: i64,
    commit_lsn: i64,
    out: *mut HwChange,
) -> i32 {
    if plan.is_null() || msg.is_null() || out.is_null() {
        return 1;
    }
    let plan = &mut *plan;
    let at = Position {
        ts_ms,
        xid,
        lsn,
        commit_lsn,
    };
    match encode_change(plan, std::slice::from_raw_parts(msg, len), &at) {
        Ok(op) => {
            *out = HwChange {
                buf_ptr: plan.out.as_ptr(),
                key_len: plan.key_len,
                total_len: plan.out.len(),
                op: i32::from(op),
            };
            0
        }
        Err(Fallback) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> StreamPlan {
        let segs = "seg 0000000000\nseg 0000000001\nseg 02aa\nseg 02\nseg 02\nseg 0000\nseg 02\nseg 02\nseg 00\n";
        parse_stream_spec(&format!("cols l s\nkey 0\n{segs}")).unwrap()
    }

    fn message(tag: u8, kind: u8, values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut msg = vec![tag, 0, 0, 0, 7, kind];
        msg.extend_from_slice(&(values.len() as u16).to_be_bytes());
        for v in values {
            match v {
                Some(t) => {
                    msg.push(b't');
                    msg.extend_from_slice(&(t.len() as i32).to_be_bytes());
                    msg.extend_from_slice(t);
                }
                None => msg.push(b'n'),
            }
        }
        msg
    }

    const AT: Position = Position {
        ts_ms: 1,
        xid: 2,
        lsn: 3,
        commit_lsn: 4,
    };

    #[test]
    fn insert_and_key_only_delete() {
        let mut p = plan();
        let op = encode_change(
            &mut p,
            &message(b'I', b'N', &[Some(b"5"), Some(b"ab")]),
            &AT,
        );
        assert_eq!(op.ok(), Some(b'c'));
        let (key, value) = p.out.split_at(p.key_len);
        assert_eq!(key, [0, 0, 0, 0, 0, 10]);
        let row = [0, 2, 2, 10, 2, 4, b'a', b'b'];
        let tail = [2, 0xAA, 2, 2, 4, 2, 6, 0, 0, 8, 2, 2, b'c', 2, 2, 0];
        assert_eq!(value, [&[0, 0, 0, 0, 1][..], &row, &tail].concat());
        let op = encode_change(&mut p, &message(b'D', b'K', &[Some(b"5"), Some(b"x")]), &AT);
        assert_eq!(op.ok(), Some(b'd'));
        assert_eq!(&p.out[p.key_len + 5..p.key_len + 11], [2, 2, 10, 0, 0, 2]);
    }

    #[test]
    fn fallbacks() {
        let mut p = plan();
        let unchanged = {
            let mut m = message(b'U', b'N', &[Some(b"5")]);
            m[7] = 2; // two columns, the second 'u'
            m.push(b'u');
            m
        };
        assert!(encode_change(&mut p, &unchanged, &AT).is_err());
        let old = message(b'U', b'K', &[Some(b"5"), None]);
        assert!(encode_change(&mut p, &old, &AT).is_err());
        let full = message(b'D', b'O', &[Some(b"5"), None]);
        assert!(encode_change(&mut p, &full, &AT).is_err());
        let null_key = message(b'I', b'N', &[None, None]);
        assert!(encode_change(&mut p, &null_key, &AT).is_err());
        let short = message(b'I', b'N', &[Some(b"5")]);
        assert!(encode_change(&mut p, &short, &AT).is_err());
        let mut trailing = message(b'I', b'N', &[Some(b"5"), None]);
        trailing.push(0);
        assert!(encode_change(&mut p, &trailing, &AT).is_err());
    }
}
