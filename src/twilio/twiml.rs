//! TwiML, the XML a Twilio webhook answers with: a `<Response>` holding verbs
//! Twilio runs in order. Every text and attribute is escaped here, since
//! most of it is an agent's reply or a caller's words, and one stray `<` or
//! `&` would make Twilio reject the whole document.

use std::fmt;

const XML_DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// How long Twilio waits after the caller stops speaking before it ends a
/// speech `<Gather>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpeechTimeout {
    /// Twilio decides from the pause itself; the usual choice for a
    /// conversation.
    Auto,
    Seconds(u32),
}

impl fmt::Display for SpeechTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpeechTimeout::Auto => f.write_str("auto"),
            SpeechTimeout::Seconds(seconds) => write!(f, "{seconds}"),
        }
    }
}

/// A TwiML document under construction; [`Response::to_xml`] renders it.
/// An empty one is valid TwiML: Twilio does nothing (no reply SMS, and a call
/// ends).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "a TwiML response does nothing until it is rendered with to_xml"]
pub struct Response {
    verbs: String,
}

impl Response {
    pub fn new() -> Self {
        Self::default()
    }

    /// An SMS reply.
    pub fn message(self, text: &str) -> Self {
        self.element("Message", text)
    }

    /// Words spoken to the caller.
    pub fn say(self, text: &str) -> Self {
        self.element("Say", text)
    }

    /// Speaks `prompt` while listening for the caller's answer, which Twilio
    /// POSTs to `action_url` as `SpeechResult`. If the caller says nothing
    /// for `timeout_secs`, Twilio goes on to the next verb instead, so follow
    /// this with what should happen then (a `redirect`, a `say` and `hangup`).
    pub fn gather_speech(
        mut self,
        action_url: &str,
        timeout_secs: u32,
        speech_timeout: SpeechTimeout,
        prompt: &str,
    ) -> Self {
        let timeout = timeout_secs.to_string();
        let speech_timeout = speech_timeout.to_string();
        self.open_tag(
            "Gather",
            &[
                ("input", "speech"),
                ("action", action_url),
                ("method", "POST"),
                ("timeout", &timeout),
                ("speechTimeout", &speech_timeout),
            ],
        );
        self.verbs.push('>');
        self = self.say(prompt);
        self.verbs.push_str("</Gather>");
        self
    }

    /// Connects the call to `number` (a person or a forwarding line).
    pub fn dial(self, number: &str) -> Self {
        self.element("Dial", number)
    }

    /// Ends the call.
    pub fn hangup(mut self) -> Self {
        self.verbs.push_str("<Hangup/>");
        self
    }

    /// Streams the call's audio both ways over a WebSocket at `url`
    /// (`wss://…`), for as long as the stream stays open.
    pub fn connect_stream(mut self, url: &str) -> Self {
        self.verbs.push_str("<Connect>");
        self = self.empty_element("Stream", &[("url", url)]);
        self.verbs.push_str("</Connect>");
        self
    }

    /// Forks the caller's audio (the inbound track) to a WebSocket at `url`
    /// while the document goes on: unlike [`Self::connect_stream`], which
    /// hands the call to the stream and runs no further verb until it
    /// closes, the `<Gather>` after this still listens. The stream lasts
    /// until the call ends, across later documents.
    pub fn start_stream(mut self, url: &str) -> Self {
        self.verbs.push_str("<Start>");
        self = self.empty_element("Stream", &[("url", url), ("track", "inbound_track")]);
        self.verbs.push_str("</Start>");
        self
    }

    /// Hands the call or message to the TwiML at `url`; nothing after this
    /// verb runs.
    pub fn redirect(self, url: &str) -> Self {
        self.element("Redirect", url)
    }

    /// The document, with its XML declaration.
    pub fn to_xml(&self) -> String {
        format!("{XML_DECLARATION}<Response>{}</Response>", self.verbs)
    }

    fn open_tag(&mut self, name: &str, attributes: &[(&str, &str)]) {
        self.verbs.push('<');
        self.verbs.push_str(name);
        for (attribute, value) in attributes {
            self.verbs.push(' ');
            self.verbs.push_str(attribute);
            self.verbs.push_str("=\"");
            escape_into(&mut self.verbs, value);
            self.verbs.push('"');
        }
    }

    fn element(mut self, name: &str, text: &str) -> Self {
        self.open_tag(name, &[]);
        self.verbs.push('>');
        escape_into(&mut self.verbs, text);
        self.verbs.push_str("</");
        self.verbs.push_str(name);
        self.verbs.push('>');
        self
    }

    fn empty_element(mut self, name: &str, attributes: &[(&str, &str)]) -> Self {
        self.open_tag(name, attributes);
        self.verbs.push_str("/>");
        self
    }
}

