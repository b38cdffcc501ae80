//! Contact details as people type them, checked and normalized once: what
//! the lead-capture tool and the dashboard's lead API both accept.

/// An email address, trimmed and lowercased, or why it is not one.
pub fn parse_email(input: &str) -> Result<String, String> {
    let email = input.trim().to_lowercase();
    let valid = (3..=254).contains(&email.len())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.contains('@') && domain.contains('.')
                && !domain.starts_with('.') && !domain.ends_with('.'));
    if valid {
        Ok(email)
    } else {
        Err(format!("{input:?} is not a valid email address"))
    }
}

/// A phone number normalized to E.164 (`+14155550100`). Without a leading
/// `+` it is read as a number of `national_region` (none: refused), since
/// visitors type the number they would dial at home.
pub fn parse_phone(
    input: &str,
    national_region: Option<phonenumber::country::Id>,
) -> Result<String, String> {
    let reject = || {
        format!("{input:?} is not a valid phone number in international format, e.g. +14155550100")
    };
    let trimmed = input.trim();
    if trimmed.chars().count() > 32 || (!trimmed.starts_with('+') && national_region.is_none()) {
        return Err(reject());
    }
    let number = phonenumber::parse(national_region, trimmed).map_err(|_| reject())?;
    if !phonenumber::is_valid(&number) {
        return Err(reject());
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_malformed_ones_refused() {
        assert_eq!(
            parse_email("  Ana@Example.COM ").unwrap(),
            "ana@example.com"
        );
        for bad in [
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "a b@example.com",
            "a@b@c.com",
            "ana@.com",
        ] {
            assert!(parse_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phones_become_e164_and_national_numbers_need_a_region() {
        assert_eq!(
            parse_phone("+1 (415) 555-2671", None).unwrap(),
            "+14155552671"
        );
        assert!(parse_phone("(415) 555-2671", None).is_err());
        assert_eq!(
            parse_phone("(415) 555-2671", Some(phonenumber::country::Id::US)).unwrap(),
            "+14155552671"
        );
        assert!(parse_phone("+1 555", None).is_err());
        assert!(parse_phone("call me maybe", Some(phonenumber::country::Id::US)).is_err());
    }
}
