//! Generated knowledge-base documents and the visitors' questions about them.
//!
//! Each document is a help-centre article about one product of one kind
//! (an espresso machine, an e-bike, a phone plan …): a title, an introduction
//! and several `##` sections drawn from a pool (warranty, delivery,
//! troubleshooting …), each a few paragraphs of templated sentences filled
//! with the product's own name, parts and numbers. Product names are
//! invented words, so a question naming one finds its document through the
//! rare-word full-text search as a real visitor's question would. Questions
//! avoid booking, price and "talk to a person" words, which would make the
//! offline responder call tools: the scenario measures the plain turn.
//!
//! The generator is deterministic: the same seed gives the same documents and
//! questions on every machine.

/// SplitMix64: small, fast, and reproducible across versions and machines.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high.saturating_sub(low) + 1)
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// One document to seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub title: String,
    /// Markdown.
    pub content: String,
}

/// The documents and the questions visitors ask about them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corpus {
    pub documents: Vec<Document>,
    pub questions: Vec<String>,
}

struct Kind {
    /// "espresso machine"
    noun: &'static str,
    parts: &'static [&'static str],
    features: &'static [&'static str],
}

const KINDS: &[Kind] = &[
    Kind {
        noun: "espresso machine",
        parts: &[
            "portafilter",
            "steam wand",
            "water tank",
            "drip tray",
            "group head gasket",
            "grinder burrs",
        ],
        features: &[
            "dual boiler",
            "pre-infusion",
            "milk frothing",
            "temperature control",
            "auto shut-off",
        ],
    },
    Kind {
        noun: "electric bike",
        parts: &[
            "battery pack",
            "rear hub motor",
            "disc brakes",
            "chain guard",
            "handlebar display",
            "charger",
        ],
        features: &[
            "pedal assist",
            "walk mode",
            "regenerative braking",
            "integrated lights",
            "anti-theft alarm",
        ],
    },
    Kind {
        noun: "standing desk",
        parts: &[
            "lifting column",
            "control panel",
            "desktop frame",
            "cable tray",
            "glide feet",
            "crossbar",
        ],
        features: &[
            "height memory",
            "anti-collision sensor",
            "child lock",
            "sit-stand reminder",
            "quiet motor",
        ],
    },
    Kind {
        noun: "robot vacuum",
        parts: &[
            "side brush",
            "dust bin",
            "charging dock",
            "main roller",
            "cliff sensor",
            "filter",
        ],
        features: &[
            "room mapping",
            "no-go zones",
            "auto-empty",
            "carpet boost",
            "timed cleaning runs",
        ],
    },
    Kind {
        noun: "home solar kit",
        parts: &[
            "inverter",
            "mounting rails",
            "panel array",
            "battery cabinet",
            "isolator switch",
            "monitoring hub",
        ],
        features: &[
            "export limiting",
            "backup power",
            "app monitoring",
            "load shifting",
            "surge protection",
        ],
    },
    Kind {
        noun: "mobile phone plan",
        parts: &[
            "SIM card",
            "eSIM profile",
            "data allowance",
            "roaming pass",
            "voicemail box",
            "number transfer",
        ],
        features: &[
            "hotspot sharing",
            "wifi calling",
            "spending cap",
            "family sharing",
            "international minutes",
        ],
    },
    Kind {
        noun: "coworking membership",
        parts: &[
            "access card",
            "meeting room credits",
            "locker",
            "mail handling",
            "printing quota",
            "guest pass",
        ],
        features: &[
            "24-hour access",
            "dedicated desk",
            "quiet call rooms",
            "community events",
            "bike storage",
        ],
    },
    Kind {
        noun: "pet insurance policy",
        parts: &[
            "excess",
            "claim form",
            "vet fee limit",
            "policy document",
            "waiting period",
            "renewal notice",
        ],
        features: &[
            "dental cover",
            "lifetime cover",
            "overseas travel cover",
            "third-party liability",
            "direct vet payment",
        ],
    },
    Kind {
        noun: "language course",
        parts: &[
            "placement test",
            "student handbook",
            "online workbook",
            "speaking club",
            "certificate",
            "tutor hours",
        ],
        features: &[
            "small groups",
            "evening classes",
            "exam preparation",
            "conversation practice",
            "progress reports",
        ],
    },
    Kind {
        noun: "smart thermostat",
        parts: &[
            "wall plate",
            "room sensor",
            "boiler relay",
            "backplate wiring",
            "display ring",
            "radiator valve",
        ],
        features: &[
            "geofencing",
            "open window detection",
            "energy reports",
            "zoned heating",
            "frost protection",
        ],
    },
];

