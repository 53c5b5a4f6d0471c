using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Nanoscale.Tensors;

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
                int i = Vector128.IsHardwareAccelerated ? SplitBFloat16Vector(w, exp, sm) : 0;
                for (; i < n; i++)
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
                int i = Vector128.IsHardwareAccelerated ? SplitFloat32Vector(w, p0, p1, p2, p3) : 0;
                for (; i < n; i++)
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
                int i = Vector128.IsHardwareAccelerated ? MergeBFloat16Vector(p0, p1, w) : 0;
                for (; i < n; i++)
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
                int i = Vector128.IsHardwareAccelerated ? MergeFloat32Vector(p0, p1, p2, p3, w) : 0;
                for (; i < n; i++)
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

    /// <summary>16 elements per step; returns how many were done (the scalar loop finishes the rest).</summary>
    private static int SplitBFloat16Vector(ReadOnlySpan<ushort> w, Span<byte> exp, Span<byte> sm)
    {
        ref ushort src = ref MemoryMarshal.GetReference(w);
        ref byte e = ref MemoryMarshal.GetReference(exp);
        ref byte s = ref MemoryMarshal.GetReference(sm);
        var low8 = Vector128.Create((ushort)0xFF);
        var sign = Vector128.Create((ushort)0x80);
        var mant = Vector128.Create((ushort)0x7F);
        int i = 0;
        for (; i + 16 <= w.Length; i += 16)
        {
            var w0 = Vector128.LoadUnsafe(ref src, (nuint)i);
            var w1 = Vector128.LoadUnsafe(ref src, (nuint)(i + 8));
            Vector128.Narrow((w0 >> 7) & low8, (w1 >> 7) & low8).StoreUnsafe(ref e, (nuint)i);
            Vector128.Narrow(((w0 >> 8) & sign) | (w0 & mant), ((w1 >> 8) & sign) | (w1 & mant)).StoreUnsafe(ref s, (nuint)i);
        }
        return i;
    }

    /// <summary>
    /// F32 = the BF16 split of the upper halves plus the two low bytes: 16 elements per step, narrowing uint lanes to
    /// ushort halves and those to bytes.
    /// </summary>
    private static int SplitFloat32Vector(ReadOnlySpan<uint> w, Span<byte> p0, Span<byte> p1, Span<byte> p2, Span<byte> p3)
    {
        ref uint src = ref MemoryMarshal.GetReference(w);
        ref byte r0 = ref MemoryMarshal.GetReference(p0);
        ref byte r1 = ref MemoryMarshal.GetReference(p1);
        ref byte r2 = ref MemoryMarshal.GetReference(p2);
        ref byte r3 = ref MemoryMarshal.GetReference(p3);
        var low16 = Vector128.Create(0xFFFFu);
        var low8 = Vector128.Create((ushort)0xFF);
        var sign = Vector128.Create((ushort)0x80);
        var mant = Vector128.Create((ushort)0x7F);
        int i = 0;
        for (; i + 16 <= w.Length; i += 16)
        {
            var a = Vector128.LoadUnsafe(ref src, (nuint)i);
            var b = Vector128.LoadUnsafe(ref src, (nuint)(i + 4));
            var c = Vector128.LoadUnsafe(ref src, (nuint)(i + 8));
            var d = Vector128.LoadUnsafe(ref src, (nuint)(i + 12));
            var hi0 = Vector128.Narrow(a >> 16, b >> 16);
            var hi1 = Vector128.Narrow(c >> 16, d >> 16);
            var lo0 = Vector128.Narrow(a & low16, b & low16);
            var lo1 = Vector128.Narrow(c & low16, d & low16);
            Vector128.Narrow((hi0 >> 7) & low8, (hi1 >> 7) & low8).StoreUnsafe(ref r0, (nuint)i);
            Vector128.Narrow(((hi0 >> 8) & sign) | (hi0 & mant), ((hi1 >> 8) & sign) | (hi1 & mant)).StoreUnsafe(ref r1, (nuint)i);
            Vector128.Narrow(lo0 >> 8, lo1 >> 8).StoreUnsafe(ref r2, (nuint)i);
            Vector128.Narrow(lo0 & low8, lo1 & low8).StoreUnsafe(ref r3, (nuint)i);
        }
        return i;
    }

    private static int MergeFloat32Vector(ReadOnlySpan<byte> p0, ReadOnlySpan<byte> p1, ReadOnlySpan<byte> p2, ReadOnlySpan<byte> p3, Span<uint> w)
    {
        ref byte r0 = ref MemoryMarshal.GetReference(p0);
        ref byte r1 = ref MemoryMarshal.GetReference(p1);
        ref byte r2 = ref MemoryMarshal.GetReference(p2);
        ref byte r3 = ref MemoryMarshal.GetReference(p3);
        ref uint dst = ref MemoryMarshal.GetReference(w);
        var sign = Vector128.Create((ushort)0x80);
        var mant = Vector128.Create((ushort)0x7F);
        int i = 0;
        for (; i + 16 <= w.Length; i += 16)
        {
            var (e0, e1) = Vector128.Widen(Vector128.LoadUnsafe(ref r0, (nuint)i));
            var (s0, s1) = Vector128.Widen(Vector128.LoadUnsafe(ref r1, (nuint)i));
            var (m0, m1) = Vector128.Widen(Vector128.LoadUnsafe(ref r2, (nuint)i));
            var (l0, l1) = Vector128.Widen(Vector128.LoadUnsafe(ref r3, (nuint)i));
            var hi0 = ((s0 & sign) << 8) | (e0 << 7) | (s0 & mant);
            var hi1 = ((s1 & sign) << 8) | (e1 << 7) | (s1 & mant);
            var lo0 = (m0 << 8) | l0;
            var lo1 = (m1 << 8) | l1;
            var (h00, h01) = Vector128.Widen(hi0);
            var (h10, h11) = Vector128.Widen(hi1);
            var (q00, q01) = Vector128.Widen(lo0);
            var (q10, q11) = Vector128.Widen(lo1);
            ((h00 << 16) | q00).StoreUnsafe(ref dst, (nuint)i);
            ((h01 << 16) | q01).StoreUnsafe(ref dst, (nuint)(i + 4));
            ((h10 << 16) | q10).StoreUnsafe(ref dst, (nuint)(i + 8));
            ((h11 << 16) | q11).StoreUnsafe(ref dst, (nuint)(i + 12));
        }
        return i;
    }

    private static int MergeBFloat16Vector(ReadOnlySpan<byte> exp, ReadOnlySpan<byte> sm, Span<ushort> w)
    {
        ref byte e = ref MemoryMarshal.GetReference(exp);
        ref byte s = ref MemoryMarshal.GetReference(sm);
        ref ushort dst = ref MemoryMarshal.GetReference(w);
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            // bf16 = (sm & 0x80) << 8 | e << 7 | (sm & 0x7F): 32 elements a step, both bytes widened, two bitwise selects.
            var low7 = Vector512.Create((ushort)0x7F);
            var top = Vector512.Create((ushort)0x8000);
            for (; i + 32 <= w.Length; i += 32)
            {
                var e0 = Vector512.WidenLower(Vector256.LoadUnsafe(ref e, (nuint)i).ToVector512Unsafe());
                var s0 = Vector512.WidenLower(Vector256.LoadUnsafe(ref s, (nuint)i).ToVector512Unsafe());
                Vector512.ConditionalSelect(low7, s0, Vector512.ConditionalSelect(top, s0 << 8, e0 << 7)).StoreUnsafe(ref dst, (nuint)i);
            }
        }
        var sign = Vector128.Create((ushort)0x80);
        var mant = Vector128.Create((ushort)0x7F);
        for (; i + 16 <= w.Length; i += 16)
        {
            var (e0, e1) = Vector128.Widen(Vector128.LoadUnsafe(ref e, (nuint)i));
            var (s0, s1) = Vector128.Widen(Vector128.LoadUnsafe(ref s, (nuint)i));
            (((s0 & sign) << 8) | (e0 << 7) | (s0 & mant)).StoreUnsafe(ref dst, (nuint)i);
            (((s1 & sign) << 8) | (e1 << 7) | (s1 & mant)).StoreUnsafe(ref dst, (nuint)(i + 8));
        }
        return i;
    }

    public static unsafe void Histogram(ReadOnlySpan<byte> symbols, Span<uint> counts)
    {
        // Eight sub-histograms, one per byte of each 8-byte load, break the store-to-load dependency when
        // neighbouring bytes repeat (exponent planes); the pointers never leave the span.
        const int copies = 8;
        uint* h = stackalloc uint[copies * 256];
        new Span<uint>(h, copies * 256).Clear();
        fixed (byte* src = symbols)
        {
            int n = symbols.Length, i = 0;
            for (; i + 8 <= n; i += 8)
            {
                ulong v = Unsafe.ReadUnaligned<ulong>(src + i);
                h[(byte)v]++;
                h[256 + (byte)(v >> 8)]++;
                h[512 + (byte)(v >> 16)]++;
                h[768 + (byte)(v >> 24)]++;
                h[1024 + (byte)(v >> 32)]++;
                h[1280 + (byte)(v >> 40)]++;
                h[1536 + (byte)(v >> 48)]++;
                h[1792 + (byte)(v >> 56)]++;
            }
            for (; i < n; i++) h[src[i]]++;
        }
        for (int s = 0; s < 256; s++)
        {
            uint sum = 0;
            for (int k = 0; k < copies; k++) sum += h[k * 256 + s];
            counts[s] = sum;
        }
    }
}
