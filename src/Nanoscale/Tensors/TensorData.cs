using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Tensors;

/// <summary>Conversions between little-endian tensor bytes and float32.</summary>
internal static class TensorData
{
    /// <summary>Decodes little-endian elements of <paramref name="dtype"/> into float32.</summary>
    public static void ToFloat(ReadOnlySpan<byte> source, DType dtype, Span<float> destination)
    {
        int size = dtype.ElementSize();
        if (source.Length != destination.Length * size)
            throw new ArgumentException($"{source.Length} bytes of {dtype} do not make {destination.Length} elements");
        switch (dtype)
        {
            case DType.F32:
                if (BitConverter.IsLittleEndian) MemoryMarshal.Cast<byte, float>(source).CopyTo(destination);
                else for (int i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadSingleLittleEndian(source[(4 * i)..]);
                break;
            case DType.BF16:
                BFloat16ToSingle(source, destination);
                break;
            case DType.F16:
                if (BitConverter.IsLittleEndian) TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(source), destination);
                else for (int i = 0; i < destination.Length; i++)
                    destination[i] = (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(source[(2 * i)..]));
                break;
            case DType.F64:
                for (int i = 0; i < destination.Length; i++) destination[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(source[(8 * i)..]);
                break;
            case DType.I64:
                for (int i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadInt64LittleEndian(source[(8 * i)..]);
                break;
            case DType.I32:
                for (int i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadInt32LittleEndian(source[(4 * i)..]);
                break;
            case DType.I16:
                for (int i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadInt16LittleEndian(source[(2 * i)..]);
                break;
            case DType.I8:
                for (int i = 0; i < destination.Length; i++) destination[i] = (sbyte)source[i];
                break;
            case DType.U64:
                for (int i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadUInt64LittleEndian(source[(8 * i)..]);
                break;
            case DType.U32:
                for (int i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadUInt32LittleEndian(source[(4 * i)..]);
                break;
            case DType.U16:
                for (int i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadUInt16LittleEndian(source[(2 * i)..]);
                break;
            case DType.U8:
            case DType.BOOL:
                for (int i = 0; i < destination.Length; i++) destination[i] = source[i];
                break;
            default:
                throw new InputException($"reading {dtype} tensors as float32 is not supported yet");
        }
    }

    /// <summary>Encodes float32 values as little-endian <paramref name="dtype"/> (F32, BF16 or F16; rounding to nearest even).</summary>
    public static void FromFloat(ReadOnlySpan<float> source, DType dtype, Span<byte> destination)
    {
        int size = dtype.ElementSize();
        if (destination.Length != source.Length * size)
            throw new ArgumentException($"{destination.Length} bytes of {dtype} do not hold {source.Length} elements");
        switch (dtype)
        {
            case DType.F32:
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(destination[(4 * i)..], source[i]);
                break;
            case DType.BF16:
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(destination[(2 * i)..], SingleToBFloat16(source[i]));
                break;
            case DType.F16:
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(destination[(2 * i)..], BitConverter.HalfToUInt16Bits((Half)source[i]));
                break;
            default:
                throw new NotSupportedException($"writing float32 as {dtype} is not supported (use F32, BF16 or F16)");
        }
    }

    public static float BFloat16ToSingle(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>
    /// Little-endian bfloat16 bytes → float32: each value is the upper half of a float32, so widening the 16-bit
    /// lanes to 32 bits and shifting left by 16 is exact (NaN payloads, ±0 and subnormals included).
    /// </summary>
    public static void BFloat16ToSingle(ReadOnlySpan<byte> source, Span<float> destination)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated && BitConverter.IsLittleEndian)
        {
            var halves = MemoryMarshal.Cast<byte, ushort>(source);
            var bits = MemoryMarshal.Cast<float, uint>(destination);
            for (; i + Vector256<ushort>.Count <= destination.Length; i += Vector256<ushort>.Count)
            {
                var (lower, upper) = Vector256.Widen(Vector256.Create(halves.Slice(i, Vector256<ushort>.Count)));
                (lower << 16).CopyTo(bits.Slice(i, Vector256<uint>.Count));
                (upper << 16).CopyTo(bits.Slice(i + Vector256<uint>.Count, Vector256<uint>.Count));
            }
        }
        for (; i < destination.Length; i++)
            destination[i] = BFloat16ToSingle(BinaryPrimitives.ReadUInt16LittleEndian(source[(2 * i)..]));
    }

    /// <summary>
    /// y[r] = Σ_c W[r, c]·x[c] for <paramref name="count"/> little-endian BF16 or F16 rows of <paramref name="columns"/>,
    /// widened in registers and multiplied at once: one token's product reads 2 bytes per weight and writes no float
    /// row. BF16 is the top half of an f32 (a shift, or a mask for the odd weight of each 32-bit pair: <see cref="Bf16RowDot"/>); F16 is rebiased with one multiply (its magnitude bits shifted into
    /// an f32 and scaled by 2^112, exact for normal and subnormal halves alike; ±Inf and NaN are patched). False unless
    /// the dtype is one of them and the CPU has AVX2 with FMA.
    /// </summary>
    public static bool TryDotRows(ReadOnlySpan<byte> rows, DType dtype, int count, int columns, ReadOnlySpan<float> x, Span<float> y)
    {
        if (dtype is not (DType.BF16 or DType.F16) || !System.Runtime.Intrinsics.X86.Avx2.IsSupported || !System.Runtime.Intrinsics.X86.Fma.IsSupported
            || !BitConverter.IsLittleEndian)
            return false;
        if (rows.Length < (long)count * columns * 2 || x.Length < columns || y.Length < count)
            throw new ArgumentException($"spans too short for {count} {dtype} rows of {columns}");
        var weights = MemoryMarshal.Cast<byte, ushort>(rows);
        if (dtype == DType.BF16)
        {
            // BF16: x split once per call into the even/odd order Bf16RowDot reads it in, then every row.
            float[] split = System.Buffers.ArrayPool<float>.Shared.Rent(columns);
            try
            {
                SplitEvenOdd(x[..columns], split);
                for (int r = 0; r < count; r++) y[r] = Bf16RowDot(weights.Slice(r * columns, columns), split, x);
            }
            finally { System.Buffers.ArrayPool<float>.Shared.Return(split); }
            return true;
        }
        for (int r = 0; r < count; r++)
        {
            var w = weights.Slice(r * columns, columns);
            // F16 first takes the short path, which reads ±Inf/NaN halves wrongly but notices them; a row that has one
            // is done again through the widening that patches them.
            y[r] = HalfRowDot(w, x, out bool special) is var total && !special ? total : PatchedHalfRowDot(w, x);
        }
        return true;
    }

    /// <summary>
    /// <see cref="TryDotRows"/> for several vectors (<c>y[v·yStride + r] = row r · x_v</c>, x holding the vectors one
    /// after another): for BF16 each group of weights is made f32 once (<see cref="Bf16RowDot"/>'s shift and mask) and
    /// multiplied with four vectors at a time, so a step of several sequences widens every weight once per four of
    /// them instead of once per sequence; F16 one vector after another. False where <see cref="TryDotRows"/> is.
    /// </summary>
    /// <summary>Vectors per <see cref="TryDotRowsMany"/> call that callers should give (the kernel takes any number):
    /// four vectors' activations stay in L1 while a tile's rows stream past; sixteen (a 576-wide model's 37 KB, a
    /// 1536-wide one's 98 KB) were read from L2 for every row.</summary>
    public const int ManyVectorsPerCall = 4;

    public static bool TryDotRowsMany(ReadOnlySpan<byte> rows, DType dtype, int count, int columns, int vectors,
        ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        bool wide = Vector512.IsHardwareAccelerated;
        if (dtype != DType.BF16 || !(wide || System.Runtime.Intrinsics.X86.Fma.IsSupported && Vector256.IsHardwareAccelerated) || !BitConverter.IsLittleEndian)
        {
            for (int v = 0; v < vectors; v++)
                if (!TryDotRows(rows, dtype, count, columns, x.Slice(v * columns, columns), y.Slice(v * yStride, count))) return false;
            return true;
        }
        if (rows.Length < (long)count * columns * 2 || x.Length < vectors * columns || y.Length < (vectors - 1) * yStride + count)
            throw new ArgumentException($"spans too short for {count} {dtype} rows of {columns} and {vectors} vectors");
        var weights = MemoryMarshal.Cast<byte, ushort>(rows);
        float[] split = System.Buffers.ArrayPool<float>.Shared.Rent(vectors * columns);
        try
        {
            for (int v = 0; v < vectors; v++) SplitEvenOdd(x.Slice(v * columns, columns), split.AsSpan(v * columns, columns));
            for (int r = 0; r < count; r++)
                for (int v = 0; v < vectors; v += 4)
                {
                    if (wide) Bf16RowDotFour(weights.Slice(r * columns, columns), split, x, columns, v, Math.Min(4, vectors - v), y[r..], yStride);
                    else Bf16RowDotFour256(weights.Slice(r * columns, columns), split, x, columns, v, Math.Min(4, vectors - v), y[r..], yStride);
                }
        }
        finally { System.Buffers.ArrayPool<float>.Shared.Return(split); }
        return true;
    }

    /// <summary>One BF16 row times up to four vectors (<paramref name="first"/>.., <paramref name="count"/>), 32 weights
    /// per 512-bit load as in <see cref="Bf16RowDot"/>; missing vectors repeat the first and are dropped.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // optimized at once: a prompt pass alone may call it too rarely to leave tier 0
    private static void Bf16RowDotFour(ReadOnlySpan<ushort> w, ReadOnlySpan<float> split, ReadOnlySpan<float> x, int columns,
        int first, int count, Span<float> y, int yStride)
    {
        ref float s0 = ref Unsafe.Add(ref MemoryMarshal.GetReference(split), first * columns);
        ref float s1 = ref Unsafe.Add(ref s0, Math.Min(1, count - 1) * columns);
        ref float s2 = ref Unsafe.Add(ref s0, Math.Min(2, count - 1) * columns);
        ref float s3 = ref Unsafe.Add(ref s0, Math.Min(3, count - 1) * columns);
        ref uint pairs = ref Unsafe.As<ushort, uint>(ref MemoryMarshal.GetReference(w));
        var high = Vector512.Create(0xFFFF_0000u);
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        int c = 0;
        for (; c + 32 <= columns; c += 32)
        {
            var raw = Vector512.LoadUnsafe(ref pairs, (nuint)(c / 2));
            var even = Vector512.ShiftLeft(raw, 16).AsSingle();
            var odd = (raw & high).AsSingle();
            nuint e = (nuint)c, o = (nuint)(c + 16);
            a0 = Vector512.FusedMultiplyAdd(even, Vector512.LoadUnsafe(ref s0, e), a0);
            b0 = Vector512.FusedMultiplyAdd(odd, Vector512.LoadUnsafe(ref s0, o), b0);
            a1 = Vector512.FusedMultiplyAdd(even, Vector512.LoadUnsafe(ref s1, e), a1);
            b1 = Vector512.FusedMultiplyAdd(odd, Vector512.LoadUnsafe(ref s1, o), b1);
            a2 = Vector512.FusedMultiplyAdd(even, Vector512.LoadUnsafe(ref s2, e), a2);
            b2 = Vector512.FusedMultiplyAdd(odd, Vector512.LoadUnsafe(ref s2, o), b2);
            a3 = Vector512.FusedMultiplyAdd(even, Vector512.LoadUnsafe(ref s3, e), a3);
            b3 = Vector512.FusedMultiplyAdd(odd, Vector512.LoadUnsafe(ref s3, o), b3);
        }
        FinishFour([Vector512.Sum(a0 + b0), Vector512.Sum(a1 + b1), Vector512.Sum(a2 + b2), Vector512.Sum(a3 + b3)], w, x, columns, first, count, c, y, yStride);
    }

    /// <summary>The four-vector BF16 kernels' end: each vector's total plus the columns from <paramref name="c"/> on,
    /// one by one, stored for the <paramref name="count"/> real vectors.</summary>
    private static void FinishFour(ReadOnlySpan<float> totals, ReadOnlySpan<ushort> w, ReadOnlySpan<float> x, int columns, int first, int count, int c,
        Span<float> y, int yStride)
    {
        for (int v = 0; v < count; v++)
        {
            float total = totals[v];
            var xv = x.Slice((first + v) * columns, columns);
            for (int k = c; k < columns; k++) total += BFloat16ToSingle(w[k]) * xv[k];
            y[(first + v) * yStride] = total;
        }
    }

    /// <summary><see cref="Bf16RowDotFour"/> on 256-bit vectors (AVX2 and FMA): 16 weights a load, the same
    /// even/odd accumulators and order as <see cref="Bf16RowDot"/>'s AVX2 loop, so each vector's result is its bits.
    /// Without it a several-sequence step read every BF16 row once per sequence (a Zen 3 VM: 16 sequences 1.6× one).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // optimized at once: a prompt pass alone may call it too rarely to leave tier 0
    private static void Bf16RowDotFour256(ReadOnlySpan<ushort> w, ReadOnlySpan<float> split, ReadOnlySpan<float> x, int columns,
        int first, int count, Span<float> y, int yStride)
    {
        ref float s0 = ref Unsafe.Add(ref MemoryMarshal.GetReference(split), first * columns);
        ref float s1 = ref Unsafe.Add(ref s0, Math.Min(1, count - 1) * columns);
        ref float s2 = ref Unsafe.Add(ref s0, Math.Min(2, count - 1) * columns);
        ref float s3 = ref Unsafe.Add(ref s0, Math.Min(3, count - 1) * columns);
        ref uint pairs = ref Unsafe.As<ushort, uint>(ref MemoryMarshal.GetReference(w));
        var high = Vector256.Create(0xFFFF_0000u);
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        int c = 0;
        for (; c + 16 <= columns; c += 16)
        {
            var raw = Vector256.LoadUnsafe(ref pairs, (nuint)(c / 2));
            var even = Vector256.ShiftLeft(raw, 16).AsSingle();
            var odd = (raw & high).AsSingle();
            nuint e = (nuint)c, o = (nuint)(c + 8);
            a0 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(even, Vector256.LoadUnsafe(ref s0, e), a0);
            b0 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(odd, Vector256.LoadUnsafe(ref s0, o), b0);
            a1 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(even, Vector256.LoadUnsafe(ref s1, e), a1);
            b1 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(odd, Vector256.LoadUnsafe(ref s1, o), b1);
            a2 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(even, Vector256.LoadUnsafe(ref s2, e), a2);
            b2 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(odd, Vector256.LoadUnsafe(ref s2, o), b2);
            a3 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(even, Vector256.LoadUnsafe(ref s3, e), a3);
            b3 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(odd, Vector256.LoadUnsafe(ref s3, o), b3);
        }
        FinishFour([Vector256.Sum(a0 + b0), Vector256.Sum(a1 + b1), Vector256.Sum(a2 + b2), Vector256.Sum(a3 + b3)], w, x, columns, first, count, c, y, yStride);
    }

    /// <summary>One F16 row · x, each group of eight widened by <see cref="WidenHalf"/>, which patches ±Inf and NaN.</summary>
    private static float PatchedHalfRowDot(ReadOnlySpan<ushort> w, ReadOnlySpan<float> x)
    {
        int columns = w.Length, vectorEnd = columns & ~15, c = 0;
        ref float x0 = ref MemoryMarshal.GetReference(x);
        ref ushort w0 = ref MemoryMarshal.GetReference(w);
        // Two accumulators: consecutive multiply-adds do not wait on each other.
        Vector256<float> even = Vector256<float>.Zero, odd = Vector256<float>.Zero;
        for (; c < vectorEnd; c += 16)
        {
            PrefetchAhead(ref w0, c);
            var a = WidenHalf(Vector128.LoadUnsafe(ref w0, (nuint)c));
            var b = WidenHalf(Vector128.LoadUnsafe(ref w0, (nuint)(c + 8)));
            even = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(a, Vector256.LoadUnsafe(ref x0, (nuint)c), even);
            odd = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(b, Vector256.LoadUnsafe(ref x0, (nuint)(c + 8)), odd);
        }
        float total = Vector256.Sum(even + odd);
        for (; c < columns; c++) total += (float)BitConverter.UInt16BitsToHalf(w[c]) * x[c];
        return total;
    }

    /// <summary>Columns per group of <see cref="Bf16RowDot"/>: one 512-bit load of 32 BF16 weights (16 with 256 bits).</summary>
    private static int Bf16Group => Vector512.IsHardwareAccelerated ? 32 : 16;

    /// <summary>x reordered per group of <see cref="Bf16Group"/> columns: the group's even columns, then its odd ones;
    /// the columns after the last whole group stay where they are. With AVX-512 two permutes a group of 32 (a
    /// several-token BF16 product splits its activations once per block of rows: 0.46 µs for four vectors of 2048 where
    /// the element loop took 2.8–3.2, against ~40 µs for the block's 128 rows); with AVX2 a <c>vshufps</c> and a
    /// <c>vpermpd</c> for each half of a group of 16 (the one-token BF16 product splits per tile);
    /// <see cref="SplitEvenOddReference"/> is the plain twin.</summary>
    internal static void SplitEvenOdd(ReadOnlySpan<float> x, Span<float> split)
    {
        if (Bf16Group == 16 && Avx2.IsSupported)
        {
            SplitEvenOdd16(x, split);
            return;
        }
        if (Bf16Group != 32 || !System.Runtime.Intrinsics.X86.Avx512F.IsSupported)
        {
            SplitEvenOddReference(x, split);
            return;
        }
        if (split.Length < x.Length) throw new ArgumentException("split shorter than x", nameof(split));
        var evens = Vector512.Create(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        var odds = evens + Vector512<int>.One;
        int whole = x.Length / 32 * 32;
        ref float source = ref MemoryMarshal.GetReference(x);
        ref float destination = ref MemoryMarshal.GetReference(split);
        for (int c = 0; c < whole; c += 32)
        {
            var low = Vector512.LoadUnsafe(ref source, (nuint)c);
            var high = Vector512.LoadUnsafe(ref source, (nuint)(c + 16));
            System.Runtime.Intrinsics.X86.Avx512F.PermuteVar16x32x2(low, evens, high).StoreUnsafe(ref destination, (nuint)c);
            System.Runtime.Intrinsics.X86.Avx512F.PermuteVar16x32x2(low, odds, high).StoreUnsafe(ref destination, (nuint)(c + 16));
        }
        x[whole..].CopyTo(split[whole..]);
    }

    /// <summary>The AVX2 form of <see cref="SplitEvenOdd"/> for groups of 16: [x0..x7], [x8..x15] → vshufps picks
    /// [x0 x2 x8 x10 | x4 x6 x12 x14] (odds likewise), vpermpd puts the 64-bit pairs in order.</summary>
    private static void SplitEvenOdd16(ReadOnlySpan<float> x, Span<float> split)
    {
        if (split.Length < x.Length) throw new ArgumentException("split shorter than x", nameof(split));
        int whole = x.Length / 16 * 16;
        ref float source = ref MemoryMarshal.GetReference(x);
        ref float destination = ref MemoryMarshal.GetReference(split);
        for (int c = 0; c < whole; c += 16)
        {
            var low = Vector256.LoadUnsafe(ref source, (nuint)c);
            var high = Vector256.LoadUnsafe(ref source, (nuint)(c + 8));
            Avx2.Permute4x64(Avx.Shuffle(low, high, 0b10_00_10_00).AsDouble(), 0b11_01_10_00).AsSingle().StoreUnsafe(ref destination, (nuint)c);
            Avx2.Permute4x64(Avx.Shuffle(low, high, 0b11_01_11_01).AsDouble(), 0b11_01_10_00).AsSingle().StoreUnsafe(ref destination, (nuint)(c + 8));
        }
        x[whole..].CopyTo(split[whole..]);
    }

    /// <summary>The element-by-element twin of <see cref="SplitEvenOdd"/> (and its path without AVX-512).</summary>
    internal static void SplitEvenOddReference(ReadOnlySpan<float> x, Span<float> split)
    {
        int group = Bf16Group, half = group / 2, whole = x.Length / group * group;
        for (int c = 0; c < whole; c += group)
            for (int i = 0; i < half; i++)
            {
                split[c + i] = x[c + 2 * i];
                split[c + half + i] = x[c + 2 * i + 1];
            }
        x[whole..].CopyTo(split[whole..]);
    }

    /// <summary>
    /// One BF16 row · x in two operations per 16 (or 8) weights: a 32-bit lane of the loaded row holds two BF16 weights,
    /// the even column in its low half and the odd in its high half, and each is an f32 once in the high half — the
    /// even ones by a shift left of 16, the odd ones by clearing the low half — so the weights are never widened one by
    /// one; they meet x in <paramref name="split"/>'s even/odd order (<see cref="SplitEvenOdd"/>). With AVX-512, 32
    /// weights a load. The columns after the last whole group go one by one against <paramref name="x"/>.
    /// </summary>
    private static float Bf16RowDot(ReadOnlySpan<ushort> w, ReadOnlySpan<float> split, ReadOnlySpan<float> x)
    {
        int columns = w.Length, c = 0;
        ref float s0 = ref MemoryMarshal.GetReference(split);
        ref uint pairs = ref Unsafe.As<ushort, uint>(ref MemoryMarshal.GetReference(w));
        float total;
        if (Vector512.IsHardwareAccelerated)
        {
            var high = Vector512.Create(0xFFFF_0000u);
            Vector512<float> even = Vector512<float>.Zero, odd = Vector512<float>.Zero;
            for (; c + 32 <= columns; c += 32)
            {
                PrefetchAhead(ref MemoryMarshal.GetReference(w), c);
                var raw = Vector512.LoadUnsafe(ref pairs, (nuint)(c / 2));
                even = Vector512.FusedMultiplyAdd(Vector512.ShiftLeft(raw, 16).AsSingle(), Vector512.LoadUnsafe(ref s0, (nuint)c), even);
                odd = Vector512.FusedMultiplyAdd((raw & high).AsSingle(), Vector512.LoadUnsafe(ref s0, (nuint)(c + 16)), odd);
            }
            total = Vector512.Sum(even + odd);
        }
        else
        {
            var high = Vector256.Create(0xFFFF_0000u);
            Vector256<float> even = Vector256<float>.Zero, odd = Vector256<float>.Zero;
            for (; c + 16 <= columns; c += 16)
            {
                PrefetchAhead(ref MemoryMarshal.GetReference(w), c);
                var raw = Vector256.LoadUnsafe(ref pairs, (nuint)(c / 2));
                even = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(Vector256.ShiftLeft(raw, 16).AsSingle(), Vector256.LoadUnsafe(ref s0, (nuint)c), even);
                odd = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd((raw & high).AsSingle(), Vector256.LoadUnsafe(ref s0, (nuint)(c + 8)), odd);
            }
            total = Vector256.Sum(even + odd);
        }
        for (; c < columns; c++) total += BFloat16ToSingle(w[c]) * x[c];
        return total;
    }

    /// <summary>
    /// One F16 row · x in four vector operations per eight weights: each half sign-extended into 32 bits (vpmovsxwd),
    /// shifted up 13 so its exponent and mantissa sit under an f32's, the sign's copies between them cleared (the
    /// sign stays in bit 31), then rebiased by × 2^112 — exact for normal and subnormal halves. ±Inf and NaN (exponent
    /// 31) would come out finite; <paramref name="special"/> says whether the row has one (the largest exponent field
    /// seen, kept with one max per sixteen weights), and then the result must not be used.
    /// </summary>
    private static float HalfRowDot(ReadOnlySpan<ushort> w, ReadOnlySpan<float> x, out bool special)
    {
        int columns = w.Length, vectorEnd = columns & ~15, c = 0;
        ref float x0 = ref MemoryMarshal.GetReference(x);
        ref ushort w0 = ref MemoryMarshal.GetReference(w);
        var exponent = Vector256.Create((ushort)0x7C00);
        var keep = Vector256.Create(unchecked((int)0x8FFF_FFFF));
        var rebias = Vector256.Create(5.192296858534828e33f); // 2^112
        Vector256<ushort> largest = Vector256<ushort>.Zero;
        Vector256<float> even = Vector256<float>.Zero, odd = Vector256<float>.Zero;
        if (System.Runtime.Intrinsics.X86.Avx512F.IsSupported)
        {
            // The same four operations on 16 halves at a time, 32 a step (twice the AVX2 loop's weights per operation).
            var keep512 = Vector512.Create(unchecked((int)0x8FFF_FFFF));
            var rebias512 = Vector512.Create(5.192296858534828e33f);
            var exponent512 = Vector512.Create((ushort)0x7C00);
            Vector512<ushort> largest512 = Vector512<ushort>.Zero;
            Vector512<float> even512 = Vector512<float>.Zero, odd512 = Vector512<float>.Zero;
            int end32 = columns & ~31;
            for (; c < end32; c += 32)
            {
                PrefetchAhead(ref w0, c);
                largest512 = System.Runtime.Intrinsics.X86.Avx512BW.Max(largest512, Vector512.LoadUnsafe(ref w0, (nuint)c) & exponent512);
                var lo = System.Runtime.Intrinsics.X86.Avx512F.ConvertToVector512Int32(Vector256.LoadUnsafe(ref w0, (nuint)c).AsInt16());
                var hi = System.Runtime.Intrinsics.X86.Avx512F.ConvertToVector512Int32(Vector256.LoadUnsafe(ref w0, (nuint)(c + 16)).AsInt16());
                var a = (Vector512.ShiftLeft(lo, 13) & keep512).AsSingle() * rebias512;
                var b = (Vector512.ShiftLeft(hi, 13) & keep512).AsSingle() * rebias512;
                even512 = Vector512.FusedMultiplyAdd(a, Vector512.LoadUnsafe(ref x0, (nuint)c), even512);
                odd512 = Vector512.FusedMultiplyAdd(b, Vector512.LoadUnsafe(ref x0, (nuint)(c + 16)), odd512);
            }
            largest = System.Runtime.Intrinsics.X86.Avx2.Max(largest512.GetLower(), largest512.GetUpper());
            var sum = even512 + odd512;
            even = sum.GetLower();
            odd = sum.GetUpper();
        }
        for (; c < vectorEnd; c += 16)
        {
            PrefetchAhead(ref w0, c);
            var raw = Vector256.LoadUnsafe(ref w0, (nuint)c);
            largest = System.Runtime.Intrinsics.X86.Avx2.Max(largest, raw & exponent);
            var lo = System.Runtime.Intrinsics.X86.Avx2.ConvertToVector256Int32(Vector128.LoadUnsafe(ref w0, (nuint)c).AsInt16());
            var hi = System.Runtime.Intrinsics.X86.Avx2.ConvertToVector256Int32(Vector128.LoadUnsafe(ref w0, (nuint)(c + 8)).AsInt16());
            var a = (System.Runtime.Intrinsics.X86.Avx2.ShiftLeftLogical(lo, 13) & keep).AsSingle() * rebias;
            var b = (System.Runtime.Intrinsics.X86.Avx2.ShiftLeftLogical(hi, 13) & keep).AsSingle() * rebias;
            even = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(a, Vector256.LoadUnsafe(ref x0, (nuint)c), even);
            odd = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(b, Vector256.LoadUnsafe(ref x0, (nuint)(c + 8)), odd);
        }
        special = Vector256.EqualsAny(largest, exponent);
        float total = Vector256.Sum(even + odd);
        for (; c < columns; c++)
        {
            special |= (w[c] & 0x7C00) == 0x7C00;
            total += (float)BitConverter.UInt16BitsToHalf(w[c]) * x[c];
        }
        return total;
    }

    /// <summary>Asks for the weights 1 KiB ahead of <paramref name="c"/>: with both cores streaming rows, the hardware
    /// prefetcher alone leaves about a fifth of the memory bandwidth unused (<c>Nanoscale.Benchmarks dot-kernels</c>).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static unsafe void PrefetchAhead(ref ushort w0, int c) =>
        System.Runtime.Intrinsics.X86.Sse.Prefetch0(System.Runtime.CompilerServices.Unsafe.AsPointer(ref System.Runtime.CompilerServices.Unsafe.Add(ref w0, c + 512)));

    /// <summary>Eight IEEE halves as eight f32, ±Inf and NaN included.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> WidenHalf(Vector128<ushort> bits)
    {
        var wide = System.Runtime.Intrinsics.X86.Avx2.ConvertToVector256Int32(bits).AsUInt32();
        var sign = System.Runtime.Intrinsics.X86.Avx2.ShiftLeftLogical(wide & Vector256.Create(0x8000u), 16);
        var magnitude = System.Runtime.Intrinsics.X86.Avx2.ShiftLeftLogical(wide & Vector256.Create(0x7FFFu), 13);
        var value = (magnitude.AsSingle() * Vector256.Create(5.192296858534828e33f)).AsUInt32(); // × 2^112
        var special = Vector256.Equals(wide & Vector256.Create(0x7C00u), Vector256.Create(0x7C00u));
        value = Vector256.ConditionalSelect(special, magnitude | Vector256.Create(0x7F80_0000u), value);
        return (value | sign).AsSingle();
    }

    /// <summary>float32 → bfloat16, round to nearest even; NaN stays NaN (quiet), infinities stay infinite.</summary>
    public static ushort SingleToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7FFF_FFFF) > 0x7F80_0000) return (ushort)((bits >> 16) | 0x0040);
        uint roundingBias = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + roundingBias) >> 16);
    }
}
