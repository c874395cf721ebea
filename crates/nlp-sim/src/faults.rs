//! Fault injection: latency, errors and hangs, changeable while serving.
//!
//! The simulator exists to exercise the worker's timeout, retry, circuit
//! breaker and fallback paths, so its failure modes are knobs: a mean latency
//! (sampled from a log-normal distribution, so there is a realistic spread but
//! never a negative delay), a probability of answering HTTP 500 and a
//! probability of never answering at all. Load tests flip them at run time
//! through `POST /admin/faults`.
//!
//! Every request reads the knobs, and at 10,000 requests a second on two
//! cores a lock there would be the bottleneck. [`Faults`] therefore keeps the
//! three values in atomics behind a sequence lock: readers never block or
//! write shared memory, and a reader always sees one consistent set (never
//! the new latency with the old error rate), while the rare writers
//! serialise on a mutex.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::{Rng, RngExt};
use rand_distr::{Distribution, LogNormal};
use serde::Serialize;
use serde_json::{Map, Value};

/// Default mean latency, as the spec fixes it.
pub const DEFAULT_LATENCY_MS: u64 = 200;
/// Largest accepted mean latency (10 minutes): anything longer is a typo,
/// and would overflow nothing but a tester's patience.
pub const MAX_LATENCY_MS: u64 = 600_000;
/// Default spread of the latency distribution (standard deviation / mean).
/// At 0.1 and a 200 ms mean, p99 is about 250 ms, so the worker's 300 ms
/// per-attempt timeout is hit only by injected faults, not by the baseline.
pub const DEFAULT_LATENCY_CV: f64 = 0.1;
/// Largest accepted coefficient of variation.
pub const MAX_LATENCY_CV: f64 = 10.0;
/// A reader that finds a write in progress this many times yields its thread.
const SPINS_BEFORE_YIELD: u32 = 64;
/// A sampled latency never exceeds this multiple of the mean, so a wide
/// spread cannot produce a delay of hours.
const MAX_LATENCY_FACTOR: f64 = 20.0;

/// A knob was given a value it cannot take. Each variant names the field so
/// the HTTP layer can tell the client exactly which one to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    /// A probability is not a number from 0 to 1.
    #[error("{field} must be a number from 0 to 1, got {value}")]
    RateOutOfRange {
        /// `error_rate` or `hang_rate`.
        field: &'static str,
        /// The rejected value, as given.
        value: String,
    },
    /// `latency_ms` is not a whole number of milliseconds from 0 to
    /// [`MAX_LATENCY_MS`].
    #[error(
        "latency_ms must be a whole number of milliseconds from 0 to {MAX_LATENCY_MS}, got {value}"
    )]
    LatencyOutOfRange {
        /// The rejected value, as given.
        value: String,
    },
    /// `latency_cv` is not a number from 0 to [`MAX_LATENCY_CV`].
    #[error("latency_cv must be a number from 0 to {MAX_LATENCY_CV}, got {value}")]
    SpreadOutOfRange {
        /// The rejected value, as given.
        value: String,
    },
    /// `POST /admin/faults` named a knob that does not exist.
    #[error("unknown field {field:?}; expected latency_ms, error_rate or hang_rate")]
    UnknownField {
        /// The unknown name.
        field: String,
    },
    /// The `POST /admin/faults` body is valid JSON but not an object.
    #[error("the body must be a JSON object such as {{\"error_rate\": 0.1}}")]
    NotAnObject,
}

impl FaultError {
    /// The request field at fault, for the `field` of an error body.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::RateOutOfRange { field, .. } => Some(field),
            Self::LatencyOutOfRange { .. } => Some("latency_ms"),
            Self::SpreadOutOfRange { .. } => Some("latency_cv"),
            Self::UnknownField { field } => Some(field),
            Self::NotAnObject => None,
        }
    }
}

/// A valid set of fault knobs; the body of `GET /admin/faults`.
///
/// Fields are private so that a value of this type is always in range:
/// construct it with [`FaultSettings::new`] or update it with
/// [`FaultSettings::apply_json`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FaultSettings {
    latency_ms: u64,
    error_rate: f64,
    hang_rate: f64,
}

impl Default for FaultSettings {
    fn default() -> Self {
        Self {
            latency_ms: DEFAULT_LATENCY_MS,
            error_rate: 0.0,
            hang_rate: 0.0,
        }
    }
}

impl FaultSettings {
    /// Validates the three knobs together.
    pub fn new(latency_ms: u64, error_rate: f64, hang_rate: f64) -> Result<Self, FaultError> {
        Ok(Self {
            latency_ms: check_latency(latency_ms)?,
            error_rate: check_rate("error_rate", error_rate)?,
            hang_rate: check_rate("hang_rate", hang_rate)?,
        })
    }

