//! PII scrubber: replaces emails, phone numbers, US social security numbers and
//! payment card numbers in free text with typed placeholders (`[EMAIL]`,
//! `[PHONE]`, `[SSN]`, `[CARD]`), and says how many of each it replaced.
//!
//! Pure functions, no I/O and no logging: a found value never leaves this module
//! except as its placeholder, so callers can record the counts (the
//! `voice_pii_audits` rows) without ever seeing what was removed.
//!
//! Candidates are found by a cheap hand-written scan (runs of ASCII digits joined
//! by `+ ( ) - .` and spaces; `@` with a local part and a domain), then validated:
//! cards by network prefix, length and Luhn; SSNs by the ranges the SSA never
//! issues; phone numbers by libphonenumber's metadata (the `phonenumber` crate).
//! Where candidates overlap, email beats card beats SSN beats phone. An
//! international number may carry its trunk prefix as `(0)` (`+44 (0)161 …`);
//! a national-format North American number must keep its 3-3-4 groups whole
//! (`2026-004512` is a reference, not 202-600-4512); `x204` right after a
//! number is its extension and stays.
//!
//! Speed: most text holds no digit and costs one scan; candidates whose digit
//! count no number of the region has never reach the parser, which costs
//! most of the time (see `docs/BENCHMARKS.md`, "PII scrubber").

use std::collections::HashMap;
use std::sync::OnceLock;

use phonenumber::country;
/// A default region for national-format phone numbers (`US`, `GB`, ...).
pub use phonenumber::country::Id as Region;
use phonenumber::metadata::DATABASE;
use phonenumber::PhoneNumber;

/// A kind of personal data the scrubber recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiKind {
    Email,
    Phone,
    Ssn,
    Card,
}

impl PiiKind {
    /// Every kind, in a stable order.
    pub const ALL: [PiiKind; 4] = [PiiKind::Email, PiiKind::Phone, PiiKind::Ssn, PiiKind::Card];

    /// The kind's name as stored in `voice_pii_audits.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Ssn => "ssn",
            PiiKind::Card => "card",
        }
    }

    /// The text that replaces a value of this kind.
    pub fn placeholder(self) -> &'static str {
        match self {
            PiiKind::Email => "[EMAIL]",
            PiiKind::Phone => "[PHONE]",
            PiiKind::Ssn => "[SSN]",
            PiiKind::Card => "[CARD]",
        }
    }
}

/// How many values of each kind one scrub replaced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PiiCounts {
    pub email: usize,
    pub phone: usize,
    pub ssn: usize,
    pub card: usize,
}

impl PiiCounts {
    /// The count for one kind.
    pub fn get(&self, kind: PiiKind) -> usize {
        match kind {
            PiiKind::Email => self.email,
            PiiKind::Phone => self.phone,
            PiiKind::Ssn => self.ssn,
            PiiKind::Card => self.card,
        }
    }

    /// All values replaced, of any kind.
    pub fn total(&self) -> usize {
        self.email + self.phone + self.ssn + self.card
    }

    /// True when nothing was replaced.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// The kinds found at least once, with their counts (one audit row each).
    pub fn iter(&self) -> impl Iterator<Item = (PiiKind, usize)> + '_ {
        PiiKind::ALL
            .into_iter()
            .map(|kind| (kind, self.get(kind)))
            .filter(|&(_, n)| n > 0)
    }

    fn bump(&mut self, kind: PiiKind) {
        match kind {
            PiiKind::Email => self.email += 1,
            PiiKind::Phone => self.phone += 1,
            PiiKind::Ssn => self.ssn += 1,
            PiiKind::Card => self.card += 1,
        }
    }
}

/// The scrubbed text and what was taken out of it.
///
/// `Debug` is safe to log: `text` holds placeholders, never the values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scrubbed {
    pub text: String,
    pub counts: PiiCounts,
}

/// A scrubber bound to the region national-format phone numbers are read in.
///
/// Numbers written with a leading `+` are read on their own country code whatever
/// the region; without a region, only those are recognised as phone numbers.
#[derive(Clone, Copy, Debug)]
pub struct Scrubber {
    region: Option<country::Id>,
    /// What a national-format number in `region` can look like, to spare the
    /// parser candidates that cannot be one.
    national: Option<&'static Lengths>,
}

impl Default for Scrubber {
    /// National formats are read as US numbers.
    fn default() -> Self {
        Scrubber::new(Some(country::Id::US))
    }
}

impl Scrubber {
    /// A scrubber reading national-format numbers as `default_region`'s.
    pub fn new(default_region: Option<country::Id>) -> Self {
        // The parser unwraps the region's metadata; a region without any is no region.
        let region = default_region.filter(|id| DATABASE.by_id(id.as_ref()).is_some());
        let national = region.and_then(|id| tables().national.get(id.as_ref()));
        Scrubber { region, national }
    }

    /// The region national-format numbers are read in, if any.
    pub fn region(&self) -> Option<country::Id> {
        self.region
    }

    /// Where `text` holds PII, in order: emails first, then numbers in the text
    /// between them.
    fn spans(&self, text: &str) -> Vec<Span> {
        let mut spans = Vec::new();
        find_emails(text, &mut spans);
        let emails = spans.len();
        // Most chat text holds no digit at all.
        if next_digit(text.as_bytes(), 0).is_none() {
            return spans;
        }
        let mut finder = NumberFinder::new(text, self.region, self.national);
        let mut from = 0;
        for e in 0..emails {
            let (start, end) = (spans[e].start, spans[e].end);
            finder.find(from, start, &mut spans);
            from = end;
        }
        finder.find(from, text.len(), &mut spans);
        spans.sort_unstable_by_key(|s| s.start);
        spans
    }

