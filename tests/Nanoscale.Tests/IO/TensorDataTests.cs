using System.Buffers.Binary;
using Nanoscale.Tensors;

namespace Nanoscale.Tests.IO;

public class TensorDataTests
{
    /// <summary>The vectorised even/odd split of the BF16 kernels equals its element-by-element twin for every length
    /// (whole groups, a partial last group, none), bit for bit, NaN payloads included.</summary>
    [Fact]
    public void SplitEvenOddEqualsItsReferenceTwin()
    {
        var random = new Random(7);
        foreach (int length in new[] { 0, 1, 15, 16, 31, 32, 33, 63, 64, 100, 2048, 2048 + 7 })
        {
            float[] x = [.. Enumerable.Range(0, length).Select(_ => (float)(random.NextDouble() * 2 - 1))];
            if (length > 5) x[5] = BitConverter.Int32BitsToSingle(0x7FC0_1234);
            float[] fast = new float[length + 3], reference = new float[length + 3];
            TensorData.SplitEvenOdd(x, fast);
            TensorData.SplitEvenOddReference(x, reference);
            Assert.Equal(reference.Select(BitConverter.SingleToInt32Bits), fast.Select(BitConverter.SingleToInt32Bits));
        }
    }

    /// <summary>Every bfloat16 bit pattern, at every length 0..70 and offset: vector path equals the scalar rule.</summary>
    [Fact]
    public void VectorBFloat16ConversionMatchesScalarForEveryPattern()
    {
        var bytes = new byte[2 * 65536];
        for (int b = 0; b < 65536; b++) BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(2 * b), (ushort)b);
        var fast = new float[65536];
        TensorData.ToFloat(bytes, DType.BF16, fast);
        for (int b = 0; b < 65536; b++)
            Assert.Equal(BitConverter.SingleToUInt32Bits(TensorData.BFloat16ToSingle((ushort)b)), BitConverter.SingleToUInt32Bits(fast[b]));

