//! The fleet's health model: what state each cluster is in, judged from the signals fed to
//! it at the instants given. No I/O and no clock reads: `now` is always an argument, so
//! the shell ([`crate::monitor`]) decides when to look and tests run on fake time.
//!
//! Rules, with `offline_after` as the one window for everything:
//! - Signs of life are heartbeats, keepalives and receiver reports; send errors are not.
//! - Never heard from: `unknown`, whatever the send errors say.
//! - Silent for `offline_after` or longer: `offline`.
//! - Heard from recently, but the latest receiver report (if younger than the window)
//!   shows loss or jitter over the threshold, or the send-error counter grew within the
//!   window: `degraded`, with every reason in the cause.
//! - Otherwise `online`.
//!
//! A transition is returned exactly when the status changes. Only a sign of life brings a
//! cluster out of `offline` or `unknown`, so a clock stepped back cannot; a send-error
//! counter that goes down (the daemon restarted) is a new baseline; loss and jitter that
//! are not finite and non-negative count as absent.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// Send-error growth points kept per cluster. A counter fed every second over a 30 s window
/// needs 30; past this the oldest point merges into the next, which keeps the count exact
/// and only lets that oldest growth linger a little past the window.
const MAX_GROWTH_POINTS: usize = 64;

const NEVER_HEARD: &str = "never heard from";

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Unknown,
    Online,
    Degraded,
    Offline,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Unknown,
        Status::Online,
        Status::Degraded,
        Status::Offline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Online => "online",
            Status::Degraded => "degraded",
            Status::Offline => "offline",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not one of: unknown, online, degraded, offline"))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// No heartbeat, keepalive or receiver report for this long: offline.
    pub offline_after: Duration,
    /// Receiver-reported loss above this (percent): degraded.
    pub max_loss_pct: f64,
    /// Receiver-reported interarrival jitter above this (ms): degraded.
    pub max_jitter_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// The agent's HTTP heartbeat.
    Heartbeat,
    /// A verified keepalive of a registered cluster.
    Keepalive,
    /// An RTCP receiver report about the cluster's stream (a sign of life too).
    Reception { loss_pct: f64, jitter_ms: f64 },
    /// The cumulative count of datagrams to this cluster the network stack refused since
    /// the daemon started.
    SendErrors { total: u64 },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Transition {
    pub cluster: String,
    pub from: Status,
    pub to: Status,
    pub at: DateTime<Utc>,
    pub cause: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterHealth {
    pub status: Status,
    /// When the current status began.
    pub since: DateTime<Utc>,
    /// Why the cluster is in its status (human readable, e.g. "loss 12.0% over 5.0%").
    pub cause: String,
    /// Latest sign of life of any kind.
    pub last_seen: Option<DateTime<Utc>>,
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// From the latest receiver report, if any, and when it came.
    pub loss_pct: Option<f64>,
    pub jitter_ms: Option<f64>,
    pub reception_at: Option<DateTime<Utc>>,
    /// Cumulative send errors as last fed, and when that counter last grew.
    pub send_errors: u64,
    pub send_errors_grew_at: Option<DateTime<Utc>>,
}

/// Every tracked cluster's health, judged against one set of thresholds.
pub struct Health {
    rules: Rules,
    clusters: HashMap<String, Tracked>,
}

/// The thresholds, with `offline_after` as chrono counts it and as causes print it.
struct Rules {
    thresholds: Thresholds,
    window: TimeDelta,
    span: String,
}

impl Health {
    pub fn new(thresholds: Thresholds) -> Self {
        // A window too long for chrono is, in practice, forever.
        let window = TimeDelta::from_std(thresholds.offline_after).unwrap_or(TimeDelta::MAX);
        let span = seconds(thresholds.offline_after);
        let rules = Rules {
            thresholds,
            window,
            span,
        };
        Self {
            rules,
            clusters: HashMap::new(),
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.rules.thresholds
    }

    /// Starts tracking `cluster` as `unknown` (no-op if already tracked).
    pub fn track(&mut self, cluster: &str, now: DateTime<Utc>) {
        entry(&mut self.clusters, cluster, now);
    }

    /// At daemon start: the status stored before the restart and since when. A cluster
    /// restored as online or degraded counts as seen at `now`, so it goes offline one
    /// `offline_after` later unless it speaks; offline and unknown stay as they are. A
    /// restored `degraded` holds until the cluster speaks, since its reason was not stored.
    pub fn restore(
        &mut self,
        cluster: &str,
        status: Status,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        let tracked = entry(&mut self.clusters, cluster, now);
        let health = &mut tracked.health;
        health.status = status;
        health.since = since;
        health.cause = "as before the restart".into();
        if matches!(status, Status::Online | Status::Degraded) {
            health.last_seen = Some(latest(health.last_seen, now));
        }
        tracked.held = status == Status::Degraded;
    }

    /// Stops tracking (the cluster was deleted).
    pub fn forget(&mut self, cluster: &str) {
        self.clusters.remove(cluster);
    }

    /// Feeds one signal (tracking the cluster if new) and re-evaluates that cluster at `now`.
    pub fn observe(
        &mut self,
        cluster: &str,
        signal: Signal,
        now: DateTime<Utc>,
    ) -> Option<Transition> {
        // Borrows the map alone, so the rules stay readable alongside.
        let tracked = entry(&mut self.clusters, cluster, now);
        let trigger = tracked.feed(signal, now);
        tracked.settle(cluster, &self.rules, now, trigger)
    }

    /// Re-evaluates every cluster at `now` (timeouts, stale reports, send-error windows).
    /// Transitions come sorted by cluster id.
    pub fn evaluate(&mut self, now: DateTime<Utc>) -> Vec<Transition> {
        let mut transitions: Vec<Transition> = self
            .clusters
            .iter_mut()
            .filter_map(|(id, tracked)| tracked.settle(id, &self.rules, now, None))
            .collect();
        transitions.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        transitions
    }

    pub fn get(&self, cluster: &str) -> Option<&ClusterHealth> {
        self.clusters.get(cluster).map(|tracked| &tracked.health)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &ClusterHealth)> {
        self.clusters
            .iter()
            .map(|(id, tracked)| (id.as_str(), &tracked.health))
    }

    /// The earliest instant after `now` at which `evaluate` could change some status with no
    /// new signal; `None` if nothing is pending. Only online and degraded clusters have one:
    /// leaving offline or unknown takes a signal.
    pub fn next_deadline(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.clusters
            .values()
            .flat_map(|tracked| {
                let health = &tracked.health;
                let degraded = health.status == Status::Degraded;
                let live = degraded || health.status == Status::Online;
                [
                    health.last_seen.filter(|_| live),
                    health.reception_at.filter(|_| {
                        degraded && !tracked.report_troubles(&self.rules.thresholds).is_empty()
                    }),
                    health.send_errors_grew_at.filter(|_| degraded),
                ]
            })
            .flatten()
            .filter_map(|at| at.checked_add_signed(self.rules.window))
            .filter(|&deadline| deadline > now)
            .min()
    }
}

/// One cluster's health and what judging it needs beyond the public view.
struct Tracked {
    health: ClusterHealth,
    /// How much the send-error counter grew, and when; oldest first.
    growth: VecDeque<(DateTime<Utc>, u64)>,
    /// What the latest degradation was about, to say what ended it.
    troubles: Troubles,
    /// Restored as degraded and not heard from since.
    held: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Troubles {
    reception: bool,
    send_errors: bool,
}

impl Tracked {
    fn new(now: DateTime<Utc>) -> Self {
        Self {
            health: ClusterHealth {
                status: Status::Unknown,
                since: now,
                cause: NEVER_HEARD.into(),
                last_seen: None,
                last_heartbeat: None,
                loss_pct: None,
                jitter_ms: None,
                reception_at: None,
                send_errors: 0,
                send_errors_grew_at: None,
            },
            growth: VecDeque::new(),
            troubles: Troubles::default(),
            held: false,
        }
    }

    /// Records `signal`; returns its name if it is a sign of life.
    fn feed(&mut self, signal: Signal, now: DateTime<Utc>) -> Option<&'static str> {
        let health = &mut self.health;
        let name = match signal {
            Signal::Heartbeat => {
                health.last_heartbeat = Some(latest(health.last_heartbeat, now));
                "heartbeat"
            }
            Signal::Keepalive => "keepalive",
            Signal::Reception {
                loss_pct,
                jitter_ms,
            } => {
                health.loss_pct = measured(loss_pct);
                health.jitter_ms = measured(jitter_ms);
                health.reception_at = Some(latest(health.reception_at, now));
                "receiver report"
            }
            Signal::SendErrors { total } => {
                if total > health.send_errors {
                    self.growth.push_back((now, total - health.send_errors));
                    health.send_errors_grew_at = Some(latest(health.send_errors_grew_at, now));
                    if self.growth.len() > MAX_GROWTH_POINTS
                        && let Some((_, oldest)) = self.growth.pop_front()
                        && let Some((_, next)) = self.growth.front_mut()
                    {
                        *next = next.saturating_add(oldest);
                    }
                }
                health.send_errors = total;
                return None;
            }
        };
        health.last_seen = Some(latest(health.last_seen, now));
        self.held = false;
        Some(name)
    }

    /// Re-judges the cluster at `now`; `trigger` names the sign of life just fed, if any.
    fn settle(
        &mut self,
        cluster: &str,
        rules: &Rules,
        now: DateTime<Utc>,
        trigger: Option<&'static str>,
    ) -> Option<Transition> {
        let (to, cause, troubles) = self.verdict(rules, now);
        let from = self.health.status;
        let unheard = trigger.is_none() && matches!(from, Status::Offline | Status::Unknown);
        let held = self.held && to == Status::Online;
        if to == from || unheard || held {
            // An online cause names what brought it up, so only the others follow along.
            if to == from && to != Status::Online {
                self.health.cause = cause;
                self.troubles = troubles;
            }
            return None;
        }
        let cause = match to {
            Status::Online if from == Status::Degraded => self.recovery(rules, now, trigger),
            Status::Online => trigger.unwrap_or("heard from").to_string(),
            _ => cause,
        };
        self.troubles = troubles;
        self.health.status = to;
        self.health.since = now;
        self.health.cause = cause.clone();
        Some(Transition {
            cluster: cluster.to_string(),
            from,
            to,
            at: now,
            cause,
        })
    }

    /// The status the evidence supports at `now`, why, and what troubles it.
    fn verdict(&mut self, rules: &Rules, now: DateTime<Utc>) -> (Status, String, Troubles) {
        let (thresholds, window, span) = (&rules.thresholds, rules.window, &rules.span);
        let mut troubles = Troubles::default();
        let Some(seen) = self.health.last_seen else {
            return (Status::Unknown, NEVER_HEARD.into(), troubles);
        };
        if age(seen, now) >= window {
            let cause = format!("no heartbeat, keepalive or receiver report for {span}");
            return (Status::Offline, cause, troubles);
        }
        let mut why = if self.fresh_report(window, now) {
            self.report_troubles(thresholds)
        } else {
            Vec::new()
        };
        troubles.reception = !why.is_empty();
        self.growth.retain(|&(at, _)| age(at, now) < window);
        let errors = self
            .growth
            .iter()
            .fold(0, |sum, &(_, n)| n.saturating_add(sum));
        if errors > 0 {
            let plural = if errors == 1 { "" } else { "s" };
            why.push(format!("{errors} send error{plural} in the last {span}"));
            troubles.send_errors = true;
        }
        if why.is_empty() {
            (Status::Online, String::new(), troubles)
        } else {
            (Status::Degraded, why.join("; "), troubles)
        }
    }

    /// Why a degraded cluster is online again.
    fn recovery(&self, rules: &Rules, now: DateTime<Utc>, trigger: Option<&'static str>) -> String {
        let span = &rules.span;
        let mut why = Vec::new();
        if self.troubles.reception {
            why.push(if self.fresh_report(rules.window, now) {
                "loss and jitter back under thresholds".to_string()
            } else {
                format!("no receiver report for {span}")
            });
        }
        if self.troubles.send_errors {
            why.push(format!("no send errors for {span}"));
        }
        if why.is_empty() {
            trigger.unwrap_or("heard from").to_string()
        } else {
            why.join("; ")
        }
    }

    fn fresh_report(&self, window: TimeDelta, now: DateTime<Utc>) -> bool {
        self.health
            .reception_at
            .is_some_and(|at| age(at, now) < window)
    }

    /// What the latest receiver report says is wrong, however old it is.
    fn report_troubles(&self, th: &Thresholds) -> Vec<String> {
        let loss = self.health.loss_pct.filter(|&l| l > th.max_loss_pct);
        let jitter = self.health.jitter_ms.filter(|&j| j > th.max_jitter_ms);
        let loss = loss.map(|l| format!("loss {l:.1}% over {:.1}%", th.max_loss_pct));
        let jitter = jitter.map(|j| format!("jitter {j:.0} ms over {:.0} ms", th.max_jitter_ms));
        loss.into_iter().chain(jitter).collect()
    }
}

/// The cluster's record, tracked as `unknown` from `now` if new.
fn entry<'a>(
    clusters: &'a mut HashMap<String, Tracked>,
    cluster: &str,
    now: DateTime<Utc>,
) -> &'a mut Tracked {
    clusters
        .entry(cluster.to_string())
        .or_insert_with(|| Tracked::new(now))
}

