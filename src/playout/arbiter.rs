//! The arbiter: for each cluster, which programme plays at each tick. A pure state
//! machine: it is told the tick number and returns frames and events; it never reads a
//! clock, sleeps or touches a socket (the pacer does).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::live::{LiveCursor, LiveFeed, LivePoll};

/// How urgent a source is; a higher one cuts in over a lower one on the next tick.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Background,
    Scheduled,
    Priority,
    Live,
    Emergency,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Background => "background",
            Priority::Scheduled => "scheduled",
            Priority::Priority => "priority",
            Priority::Live => "live",
            Priority::Emergency => "emergency",
        }
    }
}

pub type ClusterKey = Arc<str>;
pub type BroadcastKey = Arc<str>;

/// What becomes of a programme when a higher priority cuts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interruption {
    /// Air it again from its beginning once the higher one is over (an announcement cut
    /// in half makes no sense).
    #[default]
    Restart,
    /// Carry on from where it stopped (long programmes, relays of recordings).
    Resume,
    /// Give up on it on this cluster.
    Drop,
}

impl Interruption {
    pub fn as_str(self) -> &'static str {
        match self {
            Interruption::Restart => "restart",
            Interruption::Resume => "resume",
            Interruption::Drop => "drop",
        }
    }
}

/// The payload frames of a programme, one per packet.
#[derive(Debug, Clone)]
pub enum Frames {
    /// A clip's, all ready before the first is sent.
    Clip(Arc<[Bytes]>),
    /// A relayed stream's, arriving while it airs; it ends when its feed is closed.
    Live(Arc<LiveFeed>),
}

/// Something to air on one cluster.
#[derive(Debug, Clone)]
pub struct Programme {
    pub broadcast: BroadcastKey,
    pub priority: Priority,
    pub frames: Frames,
    pub on_interrupt: Interruption,
}

/// One payload for one cluster at this tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub cluster: ClusterKey,
    pub broadcast: BroadcastKey,
    pub payload: Bytes,
    /// First packet of a talkspurt (a programme starting or restarting).
    pub marker: bool,
}

/// How a programme left a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every frame was sent.
    Done,
    /// Cancelled before the end.
    Cancelled,
    /// A higher priority cut in and the programme's policy was to drop it.
    Dropped,
    /// The cluster was removed or the daemon stopped before the end.
    Interrupted,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The first frame of `broadcast` went to `cluster` at this tick.
    Started {
        cluster: ClusterKey,
        broadcast: BroadcastKey,
    },
    /// A higher priority cut in after `at_frame` frames of this programme; `policy` says
    /// what happens to it (restart, resume or drop).
    Preempted {
        cluster: ClusterKey,
        broadcast: BroadcastKey,
        by: BroadcastKey,
        policy: Interruption,
        at_frame: usize,
    },
    /// `broadcast` left `cluster` after `frames_sent` frames.
    Finished {
        cluster: ClusterKey,
        broadcast: BroadcastKey,
        outcome: Outcome,
        frames_sent: u64,
    },
    /// Nothing is left to air on `cluster`: its stream ends.
    Idle { cluster: ClusterKey },
}

#[derive(Debug)]
struct Entry {
    programme: Programme,
    /// Next frame to send.
    position: usize,
    /// Frames sent in total, across restarts.
    sent: u64,
    /// Arrival order, so equal priorities queue first come, first served.
    order: u64,
    /// Where a live programme is read (unused for a clip).
    live: LiveCursor,
    /// A live programme's stream paused (nothing arrived): the next frame starts a new
    /// talkspurt.
    gap: bool,
}

#[derive(Debug)]
struct ClusterState {
    /// Ticks per packet (a 40 ms cluster on a 20 ms pacer sends every 2nd tick).
    every: u64,
    /// The tick this cluster's packet cadence is aligned on.
    phase: u64,
    /// Highest priority first, then arrival order. The head is what airs.
    queue: Vec<Entry>,
    /// Broadcast of the frame sent last, to put the marker on a change of programme.
    last_sent: Option<BroadcastKey>,
}

