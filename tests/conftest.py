"""Test-session settings shared by every test module."""

import os
import sys
from pathlib import Path

# One BLAS thread, as CI runs (.ci/run): threaded BLAS can change the last bits of results
# between runs, and several tests compare generated files bit for bit.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# tests/campaign_builder.py is a helper module shared by several test files
sys.path.insert(0, str(Path(__file__).parent))


# Every campaign report any test writes through plato_cnn.report.write_json is validated
# against the shipped JSON Schema (plato_cnn/data/report.schema.json) as it is written.
import jsonschema  # noqa: E402
import pytest  # noqa: E402

import plato_cnn.report as _report  # noqa: E402

_VALIDATED: list[str] = []


@pytest.fixture(autouse=True)
def _validate_reports(monkeypatch):
    schema = _report.report_schema()
    original = _report.write_json

    def checked(path, report):
        out = original(path, report)
        if "schema_version" in report:  # a campaign report (not a focus-check summary)
            import json

            jsonschema.validate(json.loads(Path(out).read_text(encoding="utf-8")), schema)
            _VALIDATED.append(str(out))
        return out

    monkeypatch.setattr(_report, "write_json", checked)
    yield
