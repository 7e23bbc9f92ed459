-- sitewatch schema, version 13: the kind of check a row is, named by its
-- url's scheme: 'http' (http:// and https://) or 'tcp' (tcp://host:port).
-- Rows written before are HTTP checks. A constant default: metadata-only,
-- no table rewrite.
ALTER TABLE check_results ADD COLUMN kind text NOT NULL DEFAULT 'http';
