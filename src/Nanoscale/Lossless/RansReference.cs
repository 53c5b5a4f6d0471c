using System.Buffers.Binary;

namespace Nanoscale.Lossless;

/// <summary>
/// Plain scalar twin of <see cref="Rans"/>: the textbook formulas with a real division and a linear symbol
/// search, one state array, every read bounds-checked by the span. It exists so tests can check the fast coder
/// byte for byte (STYLE §2); it is not used by the codec.
/// </summary>
internal static class RansReference
{
    public static byte[] Encode(ReadOnlySpan<byte> symbols, ReadOnlySpan<uint> freqs, int states)
    {
        const uint m = Rans.ProbScale, lower = Rans.StateLowerBound;
        var starts = Starts(freqs);
        var state = new uint[states];
        Array.Fill(state, lower);
        var words = new List<ushort>(); // emitted in reverse stream order
        for (int i = symbols.Length - 1; i >= 0; i--)
        {
            int k = i % states;
            uint s = symbols[i], f = freqs[(int)s], x = state[k];
            if (f == 0) throw new ArgumentException($"symbol {s} has zero frequency");
            // x must be in I_s = [f·L/M, f·b·L/M) before the update (see Rans).
            if ((ulong)x >= (ulong)f << (32 - Rans.ProbBits))
            {
                words.Add((ushort)x);
                x >>= 16;
            }
            state[k] = x / f * m + x % f + starts[s];
        }
        var result = new byte[Rans.StateBytes(states) + 2 * words.Count];
        for (int k = 0; k < states; k++) BinaryPrimitives.WriteUInt32LittleEndian(result.AsSpan(4 * k), state[k]);
        for (int w = 0; w < words.Count; w++)
            BinaryPrimitives.WriteUInt16LittleEndian(result.AsSpan(Rans.StateBytes(states) + 2 * w), words[words.Count - 1 - w]);
        return result;
    }

    /// <summary>Decodes <paramref name="count"/> symbols of a stream of <paramref name="states"/> interleaved states, or returns null when the stream is not exactly valid.</summary>
    public static byte[]? Decode(ReadOnlySpan<byte> stream, ReadOnlySpan<uint> freqs, int count, int states)
    {
        const uint m = Rans.ProbScale, lower = Rans.StateLowerBound;
        var starts = Starts(freqs);
        if (stream.Length < Rans.StateBytes(states) || (stream.Length & 1) != 0) return null;
        var state = new uint[states];
        for (int k = 0; k < states; k++)
        {
            state[k] = BinaryPrimitives.ReadUInt32LittleEndian(stream[(4 * k)..]);
            if (state[k] < lower) return null;
        }
        int pos = Rans.StateBytes(states);
        var output = new byte[count];
        for (int i = 0; i < count; i++)
        {
            int k = i % states;
            uint x = state[k], slot = x % m;
            int s = 0;
            while (!(starts[s] <= slot && slot < starts[s] + freqs[s])) s++;
            output[i] = (byte)s;
            x = freqs[s] * (x / m) + slot - starts[s];
            if (x < lower)
            {
                if (pos + 2 > stream.Length) return null;
                x = (x << 16) | BinaryPrimitives.ReadUInt16LittleEndian(stream[pos..]);
                pos += 2;
            }
            state[k] = x;
        }
        if (pos != stream.Length) return null;
        foreach (uint x in state) if (x != lower) return null;
        return output;
    }

    private static uint[] Starts(ReadOnlySpan<uint> freqs)
    {
        var starts = new uint[257];
        for (int s = 0; s < 256; s++) starts[s + 1] = starts[s] + freqs[s];
        return starts;
    }
}
