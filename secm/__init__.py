"""The shell around the packages: settings, command line, batch pipeline, synthetic data."""

import os
import sys

# A run frees and takes back frames of hundreds of megabytes every second. Polars' allocator
# returns freed pages to the system after half a second by default, and taking them back costs
# a page fault each (a tenth of a run of ten million lines); kept five seconds, they are
# reused. With one arena per core rather than four, a frame freed by one of Polars' threads is
# more often taken again by another: a fifth fewer page faults, and a lower peak. The
# service's frames are small: it keeps the default (paced loads were no faster with the longer
# decay, and their p99 higher). Polars reads the setting when it is imported, so it is set
# here, before.
ALLOCATOR_SETTING = "_RJEM_MALLOC_CONF"
POLARS_ALLOCATOR_DEFAULT = "dirty_decay_ms:500,muzzy_decay_ms:1000"
BATCH_ALLOCATOR = "dirty_decay_ms:5000,muzzy_decay_ms:5000,percpu_arena:percpu"


def allocator_options(configured: str | None, command: str | None) -> str:
    """The allocator's options for a ``secm`` process running ``command``, given the
    environment's. A user's own options win; Polars' and ours are no one's choice: a process
    that imported Polars (or ``secm``, then Polars) hands them on to the processes it starts."""
    handed_on = (None, POLARS_ALLOCATOR_DEFAULT, BATCH_ALLOCATOR, f"{POLARS_ALLOCATOR_DEFAULT},{BATCH_ALLOCATOR}")
    if configured not in handed_on:
        return configured
    return POLARS_ALLOCATOR_DEFAULT if command == "serve" else BATCH_ALLOCATOR


# The command: the first argument that is not an option (``secm -v serve``).
_COMMAND = next((argument for argument in sys.argv[1:] if not argument.startswith("-")), None)
os.environ[ALLOCATOR_SETTING] = allocator_options(os.environ.get(ALLOCATOR_SETTING), _COMMAND)
