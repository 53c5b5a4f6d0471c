namespace Nanoscale.Formats.E8;

/// <summary>
/// The E8 lattice (D8 ∪ D8 + ½: vectors of 8 integers, or of 8 half-integers, whose sum is even) and Nanoscale's
/// 2^16-point codebook of it, so that 8 weights are one 16-bit index: 2 bits per weight.
/// </summary>
/// <remarks>
/// <para><b>Codebook.</b> Every lattice point of squared norm ≤ 10 (1 + 240 + 2160 + 6720 + 17520 + 30240 = 56,881
/// points: the shells 0, 2, 4, 6, 8, 10), then the first 8,655 points of the norm-12 shell in the order below, for
/// 65,536. Order: by squared norm, then by the doubled coordinates read as a base-15 number (lexicographic). The index
/// of a point is its place in that order; the table is built once (a few tens of milliseconds).</para>
/// <para><b>Nearest point</b> (Conway and Sloane, <i>Sphere Packings</i>, ch. 20): the nearest point of D8 is x rounded
/// coordinate by coordinate, with the coordinate that rounded worst rounded the other way when the sum is odd; the
/// nearest of D8 + ½ is the same on x − ½, plus ½; E8's is the closer of the two. When it lies in the codebook it is the
/// nearest codebook point (the codebook is a subset of the lattice). When it lies outside (|x|² well above 10), x is
/// shrunk towards the origin in steps of 3% until its nearest lattice point is in the codebook: not always the nearest
/// codebook point, which the encoder's scale search makes rare.</para>
/// </remarks>
internal static class E8Lattice
{
    public const int Dimension = 8;
    public const int CodebookSize = 1 << 16;

    /// <summary>Squared norm of every point of the full shells in the codebook.</summary>
    public const int FullShellsNorm = 10;

    /// <summary>Doubled coordinates of the codebook's points, 8 per point, in index order.</summary>
    private static readonly sbyte[] Doubled;

    /// <summary>Codebook index by packed doubled coordinates (4 bits each, offset by 8).</summary>
    private static readonly Dictionary<uint, ushort> IndexOf;

    static E8Lattice()
    {
        var points = new List<(int Norm, long Order, sbyte[] D)>();
        var d = new int[8];
        void Enumerate(int[] values)
        {
            // All 8-tuples from values (doubled coordinates), even coordinate sum (in halves: sum of doubled / 2 even),
            // squared norm ≤ 12.
            int n = values.Length;
            var idx = new int[8];
            while (true)
            {
                int sum = 0, norm4 = 0;
                for (int i = 0; i < 8; i++)
                {
                    d[i] = values[idx[i]];
                    sum += d[i];
                    norm4 += d[i] * d[i];
                }
                if (norm4 <= 48 && sum % 4 == 0)
                {
                    long order = 0;
                    for (int i = 0; i < 8; i++) order = order * 15 + (d[i] + 7);
                    points.Add((norm4 / 4, order, [.. d.Select(v => (sbyte)v)]));
                }
                int k = 7;
                while (k >= 0 && ++idx[k] == n) idx[k--] = 0;
                if (k < 0) break;
            }
        }
        Enumerate([-6, -4, -2, 0, 2, 4, 6]);   // integer points: coordinates −3 … 3
        Enumerate([-5, -3, -1, 1, 3, 5]);       // half-integer points: −5/2 … 5/2
        points.Sort((a, b) => a.Norm != b.Norm ? a.Norm.CompareTo(b.Norm) : a.Order.CompareTo(b.Order));
        Doubled = new sbyte[CodebookSize * 8];
        IndexOf = new Dictionary<uint, ushort>(CodebookSize);
        for (int i = 0; i < CodebookSize; i++)
        {
            points[i].D.CopyTo(Doubled.AsSpan(i * 8));
            IndexOf[Pack(points[i].D)] = (ushort)i;
        }
    }

    private static uint Pack(ReadOnlySpan<sbyte> doubled)
    {
        uint key = 0;
        for (int i = 0; i < 8; i++) key = key << 4 | (uint)(doubled[i] + 8);
        return key;
    }

    /// <summary>The point of codebook index <paramref name="index"/>, times <paramref name="scale"/>.</summary>
    public static void Decode(int index, float scale, Span<float> destination)
    {
        var d = Doubled.AsSpan(index * 8, 8);
        float half = scale * 0.5f;
        for (int i = 0; i < 8; i++) destination[i] = d[i] * half;
    }

    /// <summary>The nearest E8 point to <paramref name="x"/>, as doubled coordinates (Conway and Sloane).</summary>
    public static void Nearest(ReadOnlySpan<double> x, Span<sbyte> doubled)
    {
        Span<double> integer = stackalloc double[8], half = stackalloc double[8];
        NearestD8(x, 0, integer);
        NearestD8(x, 0.5, half);
        double di = 0, dh = 0;
        for (int i = 0; i < 8; i++)
        {
            di += (x[i] - integer[i]) * (x[i] - integer[i]);
            dh += (x[i] - half[i]) * (x[i] - half[i]);
        }
        var best = dh < di ? half : integer;
        for (int i = 0; i < 8; i++) doubled[i] = (sbyte)Math.Round(best[i] * 2);
    }

    /// <summary>Nearest point of D8 + <paramref name="shift"/>·(1, …, 1).</summary>
    private static void NearestD8(ReadOnlySpan<double> x, double shift, Span<double> point)
    {
        int sum = 0, worst = 0;
        double worstDistance = -1;
        for (int i = 0; i < 8; i++)
        {
            double v = x[i] - shift, r = Math.Round(v, MidpointRounding.ToEven);
            point[i] = r;
            sum += (int)r;
            double distance = Math.Abs(v - r);
            if (distance > worstDistance)
            {
                worstDistance = distance;
                worst = i;
            }
        }
        if ((sum & 1) != 0)
        {
            double v = x[worst] - shift;
            point[worst] += v >= point[worst] ? 1 : -1;
        }
        for (int i = 0; i < 8; i++) point[i] += shift;
    }

    /// <summary>Whether a point (doubled coordinates) is in the codebook, and its index.</summary>
    public static bool TryIndex(ReadOnlySpan<sbyte> doubled, out ushort index)
    {
        foreach (var v in doubled)
            if (v is < -7 or > 7)
            {
                index = 0;
                return false;
            }
        return IndexOf.TryGetValue(Pack(doubled), out index);
    }

    /// <summary>The codebook index for <paramref name="x"/> (in lattice units): its nearest lattice point when that is
    /// in the codebook, else the nearest lattice point of x shrunk by 3% steps that is.</summary>
    public static ushort Quantize(ReadOnlySpan<double> x)
    {
        Span<sbyte> doubled = stackalloc sbyte[8];
        Span<double> shrunk = stackalloc double[8];
        x.CopyTo(shrunk);
        for (int step = 0; ; step++)
        {
            Nearest(shrunk, doubled);
            if (TryIndex(doubled, out ushort index)) return index;
            for (int i = 0; i < 8; i++) shrunk[i] *= 0.97;
            if (step > 200) return 0; // |x| beyond 3·10^2 lattice units: not reached with the encoder's scales
        }
    }
}
