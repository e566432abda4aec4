"""evaluate: QA accuracy under frame-selection strategies, V-NIAH and focus metrics.

Not built yet: this package is the place for DESIGN.md's evaluation stage, which reads caches
through `cache_format` only. `videocfr evaluate` reports that it is not available.
"""
