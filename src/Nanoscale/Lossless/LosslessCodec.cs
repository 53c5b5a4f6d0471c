using System.Buffers.Binary;
using System.IO.Hashing;
using Nanoscale.Tensors;

namespace Nanoscale.Lossless;

/// <summary>What a lossless stream's header says (read and validated by <see cref="LosslessCodec.ReadInfo"/>);
/// <c>States</c> is the number of interleaved rANS states of each coded plane: 32 in streams whose chunks hold at least
/// <see cref="LosslessCodec.WideStreamMinElements"/> elements written since 2026-12-04, else 8 (both are read).</summary>
public readonly record struct LosslessStreamInfo(DType DType, PlaneLayout Layout, long ElementCount, int ChunkElements, int ChunkCount, int States)
{
    /// <summary>Length of the decoded tensor in bytes.</summary>
    public long DecodedLength => ElementCount * DType.ElementSize();
}

/// <summary>
/// Lossless coding of tensors (SPEC §9): elements are split into byte planes, each plane of each independent chunk
/// is rANS-coded with its own static table when that pays and stored raw when not, and each chunk carries an
/// XxHash3 checksum of its decoded bytes. Spans in, spans out; the stream layout is in docs/lossless.md.
/// </summary>
public static partial class LosslessCodec
{
    /// <summary>"NSLC" in ASCII.</summary>
    public static ReadOnlySpan<byte> Magic => "NSLC"u8;

    public const ushort Version = 1;
    public const int FixedHeaderBytes = 28;
    public const int MaxChunkSizeBytes = 1 << 26;

    /// <summary>Chunks of at least this many elements are coded with <see cref="Rans.WideStates"/> interleaved states
    /// (see <see cref="LosslessOptions"/>), smaller ones with <see cref="Rans.NarrowStates"/>.</summary>
    public const int WideStreamMinElements = 1 << 16;

    private const byte ModeRaw = 0;
    private const byte ModeRans = 1;
    private const int ChunkChecksumBytes = 8;

    /// <summary>Bytes a destination needs for <see cref="Encode(ReadOnlySpan{byte}, DType, Span{byte}, LosslessOptions?)"/>.</summary>
    public static int GetMaxEncodedLength(int sourceLength, DType dtype, LosslessOptions? options = null)
    {
        options ??= LosslessOptions.Default;
        options.Validate();
        var geometry = Geometry.For(sourceLength, dtype, options);
        long max = geometry.DataStart + (long)geometry.ChunkCount * (ChunkChecksumBytes + geometry.PlaneCount) + sourceLength;
        if (max > Array.MaxLength) throw new ArgumentOutOfRangeException(nameof(sourceLength), "tensor too large for one stream");
        return (int)max;
    }

    /// <summary>Encodes into a new array of exactly the encoded length.</summary>
    public static byte[] Encode(ReadOnlySpan<byte> source, DType dtype, LosslessOptions? options = null)
    {
        var buffer = new byte[GetMaxEncodedLength(source.Length, dtype, options)];
        int length = EncodeCore(source, dtype, buffer, options, wantReport: false, out _);
        Array.Resize(ref buffer, length);
        return buffer;
    }

    /// <summary>
    /// Encodes into the front of a new array of <see cref="GetMaxEncodedLength"/> bytes and returns the stream there,
    /// without trimming: the array is not cleared and its tail past the stream is (but for one window of chunks) never
    /// written, so it costs address space rather than memory, where a trimmed copy would hold the stream twice at once
    /// (a 525 MB embedding: ~350 MB saved at the peak).
    /// </summary>
    public static ReadOnlyMemory<byte> EncodeUntrimmed(ReadOnlySpan<byte> source, DType dtype, LosslessOptions? options = null)
    {
        var buffer = GC.AllocateUninitializedArray<byte>(GetMaxEncodedLength(source.Length, dtype, options));
        int length = EncodeCore(source, dtype, buffer, options, wantReport: false, out _);
        return buffer.AsMemory(0, length);
    }

