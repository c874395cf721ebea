//! The driver: opens the connection fleet gradually, then hands each
//! scheduled request to an idle connection and records what comes back.
//!
//! One task does all of it, so the idle list, the schedule cursor and the
//! recorder need no locks. Idle connections wait in FIFO order, so work
//! rotates through the whole fleet and every bot sends, rather than a few
//! hot connections doing everything while the rest sit idle. When no
//! connection is idle, due requests simply stay behind the schedule cursor;
//! their latency keeps counting from their intended time.
//!
//! Opening ([`Fleet::open`]) and running ([`Fleet::run`]) are separate so that
//! several generator processes can each open their share and then start one
//! common schedule together.
//!
//! A request that goes out again ([`super::resend`]) waits in a queue by the
//! time it is due and takes the next idle connection before any newly
//! scheduled request: it is the older of the two. Each attempt's ending goes
//! to the [`Ledger`] when there is one.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use super::client::{run_connection, Completion, ConnContext, Event, Job, Outcome, Prepared};
use super::ledger::{Ending, Entry, Ledger};
use super::report::{ConnectionStats, DispatchStats, Recorder};
use super::resend::{Cause, History, ResendPolicy};
use super::schedule::Schedule;

/// Completions taken from the channel per wake-up.
const EVENT_BATCH: usize = 256;
/// Grace after the last request's timeout before unfinished ones are given up.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// How long connection tasks get to close their sockets politely at the end.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How to open the fleet.
#[derive(Debug, Clone)]
pub struct DriveSettings {
    /// Connections this process opens.
    pub connections: u32,
    /// New connections per second during the ramp.
    pub connect_rate: u32,
    /// Source addresses to spread connections over (empty: kernel's choice),
    /// indexed by the global connection number.
    pub sources: Vec<IpAddr>,
    /// Messages in one request (1, or the batch size).
    pub messages_per_request: u64,
}

/// What happens to a request after its first attempt.
#[derive(Debug)]
pub struct FollowUp {
    pub policy: ResendPolicy,
    /// Where every attempt's ending is written, if anywhere.
    pub ledger: Option<Ledger>,
}

impl FollowUp {
    /// Whether attempts need to be followed one by one.
    fn tracks_attempts(&self) -> bool {
        self.policy.is_active() || self.ledger.is_some()
    }
}

/// What the driver measured besides the recorder's figures.
pub struct DriveOutcome {
    pub connections: ConnectionStats,
    pub dispatch: DispatchStats,
    pub recorder: Recorder,
    /// The ledger, still to be finished.
    pub ledger: Option<Ledger>,
}

/// One attempt of a request: which, why, and what came before.
#[derive(Debug)]
struct Attempt {
    seq: u64,
    number: u32,
    cause: Cause,
    history: History,
    /// The request as sent; `None` for a first attempt until its connection
    /// reports it leaving.
    request: Option<Arc<Prepared>>,
}

/// Attempts in flight (by connection) and follow-ups waiting for their time,
/// when requests are followed one by one; inert otherwise.
struct Attempts {
    follow: FollowUp,
    tracking: bool,
    in_flight: Vec<Option<Attempt>>,
    /// Earliest first; the counter keeps two due at the same instant apart.
    pending: BTreeMap<(Instant, u64), Attempt>,
    order: u64,
}

impl Attempts {
    fn new(follow: FollowUp, connections: usize) -> Attempts {
        let tracking = follow.tracks_attempts();
        let mut in_flight = Vec::new();
        if tracking {
            in_flight.resize_with(connections, || None);
        }
        Attempts {
            follow,
            tracking,
            in_flight,
            pending: BTreeMap::new(),
            order: 0,
        }
    }

    /// Scheduled request `seq` went to connection `conn`.
    fn first_sent(&mut self, conn: u32, seq: u64) {
        if self.tracking {
            self.sent(
                conn,
                Attempt {
                    seq,
                    number: 0,
                    cause: Cause::First,
                    history: History::default(),
                    request: None,
                },
            );
        }
    }

    fn sent(&mut self, conn: u32, attempt: Attempt) {
        if let Some(slot) = self.in_flight.get_mut(conn as usize) {
            *slot = Some(attempt);
        }
    }

    /// Connection `conn` built the request of its current first attempt.
    fn request_left(&mut self, conn: u32, request: Arc<Prepared>) {
        if let Some(Some(attempt)) = self.in_flight.get_mut(conn as usize) {
            attempt.request = Some(request);
        }
    }

