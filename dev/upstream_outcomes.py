"""A pytest plugin for dev/upstream-suites: writes the outcome of every test
of a run — passed, failed, error, skipped, xfailed, xpassed, as pytest's
own summary counts them — to the JSON file ``$WCFS_UPSTREAM_OUTCOMES``:
``{"passed": [nodeid, ...], ...}``. (JUnit XML cannot tell an xpassed test
from a passed one, nor is its notion of an error pytest's.)"""
import json
import os


def pytest_terminal_summary(terminalreporter):
    out = {}
    for key in ('passed', 'failed', 'error', 'skipped', 'xfailed', 'xpassed'):
        reports = terminalreporter.stats.get(key, [])
        out[key] = sorted({getattr(r, 'nodeid', None) or '?' for r in reports})
    with open(os.environ['WCFS_UPSTREAM_OUTCOMES'], 'w') as f:
        json.dump(out, f, indent=1)