    /// Mean delay before each analysis answer, in milliseconds.
    pub fn latency_ms(&self) -> u64 {
        self.latency_ms
    }

    /// Probability that an answered request gets HTTP 500 instead.
    pub fn error_rate(&self) -> f64 {
        self.error_rate
    }

    /// Probability that a request is never answered.
    pub fn hang_rate(&self) -> f64 {
        self.hang_rate
    }

    /// Applies a `POST /admin/faults` body: any subset of the three fields.
    /// Unknown fields are rejected, since a misspelt knob silently ignored
    /// would make a load test measure the wrong thing.
    pub fn apply_json(self, body: &Value) -> Result<Self, FaultError> {
        let object: &Map<String, Value> = body.as_object().ok_or(FaultError::NotAnObject)?;
        let mut next = self;
        for (field, value) in object {
            match field.as_str() {
                "latency_ms" => next.latency_ms = latency_from_json(value)?,
                "error_rate" => next.error_rate = rate_from_json("error_rate", value)?,
                "hang_rate" => next.hang_rate = rate_from_json("hang_rate", value)?,
                _ => {
                    return Err(FaultError::UnknownField {
                        field: field.clone(),
                    })
                }
            }
        }
        Ok(next)
    }

    /// Decides what happens to one request: how long it waits, then whether
    /// it hangs, fails or is answered (in that order, so the error rate
    /// applies to requests that did not hang).
    pub fn plan<R: Rng + ?Sized>(&self, latency_cv: f64, rng: &mut R) -> Plan {
        let delay = sample_latency(self.latency_ms, latency_cv, rng);
        let outcome = if rng.random::<f64>() < self.hang_rate {
            Outcome::Hang
        } else if rng.random::<f64>() < self.error_rate {
            Outcome::Error
        } else {
            Outcome::Answer
        };
        Plan { delay, outcome }
    }
}

fn check_rate(field: &'static str, value: f64) -> Result<f64, FaultError> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(FaultError::RateOutOfRange {
            field,
            value: value.to_string(),
        })
    }
}

fn check_latency(value: u64) -> Result<u64, FaultError> {
    if value <= MAX_LATENCY_MS {
        Ok(value)
    } else {
        Err(FaultError::LatencyOutOfRange {
            value: value.to_string(),
        })
    }
}

/// Validates a coefficient of variation for the latency distribution.
pub fn check_latency_cv(value: f64) -> Result<f64, FaultError> {
    if (0.0..=MAX_LATENCY_CV).contains(&value) {
        Ok(value)
    } else {
        Err(FaultError::SpreadOutOfRange {
            value: value.to_string(),
        })
    }
}

fn rate_from_json(field: &'static str, value: &Value) -> Result<f64, FaultError> {
    let out_of_range = || FaultError::RateOutOfRange {
        field,
        value: value.to_string(),
    };
    check_rate(field, value.as_f64().ok_or_else(out_of_range)?)
}

/// Accepts a whole number of milliseconds, also when written as `250.0`.
fn latency_from_json(value: &Value) -> Result<u64, FaultError> {
    let out_of_range = || FaultError::LatencyOutOfRange {
        value: value.to_string(),
    };
    if let Some(ms) = value.as_u64() {
        return check_latency(ms);
    }
    let ms = value.as_f64().ok_or_else(out_of_range)?;
    if ms.fract() == 0.0 && (0.0..=MAX_LATENCY_MS as f64).contains(&ms) {
        Ok(ms as u64)
    } else {
        Err(out_of_range())
    }
}

/// Parses a rate flag (`--error-rate`, `--hang-rate`) for clap.
pub fn parse_rate_arg(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is outside 0..=1"))
    }
}

/// Draws one latency: log-normal with the given mean (ms) and coefficient
/// of variation, capped at 20 × the mean. A mean of 0 means no delay at all.
pub fn sample_latency<R: Rng + ?Sized>(mean_ms: u64, cv: f64, rng: &mut R) -> Duration {
    if mean_ms == 0 {
        return Duration::ZERO;
    }
    let mean = mean_ms as f64;
    let ms = match LogNormal::from_mean_cv(mean, cv) {
        Ok(distribution) if cv > 0.0 => distribution.sample(rng),
        _ => mean,
    };
    let ms = if ms.is_finite() {
        ms.clamp(0.0, mean * MAX_LATENCY_FACTOR)
    } else {
        mean
    };
    Duration::from_secs_f64(ms / 1_000.0)
}

/// What the fault knobs decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Sleep this long before anything else.
    pub delay: Duration,
    /// Then do this.
    pub outcome: Outcome,
}

