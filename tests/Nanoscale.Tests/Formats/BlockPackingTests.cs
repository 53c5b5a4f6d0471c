using Nanoscale.Formats;

namespace Nanoscale.Tests.Formats;

public class BlockPackingTests
{
    [Fact]
    public void FourBitElementTwoJIsTheLowNibbleOfByteJ()
    {
        byte[] codes = [0x1, 0x2, 0x3, 0x4, 0xF, 0x0];
        var packed = new byte[3];
        BlockPacking.Pack(codes, 4, packed);
        Assert.Equal(new byte[] { 0x21, 0x43, 0x0F }, packed);
    }

    [Fact]
    public void SixBitCodesFormAnLsbFirstBitStream()
    {
        // codes 0..3 = 0b000001, 0b000010, 0b000011, 0b111111 → bits (LSB first) 100000 010000 110000 111111
        byte[] codes = [1, 2, 3, 63];
        var packed = new byte[3];
        BlockPacking.Pack(codes, 6, packed);
        // byte0 = c0 | (c1 & 3) << 6 = 0x81; byte1 = c1 >> 2 | (c2 & 0xF) << 4 = 0x30; byte2 = c2 >> 4 | c3 << 2 = 0xFC
        Assert.Equal(new byte[] { 0x81, 0x30, 0xFC }, packed);
        Assert.Equal(24, BlockPacking.PackedBytes(32, 6));
    }

    [Theory]
    [InlineData(2)] [InlineData(3)] [InlineData(4)] [InlineData(5)] [InlineData(6)] [InlineData(7)] [InlineData(8)]
    public void PackThenUnpackIsIdentity(int bits)
    {
        var random = new Random(bits);
        foreach (int count in new[] { 1, 15, 16, 31, 32 })
        {
            byte[] codes = [.. Enumerable.Range(0, count).Select(_ => (byte)random.Next(1 << bits))];
            var packed = new byte[BlockPacking.PackedBytes(count, bits)];
            BlockPacking.Pack(codes, bits, packed);
            var back = new byte[count];
            BlockPacking.Unpack(packed, bits, back);
            Assert.Equal(codes, back);
        }
    }

    [Fact]
    public void ShortDestinationThrows() =>
        Assert.Throws<ArgumentException>(() => BlockPacking.Pack(new byte[32], 4, new byte[15]));
}
