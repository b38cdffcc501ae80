//! `Range: bytes=…` on a download: one range of the forms `a-b`, `a-` and
//! `-n` (RFC 9110 §14.1.2). A header we do not serve (another unit, several
//! ranges, bad syntax) is ignored and the whole file sent, as the RFC allows.

use std::ops::Range;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    Full,
    /// End exclusive, within the file.
    Partial(Range<u64>),
    /// 416, with `Content-Range: bytes */size`.
    Unsatisfiable,
}

pub fn parse(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|value| value.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    let spec = spec.trim();
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let number = |text: &str| -> Option<u64> {
        let text = text.trim();
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // -n: the last n bytes.
        (true, _, Some(suffix)) => {
            if suffix == 0 || size == 0 {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial(size.saturating_sub(suffix)..size)
            }
        }
        (false, Some(start), end) if last.trim().is_empty() || end.is_some() => {
            if end.is_some_and(|end| end < start) {
                return RangeRequest::Full;
            }
            if start >= size {
                return RangeRequest::Unsatisfiable;
            }
            let end = end.map_or(size, |end| end.saturating_add(1).min(size));
            RangeRequest::Partial(start..end)
        }
        _ => RangeRequest::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn single_byte_ranges_of_each_form_are_cut_to_the_file() {
        let size = 1000;
        assert_eq!(parse(Some("bytes=0-99"), size), Partial(0..100));
        assert_eq!(parse(Some("bytes=900-"), size), Partial(900..1000));
        assert_eq!(parse(Some("bytes=-100"), size), Partial(900..1000));
        assert_eq!(parse(Some("bytes=-5000"), size), Partial(0..1000));
        assert_eq!(parse(Some("bytes=990-5000"), size), Partial(990..1000));
        assert_eq!(parse(Some("bytes=999-999"), size), Partial(999..1000));
    }

    #[test]
    fn ranges_past_the_end_are_unsatisfiable_and_others_ignored() {
        assert_eq!(parse(Some("bytes=1000-"), 1000), Unsatisfiable);
        assert_eq!(parse(Some("bytes=1000-1001"), 1000), Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 1000), Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-0"), 0), Unsatisfiable);
        for ignored in [
            None,
            Some("items=0-1"),
            Some("bytes=0-1,5-6"),
            Some("bytes=5-1"),
            Some("bytes=a-b"),
            Some("bytes=-"),
            Some("bytes=+1-2"),
            Some("bytes=12"),
        ] {
            assert_eq!(parse(ignored, 1000), Full, "{ignored:?}");
        }
    }
}