impl Plan {
    /// No delay, answer normally: for routes that faults do not touch.
    pub const HEALTHY: Plan = Plan {
        delay: Duration::ZERO,
        outcome: Outcome::Answer,
    };
}

/// The fate of one request after its delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Analyse and answer 200 (or 400 for a bad request).
    Answer,
    /// Answer HTTP 500 with a JSON error body.
    Error,
    /// Never answer; the connection stays open until shutdown.
    Hang,
}

/// The live fault knobs, shared by every connection and the admin routes.
///
/// Cloning is cheap (an `Arc`); all clones see the same settings. Readers
/// take a consistent snapshot without locking (see the module docs).
#[derive(Debug, Clone)]
pub struct Faults {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Even when stable, odd while a write is in progress.
    sequence: AtomicU64,
    latency_ms: AtomicU64,
    /// `f64::to_bits` of the rates.
    error_rate: AtomicU64,
    hang_rate: AtomicU64,
    /// Serialises writers; readers never touch it.
    writer: Mutex<()>,
    /// Fixed at start-up: not part of the run-time contract.
    latency_cv: f64,
}

impl Faults {
    /// Starts with `settings` and a latency spread of `latency_cv`.
    pub fn new(settings: FaultSettings, latency_cv: f64) -> Result<Self, FaultError> {
        let latency_cv = check_latency_cv(latency_cv)?;
        Ok(Self {
            inner: Arc::new(Shared {
                sequence: AtomicU64::new(0),
                latency_ms: AtomicU64::new(settings.latency_ms),
                error_rate: AtomicU64::new(settings.error_rate.to_bits()),
                hang_rate: AtomicU64::new(settings.hang_rate.to_bits()),
                writer: Mutex::new(()),
                latency_cv,
            }),
        })
    }

