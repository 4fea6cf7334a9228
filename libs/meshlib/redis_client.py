"""One way to open Redis, a single server or a Redis Cluster, from the URL the settings give.

``redis://`` / ``rediss://`` name one server (or a proxy in front of several);
``redis+cluster://`` / ``rediss+cluster://`` name a seed node of a Redis Cluster, and the
client discovers the others and follows the slot map (failovers included). Every process that
uses Redis (the gateway's limiter and stream slots, every process's invalidation bus) opens it
here, so the same URL works everywhere.
"""

from __future__ import annotations

from typing import Any

CLUSTER_SUFFIX = "+cluster"


def is_cluster(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster."""
    scheme = url.split("://", 1)[0]
    return scheme.endswith(CLUSTER_SUFFIX)


def plain_url(url: str) -> str:
    """The URL redis-py understands (``redis+cluster://`` -> ``redis://``)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.removesuffix(CLUSTER_SUFFIX)}://{rest}"


def connect(url: str, **options: Any) -> Any:
    """A ``redis.asyncio.Redis`` or, for a cluster URL, a ``redis.asyncio.RedisCluster``."""
    if is_cluster(url):
        from redis.asyncio.cluster import RedisCluster

        options.pop("health_check_interval", None)  # per-node connections check themselves
        return RedisCluster.from_url(plain_url(url), **options)
    import redis.asyncio as redis

    return redis.Redis.from_url(url, **options)