    /// Replaces every email, phone number, SSN and card number in `text` with its
    /// placeholder.
    pub fn scrub(&self, text: &str) -> Scrubbed {
        let spans = self.spans(text);

        let mut counts = PiiCounts::default();
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for span in &spans {
            out.push_str(&text[last..span.start]);
            out.push_str(span.kind.placeholder());
            counts.bump(span.kind);
            last = span.end;
        }
        out.push_str(&text[last..]);
        Scrubbed { text: out, counts }
    }
}

/// Scrubs `text`, reading national-format phone numbers as `default_region`'s.
///
/// Builds a [`Scrubber`] per call; it is cheap, but a caller scrubbing many texts
/// may keep one.
pub fn scrub(text: &str, default_region: Option<country::Id>) -> Scrubbed {
    Scrubber::new(default_region).scrub(text)
}

/// A byte range of the input and what it holds.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    end: usize,
    kind: PiiKind,
}

// ---------------------------------------------------------------------------
// Emails

fn is_local_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// Appends the emails in `text`, in order and not overlapping.
fn find_emails(text: &str, spans: &mut Vec<Span>) {
    let bytes = text.as_bytes();
    let mut floor = 0;
    for (at, _) in text.match_indices('@') {
        if at < floor {
            continue;
        }
        let mut start = at;
        while start > floor && is_local_byte(bytes[start - 1]) {
            start -= 1;
        }
        while start < at && bytes[start] == b'.' {
            start += 1;
        }
        if start == at {
            continue;
        }
        if let Some(end) = domain_end(bytes, at + 1) {
            spans.push(Span {
                start,
                end,
                kind: PiiKind::Email,
            });
            floor = end;
        }
    }
}

/// The end of the longest domain starting at `from`: two or more labels, the
/// last alphabetic; a label is never cut short, so the domain ends where a label
/// does.
fn domain_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut best = None;
    let mut labels = 0;
    let mut i = from;
    loop {
        let start = i;
        while i < bytes.len() && is_label_byte(bytes[i]) {
            i += 1;
        }
        let label = &bytes[start..i];
        if label.is_empty()
            || label.len() > 63
            || label[0] == b'-'
            || label[label.len() - 1] == b'-'
        {
            return best;
        }
        labels += 1;
        if labels >= 2 && label.len() >= 2 && label.iter().all(u8::is_ascii_alphabetic) {
            best = Some(i);
        }
        if i + 1 < bytes.len() && bytes[i] == b'.' && is_label_byte(bytes[i + 1]) {
            i += 1;
        } else {
            return best;
        }
    }
}

// ---------------------------------------------------------------------------
// Numbers: cards, SSNs and phone numbers

/// Where the first ASCII digit at or after `from` is.
fn next_digit(bytes: &[u8], from: usize) -> Option<usize> {
    // Chat text is mostly letters: test 16 bytes at once (the compiler
    // vectorises the branch-free fold), then find the digit in the block.
    const BLOCK: usize = 16;
    let mut i = from;
    while i + BLOCK <= bytes.len() {
        let block = &bytes[i..i + BLOCK];
        if block.iter().fold(false, |any, b| any | b.is_ascii_digit()) {
            break;
        }
        i += BLOCK;
    }
    bytes[i..]
        .iter()
        .position(u8::is_ascii_digit)
        .map(|p| i + p)
}

/// Separator characters allowed between the digit groups of one run.
fn is_sep(b: u8) -> bool {
    matches!(b, b' ' | b'-' | b'.' | b'(' | b')')
}

/// Characters that, touching a digit group, make it part of something else: a
/// word, an identifier (VINs, UUIDs), a path or date, an amount, a percentage.
fn taints(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '@' | '/' | '\\' | '$' | '€' | '£' | '¥' | '%')
}

/// `x204` right after a number: its extension, which leaves the number a number.
fn is_extension(rest: &str) -> bool {
    let Some(tail) = rest.strip_prefix(['x', 'X']) else {
        return false;
    };
    let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
    (1..=6).contains(&digits) && !tail[digits..].chars().next().is_some_and(taints)
}

/// The longest window of groups tried for a phone number (`+33 1 23 45 67 89`).
const PHONE_MAX_GROUPS: usize = 6;
/// The longest window of groups tried for a card number (`4111 1111 1111 1111 111`).
const CARD_MAX_GROUPS: usize = 5;

/// One maximal digit run in the input: its digit groups as byte ranges.
struct Run {
    /// Where the run starts: its `+` or `(` if it has one, else its first digit.
    start: usize,
    plus: bool,
    groups: Vec<(usize, usize)>,
    /// Groups that touch a tainting character.
    tainted: Vec<bool>,
    /// Groups already taken by a card, SSN or phone number.
    used: Vec<bool>,
}

struct NumberFinder<'t> {
    text: &'t str,
    bytes: &'t [u8],
    region: Option<country::Id>,
    national: Option<&'static Lengths>,
    run: Run,
    digits: String,
}

impl<'t> NumberFinder<'t> {
    fn new(text: &'t str, region: Option<country::Id>, national: Option<&'static Lengths>) -> Self {
        NumberFinder {
            text,
            bytes: text.as_bytes(),
            region,
            national,
            run: Run {
                start: 0,
                plus: false,
                groups: Vec::new(),
                tainted: Vec::new(),
                used: Vec::new(),
            },
            digits: String::new(),
        }
    }