/// How long ago `then` was; zero if the clock says it is still to come.
fn age(then: DateTime<Utc>, now: DateTime<Utc>) -> TimeDelta {
    (now - then).max(TimeDelta::zero())
}

/// A stored instant moved to `now`, never back: signals may arrive slightly out of order.
fn latest(stored: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    stored.map_or(now, |at| at.max(now))
}

/// A receiver's loss or jitter figure, if it is one.
fn measured(value: f64) -> Option<f64> {
    (value.is_finite() && value >= 0.0).then_some(value)
}

fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn model() -> Health {
        Health::new(Thresholds {
            offline_after: Duration::from_secs(30),
            max_loss_pct: 5.0,
            max_jitter_ms: 50.0,
        })
    }

    fn report(loss_pct: f64, jitter_ms: f64) -> Signal {
        Signal::Reception {
            loss_pct,
            jitter_ms,
        }
    }

    fn status(health: &Health) -> Status {
        health.get("a").unwrap().status
    }

    fn went(transition: Option<Transition>) -> (Status, Status, String) {
        let t = transition.expect("a transition");
        (t.from, t.to, t.cause)
    }

    use Status::{Degraded, Offline, Online, Unknown};

    #[test]
    fn a_cluster_is_unknown_until_its_first_sign_of_life() {
        let mut h = model();
        h.track("a", t(0));
        assert!(h.evaluate(t(100)).is_empty());
        assert_eq!(
            h.observe("a", Signal::SendErrors { total: 9 }, t(101)),
            None
        );
        assert_eq!(status(&h), Unknown);
        assert_eq!(h.get("a").unwrap().cause, "never heard from");
    }

    #[test]
    fn heartbeats_bring_it_online_with_exactly_one_transition() {
        let mut h = model();
        let first = h.observe("a", Signal::Heartbeat, t(1)).unwrap();
        assert_eq!((first.from, first.to, first.at), (Unknown, Online, t(1)));
        assert_eq!(first.cause, "heartbeat");
        assert_eq!(h.observe("a", Signal::Heartbeat, t(2)), None);
        assert!(h.evaluate(t(3)).is_empty());
        let a = h.get("a").unwrap();
        assert_eq!(
            (a.since, a.last_seen, a.last_heartbeat),
            (t(1), Some(t(2)), Some(t(2)))
        );
    }

    #[test]
    fn silence_for_offline_after_goes_offline_exactly_once() {
        let mut h = model();
        h.observe("a", Signal::Heartbeat, t(0));
        assert!(h.evaluate(t(29)).is_empty());
        let offline = h.evaluate(t(30));
        assert_eq!(offline.len(), 1);
        assert_eq!((offline[0].from, offline[0].to), (Online, Offline));
        assert_eq!(
            offline[0].cause,
            "no heartbeat, keepalive or receiver report for 30 s"
        );
        assert!((31..200).all(|s| h.evaluate(t(s)).is_empty()));
    }

    #[test]
    fn an_offline_cluster_comes_back_on_any_sign_of_life() {
        let mut h = model();
        h.observe("a", Signal::Heartbeat, t(0));
        h.evaluate(t(40));
        let back = went(h.observe("a", Signal::Keepalive, t(41)));
        assert_eq!(back, (Offline, Online, "keepalive".into()));
        assert_eq!(h.get("a").unwrap().since, t(41));
    }

    #[test]
    fn loss_over_the_threshold_degrades_until_it_falls_back() {
        let mut h = model();
        h.observe("a", Signal::Heartbeat, t(0));
        let lossy = went(h.observe("a", report(12.0, 10.0), t(1)));
        assert_eq!(lossy, (Online, Degraded, "loss 12.0% over 5.0%".into()));
        assert_eq!(h.observe("a", report(20.0, 10.0), t(2)), None);
        assert_eq!(h.get("a").unwrap().cause, "loss 20.0% over 5.0%");
        let fine = went(h.observe("a", report(1.0, 10.0), t(3)));
        assert_eq!(
            fine,
            (
                Degraded,
                Online,
                "loss and jitter back under thresholds".into()
            )
        );
    }

    #[test]
    fn jitter_degrades_too_and_the_cause_names_every_reason() {
        let mut h = model();
        let jittery = went(h.observe("a", report(0.0, 80.0), t(0)));
        assert_eq!(
            jittery,
            (Unknown, Degraded, "jitter 80 ms over 50 ms".into())
        );
        h.observe("a", report(12.0, 80.0), t(1));
        assert_eq!(
            h.get("a").unwrap().cause,
            "loss 12.0% over 5.0%; jitter 80 ms over 50 ms"
        );
    }

    #[test]
    fn growing_send_errors_degrade_until_a_quiet_window_passes() {
        let mut h = model();
        h.observe("a", Signal::SendErrors { total: 2 }, t(0));
        h.observe("a", Signal::Heartbeat, t(1));
        assert_eq!(status(&h), Degraded);
        h.observe("a", Signal::SendErrors { total: 5 }, t(10));
        h.observe("a", Signal::Heartbeat, t(20));
        assert_eq!(h.get("a").unwrap().cause, "5 send errors in the last 30 s");
        assert!(h.evaluate(t(30)).is_empty());
        assert_eq!(h.get("a").unwrap().cause, "3 send errors in the last 30 s");
        h.observe("a", Signal::Heartbeat, t(35));
        let quiet = h.evaluate(t(40));
        assert_eq!((quiet[0].from, quiet[0].to), (Degraded, Online));
        assert_eq!(quiet[0].cause, "no send errors for 30 s");
    }

    #[test]
    fn a_counter_reset_is_a_new_baseline_not_growth() {
        let mut h = model();
        h.observe("a", Signal::SendErrors { total: 100 }, t(0));
        h.observe("a", Signal::Heartbeat, t(40));
        assert_eq!(status(&h), Online);
        assert_eq!(h.observe("a", Signal::SendErrors { total: 3 }, t(41)), None);
        assert_eq!(h.get("a").unwrap().send_errors, 3);
        let grew = went(h.observe("a", Signal::SendErrors { total: 4 }, t(42)));
        assert_eq!(
            grew,
            (Online, Degraded, "1 send error in the last 30 s".into())
        );
    }

    #[test]
    fn a_stale_receiver_report_no_longer_counts() {
        let mut h = model();
        h.observe("a", report(50.0, 0.0), t(0));
        h.observe("a", Signal::Heartbeat, t(20));
        let stale = h.evaluate(t(30));
        assert_eq!((stale[0].from, stale[0].to), (Degraded, Online));
        assert_eq!(stale[0].cause, "no receiver report for 30 s");
    }

    #[test]
    fn restored_clusters_get_one_window_of_grace_and_no_transition() {
        let mut h = model();
        h.restore("a", Online, t(-500), t(0));
        h.restore("b", Degraded, t(-500), t(0));
        h.restore("c", Offline, t(-500), t(0));
        h.restore("d", Unknown, t(-500), t(0));
        assert!(h.evaluate(t(29)).is_empty());
        assert_eq!(h.get("b").unwrap().status, Degraded);
        assert_eq!(h.get("a").unwrap().since, t(-500));
        let gone: Vec<_> = h
            .evaluate(t(30))
            .into_iter()
            .map(|t| (t.cluster, t.to))
            .collect();
        assert_eq!(gone, [("a".into(), Offline), ("b".into(), Offline)]);
        assert_eq!(h.get("c").unwrap().status, Offline);
        assert_eq!(h.get("d").unwrap().status, Unknown);

        h.restore("e", Degraded, t(-500), t(0));
        assert_eq!(went(h.observe("e", Signal::Heartbeat, t(1))).1, Online);
    }

    #[test]
    fn the_next_deadline_is_the_earliest_timeout_or_window_end() {
        let mut h = model();
        h.track("u", t(0));
        assert_eq!(h.next_deadline(t(0)), None);
        h.observe("a", Signal::Heartbeat, t(10));
        assert_eq!(h.next_deadline(t(10)), Some(t(40)));
        h.observe("b", Signal::Heartbeat, t(5));
        h.observe("b", Signal::SendErrors { total: 1 }, t(6));
        h.observe("b", Signal::Heartbeat, t(20));
        assert_eq!(h.next_deadline(t(20)), Some(t(36)));
        h.evaluate(t(36));
        assert_eq!(h.next_deadline(t(36)), Some(t(40)));
        h.evaluate(t(50));
        assert_eq!(h.next_deadline(t(50)), None);
    }

    #[test]
    fn nonsense_loss_and_jitter_are_ignored() {
        let mut h = model();
        for (loss, jitter) in [(f64::NAN, f64::INFINITY), (-1.0, f64::NEG_INFINITY)] {
            h.observe("a", report(loss, jitter), t(0));
            let a = h.get("a").unwrap();
            assert_eq!((a.status, a.loss_pct, a.jitter_ms), (Online, None, None));
        }
    }

    #[test]
    fn a_forgotten_cluster_is_gone() {
        let mut h = model();
        h.observe("a", Signal::Heartbeat, t(0));
        h.forget("a");
        assert_eq!(h.get("a"), None);
        assert!(h.evaluate(t(100)).is_empty());
        assert_eq!(h.iter().count(), 0);
    }

    #[test]
    fn a_clock_stepped_back_brings_nobody_back() {
        let mut h = model();
        h.observe("a", Signal::Heartbeat, t(100));
        h.evaluate(t(200));
        assert!(h.evaluate(t(0)).is_empty());
        assert_eq!(
            h.observe("a", Signal::SendErrors { total: 1 }, t(-50)),
            None
        );
        assert_eq!(status(&h), Offline);
        assert_eq!(h.next_deadline(t(-1000)), None);
    }

    #[test]
    fn statuses_read_back_what_they_print() {
        for s in Status::ALL {
            assert_eq!(s.to_string().parse::<Status>(), Ok(s));
        }
        assert!("up".parse::<Status>().unwrap_err().contains("degraded"));
    }
}
