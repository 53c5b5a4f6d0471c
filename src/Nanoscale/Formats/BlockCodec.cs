using System.Runtime.CompilerServices;

namespace Nanoscale.Formats;

/// <summary>
/// The driver every block codec shares (SPEC §8), written once: the argument checks against the layout, the choice
/// between the plain reference and the fast kernels, the split of rows over threads, the row/block loops and the
/// bits-per-weight arithmetic. A format supplies only what is its own: a reference quantizer and dequantizer, and
/// one-block kernels for the fast path (<see cref="IBlockQuantizer"/>, <see cref="IBlockDequantizer"/>) that it runs
/// through <see cref="QuantizeBlocks"/> and <see cref="DequantizeBlocks"/>.
/// </summary>
/// <remarks>
/// A block's metadata word (its scale, and NxFP's selectors) is stored little-endian in <see cref="ScaleBytesPerBlock"/>
/// bytes (<see cref="ReadWord"/>, <see cref="WriteWord"/>); a format that keeps its scale inside the block (ggml's)
/// has no scale bytes and no word. The loops hand a kernel each block of a row, the short final
/// block zero-padded (<see cref="BlockPacking.BlockOf"/>), and decode a short final block into a scratch block whose
/// first elements are then copied, so kernels always see whole blocks.
/// </remarks>
internal abstract class BlockCodec : IBlockCodec
{
    /// <summary>Below about 64K elements per part the thread hand-off costs more than it saves.</summary>
    private const int MinElementsPerThread = 65536;

    protected BlockCodec(string spec, int blockSize, int bytesPerBlock, int scaleBytesPerBlock, int tensorDataBytes)
    {
        Spec = spec;
        BlockSize = blockSize;
        BytesPerBlock = bytesPerBlock;
        ScaleBytesPerBlock = scaleBytesPerBlock;
        TensorDataBytes = tensorDataBytes;
    }

    public string Spec { get; }

    public int BlockSize { get; }

    public int BytesPerBlock { get; }

    public int ScaleBytesPerBlock { get; }

    public int TensorDataBytes { get; }

    public int BlocksPerRow(int cols) => (cols + BlockSize - 1) / BlockSize;

    public double BitsPerWeight(long rows, long cols) =>
        ((double)rows * BlocksPerRow(checked((int)cols)) * (BytesPerBlock + ScaleBytesPerBlock) * 8 + TensorDataBytes * 8)
        / ((double)rows * cols);

    public virtual ITensorDataAccumulator CreateTensorDataAccumulator(CodecOptions options) => NoTensorData.Instance;

