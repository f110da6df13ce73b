-- Settings of the entity engine; an existing value is never overwritten on upgrade.
INSERT INTO pgretention.setting (name, value, description) VALUES
    ('entity_batch_target', '50ms',
     'entity runs: target duration of one batch transaction (row locks are held at most about this long)'),
    ('entity_batch_max', '2000', 'entity runs: most rows of a rule handled in one batch transaction'),
    ('entity_max_passes', '16', 'entity runs: passes over a rule''s candidates (one hierarchy level per pass)')
ON CONFLICT (name) DO NOTHING;