    /// The current settings, all three from the same update.
    pub fn snapshot(&self) -> FaultSettings {
        let shared = &*self.inner;
        let mut spins = 0u32;
        loop {
            let before = shared.sequence.load(Ordering::Acquire);
            if before % 2 == 1 {
                // A write takes nanoseconds, unless the writer's thread was
                // preempted mid-write: then give it the core.
                spins += 1;
                if spins.is_multiple_of(SPINS_BEFORE_YIELD) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            let settings = FaultSettings {
                latency_ms: shared.latency_ms.load(Ordering::Relaxed),
                error_rate: f64::from_bits(shared.error_rate.load(Ordering::Relaxed)),
                hang_rate: f64::from_bits(shared.hang_rate.load(Ordering::Relaxed)),
            };
            fence(Ordering::Acquire);
            if shared.sequence.load(Ordering::Relaxed) == before {
                return settings;
            }
        }
    }

    /// The latency spread chosen at start-up.
    pub fn latency_cv(&self) -> f64 {
        self.inner.latency_cv
    }

    /// Replaces the settings; requests that start afterwards see them.
    pub fn set(&self, settings: FaultSettings) {
        let _ = self.update(|_| Ok::<_, std::convert::Infallible>(settings));
    }

    /// Read-modify-write under the writer lock, so two concurrent partial
    /// updates (one setting latency, one error rate) both take effect.
    pub fn update<E>(
        &self,
        change: impl FnOnce(FaultSettings) -> Result<FaultSettings, E>,
    ) -> Result<FaultSettings, E> {
        // The guarded data is `()`, so a poisoned lock protects nothing broken.
        let _writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let next = change(self.snapshot())?;
        self.store(next);
        Ok(next)
    }

    /// Caller holds the writer lock.
    fn store(&self, settings: FaultSettings) {
        let shared = &*self.inner;
        let sequence = shared.sequence.load(Ordering::Relaxed);
        shared
            .sequence
            .store(sequence.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        shared
            .latency_ms
            .store(settings.latency_ms, Ordering::Relaxed);
        shared
            .error_rate
            .store(settings.error_rate.to_bits(), Ordering::Relaxed);
        shared
            .hang_rate
            .store(settings.hang_rate.to_bits(), Ordering::Relaxed);
        shared
            .sequence
            .store(sequence.wrapping_add(2), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use serde_json::json;

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(7)
    }

    #[test]
    fn rates_outside_zero_to_one_are_rejected_naming_the_field() {
        let error = FaultSettings::new(200, 1.5, 0.0).expect_err("1.5 is not a rate");
        assert_eq!(error.field(), Some("error_rate"));
        let error = FaultSettings::new(200, 0.0, -0.1).expect_err("-0.1 is not a rate");
        assert_eq!(error.field(), Some("hang_rate"));
        assert!(FaultSettings::new(200, f64::NAN, 0.0).is_err());
        assert!(FaultSettings::new(MAX_LATENCY_MS + 1, 0.0, 0.0).is_err());
        assert!(FaultSettings::new(0, 1.0, 1.0).is_ok());
    }

    #[test]
    fn a_partial_update_changes_only_the_given_fields() {
        let start = FaultSettings::default();
        let next = start
            .apply_json(&json!({"error_rate": 0.25}))
            .expect("valid update");
        assert_eq!(next, FaultSettings::new(200, 0.25, 0.0).expect("valid"));
        let next = next
            .apply_json(&json!({"latency_ms": 50.0, "hang_rate": 1}))
            .expect("valid update");
        assert_eq!(next, FaultSettings::new(50, 0.25, 1.0).expect("valid"));
    }

    #[test]
    fn a_bad_update_is_rejected_whole() {
        let start = FaultSettings::default();
        let cases = [
            (json!({"error_rate": 2}), Some("error_rate")),
            (json!({"hang_rate": "0.5"}), Some("hang_rate")),
            (json!({"latency_ms": -1}), Some("latency_ms")),
            (json!({"latency_ms": 1.5}), Some("latency_ms")),
            (json!({"error_rat": 0.1}), Some("error_rat")),
            (json!([0.1]), None),
        ];
        for (body, field) in cases {
            let error = start.apply_json(&body).expect_err("invalid update");
            assert_eq!(error.field(), field, "{body}");
        }
    }

    #[test]
    fn error_rate_one_always_errors_and_hang_rate_one_always_hangs() {
        let mut rng = rng();
        let errors = FaultSettings::new(0, 1.0, 0.0).expect("valid");
        let hangs = FaultSettings::new(0, 1.0, 1.0).expect("valid");
        let healthy = FaultSettings::new(0, 0.0, 0.0).expect("valid");
        for _ in 0..1_000 {
            assert_eq!(errors.plan(0.1, &mut rng).outcome, Outcome::Error);
            assert_eq!(hangs.plan(0.1, &mut rng).outcome, Outcome::Hang);
            assert_eq!(healthy.plan(0.1, &mut rng).outcome, Outcome::Answer);
        }
    }

    #[test]
    fn error_rate_is_honoured_on_average() {
        let mut rng = rng();
        let settings = FaultSettings::new(0, 0.3, 0.0).expect("valid");
        let errors = (0..20_000)
            .filter(|_| settings.plan(0.1, &mut rng).outcome == Outcome::Error)
            .count();
        let rate = errors as f64 / 20_000.0;
        assert!((0.28..0.32).contains(&rate), "observed {rate}");
    }

    #[test]
    fn latency_is_spread_around_the_mean_and_never_negative() {
        let mut rng = rng();
        let samples: Vec<f64> = (0..20_000)
            .map(|_| sample_latency(200, 0.25, &mut rng).as_secs_f64() * 1_000.0)
            .collect();
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        assert!((195.0..205.0).contains(&mean), "mean {mean}");
        assert!(samples.iter().all(|&ms| ms > 0.0 && ms <= 4_000.0));
        let spread = samples
            .iter()
            .filter(|&&ms| !(190.0..210.0).contains(&ms))
            .count();
        assert!(spread > 1_000, "samples should vary, {spread} outside ±5%");
    }

    #[test]
    fn zero_latency_means_no_sleep_and_zero_spread_means_exact() {
        let mut rng = rng();
        assert_eq!(sample_latency(0, 0.5, &mut rng), Duration::ZERO);
        assert_eq!(
            sample_latency(120, 0.0, &mut rng),
            Duration::from_millis(120)
        );
    }

    #[test]
    fn shared_settings_change_for_every_clone() {
        let faults = Faults::new(FaultSettings::default(), DEFAULT_LATENCY_CV).expect("valid");
        let other = faults.clone();
        let next = faults
            .update(|s| s.apply_json(&json!({"hang_rate": 0.5})))
            .expect("valid update");
        assert_eq!(other.snapshot(), next);
        assert!(faults
            .update(|s| s.apply_json(&json!({"hang_rate": 5})))
            .is_err());
        assert_eq!(other.snapshot(), next, "a rejected update changes nothing");
        assert!(Faults::new(FaultSettings::default(), -1.0).is_err());
    }

    #[test]
    fn readers_never_see_a_torn_update() {
        let faults =
            Faults::new(FaultSettings::new(0, 0.0, 0.0).expect("valid"), 0.0).expect("valid");
        let writer = {
            let faults = faults.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    let rate = (i % 2) as f64;
                    faults.set(FaultSettings::new(i % 2, rate, rate).expect("valid"));
                }
            })
        };
        for _ in 0..200_000 {
            let s = faults.snapshot();
            assert_eq!(s.latency_ms() as f64, s.error_rate());
            assert_eq!(s.error_rate(), s.hang_rate());
        }
        writer.join().expect("writer thread");
    }
}
