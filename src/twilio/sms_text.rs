//! The text rules of the SMS channel: compliance keywords, how many segments
//! (billed parts) a message costs, fitting a reply into a few of them, and the
//! shape of an E.164 number.

/// A compliance keyword, which carriers require us to honour before anything
/// an agent would say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keyword {
    OptOut,
    OptIn,
    Help,
}

const KEYWORDS: [(&str, Keyword); 13] = [
    ("STOP", Keyword::OptOut),
    ("STOPALL", Keyword::OptOut),
    ("UNSUBSCRIBE", Keyword::OptOut),
    ("CANCEL", Keyword::OptOut),
    ("END", Keyword::OptOut),
    ("QUIT", Keyword::OptOut),
    ("REVOKE", Keyword::OptOut),
    ("OPTOUT", Keyword::OptOut),
    ("START", Keyword::OptIn),
    ("YES", Keyword::OptIn),
    ("UNSTOP", Keyword::OptIn),
    ("HELP", Keyword::Help),
    ("INFO", Keyword::Help),
];

/// The keyword a message is, if the whole message (trimmed, any ASCII case)
/// is exactly one. Anything more is a conversation, not a command, as with
/// Twilio's own filtering: `stop please` is not one, and neither is `STOP!`,
/// since a visitor writing "End!" or "Yes!" to an agent is usually answering it.
pub fn keyword(message: &str) -> Option<Keyword> {
    let word = message.trim();
    KEYWORDS
        .iter()
        .find(|(keyword, _)| keyword.eq_ignore_ascii_case(word))
        .map(|&(_, keyword)| keyword)
}

/// How an SMS is encoded, which sets how much text fits in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// The GSM 03.38 alphabet, 7 bits a character.
    Gsm7,
    /// Anything else: UTF-16 code units, 16 bits each.
    Ucs2,
}

/// The GSM 03.38 basic set, one septet each (its escape code left out).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                          ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The extension table, two septets each (escape + code); form feed included.
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// Septets a character takes in GSM-7, or None if it has no GSM-7 code.
fn septets(c: char) -> Option<usize> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// GSM-7 when every character has a GSM-7 code; one that does not (an emoji,
/// a curly quote, `…`) makes the whole message UCS-2.
pub fn encoding(text: &str) -> Encoding {
    if text.chars().all(|c| septets(c).is_some()) {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    }
}

/// How many segments `text` is sent as (0 for no text at all).
///
/// A single segment holds 160 septets or 70 UTF-16 units; a longer message
/// loses room to the concatenation header, 153 or 67 a segment. A character
/// is never split across two segments (an extension character's escape and
/// code, an emoji's surrogate pair), so a segment may end a unit short.
pub fn segments(text: &str) -> usize {
    let encoding = encoding(text);
    let (single, part) = match encoding {
        Encoding::Gsm7 => (160, 153),
        Encoding::Ucs2 => (70, 67),
    };
    let units = |c: char| match encoding {
        Encoding::Gsm7 => septets(c).unwrap_or(1),
        Encoding::Ucs2 => c.len_utf16(),
    };
    let total: usize = text.chars().map(units).sum();
    if total == 0 {
        return 0;
    }
    if total <= single {
        return 1;
    }
    let mut count = 1;
    let mut used = 0;
    for size in text.chars().map(units) {
        if used + size > part {
            count += 1;
            used = 0;
        }
        used += size;
    }
    count
}

