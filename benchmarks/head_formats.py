"""The output projection in each value type: int8 (weight-only and W8A8) against int4, dense rows, batch 1.

SmolLM2-135M's tied lm_head (49152 x 576), every column stored (`WeightHandle.all_stored`), 1 thread.
Three copies of each packing rotate so that every call streams from memory (> the L3), timed in
interleaved rounds (`best_times`); GB/s counts the bytes of values and scales each call reads.

    python benchmarks/head_formats.py --out benchmarks/results/head_formats.json
"""

from __future__ import annotations

import json

import torch
from dense_rows import COPIES, head_weight_from_args, rotating

from sparseft.runtime.format import compress
from sparseft.runtime.kernels import pack_weight
from sparseft.runtime.timing import bandwidth_gbs, best_times

PACKINGS = {"int8": ("int8", "none"), "int8 W8A8": ("int8", "dynamic-int8"), "int4": ("int4", "none")}


def main() -> None:
    args, w = head_weight_from_args(__doc__)
    x = torch.randn(1, w.shape[1])
    calls, mbytes = {}, {}
    for name, (fmt, act) in PACKINGS.items():
        cws = [compress(w.clone(), fmt) for _ in range(COPIES)]
        hs = [pack_weight(cw, act=act) for cw in cws]
        assert hs[0].all_stored, name
        calls[name] = rotating(hs, x)
        mbytes[name] = (cws[0].values.numel() * cws[0].values.element_size() + 4 * cws[0].scales.numel()) / 1e6
    t = best_times(calls, seconds=0.5, rounds=9)
    record = {"model": args.model, "shape": list(w.shape), "threads": 1, "batch": 1,
              "read_bandwidth_gbs": round(bandwidth_gbs(), 1),
              "ms": {k: round(v * 1e3, 3) for k, v in t.items()},
              "mb": {k: round(v, 1) for k, v in mbytes.items()},
              "gbs": {k: round(mbytes[k] / (t[k] * 1e3), 1) for k in t}}
    print(json.dumps(record, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
