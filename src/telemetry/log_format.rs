//! JSON log lines that name their trace: `{"trace_id":"…", …}` first, then
//! the line as tracing-subscriber's JSON format writes it. A top-level field
//! is what log stores (Loki, Elasticsearch) index and filter on; the span
//! list, an array, is not. Pretty lines need no help: they print each span
//! with its fields, and the request span's include `trace_id`.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::trace_context::TraceContext;

/// Wraps a JSON event format, prefixing the trace id of the nearest span
/// (from the event's upwards) that carries one.
pub struct WithTraceId<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let trace = ctx.event_scope().and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<TraceContext>().copied())
        });
        let Some(trace) = trace else {
            return self.0.format_event(ctx, writer, event);
        };
        write!(writer, "{{\"trace_id\":\"{}\",", trace.trace_id)?;
        // The inner line's own opening brace is already written.
        let mut rest = SkipFirst {
            inner: writer,
            skipped: false,
        };
        self.0.format_event(ctx, Writer::new(&mut rest), event)
    }
}

/// Passes everything on but the first character.
struct SkipFirst<'a> {
    inner: Writer<'a>,
    skipped: bool,
}

impl fmt::Write for SkipFirst<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if self.skipped {
            return self.inner.write_str(text);
        }
        let mut chars = text.chars();
        if chars.next().is_none() {
            return Ok(());
        }
        self.skipped = true;
        self.inner.write_str(chars.as_str())
    }
}
