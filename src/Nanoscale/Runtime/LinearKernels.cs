using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Nanoscale.Runtime;

/// <summary>The product kernels shared by every <see cref="ILinearWeight"/>, with the scalar reference beside them.</summary>
internal static class LinearKernels
{
    /// <summary>Bytes of weights per work item: a tile of rows that stays in L2 while every token streams past it.</summary>
    private const int TileBytes = 64 * 1024;

    /// <summary>Tokens per work item, so a short matrix still splits into enough items for all workers.</summary>
    private const int TokenTile = 64;

    /// <summary>Checks the arguments of <see cref="ILinearWeight.MatMul"/>: whole input rows, an output of
    /// <c>tokens × Rows</c> (<see cref="ValidateRows"/> over every row).</summary>
    public static void Validate(ILinearWeight weight, ReadOnlySpan<float> input, Span<float> output) =>
        ValidateRows(weight, input, 0, weight.Rows, output);

    /// <summary>Checks the arguments of <see cref="ILinearWeight.MatMulRows"/>: whole input rows, the slice inside the
    /// weight's rows, an output of <c>tokens × count</c>.</summary>
    public static void ValidateRows(ILinearWeight weight, ReadOnlySpan<float> input, int firstRow, int count, Span<float> output)
    {
        if (firstRow < 0 || count < 0 || (long)firstRow + count > weight.Rows)
            throw new ArgumentOutOfRangeException(nameof(firstRow), $"rows {firstRow}..{(long)firstRow + count} outside 0..{weight.Rows}");
        if (input.Length % weight.Columns != 0)
            throw new ArgumentException($"input of {input.Length} floats is not a whole number of rows of {weight.Columns}", nameof(input));
        int tokens = input.Length / weight.Columns;
        if (output.Length != (long)tokens * count)
            throw new ArgumentException($"output holds {output.Length} floats; {tokens} tokens × {count} rows need {(long)tokens * count}", nameof(output));
    }

    /// <summary>Rows per tile: <see cref="TileBytes"/> of floats in whole calls of twelve rows (<see
    /// cref="PanelGemm.CallRows"/>), and never fewer than one call: a wide matrix's tile of two rows (a feed-forward
    /// down projection of 8192 columns) filled a fraction of each block, so its window products took longer than gate
    /// and up together; and a tile of six (the 1536-column down projection of SmolLM2) ran the AVX-512 kernel's
    /// twelve chains on six rows, half its multiply-adds dropped (docs/runtime.md, twenty-ninth session).</summary>
    public static int RowsPerTile(int columns) =>
        Math.Max(PanelGemm.CallRows, TileBytes / (4 * Math.Max(1, columns)) / PanelGemm.CallRows * PanelGemm.CallRows);

    /// <summary>Rows per tile of a step's product (up to sixteen tokens: one group of the panels, each tile read once; <see cref="TileRows"/>):
    /// <see cref="RowsPerTile"/> in whole multiples of <see cref="PanelGemm.StepTileRows"/> where the AVX-512 kernels run —
    /// whole calls of both the sixteen-token kernel (twelve rows) and the eight-token one (sixteen), where a tile of 24
    /// rows left the second eight-token call half its lanes, and the next tile asked for while this one computes twice
    /// as far ahead. A BF16 step of eight sequences' products 18.0–18.6 → 14.5–15.0 ms, of sixteen unchanged
    /// (docs/runtime.md, twenty-ninth session).</summary>
    public static int StepRowsPerTile(int columns)
    {
        int rows = RowsPerTile(columns);
        return PanelGemm.Wide ? (rows + PanelGemm.StepTileRows - 1) / PanelGemm.StepTileRows * PanelGemm.StepTileRows : rows;
    }