/// `text` if it fits in `max_segments` (0 is read as 1: a message is at
/// least one segment), else as much of it as fits, cut where a reader
/// loses least: after the last whole sentence that fits, or else at the last
/// word that fits with an ellipsis to show the cut (`...` when the kept text
/// is GSM-7, since `…` would make it UCS-2 and halve the room). Never empty
/// for a non-empty `text`; cuts fall only between characters.
pub fn fit(text: &str, max_segments: usize) -> String {
    let max_segments = max_segments.max(1);
    let fits = |candidate: &str| segments(candidate) <= max_segments;
    if fits(text) {
        return text.to_owned();
    }
    // A character takes at least one unit, so no more characters than a
    // GSM-7 message's units can fit: that bounds the search.
    let most_chars = max_segments.saturating_mul(153).max(160);
    let boundaries: Vec<usize> = text
        .char_indices()
        .map(|(at, _)| at)
        .skip(1)
        .take(most_chars)
        .collect();
    // Segments only grow as a prefix grows (a prefix that turns UCS-2 only
    // takes more room), so the longest prefix that fits is found by halving.
    let fitting = boundaries.partition_point(|&end| fits(&text[..end]));
    let limit = match fitting.checked_sub(1).and_then(|i| boundaries.get(i)) {
        Some(&end) => end,
        None => return first_char(text),
    };

    if let Some(end) = last_sentence_end(text, limit) {
        return text[..end].to_owned();
    }
    let with_ellipsis = |kept: &str| {
        let ellipsis = match encoding(kept) {
            Encoding::Gsm7 => "...",
            Encoding::Ucs2 => "…",
        };
        Some(format!("{kept}{ellipsis}")).filter(|cut| fits(cut))
    };
    // A space at `limit` itself is a cut too: what comes before it fits.
    let space_at_limit = text[limit..]
        .starts_with(char::is_whitespace)
        .then_some(limit);
    let word_cut = text[..limit]
        .char_indices()
        .filter(|&(_, c)| c.is_whitespace())
        .map(|(at, _)| at)
        .chain(space_at_limit)
        .rev()
        .map(|at| text[..at].trim_end_matches(|c: char| c.is_whitespace() || ",;:".contains(c)))
        .filter(|kept| !kept.is_empty())
        .find_map(with_ellipsis);
    if let Some(cut) = word_cut {
        return cut;
    }
    // One word longer than the room: cut inside it, not inside a character.
    boundaries[..fitting]
        .iter()
        .rev()
        .map(|&end| &text[..end])
        .filter(|kept| !kept.chars().last().is_some_and(joins_next))
        .find_map(with_ellipsis)
        .unwrap_or_else(|| first_char(text))
}

/// The end (after the punctuation) of the last sentence that ends at or
/// before `limit`: `.`, `!` or `?` followed by a space or a newline.
fn last_sentence_end(text: &str, limit: usize) -> Option<usize> {
    let mut chars = text.char_indices().peekable();
    let mut last = None;
    while let Some((at, c)) = chars.next() {
        let end = at + c.len_utf8();
        if end > limit {
            break;
        }
        let followed_by_space = chars.peek().is_some_and(|&(_, next)| next.is_whitespace());
        if matches!(c, '.' | '!' | '?') && followed_by_space {
            last = Some(end);
        }
    }
    last
}

/// A character that binds to the one after it (a zero-width joiner inside an
/// emoji sequence), so a cut after it would leave half a symbol.
fn joins_next(c: char) -> bool {
    c == '\u{200D}'
}

fn first_char(text: &str) -> String {
    text.chars().take(1).collect()
}

