//! Live programmes: payload frames that arrive while they air (a relayed stream), as
//! opposed to a clip's frames, all ready before the first is sent.
//!
//! A [`LiveFeed`] holds the recent frames of one (codec, ptime), written by the relay's
//! encoder as the remote stream arrives and read by the arbiter once per packet for every
//! cluster airing it. Each cluster reads through a [`LiveCursor`] that keeps a small
//! cushion behind the newest frame, so a network burst or a late chunk does not starve
//! the stream, and that skips ahead when the backlog grows (a server's burst on connect,
//! a clock running slightly fast), so latency stays bounded. Pure: no clock, no I/O; the
//! lock is held for a few instructions per read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Frames of one live programme for one (codec, ptime).
#[derive(Debug)]
pub struct LiveFeed {
    inner: Mutex<Inner>,
    /// Frames a reader keeps between itself and the newest frame.
    lead: u64,
    /// A reader further behind than this jumps forward to `lead`.
    max_lead: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Index of `frames[0]` in the feed since its start.
    base: u64,
    frames: VecDeque<Bytes>,
    closed: bool,
    /// Frames skipped by readers catching up, and times a reader ran dry.
    skipped: u64,
    underruns: u64,
}

impl Inner {
    fn written(&self) -> u64 {
        self.base + self.frames.len() as u64
    }
}

/// Where one cluster reads a [`LiveFeed`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveCursor {
    /// The next frame to read; `None` before the first read (or after a cut-in): it then
    /// starts `lead` frames behind the newest.
    at: Option<u64>,
    /// Ran dry: wait until the cushion is back before reading on.
    refilling: bool,
}

impl LiveCursor {
    /// Reads from the live edge again (after a higher priority cut in: a live programme
    /// resumes where the programme is now, not where it was).
    pub fn rejoin(&mut self) {
        *self = Self::default();
    }
}

/// What a read gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LivePoll {
    Frame(Bytes),
    /// Nothing to send this time (filling the cushion, or the stream is late).
    Wait,
    /// The feed is closed and read to its end.
    Ended,
}

/// What a feed's readers have met so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedStats {
    pub written: u64,
    pub skipped: u64,
    pub underruns: u64,
    pub closed: bool,
}

