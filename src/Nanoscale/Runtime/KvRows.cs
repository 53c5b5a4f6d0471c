using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Nanoscale.Formats;
using Nanoscale.Tensors;

namespace Nanoscale.Runtime;

/// <summary>
/// One layer's cached keys (or values) of one sequence, rows of kvDim numbers one position after another, in the
/// session's <see cref="KvCacheType"/>: written from floats as positions are added (<see cref="Write"/>), widened back
/// to floats for windows (<see cref="Widen"/>), read directly by the attention row for steps
/// (<see cref="Kernels.AttendRows"/>).
/// </summary>
internal abstract class KvRows
{
    /// <summary>Empty rows of <paramref name="type"/> for rows of <paramref name="rowWidth"/> numbers.</summary>
    /// <exception cref="InvalidOperationException">An 8-bit cache for rows that are not whole blocks of 32.</exception>
    public static KvRows Create(KvCacheType type, int rowWidth) => Unsupported(type, rowWidth) is { } problem
        ? throw new InvalidOperationException(problem)
        : type switch
        {
            KvCacheType.F32 => new FloatKvRows(),
            KvCacheType.F16 or KvCacheType.BF16 => new HalfKvRows(type == KvCacheType.BF16),
            KvCacheType.Q8 => new Q8KvRows(),
            KvCacheType.Q4 => new Q4KvRows(),
            _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
        };

    /// <summary>Why rows of <paramref name="rowWidth"/> numbers cannot be cached as <paramref name="type"/> (q8 and q4
    /// need whole blocks of 32), or null when they can.</summary>
    public static string? Unsupported(KvCacheType type, int rowWidth) =>
        type is KvCacheType.Q8 or KvCacheType.Q4 && rowWidth % Q8KvRows.Block != 0
            ? $"{type.Name()} stores the key/value rows in blocks of {Q8KvRows.Block} numbers; this model has rows of {rowWidth} (use f16 or bf16)"
            : null;

    /// <summary>Bytes that <paramref name="numbers"/> cached numbers (whole rows) take as <paramref name="type"/>.</summary>
    public static long Bytes(KvCacheType type, long numbers) => type switch
    {
        KvCacheType.F32 => numbers * sizeof(float),
        KvCacheType.Q8 => numbers + (numbers + Q8KvRows.Block - 1) / Q8KvRows.Block * sizeof(float),
        KvCacheType.Q4 => (numbers + 1) / 2 + (numbers + Q8KvRows.Block - 1) / Q8KvRows.Block * sizeof(float),
        _ => numbers * sizeof(ushort),
    };

    /// <summary>Numbers the rows hold room for.</summary>
    public abstract long Length { get; }

    /// <summary>Grows (or sets) the room to <paramref name="numbers"/>, keeping what is written.</summary>
    public abstract void Resize(long numbers);

    /// <summary>Copies the first <paramref name="numbers"/> (whole rows) into <paramref name="destination"/>, rows of the
    /// same type with room for them: the same stored bits.</summary>
    public void CopyTo(KvRows destination, int numbers) => CopyTo(0, destination, 0, numbers);

    /// <summary>Copies <paramref name="numbers"/> from number <paramref name="from"/> into <paramref name="destination"/>
    /// (rows of the same type; the same rows may overlap) at number <paramref name="to"/>, all three whole rows: the same
    /// stored bits.</summary>
    public abstract void CopyTo(int from, KvRows destination, int to, int numbers);

    /// <summary>Stores <paramref name="source"/> at number <paramref name="offset"/> (whole rows; for q8 whole blocks).</summary>
    public abstract void Write(int offset, ReadOnlySpan<float> source);

    /// <summary>The numbers from <paramref name="offset"/> as floats, exactly as the attention row reads them.</summary>
    public abstract void Widen(int offset, Span<float> destination);
}

/// <summary>float32: the cache itself is written by the products (<see cref="Data"/>).</summary>
internal sealed class FloatKvRows : KvRows
{
    public float[] Data = [];
    public override long Length => Data.Length;
    public override void Resize(long numbers) => Array.Resize(ref Data, checked((int)numbers));
    public override void CopyTo(int from, KvRows destination, int to, int numbers) =>
        Data.AsSpan(from, numbers).CopyTo(((FloatKvRows)destination).Data.AsSpan(to));
    public override void Write(int offset, ReadOnlySpan<float> source) => source.CopyTo(Data.AsSpan(offset, source.Length));
    public override void Widen(int offset, Span<float> destination) => Data.AsSpan(offset, destination.Length).CopyTo(destination);
}

