"""Where the third-party test data lives (TS.48 profiles, SGP.26 PKI, vectors): ``testdata/``.

The directory sits at the repository root beside the packages (kinsim is installed editable);
``KINSIM_TESTDATA`` points elsewhere when needed.
"""

from __future__ import annotations

import os
from pathlib import Path


def testdata_dir() -> Path:
    override = os.environ.get("KINSIM_TESTDATA")
    return Path(override) if override else Path(__file__).resolve().parents[1] / "testdata"


testdata_dir.__test__ = False  # pytest would collect it as a test where a test module imports it


def ts48_profile(name: str = "TS48_V7.0_eSIM_GTP_SAIP2.3_NoBERTLV.der") -> bytes:
    """A GSMA TS.48 v7 generic test profile (raw SAIP, concatenated ProfileElements)."""
    return (testdata_dir() / "ts48" / "v7" / name).read_bytes()
