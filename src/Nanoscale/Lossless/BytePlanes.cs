using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Nanoscale.IO;

namespace Nanoscale.Lossless;

/// <summary>How a dtype's elements are split into byte planes (stored in the stream header, docs/lossless.md).</summary>
public enum PlaneLayout : byte
{
    /// <summary>Any dtype: the element bytes as one plane.</summary>
    Bytes = 0,

    /// <summary>BF16 (s·eeeeeeee·mmmmmmm): plane 0 exponent <c>(w &gt;&gt; 7) &amp; 0xFF</c>, plane 1 <c>(s &lt;&lt; 7) | m</c>.</summary>
    BFloat16 = 1,

    /// <summary>F16 (s·eeeee·mmmmmmmmmm): plane 0 the high byte <c>w &gt;&gt; 8</c> = s, the whole exponent and the top two
    /// mantissa bits; plane 1 the low eight mantissa bits. Coding the high byte as a whole captures the exponent's
    /// entropy (and any dependence of the top mantissa bits on it) with the sign riding along at ~1 bit.</summary>
    Float16 = 2,

    /// <summary>F32 (s·e8·m23): plane 0 exponent <c>(w &gt;&gt; 23) &amp; 0xFF</c>, plane 1 <c>(s &lt;&lt; 7) | m[22:16]</c>
    /// (so planes 0–1 are exactly the BF16 split of the top half), plane 2 <c>m[15:8]</c>, plane 3 <c>m[7:0]</c>.</summary>
    Float32 = 3,
}

/// <summary>Splits little-endian elements into byte planes and merges them back; the two are exact inverses.</summary>
internal static class BytePlanes
{
    public static PlaneLayout LayoutFor(DType dtype) => dtype switch
    {
        DType.BF16 => PlaneLayout.BFloat16,
        DType.F16 => PlaneLayout.Float16,
        DType.F32 => PlaneLayout.Float32,
        _ => PlaneLayout.Bytes,
    };

    /// <summary>Planes of the layout; for <see cref="PlaneLayout.Bytes"/> one plane of all bytes.</summary>
    public static int PlaneCount(PlaneLayout layout) => layout switch
    {
        PlaneLayout.BFloat16 or PlaneLayout.Float16 => 2,
        PlaneLayout.Float32 => 4,
        _ => 1,
    };

    public static string PlaneName(PlaneLayout layout, int plane) => (layout, plane) switch
    {
        (PlaneLayout.BFloat16, 0) or (PlaneLayout.Float32, 0) => "exponent",
        (PlaneLayout.BFloat16, 1) or (PlaneLayout.Float32, 1) => "sign+mantissa[high 7]",
        (PlaneLayout.Float16, 0) => "sign+exponent+mantissa[high 2]",
        (PlaneLayout.Float16, 1) => "mantissa[low 8]",
        (PlaneLayout.Float32, 2) => "mantissa[15:8]",
        (PlaneLayout.Float32, 3) => "mantissa[7:0]",
        _ => "bytes",
    };

    /// <summary>
    /// Symbols per plane for <paramref name="elements"/> elements of <paramref name="elementSize"/> bytes: the
    /// element count for float layouts, the byte count for <see cref="PlaneLayout.Bytes"/>.
    /// </summary>
    public static int PlaneLength(PlaneLayout layout, int elements, int elementSize) =>
        layout == PlaneLayout.Bytes ? elements * elementSize : elements;