/// <summary>IEEE half or bfloat16, rounded to nearest even; F16 saturates at ±65504 (an infinite key would make every
/// score NaN), NaN stays NaN.</summary>
internal sealed class HalfKvRows(bool bfloat16) : KvRows
{
    public ushort[] Data = [];
    public bool BFloat16 { get; } = bfloat16;
    public override long Length => Data.Length;
    public override void Resize(long numbers) => Array.Resize(ref Data, checked((int)numbers));
    public override void CopyTo(int from, KvRows destination, int to, int numbers) =>
        Data.AsSpan(from, numbers).CopyTo(((HalfKvRows)destination).Data.AsSpan(to));

    public override void Write(int offset, ReadOnlySpan<float> source) => Narrow(source, Data.AsSpan(offset, source.Length), BFloat16);

    public override void Widen(int offset, Span<float> destination) =>
        TensorData.ToFloat(MemoryMarshal.AsBytes(Data.AsSpan(offset, destination.Length)), BFloat16 ? DType.BF16 : DType.F16, destination);

    /// <summary>float32 → 16 bits, rounded to nearest even (F16: saturating at ±65504).</summary>
    public static void Narrow(ReadOnlySpan<float> source, Span<ushort> destination, bool bfloat16)
    {
        if (bfloat16)
            for (int i = 0; i < source.Length; i++) destination[i] = TensorData.SingleToBFloat16(source[i]);
        else
            for (int i = 0; i < source.Length; i++)
                destination[i] = BitConverter.HalfToUInt16Bits((Half)Math.Clamp(source[i], -65504f, 65504f));
    }
}

/// <summary>
/// int8 per block of 32 consecutive numbers with a float32 scale amax/127, rounded to nearest even (the activation
/// quantizer of the integer kernels, <see cref="NibbleDot.QuantizeBlock"/>): 1.125 bytes a number. A block with a NaN
/// or an infinity keeps a non-finite scale, so it reads back as NaN rather than as wrong numbers.
/// </summary>
internal sealed class Q8KvRows : KvRows
{
    public const int Block = 32;
    public sbyte[] Codes = [];
    public float[] Scales = [];
    public override long Length => Codes.Length;

    public override void Resize(long numbers)
    {
        Array.Resize(ref Codes, checked((int)numbers));
        Array.Resize(ref Scales, checked((int)(numbers / Block)));
    }

    public override void CopyTo(int from, KvRows destination, int to, int numbers)
    {
        var rows = (Q8KvRows)destination;
        Codes.AsSpan(from, numbers).CopyTo(rows.Codes.AsSpan(to));
        Scales.AsSpan(from / Block, numbers / Block).CopyTo(rows.Scales.AsSpan(to / Block));
    }

    public override void Write(int offset, ReadOnlySpan<float> source)
    {
        for (int i = 0; i < source.Length; i += Block)
        {
            int start = offset + i;
            NibbleDot.QuantizeBlock(source.Slice(i, Block), evensThenOdds: false, Codes.AsSpan(start, Block), out float scale);
            if (!float.IsFinite(scale) || (scale == 0 && HasNonFinite(source.Slice(i, Block)))) scale = float.NaN;
            Scales[start / Block] = scale;
        }
    }

    internal static bool HasNonFinite(ReadOnlySpan<float> block)
    {
        foreach (float v in block)
            if (!float.IsFinite(v)) return true;
        return false;
    }

    public override unsafe void Widen(int offset, Span<float> destination)
    {
        int i = 0;
        if (System.Runtime.Intrinsics.X86.Avx2.IsSupported && offset % 8 == 0)
            fixed (sbyte* codes = Codes)
            fixed (float* scales = Scales)
            fixed (float* d = destination)
                // Eight codes at a time, all inside one block (the same product code × scale as the scalar loop).
                for (; i + 8 <= destination.Length; i += 8)
                    WidenEight(codes, scales, offset + i).Store(d + i);
        for (; i < destination.Length; i++)
            destination[i] = Codes[offset + i] * Scales[(offset + i) / Block];
    }

    /// <summary>Numbers index..index + 7 (index a multiple of eight, so inside one block): their codes times the
    /// block's scale (also the attention row's widening).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static unsafe Vector256<float> WidenEight(sbyte* codes, float* scales, nint index) =>
        System.Runtime.Intrinsics.X86.Avx.ConvertToVector256Single(System.Runtime.Intrinsics.X86.Avx2.ConvertToVector256Int32(codes + index))
        * Vector256.Create(scales[index >> 5]);
}