    /// Appends the cards, SSNs and phone numbers within `lo..hi`.
    fn find(&mut self, lo: usize, hi: usize, spans: &mut Vec<Span>) {
        let bytes = self.bytes;
        let mut i = lo;
        while i < hi {
            // A run starts at a digit, or at a `+` or `(` right before one.
            let Some(d) = next_digit(&bytes[..hi], i) else {
                return;
            };
            let start = if d > i && matches!(bytes[d - 1], b'+' | b'(') {
                d - 1
            } else {
                d
            };
            i = self.read_run(start, hi);
            self.match_run(spans);
        }
    }

    /// Reads the run starting at `start` into `self.run`; returns where it ends.
    fn read_run(&mut self, start: usize, hi: usize) -> usize {
        let bytes = self.bytes;
        let run = &mut self.run;
        run.start = start;
        run.plus = bytes[start] == b'+';
        run.groups.clear();
        let mut i = if bytes[start].is_ascii_digit() {
            start
        } else {
            start + 1
        };
        loop {
            let g = i;
            while i < hi && bytes[i].is_ascii_digit() {
                i += 1;
            }
            run.groups.push((g, i));
            let sep = i;
            while i < hi && i - sep < 4 && is_sep(bytes[i]) {
                i += 1;
            }
            let sep_ok = {
                let s = &bytes[sep..i];
                s.len() <= 3 && (s == b"." || !s.contains(&b'.'))
            };
            if !(sep_ok && i > sep && i < hi && bytes[i].is_ascii_digit()) {
                i = sep;
                break;
            }
        }
        let n = run.groups.len();
        run.tainted.clear();
        run.tainted.resize(n, false);
        run.used.clear();
        run.used.resize(n, false);
        // A leading `+` or `(` already sets the run apart from what precedes it.
        let before = self.text[..start].chars().next_back();
        if bytes[start].is_ascii_digit() && before.is_some_and(taints) {
            run.tainted[0] = true;
        }
        let after = &self.text[i..];
        if after.chars().next().is_some_and(taints) && !is_extension(after) {
            run.tainted[n - 1] = true;
        }
        i
    }

