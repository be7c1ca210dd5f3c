"""`faces bench-gallery`'s options and a small real run: the rows it promises, one index build per kind, recall
against exact search, and the shares of faiss's lists it was asked for."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgepipe.cli_args import shares
from edgepipe.errors import BenchmarkError
from edgepipe.gallery_bench import GalleryBenchOptions, bench_gallery


def test_a_small_run_gives_every_row_with_recall_against_exact():
    rows = bench_gallery(GalleryBenchOptions(sizes=(700,), queries=30, shares=(0.25, 1.0), efs=(16,)))
    assert [r["search"] for r in rows] == ["exact", "faiss-ivf 25% lists", "faiss-ivf 100% lists", "usearch ef16"]
    exact, quarter, every, hnsw = rows
    assert exact["index"] is None and exact["recall_at_1"] == 1.0 and exact["queries"] == 30
    assert exact["impostors"] == 6 and exact["threshold"] == 0.637 and exact["impostor_ms_p50"] > 0
    assert quarter["impostor_deeper_share"] == 1.0  # a stranger's answer is never sure: always the second look
    assert 0 <= quarter["deeper_share"] < 0.5 and exact["deeper_share"] == 0
    assert quarter["index"]["factory"] == "IVF17,PQ32x4fs" and quarter["index"]["nprobe"] == 4  # 700 // 39 lists
    assert every["index"]["nprobe"] == 17 and every["recall_at_1"] == 1.0  # every list scanned + exact re-rank
    assert quarter["build_s"] > 0 and every["build_s"] is None  # one build, several depths
    assert hnsw["index"]["library"].startswith("usearch") and 0 < hnsw["recall_at_1"] <= 1
    assert all(r["query_threads"] == 1 and r["query_ms_p50"] > 0 for r in rows)


@pytest.mark.parametrize("bad, message", [
    (dict(shares=(0.0,)), "shares of the lists must be in"), (dict(shares=(), efs=()), "nothing to compare"),
    (dict(efs=(0,)), "efs must be ints >= 1"), (dict(sizes=()), "sizes must be ints >= 1"),
])
def test_bad_options_are_one_line_errors(bad, message):
    with pytest.raises(BenchmarkError, match=message):
        GalleryBenchOptions(**bad)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=20))
def test_the_lists_share_flag_takes_only_shares_in_0_1(text):
    try:
        values = shares(text)
    except Exception as e:  # argparse turns this into a one-line usage error
        assert type(e).__name__ == "ArgumentTypeError" and "numbers in (0, 1]" in str(e)
        return
    assert values and all(0 < v <= 1 for v in values)
