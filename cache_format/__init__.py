"""cache_format: the videocfr prior cache — schema, writer, reader and tools.

The core install (numpy, h5py, tqdm) is enough to read and check a cache:

    from videocfr.cache_format import PriorTable
    table = PriorTable.load("caches/demo")
    p = table.get("video_id", "question_id")   # float32 [K], sums to 1
"""

from .fusion import FusionConfig, frame_sets, fuse
from .reader import Cache
from .records import STATUS_FAILED, STATUS_OK, QuestionRecord, VideoRecord
from .schema import SCHEMA_VERSION, CacheError, SchemaError, config_hash
from .table import PriorTable
from .verify import verify_cache, verify_shard
from .writer import ShardWriter, finalize_cache, job_done

__all__ = [
    "SCHEMA_VERSION", "STATUS_FAILED", "STATUS_OK", "Cache", "CacheError", "FusionConfig",
    "PriorTable", "QuestionRecord", "SchemaError", "ShardWriter", "VideoRecord", "config_hash",
    "finalize_cache", "frame_sets", "fuse", "job_done", "verify_cache", "verify_shard",
]
