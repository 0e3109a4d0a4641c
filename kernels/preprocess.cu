// Fused image pre-processing for optiserve (loaded by CuPy's RawModule; see
// optiserve/preprocess/cupy_kernel.py). One thread per output pixel of one
// image: OpenCV INTER_LINEAR pixel-centre bilinear taps, optional centre-crop
// offset, BGR->RGB through `och`, (pixel * a + b) per source channel, NCHW out.
#include <cuda_fp16.h>

template <typename T>
__device__ __forceinline__ T cast_out(float v);
template <>
__device__ __forceinline__ float cast_out<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half cast_out<__half>(float v) { return __float2half_rn(v); }

__device__ __forceinline__ void taps(int o, float off, float scale, int n, int* i0, int* i1, float* w) {
    float f = ((float)o + off + 0.5f) * scale - 0.5f;
    int i = (int)floorf(f);
    float t = f - (float)i;
    if (i < 0) { i = 0; t = 0.0f; }
    if (i >= n - 1) { i = n - 1; t = 0.0f; }
    *i0 = i;
    *i1 = min(i + 1, n - 1);
    *w = t;
}

template <typename T>
__device__ void preprocess(const unsigned char* __restrict__ src, const long long* __restrict__ offsets,
                           const int* __restrict__ heights, const int* __restrict__ widths,
                           const float* __restrict__ geom,  // per image: scale_y, scale_x, off_y, off_x
                           const float* __restrict__ a, const float* __restrict__ b,
                           const int* __restrict__ och, T* __restrict__ out, int n, int out_h, int out_w) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int k = blockIdx.z;
    if (x >= out_w || y >= out_h || k >= n) return;
    int h = heights[k], w = widths[k];
    const float* g = geom + 4 * k;
    int y0, y1, x0, x1;
    float wy, wx;
    taps(y, g[2], g[0], h, &y0, &y1, &wy);
    taps(x, g[3], g[1], w, &x0, &x1, &wx);
    const unsigned char* img = src + offsets[k];
    const unsigned char* r0 = img + (long long)y0 * w * 3;
    const unsigned char* r1 = img + (long long)y1 * w * 3;
    float w00 = (1.0f - wx) * (1.0f - wy), w01 = wx * (1.0f - wy);
    float w10 = (1.0f - wx) * wy, w11 = wx * wy;
    long long plane = (long long)out_h * out_w;
    long long base = (long long)k * 3 * plane + (long long)y * out_w + x;
#pragma unroll
    for (int c = 0; c < 3; ++c) {
        float v = r0[x0 * 3 + c] * w00 + r0[x1 * 3 + c] * w01 + r1[x0 * 3 + c] * w10 + r1[x1 * 3 + c] * w11;
        out[base + och[c] * plane] = cast_out<T>(v * a[c] + b[c]);
    }
}

extern "C" __global__ void preprocess_f32(const unsigned char* src, const long long* offsets, const int* heights,
                                          const int* widths, const float* geom, const float* a, const float* b,
                                          const int* och, float* out, int n, int out_h, int out_w) {
    preprocess<float>(src, offsets, heights, widths, geom, a, b, och, out, n, out_h, out_w);
}

extern "C" __global__ void preprocess_f16(const unsigned char* src, const long long* offsets, const int* heights,
                                          const int* widths, const float* geom, const float* a, const float* b,
                                          const int* och, __half* out, int n, int out_h, int out_w) {
    preprocess<__half>(src, offsets, heights, widths, geom, a, b, och, out, n, out_h, out_w);
}
