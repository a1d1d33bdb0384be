"""bench/stream_backlog.py at a small size: the kill lands between the first checkpoint and the
end, the restore resumes from that checkpoint, and every online view equals the naive oracle."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.engine


def test_backlog_killed_halfway_and_restored_ends_equal_to_the_oracle(tmp_path):
    from bench.stream_backlog import main

    out = main(["--events", "20000", "--users", "3000", "--checkpoint-ms", "1000", "--json", str(tmp_path / "o.json")])
    assert out["events"] // 2 <= out["read_at_kill"] < out["events"]
    assert 0 < out["read_after_restore"] <= out["events"]  # from the last checkpoint's offsets
    assert out["views_wrong"] == 0 and out["views_checked"] > out["users"] > 1000
    assert out["rss_peak_mib"] > 100 and out["checkpoint_bytes_per_user"] > 0
