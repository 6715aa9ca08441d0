-- Store an image, its prediction and (at the threshold) a retrain request in ONE round trip.
-- /predict latency is dominated by round trips, not by work; this keeps the transaction
-- server-side. The advisory lock is taken before the insert so prediction ids are handed
-- out in lock order and none can fall between two counting windows.
CREATE FUNCTION record_prediction(
    p_sha256 char(64), p_content bytea, p_format text, p_width integer, p_height integer,
    p_source text, p_original_name text, p_label text, p_confidence real, p_probabilities jsonb,
    p_model_version text, p_latency_ms real, p_threshold integer,
    OUT prediction_id bigint, OUT created_at timestamptz, OUT retrain_request_id bigint,
    OUT predictions_since_retrain integer
) LANGUAGE plpgsql AS $$
DECLARE
    v_count integer;
    v_last bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(72410002);
    INSERT INTO images (sha256, content, format, width, height, size_bytes, source, original_name)
    VALUES (p_sha256, p_content, p_format, p_width, p_height, length(p_content), p_source, p_original_name)
    ON CONFLICT (sha256) DO NOTHING;
    INSERT INTO predictions (image_sha256, label, confidence, probabilities, model_version, latency_ms)
    VALUES (p_sha256, p_label, p_confidence, p_probabilities, p_model_version, p_latency_ms)
    RETURNING id, predictions.created_at INTO prediction_id, created_at;
    SELECT count(*), max(id) INTO v_count, v_last FROM predictions
    WHERE id > (SELECT coalesce(max(last_prediction_id), 0) FROM retrain_requests);
    IF v_count >= p_threshold THEN
        INSERT INTO retrain_requests (last_prediction_id, prediction_count)
        VALUES (v_last, v_count) RETURNING id INTO retrain_request_id;
        v_count := 0;
    END IF;
    predictions_since_retrain := v_count;
END;
$$;
