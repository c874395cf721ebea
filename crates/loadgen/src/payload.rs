//! What the generator sends: realistic chat messages as the ingest API's JSON.
//!
//! The server's cost depends on what it receives (moderation scans the text,
//! the NLP stage analyses it, Postgres indexes it), so the bodies look like a
//! chatbot's traffic: short, varied lines, a stable `bot_id` per connection, a
//! conversation that changes every few messages, and a `message_id` chosen here
//! so the end-to-end check can find each accepted message in Postgres. `sent_at`
//! is the request's *intended* send time, the same origin as the latency; a
//! chosen share of messages goes without it, as many bots send, and the server
//! then uses the time it received them.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

/// Short chat lines of the kind a support or companion bot relays: questions,
/// complaints, thanks, small talk, a few typos and emoji, a few words the
/// moderation lists may catch. Picked per message by a hash of its index.
const CHAT_LINES: &[&str] = &[
    "hi, is anyone there?",
    "I can't log in to my account since this morning",
    "thanks, that fixed it!",
    "what are your opening hours on sunday?",
    "my order #48213 still hasn't arrived",
    "can I change the delivery address?",
    "this is the third time I'm asking, please help",
    "great service, really happy with it 😀",
    "how do I reset my password",
    "the app keeps crashing when I open settings",
    "do you ship to Canada?",
    "I want a refund, this product is garbage",
    "ok",
    "no that's not what I meant",
    "could you send me the invoice again please",
    "hello! quick question about pricing",
    "is there a student discount?",
    "the checkout page shows an error 502",
    "why was I charged twice??",
    "love the new update, the dark mode looks amazing",
    "wrong size, can I exchange it for a medium?",
    "where can I find the user manual",
    "your bot is useless, let me talk to a human",
    "good morning ☀️",
    "I'd like to cancel my subscription",
    "when will the blue one be back in stock?",
    "the tracking number doesn't work",
    "perfect, have a nice day",
    "can you recommend something for a 5 year old?",
    "this is ridiculous, I've been waiting for two weeks",
    "does it work with android 14?",
    "sorry, typo: I meant tuesday not thursday",
    "what's the difference between the basic and pro plan",
    "my card was declined but the money left my account",
    "brilliant, thank you so much",
    "is the store on main street open today",
    "I got a damaged item, photos attached",
    "how long does a refund usually take",
    "hmm still not working after the restart",
    "you guys are awesome",
    "can I pay with paypal",
    "the password reset email never arrives",
    "what a scam, never ordering again",
    "do you have gift cards?",
    "merci beaucoup, très bon service",
    "gracias, todo bien",
    "need help with my booking for 3 people on friday",
    "the discount code SPRING10 isn't accepted",
];

/// Messages in one conversation before the generator starts a new one.
const MESSAGES_PER_CONVERSATION: u64 = 20;

/// Distinct bot ids spread over the connections: `bots` ids over `connections`
/// connections, each connection cycling through its own share.
#[derive(Debug, Clone, Copy)]
pub struct BotPlan {
    bots: u32,
    connections: u32,
}

impl BotPlan {
    /// `bots` and `connections` must be at least 1 (argument validation).
    pub fn new(bots: u32, connections: u32) -> Self {
        BotPlan {
            bots: bots.max(1),
            connections: connections.max(1),
        }
    }

    /// The bot number connection `conn` uses for its `nth` request. With as
    /// many bots as connections this is just `conn`: one bot per connection,
    /// like real chatbots each holding their own keep-alive connection. With
    /// fewer bots, connections share them; with more, each connection rotates
    /// through `conn, conn + C, conn + 2C, ...`.
    pub fn bot_for(&self, conn: u32, nth: u64) -> u32 {
        if self.bots <= self.connections {
            return conn % self.bots;
        }
        let own = (self.bots - conn).div_ceil(self.connections).max(1);
        conn + (nth % u64::from(own)) as u32 * self.connections
    }
}

/// The `bot_id` string of bot number `n`: fixed width so ids sort naturally.
pub fn bot_id(n: u32) -> String {
    format!("loadgen-bot-{n:05}")
}

/// One message's varying parts.
#[derive(Debug, Clone, Copy)]
pub struct MessageSpec {
    /// Globally unique, also the key of the end-to-end lookup.
    pub id: Uuid,
    /// Bot number (see [`bot_id`]).
    pub bot: u32,
    /// Position in the run, used to vary text and conversation.
    pub seq: u64,
    /// Intended send time, written as `sent_at`; `None` leaves the field out.
    pub sent_at: Option<DateTime<Utc>>,
}

/// Appends one message object (no trailing separator) to `out`.
pub fn write_message(out: &mut Vec<u8>, spec: &MessageSpec) {
    let text = chat_text(spec.seq);
    let conversation = spec.seq / MESSAGES_PER_CONVERSATION;
    // Writing into a Vec cannot fail; the text goes through serde_json so any
    // line added later is escaped correctly.
    let _ = write!(
        out,
        "{{\"message_id\":\"{}\",\"bot_id\":\"{}\",\"conversation_id\":\"conv-{:05}-{}\",\"user_id\":\"user-{}\",\"text\":",
        spec.id.hyphenated(),
        bot_id(spec.bot),
        spec.bot,
        conversation,
        mix(spec.seq / MESSAGES_PER_CONVERSATION) % 100_000,
    );
    let _ = serde_json::to_writer(&mut *out, &text);
    if let Some(sent_at) = spec.sent_at {
        let sent_at = sent_at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let _ = write!(out, ",\"sent_at\":\"{sent_at}\"");
    }
    out.push(b'}');
}