impl LiveFeed {
    /// A feed whose readers keep `lead` frames of cushion and never fall more than
    /// `max_lead` behind the newest frame.
    pub fn new(lead: u64, max_lead: u64) -> Arc<Self> {
        let lead = lead.max(1);
        Arc::new(Self {
            inner: Mutex::default(),
            lead,
            max_lead: max_lead.max(lead * 2),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Frames and counters stay consistent whatever a panicking writer left.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Frames kept for readers: whatever is older than the furthest a reader may lag is
    /// of no use.
    fn capacity(&self) -> usize {
        (self.max_lead * 2).max(64) as usize
    }

    /// Appends frames (no-op once closed).
    pub fn extend(&self, frames: impl IntoIterator<Item = Bytes>) {
        let capacity = self.capacity();
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        for frame in frames {
            inner.frames.push_back(frame);
            if inner.frames.len() > capacity {
                inner.frames.pop_front();
                inner.base += 1;
            }
        }
    }

    /// Ends the programme: readers end at their next read, whatever is still buffered
    /// (a relay window ends on time, not a cushion later).
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        let pending = inner.frames.len() as u64;
        inner.base += pending;
        inner.frames.clear();
    }

    pub fn stats(&self) -> FeedStats {
        let inner = self.lock();
        FeedStats {
            written: inner.written(),
            skipped: inner.skipped,
            underruns: inner.underruns,
            closed: inner.closed,
        }
    }

    /// The frame `cursor` reads now, moving it on.
    pub fn next(&self, cursor: &mut LiveCursor) -> LivePoll {
        let mut inner = self.lock();
        let written = inner.written();
        let at = match cursor.at {
            // The first read: once the cushion is there, start that far behind the edge.
            None => {
                if written < self.lead && !inner.closed {
                    return LivePoll::Wait;
                }
                written.saturating_sub(self.lead).max(inner.base)
            }
            Some(at) => at,
        };
        if inner.closed {
            cursor.at = Some(at);
            return LivePoll::Ended;
        }
        let behind = written.saturating_sub(at);
        if cursor.refilling && behind < self.lead {
            cursor.at = Some(at);
            return LivePoll::Wait;
        }
        cursor.refilling = false;
        let at = if behind > self.max_lead || at < inner.base {
            // Too far behind (a burst arrived at once, or the remote clock runs fast):
            // jump back to the cushion's distance rather than let latency grow.
            let to = written - self.lead;
            inner.skipped += to.saturating_sub(at);
            to
        } else {
            at
        };
        match inner.frames.get((at - inner.base) as usize) {
            Some(frame) => {
                cursor.at = Some(at + 1);
                LivePoll::Frame(frame.clone())
            }
            None => {
                // Read everything there is: the stream is late. Refill the cushion
                // before going on, so that one late chunk gives one gap, not many.
                inner.underruns += 1;
                cursor.at = Some(at);
                cursor.refilling = true;
                LivePoll::Wait
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u64) -> Bytes {
        Bytes::from(i.to_string())
    }

    fn read(feed: &LiveFeed, cursor: &mut LiveCursor) -> Option<u64> {
        match feed.next(cursor) {
            LivePoll::Frame(b) => Some(String::from_utf8(b.to_vec()).unwrap().parse().unwrap()),
            _ => None,
        }
    }

    #[test]
    fn a_reader_waits_for_its_cushion_then_reads_in_order() {
        let feed = LiveFeed::new(3, 10);
        let mut c = LiveCursor::default();
        feed.extend((0..2).map(frame));
        assert_eq!(feed.next(&mut c), LivePoll::Wait);
        feed.extend((2..5).map(frame));
        // Five written, cushion three: starts at frame 2.
        assert_eq!(read(&feed, &mut c), Some(2));
        assert_eq!(read(&feed, &mut c), Some(3));
        assert_eq!(read(&feed, &mut c), Some(4));
        assert_eq!(read(&feed, &mut c), None);
    }

    #[test]
    fn after_running_dry_a_reader_refills_its_cushion_before_going_on() {
        let feed = LiveFeed::new(3, 10);
        let mut c = LiveCursor::default();
        feed.extend((0..3).map(frame));
        assert_eq!(read(&feed, &mut c), Some(0));
        assert_eq!(read(&feed, &mut c), Some(1));
        assert_eq!(read(&feed, &mut c), Some(2));
        assert_eq!(read(&feed, &mut c), None);
        feed.extend((3..5).map(frame));
        // Two waiting is less than the cushion: still refilling.
        assert_eq!(read(&feed, &mut c), None);
        feed.extend([frame(5)]);
        assert_eq!(
            (0..3).map(|_| read(&feed, &mut c)).collect::<Vec<_>>(),
            [Some(3), Some(4), Some(5)]
        );
        // One dry spell, one underrun, however many reads it lasted.
        assert_eq!(feed.stats().underruns, 1);
    }

    #[test]
    fn a_reader_far_behind_jumps_to_the_cushion_and_the_skip_is_counted() {
        let feed = LiveFeed::new(2, 5);
        let mut c = LiveCursor::default();
        feed.extend((0..3).map(frame));
        assert_eq!(read(&feed, &mut c), Some(1));
        // A burst: 20 frames at once.
        feed.extend((3..23).map(frame));
        assert_eq!(read(&feed, &mut c), Some(21));
        assert_eq!(read(&feed, &mut c), Some(22));
        assert_eq!(feed.stats().skipped, 19);
    }

    #[test]
    fn a_closed_feed_ends_at_once_and_takes_no_more() {
        let feed = LiveFeed::new(1, 4);
        let mut c = LiveCursor::default();
        feed.extend((0..4).map(frame));
        assert_eq!(read(&feed, &mut c), Some(3));
        feed.extend((4..6).map(frame));
        // Two frames still buffered: a window's end cuts them off.
        feed.close();
        feed.extend([frame(9)]);
        assert_eq!(feed.next(&mut c), LivePoll::Ended);
        // A reader joining a closed, empty feed ends at once.
        let empty = LiveFeed::new(3, 6);
        empty.close();
        assert_eq!(empty.next(&mut LiveCursor::default()), LivePoll::Ended);
    }

    #[test]
    fn readers_joining_together_read_the_same_frames() {
        let feed = LiveFeed::new(2, 8);
        feed.extend((0..4).map(frame));
        let (mut a, mut b) = (LiveCursor::default(), LiveCursor::default());
        for _ in 0..2 {
            assert_eq!(read(&feed, &mut a), read(&feed, &mut b));
        }
        // Memory is bounded however long the programme.
        feed.extend((4..10_000).map(frame));
        assert!(feed.lock().frames.len() <= feed.capacity());
        assert_eq!(read(&feed, &mut a), Some(9998));
    }
}