/// Appends `text` escaped for XML text and attribute values alike. Characters
/// XML 1.0 forbids outright (most control characters) are dropped: no
/// escape makes them legal, and a model's output can contain them.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(verbs: &str) -> String {
        format!(r#"<?xml version="1.0" encoding="UTF-8"?><Response>{verbs}</Response>"#)
    }

    #[test]
    fn a_started_media_stream_forks_the_inbound_track_and_the_document_goes_on() {
        let xml = Response::new()
            .start_stream("wss://agentry.example.com/ws/twilio/media/ams_a.b")
            .say("Hello")
            .to_xml();
        assert_eq!(
            xml,
            document(
                r#"<Start><Stream url="wss://agentry.example.com/ws/twilio/media/ams_a.b" track="inbound_track"/></Start><Say>Hello</Say>"#
            )
        );
    }

    #[test]
    fn an_empty_response_is_empty_twiml() {
        assert_eq!(Response::new().to_xml(), document(""));
        assert_eq!(Response::default(), Response::new());
    }

    #[test]
    fn a_message_is_escaped_text() {
        assert_eq!(
            Response::new().message(r#"<b>&"x"</b>"#).to_xml(),
            document("<Message>&lt;b&gt;&amp;&quot;x&quot;&lt;/b&gt;</Message>")
        );
        assert_eq!(
            Response::new().message("it's 5 > 3").to_xml(),
            document("<Message>it&apos;s 5 &gt; 3</Message>")
        );
    }

    #[test]
    fn markup_in_a_reply_cannot_add_verbs() {
        let xml = Response::new()
            .say("</Say><Dial>+15550100</Dial><Say>")
            .to_xml();
        assert_eq!(
            xml,
            document("<Say>&lt;/Say&gt;&lt;Dial&gt;+15550100&lt;/Dial&gt;&lt;Say&gt;</Say>")
        );
        assert!(!xml.contains("<Dial>"));
    }

    #[test]
    fn text_keeps_newlines_unicode_and_already_escaped_looking_text() {
        assert_eq!(
            Response::new().message("Hi 😀\nsee &amp; you").to_xml(),
            document("<Message>Hi 😀\nsee &amp;amp; you</Message>")
        );
    }

    #[test]
    fn characters_xml_forbids_are_dropped() {
        assert_eq!(
            Response::new()
                .say("a\u{0}b\u{1b}c\u{7}d\u{FFFF}e\tf")
                .to_xml(),
            document("<Say>abcde\tf</Say>")
        );
    }

    #[test]
    fn a_speech_gather_nests_its_prompt() {
        let xml = Response::new()
            .gather_speech(
                "https://a.example/twilio/voice/turn",
                5,
                SpeechTimeout::Auto,
                "How can I help?",
            )
            .to_xml();
        assert_eq!(
            xml,
            document(
                r#"<Gather input="speech" action="https://a.example/twilio/voice/turn" method="POST" timeout="5" speechTimeout="auto"><Say>How can I help?</Say></Gather>"#
            )
        );
    }

    #[test]
    fn a_gathers_attributes_and_prompt_are_escaped() {
        let xml = Response::new()
            .gather_speech(
                r#"https://a.example/turn?call=1&x="y""#,
                3,
                SpeechTimeout::Seconds(2),
                "Tom & Jerry's <show>",
            )
            .to_xml();
        assert_eq!(
            xml,
            document(
                r#"<Gather input="speech" action="https://a.example/turn?call=1&amp;x=&quot;y&quot;" method="POST" timeout="3" speechTimeout="2"><Say>Tom &amp; Jerry&apos;s &lt;show&gt;</Say></Gather>"#
            )
        );
    }

    #[test]
    fn voice_verbs_render_in_order() {
        let xml = Response::new()
            .say("Connecting you.")
            .dial("+14155550100")
            .say("Goodbye.")
            .hangup()
            .to_xml();
        assert_eq!(
            xml,
            document(
                "<Say>Connecting you.</Say><Dial>+14155550100</Dial><Say>Goodbye.</Say><Hangup/>"
            )
        );
    }

    #[test]
    fn a_stream_connects_with_an_escaped_url() {
        assert_eq!(
            Response::new()
                .connect_stream("wss://a.example/media?call=CA1&token=a\"b")
                .to_xml(),
            document(
                r#"<Connect><Stream url="wss://a.example/media?call=CA1&amp;token=a&quot;b"/></Connect>"#
            )
        );
    }

    #[test]
    fn a_redirect_carries_its_url_as_text() {
        assert_eq!(
            Response::new()
                .say("One moment.")
                .redirect("https://a.example/twilio/voice?step=2&retry=1")
                .to_xml(),
            document(
                "<Say>One moment.</Say><Redirect>https://a.example/twilio/voice?step=2&amp;retry=1</Redirect>"
            )
        );
    }

    #[test]
    fn several_messages_are_several_replies() {
        assert_eq!(
            Response::new().message("one").message("two").to_xml(),
            document("<Message>one</Message><Message>two</Message>")
        );
    }
}