    /// The separator between group `k - 1` and group `k`.
    fn sep(&self, k: usize) -> &'t [u8] {
        &self.bytes[self.run.groups[k - 1].1..self.run.groups[k].0]
    }

    /// A window `i..=j` of the run that lies inside a dotted number (a decimal,
    /// a version, an address) rather than being the whole of it.
    fn inside_dotted(&self, i: usize, j: usize) -> bool {
        (i > 0 && self.sep(i) == b".") || (j + 1 < self.run.groups.len() && self.sep(j + 1) == b".")
    }

    fn window_free(&self, i: usize, j: usize) -> bool {
        (i..=j).all(|k| !self.run.used[k] && !self.run.tainted[k])
    }

    fn digit_count(&self, i: usize, j: usize) -> usize {
        self.run.groups[i..=j].iter().map(|(s, e)| e - s).sum()
    }

    fn collect_digits(&mut self, i: usize, j: usize) {
        self.digits.clear();
        for &(s, e) in &self.run.groups[i..=j] {
            self.digits.push_str(&self.text[s..e]);
        }
    }

    fn take(
        &mut self,
        i: usize,
        j: usize,
        start: usize,
        end: usize,
        kind: PiiKind,
        spans: &mut Vec<Span>,
    ) {
        for k in i..=j {
            self.run.used[k] = true;
        }
        spans.push(Span { start, end, kind });
    }

    /// Finds cards, then SSNs, then phone numbers among the run's groups, each
    /// kind taking only groups no earlier kind took; longest window first.
    fn match_run(&mut self, spans: &mut Vec<Span>) {
        let n = self.run.groups.len();
        let mut i = 0;
        while i < n {
            let mut next = i + 1;
            for j in (i..n.min(i + CARD_MAX_GROUPS)).rev() {
                if self.is_card(i, j) {
                    let (s, e) = (self.run.groups[i].0, self.run.groups[j].1);
                    self.take(i, j, s, e, PiiKind::Card, spans);
                    next = j + 1;
                    break;
                }
            }
            i = next;
        }
        let mut i = 0;
        while i + 2 < n {
            if self.is_ssn(i) {
                let (s, e) = (self.run.groups[i].0, self.run.groups[i + 2].1);
                self.take(i, i + 2, s, e, PiiKind::Ssn, spans);
                i += 3;
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < n {
            let mut next = i + 1;
            // One more group for a trunk prefix: `+33 (0)1 23 45 67 89`.
            for j in (i..n.min(i + PHONE_MAX_GROUPS + 1)).rev() {
                if let Some((s, e)) = self.phone_span(i, j) {
                    self.take(i, j, s, e, PiiKind::Phone, spans);
                    next = j + 1;
                    break;
                }
            }
            i = next;
        }
    }

    fn is_card(&mut self, i: usize, j: usize) -> bool {
        if !self.window_free(i, j) || self.inside_dotted(i, j) {
            return false;
        }
        let len = self.digit_count(i, j);
        if !(13..=19).contains(&len) {
            return false;
        }
        if j > i {
            let first = self.sep(i + 1);
            if !(first == b" " || first == b"-") || (i + 2..=j).any(|k| self.sep(k) != first) {
                return false;
            }
            // Cards are printed in groups of four to six, the last maybe shorter.
            if self.run.groups[i..j]
                .iter()
                .any(|(s, e)| !(4..=6).contains(&(e - s)))
            {
                return false;
            }
        }
        self.collect_digits(i, j);
        card_network_fits(self.digits.as_bytes()) && luhn_valid(self.digits.as_bytes())
    }

    fn is_ssn(&mut self, i: usize) -> bool {
        let j = i + 2;
        if !self.window_free(i, j) || self.inside_dotted(i, j) {
            return false;
        }
        let groups = &self.run.groups[i..=j];
        if groups.iter().map(|(s, e)| e - s).ne([3, 2, 4]) {
            return false;
        }
        let sep = self.sep(i + 1);
        if !(sep == b"-" || sep == b" ") || self.sep(i + 2) != sep {
            return false;
        }
        self.collect_digits(i, j);
        ssn_valid(self.digits.as_bytes())
    }

    /// The span of a phone number made of groups `i..=j`, if they are one.
    fn phone_span(&mut self, i: usize, j: usize) -> Option<(usize, usize)> {
        let international = i == 0 && self.run.plus;
        // `+44 (0)161 …`: the trunk prefix callers from abroad leave out.
        let trunk = international && j >= 2 && self.is_paren_trunk(1);
        if !self.window_free(i, j)
            || self.inside_dotted(i, j)
            || j + 1 - i - usize::from(trunk) > PHONE_MAX_GROUPS
        {
            return None;
        }
        let digits = self.digit_count(i, j) - usize::from(trunk);
        if !(7..=15).contains(&digits) || self.looks_like_date(i, j) {
            return None;
        }
        if !international && self.region.is_none() {
            return None;
        }
        self.collect_digits(i, j);
        let code_len = self.run.groups[0].1 - self.run.groups[0].0;
        let possible = if international {
            international_length_possible(&self.digits)
                || trunk && {
                    let without = [&self.digits[..code_len], &self.digits[code_len + 1..]].concat();
                    international_length_possible(&without)
                }
        } else {
            self.national.is_none_or(|l| l.possible(&self.digits))
        };
        if !possible {
            return None;
        }
        // Where the window's groups meet, counted in digits from its end.
        let mut boundaries = [0; PHONE_MAX_GROUPS + 1];
        let mut from_end = 0;
        for (k, &(s, e)) in self.run.groups[i + 1..=j].iter().enumerate().rev() {
            from_end += e - s;
            boundaries[k] = from_end;
        }
        let shape = Shape {
            international,
            trunk: trunk.then_some(code_len),
            boundaries: &boundaries[..j - i],
        };
        let groups = &self.run.groups;
        let start = if i == 0 {
            self.run.start
        } else if self.bytes[groups[i].0 - 1] == b'(' {
            groups[i].0 - 1
        } else {
            groups[i].0
        };
        let mut end = groups[j].1;
        let opened = self.bytes[start..end]
            .iter()
            .filter(|&&b| b == b'(')
            .count();
        let closed = self.bytes[start..end]
            .iter()
            .filter(|&&b| b == b')')
            .count();
        if opened == closed + 1 && self.bytes.get(end) == Some(&b')') {
            end += 1;
        }
        if !parens_balanced(&self.bytes[start..end]) {
            return None;
        }
        let candidate = &self.text[start..end];
        valid_phone(candidate, &self.digits, &shape, self.region).then_some((start, end))
    }

    /// Whether group `k` is a lone `0` in parentheses: `(0)`.
    fn is_paren_trunk(&self, k: usize) -> bool {
        let (s, e) = self.run.groups[k];
        &self.bytes[s..e] == b"0"
            && k + 1 < self.run.groups.len()
            && self.sep(k).ends_with(b"(")
            && self.sep(k + 1).starts_with(b")")
    }

    /// `2026-12-01`, `01.12.2026`, `12 01 2026`: a date, however valid as a number.
    fn looks_like_date(&self, i: usize, j: usize) -> bool {
        if j != i + 2 || self.sep(i + 1) != self.sep(i + 2) || self.sep(i + 1).len() != 1 {
            return false;
        }
        let len = |k: usize| self.run.groups[k].1 - self.run.groups[k].0;
        matches!(
            (len(i), len(i + 1), len(i + 2)),
            (4, 1..=2, 1..=2) | (1..=2, 1..=2, 4)
        )
    }
}

/// A set of number lengths, one bit per length.
#[derive(Clone, Copy, Debug, Default)]
struct LengthSet {
    /// Every length: the metadata lists none.
    any: bool,
    bits: u32,
}

impl LengthSet {
    /// The lengths listed; every length when none is. (No number is longer
    /// than 17 digits.)
    fn of(lengths: &[u16]) -> Self {
        LengthSet {
            any: lengths.is_empty(),
            bits: lengths
                .iter()
                .filter(|&&l| l < 32)
                .fold(0, |bits, &l| bits | 1 << l),
        }
    }

    fn union(self, other: LengthSet) -> Self {
        LengthSet {
            any: self.any || other.any,
            bits: self.bits | other.bits,
        }
    }

    fn contains(self, n: usize) -> bool {
        self.any || (n < 32 && self.bits & (1 << n) != 0)
    }
}

/// The national significant number lengths of one region, with the prefixes a
/// number written in it may carry.
#[derive(Debug)]
struct Lengths {
    nsn: LengthSet,
    national_prefix: String,
    country_code: String,
}

impl Lengths {
    fn of(meta: &phonenumber::Metadata) -> Self {
        Lengths {
            nsn: nsn_lengths(meta),
            national_prefix: meta.national_prefix().unwrap_or_default().to_owned(),
            country_code: meta.country_code().to_string(),
        }
    }

    /// Whether `digits` could be a national-format number: its length fits,
    /// bare or after a trunk prefix or country code. A leading 0 may start an
    /// international access code, which the parser knows best.
    fn possible(&self, digits: &str) -> bool {
        let fits = |n: usize| self.nsn.contains(n);
        let after = |prefix: &str| {
            !prefix.is_empty() && digits.starts_with(prefix) && fits(digits.len() - prefix.len())
        };
        fits(digits.len())
            || after(&self.national_prefix)
            || after(&self.country_code)
            || digits.starts_with('0')
    }
}

/// Every national significant number length the region issues, of any type;
/// every length when the metadata lists none.
fn nsn_lengths(meta: &phonenumber::Metadata) -> LengthSet {
    let d = meta.descriptors();
    let descriptors = [
        Some(d.general()),
        d.fixed_line(),
        d.mobile(),
        d.toll_free(),
        d.premium_rate(),
        d.shared_cost(),
        d.personal_number(),
        d.voip(),
        d.pager(),
        d.uan(),
        d.voicemail(),
    ];
    let lengths: Vec<u16> = descriptors
        .into_iter()
        .flatten()
        .flat_map(|d| d.possible_length().iter().copied())
        .collect();
    LengthSet::of(&lengths)
}

/// What the scan asks of the metadata for every candidate, worked out once.
struct Tables {
    /// Each region's lengths, by region id.
    national: HashMap<&'static str, Lengths>,
    /// By country calling code (0–999): the lengths of any region using the
    /// code; `None` where no region does.
    international: Vec<Option<LengthSet>>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let db: &'static phonenumber::metadata::Database = &DATABASE;
        let national = db
            .iter()
            .filter_map(|meta| {
                let meta = db.by_id(meta.id())?;
                Some((meta.id(), Lengths::of(meta)))
            })
            .collect();
        let international = (0..1000u16)
            .map(|code| {
                let metas = db.by_code(&code)?;
                metas.into_iter().map(nsn_lengths).reduce(LengthSet::union)
            })
            .collect();
        Tables {
            national,
            international,
        }
    })
}

