//! The Redis commands the source sends, each one round trip, and the replies turned into
//! [`Entry`]s. The moves that touch more than one key (a retry: hash, sorted set, ack; the
//! due entries back into the stream) are Lua scripts, so a reprow killed between two of
//! their steps cannot lose or duplicate an entry: Redis runs a script whole or not at all.

use std::time::Duration;

use redis::{Connection, ConnectionInfo, IntoConnectionInfo as _, Script, Value};

use super::{config::RedisConfig, entry::Entry};

/// A retry: the entry's fields into `<delayed_key>:<id>` (a hash), that key into the sorted
/// set at its due time, the entry acknowledged (and deleted, with `delete_acked`).
/// KEYS: stream, delayed set. ARGV: group, entry id, due ms, hash key, delete ("1"/"0"),
/// then field, value, ...
const RETRY: &str = r"
redis.call('DEL', ARGV[4])
redis.call('HSET', ARGV[4], unpack(ARGV, 6))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if ARGV[5] == '1' then redis.call('XDEL', KEYS[1], ARGV[2]) end
return 1
";

/// Entries whose retry is due, back into the stream as new entries. KEYS: stream, delayed
/// set. ARGV: now (ms), most to move. Returns how many moved.
const MOVE_DUE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, key in ipairs(due) do
  local fields = redis.call('HGETALL', key)
  if #fields > 0 then redis.call('XADD', KEYS[1], '*', unpack(fields)) end
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[2], key)
end
return #due
";

/// Entries moved back per script run: bounds how long one run blocks the server.
pub(super) const MOVE_BATCH: usize = 100;

/// Connection settings, the password taken from `password_env` when set.
pub(super) fn connection_info(config: &RedisConfig) -> Result<ConnectionInfo, String> {
    let mut info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| format!("queue.url: {e}"))?;
    if let Some(var) = &config.password_env {
        let password = std::env::var(var)
            .map_err(|_| format!("queue.password_env: environment variable {var} is not set"))?;
        info.redis.password = Some(password);
    }
    Ok(info)
}

/// Opens a connection whose reads give up after `read_timeout` (so a silent server is noticed).
pub(super) fn connect(
    info: &ConnectionInfo,
    read_timeout: Duration,
) -> redis::RedisResult<Connection> {
    let client = redis::Client::open(info.clone())?;
    let conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
    conn.set_read_timeout(Some(read_timeout))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(conn)
}

/// Creates the group (and the stream) unless it exists; a new group reads from the first entry.
pub(super) fn ensure_group(
    conn: &mut Connection,
    stream: &str,
    group: &str,
) -> redis::RedisResult<()> {
    let made: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query(conn);
    match made {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other.map(drop),
    }
}

/// `XREADGROUP`: new entries (`from` = `>`) or this consumer's own unfinished ones (`0`).
pub(super) fn read_group(
    conn: &mut Connection,
    c: &RedisConfig,
    from: &str,
    count: usize,
    block: Option<Duration>,
) -> redis::RedisResult<Vec<Entry>> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP").arg(&c.group).arg(&c.consumer);
    cmd.arg("COUNT").arg(count);
    if let Some(b) = block {
        cmd.arg("BLOCK").arg(b.as_millis() as u64);
    }
    cmd.arg("STREAMS").arg(&c.stream).arg(from);
    let reply: Value = cmd.query(conn)?;
    Ok(match reply {
        Value::Nil => Vec::new(),
        // [[stream, [entries]]] (RESP2) or {stream: [entries]} (RESP3).
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => Some(pair.swap_remove(1)),
                _ => None,
            })
            .flat_map(entries)
            .collect(),
        Value::Map(streams) => streams.into_iter().flat_map(|(_, v)| entries(v)).collect(),
        _ => Vec::new(),
    })
}

/// `XAUTOCLAIM`: up to `count` entries other consumers took and left unfinished for longer
/// than the lease, now this consumer's. Also returns the ids of entries deleted meanwhile
/// (to acknowledge: nothing is left to deliver).
pub(super) fn claim_abandoned(
    conn: &mut Connection,
    c: &RedisConfig,
    cursor: &str,
    count: usize,
) -> redis::RedisResult<(String, Vec<Entry>, Vec<String>)> {
    let reply: Value = redis::cmd("XAUTOCLAIM")
        .arg(&c.stream)
        .arg(&c.group)
        .arg(&c.consumer)
        .arg(c.lease.as_millis() as u64)
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query(conn)?;
    let Value::Array(mut parts) = reply else {
        return Ok(("0-0".into(), Vec::new(), Vec::new()));
    };
    let deleted = if parts.len() >= 3 {
        ids(parts.swap_remove(2))
    } else {
        Vec::new()
    };
    let claimed = if parts.len() >= 2 {
        parts.swap_remove(1)
    } else {
        Value::Nil
    };
    let next = parts.into_iter().next().map_or_else(|| "0-0".into(), text);
    Ok((next, entries(claimed), deleted))
}

