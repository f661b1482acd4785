//! Percent-decoding, for each place that reads part of a URL: a request's path (as routers
//! decode it for handlers), a query's parameter names (as forms encode them), and the
//! query of a Redis URL (as redis-rs reads it).

/// `text` with each `%` and two hex digits replaced by the byte they name, except the
/// bytes in `kept`, which stay escaped (in upper case, so that `%2f` and `%2F` read alike);
/// `+` is a space when `plus_is_space` (a form's encoding). A `%` not followed by two hex
/// digits stays as it is.
pub(crate) fn percent_decoded(text: &[u8], plus_is_space: bool, kept: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let escaped = match text.get(i + 1..i + 3) {
            Some(&[hi, lo]) if text[i] == b'%' => hex(hi).zip(hex(lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(b) if kept.contains(&b) => {
                out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
                i += 3;
            }
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None if plus_is_space && text[i] == b'+' => {
                out.push(b' ');
                i += 1;
            }
            None => {
                out.push(text[i]);
                i += 1;
            }
        }
    }
    out
}
