//! Request and event ids: UUIDv7 (a millisecond timestamp, then 74 random bits), made without a lock or a
//! system call. `uuid::Uuid::now_v7` takes a process-wide lock (to order every id of the process) and
//! asks the kernel for its random bits on every call; a request needs two ids, so that was two
//! `getrandom` calls and two turns of a contended lock per request. Ids only need to be unique (the
//! write-ahead log and the stores deduplicate by them; nothing orders by them): the random bits come
//! from a per-thread generator seeded from the OS once per thread.

use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// A new UUIDv7.
pub fn new_v7() -> Uuid {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    random[8..].copy_from_slice(&fastrand::u16(..).to_le_bytes());
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

/// A new UUIDv7 in its hyphenated lower-case text form.
pub fn new_v7_string() -> String {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    new_v7().hyphenated().encode_lower(&mut buf).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_version_7_with_the_current_time_and_unique() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let ids: Vec<String> = (0..10_000).map(|_| new_v7_string()).collect();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        for id in &ids {
            let u = Uuid::parse_str(id).unwrap();
            assert_eq!(u.get_version_num(), 7, "{id}");
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122, "{id}");
            // The first 48 bits are the Unix time in milliseconds.
            let ms = (u.as_u128() >> 80) as u64;
            assert!((before..=after).contains(&ms), "{id}: {ms} not in {before}..={after}");
            assert_eq!(id, &u.hyphenated().to_string());
        }
    }

    #[test]
    fn threads_do_not_repeat_each_others_ids() {
        let per_thread: Vec<Vec<Uuid>> = (0..4)
            .map(|_| std::thread::spawn(|| (0..5_000).map(|_| new_v7()).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let all: HashSet<Uuid> = per_thread.iter().flatten().copied().collect();
        assert_eq!(all.len(), 20_000);
    }
}
