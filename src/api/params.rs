//! Reading what a request carries, shared by fireworq's and presque's routes: path segments
//! and query parameters (percent-decoded), ids and lease tokens, and JSON bodies.
//!
//! Each reader answers its own error: 400 for bad syntax (JSON that does not parse, a bad
//! query value, bad percent-encoding), 422 for JSON that parses but has the wrong shape, 415
//! for a body declared as something other than JSON.

use bytes::Bytes;
use serde::Deserialize;

use super::{http_response::Response, Ctx};
use crate::http::request::Request;

/// The most jobs one page of a fireworq listing holds.
pub(super) const MAX_LIST_LIMIT: usize = 1000;

/// Query parameters.
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    pub(super) fn parse(q: &str) -> Result<Params, Response> {
        let mut v = Vec::new();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, val) = pair.split_once('=').unwrap_or((pair, ""));
            v.push((
                percent_decode(&k.replace('+', " "))?,
                percent_decode(&val.replace('+', " "))?,
            ));
        }
        Ok(Params(v))
    }
    pub(super) fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
    pub(super) fn num(&self, k: &str, default: u64, min: u64, max: u64) -> Result<u64, Response> {
        match self.get(k) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    Response::error(400, &format!("{k} must be a number from {min} to {max}"))
                }),
        }
    }
    pub(super) fn flag(&self, k: &str) -> Result<bool, Response> {
        match self.get(k) {
            None | Some("0") | Some("false") => Ok(false),
            Some("" | "1" | "true") => Ok(true),
            Some(v) => Err(Response::error(
                400,
                &format!("{k} must be 1 or 0, not {v:?}"),
            )),
        }
    }
    /// `?payload=`: how much of each payload a listing shows (400 for another value).
    pub(super) fn payload_mode(&self) -> Result<crate::store::payload::PayloadMode, Response> {
        crate::store::payload::PayloadMode::parse(self.get("payload"))
            .map_err(|e| Response::error(400, &e))
    }

    /// fireworq's `order`, whether newest first: `asc` is oldest first; `desc` (the default)
    /// and any other value newest first, as fireworq reads it (its failed log's `failed` and
    /// `created` among them).
    pub(super) fn newest_first(&self) -> bool {
        self.get("order") != Some("asc")
    }

    /// fireworq's `limit` of a listing: a value that is not a whole number is the default
    /// (100), as fireworq ignores it; 0 or less is an empty page; more than
    /// [`MAX_LIST_LIMIT`] is that many (a page is bounded, and `next_cursor` goes on).
    pub(super) fn fireworq_limit(&self) -> usize {
        match self.get("limit").map(str::parse::<i64>) {
            Some(Ok(n)) => usize::try_from(n).map_or(0, |n| n.min(MAX_LIST_LIMIT)),
            _ => 100,
        }
    }
}

/// One path segment or query part, `%XX` decoded; the result must be UTF-8.
pub(super) fn percent_decode(s: &str) -> Result<String, Response> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => out.push(v),
                    None => return Err(Response::error(400, "bad percent-encoding")),
                }
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| Response::error(400, "path is not UTF-8"))
}

pub(super) fn parse_id(s: &str) -> Result<u64, Response> {
    s.parse()
        .map_err(|_| Response::error(400, &format!("{s:?} is not a job id")))
}

/// The `X-Reprow-Lease` token of a pull worker's ack or failure report, if sent.
pub(super) fn lease_token(req: &Request) -> Result<Option<u64>, Response> {
    req.lease
        .as_deref()
        .map(|t| {
            Some(t)
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| {
                    Response::error(400, &format!("X-Reprow-Lease {t:?} is not a lease token"))
                })
        })
        .transpose()
}

/// Refuses bodies declared as something other than JSON (`application/json`, `*/*+json`,
/// `text/json`); a body without a type is read as JSON. Form and `text/plain` bodies are what
/// a page on any site may send cross-site without a preflight, so they are refused unless
/// `api.form_bodies_as_json` lets curl's `-d` default (`application/x-www-form-urlencoded`)
/// through.
pub(super) fn check_json_type(ctx: &Ctx, req: &Request) -> Result<(), Response> {
    let Some(ct) = &req.content_type else {
        return Ok(());
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let form = mime == "application/x-www-form-urlencoded";
    if mime.is_empty()
        || mime == "application/json"
        || mime.ends_with("+json")
        || mime == "text/json"
        || (form && ctx.config.form_bodies_as_json)
    {
        Ok(())
    } else if form {
        Err(Response::error(
            415,
            "the body must be JSON, not application/x-www-form-urlencoded: send \
             Content-Type: application/json (curl: --json, or -H 'Content-Type: application/json'), \
             or set api.form_bodies_as_json",
        ))
    } else {
        Err(Response::error(
            415,
            &format!("the body must be JSON (Content-Type: application/json), not {mime:?}"),
        ))
    }
}

/// Parses JSON; a wrong shape names the field (`timeout: invalid type ...`).
pub(super) fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Response> {
    check_utf8(body)?;
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if path != "." => {
                Response::error(422, &format!("{path}: {inner}"))
            }
            _ => json_error(inner),
        }
    })?;
    de.end().map_err(json_error)?;
    Ok(value)
}

/// JSON is UTF-8 (RFC 8259 §8.1); serde_json skips over the bytes of strings it ignores, so a
/// body kept as is would otherwise be served later as `application/json` that is not.
fn check_utf8(body: &[u8]) -> Result<(), Response> {
    std::str::from_utf8(body)
        .map(|_| ())
        .map_err(|e| Response::error(400, &format!("invalid JSON: the body is not UTF-8 ({e})")))
}

fn json_error(e: serde_json::Error) -> Response {
    match e.classify() {
        serde_json::error::Category::Data => Response::error(422, &e.to_string()),
        _ => Response::error(400, &format!("invalid JSON: {e}")),
    }
}

/// The body as `T`, after [`check_json_type`].
pub(super) fn json_body<T: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    req: &Request,
) -> Result<T, Response> {
    check_json_type(ctx, req)?;
    from_json(&req.body)
}

/// A body that must be one JSON value, kept byte for byte.
pub(super) fn raw_json_body(ctx: &Ctx, req: &Request) -> Result<Bytes, Response> {
    check_json_type(ctx, req)?;
    check_utf8(&req.body)?;
    serde_json::from_slice::<serde::de::IgnoredAny>(&req.body)
        .map_err(|e| Response::error(400, &format!("invalid JSON: {e}")))?;
    Ok(req.body.clone())
}

/// The first byte that is not JSON whitespace: tells an object from a list before parsing.
pub(super) fn first_byte(body: &[u8]) -> Option<u8> {
    body.iter().copied().find(|b| !b.is_ascii_whitespace())
}
