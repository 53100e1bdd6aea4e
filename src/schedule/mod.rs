//! The broadcast calendar (pure): cron rules with POSIX semantics, occurrences in a
//! window, quiet hours.
