//! PII scrubber throughput on realistic chat text: `Scrubber::scrub` (region US)
//! over a deterministic corpus of visitor messages, one call per message.
//!
//! Most messages hold no PII; some hold emails, phone numbers in several
//! formats, a rare SSN or card, and look-alikes (order numbers, dates, times,
//! prices, ZIP codes, versions) that the scrubber must read past.
//!
//! Run with `cargo bench -p agentry-actors --bench pii`; besides criterion's
//! report (MiB/s), a timed pass prints MB/s (10^6 bytes per second).

use std::hint::black_box;
use std::time::Instant;

use agentry_actors::knowledge::synthetic::SplitMix64;
use agentry_actors::pii::{PiiCounts, Scrubber};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const MESSAGES: usize = 400;
const SEED: u64 = 0x9111;

const GREETINGS: &[&str] = &[
    "Hi",
    "Hello",
    "Hey there",
    "Good morning",
    "Hi team",
    "Quick question",
    "",
];

const PRODUCTS: &[&str] = &[
    "blue rain jacket",
    "espresso machine",
    "standing desk",
    "wireless earbuds",
    "winter tyres",
    "yoga mat",
    "gift card",
    "kids' bike",
];

const NAMES: &[&str] = &[
    "jane", "omar", "li.wei", "m.garcia", "sam", "priya", "tom_b",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "mail.example.co.uk",
    "gmail.com",
    "outlook.com",
    "acme-corp.io",
];
const AREA_CODES: &[&str] = &["415", "212", "646", "312", "617", "206", "303", "512"];

/// Plain questions and statements, no digits at all.
const PLAIN: &[&str] = &[
    "do you ship to Canada or only within the US?",
    "what are your opening hours on Saturdays and public holidays?",
    "I would like to speak to someone about a refund, the item arrived damaged.",
    "thanks so much, that's exactly what I needed. Have a great day!",
    "can I change the colour after placing the order?",
    "is there a student discount? I couldn't find it on the website.",
    "the checkout page keeps spinning and never finishes loading.",
    "ok perfect",
    "could you tell me whether this works with an older model?",
    "I never received the confirmation email, can you resend it?",
    "my package says delivered but it's not at my door.",
    "do you have this in a larger size, or is it sold out everywhere?",
];

fn pick<'a>(rng: &mut SplitMix64, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len())]
}

fn email(rng: &mut SplitMix64) -> String {
    let tag = if rng.below(5) == 0 { "+orders" } else { "" };
    format!(
        "{}{}{tag}@{}",
        pick(rng, NAMES),
        rng.between(1, 99),
        pick(rng, DOMAINS)
    )
}

fn phone(rng: &mut SplitMix64) -> String {
    let area = pick(rng, AREA_CODES);
    let exchange = rng.between(201, 989);
    let line = rng.between(1000, 9999);
    match rng.below(8) {
        0 => format!("({area}) {exchange}-{line}"),
        1 => format!("{area}-{exchange}-{line}"),
        2 => format!("{area}.{exchange}.{line}"),
        3 => format!("{area}{exchange}{line}"),
        4 => format!("+1 {area} {exchange} {line}"),
        5 => "+44 161 496 0000".to_owned(),
        6 => "+33 1 23 45 67 89".to_owned(),
        _ => format!("1-{area}-{exchange}-{line}"),
    }
}

fn date(rng: &mut SplitMix64) -> String {
    let (m, d) = (rng.between(1, 12), rng.between(1, 28));
    match rng.below(3) {
        0 => format!("2026-{m:02}-{d:02}"),
        1 => format!("{m:02}/{d:02}/2026"),
        _ => format!("{d}.{m}.2026"),
    }
}

fn price(rng: &mut SplitMix64) -> String {
    if rng.below(3) == 0 {
        format!(
            "${},{:03}.{:02}",
            rng.between(1, 9),
            rng.below(1000),
            rng.below(100)
        )
    } else {
        format!("${}.{:02}", rng.between(5, 999), rng.below(100))
    }
}

