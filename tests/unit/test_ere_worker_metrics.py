"""The ERE worker's own figures before its first read of the pipeline."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from proxy.ere.jobs.worker import WorkerMetrics


def test_figures_never_read_are_as_old_as_the_worker():
    """A worker that started with the database down has read nothing: the figures are stale
    since its start (ErePipelineStale: "not read for 15m 0s"), not since 1970 (56 years)."""
    before = time.time()
    metrics = WorkerMetrics(CollectorRegistry(), pipeline=True)
    after = time.time()
    value = metrics.registry.get_sample_value
    assert value("ere_worker_pipeline_refresh_ok") == 0
    assert before <= value("ere_worker_pipeline_refreshed_timestamp_seconds") <= after
