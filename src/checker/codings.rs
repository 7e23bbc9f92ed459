//! Content codings (RFC 9110 section 8.4.1): a body the server compressed
//! is judged decoded, as a browser shows it, whether or not the check asked
//! for the coding, and within the same memory bound as any body.

use super::connect::Fail;
use crate::model::ErrorKind;

/// Decodes a body the server sent with `coding` (gzip, x-gzip, deflate, br;
/// RFC 9110 section 8.4.1), whether or not it was asked for: clients judge
/// what the server meant, not its wire bytes. At most `cap` decoded bytes
/// are kept, so a decompression bomb costs `cap` of memory; `true` when
/// there was more. A body cut short (by the read cap) decodes as far as it
/// goes. `identity` and unknown codings are left as they came.
pub fn decode(coding: &[u8], raw: &[u8], cap: usize) -> Result<(Vec<u8>, bool), Fail> {
    use std::io::Read;
    if raw.is_empty() {
        return Ok((Vec::new(), false));
    }
    let coding = String::from_utf8_lossy(coding).trim().to_ascii_lowercase();
    let reader: Box<dyn Read + '_> = match coding.as_str() {
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        // "deflate" is zlib-wrapped (RFC 9110); some servers send it raw.
        "deflate" if raw.first().is_some_and(|b| b & 0x0f == 8) => {
            Box::new(flate2::read::ZlibDecoder::new(raw))
        }
        "deflate" => Box::new(flate2::read::DeflateDecoder::new(raw)),
        "br" => Box::new(brotli::Decompressor::new(raw, 4096)),
        _ => return Ok((raw.to_vec(), false)),
    };
    let mut out = Vec::with_capacity(cap.min(256 * 1024));
    let result = reader.take(cap as u64 + 1).read_to_end(&mut out);
    if let Err(e) = result {
        if out.is_empty() {
            return Err(Fail::new(
                ErrorKind::Body,
                format!("decoding the {coding} body: {e}"),
            ));
        }
    }
    let more = out.len() > cap;
    out.truncate(cap);
    Ok((out, more))
}
