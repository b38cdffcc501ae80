//! Splitting a knowledge document into retrieval-sized chunks.
//!
//! A document (plain text, Markdown or HTML) is first read into blocks —
//! headings and paragraphs — then grouped into sections under a heading path
//! ("Title > Section > Subsection"), and each section is packed into chunks of
//! at most `max_chars` characters. Whole paragraphs are kept together where
//! they fit; a longer paragraph is split at sentence boundaries, then at word
//! boundaries. Consecutive chunks of one section share about `overlap_chars`
//! characters (whole sentences or whole words) so that a passage cut at a
//! chunk boundary is still found in one piece.

use std::fmt;
use std::str::FromStr;

use ego_tree::iter::Edge;
use scraper::{Html, Node};
use serde::{Deserialize, Serialize};

/// How a document's content is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    Text,
    Markdown,
    Html,
}

impl ContentType {
    /// Parses the wire name (`text`, `markdown` or `html`, as serde writes it).
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "text" => Ok(Self::Text),
            "markdown" => Ok(Self::Markdown),
            "html" => Ok(Self::Html),
            other => Err(format!(
                "unknown content type {other:?}: expected text, markdown or html"
            )),
        }
    }

    /// The wire name.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Markdown => "markdown",
            Self::Html => "html",
        }
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ContentType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Chunk size limits, in characters (Unicode scalar values, not bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChunkOptions {
    /// Upper bound on a chunk's text; values below 1 are treated as 1.
    pub max_chars: usize,
    /// Roughly how much of a chunk's end is repeated at the start of the next
    /// chunk of the same section. Capped at half of `max_chars` so that every
    /// chunk is mostly new text.
    pub overlap_chars: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self {
            max_chars: 1000,
            overlap_chars: 150,
        }
    }
}

/// One chunk of a document, before it is stored and embedded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkDraft {
    /// Position in the document, from 0, without gaps.
    pub ordinal: u32,
    /// The heading path, "Title > Section > Subsection"; just the title before
    /// the first heading (empty when there is neither).
    pub heading: String,
    /// Normalized text: single spaces within paragraphs, paragraphs separated
    /// by a blank line.
    pub text: String,
}

/// Splits a document into chunks; empty or whitespace-only content gives none.
pub fn chunk_document(
    title: &str,
    content: &str,
    content_type: ContentType,
    options: &ChunkOptions,
) -> Vec<ChunkDraft> {
    let blocks = match content_type {
        ContentType::Text => text_blocks(content),
        ContentType::Markdown => markdown_blocks(content),
        ContentType::Html => html_blocks(content),
    };
    let max_chars = options.max_chars.max(1);
    let overlap_chars = options.overlap_chars.min(max_chars / 2);

    let mut drafts = Vec::new();
    for section in sections(title, blocks) {
        let units = units(&section.paragraphs, max_chars);
        for text in pack(&units, max_chars, overlap_chars) {
            drafts.push(ChunkDraft {
                ordinal: u32::try_from(drafts.len()).unwrap_or(u32::MAX),
                heading: section.heading.clone(),
                text,
            });
        }
    }
    drafts
}

/// A document read into its structure; text is already normalized and non-empty.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Block {
    Heading { level: u8, text: String },
    Paragraph(String),
}

/// Collapses every run of whitespace (and control characters) to one space.
fn normalize_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn push_paragraph(blocks: &mut Vec<Block>, raw: &str) {
    let text = normalize_whitespace(raw);
    if !text.is_empty() {
        blocks.push(Block::Paragraph(text));
    }
}

fn push_heading(blocks: &mut Vec<Block>, level: u8, raw: &str) {
    let text = normalize_whitespace(raw);
    if !text.is_empty() {
        blocks.push(Block::Heading { level, text });
    }
}

/// Plain text: paragraphs are separated by blank lines; there are no headings.
fn text_blocks(content: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut paragraph = String::new();
    for line in content.lines() {
        if line.trim().is_empty() {
            push_paragraph(&mut blocks, &paragraph);
            paragraph.clear();
        } else {
            paragraph.push_str(line);
            paragraph.push('\n');
        }
    }
    push_paragraph(&mut blocks, &paragraph);
    blocks
}

