"""Test-session settings: shard checks remember their passes in a trust record of this session
(never the user's ~/.cache/videocfr/trusted-shards)."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("VIDEOCFR_TRUST_DIR",
                      tempfile.mkdtemp(prefix="videocfr-trust-"))
