using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Hashing;
using Nanoscale.Lossless;
using Nanoscale.Tests.Support;
using Xunit.Abstractions;
using Nanoscale.Tensors;

namespace Nanoscale.Tests.Lossless;

/// <summary>
/// Thousands of random corruptions of a real coded tensor: each must throw <see cref="LosslessFormatException"/>
/// or decode to exactly the original. Never another exception, a wrong output, or a hang.
/// </summary>
public class LosslessCorruptionTests(ITestOutputHelper output)
{
    private static readonly LosslessOptions Options = new() { ChunkSizeBytes = 16 << 10, Parallelism = new(1) };

    private static (byte[] Original, byte[] Encoded, long[] ChunkStarts) Subject(int states = 0)
    {
        // 64 Ki bf16 weights of a real tensor: 8 chunks, each with a coded exponent plane (8 interleaved rANS states at
        // this chunk size unless asked for 32, the vector decoder's streams).
        var original = TinySafetensors.Gpt2AttnBf16[0].Data[..(128 << 10)];
        var encoded = LosslessCodec.Encode(original, DType.BF16, Options with { InterleavedStates = states });
        Assert.Equal(states == 0 ? Rans.NarrowStates : states, LosslessCodec.ReadInfo(encoded).States);
        var info = LosslessCodec.ReadInfo(encoded);
        var starts = new long[info.ChunkCount + 1];
        starts[0] = LosslessCodec.FixedHeaderBytes + 4 * info.ChunkCount + 8;
        for (int c = 0; c < info.ChunkCount; c++)
            starts[c + 1] = starts[c] + BinaryPrimitives.ReadUInt32LittleEndian(encoded.AsSpan(LosslessCodec.FixedHeaderBytes + 4 * c));
        return (original, encoded, starts);
    }

    private enum Outcome { Detected, Identical }

    private static Outcome Check(byte[] original, byte[] damaged, string what)
    {
        byte[] decoded;
        try
        {
            decoded = LosslessCodec.Decode(damaged, "h.0.attn.k_proj.weight", Options);
        }
        catch (LosslessFormatException e)
        {
            Assert.Contains("h.0.attn.k_proj.weight", e.Message);
            return Outcome.Detected;
        }
        catch (Exception e)
        {
            throw new Xunit.Sdk.XunitException($"{what}: {e.GetType().Name} instead of LosslessFormatException: {e}");
        }
        if (!decoded.AsSpan().SequenceEqual(original))
            throw new Xunit.Sdk.XunitException($"{what}: decoded silently to wrong output");
        return Outcome.Identical;
    }

    [Theory]
    [InlineData(Rans.NarrowStates)]
    [InlineData(Rans.WideStates)]
    public async Task ThousandsOfRandomCorruptionsAreDetectedOrHarmless(int states)
    {
        var (original, encoded, starts) = Subject(states);
        var task = Task.Run(() =>
        {
            var rng = new Random(20240601);
            int detected = 0, identical = 0, wrongChunk = 0;
            var clock = Stopwatch.StartNew();
            for (int trial = 0; trial < 4000; trial++)
            {
                var damaged = (byte[])encoded.Clone();
                string what;
                int kind = trial % 6;
                int flipAt = -1;
                switch (kind)
                {
                    case 0: // one bit anywhere
                        flipAt = rng.Next(damaged.Length);
                        damaged[flipAt] ^= (byte)(1 << rng.Next(8));
                        what = $"bit flip at {flipAt}";
                        break;
                    case 1: // a few bits anywhere
                        int flips = 2 + rng.Next(7);
                        for (int k = 0; k < flips; k++) damaged[rng.Next(damaged.Length)] ^= (byte)(1 << rng.Next(8));
                        what = $"{flips} bit flips";
                        break;
                    case 2: // truncation
                        int keep = rng.Next(damaged.Length);
                        damaged = damaged[..keep];
                        what = $"truncated to {keep}";
                        break;
                    case 3: // extension or a chunk length off by a little, with the header checksum made valid again
                    {
                        int chunk = rng.Next(starts.Length - 1);
                        int delta = rng.Next(2) == 0 ? -1 - rng.Next(16) : 1 + rng.Next(16);
                        var span = damaged.AsSpan(LosslessCodec.FixedHeaderBytes + 4 * chunk);
                        BinaryPrimitives.WriteUInt32LittleEndian(span, (uint)(BinaryPrimitives.ReadUInt32LittleEndian(span) + delta));
                        int directoryEnd = LosslessCodec.FixedHeaderBytes + 4 * (starts.Length - 1);
                        BinaryPrimitives.WriteUInt64LittleEndian(damaged.AsSpan(directoryEnd), XxHash3.HashToUInt64(damaged.AsSpan(0, directoryEnd)));
                        if (rng.Next(2) == 0 && delta > 0) damaged = [.. damaged, .. new byte[delta]];
                        what = $"chunk {chunk} length {delta:+#;-#} with a valid header checksum";
                        break;
                    }
                    case 4: // damaged frequency table: a flip in the first bytes after a chunk's checksum
                    {
                        int chunk = rng.Next(starts.Length - 1);
                        flipAt = (int)starts[chunk] + 9 + rng.Next(60);
                        damaged[flipAt] ^= (byte)(1 << rng.Next(8));
                        what = $"table flip at {flipAt} in chunk {chunk}";
                        break;
                    }
                    default: // random bytes over a run
                    {
                        int at = rng.Next(damaged.Length), run = 1 + rng.Next(32);
                        for (int k = at; k < Math.Min(damaged.Length, at + run); k++) damaged[k] = (byte)rng.Next(256);
                        what = $"{run} random bytes at {at}";
                        break;
                    }
                }
                if (Check(original, damaged, what) == Outcome.Detected) detected++;
                else identical++;
                // A single flip inside chunk data must be blamed on that chunk.
                if (flipAt >= starts[0])
                {
                    int chunk = Array.FindLastIndex(starts, s => s <= flipAt);
                    try { LosslessCodec.Decode(damaged, "t", Options); }
                    catch (LosslessFormatException e) when (e.ChunkIndex != chunk) { wrongChunk++; }
                    catch (LosslessFormatException) { }
                }
            }
            return (detected, identical, wrongChunk, clock.Elapsed);
        });
        // WaitAsync throws TimeoutException if the trials hang.
        var (detected, identical, wrongChunk, elapsed) = await task.WaitAsync(TimeSpan.FromSeconds(120));
        output.WriteLine($"{detected} detected, {identical} harmless, {wrongChunk} blamed on the wrong chunk, in {elapsed.TotalSeconds:F1} s");
        Assert.Equal(4000, detected + identical);
        Assert.Equal(0, wrongChunk);
    }