const BRAND_ONSETS: &[&str] = &[
    "b", "d", "f", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "cl", "dr", "fl", "gr",
    "kr", "pl", "qu", "st", "tr", "vr",
];
const BRAND_VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y"];
const BRAND_CODAS: &[&str] = &["", "", "n", "r", "l", "x", "s", "m", "nd", "rk"];
const MODELS: &[&str] = &[
    "K7", "S2", "Pro 3", "Air", "One", "X9", "Max", "Lite", "V5", "Go",
];
const CITIES: &[&str] = &[
    "Lisbon", "Leeds", "Utrecht", "Graz", "Lyon", "Porto", "Malmo", "Ghent", "Turin", "Cork",
    "Bergen", "Brno",
];
const WEEKDAYS: &[&str] = &[
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// A section's heading, its sentence templates and the questions it answers.
/// Slots: {product}, {brand}, {noun}, {part}, {part2}, {feature}, {n}, {m},
/// {days}, {city}, {day}.
struct Section {
    heading: &'static str,
    sentences: &'static [&'static str],
    questions: &'static [&'static str],
}

const SECTIONS: &[Section] = &[
    Section {
        heading: "Getting started",
        sentences: &[
            "Unpack the {product} and check that the {part} and the {part2} are in the box before you begin.",
            "The first set-up takes about {n} minutes and needs no tools beyond the ones supplied.",
            "Register the {product} in the {brand} app so that updates for the {feature} reach you automatically.",
            "Read the quick guide printed inside the lid: it shows where the {part} goes and how it locks in place.",
            "If anything is missing, write to our support team within {days} days and we send the part free of charge.",
            "Most owners of the {product} use the {feature} from the first day, so we switch it on by default.",
        ],
        questions: &[
            "How do I set up the {brand} {noun} for the first time?",
            "What comes in the box with the {product}?",
            "How long does the first set-up of the {brand} take?",
        ],
    },
    Section {
        heading: "Warranty",
        sentences: &[
            "Every {product} comes with a warranty of {n} years that covers manufacturing faults in the {part} and the {part2}.",
            "Wear parts such as the {part} are covered for the first {m} months of normal use.",
            "The warranty does not cover damage from misuse, from unapproved accessories or from repairs by third parties.",
            "To make a warranty claim, keep your proof of purchase and the serial number printed under the {part2}.",
            "A repaired or replaced {product} keeps the remaining warranty period, or {m} months, whichever is longer.",
            "Registering the {brand} within {days} days of delivery extends the warranty by one more year.",
        ],
        questions: &[
            "What does the warranty on the {brand} {noun} cover?",
            "Is the {part} of the {product} covered by the warranty?",
            "How long is the {brand} warranty and how do I claim it?",
        ],
    },
    Section {
        heading: "Delivery",
        sentences: &[
            "Orders of the {product} placed before 2pm leave our warehouse near {city} the same day.",
            "Standard delivery takes {n} to {m} working days; express delivery arrives on the next working day.",
            "The courier sends a tracking link by email and text message as soon as the parcel is on its way.",
            "We deliver on weekdays between 8am and 6pm, and on {day} mornings in most large towns.",
            "If nobody is at home, the courier leaves a card and tries again the next working day.",
            "Large items such as the {part} ship in a separate box and may arrive a day later.",
        ],
        questions: &[
            "How long does delivery of the {brand} {noun} take?",
            "Do you deliver the {product} on {day}?",
            "Where does the {brand} ship from?",
        ],
    },
    Section {
        heading: "Returns and refunds",
        sentences: &[
            "You can return the {product} within {days} days of delivery for any reason, as long as it is complete.",
            "Print the prepaid label from your account, pack the {part} and the {part2} in the original box, and drop it off.",
            "Refunds reach the original payment method within {n} working days of the return arriving at our {city} centre.",
            "A {product} that arrives damaged is replaced at once; send us a photo of the box and of the {part}.",
            "Opened accessories can be returned too, unless they are hygiene items such as the {part2}.",
            "Exchanges for another model of the {brand} range are handled like a return and a new order.",
        ],
        questions: &[
            "How do I return the {brand} {noun}?",
            "How many days do I have to return the {product}?",
            "When will I get my refund for the {brand}?",
        ],
    },
    Section {
        heading: "Care and maintenance",
        sentences: &[
            "Clean the {part} once a week with warm water and a soft cloth; never use abrasive cleaners.",
            "Every {m} months, check the {part2} for wear and replace it if it shows cracks.",
            "The {brand} app reminds you when the {part} is due for maintenance, based on how often you use the {feature}.",
            "Store the {product} in a dry place between {n} and {m} degrees when you do not use it for a long time.",
            "Genuine {brand} spare parts keep the {feature} working as designed; other parts may void the warranty.",
            "A yearly service at one of our partner workshops in {city} keeps the {product} in top condition.",
        ],
        questions: &[
            "How do I clean the {part} of the {brand} {noun}?",
            "How often should I replace the {part2} on the {product}?",
            "Where can I get the {brand} serviced?",
        ],
    },
    Section {
        heading: "Troubleshooting",
        sentences: &[
            "If the {product} does not start, check that the {part} is seated correctly and that the power light is on.",
            "A blinking amber light means the {part2} needs attention; the app names the fault and the fix.",
            "When the {feature} stops responding, restart the {brand} by holding the main button for {n} seconds.",
            "Unusual noise usually comes from a loose {part}; tighten it by hand and try again.",
            "Error code E{n} means the {product} has overheated; let it cool for {m} minutes before using it again.",
            "If a fault comes back after a restart, note the error code and contact support with the serial number.",
        ],
        questions: &[
            "My {brand} {noun} will not start, what should I check?",
            "What does error code E{n} mean on the {product}?",
            "Why is the {feature} on my {brand} not working?",
        ],
    },
    Section {
        heading: "Features",
        sentences: &[
            "The {feature} of the {product} adapts to how you use it during the first {days} days.",
            "You can switch the {feature} on or off in the settings menu or in the {brand} app.",
            "Together with the {part}, the {feature} saves up to {n} percent compared with older models.",
            "The {product} also offers {feature2}, which most customers enable after the first week.",
            "Firmware updates add improvements to the {feature} several times a year, free of charge.",
            "The {part2} is designed to work with the {feature}, so both are updated together.",
        ],
        questions: &[
            "How does the {feature} work on the {brand} {noun}?",
            "Can I turn off the {feature} of the {product}?",
            "Does the {brand} have {feature2}?",
        ],
    },
    Section {
        heading: "Safety",
        sentences: &[
            "Keep the {product} away from children and pets while the {part} is in use.",
            "Disconnect the power before you remove the {part2} or open any cover.",
            "The {product} meets the European safety standards and carries the CE mark on its base.",
            "Use only the {part} supplied by {brand}; third-party parts have not been tested with the {feature}.",
            "If the {product} has been dropped or shows damage, stop using it and contact support.",
            "Our safety notes are printed in {n} languages and are also available as large print.",
        ],
        questions: &[
            "Is the {brand} {noun} safe to use around children?",
            "What safety standards does the {product} meet?",
            "Can I use third-party parts with the {brand}?",
        ],
    },
    Section {
        heading: "Account and support",
        sentences: &[
            "Your {brand} account shows your orders, the warranty status and the serial number of each {noun}.",
            "Support is open {day} to Friday from 8am to 8pm, by chat, email or phone.",
            "Most questions about the {product} are answered within {n} hours, and urgent faults the same day.",
            "You can change your delivery address or your email in the account settings at any time.",
            "To close your account, ask support; we keep invoices for {m} years because the law requires it.",
            "Our service centre in {city} also accepts walk-in visits for quick checks of the {part}.",
        ],
        questions: &[
            "When is {brand} support open?",
            "How do I change my address in my {brand} account?",
            "Can I visit the {brand} service centre in {city}?",
        ],
    },
    Section {
        heading: "Compatibility",
        sentences: &[
            "The {product} works with the {part} of the previous generation, but not with the very first model.",
            "Accessories from the {brand} range fit without adapters, including the {part2}.",
            "The {brand} app runs on phones from the last {n} years and on most tablets.",
            "The {feature} needs the latest firmware; older units update automatically over wifi.",
            "Third-party accessories may fit the {part}, but we cannot guarantee that the {feature} works with them.",
            "A full list of compatible parts is printed on the last page of the manual.",
        ],
        questions: &[
            "Does the {brand} {noun} work with older accessories?",
            "Which phones does the {brand} app support?",
            "Is the {part} of the {product} compatible with other models?",
        ],
    },
    Section {
        heading: "Environment and recycling",
        sentences: &[
            "The {product} is made with {n} percent recycled materials, and its packaging is plastic free.",
            "Send your old {noun} back to us and we recycle it responsibly, whatever the brand.",
            "Spare parts for the {product} are available for at least {m} years after the last unit is sold.",
            "The {part} can be replaced on its own, so a fault rarely means replacing the whole {noun}.",
            "Our warehouse near {city} runs on renewable electricity.",
            "The {feature} lowers the energy the {product} uses in standby to under {n} watts.",
        ],
        questions: &[
            "Can I recycle my old {noun} with {brand}?",
            "How long are spare parts for the {product} available?",
            "What does the {brand} use in standby?",
        ],
    },
];