    /// <summary>Encodes into a new array and reports sizes against the order-0 bound.</summary>
    public static byte[] Encode(ReadOnlySpan<byte> source, DType dtype, LosslessOptions? options, out LosslessReport report)
    {
        var buffer = new byte[GetMaxEncodedLength(source.Length, dtype, options)];
        int length = Encode(source, dtype, buffer, out report, options);
        Array.Resize(ref buffer, length);
        return buffer;
    }

    /// <summary>
    /// Encodes <paramref name="source"/> (little-endian elements of <paramref name="dtype"/>) into
    /// <paramref name="destination"/>, which needs <see cref="GetMaxEncodedLength"/> bytes. Returns the bytes written.
    /// </summary>
    public static int Encode(ReadOnlySpan<byte> source, DType dtype, Span<byte> destination, LosslessOptions? options = null) =>
        EncodeCore(source, dtype, destination, options, wantReport: false, out _);

    /// <summary>
    /// As <see cref="Encode(ReadOnlySpan{byte}, DType, Span{byte}, LosslessOptions?)"/>, and measures every plane
    /// against its order-0 bound (this costs a full histogram of planes the encoder would otherwise judge from a sample).
    /// The stream is identical with or without the report.
    /// </summary>
    public static int Encode(ReadOnlySpan<byte> source, DType dtype, Span<byte> destination, out LosslessReport report, LosslessOptions? options = null)
    {
        int length = EncodeCore(source, dtype, destination, options, wantReport: true, out var r);
        report = r!;
        return length;
    }

    private static int EncodeCore(ReadOnlySpan<byte> source, DType dtype, Span<byte> destination, LosslessOptions? options, bool wantReport,
        out LosslessReport? report)
    {
        options ??= LosslessOptions.Default;
        options.Validate();
        RequireLittleEndian();
        int elementSize = dtype.ElementSize();
        if (source.Length % elementSize != 0)
            throw new ArgumentException($"{source.Length} bytes are not whole {dtype} elements", nameof(source));
        int max = GetMaxEncodedLength(source.Length, dtype, options);
        if (destination.Length < max)
            throw new ArgumentException($"destination has {destination.Length} bytes, needs {max}", nameof(destination));

        var g = Geometry.For(source.Length, dtype, options);
        int maxChunkBytes = ChunkChecksumBytes + g.PlaneCount + g.ChunkElements * elementSize;
        var stats = new PlaneChunkStats[g.ChunkCount * g.PlaneCount];
        var lengths = new int[g.ChunkCount];
        var scratches = new System.Collections.Concurrent.ConcurrentBag<EncodeScratch>();
        // Chunks are coded a window at a time: each chunk of the window at a provisional slot of maxChunkBytes from the
        // stream's current end, then moved down to be contiguous (ascending, so no move overwrites a chunk not yet
        // moved). Only the last window's slack is ever written past the final length, so a destination of the maximum
        // length costs about the stream's size in memory, not the maximum.
        int window = 8 * Math.Max(1, options.Parallelism.Threads);
        long offset = g.DataStart;
        unsafe
        {
            fixed (byte* src = source)
            fixed (byte* dst = destination)
            {
                nint srcAddress = (nint)src, dstAddress = (nint)dst;
                for (int start = 0; start < g.ChunkCount; start += window)
                {
                    int count = Math.Min(window, g.ChunkCount - start);
                    long windowStart = offset;
                    options.Parallelism.For(count, k =>
                    {
                        int chunk = start + k;
                        if (!scratches.TryTake(out var scratch)) scratch = new EncodeScratch(g);
                        long first = (long)chunk * g.ChunkElements;
                        int elements = (int)Math.Min(g.ChunkElements, g.ElementCount - first);
                        var input = new ReadOnlySpan<byte>((byte*)srcAddress + first * elementSize, elements * elementSize);
                        var output = new Span<byte>((byte*)dstAddress + windowStart + (long)k * maxChunkBytes, maxChunkBytes);
                        lengths[chunk] = EncodeChunk(g, input, elements, output, scratch, options, wantReport, stats.AsSpan(chunk * g.PlaneCount, g.PlaneCount));
                        scratches.Add(scratch);
                    });
                    for (int k = 0; k < count; k++)
                    {
                        long provisional = windowStart + (long)k * maxChunkBytes;
                        if (provisional != offset)
                            destination.Slice((int)provisional, lengths[start + k]).CopyTo(destination[(int)offset..]);
                        offset += lengths[start + k];
                    }
                }
            }
        }

        WriteHeader(destination, g, dtype, lengths);
        report = wantReport ? LosslessReport.Create(dtype, g.Layout, g.ElementCount, source.Length, offset, stats, g.PlaneCount) : null;
        return (int)offset;
    }

