//! The pure parts of the Twilio SMS and voice channels, kept apart from the
//! routes that call them so each rule is tested on its own:
//!
//! - [`signature`]: proving a webhook came from Twilio (`X-Twilio-Signature`).
//! - [`sms_text`]: compliance keywords, segment counting and fitting a reply
//!   into a few segments, E.164 shape.
//! - [`twiml`]: the TwiML a webhook answers with, every text escaped.
//! - [`speech`]: an agent reply reshaped for text-to-speech.

pub mod signature;
pub mod sms_text;
pub mod speech;
pub mod twiml;
