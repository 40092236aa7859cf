//! The session's event log: a bounded window of encoded `keel.v1.Event`s kept
//! in workflow state. It is rebuilt by replay, read through a query (which
//! writes nothing to history), and its offsets are dense from 1.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use keel_proto::v1 as pb;
use keel_workflow_api::{EventArchive, EventsPage, EventsQuery};
use prost::Message as _;
use serde::{Deserialize, Serialize};

/// Events kept for replay unless the session says otherwise; older ones are
/// reported to clients as a gap.
pub const DEFAULT_RETAINED_EVENTS: usize = 2048;
/// At most this many events per query answer, to bound query payloads.
pub const MAX_EVENTS_PER_PAGE: u32 = 256;
/// Encoded bytes kept in the window (and carried into the next run): a few
/// huge events must not make the log, a query answer or continue-as-new big.
pub const MAX_LOG_BYTES: usize = 1024 * 1024;
/// Encoded bytes per query answer (gRPC messages are capped at 4 MiB).
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLog {
    /// How many events to keep.
    retain: usize,
    /// Offset of `events[0]`.
    first: u64,
    /// Base64 of encoded events.
    events: VecDeque<String>,
    /// Sum of `events[i].len()`.
    bytes: usize,
    /// With the event archive on: the offset the archive reaches. The
    /// window then drops only archived events past `retain` (and any past
    /// [`MAX_LOG_BYTES`]); `None`: sessions from before the archive drop
    /// the oldest past `retain`.
    #[serde(default)]
    archived_upto: Option<u64>,
}

impl EventLog {
    /// A log keeping `retain` events (0: the default).
    pub fn new(retain: u32) -> Self {
        Self {
            retain: if retain == 0 {
                DEFAULT_RETAINED_EVENTS
            } else {
                retain as usize
            },
            first: 1,
            events: VecDeque::new(),
            bytes: 0,
            archived_upto: None,
        }
    }

    /// The log a previous run carried over (see [`EventLog::carry`]). Only
    /// the byte cap applies here: which events may leave by count depends
    /// on the archive, which the run sets up next ([`EventLog::archive_from`],
    /// or the next event for sessions without one).
    pub fn resume(retain: u32, first: u64, events: Vec<String>) -> Self {
        let mut log = Self::new(retain);
        log.first = first.max(1);
        log.bytes = events.iter().map(String::len).sum();
        log.events = events.into();
        log.trim_to(usize::MAX);
        log
    }

    /// `(first offset, events)` to carry into the next run.
    pub fn carry(&self) -> (u64, Vec<String>) {
        (self.first, self.events.iter().cloned().collect())
    }

    fn trim(&mut self) {
        self.trim_to(self.retain);
    }

    /// Drops the oldest events past `retain` that may go (all of them, or
    /// with the archive on only archived ones), and any past the byte cap.
    fn trim_to(&mut self, retain: usize) {
        while self.events.len() > 1
            && ((self.events.len() > retain
                && self.archived_upto.is_none_or(|upto| self.first <= upto))
                || self.bytes > MAX_LOG_BYTES)
        {
            if let Some(old) = self.events.pop_front() {
                self.bytes -= old.len();
                self.first += 1;
            }
        }
    }

    /// Turns the archive on: events up to `upto` are archived (or were
    /// dropped before there was an archive).
    pub fn archive_from(&mut self, upto: u64) {
        self.archived_upto = Some(upto);
        self.trim();
    }

    /// The offset the archive reaches (`None`: no archive).
    pub fn archived_upto(&self) -> Option<u64> {
        self.archived_upto
    }

    /// Whether enough events wait to be archived that the window will soon
    /// have to drop them: more than half the window, or more than half its
    /// byte cap (past the cap the window drops events archived or not).
    pub fn archive_due(&self) -> bool {
        let Some(upto) = self.archived_upto else {
            return false;
        };
        let archived = upto
            .saturating_sub(self.first - 1)
            .min(self.events.len() as u64) as usize;
        let waiting = self.events.len() - archived;
        let waiting_bytes: usize = self.events.iter().skip(archived).map(String::len).sum();
        waiting > self.retain / 2 || waiting_bytes > MAX_LOG_BYTES / 2
    }

