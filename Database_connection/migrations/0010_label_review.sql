-- Optional quarantine of anonymous labels (LABEL_QUARANTINE): a label from /feedback or
-- /upload may wait for an operator's approval. Only approved labels are trained on
-- (repository.iter_labelled_images). Existing labels, and every label while the quarantine
-- is off, are approved. Numbered 0010 to stay clear of the other branches' next migrations.
ALTER TABLE labels ADD COLUMN review text NOT NULL DEFAULT 'approved'
    CHECK (review IN ('pending', 'approved', 'rejected'));
ALTER TABLE labels ADD COLUMN reviewed_at timestamptz;
CREATE INDEX labels_pending_review_idx ON labels (updated_at) WHERE review = 'pending';
