"""Which headlines a re-clustering run re-publishes: what changed, except settled headlines.

Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamer.domain.headline import NOISE

__all__ = ["republish"]


def republish(
    clusters: Sequence[int],
    published: Sequence[int],
    event_times_ms: Sequence[int] | np.ndarray,
    settled_before_ms: int | None,
) -> list[int]:
    """Positions whose run cluster must be published: it differs from what downstream holds.

    ``clusters[i]`` is the run's stable cluster (or NOISE) of headline i, ``published[i]`` the
    cluster it was last published with (NOISE, or UNASSIGNED when never placed). A headline
    published in a topic whose event time is before ``settled_before_ms`` is *settled*: it keeps
    that topic, whatever the run says. Later runs see it with fewer and fewer of its story's
    headlines as the older ones leave the window, and on an interleaved stream their verdicts
    get worse with its age (docs/benchmarks.md, "Live quality on an interleaved flow"). A
    settled headline the runs had left as noise (or never placed) still gets its cluster:
    noise -> cluster is always published; a settled headline is never sent to noise, not even
    one whose published cluster is unknown here (downstream may still hold its topic).
    """
    out = []
    for i, (cluster, held) in enumerate(zip(clusters, published, strict=True)):
        if cluster == held:
            continue
        settled = settled_before_ms is not None and int(event_times_ms[i]) < settled_before_ms
        if settled and (held >= 0 or cluster == NOISE):
            continue
        out.append(i)
    return out
