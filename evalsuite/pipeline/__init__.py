"""The run pipeline: configuration read, tasks loaded, requests streamed to the engine, samples
scored and written; suites; the per-sample guard; stopping cleanly."""
