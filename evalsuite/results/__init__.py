"""What a run leaves on disk: the results directory, its encoding, the response cache,
resuming, the end-of-run summary."""
