"""videocfr: consensus frame priors for video-LLM reinforcement learning.

The installed distribution owns only this top-level name. Its parts are the subpackages
`videocfr.cache_format`, `videocfr.vlm`, `videocfr.precompute`, `videocfr.train`,
`videocfr.evaluate` and `videocfr.selector`; in the source tree they are the top-level folders
beside this one (setup.cfg maps them with `package_dir`), so a checkout imports the same way
without being installed.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

_here = _Path(__file__).resolve().parent
_checkout = (_here.parent / "cache_format" / "__init__.py").is_file()
if not (_here / "cache_format").is_dir() and _checkout:
    # a source checkout: the stage folders sit beside this package, not inside it
    __path__.append(str(_here.parent))
