"""Rank 0's join wait against a real scheduler: it names the ranks that never joined."""

from __future__ import annotations

import asyncio

import pytest
from distributed import Scheduler

from launcher.cluster import wait_for_workers

pytestmark = pytest.mark.timeout(60)


def test_join_timeout_names_the_missing_ranks_and_their_hosts():
    async def scenario() -> str:
        async with Scheduler(host="127.0.0.1", port=0, dashboard=False) as scheduler:
            with pytest.raises(TimeoutError) as caught:
                await wait_for_workers(scheduler, 3, 0.2, lambda: {1: "cn7"})
            return str(caught.value)

    message = asyncio.run(scenario())
    assert "only 0 of 3 workers joined within 0 s" in message
    assert "missing: rank 0 (host unknown), rank 1 (host cn7), rank 2 (host unknown)" in message
    assert "--worker-timeout" in message
