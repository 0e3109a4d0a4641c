"""What a CPU's non-GEMM kernels cost, in the currency of its fp32 GEMM rate.

A roofline that sends element-wise, normalisation and pooling nodes to the memory
ceiling sees almost none of their time: ONNX Runtime's profiler on the Zen 5
reference guest puts the encoder's LayerNormalization/SkipLayerNorm, GELU and
Softmax at 32% of its fp32 time and its int8 QDQ graph's QLinearSoftmax, QLinearAdd,
Erf and Q/DQ kernels at 55%, where a bytes-based roofline gave them 5% and 30%. So
each such node costs *vector work*: the elements it computes and the elements it
reads from memory (not those a fused kernel keeps in registers), times what ORT's
own kernel for that op costs per element, measured here in fp32-GEMM FLOP
equivalents: the time of the op per element times the same thread's fp32 GEMM rate
(``MatMul`` 512^3, the ceilings microbenchmark's). Both run on the same vector
units, so on another CPU the work meets that CPU's fp32 GEMM ceiling: a machine
with twice the SGEMM rate runs Softmax twice as fast, whatever its int8 ceiling.

For an int8 (QDQ) graph the cost is ORT's kernel for ``DequantizeLinear -> op ->
QuantizeLinear``, which its QDQ transformer turns into ``QLinearAdd``,
``QLinearSoftmax``, ``QLinearGlobalAveragePool`` where they exist, and leaves as
the float op between a dequantise and a quantise elsewhere (Erf, Div,
LayerNormalization): what the profiled variant runs.

Measured by ``scripts/kernel_costs.py`` 2026-12-02 on the Zen 5 (Turin) 2-vCPU
reference guest, ONNX Runtime 1.32.0, one thread, best call of 5 interleaved rounds
of 0.1 s (two runs agreed within 5%; the GEMM at 249 GFLOP/s), on encoder-sized tensors
(8x128x256; Softmax 8x4x128x128) and CNN-sized ones (8x64x56x56: Relu, pooling,
BatchNormalization). An assumption on every other CPU: that its kernels for these
ops stand to its SGEMM as Zen 5's do; the cross-machine benchmark checks it.
"""

from __future__ import annotations

# Kernels whose FLOPs meet the precision's GEMM/convolution ceiling: no vector work.
GEMM_OPS = frozenset(
    {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MatMul", "Gemm", "MatMulInteger", "QLinearMatMul"}
    | {"LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention"}
)
# Views and metadata: ORT moves no data for them.
FREE_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Dropout", "Size"})

# op -> (fp32, int8 QDQ) fp32-GEMM FLOP equivalents per element computed or read
FLOP_EQUIVALENTS: dict[str, tuple[float, float]] = {
    "Add": (15.3, 15.2),
    "Sub": (16.0, 34.4),
    "Mul": (16.5, 25.1),
    "Div": (21.2, 40.7),
    "Pow": (33.3, 52.3),
    "Sqrt": (36.5, 55.9),
    "Erf": (41.6, 60.0),
    "Tanh": (28.2, 46.8),
    "Sigmoid": (31.1, 32.6),
    "Relu": (8.6, 26.2),
    "Softmax": (28.9, 269.2),
    "LayerNormalization": (50.9, 69.7),
    "ReduceMean": (14.7, 37.7),
    "Transpose": (19.9, 13.4),
    # int8: a quantised CNN's MaxPool runs as NhwcMaxPool on u8 (3.8% of the CNN variant's
    # time on Zen 5, about 46 per element); the single-op QDQ graph takes ORT's slow NCHW u8
    # path (932), so the fp32 figure stands in.
    "MaxPool": (28.8, 28.8),
    "GlobalAveragePool": (27.8, 7.9),
    "BatchNormalization": (9.0, 26.4),
}
DEFAULT_OP = "Add"  # an op not measured costs what the cheapest element-wise kernel does


def flop_equivalents(op: str, quantized: bool) -> float:
    """Vector work per element of ``op``'s kernel; 0 for GEMM-class and view ops."""
    if op in GEMM_OPS or op in FREE_OPS:
        return 0.0
    fp32, int8 = FLOP_EQUIVALENTS.get(op, FLOP_EQUIVALENTS[DEFAULT_OP])
    return int8 if quantized else fp32
