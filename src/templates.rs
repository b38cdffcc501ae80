//! Templates with `{{NAME}}` placeholders, filled in one pass with every value
//! HTML-escaped. Visitor- and tenant-controlled text (a lead's name, a tenant's
//! name) can therefore neither inject markup nor smuggle in another
//! placeholder to be expanded after it.

/// Escapes text for HTML bodies and quoted attributes alike.
pub fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// `template` with each `{{NAME}}` of `values` replaced by its escaped value.
/// A placeholder without a value is left as written.
pub fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let value = after.find("}}").and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (close, *value))
        });
        match value {
            Some((close, value)) => {
                out.push_str(&escape_html(value));
                rest = &after[close + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_never_expanded_again() {
        assert_eq!(
            render(
                "<h1>{{NAME}}</h1><p data-key=\"{{KEY}}\">{{MISSING}}</p>",
                &[("NAME", "<script>x</script> & {{KEY}}"), ("KEY", "a\"b'c")],
            ),
            "<h1>&lt;script&gt;x&lt;/script&gt; &amp; {{KEY}}</h1>\
             <p data-key=\"a&quot;b&#39;c\">{{MISSING}}</p>"
        );
        assert_eq!(render("{{ unclosed", &[("x", "y")]), "{{ unclosed");
    }
}
