-- Notifications to authorities (AuthorityNotified) on each incident's row, and the time of the
-- first: regulatory clocks (NIS2, GDPR) run from detection to it. Rows projected before this
-- migration had no such event to show, so the defaults are what a rebuild would give them.
-- `notifications` may be null: an older `semsd` still running during an upgrade writes its
-- rows without it (`jsonb_populate_recordset` makes a missing key null), read as none.
ALTER TABLE incidents
    ADD COLUMN notifications JSONB DEFAULT '[]',
    ADD COLUMN authority_notified_at TIMESTAMPTZ;
