using System.Buffers.Binary;
using System.IO.Hashing;
using Nanoscale.Tensors;

namespace Nanoscale.Lossless;

public static partial class LosslessCodec
{
    /// <summary>Reads and validates the header and chunk directory (including its checksum) without decoding.</summary>
    public static LosslessStreamInfo ReadInfo(ReadOnlySpan<byte> encoded, string? tensorName = null) =>
        ParseHeader(encoded, tensorName, out _);

    /// <summary>Decodes into a new array of <see cref="LosslessStreamInfo.DecodedLength"/> bytes.</summary>
    public static byte[] Decode(ReadOnlySpan<byte> encoded, string? tensorName = null, LosslessOptions? options = null)
    {
        var info = ParseHeader(encoded, tensorName, out _);
        var result = new byte[info.DecodedLength];
        Decode(encoded, result, tensorName, options);
        return result;
    }

    /// <summary>
    /// Decodes a whole stream into <paramref name="destination"/>, whose length must equal the decoded length.
    /// Any damage throws <see cref="LosslessFormatException"/> naming <paramref name="tensorName"/>, the chunk and
    /// the byte offset (the lowest damaged chunk when several are); the destination's contents are then unspecified.
    /// </summary>
    public static void Decode(ReadOnlySpan<byte> encoded, Span<byte> destination, string? tensorName = null, LosslessOptions? options = null)
    {
        options ??= LosslessOptions.Default;
        options.Validate();
        RequireLittleEndian();
        var info = ParseHeader(encoded, tensorName, out var chunkOffsets);
        if (destination.Length != info.DecodedLength)
            throw new ArgumentException($"destination has {destination.Length} bytes, the stream decodes to {info.DecodedLength}", nameof(destination));
        var g = Geometry.Of(info);
        var errors = new ChunkError?[g.ChunkCount];

        unsafe
        {
            fixed (byte* src = encoded)
            fixed (byte* dst = destination)
            {
                nint srcAddress = (nint)src, dstAddress = (nint)dst;
                options.Parallelism.ForEach(g.ChunkCount, () => new DecodeScratch(g), (chunk, scratch) =>
                {
                    long start = chunkOffsets[chunk], end = chunkOffsets[chunk + 1];
                    long first = (long)chunk * g.ChunkElements;
                    int elements = (int)Math.Min(g.ChunkElements, g.ElementCount - first);
                    var input = new ReadOnlySpan<byte>((byte*)srcAddress + start, (int)(end - start));
                    var output = new Span<byte>((byte*)dstAddress + first * g.ElementSize, elements * g.ElementSize);
                    errors[chunk] = DecodeChunk(g, input, elements, output, scratch, start);
                });
            }
        }

        for (int chunk = 0; chunk < errors.Length; chunk++)
            if (errors[chunk] is { } e) throw new LosslessFormatException(tensorName, chunk, e.Offset, e.Problem);
    }

    /// <summary>The header and chunk directory of a stream, read once, so chunks can be decoded one at a time
    /// (<see cref="DecodeChunk(ReadOnlySpan{byte}, ChunkIndex, int, Span{byte})"/>): what lets a product stream a coded tensor instead of decoding it whole.</summary>
    public sealed class ChunkIndex
    {
        internal ChunkIndex(LosslessStreamInfo info, long[] offsets, string? tensorName)
        {
            Info = info;
            Offsets = offsets;
            TensorName = tensorName;
            Verified = new bool[info.ChunkCount];
        }

        /// <summary>Chunks whose decoded bytes have matched their checksum once: decoding the same mapped bytes again
        /// gives the same bytes, so later decodes (every step of a model that streams its coded tensors) skip the hash,
        /// as the other codecs read their mapped bytes unchecked after opening.</summary>
        internal bool[] Verified { get; }

        public LosslessStreamInfo Info { get; }

        internal long[] Offsets { get; }

        internal string? TensorName { get; }

        /// <summary>Bytes chunk <paramref name="chunk"/> decodes to (the last one may be short).</summary>
        public int DecodedBytes(int chunk) =>
            (int)Math.Min(Info.ChunkElements, Info.ElementCount - (long)chunk * Info.ChunkElements) * Info.DType.ElementSize();
    }

    /// <summary>Reads and validates the header and chunk directory for <see cref="DecodeChunk(ReadOnlySpan{byte}, ChunkIndex, int, Span{byte})"/>.</summary>
    public static ChunkIndex ReadIndex(ReadOnlySpan<byte> encoded, string? tensorName = null)
    {
        var info = ParseHeader(encoded, tensorName, out var offsets);
        return new ChunkIndex(info, offsets, tensorName);
    }

    [ThreadStatic] private static DecodeScratch? t_scratch;

