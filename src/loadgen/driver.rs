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

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use super::client::{run_connection, ConnContext, Event, Job};
use super::report::{ConnectionStats, DispatchStats, Recorder};
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

/// What the driver measured besides the recorder's figures.
pub struct DriveOutcome {
    pub connections: ConnectionStats,
    pub dispatch: DispatchStats,
    pub recorder: Recorder,
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
                    tasks.spawn(run_connection(conn, source, ctx.clone(), rx, ev_tx.clone()));
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
                            Event::Done(_) => {}
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

    /// Sends `schedule` over the fleet, drains, closes the fleet.
    ///
    /// `clock` pins an `Instant` to the wall-clock time it stands for, so
    /// each request's `sent_at` is its intended time on the wall clock.
    pub async fn run(
        mut self,
        schedule: Schedule,
        clock: (Instant, DateTime<Utc>),
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
        let drain_deadline = schedule.end() + self.ctx.timeout + DRAIN_GRACE;
        let total = schedule.total();
        let mut next: u64 = 0;
        let mut in_flight: u64 = 0;
        let mut events = Vec::with_capacity(EVENT_BATCH);

        loop {
            let due = schedule.due(Instant::now());
            while next < due {
                let Some(conn) = self.idle.pop_front() else {
                    break;
                };
                let Some(Some(tx)) = self.senders.get(conn as usize) else {
                    continue;
                };
                let job = Job {
                    seq: next,
                    sent_at: wall(schedule.intended(next)),
                };
                if tx.try_send(job).is_ok() {
                    next += 1;
                    in_flight += 1;
                } else {
                    // The task is gone (it only ends when its events can't
                    // be delivered); drop it from the rotation.
                    self.retire(conn);
                }
            }
            if next >= total && in_flight == 0 {
                break;
            }
            if self.idle.is_empty() && in_flight == 0 {
                // Every connection task is gone: nothing more can be sent.
                break;
            }
            let wake = (next < total && !self.idle.is_empty()).then(|| schedule.intended(next));
            tokio::select! {
                biased;
                got = self.ev_rx.recv_many(&mut events, EVENT_BATCH) => {
                    if got == 0 {
                        break;
                    }
                    for ev in events.drain(..) {
                        if let Event::Done(done) = ev {
                            in_flight = in_flight.saturating_sub(1);
                            let conn = done.conn;
                            if done.reconnected {
                                self.stats.reconnects += 1;
                            }
                            if let Some(o) = self.open.get_mut(conn as usize) {
                                *o = done.open;
                            }
                            recorder.record(done);
                            self.idle.push_back(conn);
                        }
                    }
                }
                _ = sleep_until(wake.unwrap_or(drain_deadline)), if wake.is_some() => {}
                _ = sleep_until(drain_deadline) => break,
            }
        }
        let elapsed_s = Instant::now()
            .saturating_duration_since(schedule.start())
            .as_secs_f64();
        let unfinished = schedule
            .measured_count()
            .saturating_sub(recorder.measured_completed());
        self.stats.open_at_end = self.open.iter().filter(|o| **o).count() as u32;

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
