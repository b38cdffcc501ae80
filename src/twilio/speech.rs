//! An agent's reply reshaped for text-to-speech: a voice reads every
//! character it is given, so markdown syntax and URLs, fine on a screen,
//! come out as "asterisk asterisk" or a minute of letters.

/// `reply` as one line of plain sentences: markdown markers gone (the words
/// they mark kept; a link becomes its label), bare URLs dropped, whitespace
/// collapsed. A heading or list item without closing punctuation gets a full
/// stop, so the voice pauses where the eye would.
pub fn for_speech(reply: &str) -> String {
    let mut spoken = String::with_capacity(reply.len());
    for line in reply.lines() {
        let line = line.trim();
        if is_fence(line) || is_rule(line) {
            continue;
        }
        let (body, stands_alone) = block_body(line);
        let text = strip_urls(&strip_emphasis(&strip_links(body).replace('`', "")));
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        spoken.push_str(text);
        if stands_alone && !text.ends_with(['.', '!', '?', ':', ';', ',']) {
            spoken.push('.');
        }
        spoken.push(' ');
    }
    tidy(&spoken)
}

/// A code fence's marker line; the code between is read as text.
fn is_fence(line: &str) -> bool {
    line.starts_with("```") || line.starts_with("~~~")
}

/// A thematic break: `---`, `***`, `___` (spaces allowed between).
fn is_rule(line: &str) -> bool {
    let marks: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    marks.len() >= 3
        && ['-', '*', '_']
            .iter()
            .any(|&mark| marks.chars().all(|c| c == mark))
}

/// The line without its block marker (heading, list item, quote), and
/// whether it was a heading or list item, which reads as a sentence of its own.
fn block_body(line: &str) -> (&str, bool) {
    let mut line = line;
    while let Some(quoted) = line.strip_prefix('>') {
        line = quoted.trim_start();
    }
    let hashes = line.bytes().take_while(|&b| b == b'#').count();
    if (1..=6).contains(&hashes) {
        let rest = &line[hashes..];
        if rest.is_empty() || rest.starts_with(char::is_whitespace) {
            return (rest.trim_end_matches('#').trim(), true);
        }
    }
    for bullet in ["- ", "* ", "+ ", "• "] {
        if let Some(item) = line.strip_prefix(bullet) {
            return (item, true);
        }
    }
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if (1..=3).contains(&digits) {
        let rest = &line[digits..];
        if let Some(item) = rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
            return (item, true);
        }
    }
    (line, false)
}

