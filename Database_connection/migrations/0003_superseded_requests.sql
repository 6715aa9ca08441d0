-- A retrain uses every labelled image, so requests that pile up while a run is active are
-- coalesced: the newest is delivered, older pending ones are marked superseded by it.
ALTER TABLE retrain_requests DROP CONSTRAINT retrain_requests_state_check;
ALTER TABLE retrain_requests ADD CONSTRAINT retrain_requests_state_check
    CHECK (state IN ('pending', 'triggered', 'running', 'succeeded', 'failed', 'superseded'));
ALTER TABLE retrain_requests ADD COLUMN superseded_by bigint REFERENCES retrain_requests (id);