/// Per-cluster priority queues of programmes.
#[derive(Debug, Default)]
pub struct Arbiter {
    clusters: BTreeMap<ClusterKey, ClusterState>,
    next_order: u64,
}

impl Arbiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Nothing queued anywhere.
    pub fn is_idle(&self) -> bool {
        self.clusters.is_empty()
    }

    /// Queues `programme` on `cluster`, which sends one frame every `every` ticks starting
    /// at tick `now_tick` if it is idle. Returns a `Preempted` event if it cuts in.
    pub fn enqueue(
        &mut self,
        cluster: ClusterKey,
        every: u64,
        now_tick: u64,
        programme: Programme,
        events: &mut Vec<Event>,
    ) {
        let order = self.next_order;
        self.next_order += 1;
        let state = self
            .clusters
            .entry(cluster.clone())
            .or_insert_with(|| ClusterState {
                every: every.max(1),
                phase: now_tick,
                queue: Vec::new(),
                last_sent: None,
            });
        let priority = programme.priority;
        // Only a programme that is on air is interrupted; one still waiting just waits
        // longer behind the newcomer.
        if let Some(head) = state.queue.first_mut()
            && head.programme.priority < priority
            && head.position > 0
        {
            let policy = head.programme.on_interrupt;
            events.push(Event::Preempted {
                cluster: cluster.clone(),
                broadcast: head.programme.broadcast.clone(),
                by: programme.broadcast.clone(),
                policy,
                at_frame: head.position,
            });
            // Live programmes go on while cut off: they rejoin where the stream is now.
            head.live.rejoin();
            match policy {
                Interruption::Restart => head.position = 0,
                Interruption::Resume => {}
                Interruption::Drop => {
                    let dropped = state.queue.remove(0);
                    events.push(Event::Finished {
                        cluster,
                        broadcast: dropped.programme.broadcast,
                        outcome: Outcome::Dropped,
                        frames_sent: dropped.sent,
                    });
                }
            }
        }
        let at = state
            .queue
            .iter()
            .position(|e| e.programme.priority < priority)
            .unwrap_or(state.queue.len());
        state.queue.insert(
            at,
            Entry {
                programme,
                position: 0,
                sent: 0,
                order,
                live: LiveCursor::default(),
                gap: false,
            },
        );
        debug_assert!(state.queue.windows(2).all(|w| {
            (w[0].programme.priority, std::cmp::Reverse(w[0].order))
                >= (w[1].programme.priority, std::cmp::Reverse(w[1].order))
        }));
    }

    /// Removes `broadcast` from every cluster.
    pub fn cancel(&mut self, broadcast: &str, events: &mut Vec<Event>) {
        self.remove_where(
            |e| &*e.programme.broadcast == broadcast,
            Outcome::Cancelled,
            events,
        );
    }

    /// Removes everything queued on `cluster` (the cluster was deleted).
    pub fn remove_cluster(&mut self, cluster: &str, events: &mut Vec<Event>) {
        if let Some(state) = self.clusters.get_mut(cluster) {
            for e in state.queue.drain(..) {
                events.push(Event::Finished {
                    cluster: cluster.into(),
                    broadcast: e.programme.broadcast,
                    outcome: Outcome::Interrupted,
                    frames_sent: e.sent,
                });
            }
        }
        self.drop_idle(events);
    }

    /// Removes everything (shutdown).
    pub fn interrupt_all(&mut self, events: &mut Vec<Event>) {
        self.remove_where(|_| true, Outcome::Interrupted, events);
    }

    fn remove_where(
        &mut self,
        matches: impl Fn(&Entry) -> bool,
        outcome: Outcome,
        events: &mut Vec<Event>,
    ) {
        for (cluster, state) in &mut self.clusters {
            state.queue.retain(|e| {
                if matches(e) {
                    events.push(Event::Finished {
                        cluster: cluster.clone(),
                        broadcast: e.programme.broadcast.clone(),
                        outcome,
                        frames_sent: e.sent,
                    });
                    false
                } else {
                    true
                }
            });
        }
        self.drop_idle(events);
    }

    fn drop_idle(&mut self, events: &mut Vec<Event>) {
        self.clusters.retain(|cluster, state| {
            if state.queue.is_empty() {
                events.push(Event::Idle {
                    cluster: cluster.clone(),
                });
                false
            } else {
                true
            }
        });
    }

    /// Frames sent so far per (cluster, broadcast) for everything still queued.
    pub fn progress(&self) -> impl Iterator<Item = (&ClusterKey, &BroadcastKey, u64)> {
        self.clusters.iter().flat_map(|(c, s)| {
            s.queue
                .iter()
                .map(move |e| (c, &e.programme.broadcast, e.sent))
        })
    }

    /// Advances to tick `tick`: appends the frame each due cluster sends now and what
    /// happened on the way.
    pub fn tick(&mut self, tick: u64, frames: &mut Vec<Frame>, events: &mut Vec<Event>) {
        for (cluster, state) in &mut self.clusters {
            if tick < state.phase || !(tick - state.phase).is_multiple_of(state.every) {
                continue;
            }
            let Some(head) = state.queue.first_mut() else {
                continue;
            };
            let payload = match &head.programme.frames {
                Frames::Clip(frames) => match frames.get(head.position) {
                    Some(payload) => payload.clone(),
                    None => continue,
                },
                Frames::Live(feed) => match feed.next(&mut head.live) {
                    LivePoll::Frame(payload) => payload,
                    LivePoll::Wait => {
                        head.gap = true;
                        continue;
                    }
                    LivePoll::Ended => {
                        let done = state.queue.remove(0);
                        events.push(Event::Finished {
                            cluster: cluster.clone(),
                            broadcast: done.programme.broadcast,
                            outcome: Outcome::Done,
                            frames_sent: done.sent,
                        });
                        continue;
                    }
                },
            };
            let starting = head.position == 0;
            if starting && head.sent == 0 {
                events.push(Event::Started {
                    cluster: cluster.clone(),
                    broadcast: head.programme.broadcast.clone(),
                });
            }
            let marker =
                starting || head.gap || state.last_sent.as_ref() != Some(&head.programme.broadcast);
            head.gap = false;
            frames.push(Frame {
                cluster: cluster.clone(),
                broadcast: head.programme.broadcast.clone(),
                payload,
                marker,
            });
            state.last_sent = Some(head.programme.broadcast.clone());
            head.position += 1;
            head.sent += 1;
            if matches!(&head.programme.frames, Frames::Clip(f) if head.position >= f.len()) {
                let done = state.queue.remove(0);
                events.push(Event::Finished {
                    cluster: cluster.clone(),
                    broadcast: done.programme.broadcast,
                    outcome: Outcome::Done,
                    frames_sent: done.sent,
                });
            }
        }
        self.drop_idle(events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn programme(id: &str, priority: Priority, frames: usize) -> Programme {
        Programme {
            broadcast: id.into(),
            priority,
            frames: Frames::Clip(
                (0..frames)
                    .map(|i| Bytes::from(format!("{id}{i}")))
                    .collect::<Vec<_>>()
                    .into(),
            ),
            on_interrupt: Interruption::Restart,
        }
    }

    fn with_policy(mut p: Programme, policy: Interruption) -> Programme {
        p.on_interrupt = policy;
        p
    }

    /// Airs `low` (5 frames) for 2 ticks, then `hi` (2 frames) arrives: what airs after.
    fn preempt(policy: Interruption) -> (Vec<String>, Vec<Event>) {
        let mut a = Arbiter::new();
        let mut ev = Vec::new();
        let low = with_policy(programme("low", Priority::Scheduled, 5), policy);
        a.enqueue("c".into(), 1, 0, low, &mut ev);
        let (mut frames, _) = run(&mut a, 0..2);
        a.enqueue(
            "c".into(),
            1,
            2,
            programme("hi", Priority::Emergency, 2),
            &mut ev,
        );
        let (more, events) = run(&mut a, 2..20);
        frames.extend(more);
        ev.extend(events);
        (payloads(&frames), ev)
    }

    #[test]
    fn an_interrupted_programme_with_resume_carries_on_where_it_stopped() {
        let (aired, events) = preempt(Interruption::Resume);
        assert_eq!(
            aired,
            ["low0", "low1", "hi0", "hi1", "low2", "low3", "low4"]
        );
        assert!(events.iter().any(|e| matches!(
            e,
            Event::Preempted {
                policy: Interruption::Resume,
                at_frame: 2,
                ..
            }
        )));
    }

    #[test]
    fn an_interrupted_programme_with_restart_airs_again_from_the_beginning() {
        let (aired, _) = preempt(Interruption::Restart);
        assert_eq!(
            aired,
            [
                "low0", "low1", "hi0", "hi1", "low0", "low1", "low2", "low3", "low4"
            ]
        );
    }

    #[test]
    fn an_interrupted_programme_with_drop_is_finished_as_dropped() {
        let (aired, events) = preempt(Interruption::Drop);
        assert_eq!(aired, ["low0", "low1", "hi0", "hi1"]);
        assert!(events.iter().any(|e| matches!(
            e,
            Event::Finished { broadcast, outcome: Outcome::Dropped, frames_sent: 2, .. }
                if &**broadcast == "low"
        )));
    }

    #[test]
    fn a_waiting_programme_is_not_interrupted_by_a_higher_one_arriving() {
        let mut a = Arbiter::new();
        let mut ev = Vec::new();
        a.enqueue(
            "c".into(),
            1,
            0,
            programme("first", Priority::Scheduled, 3),
            &mut ev,
        );
        a.enqueue(
            "c".into(),
            1,
            0,
            programme("second", Priority::Scheduled, 1),
            &mut ev,
        );
        run(&mut a, 0..1);
        a.enqueue(
            "c".into(),
            1,
            1,
            programme("hi", Priority::Live, 1),
            &mut ev,
        );
        let preempted: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Preempted { broadcast, .. } => Some(broadcast.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            preempted,
            ["first"],
            "only the programme on air is interrupted"
        );
    }

    #[test]
    fn the_five_priorities_order_emergency_live_priority_scheduled_background() {
        let mut a = Arbiter::new();
        let mut ev = Vec::new();
        for (id, p) in [
            ("bg", Priority::Background),
            ("sc", Priority::Scheduled),
            ("pr", Priority::Priority),
            ("li", Priority::Live),
            ("em", Priority::Emergency),
        ] {
            a.enqueue("c".into(), 1, 0, programme(id, p, 1), &mut ev);
        }
        let (frames, _) = run(&mut a, 0..5);
        assert_eq!(payloads(&frames), ["em0", "li0", "pr0", "sc0", "bg0"]);
    }

    fn run(arbiter: &mut Arbiter, ticks: std::ops::Range<u64>) -> (Vec<Frame>, Vec<Event>) {
        let (mut frames, mut events) = (Vec::new(), Vec::new());
        for t in ticks {
            arbiter.tick(t, &mut frames, &mut events);
        }
        (frames, events)
    }

    fn payloads(frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| String::from_utf8(f.payload.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn a_programme_plays_frame_by_frame_then_the_cluster_goes_idle() {
        let mut a = Arbiter::new();
        let mut ev = Vec::new();
        a.enqueue(
            "c1".into(),
            1,
            0,
            programme("b", Priority::Scheduled, 3),
            &mut ev,
        );
        let (frames, events) = run(&mut a, 0..5);
        assert_eq!(payloads(&frames), ["b0", "b1", "b2"]);
        assert_eq!(
            frames.iter().map(|f| f.marker).collect::<Vec<_>>(),
            [true, false, false]
        );
        assert!(matches!(events[0], Event::Started { .. }));
        assert!(matches!(
            events[1],
            Event::Finished {
                outcome: Outcome::Done,
                frames_sent: 3,
                ..
            }
        ));
        assert!(matches!(events[2], Event::Idle { .. }));
        assert!(a.is_idle());
    }

    #[test]
    fn equal_priorities_queue_in_arrival_order_with_a_marker_at_each_start() {
        let mut a = Arbiter::new();
        let mut ev = Vec::new();
        a.enqueue(
            "c".into(),
            1,
            0,
            programme("x", Priority::Scheduled, 2),
            &mut ev,
        );
        a.enqueue(
            "c".into(),
            1,
            0,
            programme("y", Priority::Scheduled, 2),
            &mut ev,
        );
        let (frames, _) = run(&mut a, 0..4);
        assert_eq!(payloads(&frames), ["x0", "x1", "y0", "y1"]);
        assert_eq!(
            frames.iter().map(|f| f.marker).collect::<Vec<_>>(),
            [true, false, true, false]
        );
    }

    #[test]
    fn a_higher_priority_cuts_in_on_the_next_tick_and_the_interrupted_one_restarts() {
        let mut a = Arbiter::new();
        let mut ev = Vec::new();
        a.enqueue(
            "c".into(),
            1,
            0,
            programme("low", Priority::Background, 3),
            &mut ev,
        );
        let (mut frames, _) = run(&mut a, 0..2);
        a.enqueue(
            "c".into(),
            1,
            2,
            programme("hi", Priority::Live, 2),
            &mut ev,
        );
        assert!(
            matches!(&ev[0], Event::Preempted { broadcast, by, .. } if &**broadcast == "low" && &**by == "hi")
        );
        let (more, events) = run(&mut a, 2..10);
        frames.extend(more);
        assert_eq!(
            payloads(&frames),
            ["low0", "low1", "hi0", "hi1", "low0", "low1", "low2"]
        );
        let finished_low = events.iter().find_map(|e| match e {
            Event::Finished {
                broadcast,
                frames_sent,
                ..
            } if &**broadcast == "low" => Some(*frames_sent),
            _ => None,
        });
        assert_eq!(finished_low, Some(5));
    }

    #[test]
    fn cancelling_removes_a_broadcast_everywhere_and_reports_frames_sent() {
        let mut a = Arbiter::new();
        let mut ev = Vec::new();
        for c in ["c1", "c2"] {
            a.enqueue(
                c.into(),
                1,
                0,
                programme("b", Priority::Scheduled, 100),
                &mut ev,
            );
        }
        run(&mut a, 0..3);
        let mut events = Vec::new();
        a.cancel("b", &mut events);
        let cancelled: Vec<_> = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Finished {
                        outcome: Outcome::Cancelled,
                        frames_sent: 3,
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(cancelled.len(), 2);
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Event::Idle { .. }))
                .count(),
            2
        );
        assert!(a.is_idle());
    }

    #[test]
    fn a_40ms_cluster_sends_every_second_tick_of_a_20ms_pacer() {
        let mut a = Arbiter::new();
        let mut ev = Vec::new();
        a.enqueue(
            "slow".into(),
            2,
            5,
            programme("b", Priority::Scheduled, 3),
            &mut ev,
        );
        let mut sent_at = Vec::new();
        for t in 5..12 {
            let mut frames = Vec::new();
            a.tick(t, &mut frames, &mut ev);
            if !frames.is_empty() {
                sent_at.push(t);
            }
        }
        assert_eq!(sent_at, [5, 7, 9]);
    }
}
