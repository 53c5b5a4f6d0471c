namespace Nanoscale.Formats;

/// <summary>
/// A block codec: quantizes each row of a tensor in blocks of <see cref="BlockSize"/> elements and stores
/// per block <see cref="BytesPerBlock"/> bytes of packed element codes and <see cref="ScaleBytesPerBlock"/> bytes of scale,
/// plus <see cref="TensorDataBytes"/> bytes per tensor (SPEC §8).
/// </summary>
/// <remarks>
/// <para><b>Layout.</b> A tensor of shape [..., cols] is viewed as [rows, cols] (rows = product of all other axes).
/// With <c>nblocks = BlocksPerRow(cols)</c>, <c>blocks</c> is [rows, nblocks, BytesPerBlock] and <c>scales</c> is
/// [rows, nblocks, ScaleBytesPerBlock], both row-major. Element codes are packed LSB-first within the block: code i
/// occupies bits [i·w, (i+1)·w) of the block's little-endian bit stream (4-bit: element 2j in the low nibble of byte j).
/// A short final block is quantized as if padded with zeros; the padding codes are stored (as zero codes) but never
/// decoded. ggml's formats (<c>q8_0</c>, <c>q4_0</c>, …, <c>ggml-mxfp4</c>) are the exception: they keep ggml's own
/// block bytes, scale included, in <c>blocks</c> (<see cref="ScaleBytesPerBlock"/> = 0, no <c>scales</c> array), so
/// a row of blocks is a row of a GGUF tensor.</para>
/// <para><b>Driving a codec, streaming.</b> (1) If <see cref="TensorDataBytes"/> &gt; 0, create an accumulator with
/// <see cref="CreateTensorDataAccumulator"/>, <c>Add</c> every chunk of the tensor, then <c>WriteTensorData</c>
/// (NVFP4: the FP32 per-tensor scale from the tensor amax). (2) For each chunk of whole rows call
/// <see cref="Quantize"/> with the matching slices of <c>blocks</c> and <c>scales</c> and the same tensor data.
/// Chunks are independent, so they may be processed in any order. (3) <see cref="Dequantize"/> likewise works on any
/// range of rows.</para>
/// <para>Every implementation has a plain reference kernel and a fast kernel (see <see cref="CodecKernel"/>) that
/// produce byte-identical output.</para>
/// </remarks>
public interface IBlockCodec : ICodec
{
    /// <summary>Elements per block (32 for MX, 16 for NVFP4).</summary>
    int BlockSize { get; }

    /// <summary>Bytes of packed element codes per block (BlockSize × element bits / 8).</summary>
    int BytesPerBlock { get; }

    /// <summary>Bytes of scale (and selector) data per block; 0 when the scale is inside the block (ggml's formats).</summary>
    int ScaleBytesPerBlock { get; }

    /// <summary>Bytes stored once per tensor (NVFP4: 4, the FP32 tensor scale, little-endian; MX: 0).</summary>
    int TensorDataBytes { get; }

    /// <summary>Blocks per row: <c>ceil(cols / BlockSize)</c>.</summary>
    int BlocksPerRow(int cols);

    /// <summary>Stored bits (codes, scales and tensor data) divided by <c>rows·cols</c>.</summary>
    double BitsPerWeight(long rows, long cols);

    /// <summary>Starts the per-tensor pass. For codecs with <see cref="TensorDataBytes"/> = 0 the accumulator does
    /// nothing and may be skipped; non-finite input is then reported by <see cref="Quantize"/>.</summary>
    ITensorDataAccumulator CreateTensorDataAccumulator(CodecOptions options);

    /// <summary>
    /// Quantizes <paramref name="rowCount"/> rows of <paramref name="cols"/> floats.
    /// </summary>
    /// <param name="source">rowCount·cols floats, row-major.</param>
    /// <param name="rowCount">Rows in this chunk.</param>
    /// <param name="cols">Elements per row (the tensor's last axis).</param>
    /// <param name="tensorData">The tensor's data from the accumulator (<see cref="TensorDataBytes"/> bytes).</param>
    /// <param name="options">Kernel, parallelism and non-finite policy.</param>
    /// <param name="firstElementIndex">Flat index of <c>source[0]</c> in the whole tensor; errors report
    /// <c>firstElementIndex + offset</c>.</param>
    /// <param name="blocks">Destination: rowCount·BlocksPerRow(cols)·BytesPerBlock bytes.</param>
    /// <param name="scales">Destination: rowCount·BlocksPerRow(cols)·ScaleBytesPerBlock bytes.</param>
    /// <exception cref="NonFiniteValueException">A NaN/Inf input under <see cref="NonFinitePolicy.Throw"/>
    /// (the one with the lowest index when several are found).</exception>
    /// <exception cref="ArgumentException">A span is too short.</exception>
    void Quantize(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        CodecOptions options, long firstElementIndex, Span<byte> blocks, Span<byte> scales);

    /// <summary>Decodes <paramref name="rowCount"/> rows into <paramref name="destination"/> (rowCount·cols floats).</summary>
    void Dequantize(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, CodecOptions options, Span<float> destination);

    /// <summary>
    /// y[r] = Σ_c W[r, c]·x[c] for the <paramref name="rowCount"/> rows stored in <paramref name="blocks"/> and
    /// <paramref name="scales"/>, straight from the codes, without decoding a row into floats (one token's product, the
    /// generation step). False when this codec or CPU has no such kernel; then the caller decodes rows instead.
    /// </summary>
    bool TryDotRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y) => false;

    /// <summary>Whether many tokens are worth multiplying on the codes (<see cref="TryDotRowsMany"/> unpacking each row
    /// once for all the vectors, faster than decoding tiles for the runtime's panel kernel): then windows and steps of
    /// eight or more sequences run on the codes; else they decode tiles, and only steps of a few sequences call
    /// <see cref="TryDotRowsMany"/>.</summary>
    bool HasDotRowsMany(int cols) => false;

    /// <summary>The most vectors one <see cref="TryDotRowsMany"/> call takes on rows of <paramref name="cols"/>
    /// (callers with more split them).</summary>
    int MaxDotVectors(int cols) => 8;

    /// <summary>
    /// <see cref="TryDotRows"/> for <paramref name="vectors"/> activation vectors at once (a few sequences' tokens in one
    /// step, the token factory): <paramref name="x"/> is <c>vectors × cols</c>, and vector v's results go to
    /// <c>y[v·yStride + r]</c>. Each block is read once for all the vectors. By default the one-vector kernel runs per
    /// vector on the same rows (which are then in the cache); codecs with an unpack step override it to unpack once.
    /// </summary>
    bool TryDotRowsMany(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        for (int v = 0; v < vectors; v++)
            if (!TryDotRows(blocks, scales, tensorData, rowCount, cols, x.Slice(v * cols, cols), y.Slice(v * yStride, rowCount)))
                return false;
        return true;
    }
}
