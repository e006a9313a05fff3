"""Prefect building blocks for the flows in ``flows/``: run folders, input-keyed caching and artifacts
(:mod:`cim.flows.common`), and the tasks more than one flow runs (:mod:`cim.flows.tasks`)."""