/// Whether `number` has E.164's shape: `+`, then 8 to 15 digits, the first
/// not 0. Shape only, enough for the numbers Twilio sends us; a number a
/// person typed goes through `agentry_actors::contact::parse_phone`.
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_opt_out_synonym_is_an_opt_out() {
        for word in [
            "STOP",
            "STOPALL",
            "UNSUBSCRIBE",
            "CANCEL",
            "END",
            "QUIT",
            "REVOKE",
            "OPTOUT",
        ] {
            assert_eq!(keyword(word), Some(Keyword::OptOut), "{word}");
            assert_eq!(
                keyword(&word.to_lowercase()),
                Some(Keyword::OptOut),
                "{word}"
            );
        }
    }

    #[test]
    fn every_opt_in_and_help_synonym_is_recognised() {
        for word in ["START", "YES", "UNSTOP"] {
            assert_eq!(keyword(word), Some(Keyword::OptIn), "{word}");
            assert_eq!(
                keyword(&word.to_lowercase()),
                Some(Keyword::OptIn),
                "{word}"
            );
        }
        for word in ["HELP", "INFO"] {
            assert_eq!(keyword(word), Some(Keyword::Help), "{word}");
            assert_eq!(keyword(&word.to_lowercase()), Some(Keyword::Help), "{word}");
        }
    }

    #[test]
    fn keywords_ignore_case_and_surrounding_whitespace() {
        for message in [
            " stop ",
            "Stop",
            "sToP",
            "\tSTOP\n",
            "\r\nstop\r\n",
            "\u{a0}STOP",
        ] {
            assert_eq!(keyword(message), Some(Keyword::OptOut), "{message:?}");
        }
        assert_eq!(keyword("  Help  "), Some(Keyword::Help));
        assert_eq!(keyword("Yes\n"), Some(Keyword::OptIn));
    }

    #[test]
    fn only_a_whole_message_of_one_exact_word_is_a_keyword() {
        for message in [
            "",
            "   ",
            "stop please",
            "please stop",
            "STOP!",
            "stop.",
            "Yes!",
            "ST OP",
            "STOP ALL",
            "opt out",
            "stopp",
            "tops",
            "helpful",
            "information",
            "yes, book it",
            "\"STOP\"",
        ] {
            assert_eq!(keyword(message), None, "{message:?}");
        }
    }

    #[test]
    fn keywords_match_ascii_case_only() {
        // The dotted capital İ lowercases to "i̇" and is not ASCII: no match.
        assert_eq!(keyword("İNFO"), None);
        assert_eq!(keyword("ＳＴＯＰ"), None);
    }

    #[test]
    fn the_gsm_tables_have_their_sizes() {
        assert_eq!(GSM7_BASIC.chars().count(), 127);
        assert_eq!(GSM7_EXTENSION.chars().count(), 10);
    }

    #[test]
    fn gsm_text_stays_gsm_and_anything_else_is_ucs2() {
        assert_eq!(encoding(""), Encoding::Gsm7);
        assert_eq!(
            encoding("Hello @ £5, 50% off! Ça va? ÄÖÜ äöü ß"),
            Encoding::Gsm7
        );
        assert_eq!(encoding("Braces {x} [y] ~z | a^b \\ 5€"), Encoding::Gsm7);
        for text in [
            "café ☕",
            "it’s",
            "done…",
            "`code`",
            "Привет",
            "ç lowercase",
            "日本",
        ] {
            assert_eq!(encoding(text), Encoding::Ucs2, "{text}");
        }
    }

    #[test]
    fn gsm_segments_hold_160_alone_and_153_together() {
        assert_eq!(segments(""), 0);
        assert_eq!(segments("a"), 1);
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(306)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        assert_eq!(segments(&"a".repeat(459)), 3);
    }

    #[test]
    fn gsm_extension_characters_count_two() {
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        assert_eq!(segments(&format!("{}{{", "a".repeat(158))), 1);
        assert_eq!(segments(&format!("{}{{", "a".repeat(159))), 2);
    }

    #[test]
    fn an_extension_character_is_not_split_across_segments() {
        // 152 + 2 septets would need the escape in one segment, its code in
        // the next; the whole character moves on instead.
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(segments(&text), 3);
        let text = format!("{}€{}", "a".repeat(151), "a".repeat(153));
        assert_eq!(segments(&text), 2);
    }

    #[test]
    fn ucs2_segments_hold_70_alone_and_67_together_in_utf16_units() {
        assert_eq!(segments(&"é".repeat(70)), 1, "é is GSM-7");
        assert_eq!(segments(&"ж".repeat(70)), 1);
        assert_eq!(segments(&"ж".repeat(71)), 2);
        assert_eq!(segments(&"ж".repeat(134)), 2);
        assert_eq!(segments(&"ж".repeat(135)), 3);
        // An emoji is two UTF-16 units.
        assert_eq!(segments(&"😀".repeat(35)), 1);
        assert_eq!(segments(&"😀".repeat(36)), 2);
        // 33 pairs take 66 units; the 34th would straddle the segment.
        assert_eq!(segments(&"😀".repeat(67)), 3);
    }

    #[test]
    fn one_non_gsm_character_makes_the_whole_message_ucs2() {
        let text = format!("{}’", "a".repeat(100));
        assert_eq!(segments(&"a".repeat(100)), 1);
        assert_eq!(segments(&text), 2);
    }

    #[test]
    fn text_that_fits_is_returned_unchanged() {
        assert_eq!(fit("", 1), "");
        assert_eq!(fit("Hi there. See you.", 1), "Hi there. See you.");
        let long = "a".repeat(306);
        assert_eq!(fit(&long, 2), long);
    }

    #[test]
    fn text_is_cut_after_the_last_sentence_that_fits() {
        let first = "We open at nine tomorrow.";
        let second = " Bring your booking number!";
        let third = format!(" {}", "word ".repeat(40));
        let text = format!("{first}{second}{third}");
        assert_eq!(fit(&text, 1), format!("{first}{second}"));
    }

    #[test]
    fn a_sentence_ending_before_a_newline_counts() {
        let text = format!("Your table is booked?\n{}", "more ".repeat(40));
        assert_eq!(fit(&text, 1), "Your table is booked?");
    }

    #[test]
    fn a_full_stop_inside_a_word_is_not_a_sentence_end() {
        let text = format!("Version 3.14 of the app {}", "is great ".repeat(30));
        let cut = fit(&text, 1);
        assert!(cut.ends_with("..."), "{cut}");
        assert!(cut.len() > "Version 3.".len());
    }

    #[test]
    fn without_a_sentence_the_cut_is_at_a_word_with_a_gsm_ellipsis() {
        let text = "word ".repeat(50);
        let cut = fit(&text, 1);
        assert_eq!(cut, format!("{}...", "word ".repeat(31).trim_end()));
        assert_eq!(encoding(&cut), Encoding::Gsm7);
        assert_eq!(segments(&cut), 1);
    }

    #[test]
    fn a_ucs2_text_gets_the_single_character_ellipsis() {
        let text = "слово ".repeat(30);
        let cut = fit(&text, 1);
        assert!(cut.ends_with('…'), "{cut}");
        assert!(!cut.ends_with(" …"));
        assert_eq!(segments(&cut), 1);
    }

    #[test]
    fn the_ellipsis_follows_the_encoding_of_what_is_kept() {
        // The emoji that makes the whole text UCS-2 is cut away, so the kept
        // text is GSM-7 and must stay so.
        let text = format!("{} 😀", "word ".repeat(60));
        let cut = fit(&text, 1);
        assert!(cut.ends_with("..."), "{cut}");
        assert_eq!(encoding(&cut), Encoding::Gsm7);
    }

    #[test]
    fn clause_punctuation_is_not_left_before_the_ellipsis() {
        let text = "one, ".repeat(60);
        let cut = fit(&text, 1);
        assert!(cut.ends_with("one..."), "{cut}");
    }

    #[test]
    fn one_long_word_is_cut_between_characters() {
        let text = "ж".repeat(200);
        assert_eq!(fit(&text, 1), format!("{}…", "ж".repeat(69)));
        let text = "x".repeat(400);
        assert_eq!(fit(&text, 1), format!("{}...", "x".repeat(157)));
    }

    #[test]
    fn a_cut_does_not_end_on_an_emoji_joiner() {
        let family = "👨\u{200D}👩\u{200D}👧";
        let text = family.repeat(40);
        let cut = fit(&text, 1);
        assert!(!cut.trim_end_matches('…').ends_with('\u{200D}'), "{cut:?}");
        assert_eq!(segments(&cut), 1);
    }

    #[test]
    fn more_segments_keep_more_text() {
        let text = "Sentence number one is here. ".repeat(30);
        let lengths: Vec<usize> = (1..=4).map(|n| fit(&text, n).len()).collect();
        assert!(lengths.windows(2).all(|w| w[0] < w[1]), "{lengths:?}");
        assert_eq!(fit(&text, 0), fit(&text, 1));
    }

    #[test]
    fn e164_numbers_have_a_plus_and_8_to_15_digits_not_starting_with_0() {
        for number in [
            "+14155550100",
            "+442071838750",
            "+12345678",
            "+123456789012345",
        ] {
            assert!(is_e164(number), "{number}");
        }
        for number in [
            "",
            "+",
            "14155550100",
            "+1234567",
            "+1234567890123456",
            "+04155550100",
            "+1 415 555 0100",
            "+1-415-555-0100",
            "++14155550100",
            "+1415555010a",
            "+١٤١٥٥٥٥٠١٠٠",
            " +14155550100",
        ] {
            assert!(!is_e164(number), "{number}");
        }
    }

    fn texts() -> impl Strategy<Value = String> {
        prop_oneof![
            // Words and sentences over GSM-7, extension characters included.
            "[a-zA-Z0-9 .,!?\n€{}^\\[\\]~|]{0,900}",
            // Some UCS-2 in otherwise GSM-7 text.
            "[a-z .!?😀ж’…\u{200D}]{0,600}",
            // Anything at all.
            proptest::collection::vec(any::<char>(), 0..500).prop_map(String::from_iter),
        ]
    }

    proptest! {
        #[test]
        fn a_fitted_text_fits_and_is_a_prefix_of_the_text(text in texts()) {
            for max in 1..=4 {
                let cut = fit(&text, max);
                prop_assert!(segments(&cut) <= max, "{} segments for max {}", segments(&cut), max);
                prop_assert_eq!(cut.is_empty(), text.is_empty());
                let kept = cut.strip_suffix("...").or_else(|| cut.strip_suffix('…')).unwrap_or(&cut);
                prop_assert!(text.starts_with(kept) || text.starts_with(cut.as_str()));
                if segments(&text) <= max {
                    prop_assert_eq!(&cut, &text);
                }
                if encoding(&text) == Encoding::Gsm7 {
                    prop_assert_eq!(encoding(&cut), Encoding::Gsm7);
                }
            }
        }
    }
}