const INTRO: &[&str] = &[
    "This article explains everything you need to know about the {product}.",
    "The {product} is our most popular {noun}, known for its {feature} and its sturdy {part}.",
    "Owners in {city} and elsewhere rely on the {brand} every day.",
    "If your question is not answered here, our support team is happy to help.",
];

/// Slot values for one document.
struct Fill {
    product: String,
    brand: String,
    noun: &'static str,
    parts: &'static [&'static str],
    features: &'static [&'static str],
    city: &'static str,
    day: &'static str,
}

impl Fill {
    fn render(&self, template: &str, rng: &mut Rng) -> String {
        let mut out = String::with_capacity(template.len() + 32);
        let mut rest = template;
        let part = rng.below(self.parts.len());
        let part2 = (part + 1 + rng.below(self.parts.len() - 1)) % self.parts.len();
        let feature = rng.below(self.features.len());
        let feature2 = (feature + 1 + rng.below(self.features.len() - 1)) % self.features.len();
        let n = rng.between(2, 12);
        let m = n + rng.between(2, 24);
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let slot = &rest[open + 1..open + close];
            match slot {
                "product" => out.push_str(&self.product),
                "brand" => out.push_str(&self.brand),
                "noun" => out.push_str(self.noun),
                "part" => out.push_str(self.parts[part]),
                "part2" => out.push_str(self.parts[part2]),
                "feature" => out.push_str(self.features[feature]),
                "feature2" => out.push_str(self.features[feature2]),
                "n" => out.push_str(&n.to_string()),
                "m" => out.push_str(&m.to_string()),
                "days" => out.push_str(&[14, 30, 60, 90][rng.below(4)].to_string()),
                "city" => out.push_str(self.city),
                "day" => out.push_str(self.day),
                other => {
                    out.push('{');
                    out.push_str(other);
                    out.push('}');
                }
            }
            rest = &rest[open + close + 1..];
        }
        out.push_str(rest);
        out
    }
}

