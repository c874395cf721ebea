//! Two costs of this machine's kernel that the pipeline pays many times a message, for the
//! bench reports: a system call, and a round trip of wake-ups between two threads, each
//! blocked in a read until the other writes (what an HTTP exchange, a produce acknowledged by
//! librdkafka's thread or a Postgres query cost in wake-ups). Machines of one kind differ most
//! here: in a virtual machine a wake-up on another CPU is an interrupt the hypervisor
//! delivers, and the kernel's speculative-execution mitigations add to every entry.
//!
//! Usage: `machine_probe`; prints one JSON object, each figure the median of five rounds:
//! `{"syscall_ns": …, "wakeup_round_trip_us": …}`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use anyhow::Context;

const ROUNDS: usize = 5;
/// getpid calls a round: glibc does not cache the pid, so each is a real system call.
const SYSCALLS: u32 = 200_000;
/// Round trips a round.
const TRIPS: u32 = 10_000;

fn main() -> anyhow::Result<()> {
    let mut syscall_ns = Vec::with_capacity(ROUNDS);
    let mut round_trip_us = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        syscall_ns.push(syscall_round());
        round_trip_us.push(round_trip_round()?);
    }
    println!(
        "{}",
        serde_json::json!({
            "syscall_ns": (median(syscall_ns) * 10.0).round() / 10.0,
            "wakeup_round_trip_us": (median(round_trip_us) * 100.0).round() / 100.0,
        })
    );
    Ok(())
}

/// Nanoseconds a system call.
fn syscall_round() -> f64 {
    let start = Instant::now();
    let mut sum = 0_u64;
    for _ in 0..SYSCALLS {
        sum = sum.wrapping_add(u64::from(std::process::id()));
    }
    std::hint::black_box(sum);
    start.elapsed().as_secs_f64() * 1e9 / f64::from(SYSCALLS)
}

/// Microseconds a round trip: this thread writes a byte and blocks reading the answer; the
/// echo thread blocks reading, then writes the byte back.
fn round_trip_round() -> anyhow::Result<f64> {
    let (mut near, mut far) = UnixStream::pair().context("a socket pair")?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut byte = [0_u8; 1];
        loop {
            if far.read(&mut byte)? == 0 {
                return Ok(());
            }
            far.write_all(&byte)?;
        }
    });
    let mut byte = [0_u8; 1];
    let start = Instant::now();
    for _ in 0..TRIPS {
        near.write_all(&byte)
            .context("writing to the echo thread")?;
        near.read_exact(&mut byte)
            .context("reading the echo thread's answer")?;
    }
    let elapsed = start.elapsed();
    drop(near);
    echo.join()
        .map_err(|_| anyhow::anyhow!("the echo thread panicked"))?
        .context("the echo thread")?;
    Ok(elapsed.as_secs_f64() * 1e6 / f64::from(TRIPS))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