    private static void WriteHeader(Span<byte> destination, Geometry g, DType dtype, int[] lengths)
    {
        Magic.CopyTo(destination);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[4..], Version);
        destination[6] = DTypeCodes.ToCode(dtype);
        destination[7] = (byte)g.Layout;
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], (ulong)g.ElementCount);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[16..], (uint)g.ChunkElements);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[20..], (uint)g.ChunkCount);
        destination[24] = (byte)g.PlaneCount;
        destination[25] = Rans.ProbBits;
        destination[26] = (byte)g.States;
        destination[27] = 0;
        for (int chunk = 0; chunk < lengths.Length; chunk++)
            BinaryPrimitives.WriteUInt32LittleEndian(destination[(FixedHeaderBytes + 4 * chunk)..], (uint)lengths[chunk]);
        int directoryEnd = FixedHeaderBytes + 4 * lengths.Length;
        BinaryPrimitives.WriteUInt64LittleEndian(destination[directoryEnd..], XxHash3.HashToUInt64(destination[..directoryEnd]));
    }

    private static int EncodeChunk(Geometry g, ReadOnlySpan<byte> input, int elements, Span<byte> output, EncodeScratch scratch,
        LosslessOptions options, bool wantReport, Span<PlaneChunkStats> stats)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(output, XxHash3.HashToUInt64(input));
        int pos = ChunkChecksumBytes;
        int n = BytePlanes.PlaneLength(g.Layout, elements, g.ElementSize);
        var planes = scratch.Planes.AsSpan(0, g.PlaneCount * n);
        BytePlanes.Split(g.Layout, input, planes);

        Span<uint> counts = stackalloc uint[256];
        Span<uint> freqs = stackalloc uint[256];
        for (int p = 0; p < g.PlaneCount; p++)
        {
            var plane = planes.Slice(p * n, n);
            int codedBytes = -1, tableBytes = 0;
            double entropyBits = double.NaN;
            long budget = (long)Math.Floor(n * (1 - options.MinimumSavings));
            bool clearlyRaw = ClearlyRaw(plane, options.MinimumSavings);
            if (!clearlyRaw || wantReport)
            {
                BytePlanes.Histogram(plane, counts);
                entropyBits = EntropyBound.Bits(counts, n);
                RansFrequencies.Normalize(counts, freqs);
                tableBytes = RansFrequencies.StoredSize(freqs);
            }
            // Coded form = mode + table + length + states + words; skip coding when even the bound cannot beat raw.
            long estimate = 1 + tableBytes + 4 + Rans.StateBytes(g.States) + (long)Math.Ceiling(entropyBits / 8);
            if (!clearlyRaw && estimate < budget)
            {
                RansFrequencies.BuildEncodeTable(freqs, scratch.EncodeTable);
                int streamBytes = Rans.Encode(plane, scratch.EncodeTable, scratch.RansOutput, g.States);
                if (1 + tableBytes + 4 + streamBytes < budget)
                {
                    output[pos] = ModeRans;
                    RansFrequencies.Write(freqs, output[(pos + 1)..]);
                    BinaryPrimitives.WriteUInt32LittleEndian(output[(pos + 1 + tableBytes)..], (uint)streamBytes);
                    scratch.RansOutput.AsSpan(0, streamBytes).CopyTo(output[(pos + 1 + tableBytes + 4)..]);
                    codedBytes = 1 + tableBytes + 4 + streamBytes;
                }
            }
            if (codedBytes < 0)
            {
                output[pos] = ModeRaw;
                plane.CopyTo(output[(pos + 1)..]);
                codedBytes = 1 + n;
            }
            pos += codedBytes;
            stats[p] = new PlaneChunkStats(n, entropyBits, tableBytes, codedBytes, output[pos - codedBytes] == ModeRans);
        }
        return pos;
    }

    /// <summary>
    /// A cheap gate before the full histogram: the order-0 entropy of every 8th symbol. A sample underestimates the
    /// entropy (by ≈ 0.01 bit at these sizes), so the estimated saving errs high and the gate only skips planes whose
    /// saving is clearly below <see cref="LosslessOptions.MinimumSavings"/> (by a 0.25% margin), such as the
    /// sign+mantissa plane of bf16 weights (~0.4% saving). Deterministic: depends on the data alone. Off when
    /// MinimumSavings is 0 (then every plane that gains is coded).
    /// </summary>
    private static bool ClearlyRaw(ReadOnlySpan<byte> plane, double minimumSavings)
    {
        const int stride = 8, minimumSample = 2048;
        if (minimumSavings <= 0.0025 || plane.Length < stride * minimumSample) return false;
        Span<uint> counts = stackalloc uint[256];
        counts.Clear();
        int samples = 0;
        for (int i = 0; i < plane.Length; i += stride, samples++) counts[plane[i]]++;
        double savings = 1 - EntropyBound.Bits(counts, samples) / samples / 8;
        return savings + 0.0025 < minimumSavings;
    }

    internal static void RequireLittleEndian()
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("lossless coding assumes a little-endian machine");
    }

    /// <summary>Sizes derived from the tensor and the options, shared by encoder and decoder.</summary>
    internal readonly record struct Geometry(PlaneLayout Layout, int ElementSize, int PlaneCount, long ElementCount, int ChunkElements, int ChunkCount, int States)
    {
        public int DataStart => FixedHeaderBytes + 4 * ChunkCount + 8;

        public static Geometry For(int sourceLength, DType dtype, LosslessOptions options)
        {
            var layout = BytePlanes.LayoutFor(dtype);
            int elementSize = dtype.ElementSize();
            long elements = sourceLength / elementSize;
            int chunkElements = Math.Max(1, options.ChunkSizeBytes / elementSize);
            int chunkCount = (int)((elements + chunkElements - 1) / chunkElements);
            int states = options.InterleavedStates != 0 ? options.InterleavedStates
                : Math.Min(chunkElements, elements) >= WideStreamMinElements ? Rans.WideStates : Rans.NarrowStates;
            return new Geometry(layout, elementSize, BytePlanes.PlaneCount(layout), elements, chunkElements, chunkCount, states);
        }

        /// <summary>The geometry a stream's header describes.</summary>
        public static Geometry Of(LosslessStreamInfo info) =>
            new(info.Layout, info.DType.ElementSize(), BytePlanes.PlaneCount(info.Layout), info.ElementCount, info.ChunkElements, info.ChunkCount, info.States);
    }

    private sealed class EncodeScratch(Geometry g)
    {
        public readonly byte[] Planes = new byte[g.ChunkElements * g.ElementSize];
        public readonly byte[] RansOutput = new byte[Rans.MaxEncodedLength(BytePlanes.PlaneLength(g.Layout, g.ChunkElements, g.ElementSize), g.States)];
        public readonly RansEncSymbol[] EncodeTable = new RansEncSymbol[256];
    }
}

/// <summary>What the encoder measured for one plane of one chunk.</summary>
internal readonly record struct PlaneChunkStats(int Symbols, double EntropyBits, int TableBytes, int CodedBytes, bool Coded);