/// Markdown: ATX (`# …`) and setext (underlined) headings, paragraphs between
/// blank lines. A fenced code block stays one paragraph (its blank lines and
/// `#` comments are code, not structure); fence lines and thematic breaks are
/// dropped. Inline syntax is kept: it reads fine to a model and to a person.
fn markdown_blocks(content: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut paragraph = String::new();
    let mut fence: Option<(char, usize)> = None;
    for line in content.lines() {
        if let Some((marker, length)) = fence {
            if closes_fence(line, marker, length) {
                fence = None;
                push_paragraph(&mut blocks, &paragraph);
                paragraph.clear();
            } else {
                paragraph.push_str(line);
                paragraph.push('\n');
            }
            continue;
        }
        if let Some(opened) = opens_fence(line) {
            push_paragraph(&mut blocks, &paragraph);
            paragraph.clear();
            fence = Some(opened);
            continue;
        }
        if line.trim().is_empty() {
            push_paragraph(&mut blocks, &paragraph);
            paragraph.clear();
            continue;
        }
        if let Some((level, text)) = atx_heading(line) {
            push_paragraph(&mut blocks, &paragraph);
            paragraph.clear();
            push_heading(&mut blocks, level, text);
            continue;
        }
        if let Some(level) = setext_underline(line) {
            if !paragraph.trim().is_empty() {
                push_heading(&mut blocks, level, &paragraph);
                paragraph.clear();
                continue;
            }
        }
        if is_thematic_break(line) {
            push_paragraph(&mut blocks, &paragraph);
            paragraph.clear();
            continue;
        }
        paragraph.push_str(line);
        paragraph.push('\n');
    }
    // An unclosed fence runs to the end of the document, as in CommonMark.
    push_paragraph(&mut blocks, &paragraph);
    blocks
}

/// The line without up to three spaces of indentation, or `None` when it is
/// indented further (an indented code line in Markdown).
fn block_indent(line: &str) -> Option<&str> {
    let rest = line.trim_start_matches(' ');
    (line.len() - rest.len() <= 3).then_some(rest)
}

fn atx_heading(line: &str) -> Option<(u8, &str)> {
    let rest = block_indent(line)?;
    let marks = rest.len() - rest.trim_start_matches('#').len();
    let level = u8::try_from(marks)
        .ok()
        .filter(|level| (1..=6).contains(level))?;
    let after = &rest[marks..];
    if !(after.is_empty() || after.starts_with([' ', '\t'])) {
        return None; // "#hashtag" is text
    }
    let text = after.trim();
    // An optional closing run of '#' counts only after whitespace ("# C#" keeps its '#').
    let unclosed = text.trim_end_matches('#');
    let text = if unclosed.is_empty() {
        ""
    } else if unclosed.ends_with([' ', '\t']) {
        unclosed.trim_end()
    } else {
        text
    };
    Some((level, text))
}

fn setext_underline(line: &str) -> Option<u8> {
    let rest = block_indent(line)?.trim_end();
    if rest.is_empty() {
        None
    } else if rest.chars().all(|c| c == '=') {
        Some(1)
    } else if rest.chars().all(|c| c == '-') {
        Some(2)
    } else {
        None
    }
}

fn is_thematic_break(line: &str) -> bool {
    let Some(rest) = block_indent(line) else {
        return false;
    };
    let marks: Vec<char> = rest.chars().filter(|c| !c.is_whitespace()).collect();
    marks.len() >= 3 && matches!(marks[0], '-' | '*' | '_') && marks.iter().all(|&c| c == marks[0])
}

fn opens_fence(line: &str) -> Option<(char, usize)> {
    let rest = block_indent(line)?;
    let marker = rest.chars().next().filter(|c| matches!(c, '`' | '~'))?;
    let length = rest.len() - rest.trim_start_matches(marker).len();
    (length >= 3).then_some((marker, length))
}

fn closes_fence(line: &str, marker: char, length: usize) -> bool {
    let Some(rest) = block_indent(line) else {
        return false;
    };
    let after = rest.trim_start_matches(marker);
    rest.len() - after.len() >= length && after.trim().is_empty()
}