    /// <summary>Writes plane p of the source into planes[p·n .. (p+1)·n), n = <see cref="PlaneLength"/>.</summary>
    public static void Split(PlaneLayout layout, ReadOnlySpan<byte> source, Span<byte> planes)
    {
        switch (layout)
        {
            case PlaneLayout.BFloat16:
            {
                var w = MemoryMarshal.Cast<byte, ushort>(source);
                int n = w.Length;
                var exp = planes[..n];
                var sm = planes.Slice(n, n);
                for (int i = 0; i < n; i++)
                {
                    uint v = w[i];
                    exp[i] = (byte)(v >> 7);
                    sm[i] = (byte)(((v >> 8) & 0x80) | (v & 0x7F));
                }
                break;
            }
            case PlaneLayout.Float16:
            {
                var w = MemoryMarshal.Cast<byte, ushort>(source);
                int n = w.Length;
                var hi = planes[..n];
                var lo = planes.Slice(n, n);
                for (int i = 0; i < n; i++)
                {
                    uint v = w[i];
                    hi[i] = (byte)(v >> 8);
                    lo[i] = (byte)v;
                }
                break;
            }
            case PlaneLayout.Float32:
            {
                var w = MemoryMarshal.Cast<byte, uint>(source);
                int n = w.Length;
                var p0 = planes[..n];
                var p1 = planes.Slice(n, n);
                var p2 = planes.Slice(2 * n, n);
                var p3 = planes.Slice(3 * n, n);
                for (int i = 0; i < n; i++)
                {
                    uint v = w[i];
                    p0[i] = (byte)(v >> 23);
                    p1[i] = (byte)(((v >> 24) & 0x80) | ((v >> 16) & 0x7F));
                    p2[i] = (byte)(v >> 8);
                    p3[i] = (byte)v;
                }
                break;
            }
            default:
                source.CopyTo(planes);
                break;
        }
    }

    /// <summary>Inverse of <see cref="Split"/>: planes 0–3 (n symbols each; unused ones empty) into the elements.</summary>
    public static void Merge(PlaneLayout layout, ReadOnlySpan<byte> p0, ReadOnlySpan<byte> p1, ReadOnlySpan<byte> p2, ReadOnlySpan<byte> p3, Span<byte> destination)
    {
        switch (layout)
        {
            case PlaneLayout.BFloat16:
            {
                var w = MemoryMarshal.Cast<byte, ushort>(destination);
                int n = w.Length;
                p0 = p0[..n];
                p1 = p1[..n];
                for (int i = 0; i < n; i++)
                {
                    uint sm = p1[i];
                    w[i] = (ushort)(((sm & 0x80) << 8) | ((uint)p0[i] << 7) | (sm & 0x7F));
                }
                break;
            }
            case PlaneLayout.Float16:
            {
                var w = MemoryMarshal.Cast<byte, ushort>(destination);
                int n = w.Length;
                p0 = p0[..n];
                p1 = p1[..n];
                for (int i = 0; i < n; i++) w[i] = (ushort)((p0[i] << 8) | p1[i]);
                break;
            }
            case PlaneLayout.Float32:
            {
                var w = MemoryMarshal.Cast<byte, uint>(destination);
                int n = w.Length;
                p0 = p0[..n];
                p1 = p1[..n];
                p2 = p2[..n];
                p3 = p3[..n];
                for (int i = 0; i < n; i++)
                {
                    uint sm = p1[i];
                    w[i] = ((sm & 0x80) << 24) | ((uint)p0[i] << 23) | ((sm & 0x7F) << 16) | ((uint)p2[i] << 8) | p3[i];
                }
                break;
            }
            default:
                p0[..destination.Length].CopyTo(destination);
                break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Histogram(ReadOnlySpan<byte> symbols, Span<uint> counts)
    {
        // Four sub-histograms break the store-to-load dependency when neighbouring bytes repeat (exponent planes).
        Span<uint> h = stackalloc uint[4 * 256];
        h.Clear();
        int i = 0;
        for (; i + 4 <= symbols.Length; i += 4)
        {
            h[symbols[i]]++;
            h[256 + symbols[i + 1]]++;
            h[512 + symbols[i + 2]]++;
            h[768 + symbols[i + 3]]++;
        }
        for (; i < symbols.Length; i++) h[symbols[i]]++;
        for (int s = 0; s < 256; s++) counts[s] = h[s] + h[256 + s] + h[512 + s] + h[768 + s];
    }
}
