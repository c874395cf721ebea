// Soak: a moderate constant arrival rate for 10 minutes, to show that latency, memory
// (watch the service's RSS; SPEC target < 300 MB) and consumer lag stay flat over time.
// Same thresholds as steady.js.
//
//   .cache/bin/k6 run loadtest/k6/soak.js
//   RATE=8000 DURATION=30m .cache/bin/k6 run loadtest/k6/soak.js
//
// Environment: RATE (requests/s, default 5000), DURATION (default 10m), VUS (default
// 200) and MAX_VUS (default 2 x VUS), BASE_URL (default http://127.0.0.1:8080), API_KEY.

import { baseOptions, envInt, envStr, durationSecs, vuOptions, steadyThresholds, expect202or429, post } from './lib.js';

const RATE = envInt('RATE', 5000);
const DURATION = envStr('DURATION', '10m');

expect202or429();

export const options = Object.assign({}, baseOptions, {
  scenarios: {
    soak: Object.assign(
      {
        executor: 'constant-arrival-rate',
        rate: RATE,
        timeUnit: '1s',
        duration: DURATION,
        gracefulStop: '10s',
      },
      vuOptions(200),
    ),
  },
  thresholds: steadyThresholds(RATE * durationSecs(DURATION)),
});

export default function () {
  post();
}