/// <summary>
/// 4-bit codes per block of 32 consecutive numbers with a float32 scale, as llama.cpp's <c>q4_0</c>: scale = the block's
/// number of largest magnitude ÷ −8, code = its quotient rounded to nearest even and kept within −8…7, stored + 8 in a
/// nibble; read back as (nibble − 8) × scale. 0.625 bytes a number. The nibbles of each eight numbers are four bytes,
/// byte t holding numbers t (low nibble) and t + 4 (high): one broadcast word and one shift per lane give the eight
/// (ggml's order, numbers j and j + 16 in byte j, would need a shift chosen per group). A block with a NaN or an infinity
/// reads back as NaN, as in <see cref="Q8KvRows"/>.
/// </summary>
internal sealed class Q4KvRows : KvRows
{
    public const int Block = Q8KvRows.Block;
    public byte[] Codes = [];
    public float[] Scales = [];
    public override long Length => 2L * Codes.Length;

    public override void Resize(long numbers)
    {
        Array.Resize(ref Codes, checked((int)(numbers / 2)));
        Array.Resize(ref Scales, checked((int)(numbers / Block)));
    }

    public override void CopyTo(int from, KvRows destination, int to, int numbers)
    {
        var rows = (Q4KvRows)destination;
        Codes.AsSpan(from / 2, numbers / 2).CopyTo(rows.Codes.AsSpan(to / 2));
        Scales.AsSpan(from / Block, numbers / Block).CopyTo(rows.Scales.AsSpan(to / Block));
    }

    public override void Write(int offset, ReadOnlySpan<float> source)
    {
        for (int i = 0; i < source.Length; i += Block)
        {
            var block = source.Slice(i, Block);
            int first = (offset + i) / Block;
            Scales[first] = Quantize(block, Codes.AsSpan(first * (Block / 2), Block / 2));
        }
    }

    /// <summary>One block into its 16 code bytes; returns the scale (NaN when the block holds a NaN or an infinity).</summary>
    public static float Quantize(ReadOnlySpan<float> block, Span<byte> codes)
    {
        float extreme = 0;
        foreach (float v in block)
            if (Math.Abs(v) > Math.Abs(extreme)) extreme = v;
        if (Q8KvRows.HasNonFinite(block))
        {
            codes.Fill(0x88);
            return float.NaN;
        }
        float scale = extreme / -8;
        for (int j = 0; j < Block / 2; j++)
        {
            int first = j / 4 * 8 + j % 4; // byte j: numbers 8⌊j/4⌋ + j mod 4 and 4 after it
            codes[j] = (byte)(Code(block[first], scale) | (Code(block[first + 4], scale) << 4));
        }
        return scale;
    }

    private static int Code(float value, float scale) => scale == 0 ? 8 : Math.Clamp((int)MathF.Round(value / scale), -8, 7) + 8;

    /// <summary>Eight at a time where the offset starts a group of eight (<see cref="WidenEight"/>, the attention row's
    /// own widening), the rest as <see cref="WidenReference"/>; equal to it bit for bit (<c>KvCacheTests</c>).</summary>
    public override unsafe void Widen(int offset, Span<float> destination)
    {
        int i = 0;
        if (System.Runtime.Intrinsics.X86.Avx2.IsSupported && offset % 8 == 0)
            fixed (byte* codes = Codes)
            fixed (float* scales = Scales)
            fixed (float* d = destination)
                for (; i + 8 <= destination.Length; i += 8)
                    WidenEight(codes, scales, offset + i).Store(d + i);
        WidenReference(offset + i, destination[i..]);
    }

    /// <summary>The scalar twin: each number's nibble − 8, times its block's scale.</summary>
    internal void WidenReference(int offset, Span<float> destination)
    {
        for (int i = 0; i < destination.Length; i++)
        {
            int n = offset + i;
            int code = (Codes[n / 8 * 4 + n % 4] >> (n % 8 / 4 * 4)) & 0x0F;
            destination[i] = (code - 8) * Scales[n / Block];
        }
    }

    /// <summary>Numbers index..index + 7 (index a multiple of eight, so inside one block): their four code bytes
    /// broadcast, each lane shifted to its nibble (byte t holds numbers t and t + 4), less 8, times the block's scale.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static unsafe Vector256<float> WidenEight(byte* codes, float* scales, nint index)
    {
        var word = Vector256.Create(*(uint*)(codes + (index >> 1)));
        var nibbles = System.Runtime.Intrinsics.X86.Avx2.ShiftRightLogicalVariable(word, Vector256.Create(0u, 8, 16, 24, 4, 12, 20, 28))
            & Vector256.Create(0x0Fu);
        return System.Runtime.Intrinsics.X86.Avx.ConvertToVector256Single(nibbles.AsInt32() - Vector256.Create(8)) * Vector256.Create(scales[index >> 5]);
    }
}
