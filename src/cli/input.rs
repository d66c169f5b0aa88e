//! Parsing what the user typed: `k=v` pairs, RFC 3339 times, base64
//! ciphertexts, and input read from a file or stdin.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::CliError;

/// A `k=v` flag value (labels, encryption context).
pub(crate) fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("{s:?} is not k=v"))
}

/// Repeated `k=v` flags as a map.
pub(crate) fn context(pairs: Vec<(String, String)>) -> HashMap<String, String> {
    pairs.into_iter().collect()
}

/// Reads all of a file, or stdin for none or `-`.
pub(crate) fn read_input(path: &Option<PathBuf>) -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    match path.as_deref() {
        None => std::io::stdin().read_to_end(&mut buf),
        Some(p) if p.as_os_str() == "-" => std::io::stdin().read_to_end(&mut buf),
        Some(p) => std::fs::File::open(p).and_then(|mut f| f.read_to_end(&mut buf)),
    }
    .map_err(|e| CliError::Input(format!("reading input: {e}")))?;
    Ok(buf)
}

/// A base64 ciphertext (surrounding whitespace ignored).
pub(crate) fn ciphertext(text: &str) -> Result<Vec<u8>, CliError> {
    B64.decode(text.trim()).map_err(|e| CliError::Input(format!("ciphertext is not valid base64: {e}")))
}

/// An optional `--field` RFC 3339 time as a protobuf timestamp.
pub(crate) fn rfc3339(field: &str, s: &Option<String>) -> Result<Option<prost_types::Timestamp>, CliError> {
    s.as_ref()
        .map(|s| {
            let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
                CliError::Input(format!("--{field} {s:?}: {e} (use RFC 3339, e.g. 2026-11-25T10:00:00Z)"))
            })?;
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            Ok(prost_types::Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_times() {
        assert_eq!(parse_pair("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_pair("nope").is_err());
        let t = rfc3339("since", &Some("1970-01-01T00:01:00Z".into())).unwrap().unwrap();
        assert_eq!(t.seconds, 60);
        let e = rfc3339("since", &Some("yesterday".into())).unwrap_err().to_string();
        assert!(e.contains("--since") && e.contains("RFC 3339"), "{e}");
        assert!(ciphertext(" AAEC\n").unwrap() == vec![0, 1, 2]);
    }
}
