// Spike: a steady base rate, a sudden jump to a rate far over capacity for a short time,
// then back to the base rate. The service must shed the excess with 429 + Retry-After
// (or 503 + Retry-After if Kafka cannot keep up within the publish timeout), never a
// 500, and recover once the spike is over.
//
//   .cache/bin/k6 run loadtest/k6/spike.js
//   BASE_RATE=2000 RATE=25000 DURATION=10s .cache/bin/k6 run loadtest/k6/spike.js
//
// Timeline: WARMUP at BASE_RATE, a SPIKE_RAMP-long climb to RATE, DURATION at RATE, a
// SPIKE_RAMP-long drop back, RECOVERY at BASE_RATE. Every request is tagged phase=base,
// spike or recovery, and the summary shows latency and 429s per phase.
//
// Environment: BASE_RATE (default 1000), RATE (spike, default 40000), DURATION (spike
// length, default 20s), WARMUP (default 30s), RECOVERY (default 30s), SPIKE_RAMP (default
// 1s), VUS (default 1500), MAX_VUS (default 2 x VUS), BASE_URL, API_KEY, EXPECT_429=1 to
// also fail the run when the spike produced no 429 at all.
//
// Thresholds: every 429 and 503 carries Retry-After (the check "retry-after present"
// at rate 1), no 5xx other than 503 and no transport errors (unexpected_5xx rate 0),
// and the recovery phase is healthy again: P99 of accepted requests < 50 ms.

import exec from 'k6/execution';
import { baseOptions, envInt, envStr, durationSecs, vuOptions, expect202or429, post, message } from './lib.js';

const BASE_RATE = envInt('BASE_RATE', 1000);
const RATE = envInt('RATE', 40000);
const DURATION = envStr('DURATION', '20s');
const WARMUP = envStr('WARMUP', '30s');
const RECOVERY = envStr('RECOVERY', '30s');
const SPIKE_RAMP = envStr('SPIKE_RAMP', '1s');

const STAGES = [
  { target: BASE_RATE, duration: WARMUP },
  { target: RATE, duration: SPIKE_RAMP },
  { target: RATE, duration: DURATION },
  { target: BASE_RATE, duration: SPIKE_RAMP },
  { target: BASE_RATE, duration: RECOVERY },
];
const SPIKE_START = durationSecs(WARMUP);
const SPIKE_END = SPIKE_START + 2 * durationSecs(SPIKE_RAMP) + durationSecs(DURATION);
// The first seconds after the spike still drain its backlog; judge recovery after that.
const SETTLE = Math.min(10, durationSecs(RECOVERY) / 2);

expect202or429();

const thresholds = {
  'checks{check:retry-after present}': ['rate==1'],
  unexpected_5xx: ['rate==0'],
  'http_req_duration{phase:recovery,expected_response:true}': ['p(99)<50'],
  'http_req_duration{phase:base}': ['p(99)>=0'],
  'http_req_duration{phase:spike}': ['p(99)>=0'],
  'rejected_429{phase:base}': ['count>=0'],
  'rejected_429{phase:spike}': [__ENV.EXPECT_429 === '1' ? 'count>0' : 'count>=0'],
  'rejected_429{phase:recovery}': ['count>=0'],
  unavailable_503: ['count>=0'],
};

export const options = Object.assign({}, baseOptions, {
  scenarios: {
    spike: Object.assign(
      {
        executor: 'ramping-arrival-rate',
        startRate: BASE_RATE,
        timeUnit: '1s',
        stages: STAGES,
        gracefulStop: '10s',
      },
      vuOptions(1500),
    ),
  },
  thresholds,
});

function phaseAt(t) {
  if (t < SPIKE_START) return 'base';
  if (t < SPIKE_END + SETTLE) return 'spike';
  return 'recovery';
}

export default function () {
  const elapsed = (Date.now() - exec.scenario.startTime) / 1000;
  post(message(), { phase: phaseAt(elapsed) });
}
