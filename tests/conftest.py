"""Test-session settings shared by every test module."""

import os
import sys
from pathlib import Path

# One BLAS thread, as CI runs (.ci/run): threaded BLAS can change the last bits of results
# between runs, and several tests compare generated files bit for bit.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# tests/campaign_builder.py is a helper module shared by several test files
sys.path.insert(0, str(Path(__file__).parent))
