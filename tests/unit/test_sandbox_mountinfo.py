"""The sandbox reads mount points from /proc/self/mountinfo as Path spells them."""

from __future__ import annotations

import os

import pytest

from asterisk.sandboxing.common import _mountinfo_path


@pytest.mark.parametrize(
    ("field", "path"),
    [
        (b"/tmp/plain", "/tmp/plain"),
        (b"/tmp/with\\040space", "/tmp/with space"),
        (b"/tmp/tab\\011nl\\012back\\134slash", "/tmp/tab\tnl\nback\\slash"),
        ("/tmp/sbx-é/root".encode(), "/tmp/sbx-é/root"),
        (b"/tmp/not-utf8-\xff", os.fsdecode(b"/tmp/not-utf8-\xff")),
    ],
)
def test_mountinfo_path_decodes_like_path(field: bytes, path: str) -> None:
    assert _mountinfo_path(field) == path