/// `[label](url)` and `![alt](url)` become the label.
fn strip_links(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let (before, from_bracket) = rest.split_at(open);
        let after_bracket = &from_bracket[1..];
        let link = after_bracket.split_once(']').and_then(|(label, tail)| {
            let (_, after) = tail.strip_prefix('(')?.split_once(')')?;
            Some((label, after)).filter(|_| !label.contains('['))
        });
        match link {
            Some((label, after)) => {
                out.push_str(before.strip_suffix('!').unwrap_or(before));
                out.push_str(label);
                rest = after;
            }
            None => {
                out.push_str(before);
                out.push('[');
                rest = after_bracket;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Drops runs of `*` or `_` that open or close emphasis at a word's edge,
/// keeping those inside words (`snake_case`) or standing alone (`5 * 3`).
fn strip_emphasis(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let run_end = if c == '*' || c == '_' {
            i + chars[i..].iter().take_while(|&&next| next == c).count()
        } else {
            out.push(c);
            i += 1;
            continue;
        };
        let before = i.checked_sub(1).and_then(|k| chars.get(k)).copied();
        let after = chars.get(run_end).copied();
        let opens = after.is_some_and(|a| !a.is_whitespace())
            && before.is_none_or(|b| !b.is_alphanumeric());
        let closes = before.is_some_and(|b| !b.is_whitespace())
            && after.is_none_or(|a| !a.is_alphanumeric());
        let is_delimiter = run_end - i <= 3 && (opens || closes);
        if !is_delimiter {
            out.extend(&chars[i..run_end]);
        }
        i = run_end;
    }
    out
}

/// Whether a URL starts here: `http://`, `https://` or `www.`, any case.
fn starts_url(text: &str) -> bool {
    ["http://", "https://", "www."].iter().any(|scheme| {
        text.get(..scheme.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
    })
}

/// Drops bare URLs, keeping punctuation that ends the sentence around them.
fn strip_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut previous: Option<char> = None;
    while let Some(c) = text[at..].chars().next() {
        if previous.is_none_or(|p| !p.is_alphanumeric()) && starts_url(&text[at..]) {
            let rest = &text[at..];
            let end = rest
                .find(|c: char| c.is_whitespace() || matches!(c, ')' | ']' | '>' | '"' | '<'))
                .unwrap_or(rest.len());
            let url = rest[..end].trim_end_matches(['.', ',', ';', ':', '!', '?']);
            at += url.len();
            previous = url.chars().last();
            continue;
        }
        out.push(c);
        previous = Some(c);
        at += c.len_utf8();
    }
    out
}

/// One space between words, none before punctuation, no brackets left
/// empty by a removed URL, and no `:` or `,` left dangling before a full stop.
fn tidy(text: &str) -> String {
    let mut collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for empty in ["()", "[]", "<>"] {
        collapsed = collapsed.replace(empty, "");
    }
    let mut out = String::with_capacity(collapsed.len());
    for c in collapsed
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
    {
        if matches!(c, '.' | ',' | '!' | '?' | ';' | ':') {
            if out.ends_with(' ') {
                out.pop();
            }
            if matches!(c, '.' | '!' | '?') && out.ends_with([',', ':', ';']) {
                out.pop();
            }
            if out.is_empty() {
                continue;
            }
        }
        out.push(c);
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bold_and_emphasis_markers_go_and_their_words_stay() {
        assert_eq!(
            for_speech("This is **really** important."),
            "This is really important."
        );
        assert_eq!(for_speech("We *never* share it."), "We never share it.");
        assert_eq!(for_speech("Please _do_ call."), "Please do call.");
        assert_eq!(for_speech("A __big__ ***deal***."), "A big deal.");
        assert_eq!(for_speech("**Note:** bring ID."), "Note: bring ID.");
    }

    #[test]
    fn stars_and_underscores_that_are_not_emphasis_stay() {
        assert_eq!(
            for_speech("Use my_file_name here."),
            "Use my_file_name here."
        );
        assert_eq!(for_speech("It is 5 * 3."), "It is 5 * 3.");
    }

    #[test]
    fn inline_code_keeps_its_text() {
        assert_eq!(for_speech("Type `HELP` to reply."), "Type HELP to reply.");
    }

    #[test]
    fn code_fences_go_and_their_lines_are_read() {
        assert_eq!(
            for_speech("Run:\n```\nopen door\n```\nDone."),
            "Run: open door Done."
        );
    }

    #[test]
    fn headings_lose_their_hashes_and_read_as_sentences() {
        assert_eq!(
            for_speech("# Opening hours\nWe open at nine."),
            "Opening hours. We open at nine."
        );
        assert_eq!(for_speech("### Prices ###\nFrom $10."), "Prices. From $10.");
        assert_eq!(
            for_speech("## Questions?\nAsk away."),
            "Questions? Ask away."
        );
        assert_eq!(for_speech("#hashtag stays"), "#hashtag stays");
    }

    #[test]
    fn list_markers_go_and_items_read_as_sentences() {
        assert_eq!(
            for_speech("We offer:\n- Haircuts\n- Colour\n* Styling\n+ Shaves"),
            "We offer: Haircuts. Colour. Styling. Shaves."
        );
        assert_eq!(
            for_speech("Steps:\n1. Call us.\n2. Book a time\n10) Arrive early"),
            "Steps: Call us. Book a time. Arrive early."
        );
        assert_eq!(for_speech("• First\n• Second!"), "First. Second!");
    }

    #[test]
    fn a_number_that_starts_a_sentence_is_not_a_list_marker() {
        assert_eq!(
            for_speech("3.5 hours is the wait."),
            "3.5 hours is the wait."
        );
        assert_eq!(for_speech("2024 was busy."), "2024 was busy.");
    }

    #[test]
    fn quotes_and_rules_go() {
        assert_eq!(
            for_speech("> Quoted words.\n---\nAfter."),
            "Quoted words. After."
        );
        assert_eq!(for_speech("Before.\n* * *\nAfter."), "Before. After.");
    }

    #[test]
    fn links_become_their_labels() {
        assert_eq!(
            for_speech("See [our menu](https://a.example/menu) today."),
            "See our menu today."
        );
        assert_eq!(
            for_speech("Read the **[terms](https://a.example/t)**."),
            "Read the terms."
        );
        assert_eq!(
            for_speech("![Map](https://a.example/map.png) below."),
            "Map below."
        );
        assert_eq!(
            for_speech("An [unclosed bracket here."),
            "An [unclosed bracket here."
        );
        assert_eq!(for_speech("Pick [one] or [two]."), "Pick [one] or [two].");
    }

    #[test]
    fn bare_urls_go_and_the_sentence_is_tidied() {
        assert_eq!(
            for_speech("Visit https://a.example/book?x=1 to book."),
            "Visit to book."
        );
        assert_eq!(for_speech("Book at https://a.example/book."), "Book at.");
        assert_eq!(
            for_speech("Go to www.a.example, then call."),
            "Go to, then call."
        );
        assert_eq!(
            for_speech("Our site (HTTP://A.EXAMPLE) has it."),
            "Our site has it."
        );
        assert_eq!(for_speech("More: <https://a.example>."), "More.");
        assert_eq!(for_speech("https://a.example Call us."), "Call us.");
    }

    #[test]
    fn a_link_labelled_with_its_url_goes_entirely() {
        assert_eq!(
            for_speech("See [https://a.example](https://a.example) now."),
            "See now."
        );
    }

    #[test]
    fn words_that_only_contain_url_like_text_stay() {
        assert_eq!(
            for_speech("Email us at info@a.example."),
            "Email us at info@a.example."
        );
        assert_eq!(for_speech("The awww.wow case."), "The awww.wow case.");
        assert_eq!(
            for_speech("Our site is a.example."),
            "Our site is a.example."
        );
    }

    #[test]
    fn a_list_item_of_only_a_url_disappears() {
        assert_eq!(
            for_speech("Links:\n- https://a.example\n- Call us"),
            "Links: Call us."
        );
    }

    #[test]
    fn whitespace_and_newlines_collapse_and_punctuation_is_kept() {
        assert_eq!(
            for_speech("  Hello   there!\n\nHow are\tyou?\r\n  Fine ,  thanks . "),
            "Hello there! How are you? Fine, thanks."
        );
    }

    #[test]
    fn empty_and_markup_only_replies_are_empty() {
        assert_eq!(for_speech(""), "");
        assert_eq!(for_speech("  \n\n "), "");
        assert_eq!(for_speech("---\n```\n```\n# \n- https://a.example"), "");
    }

    #[test]
    fn unicode_text_passes_through() {
        assert_eq!(
            for_speech("**Café** ouvert à 9h — *bienvenue* 😀"),
            "Café ouvert à 9h — bienvenue 😀"
        );
    }
}