        for (int length = 0; length <= 70; length++)
            for (int offset = 0; offset < 3; offset++)
            {
                var part = new float[length];
                TensorData.ToFloat(bytes.AsSpan(2 * (1000 + offset), 2 * length), DType.BF16, part);
                for (int i = 0; i < length; i++) Assert.Equal(fast[1000 + offset + i], part[i]);
            }
    }

    [Fact]
    public void HalfConversionMatchesScalar()
    {
        var bytes = new byte[2 * 65536];
        for (int b = 0; b < 65536; b++) BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(2 * b), (ushort)b);
        var fast = new float[65536];
        TensorData.ToFloat(bytes, DType.F16, fast);
        for (int b = 0; b < 65536; b++)
        {
            float expected = (float)BitConverter.UInt16BitsToHalf((ushort)b);
            Assert.True(float.IsNaN(expected) ? float.IsNaN(fast[b]) : BitConverter.SingleToUInt32Bits(expected) == BitConverter.SingleToUInt32Bits(fast[b]), $"pattern {b:x4}");
        }
    }

    [Fact]
    public void BFloat16RoundingIsToNearestEven()
    {
        Assert.Equal(0x3F80, TensorData.SingleToBFloat16(BitConverter.UInt32BitsToSingle(0x3F808000))); // tie → even
        Assert.Equal(0x3F82, TensorData.SingleToBFloat16(BitConverter.UInt32BitsToSingle(0x3F818000))); // tie → even (up)
        Assert.Equal(0x3F81, TensorData.SingleToBFloat16(BitConverter.UInt32BitsToSingle(0x3F808001)));
        Assert.True(float.IsNaN(TensorData.BFloat16ToSingle(TensorData.SingleToBFloat16(float.NaN))));
        Assert.Equal(0x7F80, TensorData.SingleToBFloat16(float.PositiveInfinity));
    }

    /// <summary>The step kernel on 16-bit rows against widening each weight with the library's scalar conversion and
    /// summing in double: float summation order only. F16 rows include subnormal halves, zeros of both signs and the
    /// largest finite half, which the kernel's one-multiply rebias must get exactly.</summary>
    [Theory]
    [InlineData("F16", 5, 37)]
    [InlineData("F16", 3, 2048)]
    [InlineData("BF16", 4, 45)]
    [InlineData("BF16", 3, 2048)]   // whole groups of 32 (16 without AVX-512)
    [InlineData("BF16", 2, 77)]     // two groups and a tail of 13
    public void SixteenBitRowDotEqualsWidenThenMultiply(string dtypeName, int rows, int columns) => RowDotEqualsWidenThenMultiply(dtypeName, rows, columns, special: false);

    /// <summary>±Inf and NaN halves (the short F16 path reads them as finite, notices, and does the row again), in the
    /// vector part and in the tail.</summary>
    [Theory]
    [InlineData(4, 64)]
    [InlineData(3, 37)]
    public void HalfRowsWithInfinitiesAndNaNsDotAsWidened(int rows, int columns) => RowDotEqualsWidenThenMultiply("F16", rows, columns, special: true);

    private static void RowDotEqualsWidenThenMultiply(string dtypeName, int rows, int columns, bool special)
    {
        var dtype = Enum.Parse<DType>(dtypeName);
        var random = new Random(rows * columns);
        var bits = new ushort[rows * columns];
        for (int i = 0; i < bits.Length; i++)
            bits[i] = (i % 7) switch
            {
                0 when dtype == DType.F16 => (ushort)random.Next(1, 0x400),                 // subnormal half
                1 when dtype == DType.F16 => (ushort)(0x8000 | random.Next(1, 0x400)),      // negative subnormal
                2 => (ushort)(i % 2 == 0 ? 0 : 0x8000),                                      // ±0
                3 when dtype == DType.F16 => (ushort)(random.Next(2) * 0x8000 | 0x7BFF),    // ±65504
                _ => dtype == DType.F16 ? BitConverter.HalfToUInt16Bits((Half)(random.NextDouble() * 4 - 2))
                                        : TensorData.SingleToBFloat16((float)(random.NextDouble() * 4 - 2)),
            };
        if (special)
        {
            bits[0 * columns + 5] = 0x7C00;                      // row 0: +Inf in the vector part
            bits[1 * columns + columns - 1] = 0xFC00;            // row 1: −Inf in the tail (or the last vector)
            bits[2 * columns + 3] = 0x7E01;                      // row 2: NaN
        }
        var x = Enumerable.Range(0, columns).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(bits.AsSpan()).ToArray();
        var y = new float[rows];
        if (!TensorData.TryDotRows(bytes, dtype, rows, columns, x, y)) return; // no AVX2+FMA here
        var widened = new float[bits.Length];
        TensorData.ToFloat(bytes, dtype, widened);
        for (int r = 0; r < rows; r++)
        {
            double exact = 0, magnitude = 0;
            for (int c = 0; c < columns; c++)
            {
                exact += (double)widened[r * columns + c] * x[c];
                magnitude += Math.Abs((double)widened[r * columns + c] * x[c]);
            }
            if (!double.IsFinite(exact)) Assert.Equal(exact, y[r]); // ±Inf, or NaN (equal as doubles)
            else Assert.True(Math.Abs(y[r] - exact) <= 1e-6 * magnitude + 1e-30, $"{dtype} row {r}: {y[r]} vs {exact}");
        }
    }

    /// <summary>Several vectors on BF16 rows (a step of several sequences): each equals the one-vector product bit for bit
    /// (the same even/odd accumulators in the same order), with a tail after the last 32 columns and 1–6 vectors.</summary>
    [Theory]
    [InlineData(5, 96, 1)]
    [InlineData(7, 77, 3)]
    [InlineData(3, 2048, 6)]
    public void Bf16ManyVectorsEqualOneAtATime(int rows, int columns, int vectors)
    {
        var random = new Random(rows + columns);
        var bits = Enumerable.Range(0, rows * columns).Select(_ => TensorData.SingleToBFloat16((float)(random.NextDouble() * 4 - 2))).ToArray();
        var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(bits.AsSpan()).ToArray();
        var x = Enumerable.Range(0, vectors * columns).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        const int stride = 11;
        var many = new float[(vectors - 1) * stride + rows];
        if (!TensorData.TryDotRowsMany(bytes, DType.BF16, rows, columns, vectors, x, many, stride)) return; // no AVX2+FMA here
        for (int v = 0; v < vectors; v++)
        {
            var one = new float[rows];
            Assert.True(TensorData.TryDotRows(bytes, DType.BF16, rows, columns, x.AsSpan(v * columns, columns), one));
            Assert.True(one.AsSpan().SequenceEqual(many.AsSpan(v * stride, rows)), $"vector {v}: {string.Join(", ", one)} vs {string.Join(", ", many.AsSpan(v * stride, rows).ToArray())}");
        }
    }
}
