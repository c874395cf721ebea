// Shared pieces of the chat-analytics k6 scripts (steady.js, ramp.js, spike.js, soak.js).
//
// - message(): one realistic POST /v1/messages body (SPEC.md, "HTTP ingestion API"):
//   a distinct bot_id per VU (`bot-${__VU}`), a UUID message_id, sent_at = now.
// - post(): sends it with Content-Type: application/json, counts responses by status,
//   and runs the checks the thresholds refer to:
//     "status is 202 or 429"   every response
//     "retry-after present"    every 429 and 503 (SPEC: both carry Retry-After)
// - env helpers and the option blocks the scripts share.
//
// Environment (read by every script; each script documents its own rate knobs):
//   BASE_URL   service address (default http://127.0.0.1:8080)
//   API_KEY    when set, sent as `Authorization: Bearer $API_KEY`
//   VUS        pre-allocated VUs (each one is one bot and one keep-alive connection)
//   MAX_VUS    most VUs the executor may start (default 2 x VUS)
//   TIMEOUT    per-request timeout (default 10s; the service's own publish timeout is 2 s)

import http from 'k6/http';
import { check } from 'k6';
import { Counter, Rate } from 'k6/metrics';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const MESSAGES_URL = `${BASE_URL}/v1/messages`;

// ---------------------------------------------------------------------------------------
// Environment helpers