    [Fact]
    public void EveryHeaderByteIsCheckedAndNamed()
    {
        var (original, encoded, starts) = Subject();
        for (int at = 0; at < starts[0]; at++)
        for (int bit = 0; bit < 8; bit++)
        {
            var damaged = (byte[])encoded.Clone();
            damaged[at] ^= (byte)(1 << bit);
            var e = Assert.Throws<LosslessFormatException>(() => LosslessCodec.Decode(damaged, "w", Options));
            Assert.Null(e.ChunkIndex);
            Assert.Contains("header", e.Message);
        }
        Assert.Equal(original, LosslessCodec.Decode(encoded, "w", Options));
    }

    [Fact]
    public void HeaderFieldsChangedBehindAValidHeaderChecksumAreCaught()
    {
        var (original, encoded, starts) = Subject();
        int directoryEnd = (int)starts[0] - 8;
        var rng = new Random(77);
        // (offset, width) of every header field, then values that are plausible, extreme, or off by one.
        (int Offset, int Width)[] fields = [(4, 2), (6, 1), (7, 1), (8, 8), (16, 4), (20, 4), (24, 1), (25, 1), (26, 1), (27, 1)];
        int detected = 0;
        foreach (var (offset, width) in fields)
        {
            ulong current = 0;
            for (int b = 0; b < width; b++) current |= (ulong)encoded[offset + b] << (8 * b);
            ulong[] candidates = [0, 1, 2, 3, 4, current - 1, current + 1, current * 2, current / 2, ulong.MaxValue, (ulong)rng.NextInt64()];
            foreach (ulong value in candidates)
            {
                if (value == current) continue;
                var damaged = (byte[])encoded.Clone();
                for (int b = 0; b < width; b++) damaged[offset + b] = (byte)(value >> (8 * b));
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(damaged.AsSpan(directoryEnd), XxHash3.HashToUInt64(damaged.AsSpan(0, directoryEnd)));
                try
                {
                    var decoded = LosslessCodec.Decode(damaged, "w", Options);
                    Assert.Equal(original, decoded); // only acceptable if nothing actually changed the meaning
                }
                catch (LosslessFormatException) { detected++; }
            }
        }
        Assert.True(detected > 90, $"{detected}");
    }

    [Fact]
    public void ChecksumMismatchNamesTensorChunkAndOffset()
    {
        var (_, encoded, starts) = Subject();
        var damaged = (byte[])encoded.Clone();
        damaged[starts[3]] ^= 1; // the stored checksum of chunk 3
        var e = Assert.Throws<LosslessFormatException>(() => LosslessCodec.Decode(damaged, "h.0.attn.k_proj.weight", Options));
        Assert.Equal(3, e.ChunkIndex);
        Assert.Equal(starts[3], e.Offset);
        Assert.Contains("tensor 'h.0.attn.k_proj.weight', chunk 3, byte offset", e.Message);
        Assert.Contains("checksum", e.Message);
    }
}
