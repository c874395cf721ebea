//! Domain types shared by every stage: parsed once at the edge, trusted inside.

mod failure;
mod fields;
mod message;
mod nlp_status;
mod processed;

pub use failure::FailureCode;
pub use fields::{
    BotId, FieldError, Label, MessageText, Metadata, MAX_BOT_ID_CHARS, MAX_LABEL_CHARS,
    MAX_METADATA_BYTES, MAX_TEXT_CHARS,
};
pub use message::{to_storage_precision, ChatMessage, ContentDigest, MessageId};
pub use nlp_status::NlpStatus;
pub use processed::{NlpDocument, NlpFields, ProcessedMessage, SourcePosition};
