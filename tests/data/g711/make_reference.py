"""Write tests/data/g711/reference.json from CPython's ``audioop`` (needs Python <= 3.12).

``audioop`` (the Sun/CCITT g711.c) is an implementation independent of
controller.audio.g711. Its decoders agree with ITU-T G.191 exactly; its
A-law encoder too. Its u-law encoder rounds negative inputs by the two's
complement where G.191 uses the one's complement, so the u-law encoder
digest is recorded as audioop computes it, and the test derives the same
table from ours by that documented shift. Run from the repo root:

    .venv/bin/python tests/data/g711/make_reference.py
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from pathlib import Path

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

HERE = Path(__file__).parent

codes = bytes(range(256))
# Every int16 sample, in the order of its uint16 view (the encoder table index).
samples = b"".join(i.to_bytes(2, "little") for i in range(65536))
reference = {
    "source": f"audioop, CPython {sys.version.split()[0]}",
    "ulaw_decode": [
        int.from_bytes(audioop.ulaw2lin(bytes([c]), 2), "little", signed=True) for c in codes
    ],
    "alaw_decode": [
        int.from_bytes(audioop.alaw2lin(bytes([c]), 2), "little", signed=True) for c in codes
    ],
    "ulaw_encode_sha256": hashlib.sha256(audioop.lin2ulaw(samples, 2)).hexdigest(),
    "alaw_encode_sha256": hashlib.sha256(audioop.lin2alaw(samples, 2)).hexdigest(),
}
(HERE / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