/// HTML: text of the body, split at block elements, with h1–h6 as headings.
///
/// scraper (html5ever underneath, the parser ammonia also uses) builds the tree
/// a browser would: unclosed tags, implied `<head>`/`<body>`, raw-text script
/// and style contents and entity decoding all follow the HTML standard, which
/// a small hand-written converter would get subtly wrong on real pages.
fn html_blocks(content: &str) -> Vec<Block> {
    let document = Html::parse_document(content);
    let mut blocks = Vec::new();
    let mut buffer = String::new();
    let mut heading: Option<u8> = None;
    // Depth inside elements whose content is not page text (script, style …).
    let mut hidden = 0usize;
    // traverse() walks the tree iteratively, so deep nesting cannot overflow the stack.
    for edge in document.tree.root().traverse() {
        match edge {
            Edge::Open(node) => match node.value() {
                Node::Element(element) => {
                    let name = element.name();
                    if is_hidden_element(name) {
                        hidden += 1;
                    } else if hidden > 0 {
                        // inside hidden content: nothing to do
                    } else if let Some(level) = heading_level(name) {
                        push_paragraph(&mut blocks, &buffer);
                        buffer.clear();
                        heading = Some(level);
                    } else {
                        element_boundary(name, heading.is_some(), &mut blocks, &mut buffer);
                    }
                }
                Node::Text(text) if hidden == 0 => buffer.push_str(text),
                _ => {}
            },
            Edge::Close(node) => {
                let Node::Element(element) = node.value() else {
                    continue;
                };
                let name = element.name();
                if is_hidden_element(name) {
                    hidden = hidden.saturating_sub(1);
                } else if hidden > 0 {
                    // inside hidden content: nothing to do
                } else if heading_level(name).is_some() {
                    if let Some(level) = heading.take() {
                        push_heading(&mut blocks, level, &buffer);
                        buffer.clear();
                    }
                } else {
                    element_boundary(name, heading.is_some(), &mut blocks, &mut buffer);
                }
            }
        }
    }
    push_paragraph(&mut blocks, &buffer);
    blocks
}

/// Where a block element opens or closes a paragraph ends (inside a heading, the
/// heading's text just gets a space); other word-breaking elements separate words.
fn element_boundary(name: &str, in_heading: bool, blocks: &mut Vec<Block>, buffer: &mut String) {
    if is_block_element(name) {
        if in_heading {
            buffer.push(' ');
        } else {
            push_paragraph(blocks, buffer);
            buffer.clear();
        }
    } else if is_word_break_element(name) {
        buffer.push(' ');
    }
}

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

/// Elements whose content a reader never sees as page text.
fn is_hidden_element(name: &str) -> bool {
    matches!(
        name,
        "head"
            | "script"
            | "style"
            | "noscript"
            | "template"
            | "svg"
            | "math"
            | "canvas"
            | "iframe"
            | "object"
    )
}

/// Elements that start and end a paragraph.
fn is_block_element(name: &str) -> bool {
    matches!(
        name,
        "address"
            | "article"
            | "aside"
            | "blockquote"
            | "body"
            | "caption"
            | "center"
            | "dd"
            | "details"
            | "dialog"
            | "div"
            | "dl"
            | "dt"
            | "fieldset"
            | "figcaption"
            | "figure"
            | "footer"
            | "form"
            | "header"
            | "hgroup"
            | "hr"
            | "html"
            | "legend"
            | "li"
            | "main"
            | "nav"
            | "ol"
            | "p"
            | "pre"
            | "section"
            | "summary"
            | "table"
            | "tbody"
            | "tfoot"
            | "thead"
            | "tr"
            | "ul"
    )
}

/// Elements that separate words without ending the paragraph.
fn is_word_break_element(name: &str) -> bool {
    matches!(name, "br" | "td" | "th" | "img" | "input")
}

/// Paragraphs under one heading path.
struct Section {
    heading: String,
    paragraphs: Vec<String>,
}

