using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Nanoscale.Lossless;
using Nanoscale.Tests.Support;
using Xunit.Abstractions;
using Nanoscale.Tensors;

namespace Nanoscale.Tests.Lossless;

public class LosslessCodecTests(ITestOutputHelper output)
{
    private static readonly LosslessOptions Serial = new() { Parallelism = new(1) };

    private static byte[] RoundTrip(byte[] data, DType dtype, LosslessOptions? options = null)
    {
        var encoded = LosslessCodec.Encode(data, dtype, options);
        var info = LosslessCodec.ReadInfo(encoded);
        Assert.Equal(dtype, info.DType);
        Assert.Equal(data.Length, info.DecodedLength);
        var decoded = LosslessCodec.Decode(encoded, "t", options);
        Assert.Equal(data, decoded);
        return encoded;
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.01)]
    public void Gpt2AttentionBf16TensorsRoundTripBitForBitAndBeatTheTarget(double minimumSavings)
    {
        var options = new LosslessOptions { MinimumSavings = minimumSavings };
        var reports = new List<LosslessReport>();
        foreach (var tensor in TinySafetensors.Gpt2AttnBf16)
        {
            var encoded = LosslessCodec.Encode(tensor.Data, DType.BF16, options, out var report);
            Assert.Equal(tensor.Data, LosslessCodec.Decode(encoded, tensor.Name));
            Assert.Equal(encoded.Length, report.EncodedBytes);
            reports.Add(report);
        }
        var total = LosslessReport.Sum(reports);
        foreach (var p in total.Planes)
            output.WriteLine($"{p.Name}: raw {p.RawBytes}, coded {p.CodedBytes}, H {p.EntropyBitsPerSymbol:F4} b/sym, bound {p.BoundBytes}, coded/bound {p.CodedOverBound:F5}, chunks coded {p.ChunksCoded} raw {p.ChunksRaw}");
        output.WriteLine($"{reports.Count} tensors: {total.OriginalBytes} → {total.EncodedBytes} bytes, ratio {total.Ratio:F4}:1, bound ratio {total.BoundRatio:F4}:1, encoded/bound {total.EncodedOverBound:F5}, {total.BitsPerWeight:F3} bpw");
        Assert.Equal(48, reports.Count);
        Assert.Equal(minimumSavings == 0, total.Planes[1].ChunksCoded > 0);
        Assert.True(total.Ratio >= 1.48, $"ratio {total.Ratio}");
        Assert.True(total.EncodedOverBound <= 1.01, $"encoded/bound {total.EncodedOverBound}");
    }

    [Fact]
    public void StreamsOfEightStatesWrittenBeforeTheWideOnesStillDecode()
    {
        // Streams written before 2026-12-04 interleave 8 rANS states; the header says so and the decoder follows it.
        var tensor = TinySafetensors.Gpt2AttnBf16.First();
        var narrow = LosslessCodec.Encode(tensor.Data, DType.BF16, new LosslessOptions { InterleavedStates = Rans.NarrowStates }, out var narrowReport);
        var wide = LosslessCodec.Encode(tensor.Data, DType.BF16, LosslessOptions.Default, out var wideReport);
        Assert.True(tensor.Data.Length / 2 >= LosslessCodec.WideStreamMinElements); // so the default is the wide stream
        Assert.Equal(Rans.NarrowStates, narrow[26]);
        Assert.Equal(Rans.WideStates, wide[26]);
        Assert.Equal(Rans.NarrowStates, LosslessCodec.ReadInfo(narrow).States);
        Assert.True(narrowReport.Planes[0].ChunksCoded > 0);
        Assert.Equal(tensor.Data, LosslessCodec.Decode(narrow));
        Assert.Equal(tensor.Data, LosslessCodec.Decode(wide));
        // The wider stream costs 96 more state bytes per coded plane and chunk (its words differ a little too).
        Assert.InRange(wide.Length - narrow.Length, 0, 96 * wideReport.Planes.Sum(p => p.ChunksCoded));
        Assert.True(wide.Length < narrow.Length * 1.002);
        // A small tensor keeps the narrow stream by default: there the extra state bytes would show.
        Assert.Equal(Rans.NarrowStates, LosslessCodec.Encode(tensor.Data.AsSpan(0, 2 * 60_000), DType.BF16)[26]);

        var other = wide.ToArray();
        other[26] = 16;
        var e = Assert.Throws<LosslessFormatException>(() => LosslessCodec.Decode(other, "t"));
        Assert.Contains("16 interleaved states", e.Message);
    }

    [Fact]
    public void ChunksDecodedOneAtATimeAreCheckedAgainstTheirChecksumTheFirstTime()
    {
        var tensor = TinySafetensors.Gpt2AttnBf16.First();
        var encoded = LosslessCodec.Encode(tensor.Data, DType.BF16, new LosslessOptions { ChunkSizeBytes = 64 << 10 });
        var index = LosslessCodec.ReadIndex(encoded, "t");
        Assert.True(index.Info.ChunkCount > 2);
        int chunk = 1, length = index.DecodedBytes(chunk);
        var expected = tensor.Data.AsSpan(chunk * (64 << 10), length).ToArray();
        var decoded = new byte[length];
        Assert.False(index.Verified[chunk]);
        LosslessCodec.DecodeChunk(encoded, index, chunk, decoded);
        Assert.Equal(expected, decoded);
        Assert.True(index.Verified[chunk]);
        Array.Clear(decoded);
        LosslessCodec.DecodeChunk(encoded, index, chunk, decoded); // the second time without the hash, the same bytes
        Assert.Equal(expected, decoded);

        // A flipped byte in the last (raw sign+mantissa) plane keeps the chunk's structure: only the checksum sees it,
        // so a fresh index (a newly opened model) catches it at the first decode.
        var damaged = encoded.ToArray();
        damaged[(int)index.Offsets[chunk + 1] - 3] ^= 0x10;
        var e = Assert.Throws<LosslessFormatException>(() => LosslessCodec.DecodeChunk(damaged, LosslessCodec.ReadIndex(damaged, "t"), chunk, decoded));
        Assert.Contains("checksum mismatch", e.Message);
    }

    [Fact]
    public void Stories260KFp32RoundTripsBitForBit()
    {
        var weights = TinySafetensors.Stories260KWeights();
        RoundTrip(weights, DType.F32);
        var encoded = LosslessCodec.Encode(weights, DType.F32, new LosslessOptions { ChunkSizeBytes = 64 << 10 }, out var report);
        Assert.Equal(weights, LosslessCodec.Decode(encoded));
        output.WriteLine($"stories260K fp32: ratio {report.Ratio:F4}:1, encoded/bound {report.EncodedOverBound:F5}");
        foreach (var p in report.Planes)
            output.WriteLine($"  {p.Name}: H {p.EntropyBitsPerSymbol:F3} b/sym, coded/raw {(double)p.CodedBytes / p.RawBytes:F3}, chunks coded {p.ChunksCoded} raw {p.ChunksRaw}");
        Assert.True(report.Ratio > 1.0);
    }

    [Fact]
    public void TheStreamDoesNotDependOnWhetherAReportWasAskedFor()
    {
        foreach (var options in new[] { LosslessOptions.Default, new LosslessOptions { MinimumSavings = 0 }, new LosslessOptions { MinimumSavings = 0.05 } })
        {
            var data = TinySafetensors.Gpt2AttnBf16[7].Data;
            var plain = LosslessCodec.Encode(data, DType.BF16, options);
            var reported = LosslessCodec.Encode(data, DType.BF16, options, out var report);
            Assert.Equal(plain, reported);
            Assert.Equal(plain.Length, report.EncodedBytes);
            Assert.All(report.Planes, p => Assert.False(double.IsNaN(p.EntropyBits)));
        }
    }

    [Fact]
    public void SerialAndParallelEncodersProduceIdenticalStreams()
    {
        var data = TinySafetensors.Gpt2AttnBf16[5].Data;
        var options = new LosslessOptions { ChunkSizeBytes = 100_000 };
        var serial = LosslessCodec.Encode(data, DType.BF16, options with { Parallelism = new(1) });
        var parallel = LosslessCodec.Encode(data, DType.BF16, options with { Parallelism = new(2) });
        Assert.Equal(serial, parallel);
        // Chunks are coded a window of 8 per thread at a time: the tensor's 12+ chunks cross windows of 8 and 24 differently, and the
        // untrimmed form (the stream in front of a buffer of the maximum length) is the same stream.
        Assert.Equal(serial, LosslessCodec.EncodeUntrimmed(data, DType.BF16, options with { Parallelism = new(3) }).ToArray());
        Assert.Equal(data, LosslessCodec.Decode(parallel, "t", options with { Parallelism = new(1) }));
        Assert.Equal(data, LosslessCodec.Decode(parallel, "t", options with { Parallelism = new(2) }));
    }

    public static TheoryData<DType> AllDTypes => new(Enum.GetValues<DType>());

    [Theory]
    [MemberData(nameof(AllDTypes))]
    public void EveryDTypeRoundTripsAtAwkwardLengths(DType dtype)
    {
        var rng = new Random((int)dtype);
        int size = dtype.ElementSize();
        foreach (int elements in new[] { 0, 1, 2, 3, 5, 7, 31, 33, 1000, 12345 })
        {
            var data = new byte[elements * size];
            rng.NextBytes(data);
            RoundTrip(data, dtype);
            RoundTrip(data, dtype, Serial with { ChunkSizeBytes = 64 });
            var skewed = data.Select((b, i) => (byte)(i % size == size - 1 ? 0x3C + (b & 3) : b)).ToArray();
            RoundTrip(skewed, dtype, new LosslessOptions { ChunkSizeBytes = 4096 });
        }
    }

    public static TheoryData<string> Adversarial => new() { "nan", "zeros", "subnormal", "inf", "constant", "mixed", "random" };

    private static byte[] AdversarialFloats(string kind, DType dtype, int elements)
    {
        var rng = new Random(kind.Length * 31 + (int)dtype);
        var values = new uint[elements];
        for (int i = 0; i < elements; i++)
        {
            uint r = (uint)rng.Next() ^ ((uint)rng.Next() << 16);
            // Bit patterns in fp32 terms; narrowed below for 16-bit types.
            values[i] = kind switch
            {
                "nan" => 0x7F800000u | (r & 0x007FFFFF) | 1 | (r & 0x80000000),
                "zeros" => (r & 1) << 31,
                "subnormal" => (r & 0x807FFFFF),
                "inf" => 0x7F800000u | ((r & 1) << 31),
                "constant" => 0x3F800000u,
                "mixed" => (r % 6) switch { 0 => 0x7FC00000u, 1 => 0x80000000u, 2 => r & 0x807FFFFF, 3 => 0xFF800000u, 4 => 0x00000001u, _ => r },
                _ => r,
            };
        }
        if (dtype == DType.F32) return MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
        var narrow = new ushort[elements];
        for (int i = 0; i < elements; i++)
        {
            uint v = values[i];
            narrow[i] = dtype == DType.BF16 ? (ushort)(v >> 16)
                : kind == "random" ? (ushort)v
                : (ushort)(((v >> 16) & 0x8000u) | (kind is "nan" or "inf" ? 0x7C00u : 0u) | (kind == "nan" ? (v & 0x3FFu) | 1u : kind is "subnormal" ? v & 0x3FFu : 0u));
        }
        return MemoryMarshal.AsBytes(narrow.AsSpan()).ToArray();
    }

    [Theory]
    [MemberData(nameof(Adversarial))]
    public void SpecialValuesRoundTripBitForBit(string kind)
    {
        foreach (var dtype in new[] { DType.BF16, DType.F16, DType.F32 })
        foreach (int elements in new[] { 1, 2, 3, 17, 4097, 100_001 })
        {
            var data = AdversarialFloats(kind, dtype, elements);
            var encoded = RoundTrip(data, dtype, new LosslessOptions { ChunkSizeBytes = 16 << 10 });
            if (kind == "constant" && elements > 4096) Assert.True(encoded.Length < data.Length / 20, $"{dtype} constant: {encoded.Length}");
        }
    }

    [Fact]
    public void UniformlyRandomBytesAreStoredRawWithSmallOverhead()
    {
        var data = new byte[1 << 20];
        new Random(9).NextBytes(data);
        var encoded = LosslessCodec.Encode(data, DType.BF16, new LosslessOptions { ChunkSizeBytes = 256 << 10 }, out var report);
        Assert.All(report.Planes, p => Assert.Equal(0, p.ChunksCoded));
        Assert.True(encoded.Length <= data.Length + 100, $"{encoded.Length}");
        Assert.Equal(data, LosslessCodec.Decode(encoded));
    }

    [Fact]
    public void HeaderLayoutIsPinned()
    {
        var data = new byte[] { 0x80, 0x3F, 0x00, 0x40, 0x40, 0x40 }; // 3 bf16
        var encoded = LosslessCodec.Encode(data, DType.BF16, new LosslessOptions { ChunkSizeBytes = 4 });
        Assert.Equal("NSLC"u8.ToArray(), encoded[..4]);
        Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(encoded.AsSpan(4)));
        Assert.Equal(4, encoded[6]);  // BF16 code
        Assert.Equal(1, encoded[7]);  // PlaneLayout.BFloat16
        Assert.Equal(3ul, BinaryPrimitives.ReadUInt64LittleEndian(encoded.AsSpan(8)));
        Assert.Equal(2u, BinaryPrimitives.ReadUInt32LittleEndian(encoded.AsSpan(16))); // elements per chunk
        Assert.Equal(2u, BinaryPrimitives.ReadUInt32LittleEndian(encoded.AsSpan(20))); // chunks
        Assert.Equal(new byte[] { 2, 12, 8, 0 }, encoded[24..28]); // planes, probability bits, interleaved states (8 at this size), reserved
        uint first = BinaryPrimitives.ReadUInt32LittleEndian(encoded.AsSpan(28));
        uint second = BinaryPrimitives.ReadUInt32LittleEndian(encoded.AsSpan(32));
        Assert.Equal(8 + 1 + 2 + 1 + 2, (int)first);   // checksum + two raw planes of 2 symbols
        Assert.Equal(8 + 1 + 1 + 1 + 1, (int)second);
        Assert.Equal(28 + 8 + 8 + (int)(first + second), encoded.Length);
        // Chunk 0 at 44: checksum, then plane 0 raw (exponents), plane 1 raw (sign+mantissa).
        Assert.Equal(new byte[] { 0, 0x7F, 0x80, 0, 0x00, 0x00 }, encoded[52..58]);
    }

    [Fact]
    public void WrongDestinationLengthIsAnArgumentError()
    {
        var encoded = LosslessCodec.Encode(new byte[64], DType.BF16);
        Assert.Throws<ArgumentException>(() => LosslessCodec.Decode(encoded, new byte[63]));
        Assert.Throws<ArgumentException>(() => LosslessCodec.Encode(new byte[3], DType.BF16));
        Assert.Throws<ArgumentException>(() => LosslessCodec.Encode(new byte[64], DType.BF16, new byte[10]));
    }
}