    /// The earliest follow-up due by `now`, if any.
    fn take_due(&mut self, now: Instant) -> Option<Attempt> {
        let entry = self.pending.first_entry()?;
        (entry.key().0 <= now).then(|| entry.remove())
    }

    fn wait(&mut self, at: Instant, attempt: Attempt) {
        self.pending.insert((at, self.order), attempt);
        self.order += 1;
    }

    fn next_due(&self) -> Option<Instant> {
        self.pending.first_key_value().map(|((at, _), _)| *at)
    }

    fn none_waiting(&self) -> bool {
        self.pending.is_empty()
    }

    /// The attempt on connection `conn` ended with `outcome`: write it down,
    /// queue what follows. Returns why that attempt was sent (`None` when
    /// attempts are not followed).
    fn ended(
        &mut self,
        conn: u32,
        outcome: Outcome,
        at: (Instant, DateTime<Utc>),
    ) -> Option<Cause> {
        let attempt = self.in_flight.get_mut(conn as usize)?.take()?;
        if let (Some(ledger), Some(request)) =
            (self.follow.ledger.as_mut(), attempt.request.as_deref())
        {
            ledger.record(Entry {
                at: at.1,
                request,
                attempt: attempt.number,
                cause: attempt.cause,
                ending: Ending::Done(outcome),
            });
        }
        let history = attempt.history.after(attempt.cause);
        if let Some((wait, cause)) = self.follow.policy.next(attempt.seq, history, &outcome) {
            let again = Attempt {
                seq: attempt.seq,
                number: attempt.number + 1,
                cause,
                history,
                request: attempt.request,
            };
            self.wait(at.0 + wait, again);
        }
        Some(attempt.cause)
    }

    /// The run is over: what is still in flight or waiting goes to the ledger
    /// as such, and the ledger is handed back.
    fn close(mut self, at: DateTime<Utc>) -> Option<Ledger> {
        let mut ledger = self.follow.ledger.take()?;
        let left = self
            .in_flight
            .into_iter()
            .flatten()
            .map(|a| (a, Ending::Unanswered))
            .chain(self.pending.into_values().map(|a| (a, Ending::Unsent)));
        for (attempt, ending) in left {
            if let Some(request) = attempt.request.as_deref() {
                ledger.record(Entry {
                    at,
                    request,
                    attempt: attempt.number,
                    cause: attempt.cause,
                    ending,
                });
            }
        }
        Some(ledger)
    }
}

/// Open connections, idle and waiting for a schedule.
pub struct Fleet {
    ctx: Arc<ConnContext>,
    messages_per_request: u64,
    tasks: JoinSet<()>,
    senders: Vec<Option<mpsc::Sender<Job>>>,
    open: Vec<bool>,
    idle: VecDeque<u32>,
    stats: ConnectionStats,
    ev_tx: mpsc::UnboundedSender<Event>,
    ev_rx: mpsc::UnboundedReceiver<Event>,
}

impl Fleet {
    /// Opens `settings.connections` connections at `connect_rate` per
    /// second, so the server's accept queue (and ours) never sees 50,000 SYNs
    /// at once. Fails, with the connect figures, only if not a single
    /// connection could be opened.
    pub async fn open(
        settings: &DriveSettings,
        ctx: Arc<ConnContext>,
    ) -> Result<Fleet, ConnectionStats> {
        Fleet::open_with(settings, ctx, run_connection).await
    }

    /// [`Fleet::open`] with the task that serves each connection given: the
    /// real one is [`run_connection`]. The tests put a simulated server
    /// behind the same channels, so that dispatch and recording can be
    /// checked on tokio's paused clock, where real sockets cannot go.
    pub async fn open_with<C, F>(
        settings: &DriveSettings,
        ctx: Arc<ConnContext>,
        connection: C,
    ) -> Result<Fleet, ConnectionStats>
    where
        C: Fn(
            u32,
            Option<IpAddr>,
            Arc<ConnContext>,
            mpsc::Receiver<Job>,
            mpsc::UnboundedSender<Event>,
        ) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
        let n = settings.connections;
        let mut tasks = JoinSet::new();
        let mut senders: Vec<Option<mpsc::Sender<Job>>> = Vec::with_capacity(n as usize);
        let mut open: Vec<bool> = vec![false; n as usize];
        let mut idle: VecDeque<u32> = VecDeque::with_capacity(n as usize);
        let mut failed: BTreeMap<String, u64> = BTreeMap::new();
        let mut events = Vec::with_capacity(EVENT_BATCH);

