-- sitewatch schema, version 8: on-demand results live under their own key,
-- `on-demand:<host>`, which no configured site's name can equal (names
-- hold no ':'). Before, they were stored under the URL's bare host name, so
-- an on-demand check of a host that was also a site's name fed that site's
-- status and uptime. Earlier on-demand rows move to the new key; rollups
-- written before this version may still count them.
UPDATE check_results SET site = 'on-demand:' || site
WHERE origin = 'on_demand' AND site NOT LIKE 'on-demand:%';
