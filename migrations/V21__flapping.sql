-- sitewatch schema, version 21: flap damping.
--
-- A site whose state changes `incidents.flap_changes` times within
-- `incidents.flap_window` is flapping: one notification (`flapping`) says
-- so, none follow while it flaps, and one says it settled (`settled` when
-- it settled down, `resolved` when it settled up).

-- The slot times of the site's latest state changes (at most
-- `flap_changes`, none older than `flap_window` before the newest).
ALTER TABLE site_state ADD COLUMN changes timestamptz[] NOT NULL DEFAULT '{}';

-- Set while the incident's site flaps: since when. `flapped` stays true
-- once it has, for the record.
ALTER TABLE incidents ADD COLUMN flapping_since timestamptz;
ALTER TABLE incidents ADD COLUMN flapped boolean NOT NULL DEFAULT false;

ALTER TABLE alert_outbox DROP CONSTRAINT alert_outbox_event_check;
ALTER TABLE alert_outbox ADD CONSTRAINT alert_outbox_event_check
    CHECK (event IN ('opened', 'resolved', 'reminder', 'flapping', 'settled'));

-- The evaluator looks for flapping incidents every pass.
CREATE INDEX incidents_flapping ON incidents (id)
    WHERE flapping_since IS NOT NULL AND resolved_at IS NULL;

-- Who an incident's opening went to is read at every resolve, reminder and
-- flap, and every pass looks for open incidents with no opening yet: by
-- incident, not by a scan of the whole outbox.
CREATE INDEX alert_outbox_incident ON alert_outbox (incident_id, event, channel);
