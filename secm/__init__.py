"""The shell around the packages: settings, command line, batch pipeline, synthetic data."""

import os

# A run frees and takes back frames of hundreds of megabytes every second. Polars' allocator
# returns freed pages to the system after half a second by default, and taking them back costs
# a page fault each (a tenth of a run of ten million lines); kept five seconds, they are
# reused. Polars reads this when it is imported, so it is set here, before. A value set in the
# environment wins, unless it is only Polars' default, which a process that imported Polars
# hands on to the processes it starts.
POLARS_ALLOCATOR_DEFAULT = "dirty_decay_ms:500,muzzy_decay_ms:1000"
if os.environ.get("_RJEM_MALLOC_CONF", POLARS_ALLOCATOR_DEFAULT) == POLARS_ALLOCATOR_DEFAULT:
    os.environ["_RJEM_MALLOC_CONF"] = "dirty_decay_ms:5000,muzzy_decay_ms:5000"
