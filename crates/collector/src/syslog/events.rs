//! Joining error events that came over syslog in parts.
//!
//! An agent cuts an event larger than one syslog message into parts that carry the
//! event's id and `part="i/n"` (see the agent's syslog transport). Parts may arrive in
//! any order (UDP, relays) and some may never arrive. [`Parts`] keeps the unfinished
//! events, bounded in count and bytes and for at most [`PARTS_TTL_MS`]; an event that
//! is pushed out or expires is counted as incomplete, never silently forgotten.

use std::collections::HashMap;

/// Most parts an event may have (the agent's `MAX_EVENT_PARTS`).
pub(crate) const MAX_PARTS: usize = 256;

/// Most bytes of one joined event (Sentry's event limit, as on `/store/`).
pub(crate) const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Most unfinished events held at once.
const MAX_PENDING: usize = 1_024;

/// Most bytes held over all unfinished events.
const MAX_PENDING_BYTES: usize = 32 * 1024 * 1024;

/// An unfinished event is given up after this long without completing.
pub(crate) const PARTS_TTL_MS: i64 = 60_000;

/// `part="i/n"` → `(i, n)` with `1 ≤ i ≤ n ≤ MAX_PARTS`.
pub(crate) fn parse_part(text: &str) -> Option<(usize, usize)> {
    let (i, n) = text.split_once('/')?;
    let (i, n): (usize, usize) = (i.parse().ok()?, n.parse().ok()?);
    (1..=n).contains(&i).then_some(())?;
    (n <= MAX_PARTS).then_some((i, n))
}

/// Why a part was not taken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PartError {
    #[error("malformed part (want part=\"i/n\", n at most {MAX_PARTS})")]
    Malformed,
    #[error("part count differs from the event's earlier parts")]
    Mismatch,
    #[error("joined event larger than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
}

struct Pending {
    parts: Vec<Option<String>>,
    received: usize,
    bytes: usize,
    first_ms: i64,
}

/// Unfinished events, keyed by project and event id.
#[derive(Default)]
pub(crate) struct Parts {
    pending: HashMap<(u64, String), Pending>,
    bytes: usize,
    /// Events given up (expired, pushed out, or refused mid-way) since the last take.
    incomplete: u64,
}

impl Parts {
    /// Adds one part; returns the whole event's JSON once its last part is in.
    pub(crate) fn add(
        &mut self,
        project_id: u64,
        id: &str,
        part: (usize, usize),
        body: &str,
        now_ms: i64,
    ) -> Result<Option<String>, PartError> {
        let (i, n) = part;
        if i == 0 || i > n || n > MAX_PARTS {
            return Err(PartError::Malformed);
        }
        self.expire(now_ms);
        let key = (project_id, id.to_owned());
        let fresh = !self.pending.contains_key(&key);
        self.make_room(body.len(), fresh, &key);
        if fresh {
            self.pending.insert(
                key.clone(),
                Pending {
                    parts: vec![None; n],
                    received: 0,
                    bytes: 0,
                    first_ms: now_ms,
                },
            );
        }
        let Some(pending) = self.pending.get_mut(&key) else {
            return Err(PartError::Malformed);
        };
        if pending.parts.len() != n {
            self.give_up(&key);
            return Err(PartError::Mismatch);
        }
        if pending.parts[i - 1].is_none() {
            if pending.bytes + body.len() > MAX_EVENT_BYTES {
                self.give_up(&key);
                return Err(PartError::TooLarge);
            }
            pending.parts[i - 1] = Some(body.to_owned());
            pending.received += 1;
            pending.bytes += body.len();
            self.bytes += body.len();
        }
        if pending.received < n {
            return Ok(None);
        }
        let Some(done) = self.pending.remove(&key) else {
            return Ok(None);
        };
        self.bytes -= done.bytes;
        Ok(Some(done.parts.into_iter().flatten().collect()))
    }

    /// Events given up since the last call.
    pub(crate) fn take_incomplete(&mut self) -> u64 {
        std::mem::take(&mut self.incomplete)
    }