/// Groups blocks under their heading path; headings with no text under them
/// yield no section.
fn sections(title: &str, blocks: Vec<Block>) -> Vec<Section> {
    let title = normalize_whitespace(title);
    let mut stack: Vec<(u8, String)> = Vec::new();
    let mut sections = Vec::new();
    let mut current = Section {
        heading: heading_path(&title, &stack),
        paragraphs: Vec::new(),
    };
    for block in blocks {
        match block {
            Block::Heading { level, text } => {
                while stack.last().is_some_and(|(open, _)| *open >= level) {
                    stack.pop();
                }
                stack.push((level, text));
                let next = Section {
                    heading: heading_path(&title, &stack),
                    paragraphs: Vec::new(),
                };
                let done = std::mem::replace(&mut current, next);
                if !done.paragraphs.is_empty() {
                    sections.push(done);
                }
            }
            Block::Paragraph(text) => current.paragraphs.push(text),
        }
    }
    if !current.paragraphs.is_empty() {
        sections.push(current);
    }
    sections
}

/// "Title > Section > Subsection". A heading repeating its parent (a Markdown
/// file whose first line is `# Title`) is not repeated in the path.
fn heading_path(title: &str, stack: &[(u8, String)]) -> String {
    let mut parts: Vec<&str> = Vec::with_capacity(stack.len() + 1);
    if !title.is_empty() {
        parts.push(title);
    }
    for (_, text) in stack {
        if parts
            .last()
            .is_some_and(|last| last.to_lowercase() == text.to_lowercase())
        {
            continue;
        }
        parts.push(text);
    }
    parts.join(" > ")
}

/// What joins a unit to the one before it in the same chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Joint {
    /// A new paragraph: a blank line.
    Paragraph,
    /// The next sentence or word of the same paragraph.
    Space,
    /// The rest of a word too long for one chunk, or a sentence written
    /// without a space after its terminator (CJK).
    Glued,
}

impl Joint {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Paragraph => "\n\n",
            Self::Space => " ",
            Self::Glued => "",
        }
    }

    const fn chars(self) -> usize {
        self.as_str().len()
    }
}

/// The smallest piece the packer places: a paragraph, else a sentence, else a
/// word, else part of a word — whichever is the largest that fits in a chunk.
#[derive(Clone, Copy, Debug)]
struct Unit<'a> {
    joint: Joint,
    text: &'a str,
    chars: usize,
}

fn units(paragraphs: &[String], max_chars: usize) -> Vec<Unit<'_>> {
    let mut units = Vec::new();
    for paragraph in paragraphs {
        let mut joint = Joint::Paragraph;
        let chars = paragraph.chars().count();
        if chars <= max_chars {
            units.push(Unit {
                joint,
                text: paragraph,
                chars,
            });
            continue;
        }
        let mut previous_end = None;
        for (start, end) in sentence_ranges(paragraph) {
            if previous_end == Some(start) {
                joint = Joint::Glued;
            }
            previous_end = Some(end);
            let sentence = &paragraph[start..end];
            let chars = sentence.chars().count();
            if chars <= max_chars {
                units.push(Unit {
                    joint,
                    text: sentence,
                    chars,
                });
                joint = Joint::Space;
                continue;
            }
            // Paragraphs are normalized, so words are separated by single spaces.
            for word in sentence.split(' ') {
                let chars = word.chars().count();
                if chars <= max_chars {
                    units.push(Unit {
                        joint,
                        text: word,
                        chars,
                    });
                } else {
                    // A "word" longer than a chunk (a long URL, an encoded blob)
                    // has no better place to break; keeping the size bound matters
                    // more, because embedding models truncate long inputs.
                    for piece in char_pieces(word, max_chars) {
                        units.push(Unit {
                            joint,
                            text: piece,
                            chars: piece.chars().count(),
                        });
                        joint = Joint::Glued;
                    }
                }
                joint = Joint::Space;
            }
        }
    }
    units
}

/// Splits `text` into pieces of at most `max_chars` characters.
fn char_pieces(text: &str, max_chars: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = rest
            .char_indices()
            .nth(max_chars)
            .map_or(rest.len(), |(at, _)| at);
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？')
}

/// Terminators that end a sentence without a following space.
fn is_cjk_terminator(c: char) -> bool {
    matches!(c, '。' | '！' | '？')
}

/// Closing quotes and brackets that belong to the sentence they follow.
fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '”' | '’' | '»' | '」' | '』')
}

