using System.Buffers.Binary;
using Nanoscale.Lossless;

namespace Nanoscale.Tests.Lossless;

/// <summary>The vectorised split/merge (plus scalar tail) against a plain per-element reference, at every short length.</summary>
public class BytePlanesTests
{
    private static byte[] ReferenceSplit(PlaneLayout layout, byte[] source)
    {
        switch (layout)
        {
            case PlaneLayout.BFloat16:
            {
                int n = source.Length / 2;
                var planes = new byte[2 * n];
                for (int i = 0; i < n; i++)
                {
                    int w = BinaryPrimitives.ReadUInt16LittleEndian(source.AsSpan(2 * i));
                    int sign = w >> 15, exponent = (w >> 7) & 0xFF, mantissa = w & 0x7F;
                    planes[i] = (byte)exponent;
                    planes[n + i] = (byte)((sign << 7) | mantissa);
                }
                return planes;
            }
            case PlaneLayout.Float16:
            {
                int n = source.Length / 2;
                var planes = new byte[2 * n];
                for (int i = 0; i < n; i++)
                {
                    planes[i] = source[2 * i + 1];
                    planes[n + i] = source[2 * i];
                }
                return planes;
            }
            case PlaneLayout.Float32:
            {
                int n = source.Length / 4;
                var planes = new byte[4 * n];
                for (int i = 0; i < n; i++)
                {
                    uint w = BinaryPrimitives.ReadUInt32LittleEndian(source.AsSpan(4 * i));
                    uint sign = w >> 31, exponent = (w >> 23) & 0xFF, mantissa = w & 0x7FFFFF;
                    planes[i] = (byte)exponent;
                    planes[n + i] = (byte)((sign << 7) | (mantissa >> 16));
                    planes[2 * n + i] = (byte)(mantissa >> 8);
                    planes[3 * n + i] = (byte)mantissa;
                }
                return planes;
            }
            default:
                return (byte[])source.Clone();
        }
    }

    [Theory]
    [InlineData(PlaneLayout.BFloat16, 2)]
    [InlineData(PlaneLayout.Float16, 2)]
    [InlineData(PlaneLayout.Float32, 4)]
    [InlineData(PlaneLayout.Bytes, 1)]
    public void SplitMatchesTheReferenceAndMergeInvertsIt(PlaneLayout layout, int elementSize)
    {
        var rng = new Random((int)layout);
        int planeCount = BytePlanes.PlaneCount(layout);
        for (int elements = 0; elements <= 100; elements++)
        {
            var source = new byte[elements * elementSize];
            rng.NextBytes(source);
            int n = BytePlanes.PlaneLength(layout, elements, elementSize);
            var planes = new byte[planeCount * n];
            BytePlanes.Split(layout, source, planes);
            Assert.Equal(ReferenceSplit(layout, source), planes);

            var merged = new byte[source.Length];
            ReadOnlySpan<byte> Plane(int p) => p < planeCount ? planes.AsSpan(p * n, n) : default;
            BytePlanes.Merge(layout, Plane(0), Plane(1), Plane(2), Plane(3), merged);
            Assert.Equal(source, merged);
        }
    }
}