    /// <summary>Rows per tile of a product of <paramref name="tokens"/> tokens over <paramref name="columns"/>: a step's
    /// (<see cref="StepRowsPerTile"/>, up to one group of the panels) or a window's (<see cref="RowsPerTile"/>).</summary>
    public static int TileRows(int columns, int tokens) =>
        tokens <= PanelGemm.GroupTokens ? StepRowsPerTile(columns) : RowsPerTile(columns);

    /// <summary>Whether a product of <paramref name="tokens"/> tokens runs on <see cref="PanelGemm"/> (else <see cref="DotRows"/>).</summary>
    public static bool UsesPanels(int tokens, int columns) =>
        PanelGemm.IsSupported && tokens >= PanelGemm.MinTokens && columns >= 8;

    /// <summary>
    /// The tokens packed for <see cref="PanelGemm"/> (<see cref="PanelGemm.PackActivations"/>) in a pooled array pinned
    /// while this lives, from a 64-byte boundary: the kernel loads a column of sixteen tokens as one 512-bit vector
    /// (two 256-bit ones without AVX-512), and a pooled array's floats start 16 bytes past one, so every such load
    /// spanned two cache lines — with the weights streaming from memory, a fifth to a quarter of the kernel's rate
    /// (docs/runtime.md, twenty-ninth session). Dispose returns the array.
    /// </summary>
    public sealed unsafe class PackedTokens : IDisposable
    {
        private const int Alignment = 64;
        private readonly float[] _array;
        private GCHandle _handle;

