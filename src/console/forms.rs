//! Query strings and form bodies (`application/x-www-form-urlencoded`), and
//! the values the console's filters take.

use std::collections::BTreeMap;

use keyward_core::KmsError;

/// A query string or form: the first value of each name, empty values left out.
pub(super) type Form = BTreeMap<String, String>;

/// Most characters of one value (longer ones are cut).
const MAX_VALUE: usize = 512;

/// Parses `a=1&b=x+y`.
pub(super) fn query(s: &str) -> Form {
    let mut out = Form::new();
    for (k, v) in form_urlencoded::parse(s.as_bytes()).take(64) {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        out.entry(k.into_owned()).or_insert_with(|| v.chars().take(MAX_VALUE).collect());
    }
    out
}

/// Builds a query string of the non-empty values.
pub(super) fn encode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    s.finish()
}

/// A time as a form gives it (`2026-12-01T10:00`, seconds optional, UTC), Unix ms.
pub(super) fn time_ms(field: &'static str, v: &str) -> Result<i64, KmsError> {
    let t = v.trim().replace(' ', "T");
    let t = if t.len() == 16 { format!("{t}:00") } else { t };
    let t = if t.len() == 10 { format!("{t}T00:00:00") } else { t };
    let parsed = humantime::parse_rfc3339_weak(t.trim_end_matches('Z'))
        .map_err(|_| KmsError::invalid(field, "a UTC date and time like 2026-12-01T10:00"))?;
    let ms = parsed
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| KmsError::invalid(field, "must be after 1970"))?
        .as_millis();
    i64::try_from(ms).map_err(|_| KmsError::invalid(field, "too far in the future"))
}

/// A time for a form field (`2026-12-01T10:00`, UTC).
#[cfg(test)]
pub(super) fn form_time(ms: i64) -> String {
    let mut s = rfc3339(ms);
    s.truncate(16);
    s
}

/// A time as pages show it: `2026-12-01 10:00:00Z`.
pub(super) fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A duration as a form gives it (`90d`, `12h`), ms.
pub(super) fn duration_ms(field: &'static str, v: &str) -> Result<i64, KmsError> {
    let d = humantime::parse_duration(v.trim())
        .map_err(|_| KmsError::invalid(field, "a duration like 90d or 12h"))?;
    i64::try_from(d.as_millis()).map_err(|_| KmsError::invalid(field, "too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_times_read_as_a_browser_sends_them() {
        let f = query("a=1&b=x+y%3Cz&a=2&empty=&c=%20%20");
        assert_eq!(f.get("a").map(String::as_str), Some("1"));
        assert_eq!(f.get("b").map(String::as_str), Some("x y<z"));
        assert!(!f.contains_key("empty") && !f.contains_key("c"));
        assert_eq!(encode([("k", "a b"), ("e", ""), ("x", "&")]), "k=a+b&x=%26");
        let ms = time_ms("start", "2026-12-01T10:00").unwrap();
        assert_eq!(ms, 1_796_119_200_000);
        assert_eq!(time_ms("start", "2026-12-01T10:00:00Z").unwrap(), ms);
        assert_eq!(time_ms("start", "2026-12-01").unwrap(), ms - 10 * 3_600_000);
        assert_eq!(form_time(ms), "2026-12-01T10:00");
        assert_eq!(rfc3339(ms), "2026-12-01T10:00:00Z");
        let e = time_ms("start", "yesterday").unwrap_err().public_message();
        assert!(e.contains("start"), "{e}");
        assert_eq!(duration_ms("period", "90d").unwrap(), 90 * 86_400_000);
        assert!(duration_ms("period", "soon").unwrap_err().public_message().contains("period"));
    }
}