    /// The oldest offset in the window.
    pub fn first_offset(&self) -> u64 {
        self.first
    }

    pub fn last_offset(&self) -> u64 {
        self.first + self.events.len() as u64 - 1
    }

    /// Appends an event and returns its offset.
    pub fn push(&mut self, time: Option<SystemTime>, turn_id: &str, msg: pb::event::Msg) -> u64 {
        let offset = self.last_offset() + 1;
        let event = pb::Event {
            offset,
            turn_id: turn_id.to_string(),
            time: time.map(timestamp),
            // Every event of a log is its workflow's agent's: session-api
            // names it when it serves the event, so the log does not carry
            // the same ids thousands of times.
            agent_id: String::new(),
            parent_agent_id: String::new(),
            msg: Some(msg),
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(event.encode_to_vec());
        self.bytes += encoded.len();
        self.events.push_back(encoded);
        self.trim();
        offset
    }

    pub fn page(&self, q: EventsQuery, closed: bool, archive: Option<&EventArchive>) -> EventsPage {
        let first_retained = self.first;
        let start = q.after.saturating_add(1).max(first_retained);
        let max = q.max.clamp(1, MAX_EVENTS_PER_PAGE) as usize;
        let mut bytes = 0;
        let events = self
            .events
            .iter()
            .skip((start - first_retained) as usize)
            .take(max)
            // Always at least one event, so a reader makes progress.
            .take_while(|e| {
                bytes += e.len();
                bytes == e.len() || bytes <= MAX_PAGE_BYTES
            })
            .cloned()
            .collect();
        EventsPage {
            first_retained,
            last_offset: self.last_offset(),
            events,
            closed,
            archive: archive.cloned(),
        }
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Unix milliseconds of a workflow time (0 when unknown).
pub fn unix_ms(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> pb::Event {
        let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        pb::Event::decode(bytes.as_slice()).unwrap()
    }

    fn warn(i: u64) -> pb::event::Msg {
        pb::event::Msg::Warning(pb::Warning {
            message: i.to_string(),
        })
    }

    #[test]
    fn offsets_are_dense_from_one() {
        let mut log = EventLog::new(0);
        assert_eq!(log.last_offset(), 0);
        assert_eq!(log.push(None, "t", warn(1)), 1);
        assert_eq!(log.push(None, "t", warn(2)), 2);
        let page = log.page(EventsQuery { after: 0, max: 10 }, false, None);
        assert_eq!(page.first_retained, 1);
        assert_eq!(page.last_offset, 2);
        let offsets: Vec<u64> = page.events.iter().map(|e| decode(e).offset).collect();
        assert_eq!(offsets, vec![1, 2]);
        let page = log.page(EventsQuery { after: 1, max: 10 }, false, None);
        assert_eq!(decode(&page.events[0]).offset, 2);
        assert!(
            log.page(EventsQuery { after: 2, max: 10 }, false, None)
                .events
                .is_empty()
        );
    }

    #[test]
    fn byte_budget_trims_and_pages_stay_small() {
        let mut log = EventLog::new(0);
        let big = "x".repeat(300 * 1024);
        for _ in 0..5 {
            log.push(
                None,
                "",
                pb::event::Msg::Warning(pb::Warning {
                    message: big.clone(),
                }),
            );
        }
        assert!(log.bytes <= MAX_LOG_BYTES, "{}", log.bytes);
        assert_eq!(log.last_offset(), 5);
        let page = log.page(EventsQuery { after: 0, max: 100 }, false, None);
        assert!(page.first_retained > 1);
        assert!(page.events.iter().map(String::len).sum::<usize>() <= MAX_PAGE_BYTES);
        assert!(!page.events.is_empty());
    }

    #[test]
    fn carry_and_resume_keep_offsets() {
        let mut log = EventLog::new(4);
        for i in 0..6 {
            log.push(None, "", warn(i));
        }
        let (first, events) = log.carry();
        let mut next = EventLog::resume(4, first, events);
        assert_eq!(next.last_offset(), 6);
        assert_eq!(next.push(None, "", warn(7)), 7);
        let page = next.page(EventsQuery { after: 0, max: 10 }, false, None);
        assert_eq!(page.first_retained, 4);
        assert_eq!(decode(&page.events[0]).offset, 4);
    }

    #[test]
    fn window_drops_oldest_and_reports_first_retained() {
        let mut log = EventLog::new(10);
        for i in 0..15 {
            log.push(None, "", warn(i));
        }
        let page = log.page(EventsQuery { after: 0, max: 3 }, false, None);
        assert_eq!(page.first_retained, 6);
        assert_eq!(decode(&page.events[0]).offset, 6);
        assert_eq!(page.events.len(), 3);
        assert_eq!(page.last_offset, 15);
    }

    #[test]
    fn with_the_archive_only_archived_events_leave_the_window() {
        let mut log = EventLog::new(4);
        log.archive_from(0);
        for i in 0..6 {
            log.push(None, "", warn(i));
        }
        // Nothing archived yet: all six stay.
        assert_eq!(
            log.page(EventsQuery { after: 0, max: 10 }, false, None)
                .first_retained,
            1
        );
        assert!(log.archive_due());
        log.archive_from(3);
        // Archived events leave while more than 4 remain: 1 and 2 go.
        let page = log.page(EventsQuery { after: 0, max: 10 }, false, None);
        assert_eq!(page.first_retained, 3);
        assert_eq!(page.events.len(), 4);
        assert!(log.archive_due());
        log.archive_from(6);
        assert!(!log.archive_due());
        log.push(None, "", warn(7));
        let page = log.page(EventsQuery { after: 0, max: 10 }, false, None);
        assert_eq!((page.first_retained, page.last_offset), (4, 7));
    }

    #[test]
    fn a_resumed_log_keeps_what_the_archive_has_not_got() {
        let mut log = EventLog::new(4);
        log.archive_from(0);
        for i in 0..6 {
            log.push(None, "", warn(i));
        }
        let (first, events) = log.carry();
        // A new run: all six stay until the archive says otherwise.
        let mut next = EventLog::resume(4, first, events);
        assert_eq!(
            next.page(EventsQuery { after: 0, max: 10 }, false, None)
                .events
                .len(),
            6
        );
        next.archive_from(0);
        assert_eq!(
            next.page(EventsQuery { after: 0, max: 10 }, false, None)
                .events
                .len(),
            6
        );
        next.archive_from(6);
        assert_eq!(
            next.page(EventsQuery { after: 0, max: 10 }, false, None)
                .first_retained,
            3
        );
    }

    #[test]
    fn big_events_make_the_archive_due_early() {
        let mut log = EventLog::new(2048);
        log.archive_from(0);
        let big = "x".repeat(MAX_LOG_BYTES / 4);
        for _ in 0..3 {
            log.push(
                None,
                "",
                pb::event::Msg::Warning(pb::Warning {
                    message: big.clone(),
                }),
            );
        }
        assert!(log.archive_due(), "3 events, but most of the byte cap");
    }

    #[test]
    fn the_archive_is_due_past_half_the_window() {
        let mut log = EventLog::new(8);
        for i in 0..5 {
            log.push(None, "", warn(i));
        }
        assert!(!log.archive_due(), "no archive: never due");
        log.archive_from(0);
        assert!(log.archive_due());
        log.archive_from(1);
        assert!(!log.archive_due(), "4 waiting of a window of 8");
    }
}
