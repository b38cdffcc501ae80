//! The text of a file attached to a knowledge base, in the document content
//! types the ingest stage chunks (text, markdown, html). PDFs are read with
//! `lopdf`; other binary kinds have no text to index.

use agentry_actors::knowledge::ContentType;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TextError {
    #[error("files of type {0} have no text to index")]
    Unsupported(String),
    #[error("the PDF could not be read: {0}")]
    Pdf(String),
    #[error("the file has no text to index")]
    Empty,
}

/// The document content type and text for a file of sniffed `content_type`.
/// CPU-bound for a PDF: run it off the async workers.
pub fn extract(content_type: &str, bytes: &[u8]) -> Result<(ContentType, String), TextError> {
    let (kind, text) = match content_type {
        "application/pdf" => (ContentType::Text, pdf_text(bytes)?),
        "text/html" => (
            ContentType::Html,
            String::from_utf8_lossy(bytes).into_owned(),
        ),
        "text/markdown" => (
            ContentType::Markdown,
            String::from_utf8_lossy(bytes).into_owned(),
        ),
        "text/plain" => (
            ContentType::Text,
            String::from_utf8_lossy(bytes).into_owned(),
        ),
        other => return Err(TextError::Unsupported(other.to_owned())),
    };
    if text.trim().is_empty() {
        return Err(TextError::Empty);
    }
    Ok((kind, text))
}

fn pdf_text(bytes: &[u8]) -> Result<String, TextError> {
    let document =
        lopdf::Document::load_mem(bytes).map_err(|error| TextError::Pdf(error.to_string()))?;
    let pages: Vec<u32> = document.get_pages().keys().copied().collect();
    let mut text = String::new();
    // Page by page: one page without extractable text does not lose the others.
    for page in pages {
        if let Ok(page_text) = document.extract_text(&[page]) {
            text.push_str(page_text.trim());
            text.push_str("\n\n");
        }
    }
    Ok(text)
}

/// A one-page PDF showing `line` in Helvetica (the tests' and the bench's).
#[doc(hidden)]
pub fn pdf_with_text(line: &str) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{dictionary, Object, Stream};
    let mut doc = lopdf::Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
    });
    let resources_id = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => font_id },
    });
    let content = Content {
        operations: vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 12.into()]),
            Operation::new("Td", vec![72.into(), 720.into()]),
            Operation::new("Tj", vec![Object::string_literal(line)]),
            Operation::new("ET", vec![]),
        ],
    };
    let content_id = doc.add_object(Stream::new(
        dictionary! {},
        content.encode().expect("encodes"),
    ));
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page",
        "Parent" => pages_id,
        "Contents" => content_id,
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => vec![page_id.into()],
            "Count" => 1,
            "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! {
        "Type" => "Catalog",
        "Pages" => pages_id,
    });
    doc.trailer.set("Root", catalog_id);
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).expect("an in-memory PDF saves");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pdfs_text_is_read_and_text_kinds_keep_their_markup() {
        let pdf = pdf_with_text("Our opening hours are nine to five");
        let (kind, text) = extract("application/pdf", &pdf).unwrap();
        assert_eq!(kind, ContentType::Text);
        assert!(
            text.contains("Our opening hours are nine to five"),
            "{text:?}"
        );
        assert_eq!(
            extract("text/markdown", b"# Prices").unwrap(),
            (ContentType::Markdown, "# Prices".to_owned())
        );
        assert_eq!(
            extract("text/html", b"<p>x</p>").unwrap().0,
            ContentType::Html
        );
        assert_eq!(extract("text/plain", b"  \n"), Err(TextError::Empty));
        assert!(matches!(
            extract("image/png", b"x"),
            Err(TextError::Unsupported(_))
        ));
        assert!(matches!(
            extract("application/pdf", b"%PDF-1.4 broken"),
            Err(TextError::Pdf(_))
        ));
    }
}
