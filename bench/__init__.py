"""The remotellm benchmark suite: the relay measured as ratios against the direct path.

``python -m bench.run`` (``hatch run bench:all``) starts every path's processes, runs the
workloads W1..W6 interleaved, and writes JSON plus a Markdown table to ``bench/results/``.
``python -m bench.loadgen`` is the load generator on its own. See ``bench/README.md``.
"""
