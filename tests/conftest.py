"""Shared test set-up: the repository root on ``sys.path``, quiet Beam logs."""

from __future__ import annotations

import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

logging.getLogger("apache_beam").setLevel(logging.ERROR)
