-- Incidents whose crisis-escalation request is pending: the repair sweep looks for those whose
-- handover a stopped call left unstarted (services/semsd/src/repair.rs) every few seconds. They
-- are few among all incidents, so the index holds only them.
CREATE INDEX incidents_escalation_requested ON incidents (updated_at DESC, incident_id DESC)
    WHERE crisis_escalation_requested;