    /// <summary>
    /// Decodes one chunk of the stream <paramref name="index"/> was read from into <paramref name="destination"/>
    /// (exactly <see cref="ChunkIndex.DecodedBytes"/> long), checking its checksum the first time the chunk is decoded
    /// through this index (the structure of the chunk is checked every time). Thread-safe: each thread keeps its own
    /// scratch (one chunk's planes, at most <see cref="MaxChunkSizeBytes"/>).
    /// </summary>
    /// <exception cref="LosslessFormatException">The chunk is damaged (its offset named).</exception>
    public static void DecodeChunk(ReadOnlySpan<byte> encoded, ChunkIndex index, int chunk, Span<byte> destination)
    {
        RequireLittleEndian();
        var info = index.Info;
        ArgumentOutOfRangeException.ThrowIfNegative(chunk);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(chunk, info.ChunkCount);
        if (destination.Length != index.DecodedBytes(chunk))
            throw new ArgumentException($"destination has {destination.Length} bytes, chunk {chunk} decodes to {index.DecodedBytes(chunk)}", nameof(destination));
        var g = Geometry.Of(info);
        var scratch = t_scratch;
        if (scratch is null || scratch.Planes.Length < g.ChunkElements * g.ElementSize) t_scratch = scratch = new DecodeScratch(g);
        long start = index.Offsets[chunk], end = index.Offsets[chunk + 1];
        if (end > encoded.Length) throw new LosslessFormatException(index.TensorName, chunk, encoded.Length, $"stream is {encoded.Length} bytes, chunk {chunk} ends at {end}");
        int elements = destination.Length / g.ElementSize;
        bool verified = Volatile.Read(ref index.Verified[chunk]);
        if (DecodeChunk(g, encoded[(int)start..(int)end], elements, destination, scratch, start, checksum: !verified) is { } e)
            throw new LosslessFormatException(index.TensorName, chunk, e.Offset, e.Problem);
        if (!verified) Volatile.Write(ref index.Verified[chunk], true);
    }

    private readonly record struct ChunkError(long Offset, string Problem);

    private static ChunkError? DecodeChunk(Geometry g, ReadOnlySpan<byte> input, int elements, Span<byte> output, DecodeScratch scratch, long streamOffset,
        bool checksum = true)
    {
        if (input.Length < ChunkChecksumBytes) return new(streamOffset, $"chunk is {input.Length} bytes, shorter than its checksum");
        ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(input);
        int pos = ChunkChecksumBytes;
        int n = BytePlanes.PlaneLength(g.Layout, elements, g.ElementSize);
        Span<uint> freqs = stackalloc uint[256];
        Span<int> rawAt = stackalloc int[4]; // offset in input of a raw plane, −1 when decoded into scratch
        rawAt.Fill(-1);
        for (int p = 0; p < g.PlaneCount; p++)
        {
            if (pos >= input.Length) return new(streamOffset + pos, $"plane {p}: chunk ends before the plane's mode byte");
            byte mode = input[pos++];
            if (mode == ModeRaw)
            {
                if (input.Length - pos < n) return new(streamOffset + pos, $"plane {p}: raw plane needs {n} bytes, {input.Length - pos} remain");
                rawAt[p] = pos;
                pos += n;
            }
            else if (mode == ModeRans)
            {
                int tableBytes = RansFrequencies.TryRead(input[pos..], freqs, out var problem);
                if (tableBytes < 0) return new(streamOffset + pos, $"plane {p}: {problem}");
                pos += tableBytes;
                if (input.Length - pos < 4) return new(streamOffset + pos, $"plane {p}: chunk ends inside the rANS stream length");
                uint streamBytes = BinaryPrimitives.ReadUInt32LittleEndian(input[pos..]);
                pos += 4;
                if (streamBytes > input.Length - pos)
                    return new(streamOffset + pos - 4, $"plane {p}: rANS stream of {streamBytes} bytes overruns the chunk ({input.Length - pos} remain)");
                RansFrequencies.BuildDecodeTable(freqs, scratch.DecodeTable, g.States);
                var plane = scratch.Planes.AsSpan(p * n, n);
                var status = Rans.Decode(input.Slice(pos, (int)streamBytes), scratch.DecodeTable, plane, g.States, out int at);
                if (status != RansStatus.Ok)
                    return new(streamOffset + pos + at, $"plane {p}: rANS stream is corrupt ({Describe(status)})");
                pos += (int)streamBytes;
            }
            else return new(streamOffset + pos - 1, $"plane {p}: unknown mode {mode} (expected 0 raw or 1 rANS)");
        }
        if (pos != input.Length) return new(streamOffset + pos, $"{input.Length - pos} bytes after the last plane");

        var scratchPlanes = scratch.Planes.AsSpan();
        ReadOnlySpan<byte> Plane(int p, ReadOnlySpan<byte> chunk, Span<byte> decoded, ReadOnlySpan<int> raw) =>
            p >= g.PlaneCount ? default : raw[p] >= 0 ? chunk.Slice(raw[p], n) : decoded.Slice(p * n, n);
        BytePlanes.Merge(g.Layout, Plane(0, input, scratchPlanes, rawAt), Plane(1, input, scratchPlanes, rawAt),
            Plane(2, input, scratchPlanes, rawAt), Plane(3, input, scratchPlanes, rawAt), output);
        if (!checksum) return null;
        ulong actual = XxHash3.HashToUInt64(output);
        if (actual != stored)
            return new(streamOffset, $"checksum mismatch: stored {stored:x16}, decoded bytes hash to {actual:x16}");
        return null;
    }