    /// Gives up events older than the TTL.
    pub(crate) fn expire(&mut self, now_ms: i64) {
        let before = self.pending.len();
        let mut freed = 0;
        self.pending.retain(|_, pending| {
            let keep = now_ms - pending.first_ms < PARTS_TTL_MS;
            if !keep {
                freed += pending.bytes;
            }
            keep
        });
        self.bytes -= freed;
        self.incomplete += (before - self.pending.len()) as u64;
    }

    /// Pushes out the oldest other events until `bytes` more (and, when `fresh`, one
    /// more event) fit.
    fn make_room(&mut self, bytes: usize, fresh: bool, keep: &(u64, String)) {
        while self.pending.len() >= MAX_PENDING + usize::from(!fresh)
            || self.bytes + bytes > MAX_PENDING_BYTES
        {
            let oldest = self
                .pending
                .iter()
                .filter(|(key, _)| *key != keep)
                .min_by_key(|(_, pending)| pending.first_ms)
                .map(|(key, _)| key.clone());
            match oldest {
                Some(key) => self.give_up(&key),
                None => break,
            }
        }
    }

    fn give_up(&mut self, key: &(u64, String)) {
        if let Some(pending) = self.pending.remove(key) {
            self.bytes -= pending.bytes;
            self.incomplete += 1;
        }
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        (self.pending.len(), self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_in_any_order_join_once_all_are_in() {
        let mut parts = Parts::default();
        assert_eq!(parts.add(1, "e", (3, 3), "c]", 0), Ok(None));
        assert_eq!(parts.add(1, "e", (1, 3), "[a,", 1), Ok(None));
        // Same id in another project is another event.
        assert_eq!(parts.add(2, "e", (2, 3), "X", 1), Ok(None));
        // A repeated part changes nothing.
        assert_eq!(parts.add(1, "e", (1, 3), "[zz", 2), Ok(None));
        assert_eq!(
            parts.add(1, "e", (2, 3), "b,", 3),
            Ok(Some("[a,b,c]".to_owned()))
        );
        assert_eq!(parts.held(), (1, 1));
        assert_eq!(parts.take_incomplete(), 0);
    }

    #[test]
    fn unfinished_events_expire_and_are_counted() {
        let mut parts = Parts::default();
        parts.add(1, "a", (1, 2), "x", 0).unwrap();
        parts.add(1, "b", (1, 2), "y", 30_000).unwrap();
        parts.expire(PARTS_TTL_MS + 1);
        assert_eq!(parts.held(), (1, 1));
        assert_eq!(parts.take_incomplete(), 1);
        // The late part of the expired event starts a new, unfinished one.
        assert_eq!(parts.add(1, "a", (2, 2), "z", PARTS_TTL_MS + 2), Ok(None));
    }

    #[test]
    fn bounds_hold_and_what_they_push_out_is_counted() {
        let mut parts = Parts::default();
        for k in 0..MAX_PENDING + 10 {
            parts.add(1, &k.to_string(), (1, 2), "x", k as i64).unwrap();
        }
        assert_eq!(parts.held().0, MAX_PENDING);
        assert_eq!(parts.take_incomplete(), 10);
        let big = "y".repeat(MAX_EVENT_BYTES / 2 + 1);
        parts.add(9, "big", (1, 3), &big, 5_000).unwrap();
        assert_eq!(
            parts.add(9, "big", (2, 3), &big, 5_000),
            Err(PartError::TooLarge)
        );
        // One more pushed out to make room for "big", and "big" itself refused.
        assert_eq!(parts.take_incomplete(), 2);
        assert_eq!(parts.held().0, MAX_PENDING - 1);
        parts.add(9, "m", (1, 2), "x", 5_000).unwrap();
        assert_eq!(
            parts.add(9, "m", (2, 3), "x", 5_000),
            Err(PartError::Mismatch)
        );
        assert_eq!(
            parts.add(9, "m", (4, 3), "x", 5_000),
            Err(PartError::Malformed)
        );
    }

    #[test]
    fn part_numbers_parse_strictly() {
        assert_eq!(parse_part("2/5"), Some((2, 5)));
        for bad in ["0/5", "6/5", "1/257", "x/2", "1/", "1-2", ""] {
            assert_eq!(parse_part(bad), None, "{bad}");
        }
    }
}