        let ramp_start = Instant::now();
        let rate = f64::from(settings.connect_rate.max(1));
        let ramp_deadline = ramp_start
            + Duration::from_secs_f64(f64::from(n) / rate)
            + ctx.connect_timeout
            + DRAIN_GRACE;
        let mut reported = 0u32;
        while reported < n {
            let spawned = senders.len() as u32;
            if spawned < n {
                let elapsed = ramp_start.elapsed().as_secs_f64();
                let due = ((elapsed * rate).floor() as u64 + 1).min(u64::from(n)) as u32;
                for conn in spawned..due {
                    let (tx, rx) = mpsc::channel(1);
                    senders.push(Some(tx));
                    let source = pick_source(&settings.sources, ctx.first_conn + conn);
                    tasks.spawn(connection(conn, source, ctx.clone(), rx, ev_tx.clone()));
                }
            }
            let spawned = senders.len() as u32;
            let next_spawn = ramp_start + Duration::from_secs_f64(f64::from(spawned) / rate);
            tokio::select! {
                biased;
                got = ev_rx.recv_many(&mut events, EVENT_BATCH) => {
                    if got == 0 {
                        break;
                    }
                    for ev in events.drain(..) {
                        match ev {
                            Event::Connected { conn } => {
                                if let Some(o) = open.get_mut(conn as usize) {
                                    *o = true;
                                }
                                idle.push_back(conn);
                            }
                            Event::ConnectFailed { conn, reason } => {
                                *failed.entry(reason).or_insert(0) += 1;
                                if let Some(s) = senders.get_mut(conn as usize) {
                                    *s = None;
                                }
                            }
                            // No jobs were sent yet.
                            Event::Started { .. } | Event::Done(_) => continue,
                        }
                        reported += 1;
                    }
                }
                _ = sleep_until(next_spawn), if spawned < n => {}
                _ = sleep_until(ramp_deadline) => break,
            }
        }
        let stats = ConnectionStats {
            requested: n,
            connected: idle.len() as u32,
            failed,
            ramp_s: ramp_start.elapsed().as_secs_f64(),
            ..ConnectionStats::default()
        };
        tracing::info!(
            connected = stats.connected,
            requested = n,
            ramp_s = stats.ramp_s,
            "connection fleet open"
        );
        if idle.is_empty() {
            tasks.shutdown().await;
            return Err(stats);
        }
        Ok(Fleet {
            ctx,
            messages_per_request: settings.messages_per_request,
            tasks,
            senders,
            open,
            idle,
            stats,
            ev_tx,
            ev_rx,
        })
    }

    /// Connections open after the ramp.
    pub fn connected(&self) -> u32 {
        self.stats.connected
    }

    /// Figures of the ramp.
    pub fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    /// Sends `schedule` over the fleet, and the follow-ups `follow` asks
    /// for, drains, closes the fleet.
    ///
    /// `clock` pins an `Instant` to the wall-clock time it stands for, so
    /// each request's `sent_at` is its intended time on the wall clock.
    pub async fn run(
        mut self,
        schedule: Schedule,
        clock: (Instant, DateTime<Utc>),
        follow: FollowUp,
    ) -> DriveOutcome {
        let mut recorder = Recorder::new(
            schedule.clone(),
            self.messages_per_request,
            self.ctx.collect_ids,
        );
        let wall = |at: Instant| {
            clock.1
                + chrono::Duration::from_std(at.saturating_duration_since(clock.0))
                    .unwrap_or_default()
        };
        let drain_deadline = schedule.end()
            + self.ctx.timeout
            + DRAIN_GRACE
            + follow.policy.longest_follow_up(self.ctx.timeout);
        let mut attempts = Attempts::new(follow, self.senders.len());
        let total = schedule.total();
        let mut next: u64 = 0;
        let mut in_flight: u64 = 0;
        let mut events = Vec::with_capacity(EVENT_BATCH);

        loop {
            let now = Instant::now();
            // Follow-ups first: they are older than anything newly due.
            while !self.idle.is_empty() {
                let Some(attempt) = attempts.take_due(now) else {
                    break;
                };
                let Some(conn) = self.idle.pop_front() else {
                    break;
                };
                let job = Job {
                    seq: attempt.seq,
                    sent_at: wall(schedule.intended(attempt.seq)),
                    again: attempt.request.clone(),
                };
                if self.hand_over(conn, job) {
                    in_flight += 1;
                    attempts.sent(conn, attempt);
                } else {
                    attempts.wait(now, attempt);
                }
            }
            let due = schedule.due(now);
            while next < due {
                let Some(conn) = self.idle.pop_front() else {
                    break;
                };
                let job = Job {
                    seq: next,
                    sent_at: wall(schedule.intended(next)),
                    again: None,
                };
                if self.hand_over(conn, job) {
                    attempts.first_sent(conn, next);
                    next += 1;
                    in_flight += 1;
                }
            }
            if next >= total && in_flight == 0 && attempts.none_waiting() {
                break;
            }
            if self.idle.is_empty() && in_flight == 0 {
                // Every connection task is gone: nothing more can be sent.
                break;
            }
            let next_scheduled = (next < total).then(|| schedule.intended(next));
            let wake = if self.idle.is_empty() {
                None
            } else {
                [next_scheduled, attempts.next_due()]
                    .into_iter()
                    .flatten()
                    .min()
            };
            tokio::select! {
                biased;
                got = self.ev_rx.recv_many(&mut events, EVENT_BATCH) => {
                    if got == 0 {
                        break;
                    }
                    for ev in events.drain(..) {
                        match ev {
                            Event::Done(done) => {
                                in_flight = in_flight.saturating_sub(1);
                                self.finished(done, &mut attempts, &mut recorder, wall);
                            }
                            Event::Started { conn, request } => attempts.request_left(conn, request),
                            Event::Connected { .. } | Event::ConnectFailed { .. } => {}
                        }
                    }
                }
                _ = sleep_until(wake.unwrap_or(drain_deadline)), if wake.is_some() => {}
                _ = sleep_until(drain_deadline) => break,
            }
        }
        let ended = Instant::now();
        let elapsed_s = ended
            .saturating_duration_since(schedule.start())
            .as_secs_f64();
        let unfinished = schedule
            .measured_count()
            .saturating_sub(recorder.measured_completed());
        self.stats.open_at_end = self.open.iter().filter(|o| **o).count() as u32;
        let ledger = attempts.close(wall(ended));

        // Close the fleet: dropping the job senders lets idle tasks close
        // their sockets; whatever is still stuck in a request is aborted.
        let Fleet {
            mut tasks,
            senders,
            ev_tx,
            stats,
            ..
        } = self;
        drop(senders);
        drop(ev_tx);
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.shutdown().await;

        DriveOutcome {
            connections: stats,
            dispatch: DispatchStats {
                scheduled: total,
                dispatched: next,
                unfinished,
                elapsed_s,
            },
            recorder,
            ledger,
        }
    }

    /// A request on connection `conn` finished: the connection is idle again,
    /// the recorder and the attempts learn how it went.
    fn finished(
        &mut self,
        done: Completion,
        attempts: &mut Attempts,
        recorder: &mut Recorder,
        wall: impl Fn(Instant) -> DateTime<Utc>,
    ) {
        let conn = done.conn;
        if done.reconnected {
            self.stats.reconnects += 1;
        }
        if let Some(o) = self.open.get_mut(conn as usize) {
            *o = done.open;
        }
        let now = Instant::now();
        match attempts.ended(conn, done.outcome, (now, wall(now))) {
            Some(cause) if cause != Cause::First => recorder.record_follow_up(cause, &done.outcome),
            _ => recorder.record(done),
        }
        self.idle.push_back(conn);
    }

    /// Gives `job` to connection `conn`; false when the connection's task is
    /// gone, which drops it from the rotation.
    fn hand_over(&mut self, conn: u32, job: Job) -> bool {
        let Some(Some(tx)) = self.senders.get(conn as usize) else {
            return false;
        };
        if tx.try_send(job).is_ok() {
            true
        } else {
            // The task only ends when its events can't be delivered.
            self.retire(conn);
            false
        }
    }

    fn retire(&mut self, conn: u32) {
        if let Some(s) = self.senders.get_mut(conn as usize) {
            *s = None;
        }
        if let Some(o) = self.open.get_mut(conn as usize) {
            *o = false;
        }
    }
}

/// Source address for global connection number `conn`: round-robin.
fn pick_source(sources: &[IpAddr], conn: u32) -> Option<IpAddr> {
    if sources.is_empty() {
        None
    } else {
        Some(sources[conn as usize % sources.len()])
    }
}
