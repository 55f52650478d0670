//! The line grammar of a chunked body (RFC 9112 §7.1): CRLF line ends, `chunk-size` and
//! `chunk-ext`.

use super::error::ResponseError;

/// Where the line at the start of `buf` ends (the index of its CR), once its CRLF is there.
/// Lines in a chunked body end with CRLF (RFC 9112 §7.1); a bare LF is an error at once, not
/// a reason to wait for more bytes.
pub(super) fn find_line_end(
    buf: &[u8],
    bare_lf: &'static str,
) -> Result<Option<usize>, ResponseError> {
    match buf.iter().position(|&b| b == b'\n') {
        None => Ok(None),
        Some(i) if i > 0 && buf[i - 1] == b'\r' => Ok(Some(i - 1)),
        Some(_) => Err(ResponseError::Chunked(bare_lf)),
    }
}

/// `chunk-size [ chunk-ext ]` (RFC 9112 §7.1): the size is hex digits only, the extensions
/// must follow the grammar and are ignored.
pub(super) fn parse_chunk_size(line: &[u8]) -> Result<u64, ResponseError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ResponseError::Chunked("invalid chunk size"));
    }
    let (hex, ext) = line.split_at(digits);
    let significant = &hex[hex.iter().take_while(|&&b| b == b'0').count()..];
    if significant.len() > 15 {
        return Err(ResponseError::Chunked("chunk size too large"));
    }
    let n = significant.iter().fold(0u64, |n, &b| {
        n * 16 + u64::from((b as char).to_digit(16).unwrap_or(0))
    });
    check_chunk_ext(ext)?;
    Ok(n)
}

/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`, with
/// `chunk-ext-val = token / quoted-string`.
fn check_chunk_ext(mut s: &[u8]) -> Result<(), ResponseError> {
    const BAD: ResponseError = ResponseError::Chunked("invalid chunk extension");
    while !s.is_empty() {
        s = skip_ows(s);
        if s.first() != Some(&b';') {
            return Err(BAD);
        }
        s = skip_ows(&s[1..]);
        let name = token_len(s);
        if name == 0 {
            return Err(BAD);
        }
        s = &s[name..];
        let rest = skip_ows(s);
        if rest.first() == Some(&b'=') {
            s = skip_ows(&rest[1..]);
            let len = if s.first() == Some(&b'"') {
                quoted_string_len(s).ok_or(BAD)?
            } else {
                token_len(s)
            };
            if len == 0 {
                return Err(BAD);
            }
            s = &s[len..];
        }
        // Whitespace must lead to another ';' (checked by the next round).
        if !s.is_empty() && skip_ows(s).is_empty() {
            return Err(BAD);
        }
    }
    Ok(())
}

fn skip_ows(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

/// Length of the `token` (RFC 9110 §5.6.2) at the start of `s`.
fn token_len(s: &[u8]) -> usize {
    s.iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        .count()
}

/// Length of the `quoted-string` (RFC 9110 §5.6.4) at the start of `s`, quotes included.
fn quoted_string_len(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                let c = *s.get(i + 1)?;
                if !(c == b'\t' || c == b' ' || c.is_ascii_graphic() || c >= 0x80) {
                    return None;
                }
                i += 2;
            }
            b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => i += 1,
            _ => return None,
        }
    }
    None
}
