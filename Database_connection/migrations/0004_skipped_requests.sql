-- A retrain request whose training data is identical to the champion's ends as `skipped`,
-- with the reason, without training (src/pipeline.py: has_new_training_data).
ALTER TABLE retrain_requests DROP CONSTRAINT retrain_requests_state_check;
ALTER TABLE retrain_requests ADD CONSTRAINT retrain_requests_state_check
    CHECK (state IN ('pending', 'triggered', 'running', 'succeeded', 'failed', 'superseded', 'skipped'));
ALTER TABLE retrain_requests ADD COLUMN skip_reason text;
