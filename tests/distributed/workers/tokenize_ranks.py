"""Worker: one launcher rank of `scifm tokenize` (named so as not to shadow stdlib tokenize)."""

import json
import sys
from pathlib import Path

from scifm.core.dist import detect_launch
from scifm.tokens.pipeline import tokenize_files
from scifm.tokens.writer import TokenizeConfig

if __name__ == "__main__":  # the spawned tokenize workers re-import this file
    corpus, tokenizer, prefix, workers, shard_bytes = sys.argv[1:6]
    cfg = TokenizeConfig(workers=int(workers), shard_bytes=int(shard_bytes))
    stats = tokenize_files(cfg, [corpus], tokenizer, Path(prefix))
    rank = detect_launch().rank
    (Path(prefix).parent / f"rank{rank}.json").write_text(json.dumps(stats))
