//! A file's content type, told from its first bytes (magic numbers, then a
//! UTF-8 text check); the client's claim is never used. The name's extension
//! only tells apart kinds of text the bytes cannot (markdown from plain text).

/// How many leading bytes [`content_type`] looks at.
pub const SNIFF_BYTES: usize = 8192;

pub const OCTET_STREAM: &str = "application/octet-stream";

pub fn content_type(head: &[u8], name: &str) -> &'static str {
    if let Some(kind) = infer::get(head) {
        let mime = kind.mime_type();
        // Only names our column (and a Content-Type header) can hold as they are.
        let plain = mime
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"/.+-".contains(&b));
        return if plain && mime.contains('/') {
            mime
        } else {
            OCTET_STREAM
        };
    }
    if !is_text(head) {
        return OCTET_STREAM;
    }
    let extension = name
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_ascii_lowercase())
        .unwrap_or_default();
    let start = String::from_utf8_lossy(&head[..head.len().min(512)])
        .trim_start_matches('\u{feff}')
        .trim_start()
        .to_ascii_lowercase();
    if start.starts_with("<!doctype html")
        || start.starts_with("<html")
        || (matches!(extension.as_str(), "html" | "htm") && start.starts_with('<'))
    {
        "text/html"
    } else if matches!(extension.as_str(), "md" | "markdown") {
        "text/markdown"
    } else {
        "text/plain"
    }
}

/// UTF-8 (a character cut at the end of the sample is fine) with no NUL and
/// no control characters besides tab, newline, carriage return and form feed.
fn is_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(error) if error.error_len().is_none() => {
            std::str::from_utf8(&head[..error.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    !valid.is_empty()
        && !valid
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\u{c}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_kinds_come_from_their_magic_numbers_whatever_the_name() {
        assert_eq!(
            content_type(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj", "notes.txt"),
            "application/pdf"
        );
        assert_eq!(
            content_type(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "photo.html"),
            "image/png"
        );
        assert_eq!(
            content_type(&[0, 1, 2, 3, 0xff, 0xfe, 0], "data.md"),
            OCTET_STREAM
        );
    }

    #[test]
    fn text_is_told_apart_by_its_markup_and_then_its_extension() {
        assert_eq!(
            content_type(b"<!DOCTYPE html><html><body>Hi</body></html>", "page.txt"),
            "text/html"
        );
        assert_eq!(content_type(b"<p>hours</p>", "page.htm"), "text/html");
        assert_eq!(
            content_type(b"# Price list\n\n- one: 5 EUR", "prices.md"),
            "text/markdown"
        );
        assert_eq!(
            content_type("Öffnungszeiten: 9–17 Uhr".as_bytes(), "hours"),
            "text/plain"
        );
        // Markup is HTML whatever the name says.
        assert_eq!(
            content_type(b"<p>html in a .txt</p>", "page.txt"),
            "text/html"
        );
        assert_eq!(
            content_type(b"a <b>bold</b> claim", "notes.md"),
            "text/markdown"
        );
        // A multi-byte character cut by the sample's end is still text.
        assert_eq!(content_type(&"aé".as_bytes()[..2], "x.txt"), "text/plain");
        assert_eq!(content_type(b"bad \xff\xfe utf8", "x.txt"), OCTET_STREAM);
        assert_eq!(content_type(b"", "empty.txt"), OCTET_STREAM);
    }
}