    /// <inheritdoc cref="IBlockCodec.TryDotRows"/>
    public virtual bool TryDotRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y) => false;

    /// <inheritdoc cref="IBlockCodec.TryDotRowsMany"/>
    /// <inheritdoc cref="IBlockCodec.HasDotRowsMany"/>
    public virtual bool HasDotRowsMany(int cols) => false;

    /// <inheritdoc cref="IBlockCodec.MaxDotVectors"/>
    public virtual int MaxDotVectors(int cols) => 8;

    public virtual bool TryDotRowsMany(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        for (int v = 0; v < vectors; v++)
            if (!TryDotRows(blocks, scales, tensorData, rowCount, cols, x.Slice(v * cols, cols), y.Slice(v * yStride, rowCount)))
                return false;
        return true;
    }

    /// <summary>The span checks every <see cref="TryDotRows"/> kernel makes before it reads: whole rows of blocks and
    /// scales, an activation per column, an output per row.</summary>
    /// <exception cref="ArgumentException">A span is too short.</exception>
    protected void CheckDotSpans(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y)
    {
        long blockCount = (long)rowCount * BlocksPerRow(cols);
        if (blocks.Length < blockCount * BytesPerBlock || scales.Length < blockCount * ScaleBytesPerBlock || x.Length < cols || y.Length < rowCount)
            throw new ArgumentException($"{Spec}: spans too short for {rowCount} rows of {cols}");
    }

    public override string ToString() => Spec;

    public unsafe void Quantize(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        CodecOptions options, long firstElementIndex, Span<byte> blocks, Span<byte> scales)
    {
        CheckShape(rowCount, cols);
        Need("source", (long)rowCount * cols, source.Length);
        CheckSpans(rowCount, cols, tensorData.Length, blocks.Length, scales.Length);
        CheckTensorData(tensorData);
        if (options.Kernel == CodecKernel.Reference)
        {
            QuantizeReference(source, rowCount, cols, tensorData, options.NonFinite, firstElementIndex, blocks, scales);
            return;
        }
        byte[] data = tensorData.ToArray();
        bool fast = options.Kernel == CodecKernel.Fast;
        var policy = options.NonFinite;
        long blockStride = (long)BlocksPerRow(cols) * BytesPerBlock, scaleStride = (long)BlocksPerRow(cols) * ScaleBytesPerBlock;
        fixed (float* sourcePtr = source)
        fixed (byte* blocksPtr = blocks, scalesPtr = scales)
        {
            nint s = (nint)sourcePtr, b = (nint)blocksPtr, sc = (nint)scalesPtr;
            options.Parallelism.ForRanges(rowCount, Math.Max(1, MinElementsPerThread / cols), (start, count) =>
                QuantizeRows(new ReadOnlySpan<float>((float*)s + (long)start * cols, count * cols), count, cols, data, policy,
                    firstElementIndex + (long)start * cols, fast,
                    new Span<byte>((byte*)b + start * blockStride, (int)(count * blockStride)),
                    new Span<byte>((byte*)sc + start * scaleStride, (int)(count * scaleStride))));
        }
    }

    public unsafe void Dequantize(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, CodecOptions options, Span<float> destination)
    {
        CheckShape(rowCount, cols);
        CheckSpans(rowCount, cols, tensorData.Length, blocks.Length, scales.Length);
        Need("destination", (long)rowCount * cols, destination.Length);
        CheckTensorData(tensorData);
        if (options.Kernel == CodecKernel.Reference)
        {
            DequantizeReference(blocks, scales, tensorData, rowCount, cols, destination);
            return;
        }
        byte[] data = tensorData.ToArray();
        bool fast = options.Kernel == CodecKernel.Fast;
        long blockStride = (long)BlocksPerRow(cols) * BytesPerBlock, scaleStride = (long)BlocksPerRow(cols) * ScaleBytesPerBlock;
        int blockBytes = blocks.Length; // the kernels may read past a block, never past the span
        fixed (float* destinationPtr = destination)
        fixed (byte* blocksPtr = blocks, scalesPtr = scales)
        {
            nint d = (nint)destinationPtr, b = (nint)blocksPtr, sc = (nint)scalesPtr;
            options.Parallelism.ForRanges(rowCount, Math.Max(1, MinElementsPerThread / cols), (start, count) =>
                DequantizeRows(new ReadOnlySpan<byte>((byte*)b + start * blockStride, (int)(blockBytes - start * blockStride)),
                    new ReadOnlySpan<byte>((byte*)sc + start * scaleStride, (int)(count * scaleStride)), data, count, cols, fast,
                    new Span<float>((float*)d + (long)start * cols, count * cols)));
        }
    }

    /// <summary>The plain reference quantizer (SPEC arithmetic, single-threaded); the fast kernels match it byte for byte.</summary>
    protected abstract void QuantizeReference(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, Span<byte> blocks, Span<byte> scales);

    /// <summary>The plain reference dequantizer.</summary>
    protected abstract void DequantizeReference(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, Span<float> destination);

    /// <summary>The fast kernels over a range of rows, usually <see cref="QuantizeBlocks"/> with the format's one-block
    /// kernel. <paramref name="fast"/> allows vector instructions where the machine has them.</summary>
    protected abstract void QuantizeRows(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, bool fast, Span<byte> blocks, Span<byte> scales);

    /// <summary>As <see cref="QuantizeRows"/>, decoding; <paramref name="blocks"/> starts at the first row's blocks and
    /// may run on past the last row's (for kernels that read a little past a block).</summary>
    protected abstract void DequantizeRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, bool fast, Span<float> destination);

    /// <summary>Checks the per-tensor data before any row is coded (NVFP4: a finite, non-negative tensor scale).</summary>
    protected virtual void CheckTensorData(ReadOnlySpan<byte> tensorData) { }

    /// <summary>The row/block loop of the fast quantizers: every block of every row through <paramref name="kernel"/>,
    /// its metadata word stored with <see cref="WriteWord"/>.</summary>
    /// <remarks>When the rows are whole blocks (the usual case) the blocks are consecutive in memory and one flat loop
    /// with few live values runs them; the general loop pads each row's short final block.</remarks>
    protected void QuantizeBlocks<TKernel>(scoped ref TKernel kernel, ReadOnlySpan<float> source, int rowCount, int cols,
        long firstElementIndex, Span<byte> blocks, Span<byte> scales)
        where TKernel : IBlockQuantizer, allows ref struct
    {
        int nb = BlocksPerRow(cols), bpb = BytesPerBlock, b = BlockSize;
        if (cols % b == 0)
        {
            int total = rowCount * nb;
            for (int i = 0; i < total; i++)
                WriteWord(scales, i, kernel.QuantizeBlock(source.Slice(i * b, b), firstElementIndex + (long)i * b, blocks.Slice(i * bpb, bpb)));
            return;
        }
        Span<float> padded = stackalloc float[b];
        for (int r = 0; r < rowCount; r++)
        {
            ReadOnlySpan<float> row = source.Slice(r * cols, cols);
            for (int j = 0; j < nb; j++)
            {
                int start = j * b;
                int word = kernel.QuantizeBlock(BlockPacking.BlockOf(row, start, padded), firstElementIndex + (long)r * cols + start,
                    blocks.Slice((r * nb + j) * bpb, bpb));
                WriteWord(scales, r * nb + j, word);
            }
        }
    }

    /// <summary>The row/block loop of the fast dequantizers: each block's word and the offset of its codes in
    /// <paramref name="blocks"/> go to <paramref name="kernel"/>, which writes one whole block of values.</summary>
    /// <remarks>As <see cref="QuantizeBlocks"/>: one flat loop when the rows are whole blocks.</remarks>
    protected void DequantizeBlocks<TKernel>(scoped ref TKernel kernel, ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales,
        int rowCount, int cols, Span<float> destination)
        where TKernel : IBlockDequantizer, allows ref struct
    {
        int nb = BlocksPerRow(cols), bpb = BytesPerBlock, b = BlockSize;
        if (cols % b == 0)
        {
            int total = rowCount * nb;
            for (int i = 0; i < total; i++)
                kernel.DequantizeBlock(ReadWord(scales, i), blocks, i * bpb, destination.Slice(i * b, b));
            return;
        }
        Span<float> tail = stackalloc float[b];
        for (int r = 0; r < rowCount; r++)
        {
            Span<float> row = destination.Slice(r * cols, cols);
            for (int j = 0; j < nb; j++)
            {
                int start = j * b, count = Math.Min(b, cols - start);
                Span<float> target = count == b ? row.Slice(start, b) : tail;
                kernel.DequantizeBlock(ReadWord(scales, r * nb + j), blocks, (r * nb + j) * bpb, target);
                if (count != b)
                    tail[..count].CopyTo(row[start..]);
            }
        }
    }

    /// <summary>The metadata word of block <paramref name="index"/> (little-endian, <see cref="ScaleBytesPerBlock"/> bytes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal int ReadWord(ReadOnlySpan<byte> scales, int index) => ScaleBytesPerBlock switch
    {
        1 => scales[index],
        0 => 0, // the block carries its scale inside (ggml's formats)
        _ => scales[2 * index] | scales[2 * index + 1] << 8,
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void WriteWord(Span<byte> scales, int index, int word)
    {
        if (ScaleBytesPerBlock == 1)
            scales[index] = (byte)word;
        else if (ScaleBytesPerBlock == 2)
        {
            scales[2 * index] = (byte)word;
            scales[2 * index + 1] = (byte)(word >> 8);
        }
    }

    private void CheckShape(int rowCount, int cols)
    {
        if (rowCount < 0)
            throw new ArgumentOutOfRangeException(nameof(rowCount), rowCount, $"{Spec}: rowCount must be ≥ 0.");
        if (cols <= 0)
            throw new ArgumentOutOfRangeException(nameof(cols), cols, $"{Spec}: cols must be > 0.");
    }

    private void CheckSpans(int rowCount, int cols, int tensorDataLength, int blocksLength, int scalesLength)
    {
        long nblocks = (long)rowCount * BlocksPerRow(cols);
        Need("blocks", nblocks * BytesPerBlock, blocksLength);
        Need("scales", nblocks * ScaleBytesPerBlock, scalesLength);
        Need("tensorData", TensorDataBytes, tensorDataLength);
    }

    private void Need(string name, long expected, int actual)
    {
        if (actual < expected)
            throw new ArgumentException($"{Spec}: {name} holds {actual} elements but the layout needs {expected}.", name);
    }
}

/// <summary>A format's fast kernel for one block, run by <see cref="BlockCodec.QuantizeBlocks"/>.</summary>
internal interface IBlockQuantizer
{
    /// <summary>Quantizes one whole block (a short final block comes zero-padded) into <paramref name="packed"/> and
    /// returns its metadata word; <paramref name="firstElementIndex"/> locates a non-finite element in errors.</summary>
    int QuantizeBlock(scoped ReadOnlySpan<float> block, long firstElementIndex, scoped Span<byte> packed);
}

/// <summary>A format's fast kernel for one block, run by <see cref="BlockCodec.DequantizeBlocks"/>.</summary>
internal interface IBlockDequantizer
{
    /// <summary>Decodes the block whose codes start at <paramref name="offset"/> in <paramref name="blocks"/> (the kernel
    /// may read past the block, within the span) into the whole block <paramref name="destination"/>.</summary>
    void DequantizeBlock(int word, scoped ReadOnlySpan<byte> blocks, int offset, scoped Span<float> destination);
}
