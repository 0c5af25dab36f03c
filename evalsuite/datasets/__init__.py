"""Generated datasets: the seeded generators that tasks draw their samples from.

A task module (``tasks/``) declares prompts, extractors, scoring and metrics; the
material it is built from, when it is generated rather than read from a file,
lives here so that it can be tested, documented and reused on its own:

- :mod:`evalsuite.datasets.haystack`: long-context prompts fitted to a token length
  (filler text with needles at chosen depths);
- :mod:`evalsuite.datasets.json_cases`: texts to extract JSON from, with schemas
  and gold objects;
- :mod:`evalsuite.datasets.equations`: equation problems with exact solution sets.
"""
