using Nanoscale.IO;
using Nanoscale.Tensors;
using Nanoscale.Formats;
using Nanoscale.LowRank;

namespace Nanoscale.Codecs;

/// <summary>One stored array of an encoded tensor, saved as <c>NAME.Suffix</c> in the compressed checkpoint (SPEC §8).</summary>
public sealed record EncodedPart(string Suffix, DType DType, long[] Shape, ReadOnlyMemory<byte> Data);

/// <summary>What a codec produced for one tensor: its parts, and per-tensor parameters for the metadata.</summary>
public sealed record EncodedTensor(IReadOnlyList<EncodedPart> Parts, IReadOnlyDictionary<string, string>? Parameters = null);

/// <summary>Options every codec understands.</summary>
public sealed record EncodeOptions
{
    /// <summary>Threads (default: every core).</summary>
    public Parallelism Parallelism { get; init; }

    /// <summary>Let NaN/Inf weights through (as the codec's NaN) instead of refusing the tensor (SPEC §4).</summary>
    public bool AllowNonFinite { get; init; }

    /// <summary>The name of <see cref="AllowNonFinite"/> in messages.</summary>
    public const string AllowNonFiniteName = nameof(EncodeOptions) + "." + nameof(AllowNonFinite);

    /// <summary>Input Hessians per weight from calibration text, for codecs that fit to activations (CALDERA, SPEC §11);
    /// codecs that round each weight on its own ignore it. Null: no calibration (such codecs then use H = I).</summary>
    public LowRank.CalibrationSet? Calibration { get; init; }
}

/// <summary>
/// A tensor codec: the seam between the compressed container (which knows files) and a format (which knows
/// rounding). Block formats, lossless coding and casts all implement it; the CLI finds them in <see cref="CodecRegistry"/>.
/// </summary>
public interface ITensorCodec : ICodec
{

    /// <summary>True when decoding reproduces the original bytes exactly.</summary>
    bool IsLossless { get; }

    /// <summary>Encodes one tensor (rows = all axes but the last).</summary>
    /// <exception cref="NonFiniteValueException">A NaN/Inf weight; the message names tensor and element.</exception>
    /// <exception cref="NanoscaleException">The tensor cannot be stored in this format (shape, size, dtype).</exception>
    EncodedTensor Encode(TensorView source, EncodeOptions options, CancellationToken cancellationToken = default);

    /// <summary>Opens the stored parts of one tensor for decoding.</summary>
    ITensorDecoder OpenDecoder(StoredTensor stored);
}

/// <summary>
/// Decodes a stored tensor, whole or by row ranges (the runtime decodes tiles of rows inside its products).
/// <see cref="ReadRows"/> must be safe to call from several threads at once: decoders read immutable mapped parts.
/// </summary>
public interface ITensorDecoder : IDisposable
{
    StoredTensor Stored { get; }

    /// <summary>Decodes rows <paramref name="firstRow"/>.. (count × columns floats) into <paramref name="destination"/>.</summary>
    void ReadRows(long firstRow, int count, Span<float> destination);

    /// <summary>The whole tensor in its original dtype (bit-exact for lossless codecs; rounded to nearest even otherwise).</summary>
    void ReadOriginal(Stream destination);

    /// <summary>y[i] = row (firstRow + i) · x straight from the stored codes (<see cref="IBlockCodec.TryDotRows"/>);
    /// false when the codec has no such kernel.</summary>
    bool TryDotRows(long firstRow, int count, ReadOnlySpan<float> x, Span<float> y) => false;

    /// <summary>Where rows <paramref name="firstRow"/>.. (<paramref name="count"/>) lie as stored in memory (the codes,
    /// without a block format's scales), for the runtime to ask for them ahead of decoding; false when they are not
    /// in memory as such (entropy-coded parts).</summary>
    bool TryStoredRows(long firstRow, int count, out nint address, out nint length)
    {
        (address, length) = (0, 0);
        return false;
    }

    /// <summary>Where row 0 lies when the stored rows are little-endian BF16 in memory (a bf16 cast), else 0: the runtime
    /// then its panel kernel broadcasts them as stored instead of decoding tiles (<c>PanelGemm.MultiplyBf16</c>).</summary>
    nint Bf16Address => 0;

    /// <summary>Whether <see cref="TryDotRowsMany"/> is a real several-vector kernel (<see cref="IBlockCodec.HasDotRowsMany"/>).</summary>
    bool HasDotRowsMany => false;

    /// <summary>The most vectors one <see cref="TryDotRowsMany"/> call takes (<see cref="IBlockCodec.MaxDotVectors"/>).</summary>
    int MaxDotVectors => 8;

