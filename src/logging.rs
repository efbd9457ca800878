//! Log output: one JSON object per line on stdout for `serve` (the decision log), plain
//! text on stderr for the other commands.
//!
//! The JSON lines are written by `JsonLines` rather than tracing-subscriber's JSON
//! formatter: same shape (`timestamp`, `level`, the event's fields flattened, `target`),
//! written straight into the line buffer. tracing-subscriber's goes through serde and an
//! adaptor that re-validates every piece as UTF-8, which cost a sixth of a remembered
//! review's CPU.

use std::fmt::{self, Write as _};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber: JSON lines handed to `log` (at `info` unless `RUST_LOG`
/// says otherwise), or text on stderr (at `warn`) when there is no decision log.
pub fn init(log: Option<&DecisionLog>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if log.is_some() { "info" } else { "warn" })
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match log {
        Some(log) => {
            let log = log.clone();
            builder
                .event_format(JsonLines)
                .with_writer(move || OutboxWriter(log.clone(), Vec::new()))
                .try_init()
        }
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}

/// One review's decision, for the decision log.
pub struct Decision<'a> {
    pub uid: &'a str,
    pub namespace: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub operation: &'a str,
    pub decision: crate::decision::Decision,
    /// Reason codes of the denials, comma-separated.
    pub reasons: &'a str,
    pub warnings: usize,
    pub duration: std::time::Duration,
}

/// The decision log of `serve`: JSON lines on stdout, one per review and one per `tracing`
/// event, written by a thread of its own so that no review ever waits on stdout. Lines are
/// appended to an outbox; the writer thread writes what has gathered `LINGER` after the
/// first line arrived, so under load one `write` carries hundreds of reviews. Past
/// `OUTBOX_LIMIT` bytes waiting (stdout is not read, or slower than the reviews), further
/// lines are dropped and counted: admission never waits on the log. The server owns it and
/// hands it to where lines are written; clones share one outbox.
#[derive(Clone)]
pub struct DecisionLog(Arc<Outbox>);

impl DecisionLog {
    /// The log on stdout and its writer thread.
    pub fn start() -> Self {
        Self::start_on(Box::new(std::io::stdout()))
    }

    /// The log on `out` (benchmarks write to `io::sink()`) and its writer thread.
    pub fn start_on(out: Box<dyn std::io::Write + Send>) -> Self {
        let outbox = Arc::new(Outbox {
            out: Mutex::new(out),
            lines: Mutex::new(String::new()),
            arrived: Condvar::new(),
            running: std::sync::atomic::AtomicBool::new(false),
            dropped: OnceLock::new(),
        });
        let writer = outbox.clone();
        let running = std::thread::Builder::new()
            .name("verdict-log".into())
            .spawn(move || write_forever(&writer))
            .is_ok();
        outbox.running.store(running, Ordering::Release);
        Self(outbox)
    }

    /// Counts the lines dropped because stdout was not read in `counter`
    /// (`verdict_log_lines_dropped_total`).
    pub fn count_dropped_lines_in(&self, counter: prometheus::IntCounter) {
        let _ = self.0.dropped.set(counter);
    }

    /// Writes the decision log line of one review: the line an `info!` event with target
    /// `verdict::decision`, message `decision` and these fields would give through
    /// [`JsonLines`] (`decision_lines_are_the_events_lines` holds them equal), if `RUST_LOG`
    /// lets that event through. Not through tracing's dispatch and field visitors, which
    /// took half of the line's cost: there is one per review.
    pub fn decision(&self, line: &Decision) {
        if !tracing::enabled!(target: "verdict::decision", tracing::Level::INFO) {
            return;
        }
        let now = SystemTime::now();
        self.append(|lines| write_decision(lines, line, now));
    }

    /// Writes every line handed over and not yet written, after a batch the writer has
    /// started: `serve` calls it once its runtime has stopped, before exiting. Gives up
    /// after `FINISH_LIMIT` when nobody reads stdout: an exit never hangs on the log.
    pub fn finish(&self) {
        let (done, finished) = std::sync::mpsc::channel();
        let outbox = self.0.clone();
        let writer = std::thread::Builder::new()
            .name("verdict-log-finish".into())
            .spawn(move || {
                write_waiting(&outbox, &mut String::new());
                let _ = done.send(());
            });
        if writer.is_ok() {
            let _ = finished.recv_timeout(FINISH_LIMIT);
        }
    }