/// Whether `digits` (after a `+`) could be a country code and a national number
/// of a length that country issues.
fn international_length_possible(digits: &str) -> bool {
    let international = &tables().international;
    (1..=3.min(digits.len())).any(|cc_len| {
        let code = digits.as_bytes()[..cc_len]
            .iter()
            .fold(0usize, |acc, &d| acc * 10 + usize::from(d - b'0'));
        international[code].is_some_and(|lengths| lengths.contains(digits.len() - cc_len))
    })
}

fn parens_balanced(s: &[u8]) -> bool {
    let mut depth = 0i32;
    for &b in s {
        match b {
            b'(' => depth += 1,
            b')' => depth -= 1,
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return false;
        }
    }
    depth == 0
}

/// Validates a phone candidate with libphonenumber, and checks the parsed number
/// kept the candidate's digits.
///
/// An international candidate is parsed without the default region: with one,
/// the region's national-prefix rules have been seen to mangle other countries'
/// numbers (`+44 161 …`, `+33 1 …`).
fn valid_phone(candidate: &str, digits: &str, shape: &Shape, region: Option<country::Id>) -> bool {
    let international = shape.international;
    let parsed = if international {
        phonenumber::parse(None, candidate).ok()
    } else {
        phonenumber::parse(region, candidate).ok()
    };
    let Some(number) = parsed else {
        return false;
    };
    if !phonenumber::is_valid(&number) {
        return false;
    }
    let national = number.national().to_string();
    if international {
        let code = number.code().value().to_string();
        let Some(rest) = digits.strip_prefix(&code) else {
            return false;
        };
        // The code, then the national number; or the code, `(0)`, then the
        // national number.
        rest == national
            || shape.trunk == Some(code.len()) && rest.strip_prefix('0') == Some(&national)
    } else {
        // Whatever precedes the national number is a trunk prefix or a country code.
        digits.ends_with(&national)
            && digits.len() - national.len() <= 3
            && keeps_groups(&number, &national, shape.boundaries)
    }
}

/// How a phone candidate is written.
struct Shape<'a> {
    /// It starts with `+` and its country code.
    international: bool,
    /// It holds a trunk prefix `(0)` after its country code, this many digits long.
    trunk: Option<usize>,
    /// Where its digit groups meet, counted in digits from its end.
    boundaries: &'a [usize],
}

/// Whether a national-format candidate's digit groups keep a North American
/// number's groups (`415 555 2671`) whole, several maybe written as one:
/// `415 555-2671`, `1-415-555-2671` and `415 5552671` do; `2026-004512` and
/// `2026-12-01 14` do not, valid as `202-600-4512` and `202-612-0114` are: they
/// are order numbers and dates. Groups in a trunk prefix before the national
/// number are free.
///
/// Only for country code 1, whose numbers are written 3-3-4 near enough
/// always; elsewhere groupings vary too much (`020 7946 0958` is also written
/// `0207 946 0958`) to reject a number for its grouping.
fn keeps_groups(number: &PhoneNumber, national: &str, boundaries: &[usize]) -> bool {
    number.code().value() != 1
        || national.len() != 10
        || boundaries.iter().all(|&b| b >= 10 || b == 4 || b == 7)
}

