//! A site's check request for one slot: the message the scheduler publishes
//! (and the API and `sitewatch check` build), carrying everything a checker
//! needs so checkers hold no site state. Here, not in `model`, so that the
//! messages do not depend on the config (the config depends on them).

use chrono::{DateTime, Utc};

use super::Site;
use crate::model::{self, CheckRequest, Origin};

impl Site {
    /// The request for `site`'s slot, as check `check_id` (the scheduler's
    /// [`model::CheckIds`], a random id for on-demand checks): everything a
    /// checker needs, so checkers hold no site state.
    pub fn request(&self, check_id: uuid::Uuid, slot: DateTime<Utc>) -> CheckRequest {
        let site = self;
        CheckRequest {
            v: model::CheckKind::of_url(site.url.as_str())
                .map_or(model::SCHEMA_VERSION, model::CheckKind::schema_version),
            check_id,
            site: site.name.clone(),
            origin: Origin::Scheduled,
            scheduled_at: slot,
            // A request older than one interval is superseded by the next slot.
            deadline: slot + chrono::Duration::milliseconds(site.interval.as_millis() as i64),
            url: site.url.to_string(),
            method: site.method.to_string(),
            headers: site
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
                .collect(),
            timeout_ms: site.timeout.as_millis() as u64,
            regex: site.regex.as_ref().map(|r| r.as_str().to_owned()),
            expect_status: site.expect_status.to_string(),
            reuse_connection: site.reuse_connection,
            public_only: false,
            options: site.options.as_deref().cloned(),
            requested_by: None,
            late: false,
        }
    }
}
