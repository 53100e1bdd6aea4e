//! The reference speaker agent (`loaxa agent`): what a cluster's small Linux board runs to
//! register with the controller, receive its RTP stream, play it and report back.

pub mod jitter;
pub mod output;
pub mod run;
pub mod simulate;
pub mod stats;
pub mod wav;