/// Luhn's checksum over ASCII digits.
fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if k % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// True when the number's prefix belongs to a card network that issues numbers
/// of its length.
fn card_network_fits(digits: &[u8]) -> bool {
    let len = digits.len();
    let prefix = |n: usize| -> u32 {
        digits[..n.min(len)]
            .iter()
            .fold(0, |acc, &d| acc * 10 + u32::from(d - b'0'))
    };
    let (p1, p2, p3, p4, p6) = (prefix(1), prefix(2), prefix(3), prefix(4), prefix(6));
    let visa = p1 == 4 && matches!(len, 13 | 16 | 19);
    let mastercard = ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && len == 16;
    let amex = matches!(p2, 34 | 37) && len == 15;
    let discover =
        (p4 == 6011 || p2 == 65 || (644..=649).contains(&p3) || (622126..=622925).contains(&p6))
            && (16..=19).contains(&len);
    let diners =
        ((300..=305).contains(&p3) || matches!(p2, 36 | 38 | 39)) && (14..=19).contains(&len);
    let jcb = (3528..=3589).contains(&p4) && (16..=19).contains(&len);
    let unionpay = p2 == 62 && (16..=19).contains(&len);
    let maestro = matches!(
        p4,
        5018 | 5020 | 5038 | 5893 | 6304 | 6759 | 6761 | 6762 | 6763
    ) && (13..=19).contains(&len);
    let mir = (2200..=2204).contains(&p4) && (16..=19).contains(&len);
    visa || mastercard || amex || discover || diners || jcb || unionpay || maestro || mir
}

