"""Each stage written once: `run_<stage>(settings, io) -> record`, called by the CLI, recipes and users.

`settings` is the stage's typed settings object (`sparseft.settings`, the same class a recipe stage is
validated as); `io` (`StageIO`) says which model to read and which folder to write. A stage writes its
output atomically, with its record (`stage.json`) inside.

    >>> from sparseft.settings import OneShotSettings
    >>> from sparseft.stages import StageIO, run_oneshot
    >>> record = run_oneshot(OneShotSettings(sparsity=0.5), StageIO("smollm2-135m", Path("runs/sgpt50")))
"""

from collections.abc import Callable

from sparseft.stages.bench import run_bench, run_kernel_bench
from sparseft.stages.common import StageIO
from sparseft.stages.compress import run_compress
from sparseft.stages.eval import run_eval
from sparseft.stages.finetune import run_finetune
from sparseft.stages.oneshot import run_oneshot
from sparseft.stages.prune import run_prune
from sparseft.stages.quantize import run_quantize

#: kind -> runner; the kinds are those of `sparseft.settings.STAGE_SETTINGS`.
STAGE_RUNNERS: dict[str, Callable[..., dict]] = {
    "prune": run_prune,
    "oneshot": run_oneshot,
    "finetune": run_finetune,
    "quantize": run_quantize,
    "compress": run_compress,
    "eval": run_eval,
    "bench": run_bench,
}

__all__ = [
    "STAGE_RUNNERS",
    "StageIO",
    "run_bench",
    "run_compress",
    "run_eval",
    "run_finetune",
    "run_kernel_bench",
    "run_oneshot",
    "run_prune",
    "run_quantize",
]