/// One visitor message.
fn message(rng: &mut SplitMix64) -> String {
    let greeting = pick(rng, GREETINGS);
    let lead = if greeting.is_empty() {
        String::new()
    } else {
        format!("{greeting}, ")
    };
    let product = pick(rng, PRODUCTS);
    let body = match rng.below(20) {
        0..=5 => pick(rng, PLAIN).to_owned(),
        6 => format!(
            "my order #{}-{} was supposed to arrive on {}, any update?",
            rng.between(1000, 9999),
            rng.between(1000, 9999),
            date(rng)
        ),
        7 => format!(
            "is the {product} still in stock? The site says {} but the app says {}.",
            price(rng),
            price(rng)
        ),
        8 => format!(
            "can I book a table for {} people at {}:{:02} on {}?",
            rng.between(2, 12),
            rng.between(5, 9),
            rng.below(4) * 15,
            date(rng)
        ),
        9 => format!(
            "the app (v{}.{}.{}) crashes when I open the cart on Windows 10.0.19045.",
            rng.between(1, 4),
            rng.between(0, 20),
            rng.between(0, 9)
        ),
        10 => format!(
            "we're at {} Market St, suite {}, San Francisco CA {}-{}.",
            rng.between(1, 2999),
            rng.between(100, 999),
            rng.between(94100, 94199),
            rng.between(1000, 9999)
        ),
        11 => format!(
            "I was charged {} twice for the {product}, invoice INV-{} from {}.",
            price(rng),
            rng.between(10000, 99999),
            date(rng)
        ),
        12 => format!("you can reach me at {} if that's easier.", email(rng)),
        13 => format!("please call me back on {}, I'm free after 3pm.", phone(rng)),
        14 => format!(
            "my email is {} and my cell is {}. Thanks!",
            email(rng),
            phone(rng)
        ),
        15 => format!(
            "I have {} of the {product} and want to return {} of them, 30 days ago.",
            rng.between(2, 9),
            rng.between(1, 2)
        ),
        16 => format!(
            "tracking 1Z{}AA{} hasn't moved since {}.",
            rng.between(100, 999),
            rng.between(10_000_000, 99_999_999),
            date(rng)
        ),
        17 => match rng.below(4) {
            0 => "for the credit check my SSN is 123-45-6789.".to_owned(),
            1 => "just charge my card 4111 1111 1111 1111, exp 12/28.".to_owned(),
            _ => format!(
                "text me at {} or mail {} about the {product}.",
                phone(rng),
                email(rng)
            ),
        },
        _ => format!(
            "about the {product}: {} The reference was {}.",
            pick(rng, PLAIN),
            rng.between(100_000, 999_999)
        ),
    };
    format!("{lead}{body}")
}

fn corpus() -> Vec<String> {
    let mut rng = SplitMix64::new(SEED);
    (0..MESSAGES).map(|_| message(&mut rng)).collect()
}

fn scrub_all(scrubber: &Scrubber, messages: &[String]) -> PiiCounts {
    let mut total = PiiCounts::default();
    for text in messages {
        let out = scrubber.scrub(black_box(text));
        total.email += out.counts.email;
        total.phone += out.counts.phone;
        total.ssn += out.counts.ssn;
        total.card += out.counts.card;
        black_box(out.text);
    }
    total
}

fn pii(c: &mut Criterion) {
    let messages = corpus();
    let bytes: usize = messages.iter().map(String::len).sum();
    let scrubber = Scrubber::new(Some(agentry_actors::pii::Region::US));
    let counts = scrub_all(&scrubber, &messages);
    let with_pii = messages
        .iter()
        .filter(|m| !scrubber.scrub(m).counts.is_empty())
        .count();
    eprintln!(
        "corpus: {} messages, {bytes} bytes, {with_pii} with PII, found {counts:?}",
        messages.len()
    );

    // A timed pass of its own, reported in MB/s (criterion reports MiB/s).
    let rounds = 50;
    let started = Instant::now();
    for _ in 0..rounds {
        black_box(scrub_all(&scrubber, &messages));
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "pii scrub: {:.1} MB/s over {rounds} passes",
        (bytes * rounds) as f64 / 1e6 / secs
    );

    let mut group = c.benchmark_group("pii_scrub");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("chat_us", |b| b.iter(|| scrub_all(&scrubber, &messages)));
    group.finish();
}

criterion_group!(benches, pii);
criterion_main!(benches);