/// Byte ranges of the sentences of `text`, without surrounding whitespace. A
/// sentence ends at a terminator (with any closing quotes or brackets) that is
/// followed by whitespace or the end of the text; "3.5" and "e.g.x" do not end one.
fn sentence_ranges(text: &str) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if !is_terminator(c) {
            continue;
        }
        let mut end = at + c.len_utf8();
        let mut cjk = is_cjk_terminator(c);
        while let Some(&(next_at, next)) = chars.peek() {
            if is_terminator(next) || is_closer(next) {
                cjk |= is_cjk_terminator(next);
                end = next_at + next.len_utf8();
                chars.next();
            } else {
                break;
            }
        }
        let at_boundary = chars
            .peek()
            .is_none_or(|&(_, next)| next.is_whitespace() || cjk);
        if !at_boundary {
            continue;
        }
        if !text[start..end].trim().is_empty() {
            ranges.push((start, end));
        }
        while let Some(&(_, next)) = chars.peek() {
            if next.is_whitespace() {
                chars.next();
            } else {
                break;
            }
        }
        start = chars.peek().map_or(text.len(), |&(next_at, _)| next_at);
    }
    if !text[start..].trim().is_empty() {
        ranges.push((start, start + text[start..].trim_end().len()));
    }
    ranges
}