fn brand(rng: &mut Rng) -> String {
    let mut word = String::new();
    let syllables = if rng.below(3) == 0 { 3 } else { 2 };
    for _ in 0..syllables {
        word.push_str(rng.pick(BRAND_ONSETS));
        word.push_str(rng.pick(BRAND_VOWELS));
        word.push_str(rng.pick(BRAND_CODAS));
    }
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => word,
    }
}

impl Corpus {
    /// `documents` articles of 6–9 sections each (about 14 chunks each at
    /// agentry's default chunk size: 40 documents gave 550), and three
    /// questions per section.
    pub fn generate(documents: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x6c6f_6164_7465_7374);
        let mut docs = Vec::with_capacity(documents);
        let mut questions = Vec::new();
        let mut brands = std::collections::HashSet::new();
        for index in 0..documents {
            let kind = &KINDS[index % KINDS.len()];
            let brand = loop {
                let candidate = brand(&mut rng);
                if brands.insert(candidate.clone()) {
                    break candidate;
                }
            };
            let fill = Fill {
                product: format!("{brand} {} {}", rng.pick(MODELS), kind.noun),
                brand,
                noun: kind.noun,
                parts: kind.parts,
                features: kind.features,
                city: rng.pick(CITIES),
                day: rng.pick(WEEKDAYS),
            };
            let title = format!("The {}: owner's guide", fill.product);
            let mut content = format!("# {title}\n\n");
            let intro: Vec<String> = INTRO.iter().map(|s| fill.render(s, &mut rng)).collect();
            content.push_str(&intro.join(" "));
            content.push_str("\n\n");

            // A random choice of sections, in a random order.
            let mut order: Vec<usize> = (0..SECTIONS.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
            let count = rng.between(6, 9);
            for &s in &order[..count] {
                let section = &SECTIONS[s];
                content.push_str(&format!("## {}\n\n", section.heading));
                // The section's sentences in a shuffled order, each used once
                // before any is used again.
                let mut deck: Vec<&str> = section.sentences.to_vec();
                for i in (1..deck.len()).rev() {
                    deck.swap(i, rng.below(i + 1));
                }
                let mut dealt = 0usize;
                let mut deal = |rng: &mut Rng| {
                    let template = deck[dealt % deck.len()];
                    dealt += 1;
                    fill.render(template, rng)
                };
                let paragraphs = rng.between(2, 3);
                for p in 0..paragraphs {
                    // A list now and then, as real help articles have.
                    if p == paragraphs - 1 && rng.below(4) == 0 {
                        for _ in 0..rng.between(3, 4) {
                            let sentence = deal(&mut rng);
                            content.push_str(&format!("- {sentence}\n"));
                        }
                        content.push('\n');
                        continue;
                    }
                    let sentences: Vec<String> =
                        (0..rng.between(3, 6)).map(|_| deal(&mut rng)).collect();
                    content.push_str(&sentences.join(" "));
                    content.push_str("\n\n");
                }
                for template in section.questions {
                    questions.push(fill.render(template, &mut rng));
                }
            }
            docs.push(Document { title, content });
        }
        // Interleave the documents' questions so that consecutive turns ask about different products.
        for i in (1..questions.len()).rev() {
            questions.swap(i, rng.below(i + 1));
        }
        Self {
            documents: docs,
            questions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_corpus() {
        assert_eq!(Corpus::generate(5, 7), Corpus::generate(5, 7));
        assert_ne!(
            Corpus::generate(5, 7).documents[0],
            Corpus::generate(5, 8).documents[0]
        );
    }

    #[test]
    fn documents_are_markdown_articles_with_several_sections() {
        let corpus = Corpus::generate(40, 1);
        assert_eq!(corpus.documents.len(), 40);
        let titles: std::collections::HashSet<_> =
            corpus.documents.iter().map(|d| &d.title).collect();
        assert_eq!(titles.len(), 40);
        for doc in &corpus.documents {
            assert!(doc.content.starts_with("# The "));
            let sections = doc.content.matches("\n## ").count();
            assert!((6..=9).contains(&sections), "{sections}");
            assert!(!doc.content.contains('{'), "unfilled slot in {}", doc.title);
            let chars = doc.content.chars().count();
            assert!((4_000..=20_000).contains(&chars), "{chars}");
        }
        // agentry's default chunking (1,000 characters, 150 of overlap) made
        // 550 chunks of these 40 documents: keep their size where it was.
        let total: usize = corpus.documents.iter().map(|d| d.content.len()).sum();
        let mean = total / corpus.documents.len();
        assert!((8_000..=10_000).contains(&mean), "{mean}");
    }

    /// The offline responder's intent words (src/llm/offline.rs), matched on
    /// word boundaries as it does.
    const TOOL_WORDS: &[&str] = &[
        "book",
        "books",
        "booking",
        "booked",
        "appointment",
        "appointments",
        "schedule",
        "scheduled",
        "scheduling",
        "reschedule",
        "reserve",
        "reserved",
        "reservation",
        "reservations",
        "availability",
        "quote",
        "quotes",
        "price",
        "prices",
        "pricing",
        "estimate",
        "estimates",
        "cost",
        "costs",
        "how much",
        "human",
        "humans",
        "person",
        "real person",
        "representative",
        "speak to someone",
        "talk to someone",
        "speak with someone",
        "talk with someone",
        "agent",
    ];

    #[test]
    fn questions_name_their_product_and_call_no_tools() {
        for seed in 1..=5 {
            let corpus = Corpus::generate(40, seed);
            assert!(corpus.questions.len() >= 40 * 6 * 3);
            for question in &corpus.questions {
                assert!(question.ends_with('?'), "{question}");
                assert!(!question.contains('{'), "{question}");
                let words: Vec<String> = question
                    .to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .map(str::to_owned)
                    .collect();
                let padded = format!(" {} ", words.join(" "));
                for phrase in TOOL_WORDS {
                    assert!(
                        !padded.contains(&format!(" {phrase} ")),
                        "{question:?} has {phrase:?}"
                    );
                }
                let names_a_product = corpus.documents.iter().any(|d| {
                    let brand = d
                        .title
                        .trim_start_matches("The ")
                        .split(' ')
                        .next()
                        .unwrap();
                    question.contains(brand)
                });
                assert!(names_a_product, "{question}");
            }
        }
    }

    #[test]
    fn bounded_draws_stay_in_range() {
        let mut rng = Rng::new(0);
        for _ in 0..1000 {
            assert!(rng.below(7) < 7);
            assert!((3..=5).contains(&rng.between(3, 5)));
        }
        assert_eq!(rng.below(0), 0);
    }
}
