//! Twilio's request signatures (`X-Twilio-Signature`).
//!
//! Twilio signs each webhook with HMAC-SHA1, keyed by the account's auth
//! token, over the full URL it requested followed by every POST parameter's
//! name and value (sorted, no separators), and sends the base64 digest.
//! The URL must be the one Twilio was configured with, so it is rebuilt from
//! our configured public base URL ([`public_url`]): the Host header is the
//! sender's to choose, and behind a proxy it is not what Twilio used anyway.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> HmacSha1 {
    // By name, then by value for a repeated name, as Twilio's libraries sort.
    // (twilio-python also drops a pair repeated exactly; keeping it can only
    // refuse a request, never accept a forged one.)
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac =
        HmacSha1::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// The signature Twilio sends for a POST to `url` with form `params`.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    BASE64.encode(mac(auth_token, url, params).finalize().into_bytes())
}

/// Whether `signature` (the header's value) is Twilio's for this request.
/// The comparison takes the same time whatever bytes differ, so the header
/// cannot be guessed byte by byte; a value that is not base64 is refused.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    let Ok(claimed) = BASE64.decode(signature) else {
        return false;
    };
    mac(auth_token, url, params).verify_slice(&claimed).is_ok()
}

/// The URL Twilio requested: our configured public base URL (what the
/// Twilio console's webhook URL starts with, e.g. `https://agentry.example.com`
/// or `https://x.example.com/agentry/`) joined with the request's path and
/// query as our router saw them. Exactly one `/` joins them; the request
/// part is otherwise kept byte for byte, since Twilio signed it that way.
pub fn public_url(base: &str, path_and_query: &str) -> String {
    let base = base.trim_end_matches('/');
    let rest = path_and_query.strip_prefix('/').unwrap_or(path_and_query);
    format!("{base}/{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    /// The example of Twilio's security docs, deliberately not in sorted order.
    fn documented_params() -> Vec<(String, String)> {
        params(&[
            ("To", "+18005551212"),
            ("Digits", "1234"),
            ("CallSid", "CA1234567890ABCDE"),
            ("From", "+12349013030"),
            ("Caller", "+12349013030"),
        ])
    }

    const DOCUMENTED_SIGNATURE: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";

    #[test]
    fn the_signature_of_twilios_documented_example_matches() {
        assert_eq!(
            compute(TOKEN, URL, &documented_params()),
            DOCUMENTED_SIGNATURE
        );
        assert!(verify(
            TOKEN,
            URL,
            &documented_params(),
            DOCUMENTED_SIGNATURE
        ));
    }

    #[test]
    fn a_changed_parameter_fails() {
        let mut changed = documented_params();
        changed[1].1 = "1235".into();
        assert!(!verify(TOKEN, URL, &changed, DOCUMENTED_SIGNATURE));
    }

    #[test]
    fn an_added_or_a_missing_parameter_fails() {
        let mut added = documented_params();
        added.push(("Body".into(), String::new()));
        assert!(!verify(TOKEN, URL, &added, DOCUMENTED_SIGNATURE));
        let missing = &documented_params()[1..];
        assert!(!verify(TOKEN, URL, missing, DOCUMENTED_SIGNATURE));
    }

    #[test]
    fn the_wrong_token_fails() {
        assert!(!verify(
            "54321",
            URL,
            &documented_params(),
            DOCUMENTED_SIGNATURE
        ));
    }

    #[test]
    fn the_wrong_url_fails() {
        for url in [
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            "https://mycompany.com/myapp.php?bar=2&foo=1",
            "https://mycompany.com/myapp.php",
            "https://evil.example/myapp.php?foo=1&bar=2",
        ] {
            assert!(
                !verify(TOKEN, url, &documented_params(), DOCUMENTED_SIGNATURE),
                "{url}"
            );
        }
    }

    #[test]
    fn an_empty_or_garbled_signature_fails() {
        for signature in [
            "",
            "not base64!",
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ",
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ=0",
            "0/KCTR6DLpKmkAf8muzZqo1nDgA=",
            // The right digest, truncated: same prefix, wrong length.
            "0/KCTR6DLpKmkAf8muzZqo1nD",
        ] {
            assert!(
                !verify(TOKEN, URL, &documented_params(), signature),
                "{signature:?}"
            );
        }
    }

    #[test]
    fn the_order_of_the_form_does_not_matter_but_which_value_has_which_name_does() {
        let one = compute(TOKEN, URL, &params(&[("A", "1"), ("B", "2")]));
        let reordered = compute(TOKEN, URL, &params(&[("B", "2"), ("A", "1")]));
        assert_eq!(one, reordered);
        assert_ne!(one, compute(TOKEN, URL, &params(&[("A", "2"), ("B", "1")])));
    }

    #[test]
    fn a_repeated_name_is_signed_with_its_values_in_order() {
        // As twilio-python/-node do for a repeated name: "Ab" before "Ac".
        let by_hand = {
            let mut mac = HmacSha1::new_from_slice(TOKEN.as_bytes()).unwrap();
            mac.update(format!("{URL}AbAcZa").as_bytes());
            BASE64.encode(mac.finalize().into_bytes())
        };
        let form = params(&[("Z", "a"), ("A", "c"), ("A", "b")]);
        assert_eq!(compute(TOKEN, URL, &form), by_hand);
    }

    #[test]
    fn no_parameters_signs_the_url_alone() {
        let by_hand = {
            let mut mac = HmacSha1::new_from_slice(TOKEN.as_bytes()).unwrap();
            mac.update(URL.as_bytes());
            BASE64.encode(mac.finalize().into_bytes())
        };
        assert_eq!(compute(TOKEN, URL, &[]), by_hand);
        assert!(verify(TOKEN, URL, &[], &by_hand));
    }

    #[test]
    fn public_urls_join_the_base_and_the_request_with_one_slash() {
        let request = "/twilio/sms?tenant=a&x=1";
        for (base, expected) in [
            (
                "https://agentry.example.com",
                "https://agentry.example.com/twilio/sms?tenant=a&x=1",
            ),
            (
                "https://agentry.example.com/",
                "https://agentry.example.com/twilio/sms?tenant=a&x=1",
            ),
            (
                "https://x.example.com/agentry",
                "https://x.example.com/agentry/twilio/sms?tenant=a&x=1",
            ),
            (
                "https://x.example.com/agentry/",
                "https://x.example.com/agentry/twilio/sms?tenant=a&x=1",
            ),
        ] {
            assert_eq!(public_url(base, request), expected, "{base}");
        }
    }

    #[test]
    fn public_urls_keep_the_request_part_as_it_came() {
        let base = "https://agentry.example.com";
        assert_eq!(public_url(base, "/"), "https://agentry.example.com/");
        assert_eq!(public_url(base, ""), "https://agentry.example.com/");
        assert_eq!(
            public_url(base, "twilio/voice"),
            "https://agentry.example.com/twilio/voice"
        );
        // Only the joining slash is shared: a doubled one was signed doubled.
        assert_eq!(
            public_url(base, "//twilio/voice?a=%20b"),
            "https://agentry.example.com//twilio/voice?a=%20b"
        );
    }

    #[test]
    fn the_documented_example_verifies_through_public_url() {
        let url = public_url("https://mycompany.com/", "/myapp.php?foo=1&bar=2");
        assert!(verify(
            TOKEN,
            &url,
            &documented_params(),
            DOCUMENTED_SIGNATURE
        ));
    }
}
