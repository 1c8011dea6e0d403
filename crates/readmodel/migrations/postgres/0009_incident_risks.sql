-- The register risks each incident realised (RiskLinked), on its row, for the incident card
-- and the count of incidents per register risk. Rows projected before this migration had no
-- such event, so the default is what a rebuild would give them. `risks` may be null: an
-- older `semsd` still running during an upgrade writes its rows without it (read as none).
ALTER TABLE incidents ADD COLUMN risks JSONB DEFAULT '[]';
