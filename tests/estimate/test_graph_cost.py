from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optiserve.errors import ModelError
from optiserve.estimate.catalog import load_catalog
from optiserve.estimate.graph_cost import graph_cost, profile_layout
from optiserve.estimate.targets import CurveBuilder
from optiserve.models.graph import inspect_model
from optiserve.models.layout import infer_layout
from optiserve.models.zoo import build_zoo, save_atomic
from optiserve.types import BenchConfig, InputLayout, Measurement, Precision, Profile, Status, TensorLayout


def _save_graph(
    path: Path, nodes: list[onnx.NodeProto], x: list[object], y: list[object], inits: list[onnx.TensorProto]
) -> Path:
    """One float input ``x`` and output ``y`` of these shapes, opset 17, saved at ``path``."""
    g = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y)],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    save_atomic(m, path)
    return path


def _one_conv(tmp_path: Path) -> Path:
    w = numpy_helper.from_array(np.zeros((16, 3, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    return _save_graph(tmp_path / "conv.onnx", [node], ["batch", 3, 32, 32], ["batch", 16, 32, 32], [w])


def test_conv_flops_and_bytes_have_the_known_answer(tmp_path: Path) -> None:
    path = _one_conv(tmp_path)
    c = graph_cost(path, batch=2)
    assert c.flops == 2 * (2 * 16 * 32 * 32) * (3 * 3 * 3)  # 2 x outputs x (Cin x kh x kw)
    assert c.bytes_moved == 4 * (2 * 3 * 32 * 32 + 16 * 3 * 3 * 3 + 2 * 16 * 32 * 32)
    assert graph_cost(path, batch=2, precision="int8").bytes_moved == c.bytes_moved / 4
    assert graph_cost(path, batch=4).flops == 2 * c.flops


def _conv_bn_relu_add(tmp_path: Path) -> Path:
    """x -> Conv -> BatchNormalization -> Relu -> Add(x) -> y: a residual block's tail."""
    c = 3
    inits = [numpy_helper.from_array(np.zeros((c, c, 1, 1), np.float32), "w")]
    inits += [numpy_helper.from_array(np.ones(c, np.float32), n) for n in ("g", "b", "m", "v")]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], kernel_shape=[1, 1]),
        helper.make_node("BatchNormalization", ["conv", "g", "b", "m", "v"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["relu"]),
        helper.make_node("Add", ["relu", "x"], ["y"]),
    ]
    return _save_graph(tmp_path / "block.onnx", nodes, ["batch", c, 8, 8], ["batch", c, 8, 8], inits)


def test_fused_epilogues_move_no_bytes_and_quantised_graphs_fuse_less(tmp_path: Path) -> None:
    path = _conv_bn_relu_add(tmp_path)
    act, w, bn = 3 * 8 * 8, 3 * 3, 4 * 3  # one activation, the conv weight, BN's four vectors
    # float: Conv, BN, Relu and the residual Add are one kernel; conv/bn/relu never leave it
    fp32 = graph_cost(path, 1)
    assert fp32.nodes[0][1] == 4 * (act + w)  # x and w read; its output stays in registers
    assert fp32.nodes[1][1] == 4 * bn and fp32.nodes[2][1] == 0
    assert fp32.nodes[3][1] == 4 * (act + act)  # the residual x read, y written
    # int8 QDQ: BN and Relu fold into the quantised conv, the Add is a QLinearAdd of its own
    int8 = graph_cost(path, 1, precision="int8")
    assert int8.nodes[2][1] == act  # relu's output is written for the Add to read
    assert int8.nodes[3][1] == 3 * act
    assert int8.flops == fp32.flops  # fusion saves traffic, not arithmetic


def test_vector_work_counts_what_a_kernel_computes_and_reads_from_memory(tmp_path: Path) -> None:
    from optiserve.estimate.kernels import flop_equivalents

    path = _conv_bn_relu_add(tmp_path)
    act, bn = 3 * 8 * 8, 4 * 3
    fp32 = graph_cost(path, 1)
    assert fp32.vector[0] == 0.0  # the convolution meets the GEMM ceiling instead
    assert fp32.vector[1] == flop_equivalents("BatchNormalization", False) * (act + bn)  # its input stays in registers
    assert fp32.vector[2] == flop_equivalents("Relu", False) * act
    assert fp32.vector[3] == flop_equivalents("Add", False) * (act + act)  # y computed, the residual x read
    int8 = graph_cost(path, 1, precision="int8")
    assert int8.vector[3] == flop_equivalents("Add", True) * 3 * act  # QLinearAdd reads relu's output too


def test_zoo_models_scale_with_batch(tmp_path: Path) -> None:
    (mlp,) = build_zoo(tmp_path, ["mlp"])
    one, eight = graph_cost(mlp, 1), graph_cost(mlp, 8)
    assert one.flops == pytest.approx(2 * (64 * 256 + 256 * 256 + 256 * 10), rel=0.02)  # Gemms dominate
    assert eight.flops == pytest.approx(8 * one.flops, rel=0.01)
    assert eight.intensity > one.intensity  # weights are read once per batch: batching raises intensity
    assert set(one.by_op) >= {"Gemm", "Relu"}


def test_unknown_precision(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no element size"):
        graph_cost(_one_conv(tmp_path), 1, precision="fp8")
    onnx.checker.check_model(onnx.load(str(_one_conv(tmp_path))))


# --- input layouts, control flow, real models ---------------------------------------------------

F = TensorProto.FLOAT


def _weights(name: str, rows: int, cols: int, seed: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32), name)


def _loop_body(name: str, op: str) -> onnx.GraphProto:
    """(iteration, cond, v) -> (cond, v @ w3) or (cond, v + v); v's shape left for inference."""
    step = (
        helper.make_node("MatMul", [f"{name}_v", "w3"], [f"{name}_out"])
        if op == "MatMul"
        else helper.make_node("Add", [f"{name}_v", f"{name}_v"], [f"{name}_out"])
    )
    return helper.make_graph(
        [helper.make_node("Identity", [f"{name}_c"], [f"{name}_co"]), step],
        name,
        [
            helper.make_tensor_value_info(f"{name}_i", TensorProto.INT64, []),
            helper.make_tensor_value_info(f"{name}_c", TensorProto.BOOL, []),
            helper.make_tensor_value_info(f"{name}_v", F, None),
        ],
        [
            helper.make_tensor_value_info(f"{name}_co", TensorProto.BOOL, []),
            helper.make_tensor_value_info(f"{name}_out", F, None),
        ],
    )


def _branch(name: str, node: onnx.NodeProto) -> onnx.GraphProto:
    return helper.make_graph([node], name, [], [helper.make_tensor_value_info(node.output[0], F, None)])


def _control_flow(tmp_path: Path) -> Path:
    """Every control-flow rule in one graph, with FLOPs per row known by hand:

    x[N,4] @ w1[4,8]                                  2*4*8          =  64
    If(flag, data): then y @ w2 (costlier), else Relu 2*8*8          = 128
    Loop(M=3 constant): v @ w3                        3 * 2*8*8      = 384 (MatMul)
    Loop(M=steps, an input): v + v, counted once      8              =   8 (Add)
    If(True, constant): Relu (the cheap branch)       8              =   8 (Relu)
    Scan over seq[5,N,8]: acc + s @ w4                5 * (128 + 8)  = 680
    """
    mm = helper.make_node
    nodes = [
        mm("MatMul", ["x", "w1"], ["y"]),
        mm(
            "If",
            ["flag"],
            ["a"],
            then_branch=_branch("then", mm("MatMul", ["y", "w2"], ["a_t"])),
            else_branch=_branch("else", mm("Relu", ["y"], ["a_e"])),
        ),
        mm("Loop", ["three", "yes", "a"], ["b"], body=_loop_body("fixed", "MatMul")),
        mm("Loop", ["steps", "yes", "b"], ["c"], body=_loop_body("open", "Add")),
        mm("Constant", [], ["always"], value=numpy_helper.from_array(np.array(True))),
        mm(
            "If",
            ["always"],
            ["d"],
            then_branch=_branch("t2", mm("Relu", ["c"], ["d_t"])),
            else_branch=_branch("e2", mm("MatMul", ["c", "w2"], ["d_e"])),
        ),
        mm(
            "Scan",
            ["d", "seq"],
            ["e", "f"],
            num_scan_inputs=1,
            body=helper.make_graph(
                [
                    mm("MatMul", ["s", "w4"], ["sw"]),
                    mm("Add", ["acc", "sw"], ["acc_out"]),
                    mm("Identity", ["sw"], ["s_out"]),
                ],
                "scan",
                [helper.make_tensor_value_info("acc", F, ["n", 8]), helper.make_tensor_value_info("s", F, ["n", 8])],
                [
                    helper.make_tensor_value_info("acc_out", F, ["n", 8]),
                    helper.make_tensor_value_info("s_out", F, ["n", 8]),
                ],
            ),
        ),
    ]
    g = helper.make_graph(
        nodes,
        "control",
        [
            helper.make_tensor_value_info("x", F, ["batch", 4]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
            helper.make_tensor_value_info("steps", TensorProto.INT64, []),
            helper.make_tensor_value_info("seq", F, [5, "batch", 8]),
        ],
        [helper.make_tensor_value_info("e", F, ["batch", 8]), helper.make_tensor_value_info("f", F, [5, "batch", 8])],
        [
            _weights("w1", 4, 8, 1),
            _weights("w2", 8, 8, 2),
            _weights("w3", 8, 8, 3),
            _weights("w4", 8, 8, 4),
            numpy_helper.from_array(np.array(3, np.int64), "three"),
            numpy_helper.from_array(np.array(True), "yes"),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    path = tmp_path / "control.onnx"
    save_atomic(m, path)
    return path


@pytest.mark.parametrize("batch", [1, 3])
def test_if_loop_and_scan_have_the_known_answer(tmp_path: Path, batch: int) -> None:
    c = graph_cost(_control_flow(tmp_path), batch)
    assert c.by_op["MatMul"][0] == batch * (64 + 128 + 3 * 128 + 5 * 128)
    assert c.by_op["Add"][0] == batch * (8 + 5 * 8)  # the open loop once, the scan's adds five times
    assert c.by_op["Relu"][0] == batch * 8  # only the constant If's branch: the data If took the MatMul
    assert c.flops == batch * 1272


def test_the_model_runs_as_built(tmp_path: Path) -> None:
    """The hand-built graph is one ONNX Runtime accepts, so its answer is about a real model."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(_control_flow(tmp_path)), providers=["CPUExecutionProvider"])
    feeds = {
        "x": np.ones((2, 4), np.float32),
        "flag": np.array(False),
        "steps": np.array(2, np.int64),
        "seq": np.ones((5, 2, 8), np.float32),
    }
    e, f = sess.run(None, feeds)
    assert e.shape == (2, 8) and f.shape == (5, 2, 8)


def _stateful(tmp_path: Path, seq: str | int) -> Path:
    from tests.conftest import build_stateful

    path = tmp_path / f"stateful-{seq}.onnx"
    save_atomic(build_stateful(seq), path)
    return path


def test_the_layout_puts_the_batch_on_each_inputs_own_axis(tmp_path: Path) -> None:
    """state[2, batch, 4] is batched on axis 1 (the old dim-0 rule left it unsized); sr is 0-d."""
    path = _stateful(tmp_path, "seq")
    layout = infer_layout(inspect_model(path), {"seq": (16,)})
    for n in (1, 3):
        c = graph_cost(path, n, layout=layout)
        # ReduceSum over x[n,16], Cast of sr, s * sr over [n,1], state * 2 over [2,n,4]
        assert c.flops == 16 * n + 1 + n + 8 * n
        assert c.by_op["Cast"][0] == 1  # the scalar stays a scalar at any batch
    assert graph_cost(path, 2, layout=InputLayout.from_dict(layout.to_dict())).flops == 51


def test_old_profiles_infer_the_layout_from_the_model(tmp_path: Path) -> None:
    fixed = _stateful(tmp_path, 16)
    assert profile_layout({}, fixed) == infer_layout(inspect_model(fixed))
    assert graph_cost(fixed, 3).flops == 16 * 3 + 1 + 3 + 8 * 3  # no layout given: the model's own
    open_seq = _stateful(tmp_path, "seq")
    assert profile_layout({}, open_seq) is None  # seq unknown: graph_cost keeps the old dim-0 rule
    recorded = infer_layout(inspect_model(open_seq), {"seq": (16,)})
    assert profile_layout({"layout": recorded.to_dict()}, open_seq) == recorded


def test_the_planner_costs_with_the_profiles_layout(tmp_path: Path) -> None:
    path = _stateful(tmp_path, "seq")  # only the profile knows seq=16
    layout = infer_layout(inspect_model(path), {"seq": (16,)})
    row = Measurement(BenchConfig("onnxruntime-cpu", Precision.FP32, 4, 1), Status.OK, samples_ns=(1000, 1100))
    cat = load_catalog()
    cpu = next(e for e in cat.entries if e.accelerator is None)
    builder = CurveBuilder(Profile({"layout": layout.to_dict()}, (row,)), path, cat, cpu)
    assert builder.cost(4, "fp32").flops == 16 * 4 + 1 + 4 + 8 * 4


def test_a_layout_for_another_model_is_refused(tmp_path: Path) -> None:
    path = _stateful(tmp_path, 16)
    wrong = InputLayout((TensorLayout("x", "float32", (1, 16, 3), 0),))
    with pytest.raises(ModelError, match="input 'x' 3 dims but the model has 2"):
        graph_cost(path, 1, layout=wrong)


@dataclass(frozen=True)
class Real:
    package: str
    file: str  # inside the package folder
    shapes: dict[str, tuple[int, ...]]
    flops_at_1: float  # as counted here; common_det's matches YOLOX-tiny's published 6.45 GFLOPs at 416
    ops: tuple[str, ...]  # op types that must be counted (silero's sit inside If branches)


REAL = {
    "ppocr-det": Real(
        "rapidocr_onnxruntime",
        "models/ch_PP-OCRv4_det_infer.onnx",
        {"x": (3, 96, 96)},
        1.072e8,
        ("Conv", "ConvTranspose"),
    ),
    "ppocr-rec": Real(
        "rapidocr_onnxruntime",
        "models/ch_PP-OCRv4_rec_infer.onnx",
        {"x": (3, 48, 192)},
        8.703e8,
        ("Conv", "MatMul", "Softmax"),
    ),
    "ppocr-cls": Real(
        "rapidocr_onnxruntime",
        "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        {"x": (3, 48, 192)},
        3.618e7,
        ("Conv", "MatMul"),
    ),
    "ddddocr-det": Real("ddddocr", "common_det.onnx", {}, 6.387e9, ("Conv", "MaxPool")),
    "silero-op15": Real("silero_vad", "data/silero_vad_16k_op15.onnx", {"sequence": (512,)}, 1.131e6, ("Conv", "LSTM")),
    "silero-if": Real("silero_vad", "data/silero_vad.onnx", {"input": (512,)}, 1.131e6, ("Conv", "LSTM")),
}
WHEELS = "pip install --no-deps rapidocr-onnxruntime==1.4.4 silero-vad==6.2.3 ddddocr==1.6.1"


def _real_path(model: Real) -> Path:
    """The ONNX file inside an installed wheel; the package itself is never imported."""
    spec = importlib.util.find_spec(model.package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    path = Path(folders[0]) / model.file if folders else None
    if path is None or not path.exists():
        pytest.skip(f"{model.package} is not installed ({WHEELS})")
    return path


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_models_cost_scales_with_the_batch(name: str) -> None:
    model = REAL[name]
    path = _real_path(model)
    layout = infer_layout(inspect_model(path), model.shapes)
    one, four = graph_cost(path, 1, layout=layout), graph_cost(path, 4, layout=layout)
    assert one.flops == pytest.approx(model.flops_at_1, rel=0.01)
    assert four.flops == pytest.approx(4 * one.flops, rel=0.01)  # unbatched work (sr, state shapes) is tiny
    assert four.bytes_moved > one.bytes_moved > one.weight_bytes > 0
    assert all(one.by_op.get(op, (0.0, 0.0))[0] > 0 for op in model.ops), one.by_op