/// Appends a batch body, a JSON array of the messages, to `out`.
pub fn write_batch(out: &mut Vec<u8>, specs: &[MessageSpec]) {
    out.push(b'[');
    for (i, spec) in specs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_message(out, spec);
    }
    out.push(b']');
}

/// The text of message `seq`: one line, sometimes two joined, so lengths vary
/// the way a real conversation's do.
pub fn chat_text(seq: u64) -> String {
    let h = mix(seq);
    let first = CHAT_LINES[(h % CHAT_LINES.len() as u64) as usize];
    if h >> 60 == 0 {
        let second = CHAT_LINES[((h >> 20) % CHAT_LINES.len() as u64) as usize];
        format!("{first} {second}")
    } else {
        first.to_owned()
    }
}

/// Whether item `n` falls in a share of `ratio` (0 to 1) of all items: a fixed
/// choice by hash, so the same share is picked whatever the timing, and
/// `salt` keeps two shares drawn over the same items independent.
pub fn in_share(n: u64, salt: u64, ratio: f64) -> bool {
    fraction(n, salt) < ratio
}

/// A fraction in [0, 1) fixed by `n` and `salt`, spread evenly over items.
pub fn fraction(n: u64, salt: u64) -> f64 {
    // The top 53 bits: exact in an f64.
    (mix(n ^ salt) >> 11) as f64 / (1u64 << 53) as f64
}

/// splitmix64: a cheap, well-spread hash so consecutive indexes pick unrelated
/// lines without a random number generator.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn spec(seq: u64) -> MessageSpec {
        MessageSpec {
            id: Uuid::now_v7(),
            bot: 7,
            seq,
            sent_at: DateTime::from_timestamp_micros(1_767_225_600_123_456),
        }
    }

    #[test]
    fn a_message_is_valid_json_with_the_api_fields() {
        let s = spec(3);
        let mut out = Vec::new();
        write_message(&mut out, &s);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v["message_id"], s.id.to_string());
        assert_eq!(v["bot_id"], "loadgen-bot-00007");
        assert_eq!(v["sent_at"], "2026-01-01T00:00:00.123456Z");
        let text = v["text"].as_str().expect("text");
        assert!(!text.is_empty() && text.chars().count() <= 4096);
    }

    #[test]
    fn a_message_without_sent_at_leaves_the_field_out() {
        let s = MessageSpec {
            sent_at: None,
            ..spec(4)
        };
        let mut out = Vec::new();
        write_message(&mut out, &s);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v["message_id"], s.id.to_string());
        assert!(v.get("sent_at").is_none(), "{v}");
    }

    #[test]
    fn a_share_picks_about_its_ratio_and_salts_pick_apart() {
        let picked = |salt, ratio| (0..10_000).filter(|n| in_share(*n, salt, ratio)).count();
        assert_eq!(picked(1, 0.0), 0);
        assert_eq!(picked(1, 1.0), 10_000);
        let half = picked(1, 0.5);
        assert!((4_800..=5_200).contains(&half), "{half}");
        let tenth = picked(1, 0.1);
        assert!((900..=1_100).contains(&tenth), "{tenth}");
        let both = (0..10_000)
            .filter(|n| in_share(*n, 1, 0.5) && in_share(*n, 2, 0.5))
            .count();
        assert!((2_300..=2_700).contains(&both), "{both}");
    }

    #[test]
    fn a_batch_is_a_json_array_of_messages() {
        let specs: Vec<_> = (0..5).map(spec).collect();
        let mut out = Vec::new();
        write_batch(&mut out, &specs);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v.as_array().map(Vec::len), Some(5));
    }

    #[test]
    fn texts_vary() {
        let distinct: HashSet<String> = (0..500).map(chat_text).collect();
        assert!(
            distinct.len() > 40,
            "only {} distinct texts",
            distinct.len()
        );
    }

    #[test]
    fn one_bot_per_connection_by_default() {
        let plan = BotPlan::new(100, 100);
        let bots: HashSet<u32> = (0..100).map(|c| plan.bot_for(c, 9)).collect();
        assert_eq!(bots.len(), 100);
        assert_eq!(plan.bot_for(42, 0), plan.bot_for(42, 1000));
    }

    #[test]
    fn more_bots_than_connections_rotate_within_each_connection() {
        let plan = BotPlan::new(250, 100);
        let mut all = HashSet::new();
        for c in 0..100 {
            for n in 0..10 {
                let b = plan.bot_for(c, n);
                assert!(b < 250 && b % 100 == c, "conn {c} got bot {b}");
                all.insert(b);
            }
        }
        assert_eq!(all.len(), 250);
    }

    #[test]
    fn fewer_bots_than_connections_are_shared() {
        let plan = BotPlan::new(10, 100);
        let bots: HashSet<u32> = (0..100).map(|c| plan.bot_for(c, 0)).collect();
        assert_eq!(bots.len(), 10);
    }
}
