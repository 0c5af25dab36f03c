"""Answer extraction and scoring functions shared by task plugins: pure functions
with the field's names (``strict_match``, ``pass_at_k``, ``schema_valid`` ...)."""
