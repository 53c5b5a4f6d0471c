using System.Buffers.Binary;
using Nanoscale.Tensors;

namespace Nanoscale.Tests.IO;

public class TensorDataTests
{
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
}
