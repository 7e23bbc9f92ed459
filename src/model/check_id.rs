//! Check ids. A scheduled check's id is derived from its site and slot, so a
//! re-emitted slot is the same check and persists as the same row.
//!
//! Since migration V17 the id leads with its slot's time: a UUIDv8 (RFC 9562
//! §5.8) laid out like a UUIDv7 (§5.7), 48 bits of the slot's Unix
//! milliseconds, then 74 bits of the SHA-1 name hash a UUIDv5 of site and
//! slot would carry. Postgres orders `uuid` bytewise, so the primary key
//! `(check_id, scheduled_at)` grows at its right edge like the time it
//! holds. With the random-looking UUIDv5 alone every insert landed on a
//! random leaf page of an index that grows all day, and after each
//! checkpoint the first change to each page writes a full-page image: WAL
//! per row tripled over an hour at 27,000 sites every 5 s (BENCHMARKS.md).
//!
//! Rows already stored keep their UUIDv5 ids. Slots before the store's
//! cutover ([`CheckIds::time_leading_from`], set by V17 to an hour after the
//! upgrade when results exist) keep getting them, so a slot published by an
//! older build and recorded by this one (a placeholder, a redelivery) is
//! still one row.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Namespace of the name hash in scheduled check ids.
const CHECK_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5174_e3a7_c8d4_4b7e_9a1f_0c2d_6e8b_4f31);

/// Which id scheme a slot's check gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckIds {
    /// Slots at or after this instant get time-leading ids; earlier ones the
    /// UUIDv5 of builds before V17.
    pub time_leading_from: DateTime<Utc>,
}

impl Default for CheckIds {
    fn default() -> Self {
        Self::TIME_LEADING
    }
}

impl CheckIds {
    /// Every slot gets a time-leading id (a store with no older results).
    pub const TIME_LEADING: CheckIds = CheckIds {
        time_leading_from: DateTime::<Utc>::UNIX_EPOCH,
    };

    /// The id of the scheduled check of `site` at `slot`: the same pair
    /// always gives the same id.
    pub fn scheduled(&self, site: &str, slot: DateTime<Utc>) -> Uuid {
        let hashed = legacy_check_id(site, slot);
        if slot < self.time_leading_from {
            return hashed;
        }
        // Slots are never before 1970; 48 bits of milliseconds last until
        // the year 10889.
        let ms = slot.timestamp_millis().clamp(0, (1 << 48) - 1) as u64;
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        bytes[6..].copy_from_slice(&hashed.as_bytes()[..10]);
        // Sets the version (8) and variant bits over 6 of the hash's bits.
        Uuid::new_v8(bytes)
    }
}

/// The lowest and the highest time-leading id a slot in `[from, to]` can
/// have (by milliseconds, the ids' first 48 bits), so a time window's rows
/// are a range of the primary key `(check_id, scheduled_at)`. Rows whose
/// ids are not time-leading (slots before `time_leading_from`, on-demand
/// checks) are not in it.
pub fn time_leading_range(from: DateTime<Utc>, to: DateTime<Utc>) -> (Uuid, Uuid) {
    let bound = |at: DateTime<Utc>, rest: u8| {
        let ms = at.timestamp_millis().clamp(0, (1 << 48) - 1) as u64;
        let mut bytes = [rest; 16];
        bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        Uuid::from_bytes(bytes)
    };
    (bound(from, 0), bound(to, 0xff))
}

/// The UUIDv5 of `site` and `slot`, the scheduled check id before V17.
fn legacy_check_id(site: &str, slot: DateTime<Utc>) -> Uuid {
    let name = format!("{site}\n{}", slot.timestamp_millis());
    Uuid::new_v5(&CHECK_ID_NAMESPACE, name.as_bytes())
}

/// The slot time a time-leading scheduled check id carries (milliseconds),
/// so a lookup by id can go to its partition; `None` for other ids (UUIDv5
/// of older slots, UUIDv4 of on-demand checks).
pub fn slot_of(id: Uuid) -> Option<DateTime<Utc>> {
    if id.get_version_num() != 8 {
        return None;
    }
    let b = id.as_bytes();
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(&b[..6]);
    DateTime::from_timestamp_millis(i64::from_be_bytes(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_windows_ids_fall_in_its_range_and_no_other_slots_do() {
        let ids = CheckIds::TIME_LEADING;
        let (from, to) = (
            at("2026-12-02T03:00:00.000Z"),
            at("2026-12-02T03:00:01.000Z"),
        );
        let (lo, hi) = time_leading_range(from, to);
        for site in ["a", "b", "zz"] {
            for slot in [from, at("2026-12-02T03:00:00.500Z"), to] {
                let id = ids.scheduled(site, slot);
                assert!(lo <= id && id <= hi, "{site} {slot}");
            }
            for slot in [
                at("2026-12-02T02:59:59.999Z"),
                at("2026-12-02T03:00:01.001Z"),
            ] {
                let id = ids.scheduled(site, slot);
                assert!(id < lo || id > hi, "{site} {slot}");
            }
        }
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn an_id_depends_only_on_site_and_slot() {
        let ids = CheckIds::TIME_LEADING;
        let slot = at("2026-01-01T00:00:05Z");
        assert_eq!(ids.scheduled("a", slot), ids.scheduled("a", slot));
        assert_ne!(ids.scheduled("a", slot), ids.scheduled("b", slot));
        let later = slot + chrono::Duration::milliseconds(1);
        assert_ne!(ids.scheduled("a", slot), ids.scheduled("a", later));
    }

    #[test]
    fn ids_sort_as_their_slots_and_carry_them() {
        let ids = CheckIds::TIME_LEADING;
        let t = at("2026-12-01T12:00:00.123Z");
        let (a, b) = (
            ids.scheduled("zzz", t),
            ids.scheduled("aaa", t + chrono::Duration::milliseconds(1)),
        );
        assert!(a < b, "{a} sorts before {b}");
        assert_eq!(a.get_version_num(), 8);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(slot_of(a), Some(t));
        // Bytewise order is what Postgres compares; the string shows it.
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn slots_before_the_cutover_keep_the_ids_older_builds_gave_them() {
        let cut = at("2026-12-01T13:00:00Z");
        let ids = CheckIds {
            time_leading_from: cut,
        };
        let before = cut - chrono::Duration::seconds(5);
        // The value builds before V17 computed for this pair.
        let v5 = Uuid::new_v5(
            &CHECK_ID_NAMESPACE,
            format!("a\n{}", before.timestamp_millis()).as_bytes(),
        );
        assert_eq!(ids.scheduled("a", before), v5);
        assert_eq!(slot_of(v5), None);
        assert_eq!(ids.scheduled("a", cut).get_version_num(), 8);
        assert_eq!(slot_of(Uuid::new_v4()), None);
    }
}