/// Packs units greedily into chunks of at most `max_chars` characters; each
/// new chunk of the section starts with the overlap tail of the previous one.
fn pack(units: &[Unit<'_>], max_chars: usize, overlap_chars: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut current_chars = 0;
    for unit in units {
        if current.is_empty() {
            current.push_str(unit.text);
            current_chars = unit.chars;
            continue;
        }
        if current_chars + unit.joint.chars() + unit.chars <= max_chars {
            current.push_str(unit.joint.as_str());
            current.push_str(unit.text);
            current_chars += unit.joint.chars() + unit.chars;
            continue;
        }
        // The tail must leave room for the unit that did not fit.
        let room = max_chars.saturating_sub(unit.chars + unit.joint.chars());
        let tail = overlap_tail(&current, overlap_chars.min(room)).to_owned();
        chunks.push(std::mem::take(&mut current));
        current_chars = tail.chars().count();
        current = tail;
        if !current.is_empty() {
            current.push_str(unit.joint.as_str());
            current_chars += unit.joint.chars();
        }
        current.push_str(unit.text);
        current_chars += unit.chars;
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The end of `text` to repeat at the start of the next chunk: at most
/// `budget` characters, starting at a word start (never the whole text).
/// Whole sentences are preferred when they fill at least half the budget;
/// otherwise as many trailing words as fit.
fn overlap_tail(text: &str, budget: usize) -> &str {
    let mut word_start = None;
    let mut sentence_start = None;
    let mut counted = 0;
    for (at, c) in text.char_indices().rev() {
        counted += 1;
        if counted > budget || at == 0 {
            break;
        }
        if !c.is_whitespace() && text[..at].ends_with(char::is_whitespace) {
            word_start = Some((at, counted));
            if starts_sentence(text, at) {
                sentence_start = Some((at, counted));
            }
        }
    }
    match (sentence_start, word_start) {
        (Some((at, chars)), _) if chars * 2 >= budget => &text[at..],
        (_, Some((at, _))) => &text[at..],
        _ => "",
    }
}

/// Whether the word at byte `at` opens a sentence (or a paragraph).
fn starts_sentence(text: &str, at: usize) -> bool {
    let before = &text[..at];
    if before.ends_with("\n\n") {
        return true;
    }
    before
        .trim_end()
        .trim_end_matches(is_closer)
        .ends_with(is_terminator)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(max_chars: usize, overlap_chars: usize) -> ChunkOptions {
        ChunkOptions {
            max_chars,
            overlap_chars,
        }
    }

    fn words(text: &str) -> Vec<&str> {
        text.split_whitespace().collect()
    }

    /// Checks the invariants every chunking must keep for one section whose
    /// text (in order) is `source`: size bound, word-aligned overlap, coverage.
    fn assert_covers(source: &str, chunks: &[ChunkDraft], opts: &ChunkOptions) {
        let source_words = words(source);
        let mut next = 0; // index in source_words of the first word not yet covered
        for (i, chunk) in chunks.iter().enumerate() {
            assert!(
                chunk.text.chars().count() <= opts.max_chars,
                "chunk {i} has {} chars",
                chunk.text.chars().count()
            );
            let chunk_words = words(&chunk.text);
            assert!(!chunk_words.is_empty());
            // The chunk's words are a contiguous run of the source starting at
            // or before the first uncovered word (overlap), ending past it.
            let start = (0..=next)
                .rev()
                .find(|&s| source_words[s..].starts_with(&chunk_words))
                .unwrap_or_else(|| panic!("chunk {i} is not a run of source words"));
            let end = start + chunk_words.len();
            assert!(end > next, "chunk {i} adds nothing");
            let overlap: usize = source_words[start..next]
                .iter()
                .map(|w| w.chars().count() + 1)
                .sum();
            assert!(
                overlap <= opts.overlap_chars + 2,
                "chunk {i} overlap {overlap}"
            );
            next = end;
        }
        assert_eq!(next, source_words.len(), "every word is covered");
    }

    #[test]
    fn content_type_parses_its_wire_names() {
        for ty in [ContentType::Text, ContentType::Markdown, ContentType::Html] {
            assert_eq!(ContentType::parse(ty.as_str()), Ok(ty));
            assert_eq!(ty.to_string().parse::<ContentType>(), Ok(ty));
            let json = serde_json::to_string(&ty).unwrap();
            assert_eq!(json, format!("\"{}\"", ty.as_str()));
            assert_eq!(serde_json::from_str::<ContentType>(&json).unwrap(), ty);
        }
        assert!(ContentType::parse("pdf").is_err());
        assert!(ContentType::parse("").is_err());
    }

    #[test]
    fn empty_content_gives_no_chunks() {
        for ty in [ContentType::Text, ContentType::Markdown, ContentType::Html] {
            for content in ["", "   ", "\n\n\t \n", "\u{a0}\r\n"] {
                let chunks = chunk_document("T", content, ty, &ChunkOptions::default());
                assert!(chunks.is_empty(), "{ty} {content:?}");
            }
        }
        let html = "<html><head><title>x</title><style>p{}</style></head><body> </body></html>";
        assert!(chunk_document("T", html, ContentType::Html, &ChunkOptions::default()).is_empty());
        assert!(chunk_document(
            "T",
            "# Only\n## Headings",
            ContentType::Markdown,
            &ChunkOptions::default()
        )
        .is_empty());
    }

    #[test]
    fn short_text_is_one_normalized_chunk() {
        let chunks = chunk_document(
            "  Opening   hours ",
            "We open\tat  nine.\r\nWe close at five.\n\n\nClosed on Sundays.",
            ContentType::Text,
            &ChunkOptions::default(),
        );
        assert_eq!(
            chunks,
            vec![ChunkDraft {
                ordinal: 0,
                heading: "Opening hours".into(),
                text: "We open at nine. We close at five.\n\nClosed on Sundays.".into(),
            }]
        );
    }

    #[test]
    fn markdown_headings_become_heading_paths() {
        let doc = "# Guide\n\nIntro text.\n\n## Pricing\n\nPlans start low.\n\n### Discounts\n\nStudents pay less.\n\n## Support\n\nEmail us.\n";
        let chunks = chunk_document(
            "Guide",
            doc,
            ContentType::Markdown,
            &ChunkOptions::default(),
        );
        let got: Vec<(u32, &str, &str)> = chunks
            .iter()
            .map(|c| (c.ordinal, c.heading.as_str(), c.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, "Guide", "Intro text."),
                (1, "Guide > Pricing", "Plans start low."),
                (2, "Guide > Pricing > Discounts", "Students pay less."),
                (3, "Guide > Support", "Email us."),
            ]
        );
    }

    #[test]
    fn markdown_text_before_any_heading_sits_under_the_title() {
        let chunks = chunk_document(
            "FAQ",
            "Preface.\n\nSetext\n======\n\nBody.\n\nSub\n---\nMore.",
            ContentType::Markdown,
            &ChunkOptions::default(),
        );
        let got: Vec<(&str, &str)> = chunks
            .iter()
            .map(|c| (c.heading.as_str(), c.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("FAQ", "Preface."),
                ("FAQ > Setext", "Body."),
                ("FAQ > Setext > Sub", "More.")
            ]
        );
    }

    #[test]
    fn markdown_heading_syntax_details() {
        assert_eq!(atx_heading("## Title ##"), Some((2, "Title")));
        assert_eq!(atx_heading("# C#"), Some((1, "C#")));
        assert_eq!(atx_heading("   ###### six"), Some((6, "six")));
        assert_eq!(atx_heading("####### seven"), None);
        assert_eq!(atx_heading("#hashtag"), None);
        assert_eq!(atx_heading("    # indented code"), None);
        assert!(is_thematic_break("* * *"));
        assert!(!is_thematic_break("- item"));
    }

    #[test]
    fn markdown_code_fences_are_not_structure() {
        let doc = "## Install\n\n```bash\n# not a heading\n\nrun   it\n```\n\nDone.";
        let chunks = chunk_document("", doc, ContentType::Markdown, &ChunkOptions::default());
        let got: Vec<(&str, &str)> = chunks
            .iter()
            .map(|c| (c.heading.as_str(), c.text.as_str()))
            .collect();
        assert_eq!(got, vec![("Install", "# not a heading run it\n\nDone.")]);
    }

    #[test]
    fn html_is_reduced_to_visible_text() {
        let html = r#"<!doctype html><html><head><title>Ignored</title>
            <style>body { color: red }</style><script>var secret = "x";</script></head>
            <body><nav><a href="/">Home</a></nav>
            <h1>Acme &amp; Sons</h1><p>We fix <b>bikes</b>&nbsp;and <a href="/cars">cars</a>.</p>
            <script>track()</script><noscript>Enable JS</noscript>
            <h2>Hours</h2><ul><li>Mon&ndash;Fri 9&ndash;5</li><li>Sat 10&ndash;2</li></ul>
            <table><tr><td>Phone</td><td>555</td></tr></table>
            <p>Line one<br>line two</p><div>unclosed <p>para"#;
        let chunks = chunk_document("Site", html, ContentType::Html, &ChunkOptions::default());
        let got: Vec<(&str, &str)> = chunks
            .iter()
            .map(|c| (c.heading.as_str(), c.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Site", "Home"),
                ("Site > Acme & Sons", "We fix bikes and cars."),
                (
                    "Site > Acme & Sons > Hours",
                    "Mon–Fri 9–5\n\nSat 10–2\n\nPhone 555\n\nLine one line two\n\nunclosed\n\npara"
                ),
            ]
        );
        for chunk in &chunks {
            for hidden in ["secret", "track", "color", "Ignored", "Enable"] {
                assert!(!chunk.text.contains(hidden), "{hidden} leaked");
            }
        }
    }

    #[test]
    fn paragraphs_are_packed_up_to_the_limit() {
        let paragraph = "Alpha beta gamma delta."; // 23 chars
        let doc = [paragraph; 6].join("\n\n");
        let chunks = chunk_document("", &doc, ContentType::Text, &options(60, 0));
        // Two paragraphs plus a blank line = 48 chars; a third would be 73.
        assert_eq!(chunks.len(), 3);
        for chunk in &chunks {
            assert_eq!(chunk.text, format!("{paragraph}\n\n{paragraph}"));
        }
        assert_eq!(
            chunks.iter().map(|c| c.ordinal).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn long_paragraphs_split_at_sentences_with_sentence_overlap() {
        let sentences: Vec<String> = (0..12)
            .map(|i| format!("Sentence number {i} talks about item {i}."))
            .collect();
        let doc = sentences.join(" ");
        let opts = options(200, 80);
        let chunks = chunk_document("", &doc, ContentType::Text, &opts);
        assert!(chunks.len() > 2);
        for chunk in &chunks {
            assert!(
                chunk.text.starts_with("Sentence number "),
                "{:?}",
                chunk.text
            );
            assert!(chunk.text.ends_with('.'), "{:?}", chunk.text);
        }
        // Each later chunk starts with whole sentences repeated from the one
        // before (the sentences are numbered, so a repeat is an overlap).
        for pair in chunks.windows(2) {
            let (s, e) = sentence_ranges(&pair[1].text)[0];
            assert!(pair[0].text.contains(&pair[1].text[s..e]), "{pair:?}");
        }
        assert_covers(&doc, &chunks, &opts);
    }

    #[test]
    fn sentences_longer_than_a_chunk_split_at_words() {
        let doc = (0..300)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let opts = options(100, 30);
        let chunks = chunk_document("T", &doc, ContentType::Text, &opts);
        assert!(chunks.len() > 10);
        assert_covers(&doc, &chunks, &opts);
        // The overlap is whole words and about the requested size.
        for pair in chunks.windows(2) {
            let first = words(&pair[1].text)[0];
            assert!(words(&pair[0].text).contains(&first));
        }
    }

    #[test]
    fn words_longer_than_a_chunk_are_cut_to_fit() {
        let blob = "x".repeat(250);
        let doc = format!("see {blob} end");
        let chunks = chunk_document("", &doc, ContentType::Text, &options(100, 20));
        assert!(chunks.iter().all(|c| c.text.chars().count() <= 100));
        let joined: String = chunks.iter().map(|c| c.text.replace(' ', "")).collect();
        assert_eq!(joined.matches('x').count(), 250);
        assert!(chunks.last().unwrap().text.ends_with("end"));
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        // Distinct words (the coverage check needs them); "żółw" is 4 chars, 7 bytes.
        let doc: String = (0..100).map(|i| format!("żółw{} ", i % 10)).collect();
        let opts = options(50, 10);
        let chunks = chunk_document("", &doc, ContentType::Text, &opts);
        assert!(chunks.iter().all(|c| c.text.chars().count() <= 50));
        assert!(chunks.iter().any(|c| c.text.chars().count() >= 40));
        assert_covers(&doc, &chunks, &opts);
    }

    #[test]
    fn overlap_stays_within_a_section() {
        let body = "Some words here. ".repeat(20);
        let doc = format!("# A\n\n{body}\n\n# B\n\nFresh start.");
        let chunks = chunk_document("", &doc, ContentType::Markdown, &options(120, 40));
        let b: Vec<&ChunkDraft> = chunks.iter().filter(|c| c.heading == "B").collect();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].text, "Fresh start.");
    }

    #[test]
    fn degenerate_options_still_terminate() {
        let doc = "One two three. Four five six.";
        for (max, overlap) in [(0, 0), (1, 5), (3, 100), (10, 10)] {
            let opts = options(max, overlap);
            let chunks = chunk_document("", doc, ContentType::Text, &opts);
            assert!(!chunks.is_empty());
            assert!(chunks.iter().all(|c| c.text.chars().count() <= max.max(1)));
        }
    }

    #[test]
    fn sentence_ranges_respect_decimals_quotes_and_cjk() {
        let text = "It costs 3.5 dollars. \"Really?\" Yes! 你好。再见。";
        let got: Vec<&str> = sentence_ranges(text)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect();
        assert_eq!(
            got,
            vec![
                "It costs 3.5 dollars.",
                "\"Really?\"",
                "Yes!",
                "你好。",
                "再见。"
            ]
        );
    }

    #[test]
    fn synthetic_documents_keep_every_invariant() {
        use crate::knowledge::synthetic::{SyntheticConfig, SyntheticCorpus};
        let corpus = SyntheticCorpus::generate(&SyntheticConfig {
            chunks: 40,
            ..SyntheticConfig::default()
        });
        // Make long single paragraphs with sentence ends sprinkled in.
        for (i, chunk) in corpus.chunks.iter().enumerate() {
            let text: String = chunk
                .text
                .split(' ')
                .enumerate()
                .map(|(j, w)| {
                    if (j + i) % 9 == 8 {
                        format!("{w}.")
                    } else {
                        w.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            let doc = format!("{text} {text} {text}");
            for (max, overlap) in [(80, 20), (200, 60), (333, 150), (1000, 150)] {
                let opts = options(max, overlap);
                let chunks = chunk_document("", &doc, ContentType::Text, &opts);
                assert_covers(&doc, &chunks, &opts);
            }
        }
    }
}
