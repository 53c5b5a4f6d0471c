using System.Buffers;

namespace Nanoscale.Runtime;

/// <summary>
/// Base for compressed weights: a codec implements <see cref="ReadRows"/> (decode whole rows, e.g. block by block),
/// and the product decodes one tile of rows at a time into a per-worker buffer and multiplies it with every token
/// of the window before moving on, so each row is decoded once per product and the matrix is never expanded. For one
/// token (the generation step) a storage that can multiply its codes directly does so (<see cref="TryDotRows"/>).
/// </summary>
internal abstract class RowDecodedLinearWeight : ILinearWeight
{
    protected RowDecodedLinearWeight(int rows, int columns)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(columns);
        Rows = rows;
        Columns = columns;
    }

    public int Rows { get; }

    public int Columns { get; }

    public abstract void ReadRows(int firstRow, int count, Span<float> destination);

    /// <summary>y[i] = row (firstRow + i) · x for one token, computed on the stored codes without decoding the rows;
    /// false when the storage has no such kernel (then the product decodes rows).</summary>
    protected virtual bool TryDotRows(int firstRow, int count, ReadOnlySpan<float> x, Span<float> y) => false;

    /// <summary><see cref="TryDotRows"/> for a few tokens at once (x is <c>vectors × Columns</c>; token v's results go to
    /// <c>y[v·yStride + i]</c>): by default the one-token kernel per token on the same rows, which are in the cache
    /// after the first; storages that unpack codes override it to unpack once.</summary>
    protected virtual bool TryDotRowsMany(int firstRow, int count, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        for (int v = 0; v < vectors; v++)
            if (!TryDotRows(firstRow, count, x.Slice(v * Columns, Columns), y.Slice(v * yStride, count))) return false;
        return true;
    }

    /// <summary>The rows as stored when they are little-endian BF16 in memory (row r at <c>+ r · Columns</c>), else null:
    /// then the panel kernel broadcasts them as stored for tiles of many tokens (<see cref="PanelGemm.MultiplyBf16"/>)
    /// instead of decoded into a float tile first. Valid while the weight lives.</summary>
    protected virtual unsafe ushort* Bf16Rows => null;

    /// <summary>Where rows <paramref name="firstRow"/>.. (<paramref name="count"/>) lie as stored in memory (their codes;
    /// a block format's scales apart), so a tile's product can ask for the next tile's bytes while it computes; false
    /// when they are not in memory as such (e.g. entropy-coded).</summary>
    protected virtual bool StoredRows(int firstRow, int count, out nint address, out nint length)
    {
        (address, length) = (0, 0);
        return false;
    }

    /// <summary>Up to this many tokens (a token factory step of several sequences) run on the stored codes; longer
    /// windows decode tiles and reuse each across all their tokens.</summary>
    internal const int MaxFusedTokens = 16;

    /// <summary>The most tokens one <see cref="TryDotRowsMany"/> call takes (its kernel's limit); a fused product of
    /// more calls it per such chunk of tokens.</summary>
    protected virtual int MaxDotVectors => 8;

    /// <summary>Whether <see cref="TryDotRows"/> applies: 0 not asked yet, 1 yes, −1 no. It depends only on the
    /// storage and the CPU, so the answer of the first one-token product holds for the weight's life.</summary>
    private int _dotSupport;

    private bool SupportsDot(ReadOnlySpan<float> input, Span<float> output)
    {
        if (_dotSupport == 0) _dotSupport = TryDotRows(0, 1, input, output[..1]) ? 1 : -1;
        return _dotSupport > 0;
    }

    /// <summary>Whether <see cref="TryDotRowsMany"/> unpacks each row once for all its vectors (then windows may run on
    /// the codes too, <see cref="RuntimeOptions.FusedWindows"/>).</summary>
    protected virtual bool HasDotRowsMany => false;

    /// <summary>The factored form of a storage whose rows are <c>(q + l·R)·V</c> (CALDERA), or null: then a window's
    /// tiles decode Q's rows alone and multiply them with the window's inputs transformed once, and the rank-k part is
    /// two thin products, instead of every row being rebuilt and rotated.</summary>
    protected virtual IFactoredRows? Factored => null;

    /// <summary>The product of <paramref name="tokens"/> (≤ <see cref="MaxFusedTokens"/>, or any number with
    /// <paramref name="wholeTiles"/>: a window's, see <see cref="TileProducts"/>) on the stored codes, in tiles of rows
    /// (<see cref="RowsPerFusedTile"/>) that the threads share out.</summary>
    private unsafe void FusedProduct(ReadOnlySpan<float> input, Span<float> output, int tokens, RuntimeOptions options, bool wholeTiles = false)
    {
        int perTile = RowsPerFusedTile(tokens, options, wholeTiles);
        long product = Formats.KeptActivations.NewProduct();
        fixed (float* inPtr = input)
        fixed (float* outPtr = output)
        {
            nint inAddress = (nint)inPtr, outAddress = (nint)outPtr;
            options.For((Rows + perTile - 1) / perTile, (long)Rows * Columns * tokens,
                tile => FusedTile(tile, perTile, tokens, inAddress, outAddress, product, wholeTiles));
        }
    }

    /// <summary>
    /// Rows per tile of a fused product: 16 large tiles for one token. For several (a token factory's step),
    /// <see cref="TilesPerThread"/> tiles a thread in whole sixteens of rows (the wide kernel's groups; the others take
    /// eights), so a thread that finishes its own takes the others' last ones: the two vCPUs of the VM measured do not run
    /// at one speed (one was at times ~30% slower for seconds), and with one tile a thread each product waited for the
    /// slower (a 16-sequence step of the SmolLM2-shaped model 18.2 ms against 14.1–14.4 when they ran alike, the caller
    /// waiting 3.9 ms of it at the ends of loops; with four tiles a thread 14.2–16.6, never more than 1 ms waiting). A
    /// tile's only fixed cost is each group's preparation: its thread's activation set, made at its first tile, holds
    /// for the product's others without a comparison (<see cref="Formats.KeptActivations.Product"/>). Tokens that take
    /// more than one kernel call a tile (a window's, <paramref name="wholeTiles"/>, or more than the storage's
    /// <see cref="MaxDotVectors"/>) keep one tile a thread: each tile quantizes every chunk of tokens again.
    /// </summary>
    private int RowsPerFusedTile(int tokens, RuntimeOptions options, bool wholeTiles = false)
    {
        if (tokens == 1) return (Rows + 15) / 16;
        bool oneCall = !wholeTiles && tokens <= Math.Clamp(MaxDotVectors, 1, MaxFusedTokens);
        int tiles = options.Parallelism.Threads * (oneCall ? TilesPerThread : 1);
        return ((Rows + tiles - 1) / tiles + 15) & ~15;
    }

    /// <summary>Tiles per thread of a several-token product on the codes (<see cref="RowsPerFusedTile"/>).</summary>
    internal const int TilesPerThread = 4;

    /// <summary>Tile <paramref name="tile"/> of a fused product: rows tile·perTile.. of every token (input and output
    /// at the addresses, pinned by the caller). More tokens than one kernel call takes go in chunks: with
    /// <paramref name="wholeTiles"/> each chunk over the whole tile (each chunk's activations quantized once), else
    /// over blocks of rows that stay in the second-level cache.</summary>
    private unsafe void FusedTile(int tile, int perTile, int tokens, nint inAddress, nint outAddress, long product, bool wholeTiles = false)
    {
        long outer = Formats.KeptActivations.Product;
        Formats.KeptActivations.Product = product;
        try
        {
            TileProducts(tile, perTile, tokens, inAddress, outAddress, wholeTiles);
        }
        finally
        {
            Formats.KeptActivations.Product = outer;
        }
    }

    private unsafe void TileProducts(int tile, int perTile, int tokens, nint inAddress, nint outAddress, bool wholeTiles)
    {
        int rows = Rows, columns = Columns;
        int chunk = Math.Clamp(MaxDotVectors, 1, MaxFusedTokens);
        int r0 = tile * perTile, count = Math.Min(rows, r0 + perTile) - r0;
        bool done = true;
        if (tokens == 1)
            done = TryDotRows(r0, count, new ReadOnlySpan<float>((float*)inAddress, columns), new Span<float>((float*)outAddress + r0, count));
        else
        {
            // More tokens than one call takes: every call of the tile's rows for each chunk of tokens would read the
            // tile from memory again (a tile is half a matrix), so the rows go in blocks small enough to stay in the
            // second-level cache while every chunk of tokens passes over them — except a window's (wholeTiles): its
            // many chunks would quantize their activations again for every block (the lane kernels keep one set per
            // thread), which made a 64-token prompt of the 506M model a quarter slower.
            int block = tokens <= chunk || wholeTiles ? count : Math.Max(8, (int)Math.Min(count, FusedBlockWeights / columns) & ~7);
            for (int b0 = r0; b0 < r0 + count && done; b0 += block)
            {
                int n0 = Math.Min(block, r0 + count - b0);
                // Chunks never cross a multiple of MaxFusedTokens, so a window's tokens meet the kernel in the groups its
                // sixteen-token pieces would (some kernels' sums depend on how many vectors a call has).
                for (int t0 = 0, n; t0 < tokens && done; t0 += n)
                {
                    n = Math.Min(chunk, Math.Min(tokens, (t0 / MaxFusedTokens + 1) * MaxFusedTokens) - t0);
                    done = TryDotRowsMany(b0, n0, n, new ReadOnlySpan<float>((float*)inAddress + (nint)t0 * columns, n * columns),
                        new Span<float>((float*)outAddress + (nint)t0 * rows + b0, (n - 1) * rows + n0), rows);
                }
            }
        }
        if (!done) throw new InvalidOperationException($"{GetType().Name}: the fused product applied to row 0 but not to rows {r0}..{r0 + count}");
    }

    /// <summary>Weights per block of rows when a tile's tokens take several calls (<see cref="FusedTile"/>): 512 KB of
    /// BF16, half the second-level cache of the machine measured.</summary>
    private const long FusedBlockWeights = 256 * 1024;

    /// <summary>Whether <see cref="MatMul"/> of these <paramref name="tokens"/> runs on the stored codes (<see cref="FusedProduct"/>).
    /// Several tokens of a storage without a several-vector kernel (MXFP8, E3M2, MXINT8, BF16/F16 rows) run on its
    /// one-token kernel token by token only below <see cref="PanelGemm.MinTokens"/>: from there decoding a tile once and
    /// multiplying it with every token (<see cref="PanelGemm"/>) costs less (16 sequences' steps of the SmolLM2-shaped
    /// model: see docs/runtime.md).</summary>
    private bool Fuses(int tokens, ReadOnlySpan<float> input, Span<float> output, RuntimeOptions options) =>
        tokens <= Math.Min(options.FusedTokens, MaxFusedTokens) && options.FusedKernels
        && (tokens == 1 || HasDotRowsMany || !LinearKernels.UsesPanels(tokens, Columns)) && SupportsDot(input, output);

    /// <summary>
    /// The products of one input with two or three weights (a layer's q/k/v, or gate/up): when every weight multiplies
    /// its codes for these tokens, all their tiles in one parallel loop — one hand-off to the threads instead of one
    /// per weight, each thread's activations quantized once for all of them (<see cref="Formats.KeptActivations"/>) —
    /// with the same tiles and kernels as each weight's own <see cref="MatMul"/>, so the results are the same bits;
    /// otherwise each weight's <see cref="ILinearWeight.MatMul"/> in turn. <paramref name="c"/> may be null. With
    /// <paramref name="pairDone"/> (two weights of the same rows, e.g. gate and up), each item is both weights' tile
    /// followed by <paramref name="pairDone"/> on its rows, so what combines the pair runs inside the same loop.
    /// </summary>
    /// <returns>Whether <paramref name="pairDone"/> ran (on the fused path); if not, the caller combines the outputs.</returns>
    internal static unsafe bool MatMulShared(ReadOnlySpan<float> input, RuntimeOptions options,
        ILinearWeight a, Span<float> ya, ILinearWeight b, Span<float> yb, ILinearWeight? c, Span<float> yc, RowsDone? pairDone = null)
    {
        if (pairDone is not null && (c is not null || a.Rows != b.Rows))
            throw new ArgumentException("a pair's rows are combined only for two weights of the same rows", nameof(pairDone));
        if (a is RowDecodedLinearWeight ra && b is RowDecodedLinearWeight rb && (c is null || c is RowDecodedLinearWeight)
            && a.Columns == b.Columns && (c is null || c.Columns == a.Columns) && input.Length % a.Columns == 0)
        {
            var rc = c as RowDecodedLinearWeight;
            LinearKernels.Validate(a, input, ya);
            LinearKernels.Validate(b, input, yb);
            if (rc is not null) LinearKernels.Validate(rc, input, yc);
            int tokens = input.Length / a.Columns;
            if (tokens > 0 && ra.Fuses(tokens, input, ya, options) && rb.Fuses(tokens, input, yb, options)
                && (rc is null || rc.Fuses(tokens, input, yc, options)))
            {
                // A pair (the same rows) takes the same tiles, whatever each storage would cut alone.
                int pa = ra.RowsPerFusedTile(tokens, options), pb = pairDone is null ? rb.RowsPerFusedTile(tokens, options) : pa;
                int pc = rc?.RowsPerFusedTile(tokens, options) ?? 1;
                int ta = (ra.Rows + pa - 1) / pa, tb = (rb.Rows + pb - 1) / pb, tc = rc is null ? 0 : (rc.Rows + pc - 1) / pc;
                long work = ((long)ra.Rows + rb.Rows + (rc?.Rows ?? 0)) * a.Columns * tokens;
                long product = Formats.KeptActivations.NewProduct();
                fixed (float* x = input)
                fixed (float* y0 = ya)
                fixed (float* y1 = yb)
                fixed (float* y2 = yc)
                {
                    nint xAddress = (nint)x, aAddress = (nint)y0, bAddress = (nint)y1, cAddress = (nint)y2;
                    if (pairDone is not null)
                    {
                        // Same rows, same tiles: item i is both weights' tile i, then their rows combined.
                        options.For(ta, work, i =>
                        {
                            ra.FusedTile(i, pa, tokens, xAddress, aAddress, product);
                            rb.FusedTile(i, pb, tokens, xAddress, bAddress, product);
                            pairDone(i * pa, Math.Min(ra.Rows, (i + 1) * pa) - i * pa);
                        });
                        return true;
                    }
                    options.For(ta + tb + tc, work, i =>
                    {
                        if (i < ta) ra.FusedTile(i, pa, tokens, xAddress, aAddress, product);
                        else if (i < ta + tb) rb.FusedTile(i - ta, pb, tokens, xAddress, bAddress, product);
                        else rc!.FusedTile(i - ta - tb, pc, tokens, xAddress, cAddress, product);
                    });
                }
                return false;
            }
        }
        a.MatMul(input, ya, options);
        b.MatMul(input, yb, options);
        c?.MatMul(input, yc, options);
        return false;
    }

    /// <summary>Rows <paramref name="firstRow"/>.. (<paramref name="count"/> of them) of a pair's outputs are complete for every token.</summary>
    internal delegate void RowsDone(int firstRow, int count);

    public void MatMul(ReadOnlySpan<float> input, Span<float> output, RuntimeOptions options)
    {
        LinearKernels.Validate(this, input, output);
        int tokens = input.Length / Columns;
        if (tokens == 0) return;
        // One token: if the storage multiplies its codes directly (tried once, on the first row of the first such
        // product), it does so in a few large tiles, so per-call set-up (e.g. quantizing the activations) is paid a few
        // times per product, not per tile.
        // A few tokens (several sequences' steps) likewise: every tile's codes are read once for all of them.
        if (Fuses(tokens, input, output, options))
        {
            FusedProduct(input, output, tokens, options);
            return;
        }
        // A window (a generation prompt) with FusedWindows, on a storage whose several-vector kernel unpacks once: one
        // parallel loop over the tiles, each tile's rows for every chunk of tokens the kernel takes (one pass over the
        // codes a chunk: compute-bound here, so the passes cost little). One loop instead of one per 16 tokens: prompts
        // 2–4% faster (SmolLM2-shaped mxfp4/nxfp4 at 128 tokens, the 506M nxfp4b at 64), alternated in one process;
        // the same kernel calls per chunk, so the same bits (FusedDotTests.AWindowEqualsItsChunksOfSixteenTokens).
        if (options.FusedWindows && options.FusedKernels && HasDotRowsMany && SupportsDot(input, output))
        {
            FusedProduct(input, output, tokens, options, wholeTiles: true);
            return;
        }
        TiledProduct(input, output, tokens, 0, Rows, options);
    }

    /// <summary>Rows of the product over decoded tiles only (never the fused kernels), so a slice's values are the
    /// rows the whole product's tile path gives.</summary>
    public void MatMulRows(ReadOnlySpan<float> input, int firstRow, int count, Span<float> output, RuntimeOptions options)
    {
        LinearKernels.ValidateRows(this, input, firstRow, count, output);
        int tokens = input.Length / Columns;
        if (tokens > 0 && count > 0) TiledProduct(input, output, tokens, firstRow, count, options);
    }

    /// <summary>Rows <paramref name="firstRow"/>.. (<paramref name="count"/>) of every token's product, decoded a tile
    /// of rows at a time into a pooled buffer and multiplied with all the tokens: <paramref name="output"/> is
    /// <c>tokens × count</c>.</summary>
    private unsafe void TiledProduct(ReadOnlySpan<float> input, Span<float> output, int tokens, int firstRow, int count, RuntimeOptions options)
    {
        int columns = Columns;
        int rowsPerTile = LinearKernels.TileRows(columns, tokens);
        int tiles = (count + rowsPerTile - 1) / rowsPerTile;
        var factored = Factored;
        float[]? transformed = null, lowRank = null;
        if (factored is not null)
        {
            transformed = ArrayPool<float>.Shared.Rent(tokens * columns);
            lowRank = ArrayPool<float>.Shared.Rent(Math.Max(1, tokens * factored.Rank));
            factored.PrepareWindow(input, tokens, transformed, lowRank);
        }
        // Many tokens: the panel kernel, on the tokens packed once for every tile.
        using var packed = LinearKernels.UsesPanels(tokens, columns)
            ? new LinearKernels.PackedTokens(factored is null ? input : transformed.AsSpan(0, tokens * columns), tokens, columns) : null;
        // BF16 rows as stored go into the panels directly (no float tile; the same bits), unless the products are to
        // decode rows (FusedKernels off: the reference path).
        ushort* bf16 = factored is null && packed is not null && options.FusedKernels ? Bf16Rows : null;
        try
        {
            fixed (float* inPtr = factored is null ? input : transformed)
            fixed (float* outPtr = output)
            {
                nint inAddress = (nint)inPtr, outAddress = (nint)outPtr, packedAddress = packed is null ? 0 : (nint)packed.Pointer, bf16Address = (nint)bf16;
                options.For(tiles, (long)count * columns * tokens, tile =>
                {
                    int r0 = firstRow + tile * rowsPerTile, n = Math.Min(firstRow + count, r0 + rowsPerTile) - r0;
                    // The next tile's stored bytes are asked for while this one computes (a thread's tiles are one
                    // contiguous range, Parallelism.ForEach): a 16-sequence BF16 step of the SmolLM2-shaped model went
                    // from ~54 to ~46 ms, and one of 8 from ~36 to ~28 (docs/serve.md, eighteenth session).
                    nint ahead = 0, aheadBytes = 0;
                    if (packedAddress != 0 && r0 + n < firstRow + count)
                        StoredRows(r0 + n, Math.Min(firstRow + count, r0 + n + rowsPerTile) - r0 - n, out ahead, out aheadBytes);
                    if (bf16Address != 0)
                    {
                        PanelGemm.MultiplyBf16((ushort*)bf16Address + (long)r0 * columns, n, columns, (float*)packedAddress, tokens,
                            (float*)outAddress + (r0 - firstRow), count, (byte*)ahead, aheadBytes);
                        return;
                    }
                    float[] buffer = ArrayPool<float>.Shared.Rent(n * columns);
                    try
                    {
                        if (factored is null) ReadRows(r0, n, buffer.AsSpan(0, n * columns));
                        else factored.ReadBaseRows(r0, n, buffer.AsSpan(0, n * columns));
                        fixed (float* rows = buffer)
                            LinearKernels.MultiplyTile(rows, n, columns, (float*)inAddress, (float*)packedAddress, tokens, 0, tokens,
                                (float*)outAddress, count, r0 - firstRow, (byte*)ahead, aheadBytes);
                        if (factored is { Rank: > 0 })
                            factored.AddLowRank(r0, n, lowRank!, tokens, new Span<float>((float*)outAddress, tokens * count)[(r0 - firstRow)..], count);
                    }
                    finally
                    {
                        ArrayPool<float>.Shared.Return(buffer);
                    }
                });
            }
        }
        finally
        {
            if (transformed is not null) ArrayPool<float>.Shared.Return(transformed);
            if (lowRank is not null) ArrayPool<float>.Shared.Return(lowRank);
        }
    }
}

/// <summary>
/// The factored form of a weight whose rows are <c>ŵ = (q + l·R)·V</c> (the runtime's side of CALDERA's decoder):
/// <see cref="PrepareWindow"/> gives each token's x' = V·x and t = R·x', <see cref="ReadBaseRows"/> Q's rows,
/// <see cref="AddLowRank"/> adds L·t.
/// </summary>
internal interface IFactoredRows
{
    int Rank { get; }

    void PrepareWindow(ReadOnlySpan<float> x, int tokens, Span<float> transformed, Span<float> lowRank);

    void ReadBaseRows(int firstRow, int count, Span<float> destination);

    /// <summary><c>y[v·yStride + i] += L[firstRow + i] · t_v</c>.</summary>
    void AddLowRank(int firstRow, int count, ReadOnlySpan<float> lowRank, int tokens, Span<float> y, int yStride);
}
