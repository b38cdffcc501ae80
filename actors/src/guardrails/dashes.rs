//! The first rule of the finalize chain: no em-dashes or en-dashes in a reply.
//!
//! Models lean on dashes in a way visitors read as machine-written; each one is
//! rewritten into the punctuation a person would type. A dash between two
//! numbers or words with no space around it is a range (`7–9`, `Monday–Friday`,
//! `$10–$20`) and becomes `to`; any other dash is a break in the sentence and
//! becomes a comma, or disappears where punctuation already stands beside it
//! or where it opens or ends the text.

/// Em dash, en dash, figure dash, horizontal bar.
fn is_dash(c: char) -> bool {
    matches!(c, '\u{2014}' | '\u{2013}' | '\u{2012}' | '\u{2015}')
}

fn is_range_end(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '$' | '€' | '£' | '%')
}

/// `text` with every dash rewritten, and how many there were.
pub fn rewrite_dashes(text: &str) -> (String, usize) {
    if !text.chars().any(is_dash) {
        return (text.to_owned(), 0);
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut rewritten = 0;
    let mut i = 0;
    while i < chars.len() {
        if !is_dash(chars[i]) {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // A run of dashes (`——`) counts as one.
        let mut end = i;
        while end < chars.len() && is_dash(chars[end]) {
            end += 1;
        }
        rewritten += 1;
        let before = i.checked_sub(1).map(|j| chars[j]);
        let after = chars.get(end).copied();
        let tight = before.is_some_and(is_range_end) && after.is_some_and(is_range_end);
        i = end;
        if tight && (before.is_some_and(char::is_numeric) || chars[end - 1] != '\u{2014}') {
            // `7–9`, `Monday–Friday`: a range. An em dash between words stays a break.
            out.push_str(" to ");
            continue;
        }
        // A break: drop the spaces around it, then decide what stands in for it.
        while out.ends_with(char::is_whitespace) {
            out.pop();
        }
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let next = chars.get(i).copied();
        let at_start = out.is_empty();
        let at_end = next.is_none();
        let punctuated = out.ends_with(|c: char| ",;:.!?(".contains(c))
            || next.is_some_and(|c| ",;:.!?)".contains(c));
        if at_end || punctuated {
            let closes = next.is_some_and(|c| ",;:.!?)".contains(c));
            if !at_start && !at_end && !closes && !out.ends_with('(') {
                out.push(' ');
            }
            continue;
        }
        if at_start {
            continue;
        }
        out.push_str(", ");
    }
    (out, rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(text: &str) -> String {
        rewrite_dashes(text).0
    }

    #[test]
    fn a_break_becomes_a_comma() {
        assert_eq!(
            rewrite("We open early — and close late."),
            "We open early, and close late."
        );
        assert_eq!(
            rewrite("It is fast—really fast."),
            "It is fast, really fast."
        );
        assert_eq!(
            rewrite("Parking is free – just ask."),
            "Parking is free, just ask."
        );
        assert_eq!(
            rewrite("Come by — we'd love to see you"),
            "Come by, we'd love to see you"
        );
    }

    #[test]
    fn ranges_become_to() {
        assert_eq!(
            rewrite("We open 7–9 on Saturdays."),
            "We open 7 to 9 on Saturdays."
        );
        assert_eq!(rewrite("Monday–Friday"), "Monday to Friday");
        assert_eq!(rewrite("from $10–$20"), "from $10 to $20");
        assert_eq!(rewrite("pages 3—5"), "pages 3 to 5");
    }

    #[test]
    fn dashes_beside_punctuation_or_at_the_edges_disappear() {
        assert_eq!(rewrite("Hello —, friend."), "Hello, friend.");
        assert_eq!(rewrite("All set — ."), "All set.");
        assert_eq!(rewrite("Thanks! — See you."), "Thanks! See you.");
        assert_eq!(rewrite("— Hello"), "Hello");
        assert_eq!(rewrite("Goodbye —"), "Goodbye");
        assert_eq!(rewrite("a ——— b"), "a, b");
        assert_eq!(rewrite("(— yes —)"), "(yes)");
    }

    #[test]
    fn counts_dashes_and_leaves_hyphens_and_dashless_text_alone() {
        assert_eq!(rewrite_dashes("a — b – c"), ("a, b, c".to_owned(), 2));
        let plain = "A well-known, 24-hour service: 9-5.";
        assert_eq!(rewrite_dashes(plain), (plain.to_owned(), 0));
    }

    #[test]
    fn no_dash_survives_and_a_second_pass_changes_nothing() {
        for text in [
            "—",
            "– –",
            "a—",
            "—a",
            "1–",
            "x — — y",
            " — ",
            "a\u{2015}b",
            "3\u{2012}4",
            "é—ü",
            "(— yes —)",
        ] {
            let (once, _) = rewrite_dashes(text);
            assert!(!once.chars().any(is_dash), "{text:?} -> {once:?}");
            assert_eq!(rewrite(&once), once, "{text:?}");
        }
    }
}
