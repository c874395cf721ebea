// Ramp to saturation: the arrival rate climbs linearly from START_RATE to RATE over
// DURATION, then holds RATE for HOLD. Use it to find where the service stops keeping up:
// where P99 of accepted requests crosses 50 ms (SPEC target) and where 429s begin.
//
//   .cache/bin/k6 run loadtest/k6/ramp.js
//   START_RATE=5000 RATE=20000 DURATION=2m .cache/bin/k6 run loadtest/k6/ramp.js
//
// Environment: START_RATE (default 1000), RATE (peak, default 30000), DURATION (ramp
// time, default 4m), HOLD (time at the peak, default 30s), BAND (width of the rate bands
// below, default RATE/10), VUS (default 1000), MAX_VUS (default 2 x VUS), BASE_URL, API_KEY.
//
// Reading the summary:
//   - every request is tagged band=<target rate rounded down to BAND>; the summary lists
//     http_req_duration{band:N} (P99 per band: the first band over 50 ms is where
//     latency saturates) and rejected_429{band:N} (where back-pressure sets in);
//   - first_429_at_s / first_429_target_rate: each VU records the moment and the target
//     rate of its own first 429, so their `min` is when 429s started (s into the ramp)
//     and at which offered rate; rejected_429 counts them all;
//   - dropped_iterations > 0 means the generator itself ran out of VUs (raise MAX_VUS)
//     or CPU: past that point the offered rate is lower than the target.
// Thresholds only guard correctness under overload (Retry-After on every 429/503, no 5xx
// other than 503); latency thresholds are left to steady.js.

import exec from 'k6/execution';
import { Trend } from 'k6/metrics';
import { baseOptions, envInt, envStr, vuOptions, expect202or429, post, message, stageTarget } from './lib.js';

const START_RATE = envInt('START_RATE', 1000);
const RATE = envInt('RATE', 30000);
const DURATION = envStr('DURATION', '4m');
const HOLD = envStr('HOLD', '30s');
const BAND = Math.max(1, envInt('BAND', Math.round(Math.max(START_RATE, RATE) / 10)));

const STAGES = [
  { target: RATE, duration: DURATION },
  { target: RATE, duration: HOLD },
];

const first429At = new Trend('first_429_at_s');
const first429Rate = new Trend('first_429_target_rate');

expect202or429();

function bandOf(rate) {
  return Math.floor(rate / BAND) * BAND;
}

// Always-passing thresholds on the per-band submetrics make k6 print them in the summary.
const thresholds = {
  'checks{check:retry-after present}': ['rate==1'],
  unexpected_5xx: ['rate==0'],
  rejected_429: ['count>=0'],
  first_429_at_s: ['min>=0'],
  first_429_target_rate: ['min>=0'],
};
for (let b = bandOf(Math.min(START_RATE, RATE)); b <= bandOf(Math.max(START_RATE, RATE)); b += BAND) {
  thresholds[`http_req_duration{band:${b}}`] = ['p(99)>=0'];
  thresholds[`rejected_429{band:${b}}`] = ['count>=0'];
}

export const options = Object.assign({}, baseOptions, {
  scenarios: {
    ramp: Object.assign(
      {
        executor: 'ramping-arrival-rate',
        startRate: START_RATE,
        timeUnit: '1s',
        stages: STAGES,
        gracefulStop: '10s',
      },
      vuOptions(1000),
    ),
  },
  thresholds,
});

let seen429 = false;

export default function () {
  const elapsed = (Date.now() - exec.scenario.startTime) / 1000;
  const target = stageTarget(START_RATE, STAGES, elapsed);
  const res = post(message(), { band: String(bandOf(target)) });
  if (res.status === 429 && !seen429) {
    seen429 = true;
    first429At.add(elapsed);
    first429Rate.add(target);
  }
}