    private static string Describe(RansStatus status) => status switch
    {
        RansStatus.Truncated => "ran out of words",
        RansStatus.BadInitialState => "an initial state is below 2^16",
        RansStatus.TrailingData => "words left over after the last symbol",
        RansStatus.BadFinalState => "final states are not the encoder's initial states",
        _ => status.ToString(),
    };

    private static LosslessStreamInfo ParseHeader(ReadOnlySpan<byte> s, string? tensorName, out long[] chunkOffsets)
    {
        LosslessFormatException Bad(long offset, string problem) => new(tensorName, null, offset, problem);

        if (s.Length < FixedHeaderBytes) throw Bad(s.Length, $"stream is {s.Length} bytes, shorter than the {FixedHeaderBytes}-byte header");
        if (!s[..4].SequenceEqual(Magic)) throw Bad(0, $"magic is {Convert.ToHexString(s[..4])}, expected {Convert.ToHexString(Magic)} (\"NSLC\")");
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(s[4..]);
        if (version != Version) throw Bad(4, $"version {version}, this reader knows {Version}");
        if (!DTypeCodes.TryFromCode(s[6], out var dtype)) throw Bad(6, $"unknown dtype code {s[6]}");
        var layout = BytePlanes.LayoutFor(dtype);
        if (s[7] != (byte)layout) throw Bad(7, $"plane layout {s[7]} does not match dtype {dtype} (expected {(byte)layout})");
        ulong elementCount = BinaryPrimitives.ReadUInt64LittleEndian(s[8..]);
        int elementSize = dtype.ElementSize();
        if (elementCount > (ulong)(Array.MaxLength / elementSize)) throw Bad(8, $"element count {elementCount} is too large for one stream");
        uint chunkElements = BinaryPrimitives.ReadUInt32LittleEndian(s[16..]);
        if (chunkElements == 0 || chunkElements > MaxChunkSizeBytes / elementSize)
            throw Bad(16, $"chunk of {chunkElements} elements is outside 1…{MaxChunkSizeBytes / elementSize}");
        uint chunkCount = BinaryPrimitives.ReadUInt32LittleEndian(s[20..]);
        ulong expectedChunks = (elementCount + chunkElements - 1) / chunkElements;
        if (chunkCount != expectedChunks) throw Bad(20, $"chunk count {chunkCount}, expected {expectedChunks} for {elementCount} elements in chunks of {chunkElements}");
        int planeCount = BytePlanes.PlaneCount(layout);
        if (s[24] != planeCount) throw Bad(24, $"plane count {s[24]}, expected {planeCount} for {dtype}");
        if (s[25] != Rans.ProbBits) throw Bad(25, $"probability precision {s[25]} bits, expected {Rans.ProbBits}");
        if (!Rans.IsStateCount(s[26])) throw Bad(26, $"{s[26]} interleaved states, expected {Rans.WideStates} (or {Rans.NarrowStates} in older streams)");
        if (s[27] != 0) throw Bad(27, $"reserved byte is {s[27]}, expected 0");

        long directoryEnd = FixedHeaderBytes + 4L * chunkCount;
        if (s.Length < directoryEnd + 8) throw Bad(s.Length, $"stream ends inside the chunk directory ({chunkCount} chunks need {directoryEnd + 8} header bytes)");
        ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(s[(int)directoryEnd..]);
        ulong actual = XxHash3.HashToUInt64(s[..(int)directoryEnd]);
        if (stored != actual) throw Bad(directoryEnd, $"header checksum mismatch: stored {stored:x16}, header hashes to {actual:x16}");

        chunkOffsets = new long[chunkCount + 1];
        long offset = directoryEnd + 8;
        for (int chunk = 0; chunk < chunkCount; chunk++)
        {
            chunkOffsets[chunk] = offset;
            offset += BinaryPrimitives.ReadUInt32LittleEndian(s[(FixedHeaderBytes + 4 * chunk)..]);
        }
        chunkOffsets[chunkCount] = offset;
        if (offset != s.Length) throw Bad(Math.Min(offset, s.Length), $"chunks end at byte {offset} but the stream is {s.Length} bytes");
        return new LosslessStreamInfo(dtype, layout, (long)elementCount, (int)chunkElements, (int)chunkCount, s[26]);
    }

    private sealed class DecodeScratch(Geometry g)
    {
        public readonly byte[] Planes = new byte[g.ChunkElements * g.ElementSize];
        public readonly RansDecodeTable DecodeTable = new();
    }
}