/// `XACK` (and `XDEL`) of `ids`, in one round trip.
pub(super) fn ack(
    conn: &mut Connection,
    c: &RedisConfig,
    ids: &[String],
) -> redis::RedisResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("XACK")
        .arg(&c.stream)
        .arg(&c.group)
        .arg(ids)
        .ignore();
    if c.delete_acked {
        pipe.cmd("XDEL").arg(&c.stream).arg(ids).ignore();
    }
    pipe.query::<()>(conn)
}

/// The entry to run again at `due_ms`, atomically (see [`RETRY`]).
pub(super) fn schedule_retry(
    conn: &mut Connection,
    c: &RedisConfig,
    id: &str,
    fields: &[(Vec<u8>, Vec<u8>)],
    due_ms: u64,
) -> redis::RedisResult<()> {
    let script = Script::new(RETRY);
    let mut inv = script.prepare_invoke();
    inv.key(&c.stream).key(c.delayed_key());
    inv.arg(&c.group)
        .arg(id)
        .arg(due_ms)
        .arg(format!("{}:{id}", c.delayed_key()))
        .arg(if c.delete_acked { "1" } else { "0" });
    for (k, v) in fields {
        inv.arg(k.as_slice()).arg(v.as_slice());
    }
    inv.invoke::<i64>(conn).map(drop)
}

/// Moves up to [`MOVE_BATCH`] due retries back into the stream; returns how many moved.
pub(super) fn move_due(
    conn: &mut Connection,
    c: &RedisConfig,
    now_ms: u64,
) -> redis::RedisResult<usize> {
    Script::new(MOVE_DUE)
        .key(&c.stream)
        .key(c.delayed_key())
        .arg(now_ms)
        .arg(MOVE_BATCH)
        .invoke::<usize>(conn)
}

/// Adds `fields` to `stream` and acknowledges entry `id` in one transaction: a failure into
/// the failed stream, or an unfinished job handed back at shutdown.
pub(super) fn add_and_ack(
    conn: &mut Connection,
    c: &RedisConfig,
    stream: &str,
    fields: &[(Vec<u8>, Vec<u8>)],
    id: &str,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    let add = pipe.cmd("XADD").arg(stream).arg("*");
    for (k, v) in fields {
        add.arg(k.as_slice()).arg(v.as_slice());
    }
    add.ignore();
    pipe.cmd("XACK")
        .arg(&c.stream)
        .arg(&c.group)
        .arg(id)
        .ignore();
    if c.delete_acked {
        pipe.cmd("XDEL").arg(&c.stream).arg(id).ignore();
    }
    pipe.query::<()>(conn)
}

/// A list of `[id, [field, value, ...]]` entries. An entry deleted while pending reads as
/// `[id, nil]` (Redis 6.2) and is kept with no fields: it then fails for want of a payload,
/// which acknowledges it.
fn entries(v: Value) -> Vec<Entry> {
    let Value::Array(list) = v else {
        return Vec::new();
    };
    list.into_iter()
        .filter_map(|e| {
            let Value::Array(mut pair) = e else {
                return None;
            };
            if pair.len() != 2 {
                return None;
            }
            let fields = pair.pop()?;
            let id = text(pair.pop()?);
            let fields = match fields {
                Value::Array(flat) => {
                    let mut it = flat.into_iter().map(bytes);
                    let mut out = Vec::new();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        out.push((k, v));
                    }
                    out
                }
                Value::Map(m) => m.into_iter().map(|(k, v)| (bytes(k), bytes(v))).collect(),
                _ => Vec::new(),
            };
            Some(Entry { id, fields })
        })
        .collect()
}

fn ids(v: Value) -> Vec<String> {
    match v {
        Value::Array(list) => list.into_iter().map(text).collect(),
        _ => Vec::new(),
    }
}

fn bytes(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

fn text(v: Value) -> String {
    String::from_utf8_lossy(&bytes(v)).into_owned()
}