    /// <summary><see cref="TryDotRows"/> for several vectors (<see cref="IBlockCodec.TryDotRowsMany"/>): x is
    /// <c>vectors × columns</c>, vector v's results go to <c>y[v·yStride + i]</c>.</summary>
    bool TryDotRowsMany(long firstRow, int count, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        int columns = x.Length / Math.Max(1, vectors);
        for (int v = 0; v < vectors; v++)
            if (!TryDotRows(firstRow, count, x.Slice(v * columns, columns), y.Slice(v * yStride, count))) return false;
        return true;
    }
}

/// <summary>
/// A decoder whose rows are <c>ŵ = (q + l·R)·V</c> (CALDERA): a base matrix Q, a rank-k part L·R and an input-side
/// transform V. A product of many tokens applies them in that factored form — V and R once per window on the inputs
/// (<see cref="PrepareWindow"/>), Q's rows decoded tile by tile (<see cref="ReadBaseRows"/>), L as one thin product per
/// tile (<see cref="AddLowRank"/>) — instead of rebuilding and rotating every row.
/// </summary>
internal interface IFactoredDecoder
{
    /// <summary>k: the rank of the L·R part (0 for none).</summary>
    int Rank { get; }

    /// <summary>For each of <paramref name="tokens"/> inputs (<paramref name="x"/>: tokens × columns): x' = V·x into
    /// <paramref name="transformed"/> (same shape) and t = R·x' into <paramref name="lowRank"/> (tokens × <see cref="Rank"/>).</summary>
    void PrepareWindow(ReadOnlySpan<float> x, int tokens, Span<float> transformed, Span<float> lowRank);

    /// <summary>Rows of Q alone: in the transformed input space, without the low-rank part.</summary>
    void ReadBaseRows(long firstRow, int count, Span<float> destination);

    /// <summary><c>y[v·yStride + i] += L[firstRow + i] · t_v</c> for each token v (<paramref name="lowRank"/> as
    /// <see cref="PrepareWindow"/> made it).</summary>
    void AddLowRank(long firstRow, int count, ReadOnlySpan<float> lowRank, int tokens, Span<float> y, int yStride);
}

/// <summary>A compressed tensor as stored: its logical name, shape and dtype, its codec, and its mapped parts.</summary>
public sealed class StoredTensor(string name, DType dtype, long[] shape, string spec,
    IReadOnlyDictionary<string, string> parameters, ICheckpoint container)
{
    public string Name { get; } = name;
    public DType DType { get; } = dtype;
    public long[] Shape { get; } = shape;
    public string Spec { get; } = spec;
    public IReadOnlyDictionary<string, string> Parameters { get; } = parameters;

    public long ElementCount => TensorShape.ElementCount(Shape);
    public long Columns => TensorShape.Columns(Shape);
    public long Rows => TensorShape.Rows(Shape);

    /// <summary>The stored array <c>NAME.suffix</c>.</summary>
    /// <exception cref="CheckpointFormatException">The part is missing.</exception>
    public TensorInfo Part(string suffix) => container.Find($"{Name}.{suffix}")
        ?? throw new CheckpointFormatException(container.Path, $"{Name}.{suffix}", null, $"part of {Spec} tensor {Name} is missing");

    public TensorView Map(string suffix) => container.Map(Part(suffix));

    /// <summary>The stored array <c>NAME.suffix</c>, mapped, after checking it holds <paramref name="expectedBytes"/>
    /// bytes (of <paramref name="expectedDType"/> when given).</summary>
    /// <exception cref="CheckpointFormatException">The part is missing or its size or dtype is not what the codec needs.</exception>
    public TensorView Open(string suffix, long expectedBytes, DType? expectedDType = null)
    {
        var part = Part(suffix);
        if (part.ByteLength != expectedBytes || (expectedDType is { } dtype && part.DType != dtype))
            throw new CheckpointFormatException(part.FilePath, part.Name, part.FileOffset,
                $"{Spec} of {TensorShape.Text(Shape)} needs {(expectedDType is { } d ? d.Name() + " of " : "")}{expectedBytes} bytes here, " +
                $"found {part.DType.Name()} of {part.ByteLength} bytes");
        return container.Map(part);
    }

    /// <summary>The parts <c>NAME.{prefix}.*</c> as the store of one grid-coded matrix.</summary>
    internal IGridStore Grid(string prefix) => new GridStore(this, prefix);

    /// <summary>The file that holds the tensor, for messages.</summary>
    public string ContainerPath => container.Path;

    private sealed class GridStore(StoredTensor stored, string prefix) : IGridStore
    {
        public IByteView Open(string role, long expectedBytes, DType? expectedDType) => stored.Open($"{prefix}.{role}", expectedBytes, expectedDType);
    }

    /// <summary>Bytes stored for this tensor (all parts), for bits per weight.</summary>
    public long StoredBytes(IEnumerable<string> suffixes) => suffixes.Sum(s => Part(s).ByteLength);
}