    /// Appends what `write` writes to the outbox, whole lines or nothing; drops and counts
    /// them when the writer is `OUTBOX_LIMIT` behind.
    fn append(&self, write: impl FnOnce(&mut String) -> fmt::Result) {
        let outbox = &*self.0;
        let mut lines = lock(&outbox.lines);
        let before = lines.len();
        if before >= OUTBOX_LIMIT {
            drop(lines);
            if let Some(dropped) = outbox.dropped.get() {
                dropped.inc();
            }
            return;
        }
        if write(&mut lines).is_err() {
            lines.truncate(before);
            return;
        }
        if !outbox.running.load(Ordering::Acquire) {
            let mut text = std::mem::take(&mut *lines);
            drop(lines);
            return write_out(&mut **lock(&outbox.out), &mut text);
        }
        drop(lines);
        if before == 0 {
            outbox.arrived.notify_one();
        }
    }
}

/// How long the writer lets lines gather after the first one arrives.
const LINGER: Duration = Duration::from_millis(10);
/// Past this many bytes waiting for the writer, further lines are dropped and counted.
const OUTBOX_LIMIT: usize = 1024 * 1024;
/// How long `finish` waits for a stdout nobody reads.
const FINISH_LIMIT: Duration = Duration::from_secs(2);

/// A `tracing` event's line, handed to the decision log like decision lines (never written
/// by the thread that logged it, which would wait on a stdout nobody reads).
struct OutboxWriter(DecisionLog, Vec<u8>);

impl std::io::Write for OutboxWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for OutboxWriter {
    fn drop(&mut self) {
        if !self.1.is_empty() {
            let text = String::from_utf8_lossy(&self.1);
            self.0.append(|lines| lines.write_str(&text));
        }
    }
}

/// Lines waiting for the writer thread, and where it writes them.
struct Outbox {
    /// Locked while a batch is written, so that lines written by two threads never
    /// interleave.
    out: Mutex<Box<dyn std::io::Write + Send>>,
    lines: Mutex<String>,
    /// Signalled when `lines` stops being empty.
    arrived: Condvar,
    /// Whether the writer thread runs; if it could not be started, lines are written at
    /// once.
    running: std::sync::atomic::AtomicBool,
    /// `verdict_log_lines_dropped_total`, once the server has registered it.
    dropped: OnceLock<prometheus::IntCounter>,
}