export function envInt(name, dflt) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got "${raw}"`);
  return Math.round(n);
}

export function envStr(name, dflt) {
  const raw = __ENV[name];
  return raw === undefined || raw === '' ? dflt : raw;
}

// "90s", "5m", "1m30s", "1h", "500ms" or a bare number of seconds -> seconds.
export function durationSecs(d) {
  if (/^\d+(\.\d+)?$/.test(String(d))) return Number(d);
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
  let total = 0;
  let matched = '';
  let m;
  while ((m = re.exec(d)) !== null) {
    matched += m[0];
    const v = Number(m[1]);
    total += m[2] === 'h' ? v * 3600 : m[2] === 'm' ? v * 60 : m[2] === 's' ? v : v / 1000;
  }
  if (matched !== d) throw new Error(`bad duration "${d}" (use e.g. 60s, 10m, 1m30s)`);
  return total;
}

// Pre-allocated and maximum VUs for an arrival-rate executor. A VU is busy for one
// request's latency, so VUS ~ rate x latency with headroom: 10,000/s at 20 ms is 200.
export function vuOptions(defaultVus) {
  const pre = Math.max(1, envInt('VUS', defaultVus));
  const max = Math.max(pre, envInt('MAX_VUS', pre * 2));
  return { preAllocatedVUs: pre, maxVUs: max };
}

// Target arrival rate of a ramping-arrival-rate executor `elapsedSecs` into its scenario
// (linear interpolation between stages, as k6 does).
export function stageTarget(startRate, stages, elapsedSecs) {
  let from = startRate;
  let t = elapsedSecs;
  for (const st of stages) {
    const d = durationSecs(st.duration);
    if (t < d) return d > 0 ? from + ((st.target - from) * t) / d : st.target;
    t -= d;
    from = st.target;
  }
  return from;
}

// ---------------------------------------------------------------------------------------
// Metrics shared by every script

// Responses by status, tagged {status: "202"} etc. (http_reqs carries the same tag; this
// one is small and is what the summaries below print per status).
export const responses = new Counter('responses');
// 429 Too Many Requests: deliberate back-pressure, expected under overload.
export const rejected429 = new Counter('rejected_429');
// 503 Service Unavailable: Kafka unreachable or shutting down (carries Retry-After).
export const unavailable503 = new Counter('unavailable_503');
// true for a 5xx other than 503 (e.g. a 500 from a panicking handler) or a transport
// error (status 0); a Rate so that "rate==0" has samples even when nothing went wrong.
export const unexpected5xx = new Rate('unexpected_5xx');

// ---------------------------------------------------------------------------------------
// Message generator: short, realistic chatbot traffic (user questions and bot replies).

const GREETINGS = ['Hi', 'Hello', 'Hey', 'Good morning', 'Good evening', 'Hi there', 'Bonjour', 'Hola'];
const USER_LINES = [
  'I can\'t log in to my account since this morning',
  'where is my order? it was supposed to arrive yesterday',
  'how do I change the delivery address',
  'can I get a refund for order #{n}?',
  'the app keeps crashing when I open the settings page',
  'what are your opening hours on Sunday',
  'I was charged twice for the same subscription',
  'do you ship to Canada?',
  'my password reset email never came',
  'is the blue one still in stock in size M',
  'I want to cancel my plan',
  'thanks, that fixed it!',
  'this is the third time I ask, nobody answers',
  'can I talk to a human please',
  'how long does the warranty last',
  'the tracking number {n} says delivered but I got nothing',
  'ok',
  'great service, thank you so much',
  'why is my bill higher this month?',
  'can you send me the invoice for last month',
];
const BOT_LINES = [
  'I\'m sorry to hear that. Could you tell me the email address on your account?',
  'Your order #{n} is on its way and should arrive within 2 business days.',
  'You can change your address under Settings > Delivery.',
  'I have opened ticket {n} for you; an agent will reply within 24 hours.',
  'Our stores are open from 10:00 to 18:00 on Sundays.',
  'Refunds are usually processed within 5-7 business days.',
  'Yes, we ship to Canada. Shipping takes 5 to 10 days.',
  'I\'ve sent a new reset link. Please check your spam folder too.',
  'Is there anything else I can help you with?',
  'Let me transfer you to one of our agents.',
];
const CLOSERS = ['', '', '', ' Thanks.', ' Please help.', ' :)', ' ASAP', '?', '!!', ' thx'];

function pick(a) {
  return a[Math.floor(Math.random() * a.length)];
}

function fill(s) {
  return s.replace('{n}', String(100000 + Math.floor(Math.random() * 900000)));
}

export function chatText() {
  const r = Math.random();
  if (r < 0.1) return pick(GREETINGS);
  if (r < 0.35) return fill(pick(BOT_LINES));
  if (r < 0.5) return `${pick(GREETINGS)}, ${fill(pick(USER_LINES))}${pick(CLOSERS)}`;
  return fill(pick(USER_LINES)) + pick(CLOSERS);
}

// Per-VU state: module-level variables live in the VU's own JS runtime.
let conversation = 0;
let turnsLeft = 0;

export function message() {
  if (turnsLeft <= 0) {
    conversation += 1;
    turnsLeft = 2 + Math.floor(Math.random() * 10);
  }
  turnsLeft -= 1;
  const msg = {
    message_id: crypto.randomUUID(),
    bot_id: `bot-${__VU}`,
    conversation_id: `conv-${__VU}-${conversation}`,
    user_id: `user-${__VU}-${conversation}`,
    text: chatText(),
    sent_at: new Date().toISOString(),
  };
  if (Math.random() < 0.2) msg.metadata = { channel: pick(['web', 'whatsapp', 'slack']), locale: 'en-US' };
  return msg;
}

// ---------------------------------------------------------------------------------------
// The request

const HEADERS = { 'Content-Type': 'application/json' };
const TIMEOUT = envStr('TIMEOUT', '10s');
if (__ENV.API_KEY) HEADERS.Authorization = `Bearer ${__ENV.API_KEY}`;

// POST one message; `tags` are added to the request's metrics (e.g. {band: "5000"}).
// Returns the response.
export function post(msg, tags) {
  const res = http.post(MESSAGES_URL, JSON.stringify(msg || message()), {
    headers: HEADERS,
    timeout: TIMEOUT,
    tags: Object.assign({ name: 'POST /v1/messages' }, tags || {}),
  });
  const status = String(res.status);
  responses.add(1, Object.assign({ status }, tags || {}));
  if (res.status === 429) rejected429.add(1, tags || {});
  if (res.status === 503) unavailable503.add(1, tags || {});
  unexpected5xx.add(res.status === 0 || (res.status >= 500 && res.status !== 503));

  check(res, { 'status is 202 or 429': (r) => r.status === 202 || r.status === 429 });
  if (res.status === 429 || res.status === 503) {
    check(res, { 'retry-after present': (r) => !!r.headers['Retry-After'] });
  }
  return res;
}

// ---------------------------------------------------------------------------------------
// Options shared by the scripts

// 429 is deliberate back-pressure (SPEC: "no errors but deliberate 429s"): with this
// callback http_req_failed and the {expected_response:true} latency only see 202 and 429
// as the expected outcome. Call it in the init context of each script.
export function expect202or429() {
  http.setResponseCallback(http.expectedStatuses(202, 429));
}

export const baseOptions = {
  // Bodies are not read by the scripts; discarding them saves the generator's CPU.
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'p(99.9)', 'max'],
  // Keep tag cardinality low: no per-URL or per-VU series.
  systemTags: ['status', 'method', 'name', 'scenario', 'expected_response', 'error_code', 'check'],
};

// Thresholds of the steady and soak runs, matching SPEC "Targets".
export function steadyThresholds(totalRequests) {
  return {
    // P99 ingestion latency (request -> 202) under 50 ms. 429s are "expected" too but
    // are answered without a Kafka round trip, so they only make this easier to hold;
    // the 202-only figure is printed as http_req_duration{status:202}.
    'http_req_duration{expected_response:true}': ['p(99)<50'],
    'http_req_duration{status:202}': ['p(99)<50'],
    // "No errors but deliberate 429s": anything but 202/429 (and transport errors) < 1 %.
    http_req_failed: ['rate<0.01'],
    'checks{check:status is 202 or 429}': ['rate>0.99'],
    unexpected_5xx: ['rate==0'],
    // The generator must really have offered the rate: at most 1 % of iterations dropped
    // for want of a free VU (raise VUS/MAX_VUS otherwise).
    dropped_iterations: [`count<=${Math.max(1, Math.floor(totalRequests * 0.01))}`],
    // Shown in the summary; no limit on deliberate 429s.
    rejected_429: ['count>=0'],
  };
}