        public PackedTokens(ReadOnlySpan<float> input, int tokens, int columns)
        {
            long length = PanelGemm.PackedLength(tokens, columns);
            if (length > Array.MaxLength - Alignment / sizeof(float))
                throw new ArgumentOutOfRangeException(nameof(tokens), $"{tokens} tokens of {columns} columns do not fit one array");
            Length = (int)length;
            _array = ArrayPool<float>.Shared.Rent(Length + Alignment / sizeof(float) - 1);
            _handle = GCHandle.Alloc(_array, GCHandleType.Pinned);
            nint start = _handle.AddrOfPinnedObject();
            Pointer = (float*)(start + ((Alignment - (start & (Alignment - 1))) & (Alignment - 1)));
            try
            {
                PanelGemm.PackActivations(input, tokens, columns, new Span<float>(Pointer, Length));
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        /// <summary>The first packed float, on a 64-byte boundary.</summary>
        public float* Pointer { get; }

        public int Length { get; }

        public void Dispose()
        {
            if (!_handle.IsAllocated) return;
            _handle.Free();
            ArrayPool<float>.Shared.Return(_array);
        }
    }

    /// <summary>
    /// Dense product over <paramref name="rows"/> × <paramref name="columns"/> floats at <paramref name="weights"/>
    /// (pinned or mapped): work items are (row tile × token tile); each computes dot products of its weight rows with its
    /// tokens. The weights are read once per token tile, i.e. once per window for windows up to <see cref="TokenTile"/>.
    /// </summary>
    public static unsafe void MatMulDense(float* weights, int rows, int columns, ReadOnlySpan<float> input, Span<float> output, RuntimeOptions options)
    {
        nint weightsAddress = (nint)weights;
        int tokens = input.Length / columns;
        if (tokens == 0) return;
        int rowsPerTile = TileRows(columns, tokens);
        int rowTiles = (rows + rowsPerTile - 1) / rowsPerTile;
        bool panels = UsesPanels(tokens, columns);
        int tokenTile = panels ? PanelTokenTile : TokenTile;
        int tokenTiles = (tokens + tokenTile - 1) / tokenTile;
        using var packed = panels ? new PackedTokens(input, tokens, columns) : null;
        fixed (float* inPtr = input)
        fixed (float* outPtr = output)
        {
            nint inAddress = (nint)inPtr, outAddress = (nint)outPtr, packedAddress = packed is null ? 0 : (nint)packed.Pointer;
            options.For(rowTiles * tokenTiles, (long)rows * columns * tokens, item =>
            {
                int r0 = item % rowTiles * rowsPerTile, r1 = Math.Min(rows, r0 + rowsPerTile);
                int t0 = item / rowTiles * tokenTile, t1 = Math.Min(tokens, t0 + tokenTile);
                MultiplyTile((float*)weightsAddress + (long)r0 * columns, r1 - r0, columns, (float*)inAddress, (float*)packedAddress,
                    tokens, t0, t1, (float*)outAddress, rows, r0);
            });
        }
    }

    /// <summary>
    /// y[t·rows + firstRow + i] = tile row i · x_t for the <paramref name="count"/> rows at <paramref name="tile"/> and
    /// tokens <paramref name="t0"/>..<paramref name="t1"/>: on <see cref="PanelGemm"/> when the tokens were packed for it
    /// (<paramref name="packed"/> not null, <paramref name="t0"/> a whole group; the panels ask for
    /// <paramref name="prefetchBytes"/> at <paramref name="prefetch"/> meanwhile, e.g. the next tile as stored), else
    /// <see cref="DotRows"/> on <paramref name="x"/> (all <paramref name="tokens"/> × columns). Pointers pinned by the caller.
    /// </summary>
    public static unsafe void MultiplyTile(float* tile, int count, int columns, float* x, float* packed, int tokens, int t0, int t1,
        float* y, int rows, int firstRow, byte* prefetch = null, nint prefetchBytes = 0)
    {
        if (packed is not null)
            PanelGemm.Multiply(tile, count, columns, packed + (long)t0 * columns, t1 - t0, y + (long)t0 * rows + firstRow, rows, prefetch, prefetchBytes);
        else
            DotRows(new ReadOnlySpan<float>(tile, count * columns), columns, new ReadOnlySpan<float>(x, tokens * columns), t0, t1,
                new Span<float>(y, tokens * rows), rows, firstRow);
    }

    /// <summary><see cref="TokenTile"/> for the panel kernel: whole groups of its packed tokens.</summary>
    private const int PanelTokenTile = 4 * PanelGemm.GroupTokens;

    /// <summary>
    /// y[t, firstRow + i] = tile[i] · x[t] for t in [t0, t1). Pairs of tokens meet groups of four rows in a
    /// register-blocked kernel (8 dot products share each load: 6 vector loads per 8 FMAs instead of 2 per 1); the
    /// rows and tokens left over go through <see cref="TensorPrimitives.Dot"/>. The grouping depends only on the tile,
    /// never on the thread count, so results are identical for any number of workers.
    /// </summary>
    public static void DotRows(ReadOnlySpan<float> tile, int columns, ReadOnlySpan<float> x, int t0, int t1, Span<float> y, int rows, int firstRow)
    {
        int tileRows = tile.Length / columns;
        int t = t0;
        if (Vector256.IsHardwareAccelerated && columns >= Vector256<float>.Count)
        {
            Span<float> sums = stackalloc float[8];
            for (; t + 2 <= t1; t += 2)
            {
                ReadOnlySpan<float> x0 = x.Slice(t * columns, columns), x1 = x.Slice((t + 1) * columns, columns);
                int i = 0;
                for (; i + 4 <= tileRows; i += 4)
                {
                    Dot4x2(tile.Slice(i * columns, 4 * columns), columns, x0, x1, sums);
                    sums[..4].CopyTo(y.Slice(t * rows + firstRow + i, 4));
                    sums[4..].CopyTo(y.Slice((t + 1) * rows + firstRow + i, 4));
                }
                for (; i < tileRows; i++)
                {
                    var row = tile.Slice(i * columns, columns);
                    y[t * rows + firstRow + i] = TensorPrimitives.Dot(row, x0);
                    y[(t + 1) * rows + firstRow + i] = TensorPrimitives.Dot(row, x1);
                }
            }
        }
        for (; t < t1; t++)
        {
            ReadOnlySpan<float> xt = x.Slice(t * columns, columns);
            Span<float> yt = y.Slice(t * rows + firstRow, tileRows);
            for (int i = 0; i < tileRows; i++)
                yt[i] = TensorPrimitives.Dot(tile.Slice(i * columns, columns), xt);
        }
    }

    /// <summary>sums[k] = rows[k] · x0 and sums[4 + k] = rows[k] · x1 for the four rows of <paramref name="rows4"/>.</summary>
    private static void Dot4x2(ReadOnlySpan<float> rows4, int columns, ReadOnlySpan<float> x0, ReadOnlySpan<float> x1, Span<float> sums)
    {
        ref float w = ref MemoryMarshal.GetReference(rows4);
        ref float a = ref MemoryMarshal.GetReference(x0);
        ref float b = ref MemoryMarshal.GetReference(x1);
        Vector256<float> s00 = default, s10 = default, s20 = default, s30 = default;
        Vector256<float> s01 = default, s11 = default, s21 = default, s31 = default;
        int n = Vector256<float>.Count, c = 0;
        nuint c1 = (nuint)columns, c2 = 2 * c1, c3 = 3 * c1;
        for (; c + n <= columns; c += n)
        {
            nuint o = (nuint)c;
            var xa = Vector256.LoadUnsafe(ref a, o);
            var xb = Vector256.LoadUnsafe(ref b, o);
            var r0 = Vector256.LoadUnsafe(ref w, o);
            var r1 = Vector256.LoadUnsafe(ref w, o + c1);
            var r2 = Vector256.LoadUnsafe(ref w, o + c2);
            var r3 = Vector256.LoadUnsafe(ref w, o + c3);
            s00 = Vector256.FusedMultiplyAdd(r0, xa, s00); s01 = Vector256.FusedMultiplyAdd(r0, xb, s01);
            s10 = Vector256.FusedMultiplyAdd(r1, xa, s10); s11 = Vector256.FusedMultiplyAdd(r1, xb, s11);
            s20 = Vector256.FusedMultiplyAdd(r2, xa, s20); s21 = Vector256.FusedMultiplyAdd(r2, xb, s21);
            s30 = Vector256.FusedMultiplyAdd(r3, xa, s30); s31 = Vector256.FusedMultiplyAdd(r3, xb, s31);
        }
        float t00 = Vector256.Sum(s00), t10 = Vector256.Sum(s10), t20 = Vector256.Sum(s20), t30 = Vector256.Sum(s30);
        float t01 = Vector256.Sum(s01), t11 = Vector256.Sum(s11), t21 = Vector256.Sum(s21), t31 = Vector256.Sum(s31);
        for (; c < columns; c++)
        {
            float xa = x0[c], xb = x1[c];
            t00 += rows4[c] * xa; t01 += rows4[c] * xb;
            t10 += rows4[columns + c] * xa; t11 += rows4[columns + c] * xb;
            t20 += rows4[2 * columns + c] * xa; t21 += rows4[2 * columns + c] * xb;
            t30 += rows4[3 * columns + c] * xa; t31 += rows4[3 * columns + c] * xb;
        }
        sums[0] = t00; sums[1] = t10; sums[2] = t20; sums[3] = t30;
        sums[4] = t01; sums[5] = t11; sums[6] = t21; sums[7] = t31;
    }

    /// <summary>Scalar reference of <see cref="ILinearWeight.MatMul"/> (float accumulation in order), for tests.</summary>
    public static void MatMulReference(ReadOnlySpan<float> weights, int rows, int columns, ReadOnlySpan<float> input, Span<float> output)
    {
        int tokens = input.Length / columns;
        for (int t = 0; t < tokens; t++)
            for (int r = 0; r < rows; r++)
            {
                float sum = 0;
                for (int c = 0; c < columns; c++) sum += weights[r * columns + c] * input[t * columns + c];
                output[t * rows + r] = sum;
            }
    }
}
