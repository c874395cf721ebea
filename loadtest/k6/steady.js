// Steady load: a constant arrival rate (open loop: a request is started on schedule
// whether or not earlier ones have answered, so a stalled service cannot slow the load
// down and hide its stall) of 10,000 messages/s for 60 s — SPEC "Targets".
//
//   .cache/bin/k6 run loadtest/k6/steady.js
//   RATE=2000 DURATION=30s VUS=100 .cache/bin/k6 run loadtest/k6/steady.js
//
// Environment: RATE (requests/s, default 10000), DURATION (default 60s), VUS (default
// 400) and MAX_VUS (default 2 x VUS), BASE_URL (default http://127.0.0.1:8080), API_KEY.
//
// Thresholds (exit code 99 when one fails): P99 of accepted requests < 50 ms, fewer than
// 1 % failures where 429 counts as expected, no 5xx other than 503, at most 1 % of
// iterations dropped by the generator. 429s are counted in rejected_429.

import { baseOptions, envInt, envStr, durationSecs, vuOptions, steadyThresholds, expect202or429, post } from './lib.js';

const RATE = envInt('RATE', 10000);
const DURATION = envStr('DURATION', '60s');

expect202or429();

export const options = Object.assign({}, baseOptions, {
  scenarios: {
    steady: Object.assign(
      {
        executor: 'constant-arrival-rate',
        rate: RATE,
        timeUnit: '1s',
        duration: DURATION,
        gracefulStop: '10s',
      },
      vuOptions(400),
    ),
  },
  thresholds: steadyThresholds(RATE * durationSecs(DURATION)),
});

export default function () {
  post();
}
