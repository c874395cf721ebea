#!/usr/bin/env python3
"""A competing process for the benches: keeps STEAL of one core busy until SIGTERM.

`make bench STEAL=0.5` and `make bench-capacity STEAL=0.5` run it next to the stack, so the
targets are measured with part of the machine gone (a slower or shared host). It works in
periods of --period-ms (10 ms): in each it spins until it has used STEAL of the period in CPU
time, or the period is over, then sleeps the rest. Counting CPU time rather than wall time,
and carrying what a period could not get to the next ones (at most 50 ms of it), keeps the
share on a busy machine, where the scheduler preempts it mid-spin: the competition is there
when the stack is loaded, not only when it is idle. It never holds more than one core, and
never more than STEAL of any stretch of time plus those 50 ms.

On SIGTERM (or SIGINT) it writes what it really used to --out as JSON: wall and CPU seconds
(time.process_time: user + system), `cores` = CPU / wall, and the STEAL it was asked for, then
exits 0. Python standard library only.

    python3 scripts/cpu_burner.py --steal 0.5 --out bench/results/<stamp>/burner.json &
"""
import argparse
import json
import os
import signal
import sys
import time

# CPU time owed at most (seconds): a stalled burner makes up for it, but over any stretch of
# time it never takes more than STEAL of it plus this.
MAX_DEBT_S = 0.05


def burn(steal, period, stop, max_debt=MAX_DEBT_S):
    """Runs periods of `period` seconds until stop() is true, spinning for `steal` of each
    in CPU time; CPU time a period could not get (preempted) is owed to the next ones, up to
    `max_debt` seconds. Returns (wall seconds, CPU seconds) spent in the loop."""
    wall0, cpu0 = time.monotonic(), time.process_time()
    debt = 0.0
    next_start = wall0
    while not stop():
        end = next_start + period
        budget = steal * period + debt
        spun0 = time.process_time()
        while time.process_time() - spun0 < budget and time.monotonic() < end:
            pass
        debt = min(max_debt, budget - (time.process_time() - spun0))
        now = time.monotonic()
        if now < end:
            time.sleep(end - now)
            next_start = end
        else:
            # Fell behind (preempted, or a full-core burner): start afresh from now.
            next_start = now
    return time.monotonic() - wall0, time.process_time() - cpu0


def report(steal, period, wall, cpu):
    return {
        "steal": steal,
        "period_ms": round(period * 1000, 3),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "cores": round(cpu / wall, 3) if wall > 0 else None,
        "pid": os.getpid(),
    }


def fraction(text):
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not from 0 to 1 (a share of one core)")
    return value


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steal", type=fraction, required=True, help="share of one core to keep busy, 0 to 1")
    parser.add_argument("--period-ms", type=float, default=10.0, help="length of one spin + sleep period")
    parser.add_argument("--out", required=True, help="JSON file written on SIGTERM")
    args = parser.parse_args(argv)
    if not 0.1 <= args.period_ms <= 1000:
        parser.error("--period-ms must be from 0.1 to 1000")

    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    period = args.period_ms / 1000
    wall, cpu = burn(args.steal, period, lambda: bool(stopping))
    result = report(args.steal, period, wall, cpu)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"cpu_burner: asked for {args.steal} of a core, used {result['cores']} "
          f"({result['cpu_s']} s of CPU in {result['wall_s']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
