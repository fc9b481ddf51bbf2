"""Hypothesis profiles: the same examples on every CI run, more random ones on demand.

- ``ci`` (the default): derandomized, so a run's outcome depends on the code alone, not on the
  run, the machine or a local example database; no deadline and no too-slow health check, so a
  loaded machine cannot fail a test; a failure prints the blob that reproduces it.
- ``dev``: random examples (hypothesis' usual behaviour, with the local example database).
- ``long``: random and ten times the default number of examples, for hunting bugs:
  ``HYPOTHESIS_PROFILE=long python -m pytest tests/test_parser_fuzz.py``.

A test that sets its own count writes ``max_examples=scaled_examples(n)`` (``strategies``): n
under ``ci`` and ``dev``, ten times n under ``long``.
"""

import os

from hypothesis import HealthCheck, settings

_UNTIMED = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}

settings.register_profile("ci", derandomize=True, database=None, print_blob=True, max_examples=100,
                          **_UNTIMED)
settings.register_profile("dev", print_blob=True, **_UNTIMED)
settings.register_profile("long", print_blob=True, max_examples=1000, **_UNTIMED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
