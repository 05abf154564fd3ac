"""DeepSparse side of ``benchmarks/deepsparse_compare.py``: runs inside DeepSparse's own venv.

    /work/venvs/deepsparse/bin/python benchmarks/deepsparse_worker.py      # started by deepsparse_compare.py

DeepSparse 1.8.0 needs numpy < 2 and onnx 1.14, which the sparseft venv does not have, so it lives in its
own venv (with onnxruntime pinned to 1.16.3: newer onnxruntime quantization tools need ml_dtypes, which
pulls numpy 2) and this worker is driven over a pipe: one JSON request per line on stdin, one JSON reply per
line on stdout (everything the libraries print goes to stderr). Requests:

    {"cmd": "prepare", "src": "m.onnx", "dst": "m-int8.onnx", "quant": "none|integer|qdq|dynamic",
     "calib": "ids.npy"}                                          -> Gemm -> MatMul, int8 rewrite
    {"cmd": "load", "key": "k", "onnx": "m.onnx", "cores": 1}     -> compile seconds, supported op fraction
    {"cmd": "input", "path": "ids.npy"}                           -> the input ids every run uses
    {"cmd": "run", "key": "k", "reps": 5}                         -> wall and process-CPU seconds per call
    {"cmd": "logits", "key": "k", "out": "logits.npy"}
    {"cmd": "free", "key": "k"} / {"cmd": "idle_cpu", "seconds": 1.0} / {"cmd": "versions"} / {"cmd": "quit"}

Nothing here imports sparseft or torch: it only needs deepsparse (which brings onnx and onnxruntime).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np


def gemm_to_matmul(model) -> int:  # noqa: ANN001  (onnx.ModelProto)
    """Rewrite Gemm(A, B, C) (alpha = beta = 1, no transposes: GPT-2's Conv1D) as MatMul + Add.

    onnxruntime's quantizers handle MatMul but turn Gemm into com.microsoft ops DeepSparse cannot run;
    the fp32 model gets the same rewrite so that fp32 and int8 graphs differ only by quantization."""
    from onnx import helper

    nodes, count = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
        if node.op_type != "Gemm" or not plain or attrs.get("transA", 0) or attrs.get("transB", 0):
            nodes.append(node)
            continue
        mm_out = node.output[0] + "_mm"
        nodes.append(helper.make_node("MatMul", node.input[:2], [mm_out], name=node.name + "_MatMul"))
        nodes.append(helper.make_node("Add", [mm_out, node.input[2]], node.output, name=node.name + "_Add"))
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


def weight_matmuls(model) -> list[str]:  # noqa: ANN001
    """Names of the MatMul nodes whose second input is a weight (initializer), not an activation."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]


def activation_ranges(model, names: list[str], ids: np.ndarray) -> dict[str, tuple[float, float]]:  # noqa: ANN001
    """(min, max) of the activation input of each named MatMul over the calibration rows of ``ids``,
    by running the fp32 graph in onnxruntime with those tensors exposed as extra outputs."""
    import onnx
    import onnxruntime as ort

    by_name = {n.name: n for n in model.graph.node}
    tensors = sorted({by_name[n].input[0] for n in names})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend([onnx.helper.make_empty_tensor_value_info(t) for t in tensors])
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    lo = dict.fromkeys(tensors, 0.0)  # ranges include 0 so that zero is exact (uint8 zero point)
    hi = dict.fromkeys(tensors, 0.0)
    for i in range(ids.shape[0]):
        for t, v in zip(tensors, sess.run(tensors, {model.graph.input[0].name: ids[i : i + 1]}), strict=True):
            lo[t], hi[t] = min(lo[t], float(v.min())), max(hi[t], float(v.max()))
    return {n: (lo[by_name[n].input[0]], hi[by_name[n].input[0]]) for n in names}


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(in, out) fp32 weight -> int8 values and fp32 scales per output column (symmetric, max|w| / 127,
    as sparseft's int8 format does per output row), so pruned zeros stay zeros."""
    amax = np.abs(w).max(axis=0)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    return np.clip(np.round(w / scale), -127, 127).astype(np.int8), scale


def quantize_static(model, names: list[str], ranges: dict, form: str) -> None:  # noqa: ANN001
    """Rewrite each named weight MatMul to int8 with a static uint8 activation scale, in place.

    form "qdq": x -> QuantizeLinear -> DequantizeLinear -> MatMul(., DequantizeLinear(W_int8)), the
    quantize/dequantize form sparseml's QAT exports; form "integer": x -> QuantizeLinear ->
    MatMulInteger(x_u8, W_int8) -> Cast -> Mul(scale_x * scale_w), the form sparseml converts it to
    for DeepSparse."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out_nodes = []
    for node in model.graph.node:
        if node.name not in ranges:
            out_nodes.append(node)
            continue
        x, wname = node.input[0], node.input[1]
        wq, ws = quantize_weight(numpy_helper.to_array(inits[wname]))
        lo, hi = ranges[node.name]
        sx = np.float32(max(hi - lo, 1e-8) / 255.0)
        zx = np.uint8(np.clip(np.round(-lo / sx), 0, 255))
        p = node.name
        new_inits = {
            f"{p}_wq": numpy_helper.from_array(wq, f"{p}_wq"),
            f"{p}_xs": numpy_helper.from_array(np.array(sx, np.float32), f"{p}_xs"),
            f"{p}_xz": numpy_helper.from_array(np.array(zx, np.uint8), f"{p}_xz"),
        }
        q = [helper.make_node("QuantizeLinear", [x, f"{p}_xs", f"{p}_xz"], [f"{p}_xq"], name=f"{p}_Q")]
        if form == "qdq":
            new_inits[f"{p}_ws"] = numpy_helper.from_array(ws, f"{p}_ws")
            new_inits[f"{p}_wz"] = numpy_helper.from_array(np.zeros(ws.shape, np.int8), f"{p}_wz")
            q += [
                helper.make_node("DequantizeLinear", [f"{p}_xq", f"{p}_xs", f"{p}_xz"], [f"{p}_xd"], name=f"{p}_DQx"),
                helper.make_node("DequantizeLinear", [f"{p}_wq", f"{p}_ws", f"{p}_wz"], [f"{p}_wd"], name=f"{p}_DQw", axis=1),
                helper.make_node("MatMul", [f"{p}_xd", f"{p}_wd"], node.output, name=p),
            ]  # fmt: skip
        else:
            new_inits[f"{p}_wz"] = numpy_helper.from_array(np.array(0, np.int8), f"{p}_wz")
            new_inits[f"{p}_os"] = numpy_helper.from_array((ws * sx).astype(np.float32), f"{p}_os")
            q += [
                helper.make_node("MatMulInteger", [f"{p}_xq", f"{p}_wq", f"{p}_xz", f"{p}_wz"], [f"{p}_i32"], name=p),
                helper.make_node("Cast", [f"{p}_i32"], [f"{p}_f"], name=f"{p}_Cast", to=TensorProto.FLOAT),
                helper.make_node("Mul", [f"{p}_f", f"{p}_os"], node.output, name=f"{p}_Scale"),
            ]  # fmt: skip
        out_nodes += q
        model.graph.initializer.remove(inits.pop(wname))
        model.graph.initializer.extend(new_inits.values())
    del model.graph.node[:]
    model.graph.node.extend(out_nodes)


def prepare(src: str, dst: str, quant: str, calib: str | None = None) -> dict:
    """Write ``dst``: ``src`` with Gemm -> MatMul + Add and, for int8, its weight MatMuls quantized.

    ``quant``: "none" (fp32), "qdq" or "integer" (static int8, see ``quantize_static``; activation
    ranges calibrated on the rows of ``calib``) or "dynamic" (onnxruntime's quantize_dynamic: uint8
    activations quantized per call; DeepSparse 1.8 fails to compile it, see BENCHMARKS.md)."""
    import onnx

    model = onnx.load(src)
    n_gemm = gemm_to_matmul(model)
    names = weight_matmuls(model)
    tmp = dst + ".tmp"
    if quant in ("qdq", "integer"):
        quantize_static(model, names, activation_ranges(model, names, np.load(calib)), quant)
    elif quant == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        onnx.save(model, dst + ".fp32")
        quantize_dynamic(dst + ".fp32", tmp, weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_quantize=names)  # fmt: skip
        os.remove(dst + ".fp32")
    elif quant != "none":
        raise ValueError(f"quant must be none, qdq, integer or dynamic, got {quant!r}")
    if quant != "dynamic":
        onnx.save(model, tmp)
    os.replace(tmp, dst)
    return {"gemm_rewritten": n_gemm, "weight_matmuls": len(names), "bytes": os.path.getsize(dst)}


class Worker:
    """Holds compiled engines by key and answers requests."""

    def __init__(self) -> None:
        self.engines: dict = {}
        self.inputs: list[np.ndarray] | None = None

    def load(self, key: str, onnx: str, cores: int) -> dict:
        from deepsparse import compile_model

        t0 = time.perf_counter()
        eng = compile_model(onnx, batch_size=1, num_cores=cores)
        self.engines[key] = eng
        return {"compile_s": time.perf_counter() - t0,
                "fraction_of_supported_ops": float(getattr(eng, "fraction_of_supported_ops", float("nan")))}  # fmt: skip

    def run(self, key: str, reps: int) -> dict:
        eng, inputs = self.engines[key], self.inputs
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(reps):
            eng.run(inputs)
        return {"wall": (time.perf_counter() - t0) / reps, "cpu": (time.process_time() - c0) / reps}

    def handle(self, req: dict) -> dict:
        cmd = req["cmd"]
        if cmd == "prepare":
            return prepare(req["src"], req["dst"], req["quant"], req.get("calib"))
        if cmd == "load":
            return self.load(req["key"], req["onnx"], int(req["cores"]))
        if cmd == "input":
            self.inputs = [np.ascontiguousarray(np.load(req["path"]))]
            return {"shape": list(self.inputs[0].shape)}
        if cmd == "run":
            return self.run(req["key"], int(req["reps"]))
        if cmd == "logits":
            np.save(req["out"], self.engines[req["key"]].run(self.inputs)[0])
            return {"out": req["out"]}
        if cmd == "free":
            self.engines.pop(req["key"], None)
            return {}
        if cmd == "idle_cpu":  # CPU the engines' threads burn while nobody calls them
            c0 = time.process_time()
            time.sleep(float(req["seconds"]))
            return {"cpu": time.process_time() - c0}
        if cmd == "versions":
            import deepsparse
            import onnx
            import onnxruntime

            return {"deepsparse": deepsparse.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                    "numpy": np.__version__, "python": sys.version.split()[0]}  # fmt: skip
        raise ValueError(f"unknown command {cmd!r}")


def main() -> None:
    # sparseft.peers' worker loop, imported by path: this runs in DeepSparse's venv, without sparseft
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src" / "sparseft" / "peers"))
    from protocol import serve

    serve(Worker().handle)


if __name__ == "__main__":
    main()