/// A US SSN in a range that is ever issued: area not 000, 666 or 900–999; group
/// not 00; serial not 0000.
fn ssn_valid(digits: &[u8]) -> bool {
    let num = |r: std::ops::Range<usize>| {
        digits[r]
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'))
    };
    let (area, group, serial) = (num(0..3), num(3..5), num(5..9));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn us(text: &str) -> Scrubbed {
        Scrubber::default().scrub(text)
    }

    /// Asserts `text` is scrubbed to `expected` with `kind` found `n` times and nothing else.
    fn assert_scrubs(text: &str, expected: &str, kind: PiiKind, n: usize) {
        let out = us(text);
        assert_eq!(out.text, expected, "scrubbing {text:?}");
        assert_eq!(out.counts.get(kind), n, "{kind:?} count for {text:?}");
        assert_eq!(out.counts.total(), n, "other kinds found in {text:?}");
    }

    fn assert_untouched(text: &str) {
        let out = us(text);
        assert_eq!(out.text, text);
        assert!(out.counts.is_empty(), "{text:?} gave {:?}", out.counts);
    }

    #[test]
    fn kinds_name_themselves_and_their_placeholders() {
        let names: Vec<_> = PiiKind::ALL
            .iter()
            .map(|k| (k.as_str(), k.placeholder()))
            .collect();
        assert_eq!(
            names,
            [
                ("email", "[EMAIL]"),
                ("phone", "[PHONE]"),
                ("ssn", "[SSN]"),
                ("card", "[CARD]")
            ]
        );
    }

    #[test]
    fn emails_with_plus_tags_and_subdomains_are_scrubbed() {
        assert_scrubs(
            "write to jane.doe+billing@mail.example.co.uk.",
            "write to [EMAIL].",
            PiiKind::Email,
            1,
        );
        assert_scrubs(
            "a@b.io, c_d@e-f.example.org",
            "[EMAIL], [EMAIL]",
            PiiKind::Email,
            2,
        );
        assert_scrubs("<bob@example.com>", "<[EMAIL]>", PiiKind::Email, 1);
    }

    #[test]
    fn at_signs_that_are_not_emails_are_left_alone() {
        assert_untouched("ping @channel at 10:30");
        assert_untouched("user@localhost and x@1.2.3.4 and y@example.c0m");
        assert_untouched("@ @@ a@ @b.com .@x.com");
    }

    #[test]
    fn us_phone_numbers_in_national_formats_are_scrubbed() {
        assert_scrubs(
            "call (415) 555-2671 now",
            "call [PHONE] now",
            PiiKind::Phone,
            1,
        );
        assert_scrubs("call 415-555-2671.", "call [PHONE].", PiiKind::Phone, 1);
        assert_scrubs(
            "415.555.2671 or 4155552671",
            "[PHONE] or [PHONE]",
            PiiKind::Phone,
            2,
        );
        assert_scrubs("tel:1 415 555 2671", "tel:[PHONE]", PiiKind::Phone, 1);
    }

    #[test]
    fn international_numbers_keep_their_country_when_a_default_region_is_set() {
        assert_scrubs("+1 415 555 2671", "[PHONE]", PiiKind::Phone, 1);
        assert_scrubs(
            "UK office: +44 161 496 0000!",
            "UK office: [PHONE]!",
            PiiKind::Phone,
            1,
        );
        assert_scrubs(
            "Paris +33 1 23 45 67 89",
            "Paris [PHONE]",
            PiiKind::Phone,
            1,
        );
        assert_scrubs(
            "+44 161 496 0000 +33 1 23 45 67 89",
            "[PHONE] [PHONE]",
            PiiKind::Phone,
            2,
        );
        // The same numbers without a default region.
        let out = scrub("+44 161 496 0000 or +33 1 23 45 67 89", None);
        assert_eq!(out.text, "[PHONE] or [PHONE]");
    }

    #[test]
    fn a_trunk_prefix_in_parentheses_stays_inside_the_number() {
        for text in [
            "+44 (0)161 496 0000",
            "+44 (0) 20 7946 0958",
            "+33 (0)1 23 45 67 89",
            "+49 (0)30 12345678",
        ] {
            assert_scrubs(&format!("call {text}."), "call [PHONE].", PiiKind::Phone, 1);
            assert_eq!(scrub(text, None).text, "[PHONE]", "{text} without a region");
        }
        // Only a lone 0 is a trunk prefix.
        assert_untouched("+44 (1)161 496 0000");
    }

    #[test]
    fn north_american_numbers_keep_their_groups() {
        for text in [
            "415 5552671",
            "1 (415) 555-2671",
            "1-415-555-2671",
            "415 555 2671",
        ] {
            assert_scrubs(text, "[PHONE]", PiiKind::Phone, 1);
        }
        // Valid as 202-600-4512 and 202-612-0114, but written as a reference and a date.
        assert_untouched("ref 2026-004512 or INV-2026-004512");
        assert_untouched("due 2026-12-01 14:00");
        assert_untouched("4155 552 671");
    }

    #[test]
    fn an_extension_right_after_a_number_leaves_it_a_number() {
        assert_scrubs(
            "call 415-555-2671x204",
            "call [PHONE]x204",
            PiiKind::Phone,
            1,
        );
        assert_scrubs("4155552671X12.", "[PHONE]X12.", PiiKind::Phone, 1);
        assert_untouched("1920x1080 and 415-555-2671xy and 415-555-2671x1234567");
    }

    #[test]
    fn national_formats_follow_the_default_region() {
        let gb = Scrubber::new(Some(country::Id::GB));
        assert_eq!(gb.scrub("ring 0161 496 0000").text, "ring [PHONE]");
        assert_eq!(us("ring 0161 496 0000").text, "ring 0161 496 0000");
        let none = Scrubber::new(None);
        assert_eq!(none.scrub("(415) 555-2671").text, "(415) 555-2671");
    }

    #[test]
    fn fictional_and_short_numbers_are_not_phones() {
        assert_untouched("dial 555-0100 or 911 or 411, room 1234567");
    }

    #[test]
    fn possible_ssns_are_scrubbed() {
        assert_scrubs("SSN 123-45-6789.", "SSN [SSN].", PiiKind::Ssn, 1);
        assert_scrubs("ssn: 123 45 6789", "ssn: [SSN]", PiiKind::Ssn, 1);
    }

    #[test]
    fn impossible_ssns_are_left_alone() {
        for text in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "999-12-3456",
            "123-00-4567",
            "123-45-0000",
        ] {
            assert_untouched(text);
        }
        assert_untouched("123-45 6789");
    }

    #[test]
    fn luhn_valid_cards_of_known_networks_are_scrubbed() {
        assert_scrubs(
            "visa 4111 1111 1111 1111 ok",
            "visa [CARD] ok",
            PiiKind::Card,
            1,
        );
        assert_scrubs("amex 3782 822463 10005", "amex [CARD]", PiiKind::Card, 1);
        assert_scrubs("mc 5555-5555-5555-4444", "mc [CARD]", PiiKind::Card, 1);
        assert_scrubs("mc 2221000000000009", "mc [CARD]", PiiKind::Card, 1);
        assert_scrubs(
            "discover 6011111111111117",
            "discover [CARD]",
            PiiKind::Card,
            1,
        );
        assert_scrubs("card #4111111111111111.", "card #[CARD].", PiiKind::Card, 1);
    }

    #[test]
    fn card_lookalikes_are_left_alone() {
        // Luhn-invalid, an unknown network, a wrong length for Visa, mixed separators.
        for text in [
            "4111 1111 1111 1112",
            "9111 1111 1111 1110",
            "41111111111111113",
            "4111-1111 1111-1111",
        ] {
            assert_untouched(text);
        }
    }

    #[test]
    fn a_cards_digits_are_not_taken_for_a_phone_number() {
        assert_scrubs("4111 1111 1111 1111", "[CARD]", PiiKind::Card, 1);
        let out = us("card 4111 1111 1111 1111 phone 415-555-2671");
        assert_eq!(out.text, "card [CARD] phone [PHONE]");
        assert_eq!((out.counts.card, out.counts.phone), (1, 1));
    }

    #[test]
    fn an_email_holding_digits_is_one_email() {
        assert_scrubs("4155552671@example.com", "[EMAIL]", PiiKind::Email, 1);
    }

    #[test]
    fn number_lookalikes_are_left_alone() {
        for text in [
            "order #4521-8890",
            "due 2026-12-01 or 12/01/2026 or 01.12.2026",
            "at 10:30",
            "ZIP 94105-1234",
            "costs $1,200.50",
            "VIN 1HGCM82633A004352",
            "v2.10.3 and 1.2.3.4 and 192.168.100.200",
            "pi is 3.1415926535",
            "4111 1111 1111 1112",
            "1234567890123456",
            "I have 3 cats, 12 dogs and 415 fish",
            "id 550e8400-e29b-41d4-a716-446655440000",
            "up 14155552671%",
        ] {
            assert_untouched(text);
        }
    }

    #[test]
    fn counts_list_only_the_kinds_found() {
        let out = us("a@b.com c@d.org 123-45-6789");
        assert_eq!(
            out.counts.iter().collect::<Vec<_>>(),
            [(PiiKind::Email, 2), (PiiKind::Ssn, 1)]
        );
    }

    #[test]
    fn non_ascii_text_survives() {
        assert_scrubs(
            "Grüße — ruf an: +44 161 496 0000 ✓",
            "Grüße — ruf an: [PHONE] ✓",
            PiiKind::Phone,
            1,
        );
    }

    /// Text heavy in digits and separators, where candidates abound.
    fn numberish() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                4 => proptest::char::range('0', '9'),
                1 => prop_oneof![Just(' '), Just('-'), Just('.'), Just('('), Just(')'), Just('+')],
                1 => prop_oneof![Just('@'), Just('a'), Just('/'), Just(':'), Just('é'), Just('\n')],
            ],
            0..80,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    /// Text built from real PII and look-alikes glued by random separators.
    fn mixed() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("4111 1111 1111 1111"),
            Just("3782 822463 10005"),
            Just("5555-5555-5555-4444"),
            Just("123-45-6789"),
            Just("(415) 555-2671"),
            Just("+44 161 496 0000"),
            Just("+33 1 23 45 67 89"),
            Just("jane+x@mail.example.com"),
            Just("2026-12-01"),
            Just("94105-1234"),
            Just("v2.10.3"),
            Just("x"),
            Just("7"),
        ];
        let glue = prop_oneof![
            Just(""),
            Just(" "),
            Just("-"),
            Just("."),
            Just(", "),
            Just("@"),
            Just("(")
        ];
        proptest::collection::vec((piece, glue), 0..8)
            .prop_map(|parts| parts.into_iter().flat_map(|(p, g)| [p, g]).collect())
    }

    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), numberish(), mixed()]
    }

    proptest! {
        #![proptest_config(crate::test_support::property_config(512))]

        #[test]
        fn scrubbing_never_panics(text in any_text()) {
            let _ = us(&text);
            let _ = scrub(&text, None);
            let _ = scrub(&text, Some(country::Id::GB));
        }

        #[test]
        fn scrubbing_is_idempotent(text in any_text()) {
            let once = us(&text);
            let twice = us(&once.text);
            prop_assert_eq!(&twice.text, &once.text);
            prop_assert!(twice.counts.is_empty(), "second pass found {:?}", twice.counts);
        }

        #[test]
        fn no_digit_of_a_found_value_survives(text in any_text()) {
            let spans = Scrubber::new(Some(country::Id::US)).spans(&text);
            let mut kept = String::new();
            let mut last = 0;
            for span in &spans {
                kept.push_str(&text[last..span.start]);
                last = span.end;
            }
            kept.push_str(&text[last..]);
            let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
            let out = us(&text).text;
            prop_assert_eq!(digits(&out), digits(&kept));
            for span in spans.iter().filter(|s| matches!(s.kind, PiiKind::Card | PiiKind::Ssn)) {
                let found = &text[span.start..span.end];
                if text.matches(found).count() == 1 {
                    prop_assert!(!out.contains(found), "{:?} survived in {:?}", found, out);
                }
            }
        }

        #[test]
        fn a_card_or_ssn_in_any_sentence_is_scrubbed(
            before in "[a-z ,.]{0,20}",
            after in "[a-z ,.]{0,20}",
            value in prop_oneof![Just("4111 1111 1111 1111"), Just("5555-5555-5555-4444"), Just("123-45-6789")],
        ) {
            let text = format!("{before} {value} {after}");
            let out = us(&text);
            prop_assert_eq!(out.text, format!("{before} {} {after}", if value.len() == 11 { "[SSN]" } else { "[CARD]" }));
        }
    }

    /// Throughput on chat-like text: `cargo test --release -p agentry-actors --lib pii -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput_on_chat_text() {
        let lines = [
            "Hi, I'd like to change my delivery address for order #4521-8890, it was due 2026-12-01.",
            "Sure! Could you confirm the email on the account? It's usually something like name@example.com.",
            "It's jane.doe+shop@mail.example.co.uk and my phone is (415) 555-2671.",
            "Thanks Jane. The new address is 1 Market St, San Francisco, CA 94105-1234, right?",
            "Yes. Also the price showed $1,200.50 but the promo said 15% off at 10:30 this morning.",
            "I can see that. Version v2.10.3 of the app had a bug with promos; it is fixed now.",
            "Great, thank you so much for your help today, have a nice evening!",
            "Our UK team can be reached on +44 161 496 0000 between 9 and 5 on weekdays.",
        ];
        let mut text = String::new();
        while text.len() < 8 << 20 {
            for line in lines {
                text.push_str(line);
                text.push('\n');
            }
        }
        let scrubber = Scrubber::default();
        let _ = scrubber.scrub(&text[..64 << 10]);
        let started = std::time::Instant::now();
        let out = scrubber.scrub(&text);
        let secs = started.elapsed().as_secs_f64();
        let mb = text.len() as f64 / 1e6;
        eprintln!(
            "pii scrub: {mb:.1} MB in {secs:.3}s = {:.1} MB/s ({:?})",
            mb / secs,
            out.counts
        );

        let digits: String = "415 555 2671 ".repeat(1 << 16);
        let started = std::time::Instant::now();
        let out = scrubber.scrub(&digits);
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "pii scrub, all phone numbers: {:.2} MB/s ({} phones)",
            digits.len() as f64 / 1e6 / secs,
            out.counts.phone
        );
    }
}