/// The writer thread: waits for lines, lets more gather for `LINGER`, writes them all.
fn write_forever(outbox: &Outbox) {
    let mut batch = String::new();
    loop {
        let mut lines = lock(&outbox.lines);
        while lines.is_empty() {
            lines = outbox
                .arrived
                .wait(lines)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(lines);
        std::thread::sleep(LINGER);
        write_waiting(outbox, &mut batch);
    }
}

/// Takes the waiting lines into `batch` and writes them. The output's lock is taken first
/// and held until they are written, so `finish`, which takes it too, comes after a batch
/// taken out, never between taking and writing it.
fn write_waiting(outbox: &Outbox, batch: &mut String) {
    let mut out = lock(&outbox.out);
    std::mem::swap(batch, &mut *lock(&outbox.lines));
    write_out(&mut **out, batch);
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whole lines in one `write_all` and a flush, so no other line lands inside them.
fn write_out(out: &mut dyn std::io::Write, text: &mut String) {
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    text.clear();
}

fn write_decision(w: &mut impl fmt::Write, line: &Decision, now: SystemTime) -> fmt::Result {
    w.write_str("{\"timestamp\":\"")?;
    write_timestamp(w, now)?;
    w.write_str("\",\"level\":\"INFO\",\"message\":\"decision\"")?;
    for (name, value) in [
        ("uid", line.uid),
        ("namespace", line.namespace),
        ("kind", line.kind),
        ("name", line.name),
        ("operation", line.operation),
        ("decision", line.decision.as_str()),
        ("reasons", line.reasons),
    ] {
        w.write_str(",\"")?;
        w.write_str(name)?;
        w.write_str("\":")?;
        write_string(w, value)?;
    }
    writeln!(
        w,
        ",\"warnings\":{},\"duration_ms\":{},\"target\":\"verdict::decision\"}}",
        line.warnings,
        line.duration.as_secs_f64() * 1000.0
    )
}

/// `{"timestamp":"2026-11-22T13:20:00.123456Z","level":"INFO","message":"decision",
/// "uid":"…",…,"target":"verdict::decision"}`: fields in the order they were recorded.
/// Spans are not written (verdict opens none).
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Records of the `log` crate carry their real target and level in `log.*` fields
        // (written too, as tracing-subscriber does).
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, SystemTime::now())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = JsonFields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        write_string(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`.
struct JsonFields<'a, W> {
    out: &'a mut W,
    result: fmt::Result,
}

impl<W: fmt::Write> JsonFields<'_, W> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            self.out.write_char(',')?;
            write_string(self.out, field.name())?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl<W: fmt::Write> Visit for JsonFields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| write_string(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.entry(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value}")?;
            w.write_char('"')
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity.
        self.entry(field, |w| {
            if value.is_finite() {
                write!(w, "{value}")
            } else {
                w.write_str("null")
            }
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| w.write_str(if value { "true" } else { "false" }));
    }
}

/// A JSON string literal.
fn write_string(w: &mut impl fmt::Write, text: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(&mut *w).write_str(text)?;
    w.write_char('"')
}

/// Writes what it is given as the inside of a JSON string: quote, backslash and control
/// characters escaped, everything else as it is.
struct Escaped<'a, W: ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            // Escapes are all ASCII, so `i` is a character boundary.
            self.0.write_str(&text[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&text[plain..])
    }
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber writes it.
fn write_timestamp(w: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let at = i64::try_from(since.as_secs())
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    // Digit by digit rather than through `write!`: one line per review, and formatting
    // arguments costs more than the rest of the line.
    let year = u32::try_from(at.year()).unwrap_or(0);
    for (n, width, after) in [
        (year, 4, '-'),
        (u32::from(u8::from(at.month())), 2, '-'),
        (u32::from(at.day()), 2, 'T'),
        (u32::from(at.hour()), 2, ':'),
        (u32::from(at.minute()), 2, ':'),
        (u32::from(at.second()), 2, '.'),
        (since.subsec_micros(), 6, 'Z'),
    ] {
        write_digits(w, n, width)?;
        w.write_char(after)?;
    }
    Ok(())
}

/// The last `width` decimal digits of `n`, zero-padded.
fn write_digits(w: &mut impl fmt::Write, n: u32, width: u32) -> fmt::Result {
    for place in (0..width).rev() {
        let digit = n / 10u32.pow(place) % 10;
        w.write_char(char::from_digit(digit, 10).unwrap_or('0'))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::ErrorKind::Other)?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<Value> {
            let bytes = self.0.lock().expect("not poisoned").clone();
            String::from_utf8(bytes)
                .expect("UTF-8")
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect()
        }
    }

    fn emit_all() {
        let tricky = "quote \" backslash \\ newline \n tab \t nul \0 bell \u{7} é 🦀";
        let error = std::io::Error::other("disk \"full\"");
        tracing::info!(
            target: "verdict::decision",
            uid = "abc",
            text = tricky,
            debugged = ?tricky,
            shown = %tricky,
            error = &error as &(dyn std::error::Error + 'static),
            count = 3u64,
            negative = -7i64,
            big = u128::MAX,
            ratio = 0.125f64,
            not_a_number = f64::NAN,
            yes = true,
            "decision {}",
            tricky
        );
        tracing::warn!("plain");
        // A record of the `log` crate, as `LogTracer` hands it over.
        let record = log::Record::builder()
            .level(log::Level::Warn)
            .target("rustls::server")
            .module_path_static(Some("rustls::server::hs"))
            .file_static(Some("src/server/hs.rs"))
            .line(Some(42))
            .args(format_args!("from log"))
            .build();
        tracing_log::format_trace(&record).expect("dispatched");
    }

    fn capture(json_lines: bool) -> Vec<Value> {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_max_level(tracing::Level::INFO);
        if json_lines {
            tracing::subscriber::with_default(builder.event_format(JsonLines).finish(), emit_all);
        } else {
            let subscriber = builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .finish();
            tracing::subscriber::with_default(subscriber, emit_all);
        }
        out.lines()
    }

    #[test]
    fn decision_lines_are_the_events_lines() {
        let tricky = "quote \" backslash \\ newline \n nul \0 é 🦀";
        let line = Decision {
            uid: "u-1",
            namespace: tricky,
            kind: "Pod",
            name: "web-*",
            operation: "CREATE",
            decision: crate::decision::Decision::Deny,
            reasons: "IMAGE_UNSIGNED,POLICY_DENIED",
            warnings: 2,
            duration: Duration::from_micros(1234),
        };
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                target: "verdict::decision",
                uid = line.uid,
                namespace = line.namespace,
                kind = line.kind,
                name = line.name,
                operation = line.operation,
                decision = line.decision.as_str(),
                reasons = line.reasons,
                warnings = line.warnings,
                duration_ms = line.duration.as_secs_f64() * 1000.0,
                "decision"
            );
        });
        let mut text = String::new();
        write_decision(&mut text, &line, SystemTime::now()).expect("written");
        let event = String::from_utf8(out.0.lock().expect("not poisoned").clone()).expect("UTF-8");
        // Equal text but for the time stamp, which comes first.
        let after_stamp = |l: &str| l.split_once("Z\",").map(|(_, rest)| rest.to_string());
        assert_eq!(after_stamp(&text), after_stamp(&event));
        assert!(text.ends_with("}\n"), "{text}");
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        let parsed: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(parsed["namespace"], tricky);
        assert_eq!(parsed["duration_ms"], 1.234);
    }

    /// The same objects as tracing-subscriber's flattened JSON, but for the time stamp.
    #[test]
    fn lines_match_tracing_subscribers_json() {
        let (mut ours, mut theirs) = (capture(true), capture(false));
        assert_eq!(ours.len(), 3);
        for line in ours.iter_mut().chain(theirs.iter_mut()) {
            let stamp = line["timestamp"].take();
            let stamp = stamp.as_str().expect("a string");
            time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("{stamp}: {e}"));
        }
        // 128-bit integers are strings in both (recorded through `Debug`); NaN is null.
        assert_eq!(ours, theirs);
        assert_eq!(ours[0]["level"], "INFO");
        assert_eq!(ours[0]["target"], "verdict::decision");
        assert_eq!(ours[0]["not_a_number"], Value::Null);
        assert_eq!(ours[0]["big"], u128::MAX.to_string());
        assert_eq!(ours[1]["message"], "plain");
        assert_eq!(ours[2]["target"], "rustls::server");
        assert_eq!(ours[2]["level"], "WARN");
        assert_eq!(ours[2]["log.line"], 42);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        use time::format_description::well_known::Rfc3339;
        for secs in [
            0u64,
            951_782_400,
            1_709_208_000,
            4_102_444_799,
            253_402_300_799,
        ] {
            let at = UNIX_EPOCH + Duration::new(secs, 123_456_789);
            let mut text = String::new();
            write_timestamp(&mut text, at).expect("written");
            assert_eq!(text.len(), "1970-01-01T00:00:00.000000Z".len(), "{text}");
            let parsed = time::OffsetDateTime::parse(&text, &Rfc3339).expect("RFC 3339");
            assert_eq!(parsed.unix_timestamp(), secs as i64, "{text}");
            assert_eq!(parsed.microsecond(), 123_456, "{text}");
        }
    }

    #[test]
    fn every_day_of_four_centuries_has_its_date() {
        // Walks 1970..2370 day by day against a calendar counted by hand.
        let (mut year, mut month, mut day) = (1970u64, 1u64, 1u64);
        for days in 0..146_097 {
            let mut text = String::new();
            write_timestamp(&mut text, UNIX_EPOCH + Duration::from_secs(days * 86_400))
                .expect("written");
            let date = format!("{year:04}-{month:02}-{day:02}T00:00:00.000000Z");
            assert_eq!(text, date, "day {days}");
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let length = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > length {
                (day, month) = (1, month + 1);
                if month > 12 {
                    (month, year) = (1, year + 1);
                }
            }
        }
    }
}
