using System.Numerics;

namespace Nanoscale.LowRank;

/// <summary>
/// Hadamard matrices applied in O(n log n) (docs/caldera.md): for n = m·2^k with m ∈ {1, 12, 20, 28}, the ±1 matrix
/// <c>H_n = H_m ⊗ H_{2^k}</c> (Sylvester's H_{2^k}, <c>H[i, j] = (−1)^popcount(i &amp; j)</c>, and a Paley matrix of
/// order m), so <c>H·x</c> is a Walsh–Hadamard butterfly inside each of the m contiguous blocks of 2^k followed by an
/// m × m mix across blocks: n·k + n·m additions instead of n² multiply-adds. <see cref="Dense"/> is the plain
/// reference twin (the same matrix, built entry by entry); a test checks they agree.
/// </summary>
/// <remarks>
/// The small orders are Paley's constructions from the quadratic residues of a prime q: order q + 1 for q ≡ 3 (mod 4)
/// (q = 11 → 12, q = 19 → 20: <c>H = I + S</c>, S the skew conference matrix), order 2(q + 1) for q ≡ 1 (mod 4)
/// (q = 13 → 28: the symmetric conference matrix C, <c>H = C ⊗ [[1, 1], [1, −1]] + I ⊗ [[1, −1], [−1, −1]]</c>).
/// Written here because no maintained .NET package offers them; each is checked to satisfy <c>H Hᵀ = m I</c>.
/// </remarks>
internal static class FastHadamard
{
    private static readonly int[] SmallOrders = [1, 12, 20, 28];
    private static readonly Dictionary<int, sbyte[]> Small = new()
    {
        [1] = [1],
        [12] = PaleyOne(11),
        [20] = PaleyOne(19),
        [28] = PaleyTwo(13),
    };

    /// <summary>Whether n = m·2^k with m ∈ {1, 12, 20, 28}.</summary>
    public static bool Supports(int n) => n > 0 && Split(n) is not null;

    /// <summary>(m, 2^k) of n, or null.</summary>
    private static (int M, int P)? Split(int n)
    {
        foreach (int m in SmallOrders)
            if (n % m == 0 && BitOperations.IsPow2(n / m)) return (m, n / m);
        return null;
    }

    /// <summary>The m × m ±1 matrix of a small order, row-major.</summary>
    internal static ReadOnlySpan<sbyte> SmallMatrix(int m) => Small[m];

    /// <summary>In place: x ← H x, or x ← Hᵀ x when <paramref name="transpose"/> (H is not symmetric for m = 12, 20).
    /// <paramref name="scratch"/> holds at least n floats (used when m &gt; 1).</summary>
    public static void Multiply(Span<float> x, bool transpose, Span<float> scratch)
    {
        var (m, p) = Split(x.Length) ?? throw new ArgumentException($"{x.Length} is not m·2^k with m ∈ {{1, 12, 20, 28}}", nameof(x));
        for (int block = 0; block < m; block++) Butterfly(x.Slice(block * p, p));
        if (m == 1) return;
        // The m × m mix across blocks, a whole block (p floats) at a time: m² vectorised multiply-adds of length p.
        var h = Small[m];
        var copy = scratch[..x.Length];
        x.CopyTo(copy);
        x.Clear();
        for (int a = 0; a < m; a++)
        {
            var target = x.Slice(a * p, p);
            for (int c = 0; c < m; c++)
            {
                var source = copy.Slice(c * p, p);
                if ((transpose ? h[c * m + a] : h[a * m + c]) > 0) System.Numerics.Tensors.TensorPrimitives.Add(target, source, target);
                else System.Numerics.Tensors.TensorPrimitives.Subtract(target, source, target);
            }
        }
    }

    /// <summary>The unnormalised Walsh–Hadamard transform of a power-of-two length, in place, vectorised where the
    /// butterflies span a whole vector.</summary>
    internal static void Butterfly(Span<float> x)
    {
        int n = x.Length, width = Vector<float>.Count;
        for (int h = 1; h < n; h <<= 1)
        {
            for (int i = 0; i < n; i += h << 1)
            {
                var lo = x.Slice(i, h);
                var hi = x.Slice(i + h, h);
                int j = 0;
                if (h >= width)
                    for (; j <= h - width; j += width)
                    {
                        var a = new Vector<float>(lo[j..]);
                        var b = new Vector<float>(hi[j..]);
                        (a + b).CopyTo(lo[j..]);
                        (a - b).CopyTo(hi[j..]);
                    }
                for (; j < h; j++)
                {
                    float a = lo[j], b = hi[j];
                    lo[j] = a + b;
                    hi[j] = a - b;
                }
            }
        }
    }

    /// <summary>The reference twin: H_n as a dense ±1 matrix (row-major), entry by entry from the Kronecker product.</summary>
    internal static sbyte[] Dense(int n)
    {
        var (m, p) = Split(n) ?? throw new ArgumentException($"{n} is not supported", nameof(n));
        var h = Small[m];
        var dense = new sbyte[(long)n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                int sylvester = (BitOperations.PopCount((uint)((i % p) & (j % p))) & 1) == 0 ? 1 : -1;
                dense[(long)i * n + j] = (sbyte)(h[(i / p) * m + j / p] * sylvester);
            }
        return dense;
    }

    /// <summary>χ(x): 1 for a non-zero square mod q, −1 for a non-square, 0 for 0.</summary>
    private static int Character(int x, int q)
    {
        x = ((x % q) + q) % q;
        if (x == 0) return 0;
        for (int y = 1; y < q; y++) if (y * y % q == x) return 1;
        return -1;
    }

    /// <summary>Paley I, order q + 1 for a prime q ≡ 3 (mod 4): H = I + S with S = [[0, 1ᵀ], [−1, Q]], Q[i, j] = χ(j − i).</summary>
    private static sbyte[] PaleyOne(int q)
    {
        int n = q + 1;
        var h = new sbyte[n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                int s = i == 0 ? (j == 0 ? 0 : 1) : j == 0 ? -1 : Character(j - i, q);
                h[i * n + j] = (sbyte)(s + (i == j ? 1 : 0));
            }
        return h;
    }

    /// <summary>Paley II, order 2(q + 1) for a prime q ≡ 1 (mod 4), from the symmetric conference matrix
    /// C = [[0, 1ᵀ], [1, Q]].</summary>
    private static sbyte[] PaleyTwo(int q)
    {
        int c = q + 1, n = 2 * c;
        var h = new sbyte[n * n];
        for (int i = 0; i < c; i++)
            for (int j = 0; j < c; j++)
            {
                int conference = i == 0 ? (j == 0 ? 0 : 1) : j == 0 ? 1 : Character(j - i, q);
                for (int a = 0; a < 2; a++)
                    for (int b = 0; b < 2; b++)
                    {
                        // C ⊗ [[1, 1], [1, −1]] where C is ±1, I ⊗ [[1, −1], [−1, −1]] on the diagonal (C's zeros).
                        int value = conference != 0 ? conference * (a == 1 && b == 1 ? -1 : 1) : (a == 0 && b == 0 ? 1 : -1);
                        h[(2 * i + a) * n + 2 * j + b] = (sbyte)value;
                    }
            }
        return h;
    }
}
