using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Nanoscale.Tensors;

namespace Nanoscale.Formats;

/// <summary>
/// The several-vector product on 4-bit codes (a token-factory step) with eight rows across a register's lanes
/// (AVX-VNNI, or AVX2 below): each 32-bit lane holds four unsigned codes of its own row, so one <c>vpdpbusd</c> against four
/// activation bytes broadcast to every lane adds 32 multiply-adds of eight rows, a block takes eight of them, and its
/// two scales are applied once per block for eight rows (a convert and a multiply-add) instead of once per row. The
/// eight rows' codes are unpacked (a 8 × 4 transpose of 32-bit words, nibbles split, one table lookup) once per block
/// into a per-thread buffer and read back for every four vectors. A call of sixteen rows (two registers' lanes) broadcasts
/// each activation word once for both eights: the broadcasts, not the multiply-adds, were what bound one eight's loop
/// (five loads to four <c>vpdpbusd</c>), and a 16-sequence step of the SmolLM2-shaped model runs 4–14% faster.
/// Without AVX-VNNI (AVX2 alone, e.g. Zen 3) each <c>vpdpbusd</c> becomes a <c>vpmaddubsw</c>, four of them summed in
/// int16 before one <c>vpmaddwd</c> (<see cref="WordsPerWidening"/>), every vector in one pass; without AVX-512 VBMI
/// NxFP4's per-block tables are four <c>vpshufb</c> and three blends. Same integers, so the same bits.
/// </summary>
/// <remarks>
/// Each block's integer total is exact, as in <see cref="NibbleDot"/> (Σ u·q with u = table[code] unsigned, less
/// bias × the block's activation sum): the results differ from <see cref="NibbleDot.RowMany{TMode}"/>'s only in float
/// summation order, and the quantized activations are the same bytes (<see cref="NibbleDot.QuantizeBlock"/>).
/// <c>NibbleLanesTests</c> checks both and the scalar reference.
/// </remarks>
internal static unsafe class NibbleLanes
{
    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>The fewest vectors for which the lanes beat <see cref="NibbleDot.RowMany{TMode}"/>: three with AVX-VNNI
    /// (fewer, and unpacking a group costs more than it saves); six without, where each <c>vpdpbusd</c> takes two
    /// instructions and a widening (measured on a Zen 3 core, <c>dot-kernels mxfp4 24576 576 1 N</c>: 3 vectors 21.8 vs
    /// 25.5 G multiply-adds/s, 4 and 5 even, 6 34.5 vs 27.5, 16 52.4 vs 19.3).</summary>
    public static int MinVectors => AvxVnni.IsSupported ? 3 : 6;

    /// <summary><see cref="MinVectors"/> for codes of one table (MXFP4), whose group unpacking is the cheapest: four
    /// without AVX-VNNI since the two-token pass (Zen 3, <c>dot-kernels mxfp4 24576 576 1 N</c>, lanes against the row
    /// kernel: 2 vectors 22.3–23.3 vs 18.8–18.9, 3 28.6–30.4 vs 23.1–24.2, 4 34.6–35.5 vs 26.7–27.3 G multiply-adds/s;
    /// but a whole step of two sequences, <c>token-factory /tmp/sl/mxfp4 --streams 2</c>, ran 205–210 against 229–249
    /// tokens/s on the lanes, and of four and five 258–343 and 316–374 against 240–313 and 256–280). NxFP4's and NVFP4's
    /// lanes still lose below six (nxfp4 3 vectors 15.7 vs 20.8, nvfp4 4 vectors 14.9 vs 26.1).</summary>
    public static int MinVectorsOneTable => AvxVnni.IsSupported ? 3 : 4;

    /// <summary>Rows per register (int32 lanes of a 256-bit vector).</summary>
    public const int Lanes = 8;

    /// <summary>The most rows a <see cref="Group(byte*, nint, int, int, float*, Vectors, Tables, Vector256{byte}*, float*, int)"/>
    /// call takes: two registers' lanes, the second eight rows' factors (and table selectors) right after the first
    /// eight's, each in the one-register layout. Both halves meet the same activation words, so each broadcast of four
    /// activation bytes feeds two <c>vpdpbusd</c> instead of one.</summary>
    public const int GroupRows = 2 * Lanes;

    /// <summary>The most vectors a call takes (a token-factory step of sixteen sequences in one pass over the codes).</summary>
    public const int MaxVectors = 16;

    /// <summary>
    /// Several vectors' activations in the kernel's order: per vector and block, eight 32-bit words, word 2m the four
    /// codes that meet the low nibbles of the block's code bytes 4m..4m+3, word 2m + 1 those that meet the high nibbles
    /// (evensThenOdds of <see cref="Set"/>: OCP's packing, even elements in low nibbles; otherwise
    /// ggml's, elements i and i + 16 in byte i); each block's scale and −bias × its code sum.
    /// </summary>
    public sealed class Vectors
    {
        public int[] Q = [];
        public float[] Scales = [];
        public int[] Bias = [];
        public int Count;
        public int Blocks;

        /// <summary>With <see cref="Halves"/> (NVFP4's 16-weight blocks), −bias × the code sum of each half of each
        /// block, <c>[2(v·blocks + j) + h]</c>: elements 0–15, then 16–31.</summary>
        public int[] HalfBias = [];

        /// <summary>Whether the weights have a scale per 16 (two per block of activations).</summary>
        public bool Halves;

        // The activations (bit for bit) and parameters of the last Set, whose results the arrays above still hold.
        private readonly KeptActivations _kept = new();

        /// <summary>
        /// Quantizes <paramref name="vectors"/> rows of <paramref name="x"/>, or keeps the last results when the same
        /// activations (compared bit for bit) come again with the same parameters (<see cref="KeptActivations"/>;
        /// quantizing was about a seventh of a 16-sequence step).
        /// </summary>
        public void Set(ReadOnlySpan<float> x, int vectors, int cols, bool evensThenOdds, int bias, bool halves = false)
        {
            int nb = cols / 32;
            if (x.Length < vectors * cols) throw new ArgumentException("fewer activations than vectors × columns", nameof(x));
            if (_kept.Same(x[..(vectors * cols)], (vectors, cols, evensThenOdds, bias, halves))) return;
            Count = vectors;
            Blocks = nb;
            Halves = halves;
            if (halves && HalfBias.Length < 2 * vectors * nb) HalfBias = GC.AllocateArray<int>(2 * vectors * nb, pinned: true);
            // Pinned: the kernel holds raw pointers.
            if (Q.Length < vectors * nb * 8) Q = GC.AllocateArray<int>(vectors * nb * 8, pinned: true);
            if (Scales.Length < vectors * nb)
            {
                Scales = GC.AllocateArray<float>(vectors * nb, pinned: true);
                Bias = GC.AllocateArray<int>(vectors * nb, pinned: true);
            }
            for (int v = 0; v < vectors; v++)
            {
                int j = 0;
                // Eight blocks at a time where all eight are finite with a finite inverse scale; else block by block.
                for (; j + 8 <= nb; j += 8)
                    if (!QuantizeEight(x.Slice(v * cols + j * 32, 256), v * nb + j, evensThenOdds, bias, halves))
                        for (int t = 0; t < 8; t++) QuantizeOne(x.Slice(v * cols + (j + t) * 32, 32), v * nb + j + t, evensThenOdds, bias, halves);
                for (; j < nb; j++) QuantizeOne(x.Slice(v * cols + j * 32, 32), v * nb + j, evensThenOdds, bias, halves);
            }
            _kept.Complete();
        }

        /// <summary>Block <paramref name="i"/> (32 activations) by <see cref="NibbleDot.QuantizeBlock"/>, its words in the
        /// kernel's order.</summary>
        private void QuantizeOne(ReadOnlySpan<float> x, int i, bool evensThenOdds, int bias, bool halves)
        {
            Span<sbyte> block = stackalloc sbyte[32];
            // In code order the first 16 bytes meet the low nibbles of the 16 code bytes, the last 16 the high ones.
            int sum = NibbleDot.QuantizeBlock(x, evensThenOdds, block, out Scales[i]);
            Finish(Vector256.Create<sbyte>(block).AsInt32(), sum, i, bias, halves);
        }

        /// <summary>Block <paramref name="i"/>'s bias, half biases (NVFP4's 16-weight blocks) and words in the kernel's
        /// order from its codes in code order (<paramref name="codes"/>, eight words) and their sum.</summary>
        private void Finish(Vector256<int> codes, int sum, int i, int bias, bool halves)
        {
            Bias[i] = -bias * sum;
            if (halves)
            {
                // Evens then odds: code-order bytes 0–7 and 16–23 are elements 0–15.
                var bytes = codes.AsSByte();
                int first = 0;
                for (int t = 0; t < 8; t++) first += bytes.GetElement(t) + bytes.GetElement(16 + t);
                HalfBias[2 * i] = -bias * first;
                HalfBias[2 * i + 1] = -bias * (sum - first);
            }
            // Word 2m meets the low nibbles' bytes 4m..4m+3, word 2m + 1 the high nibbles': the halves' words interleaved.
            Vector256.Shuffle(codes, Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7)).CopyTo(Q.AsSpan(i * 8, 8));
        }

        /// <summary>
        /// Blocks <paramref name="first"/>..+7 (256 activations) as <see cref="NibbleDot.QuantizeBlock"/> quantizes each —
        /// the same scales (amax/127, one IEEE division each), codes (the same products, rounded to nearest even) and
        /// sums — with the eight maxima reduced together (an 8 × 8 transpose and seven maxima instead of a horizontal
        /// maximum per block, as integers: <see cref="NibbleDot.MagnitudeMax"/>) and the eight scales and inverses in two
        /// vector divisions instead of sixteen scalar ones: 28 → 16 ns a block (<c>quantize-activations</c>), ~3% of a
        /// 16-sequence MXFP4 step. False (nothing written) when a block is not finite or its inverse scale overflows:
        /// those go block by block, through the scalar twin.
        /// </summary>
        private unsafe bool QuantizeEight(ReadOnlySpan<float> x, int first, bool evensThenOdds, int bias, bool halves)
        {
            if (!Avx2.IsSupported) return false;
            float* partial = stackalloc float[64];
            float* inverses = stackalloc float[8];
            fixed (float* x0 = x)
            {
                Vector256<float> m0 = BlockMax(x0), m1 = BlockMax(x0 + 32), m2 = BlockMax(x0 + 64), m3 = BlockMax(x0 + 96);
                Vector256<float> m4 = BlockMax(x0 + 128), m5 = BlockMax(x0 + 160), m6 = BlockMax(x0 + 192), m7 = BlockMax(x0 + 224);
                // Column c of the transpose holds element c of every block's partial maxima: lane b of their maximum is
                // block b's largest magnitude (not finite if the block has a NaN or an infinity).
                Transposes.Eight(m0, m1, m2, m3, m4, m5, m6, m7, partial, 8);
                var amax = NibbleDot.MagnitudeMax(NibbleDot.MagnitudeMax(NibbleDot.MagnitudeMax(Vector256.Load(partial), Vector256.Load(partial + 8)),
                        NibbleDot.MagnitudeMax(Vector256.Load(partial + 16), Vector256.Load(partial + 24))),
                    NibbleDot.MagnitudeMax(NibbleDot.MagnitudeMax(Vector256.Load(partial + 32), Vector256.Load(partial + 40)),
                        NibbleDot.MagnitudeMax(Vector256.Load(partial + 48), Vector256.Load(partial + 56))));
                var d = amax / Vector256.Create(127f);
                var inverse = Vector256.ConditionalSelect(Vector256.Equals(d, Vector256<float>.Zero), Vector256<float>.Zero, Vector256<float>.One / d);
                var exponent = Vector256.Create(0x7F80_0000);
                if ((Vector256.Equals(amax.AsInt32() & exponent, exponent) | Vector256.Equals(inverse.AsInt32() & exponent, exponent)) != Vector256<int>.Zero)
                    return false;
                fixed (float* scales = Scales)
                    d.Store(scales + first);
                inverse.Store(inverses);
                for (int b = 0; b < 8; b++)
                {
                    float* block = x0 + 32 * b;
                    var k = Vector256.Create(inverses[b]);
                    var i0 = Avx.ConvertToVector256Int32(Vector256.Load(block) * k);
                    var i1 = Avx.ConvertToVector256Int32(Vector256.Load(block + 8) * k);
                    var i2 = Avx.ConvertToVector256Int32(Vector256.Load(block + 16) * k);
                    var i3 = Avx.ConvertToVector256Int32(Vector256.Load(block + 24) * k);
                    Finish(NibbleDot.PackBlock(i0, i1, i2, i3, evensThenOdds).AsInt32(), Vector256.Sum(i0 + i1 + i2 + i3), first + b, bias, halves);
                }
            }
            return true;
        }

        /// <summary>The lane-wise maximum magnitude of a block's 32 activations (eight lanes).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static unsafe Vector256<float> BlockMax(float* block) =>
            NibbleDot.MagnitudeMax(NibbleDot.MagnitudeMax(Vector256.Abs(Vector256.Load(block)), Vector256.Abs(Vector256.Load(block + 8))),
                NibbleDot.MagnitudeMax(Vector256.Abs(Vector256.Load(block + 16)), Vector256.Abs(Vector256.Load(block + 24))));
    }

    [ThreadStatic] private static Vectors? _vectors;
    [ThreadStatic] private static Vector256<byte>[]? _unpacked;

    /// <summary>This thread's activation scratch (one product at a time per thread).</summary>
    public static Vectors Scratch => _vectors ??= new Vectors();

    /// <summary>This thread's buffer for a group's unpacked codes: eight vectors per block for each eight rows.</summary>
    public static Vector256<byte>* Unpacked(int blocks)
    {
        if (_unpacked is null || _unpacked.Length < blocks * 16)
            _unpacked = GC.AllocateArray<Vector256<byte>>(Math.Max(blocks * 16, 1024), pinned: true);
        return (Vector256<byte>*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_unpacked));
    }


    /// <summary>
    /// The codes' unsigned values: one 16-entry table for every block (MXFP4), or up to four chosen per row and block
    /// (NxFP4's format and recycled level): then <see cref="Selectors"/> holds, per block and row (<c>[8j + i]</c>),
    /// the table's number × 16 in each byte, and the 64 bytes of the four tables go through <c>vpermi2b</c>
    /// (AVX-512 VBMI) with index table × 16 + code.
    /// </summary>
    public readonly struct Tables
    {
        public Tables(Vector256<sbyte> single)
        {
            Lower = single;
            for (int i = 0; i < 16; i++) Largest = Math.Max(Largest, single.AsByte().GetElement(i));
        }

        /// <summary>Two or four tables of 16 entries (<paramref name="four"/>: 32 or 64 bytes), each row's choice per
        /// block in <paramref name="selectors"/> (table number × 16 in each byte; below the number of tables).</summary>
        public Tables(ReadOnlySpan<byte> four, int* selectors)
        {
            if (four.Length is not (32 or 64)) throw new ArgumentException("two or four tables of 16 entries", nameof(four));
            Lower = Vector256.Create(four[..32]).AsSByte();
            Upper = four.Length == 64 ? Vector256.Create(four[32..]).AsSByte() : default;
            Selectors = selectors;
            Two = four.Length == 32;
            foreach (byte entry in four) Largest = Math.Max(Largest, entry);
        }

        /// <summary>Whether there are two tables (selectors 0 and 16 only): without AVX-512 VBMI a lookup is then two
        /// <c>vpshufb</c> and one blend instead of four and three.</summary>
        public bool Two { get; }

        public Vector256<sbyte> Lower { get; }
        public Vector256<sbyte> Upper { get; }
        public int* Selectors { get; }

        /// <summary>The largest unsigned entry: how many words' <c>vpmaddubsw</c> results the kernel without AVX-VNNI
        /// may add in int16 before widening (<see cref="WordsPerWidening"/>).</summary>
        public int Largest { get; }

        private Tables(Vector256<sbyte> lower, Vector256<sbyte> upper, int* selectors, int largest, bool two)
        {
            Lower = lower;
            Upper = upper;
            Selectors = selectors;
            Largest = largest;
            Two = two;
        }

        /// <summary>The same tables with the selectors <paramref name="offset"/> ints on (the second eight rows').</summary>
        public Tables Shifted(nint offset) => new(Lower, Upper, Selectors + offset, Largest, Two);

        /// <summary>Whether a CPU can run per-block tables: <c>vpermi2b</c> on 256 bits (AVX-512 VBMI), else four
        /// <c>vpshufb</c> and three blends a lookup (AVX2).</summary>
        public static bool SelectedSupported => Avx512Vbmi.VL.IsSupported || Avx2.IsSupported;
    }

    /// <summary>
    /// Up to sixteen rows (<paramref name="rowCount"/>, starting at <paramref name="codes"/>, <paramref name="rowStride"/>
    /// bytes apart, 16 code bytes per block) times every vector of <paramref name="a"/>:
    /// <c>results[v·resultStride + i] = Σ_j factors[8j + i] · scale_vj · (Σ table[code]·q − bias·sum_vj)</c>.
    /// <paramref name="factors"/> holds each row's block factors, eight rows per block (<c>[8j + i]</c>); rows 8–15
    /// (<see cref="GroupRows"/>) have theirs in the same layout right after rows 0–7's (<c>blocks × 8</c> floats on,
    /// twice that with half blocks), as do their table selectors.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // optimized at once: a prompt pass alone may call it too rarely to leave tier 0
    public static void Group(byte* codes, nint rowStride, int rowCount, int blocks, float* factors, Vectors a,
        Tables tables, Vector256<byte>* unpacked, float* results, int resultStride) =>
        Group(codes, rowStride, rowCount, blocks, factors, a, tables, unpacked, results, resultStride, Best);

    /// <summary>How a group's multiply-adds run; all give the same integers, so the same bits (tests run every one the
    /// CPU has).</summary>
    internal enum Arithmetic
    {
        /// <summary><c>vpmaddubsw</c> + <c>vpmaddwd</c> on 256 bits (<see cref="Widened{TShape, TWidening}"/>; AVX2).</summary>
        Widened,

        /// <summary><c>vpdpbusd</c> on 256 bits (<see cref="FourPair{TShape}"/>; AVX-VNNI).</summary>
        Vnni,

        /// <summary><c>vpmaddubsw</c> + <c>vpmaddwd</c> on 512 bits, sixteen rows a register (<see cref="Wide{TShape, TWidening}"/>;
        /// AVX-512 BW). Groups of eight rows or fewer, and values too wide for int16 sums, run <see cref="Vnni"/> or
        /// <see cref="Widened"/> instead.</summary>
        Wide,
    }

    /// <summary>Whether <see cref="Arithmetic.Wide"/> groups unpack all sixteen rows at once (<see cref="Unpack16{TLookup}"/>)
    /// where the CPU allows; off (tests), or for per-block tables without AVX-512 VBMI, the two eights unpack one after
    /// the other into the same interleaved layout.</summary>
    internal static bool SixteenAtOnce { get; set; } = true;

    /// <summary>Whether <see cref="Arithmetic.Wide"/> can run here (and 512-bit vectors are not slower than 256-bit ones,
    /// as the runtime judges).</summary>
    public static bool WideSupported => Avx512BW.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>The fastest arithmetic this CPU has: <see cref="Arithmetic.Wide"/>, else <see cref="Arithmetic.Vnni"/>,
    /// else <see cref="Arithmetic.Widened"/>.</summary>
    internal static Arithmetic Best => WideSupported ? Arithmetic.Wide : AvxVnni.IsSupported ? Arithmetic.Vnni : Arithmetic.Widened;

    /// <summary>The arithmetic a group of <paramref name="rowCount"/> rows with unpacked values up to
    /// <paramref name="largest"/> runs when <paramref name="requested"/> is asked for: <see cref="Arithmetic.Wide"/>
    /// only for more than eight rows and values whose int16 sums cannot saturate, else the 256-bit VNNI or widened
    /// kernel. Its callers unpack for the result (<see cref="Eight"/>).</summary>
    internal static Arithmetic For(Arithmetic requested, int rowCount, int largest) =>
        requested == Arithmetic.Wide && (rowCount <= Lanes || WordsPerWidening(largest) == 0)
            ? AvxVnni.IsSupported ? Arithmetic.Vnni : Arithmetic.Widened
            : requested;

    /// <summary>
    /// Where rows 0–7 (<paramref name="half"/> 0) or 8–15 (1) of a group's unpacked codes go, and how many 256-bit
    /// vectors apart their consecutive words are: eight words a block, block after block, the second eight after the
    /// first's <c>blocks × 8</c> vectors; for <see cref="Arithmetic.Wide"/> the two eights interleaved (block j's word m
    /// of rows 0–7 at <c>[16j + 2m]</c>, of rows 8–15 right after it), so one 512-bit load reads a word of all sixteen.
    /// </summary>
    internal static Vector256<byte>* Eight(Vector256<byte>* unpacked, int blocks, int half, Arithmetic arithmetic, out int step)
    {
        step = arithmetic == Arithmetic.Wide ? 2 : 1;
        return arithmetic == Arithmetic.Wide ? unpacked + half : unpacked + (nint)half * blocks * 8;
    }

    /// <summary>
    /// <see cref="Group(byte*, nint, int, int, float*, Vectors, Tables, Vector256{byte}*, float*, int)"/> with the
    /// multiply-adds chosen (<paramref name="arithmetic"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // optimized at once: a prompt pass alone may call it too rarely to leave tier 0
    internal static void Group(byte* codes, nint rowStride, int rowCount, int blocks, float* factors, Vectors a,
        Tables tables, Vector256<byte>* unpacked, float* results, int resultStride, Arithmetic arithmetic)
    {
        if ((uint)(rowCount - 1) >= GroupRows) throw new ArgumentOutOfRangeException(nameof(rowCount), rowCount, $"a group has 1 to {GroupRows} rows");
        // (The tables' bound on int16 sums is Multiply's check.) Rows 8–15 (a call of more than eight) after the first
        // eight's or interleaved with them (Eight), their factors and selectors after the first eight's.
        arithmetic = For(arithmetic, rowCount, tables.Largest);
        if (arithmetic == Arithmetic.Wide && SixteenAtOnce && (tables.Selectors is null || Avx512Vbmi.IsSupported))
        {
            // All sixteen rows in 512-bit registers at once, straight into the interleaved layout.
            if (tables.Selectors is null) Unpack16<OneTable>(codes, rowStride, rowCount, blocks, tables, (Vector512<byte>*)unpacked);
            else Unpack16<SelectedTables>(codes, rowStride, rowCount, blocks, tables, (Vector512<byte>*)unpacked);
        }
        else
        {
            UnpackRows(codes, rowStride, Math.Min(rowCount, Lanes), blocks, tables, Eight(unpacked, blocks, 0, arithmetic, out int step), step);
            if (rowCount > Lanes)
                UnpackRows(codes + Lanes * rowStride, rowStride, rowCount - Lanes, blocks, tables.Selectors is null ? tables : tables.Shifted((nint)blocks * Lanes),
                    Eight(unpacked, blocks, 1, arithmetic, out _), step);
        }
        // The next group's codes are asked for while this group's products run (up to four passes over the unpacked
        // codes, long enough to hide the memory's latency): without it Unpack waited on memory, 13% of a 16-sequence
        // step's samples against 5% with it. A last group asks for bytes past the rows, which a prefetch may: it
        // never faults.
        bool whole = rowCount is Lanes or GroupRows;
        Multiply(unpacked, rowCount, blocks, factors, a, tables.Largest, results, resultStride, arithmetic,
            whole ? codes + rowCount * rowStride : null, whole ? rowCount * rowStride : 0);
    }

    /// <summary>
    /// The products of a group whose codes are already unpacked (<paramref name="unpacked"/>, the layout
    /// <see cref="Unpack{TLookup}"/> writes for <paramref name="arithmetic"/>, <see cref="Eight"/>: block j's eight words
    /// at <c>[8j..]</c>, rows 8–15 from <c>blocks × 8</c> on, or the two eights interleaved for
    /// <see cref="Arithmetic.Wide"/>, which must be <see cref="For"/>'s choice) as unsigned values up to <paramref name="largest"/>, with every vector of
    /// <paramref name="a"/>: every four vectors against both eights at once (FourPair: the same integers and float
    /// operations per row as Four, so the same bits as two eight-row calls), or all in one pass without VNNI. Other
    /// codes than nibbles (MXFP6, <c>Mx/Mx6IntDot</c>) unpack into the same layout and share this. <paramref name="ahead"/>
    /// (<paramref name="aheadBytes"/> of them; null: none) is asked for while it runs — the next group's codes: the wide
    /// kernel asks for a line or a few at each block of each pass (all at once before the products, dozens of lines
    /// waited on the core's outstanding misses: a 16-sequence step's products 11.6–12.1 → 11.3–11.8 ms, MXFP4), the
    /// others all of it first.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Multiply(Vector256<byte>* unpacked, int rowCount, int blocks, float* factors, Vectors a, int largest,
        float* results, int resultStride, Arithmetic arithmetic, byte* ahead = null, nint aheadBytes = 0)
    {
        if ((uint)(rowCount - 1) >= GroupRows) throw new ArgumentOutOfRangeException(nameof(rowCount), rowCount, $"a group has 1 to {GroupRows} rows");
        int second = rowCount - Lanes;
        if (arithmetic != For(arithmetic, rowCount, largest))
            throw new ArgumentException($"{arithmetic} does not run {rowCount} rows of values up to {largest}: unpack for NibbleLanes.For's choice", nameof(arithmetic));
        if (arithmetic != Arithmetic.Vnni && WordsPerWidening(largest) == 0)
            throw new ArgumentException($"unpacked values up to {largest} overflow vpmaddubsw's int16 sums (at most 128 without AVX-VNNI)", nameof(largest));
        if (arithmetic != Arithmetic.Wide) Prefetch(ahead, aheadBytes);
        Vector256<byte>* unpackedB = unpacked + (nint)blocks * 8;
        float* factorsB = factors + (nint)blocks * Lanes * (a.Halves ? 2 : 1);
        fixed (int* q = a.Q)
        fixed (float* s = a.Scales)
        fixed (int* b = a.Bias)
        fixed (int* h = a.HalfBias)
        {
            if (arithmetic == Arithmetic.Wide)
            {
                // Both eights in one register, every vector in passes of four.
                Wide(unpacked, blocks, factors, factorsB, q, s, a.Halves ? h : b, a.Blocks, a.Count, second,
                    results, resultStride, a.Halves, WordsPerWidening(largest), ahead, aheadBytes);
                return;
            }
            if (arithmetic == Arithmetic.Widened)
            {
                // Every vector in one pass (the codes and activations stay in the first-level cache).
                Widened(unpacked, unpackedB, blocks, factors, factorsB, q, s, a.Halves ? h : b, a.Blocks, a.Count, Math.Min(rowCount, Lanes), second,
                    results, resultStride, a.Halves, WordsPerWidening(largest));
                return;
            }
            for (int first = 0; first < a.Count; first += 4)
            {
                int count = Math.Min(4, a.Count - first);
                float* destination = results + (nint)first * resultStride;
                if (second > 0)
                {
                    if (a.Halves) FourPair<HalfBlocks>(unpacked, unpackedB, blocks, factors, factorsB, q, s, h, a.Blocks, first, count, second, destination, resultStride);
                    else FourPair<WholeBlocks>(unpacked, unpackedB, blocks, factors, factorsB, q, s, b, a.Blocks, first, count, second, destination, resultStride);
                }
                else if (a.Halves) Four<HalfBlocks>(unpacked, blocks, factors, q, s, h, a.Blocks, first, count, rowCount, destination, resultStride);
                else Four<WholeBlocks>(unpacked, blocks, factors, q, s, b, a.Blocks, first, count, rowCount, destination, resultStride);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void UnpackRows(byte* codes, nint rowStride, int rowCount, int blocks, Tables tables, Vector256<byte>* unpacked, int step)
    {
        if (tables.Selectors is null) Unpack<OneTable>(codes, rowStride, rowCount, blocks, tables, unpacked, step);
        else if (tables.Two && !Avx512Vbmi.VL.IsSupported) Unpack<TwoSelectedTables>(codes, rowStride, rowCount, blocks, tables, unpacked, step);
        else Unpack<SelectedTables>(codes, rowStride, rowCount, blocks, tables, unpacked, step);
    }

    /// <summary>Asks for <paramref name="bytes"/> bytes from <paramref name="start"/> into the first-level cache, a
    /// line (64 bytes) at a time; any address may be asked for.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Prefetch(byte* start, nint bytes)
    {
        if (!Sse.IsSupported) return;
        for (nint o = 0; o < bytes; o += 64) Sse.Prefetch0(start + o);
    }

    /// <summary>How a nibble becomes its unsigned value: the tables in registers (<see cref="Prepare"/>, once per
    /// group), then a lookup per vector of nibbles.</summary>
    private interface ILookup
    {
        static abstract Registers Prepare(Tables tables);

        static abstract Vector256<byte> Look(Vector256<byte> nibbles, in Registers tables, Vector256<byte> selectors);

        /// <summary><see cref="Look(Vector256{byte}, in Registers, Vector256{byte})"/> on sixteen rows' nibbles at once (<see cref="Unpack16{TLookup}"/>; AVX-512 BW, and
        /// VBMI for per-block tables): <paramref name="tables"/> is the one table in every 128-bit lane, or the four
        /// tables' 64 bytes.</summary>
        static abstract Vector512<byte> Look(Vector512<byte> nibbles, Vector512<byte> tables, Vector512<byte> selectors);
    }

    /// <summary>Up to four table registers: the one table (in both 128-bit lanes), the four tables' 64 bytes as two
    /// registers (<c>vpermi2b</c>), or each of four tables in both lanes (<c>vpshufb</c> without AVX-512 VBMI).</summary>
    private readonly struct Registers(Vector256<sbyte> t0, Vector256<sbyte> t1 = default, Vector256<sbyte> t2 = default, Vector256<sbyte> t3 = default)
    {
        public readonly Vector256<sbyte> T0 = t0, T1 = t1, T2 = t2, T3 = t3;
    }

    private readonly struct OneTable : ILookup
    {
        public static Registers Prepare(Tables tables) => new(tables.Lower);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<byte> Look(Vector256<byte> nibbles, in Registers tables, Vector256<byte> selectors) =>
            Avx2.Shuffle(tables.T0, nibbles.AsSByte()).AsByte();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<byte> Look(Vector512<byte> nibbles, Vector512<byte> tables, Vector512<byte> selectors) =>
            Avx512BW.Shuffle(tables, nibbles);
    }

    private readonly struct SelectedTables : ILookup
    {
        public static Registers Prepare(Tables tables) =>
            Avx512Vbmi.VL.IsSupported
                ? new(tables.Lower, tables.Upper)
                : new(Vector256.Create(tables.Lower.GetLower()), Vector256.Create(tables.Lower.GetUpper()),
                      Vector256.Create(tables.Upper.GetLower()), Vector256.Create(tables.Upper.GetUpper()));

        /// <summary>Index table × 16 + code into the 64 bytes: one <c>vpermi2b</c> (AVX-512 VBMI), else each table's
        /// <c>vpshufb</c> and two rounds of <c>vpblendvb</c> on the selector's bits (table bit 0 is byte bit 4, moved
        /// to bit 7 by a shift left by 3; bit 1 by 2: the bits a 16-bit shift carries in from the byte below land
        /// under bit 7, which alone <c>vpblendvb</c> reads).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<byte> Look(Vector256<byte> nibbles, in Registers tables, Vector256<byte> selectors)
        {
            if (Avx512Vbmi.VL.IsSupported)
                return Avx512Vbmi.VL.PermuteVar32x8x2(tables.T0.AsByte(), nibbles | selectors, tables.T1.AsByte());
            var high = Avx2.ShiftLeftLogical(selectors.AsUInt16(), 2).AsSByte();
            return Avx2.BlendVariable(TwoSelectedTables.Pick(tables.T0, tables.T1, nibbles, selectors),
                TwoSelectedTables.Pick(tables.T2, tables.T3, nibbles, selectors), high).AsByte();
        }

        /// <summary>Index table × 16 + code into the 64 bytes: one <c>vpermb</c>.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<byte> Look(Vector512<byte> nibbles, Vector512<byte> tables, Vector512<byte> selectors) =>
            Avx512Vbmi.PermuteVar64x8(tables, nibbles | selectors);
    }

    /// <summary><see cref="SelectedTables"/> with two tables and no AVX-512 VBMI: each table's <c>vpshufb</c> and one
    /// blend on the selector's bit 4 (NxFP4's default has two).</summary>
    private readonly struct TwoSelectedTables : ILookup
    {
        public static Registers Prepare(Tables tables) =>
            new(Vector256.Create(tables.Lower.GetLower()), Vector256.Create(tables.Lower.GetUpper()));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<byte> Look(Vector256<byte> nibbles, in Registers tables, Vector256<byte> selectors) =>
            Pick(tables.T0, tables.T1, nibbles, selectors).AsByte();

        /// <summary>Not used: without AVX-512 VBMI per-block tables unpack eight rows at a time.</summary>
        public static Vector512<byte> Look(Vector512<byte> nibbles, Vector512<byte> tables, Vector512<byte> selectors) =>
            throw new PlatformNotSupportedException("two selected tables unpack eight rows at a time");

        /// <summary>Each nibble through <paramref name="t0"/> or <paramref name="t1"/> as the selector's bit 4 says
        /// (moved to bit 7, which alone <c>vpblendvb</c> reads, by a 16-bit shift left by 3).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<sbyte> Pick(Vector256<sbyte> t0, Vector256<sbyte> t1, Vector256<byte> nibbles, Vector256<byte> selectors) =>
            Avx2.BlendVariable(Avx2.Shuffle(t0, nibbles.AsSByte()), Avx2.Shuffle(t1, nibbles.AsSByte()),
                Avx2.ShiftLeftLogical(selectors.AsUInt16(), 3).AsSByte());
    }

    /// <summary>The group's codes as unsigned table values, block j's eight vectors at <c>unpacked[8j..]</c>: vector
    /// 2m the low nibbles of each row's code bytes 4m..4m+3, vector 2m + 1 the high ones.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // optimized at once: a prompt pass alone may call it too rarely to leave tier 0
    private static void Unpack<TLookup>(byte* codes, nint rowStride, int rowCount, int blocks, Tables tables, Vector256<byte>* unpacked, int step)
        where TLookup : struct, ILookup
    {
        // Missing rows of a last partial group read row 0 (their results are dropped).
        byte* r0 = codes, r1 = Row(codes, rowStride, rowCount, 1), r2 = Row(codes, rowStride, rowCount, 2), r3 = Row(codes, rowStride, rowCount, 3);
        byte* r4 = Row(codes, rowStride, rowCount, 4), r5 = Row(codes, rowStride, rowCount, 5), r6 = Row(codes, rowStride, rowCount, 6), r7 = Row(codes, rowStride, rowCount, 7);
        var nibble = Vector256.Create((byte)0x0F);
        var registers = TLookup.Prepare(tables);
        for (int j = 0; j < blocks; j++)
        {
            nint o = (nint)j * 16;
            // Rows 0–3 in the low 128-bit lane, 4–7 in the high one; a 4 × 4 transpose of words within each lane.
            var a0 = Vector256.Create(Vector128.Load(r0 + o), Vector128.Load(r4 + o)).AsInt32();
            var a1 = Vector256.Create(Vector128.Load(r1 + o), Vector128.Load(r5 + o)).AsInt32();
            var a2 = Vector256.Create(Vector128.Load(r2 + o), Vector128.Load(r6 + o)).AsInt32();
            var a3 = Vector256.Create(Vector128.Load(r3 + o), Vector128.Load(r7 + o)).AsInt32();
            var l01 = Avx2.UnpackLow(a0, a1).AsInt64();
            var h01 = Avx2.UnpackHigh(a0, a1).AsInt64();
            var l23 = Avx2.UnpackLow(a2, a3).AsInt64();
            var h23 = Avx2.UnpackHigh(a2, a3).AsInt64();
            var selectors = tables.Selectors is null ? default : Vector256.Load(tables.Selectors + (nint)j * 8).AsByte();
            Vector256<byte>* w = unpacked + (nint)j * 8 * step;
            Split<TLookup>(Avx2.UnpackLow(l01, l23).AsByte(), registers, selectors, nibble, w, step);
            Split<TLookup>(Avx2.UnpackHigh(l01, l23).AsByte(), registers, selectors, nibble, w + 2 * step, step);
            Split<TLookup>(Avx2.UnpackLow(h01, h23).AsByte(), registers, selectors, nibble, w + 4 * step, step);
            Split<TLookup>(Avx2.UnpackHigh(h01, h23).AsByte(), registers, selectors, nibble, w + 6 * step, step);
        }
    }

    /// <summary>
    /// <see cref="Unpack{TLookup}"/> for all sixteen rows of a group at once on 512-bit registers (AVX-512 BW; per-block
    /// tables also VBMI), into <see cref="Arithmetic.Wide"/>'s interleaved layout: rows 0–3, 4–7, 8–11 and 12–15 in the
    /// four 128-bit lanes, so the same 4 × 4 transposes of words within each lane put a word of all sixteen rows in one
    /// register, rows in order — block j's word m is <c>unpacked[8j + m]</c> (512-bit vectors). Half the instructions of
    /// two eight-row passes; the same bytes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Unpack16<TLookup>(byte* codes, nint rowStride, int rowCount, int blocks, Tables tables, Vector512<byte>* unpacked)
        where TLookup : struct, ILookup
    {
        // Missing rows of a last partial group read row 0 (their results are dropped).
        byte* r0 = codes, r1 = Row(codes, rowStride, rowCount, 1), r2 = Row(codes, rowStride, rowCount, 2), r3 = Row(codes, rowStride, rowCount, 3);
        byte* r4 = Row(codes, rowStride, rowCount, 4), r5 = Row(codes, rowStride, rowCount, 5), r6 = Row(codes, rowStride, rowCount, 6), r7 = Row(codes, rowStride, rowCount, 7);
        byte* r8 = Row(codes, rowStride, rowCount, 8), r9 = Row(codes, rowStride, rowCount, 9), r10 = Row(codes, rowStride, rowCount, 10), r11 = Row(codes, rowStride, rowCount, 11);
        byte* r12 = Row(codes, rowStride, rowCount, 12), r13 = Row(codes, rowStride, rowCount, 13), r14 = Row(codes, rowStride, rowCount, 14), r15 = Row(codes, rowStride, rowCount, 15);
        var nibble = Vector512.Create((byte)0x0F);
        var table = tables.Selectors is null
            ? Vector512.Create(tables.Lower.GetLower().AsByte())
            : Vector512.Create(tables.Lower.AsByte(), tables.Upper.AsByte());
        int* selectorsA = tables.Selectors, selectorsB = tables.Selectors + (nint)blocks * Lanes;
        for (int j = 0; j < blocks; j++)
        {
            nint o = (nint)j * 16;
            var a0 = Vector512.Create(Vector256.Create(Vector128.Load(r0 + o), Vector128.Load(r4 + o)), Vector256.Create(Vector128.Load(r8 + o), Vector128.Load(r12 + o))).AsInt32();
            var a1 = Vector512.Create(Vector256.Create(Vector128.Load(r1 + o), Vector128.Load(r5 + o)), Vector256.Create(Vector128.Load(r9 + o), Vector128.Load(r13 + o))).AsInt32();
            var a2 = Vector512.Create(Vector256.Create(Vector128.Load(r2 + o), Vector128.Load(r6 + o)), Vector256.Create(Vector128.Load(r10 + o), Vector128.Load(r14 + o))).AsInt32();
            var a3 = Vector512.Create(Vector256.Create(Vector128.Load(r3 + o), Vector128.Load(r7 + o)), Vector256.Create(Vector128.Load(r11 + o), Vector128.Load(r15 + o))).AsInt32();
            var l01 = Avx512F.UnpackLow(a0, a1).AsInt64();
            var h01 = Avx512F.UnpackHigh(a0, a1).AsInt64();
            var l23 = Avx512F.UnpackLow(a2, a3).AsInt64();
            var h23 = Avx512F.UnpackHigh(a2, a3).AsInt64();
            var selectors = tables.Selectors is null
                ? default
                : Vector512.Create(Vector256.Load(selectorsA + (nint)j * 8), Vector256.Load(selectorsB + (nint)j * 8)).AsByte();
            Vector512<byte>* w = unpacked + (nint)j * 8;
            Split16<TLookup>(Avx512F.UnpackLow(l01, l23).AsByte(), table, selectors, nibble, w);
            Split16<TLookup>(Avx512F.UnpackHigh(l01, l23).AsByte(), table, selectors, nibble, w + 2);
            Split16<TLookup>(Avx512F.UnpackLow(h01, h23).AsByte(), table, selectors, nibble, w + 4);
            Split16<TLookup>(Avx512F.UnpackHigh(h01, h23).AsByte(), table, selectors, nibble, w + 6);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Split16<TLookup>(Vector512<byte> words, Vector512<byte> table, Vector512<byte> selectors, Vector512<byte> nibble, Vector512<byte>* w)
        where TLookup : struct, ILookup
    {
        w[0] = TLookup.Look(words & nibble, table, selectors);
        w[1] = TLookup.Look(Avx512BW.ShiftRightLogical(words.AsUInt16(), 4).AsByte() & nibble, table, selectors);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte* Row(byte* codes, nint rowStride, int rowCount, int i) => codes + SourceRow(i, rowCount) * rowStride;

    /// <summary>The row lane <paramref name="lane"/> of a group of <paramref name="rowCount"/> rows reads: its own, or
    /// for the missing lanes of a last partial group the group's first (their results are dropped).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int SourceRow(int lane, int rowCount) => lane < rowCount ? lane : 0;

    /// <summary>Byte offsets of the eight lanes' rows, <paramref name="stride"/> bytes apart, for a gather of one 32-bit word
    /// per lane: lane i reads row <see cref="SourceRow"/>(i, <paramref name="rowCount"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> RowOffsets(int rowCount, int stride)
    {
        var lane = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
        return Vector256.ConditionalSelect(Vector256.LessThan(lane, Vector256.Create(rowCount)), lane * stride, Vector256<int>.Zero);
    }

    /// <summary>One row's <paramref name="count"/> factors into lane <paramref name="lane"/> of the group's factors
    /// (<c>lanes[Lanes·k + lane] = row[k]</c>, the layout <see cref="Group(byte*, nint, int, int, float*, Vectors, Tables, Vector256{byte}*, float*, int)"/> reads).</summary>
    public static void Place(float* row, int count, int lane, float* lanes)
    {
        for (int k = 0; k < count; k++) lanes[k * Lanes + lane] = row[k];
    }

    /// <summary>
    /// <see cref="Place"/> for a whole eight at once: rows <c>first + i·stride</c> (<paramref name="rows"/> of them; the
    /// missing lanes repeat the first row, <see cref="SourceRow"/>), <paramref name="count"/> factors each, into
    /// <c>lanes[Lanes·k + i]</c> — an 8 × 8 transpose in registers (<see cref="Transposes.Eight"/>) per 64 factors
    /// instead of 64 scattered stores (the scatter was ~8% of a 16-vector NxFP4 product, and as much of GGUF Q4_0's).
    /// The same floats, moved.
    /// </summary>
    public static void PlaceRows(float* first, nint stride, int rows, int count, float* lanes)
    {
        float* p0 = first, p1 = first + SourceRow(1, rows) * stride, p2 = first + SourceRow(2, rows) * stride, p3 = first + SourceRow(3, rows) * stride;
        float* p4 = first + SourceRow(4, rows) * stride, p5 = first + SourceRow(5, rows) * stride, p6 = first + SourceRow(6, rows) * stride;
        float* p7 = first + SourceRow(7, rows) * stride;
        int k = 0;
        if (Avx.IsSupported)
            for (; k + 8 <= count; k += 8)
            {
                Vector256<float> r0 = Vector256.Load(p0 + k), r1 = Vector256.Load(p1 + k), r2 = Vector256.Load(p2 + k), r3 = Vector256.Load(p3 + k);
                Vector256<float> r4 = Vector256.Load(p4 + k), r5 = Vector256.Load(p5 + k), r6 = Vector256.Load(p6 + k), r7 = Vector256.Load(p7 + k);
                Transposes.Eight(r0, r1, r2, r3, r4, r5, r6, r7, lanes + Lanes * k, Lanes);
            }
        for (; k < count; k++)
        {
            float* c = lanes + Lanes * k;
            c[0] = p0[k]; c[1] = p1[k]; c[2] = p2[k]; c[3] = p3[k]; c[4] = p4[k]; c[5] = p5[k]; c[6] = p6[k]; c[7] = p7[k];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Split<TLookup>(Vector256<byte> words, in Registers tables, Vector256<byte> selectors, Vector256<byte> nibble, Vector256<byte>* w, int step)
        where TLookup : struct, ILookup
    {
        w[0] = TLookup.Look(words & nibble, tables, selectors);
        w[step] = TLookup.Look(Avx2.ShiftRightLogical(words.AsUInt16(), 4).AsByte() & nibble, tables, selectors);
    }

    /// <summary>Whether a block of 32 has one weight scale (MXFP4, NxFP4, Q4_0) or one per 16 (NVFP4).</summary>
    private interface IShape
    {
        static abstract bool Halves { get; }
    }

    private readonly struct WholeBlocks : IShape
    {
        public static bool Halves => false;
    }

    private readonly struct HalfBlocks : IShape
    {
        public static bool Halves => true;
    }

    /// <summary>Up to four vectors (<paramref name="count"/>) against the unpacked group, their accumulators in
    /// registers; unused slots repeat the first vector and are dropped. Whole blocks: <paramref name="b"/> one bias and
    /// <paramref name="factors"/> eight rows' factors per block; half blocks: two of each (<c>[16j + 8h + i]</c>), the
    /// first four unpacked vectors being elements 0–15 and the last four 16–31.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // optimized at once: a prompt pass alone may call it too rarely to leave tier 0
    private static void Four<TShape>(Vector256<byte>* unpacked, int blocks, float* factors, int* q, float* s, int* b, int nb, int first, int count,
        int rowCount, float* results, int resultStride) where TShape : struct, IShape
    {
        int biases = TShape.Halves ? 2 : 1;
        int v1 = first + Math.Min(1, count - 1), v2 = first + Math.Min(2, count - 1), v3 = first + Math.Min(3, count - 1);
        int* q0 = q + (nint)first * nb * 8, q1 = q + (nint)v1 * nb * 8, q2 = q + (nint)v2 * nb * 8, q3 = q + (nint)v3 * nb * 8;
        float* s0 = s + (nint)first * nb, s1 = s + (nint)v1 * nb, s2 = s + (nint)v2 * nb, s3 = s + (nint)v3 * nb;
        int* b0 = b + (nint)first * nb * biases, b1 = b + (nint)v1 * nb * biases, b2 = b + (nint)v2 * nb * biases, b3 = b + (nint)v3 * nb * biases;
        Vector256<float> y0 = default, y1 = default, y2 = default, y3 = default;
        for (int j = 0; j < blocks; j++)
        {
            Vector256<byte>* w = unpacked + (nint)j * 8;
            int k = j * 8, c = j * biases;
            var i0 = Vector256.Create(b0[c]);
            var i1 = Vector256.Create(b1[c]);
            var i2 = Vector256.Create(b2[c]);
            var i3 = Vector256.Create(b3[c]);
            // Two chains per vector, so consecutive multiply-adds do not wait on each other: even and odd steps of a
            // whole block, or its two halves (each from its own bias).
            Vector256<int> e0 = default, e1 = default, e2 = default, e3 = default;
            if (TShape.Halves)
            {
                (e0, e1, e2, e3) = (Vector256.Create(b0[c + 1]), Vector256.Create(b1[c + 1]), Vector256.Create(b2[c + 1]), Vector256.Create(b3[c + 1]));
                Step(w[0], q0, q1, q2, q3, k, ref i0, ref i1, ref i2, ref i3);
                Step(w[4], q0, q1, q2, q3, k + 4, ref e0, ref e1, ref e2, ref e3);
                Step(w[1], q0, q1, q2, q3, k + 1, ref i0, ref i1, ref i2, ref i3);
                Step(w[5], q0, q1, q2, q3, k + 5, ref e0, ref e1, ref e2, ref e3);
                Step(w[2], q0, q1, q2, q3, k + 2, ref i0, ref i1, ref i2, ref i3);
                Step(w[6], q0, q1, q2, q3, k + 6, ref e0, ref e1, ref e2, ref e3);
                Step(w[3], q0, q1, q2, q3, k + 3, ref i0, ref i1, ref i2, ref i3);
                Step(w[7], q0, q1, q2, q3, k + 7, ref e0, ref e1, ref e2, ref e3);
                var fa = Vector256.Load(factors + 2 * k);
                var fb = Vector256.Load(factors + 2 * k + 8);
                var x0 = Vector256.Create(s0[j]);
                var x1 = Vector256.Create(s1[j]);
                var x2 = Vector256.Create(s2[j]);
                var x3 = Vector256.Create(s3[j]);
                y0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(e0), fb * x0, Fma.MultiplyAdd(Avx.ConvertToVector256Single(i0), fa * x0, y0));
                y1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(e1), fb * x1, Fma.MultiplyAdd(Avx.ConvertToVector256Single(i1), fa * x1, y1));
                y2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(e2), fb * x2, Fma.MultiplyAdd(Avx.ConvertToVector256Single(i2), fa * x2, y2));
                y3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(e3), fb * x3, Fma.MultiplyAdd(Avx.ConvertToVector256Single(i3), fa * x3, y3));
                continue;
            }
            // Unrolled by hand (the JIT keeps an 8-step loop).
            Step(w[0], q0, q1, q2, q3, k, ref i0, ref i1, ref i2, ref i3);
            Step(w[1], q0, q1, q2, q3, k + 1, ref e0, ref e1, ref e2, ref e3);
            Step(w[2], q0, q1, q2, q3, k + 2, ref i0, ref i1, ref i2, ref i3);
            Step(w[3], q0, q1, q2, q3, k + 3, ref e0, ref e1, ref e2, ref e3);
            Step(w[4], q0, q1, q2, q3, k + 4, ref i0, ref i1, ref i2, ref i3);
            Step(w[5], q0, q1, q2, q3, k + 5, ref e0, ref e1, ref e2, ref e3);
            Step(w[6], q0, q1, q2, q3, k + 6, ref i0, ref i1, ref i2, ref i3);
            Step(w[7], q0, q1, q2, q3, k + 7, ref e0, ref e1, ref e2, ref e3);
            i0 += e0;
            i1 += e1;
            i2 += e2;
            i3 += e3;
            var f = Vector256.Load(factors + k);
            y0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(i0), f * Vector256.Create(s0[j]), y0);
            y1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(i1), f * Vector256.Create(s1[j]), y1);
            y2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(i2), f * Vector256.Create(s2[j]), y2);
            y3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(i3), f * Vector256.Create(s3[j]), y3);
        }
        Store(y0, results, rowCount);
        if (count > 1) Store(y1, results + resultStride, rowCount);
        if (count > 2) Store(y2, results + 2 * (nint)resultStride, rowCount);
        if (count > 3) Store(y3, results + 3 * (nint)resultStride, rowCount);
    }

    /// <summary>How many words' <c>vpmaddubsw</c> results (each lane two products u·q, |q| ≤ 127) int16 holds summed
    /// when no table entry exceeds <paramref name="largest"/>: 2·n·largest·127 ≤ 32767; 0 beyond 128 (one word's
    /// pair would saturate).</summary>
    internal static int WordsPerWidening(int largest) => largest <= 32 ? 4 : largest <= 64 ? 2 : largest <= 128 ? 1 : 0;

    /// <summary>
    /// The group on AVX2 without VNNI, every vector in one pass: each <c>vpdpbusd</c> becomes a <c>vpmaddubsw</c> (pairs
    /// of products in int16), and <paramref name="words"/> words' pairs (<see cref="WordsPerWidening"/>: four for MXFP4's,
    /// NVFP4's and Q4_0's tables, whose entries are at most 24) are added in int16 before one <c>vpmaddwd</c> widens them
    /// to the rows' int32 lanes. Each activation word is broadcast once for both eights (<paramref name="rowsB"/> &gt; 0).
    /// No sum can saturate, so each block's integer total, and the float operations after it, are <see cref="Four{TShape}"/>'s.
    /// The accumulators live in a small stack buffer (sixteen vectors × two eights do not fit sixteen registers), so the
    /// unpacked codes are read once per vector from the first-level cache instead of once per four vectors: on a 2-core
    /// AVX2 machine (Zen 3) 52 G multiply-adds/s a thread at 16 vectors against 19 for <see cref="NibbleDot.RowMany{TMode}"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Widened(Vector256<byte>* ua, Vector256<byte>* ub, int blocks, float* fa, float* fb, int* q, float* s, int* b, int nb,
        int count, int rowsA, int rowsB, float* results, int resultStride, bool halves, int words)
    {
        switch ((halves, words))
        {
            case (false, 4): Widened<WholeBlocks, FourWords>(ua, ub, blocks, fa, fb, q, s, b, nb, count, rowsA, rowsB, results, resultStride); break;
            case (true, 4): Widened<HalfBlocks, FourWords>(ua, ub, blocks, fa, fb, q, s, b, nb, count, rowsA, rowsB, results, resultStride); break;
            case (false, 2): Widened<WholeBlocks, TwoWords>(ua, ub, blocks, fa, fb, q, s, b, nb, count, rowsA, rowsB, results, resultStride); break;
            case (true, 2): Widened<HalfBlocks, TwoWords>(ua, ub, blocks, fa, fb, q, s, b, nb, count, rowsA, rowsB, results, resultStride); break;
            case (false, _): Widened<WholeBlocks, OneWord>(ua, ub, blocks, fa, fb, q, s, b, nb, count, rowsA, rowsB, results, resultStride); break;
            default: Widened<HalfBlocks, OneWord>(ua, ub, blocks, fa, fb, q, s, b, nb, count, rowsA, rowsB, results, resultStride); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Widened<TShape, TWidening>(Vector256<byte>* ua, Vector256<byte>* ub, int blocks, float* fa, float* fb, int* q, float* s,
        int* b, int nb, int count, int rowsA, int rowsB, float* results, int resultStride) where TShape : struct, IShape where TWidening : struct, IWidening
    {
        int biases = TShape.Halves ? 2 : 1;
        var ones = Vector256.Create((short)1);
        bool pair = rowsB > 0;
        int v = 0;
        // Vectors outside, blocks inside: a pair of vectors' four float sums stay in registers across the blocks, and
        // each block's activation words, scale and bias are the next ones along (the codes, a block after another,
        // stay in the first-level cache for the next pair). Each output still adds its blocks in order, so the same
        // bits as blocks outside.
        if (pair)
            for (; v + 1 < count; v += 2)
            {
                // Two vectors at once: each unpacked word is loaded once for both.
                int* q0 = q + (nint)v * nb * 8, q1 = q0 + (nint)nb * 8;
                float* s0 = s + (nint)v * nb, s1 = s0 + nb;
                int* b0 = b + (nint)v * nb * biases, b1 = b0 + (nint)nb * biases;
                Vector256<float> ya0 = default, yb0 = default, ya1 = default, yb1 = default;
                for (int j = 0; j < blocks; j++)
                {
                    Vector256<byte>* wa = ua + (nint)j * 8, wb = ub + (nint)j * 8;
                    var scale0 = Vector256.Create(s0[j]);
                    var scale1 = Vector256.Create(s1[j]);
                    // Whole blocks: one part of eight words; half blocks: two parts of four, each with its bias and factors.
                    for (int part = 0; part < biases; part++)
                    {
                        int m = TShape.Halves ? 4 * part : 0;
                        var fA = Vector256.Load(fa + biases * j * 8 + 8 * part);
                        var fB = Vector256.Load(fb + biases * j * 8 + 8 * part);
                        int* x0 = q0 + (nint)j * 8 + m, x1 = q1 + (nint)j * 8 + m;
                        Vector256<int> sa0 = Vector256.Create(b0[j * biases + part]), sb0 = sa0;
                        Vector256<int> sa1 = Vector256.Create(b1[j * biases + part]), sb1 = sa1;
                        QuadPairTwo<TWidening>(wa + m, wb + m, x0, x1, ones, ref sa0, ref sb0, ref sa1, ref sb1);
                        if (!TShape.Halves) QuadPairTwo<TWidening>(wa + 4, wb + 4, x0 + 4, x1 + 4, ones, ref sa0, ref sb0, ref sa1, ref sb1);
                        yb0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sb0), fB * scale0, yb0);
                        ya0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sa0), fA * scale0, ya0);
                        yb1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sb1), fB * scale1, yb1);
                        ya1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sa1), fA * scale1, ya1);
                    }
                }
                Store(ya0, results + (nint)v * resultStride, rowsA);
                Store(yb0, results + (nint)v * resultStride + Lanes, rowsB);
                Store(ya1, results + (nint)(v + 1) * resultStride, rowsA);
                Store(yb1, results + (nint)(v + 1) * resultStride + Lanes, rowsB);
            }
        for (; v < count; v++)
        {
            int* qv = q + (nint)v * nb * 8;
            float* sv = s + (nint)v * nb;
            int* bv = b + (nint)v * nb * biases;
            Vector256<float> ya = default, yb = default;
            for (int j = 0; j < blocks; j++)
            {
                Vector256<byte>* wa = ua + (nint)j * 8, wb = ub + (nint)j * 8;
                var scale = Vector256.Create(sv[j]);
                for (int part = 0; part < biases; part++)
                {
                    int m = TShape.Halves ? 4 * part : 0;
                    var fA = Vector256.Load(fa + biases * j * 8 + 8 * part);
                    int* x = qv + (nint)j * 8 + m;
                    Vector256<int> sa = Vector256.Create(bv[j * biases + part]), sb = sa;
                    if (pair)
                    {
                        var fB = Vector256.Load(fb + biases * j * 8 + 8 * part);
                        QuadPair<TWidening>(wa + m, wb + m, x, ones, ref sa, ref sb);
                        if (!TShape.Halves) QuadPair<TWidening>(wa + 4, wb + 4, x + 4, ones, ref sa, ref sb);
                        yb = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sb), fB * scale, yb);
                    }
                    else
                    {
                        sa += Quad<TWidening>(wa + m, x, ones);
                        if (!TShape.Halves) sa += Quad<TWidening>(wa + 4, x + 4, ones);
                    }
                    ya = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sa), fA * scale, ya);
                }
            }
            Store(ya, results + (nint)v * resultStride, rowsA);
            if (pair) Store(yb, results + (nint)v * resultStride + Lanes, rowsB);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Wide(Vector256<byte>* u, int blocks, float* fa, float* fb, int* q, float* s, int* b, int nb,
        int count, int rowsB, float* results, int resultStride, bool halves, int words, byte* ahead, nint aheadBytes)
    {
        switch ((halves, words))
        {
            case (false, 4): Wide<WholeBlocks, FourWords>(u, blocks, fa, fb, q, s, b, nb, count, rowsB, results, resultStride, ahead, aheadBytes); break;
            case (true, 4): Wide<HalfBlocks, FourWords>(u, blocks, fa, fb, q, s, b, nb, count, rowsB, results, resultStride, ahead, aheadBytes); break;
            case (false, 2): Wide<WholeBlocks, TwoWords>(u, blocks, fa, fb, q, s, b, nb, count, rowsB, results, resultStride, ahead, aheadBytes); break;
            case (true, 2): Wide<HalfBlocks, TwoWords>(u, blocks, fa, fb, q, s, b, nb, count, rowsB, results, resultStride, ahead, aheadBytes); break;
            case (false, _): Wide<WholeBlocks, OneWord>(u, blocks, fa, fb, q, s, b, nb, count, rowsB, results, resultStride, ahead, aheadBytes); break;
            default: Wide<HalfBlocks, OneWord>(u, blocks, fa, fb, q, s, b, nb, count, rowsB, results, resultStride, ahead, aheadBytes); break;
        }
    }

    /// <summary>
    /// Both eights of a sixteen-row group in one 512-bit register (AVX-512 BW): rows 0–7's unpacked word in the low
    /// half, rows 8–15's in the high half, so each <c>vpmaddubsw</c> on 512 bits does the work of two on 256 and each
    /// activation broadcast feeds all sixteen rows; <typeparamref name="TWidening"/>'s words are added in int16 per
    /// <c>vpmaddwd</c> as in <see cref="Widened{TShape, TWidening}"/>, and each block's (or half block's) factors and
    /// scale are applied once for sixteen rows. Four vectors a pass over the group's codes (their int16 and int32 sums
    /// and float totals stay in registers; the codes come again from the first-level cache for the next four). No sum
    /// can saturate (<see cref="WordsPerWidening"/>), each row's integers are the other kernels' and its float operations
    /// (convert, factor × scale, one multiply-add a block or half block, blocks in order) too: the same bits. On the
    /// Zen 5 of the twenty-sixth session <c>vpmaddubsw zmm</c> runs two a cycle, so this mix reaches ~300 G int8
    /// multiply-adds/s a thread against 191 for <c>vpdpbusd ymm</c> (<c>vnni-peak</c>), the only VNNI form .NET 10 offers.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Wide<TShape, TWidening>(Vector256<byte>* u, int blocks, float* fa, float* fb, int* q, float* s,
        int* b, int nb, int count, int rowsB, float* results, int resultStride, byte* ahead, nint aheadBytes)
        where TShape : struct, IShape where TWidening : struct, IWidening
    {
        int biases = TShape.Halves ? 2 : 1;
        var ones = Vector512.Create((short)1);
        // The next group's codes, asked for a few lines per block of each pass (all at once, dozens of lines, stalled on
        // the core's outstanding misses): lines k·slot.. of the passes × blocks slots.
        nint lines = (aheadBytes + 63) / 64, slots = (nint)((count + 3) / 4) * blocks, perSlot = (lines + slots - 1) / slots, next = 0;
        for (int first = 0; first < count; first += 4)
        {
            // Unused slots repeat the last vector and are dropped.
            int n = Math.Min(4, count - first);
            int v1 = first + Math.Min(1, n - 1), v2 = first + Math.Min(2, n - 1), v3 = first + Math.Min(3, n - 1);
            int* q0 = q + (nint)first * nb * 8, q1 = q + (nint)v1 * nb * 8, q2 = q + (nint)v2 * nb * 8, q3 = q + (nint)v3 * nb * 8;
            float* s0 = s + (nint)first * nb, s1 = s + (nint)v1 * nb, s2 = s + (nint)v2 * nb, s3 = s + (nint)v3 * nb;
            int* b0 = b + (nint)first * nb * biases, b1 = b + (nint)v1 * nb * biases, b2 = b + (nint)v2 * nb * biases, b3 = b + (nint)v3 * nb * biases;
            Vector512<float> y0 = default, y1 = default, y2 = default, y3 = default;
            for (int j = 0; j < blocks; j++)
            {
                for (nint l = 0; l < perSlot && next < lines; l++, next++) Sse.Prefetch0(ahead + next * 64);
                var w = (Vector512<byte>*)(u + (nint)j * 16);
                var x0 = Vector512.Create(s0[j]);
                var x1 = Vector512.Create(s1[j]);
                var x2 = Vector512.Create(s2[j]);
                var x3 = Vector512.Create(s3[j]);
                for (int part = 0; part < biases; part++)
                {
                    int m = TShape.Halves ? 4 * part : 0, c = j * biases + part;
                    var a0 = Vector512.Create(b0[c]);
                    var a1 = Vector512.Create(b1[c]);
                    var a2 = Vector512.Create(b2[c]);
                    var a3 = Vector512.Create(b3[c]);
                    int k = j * 8 + m;
                    WideQuad<TWidening>(w + m, q0 + k, q1 + k, q2 + k, q3 + k, ones, ref a0, ref a1, ref a2, ref a3);
                    if (!TShape.Halves) WideQuad<TWidening>(w + 4, q0 + k + 4, q1 + k + 4, q2 + k + 4, q3 + k + 4, ones, ref a0, ref a1, ref a2, ref a3);
                    // Each row's factor for this (half) block, rows 0–7 then 8–15: [8j + i], or [16j + 8h + i] with half blocks.
                    var f = Vector512.Create(Vector256.Load(fa + biases * j * 8 + 8 * part), Vector256.Load(fb + biases * j * 8 + 8 * part));
                    y0 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(a0), f * x0, y0);
                    y1 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(a1), f * x1, y1);
                    y2 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(a2), f * x2, y2);
                    y3 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(a3), f * x3, y3);
                }
            }
            StoreWide(y0, results + (nint)first * resultStride, rowsB);
            if (n > 1) StoreWide(y1, results + (nint)(first + 1) * resultStride, rowsB);
            if (n > 2) StoreWide(y2, results + (nint)(first + 2) * resultStride, rowsB);
            if (n > 3) StoreWide(y3, results + (nint)(first + 3) * resultStride, rowsB);
        }
    }

    /// <summary>Four words of a sixteen-row group (<paramref name="w"/>: rows 0–7 in the low half of each, 8–15 in the
    /// high half) times four vectors' four activation words, each broadcast once: int16 sums per vector, widened every
    /// <see cref="IWidening.Words"/> words into <paramref name="a0"/>..<paramref name="a3"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WideQuad<TWidening>(Vector512<byte>* w, int* x0, int* x1, int* x2, int* x3, Vector512<short> ones,
        ref Vector512<int> a0, ref Vector512<int> a1, ref Vector512<int> a2, ref Vector512<int> a3) where TWidening : struct, IWidening
    {
        Vector512<short> t0 = default, t1 = default, t2 = default, t3 = default;
        WideWord<TWidening>(0, w, x0, x1, x2, x3, ones, ref t0, ref t1, ref t2, ref t3, ref a0, ref a1, ref a2, ref a3);
        WideWord<TWidening>(1, w, x0, x1, x2, x3, ones, ref t0, ref t1, ref t2, ref t3, ref a0, ref a1, ref a2, ref a3);
        WideWord<TWidening>(2, w, x0, x1, x2, x3, ones, ref t0, ref t1, ref t2, ref t3, ref a0, ref a1, ref a2, ref a3);
        WideWord<TWidening>(3, w, x0, x1, x2, x3, ones, ref t0, ref t1, ref t2, ref t3, ref a0, ref a1, ref a2, ref a3);
    }

    /// <summary>Word <paramref name="m"/> (a constant once inlined) of <see cref="WideQuad{TWidening}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WideWord<TWidening>(int m, Vector512<byte>* words, int* x0, int* x1, int* x2, int* x3, Vector512<short> ones,
        ref Vector512<short> t0, ref Vector512<short> t1, ref Vector512<short> t2, ref Vector512<short> t3,
        ref Vector512<int> a0, ref Vector512<int> a1, ref Vector512<int> a2, ref Vector512<int> a3) where TWidening : struct, IWidening
    {
        var w = words[m];
        var p0 = Avx512BW.MultiplyAddAdjacent(w, Vector512.Create(x0[m]).AsSByte());
        var p1 = Avx512BW.MultiplyAddAdjacent(w, Vector512.Create(x1[m]).AsSByte());
        var p2 = Avx512BW.MultiplyAddAdjacent(w, Vector512.Create(x2[m]).AsSByte());
        var p3 = Avx512BW.MultiplyAddAdjacent(w, Vector512.Create(x3[m]).AsSByte());
        if (m % TWidening.Words == 0) (t0, t1, t2, t3) = (p0, p1, p2, p3);
        else (t0, t1, t2, t3) = (t0 + p0, t1 + p1, t2 + p2, t3 + p3);
        if (m % TWidening.Words == TWidening.Words - 1)
        {
            a0 += Avx512BW.MultiplyAddAdjacent(t0, ones);
            a1 += Avx512BW.MultiplyAddAdjacent(t1, ones);
            a2 += Avx512BW.MultiplyAddAdjacent(t2, ones);
            a3 += Avx512BW.MultiplyAddAdjacent(t3, ones);
        }
    }

    /// <summary>A sixteen-row result: rows 0–7 (always all eight: the wide kernel runs only groups of more than eight)
    /// at <paramref name="destination"/>, rows 8–15 (<paramref name="rowsB"/> of them) right after.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreWide(Vector512<float> y, float* destination, int rowsB)
    {
        if (rowsB == Lanes) y.Store(destination);
        else
        {
            y.GetLower().Store(destination);
            Store(y.GetUpper(), destination + Lanes, rowsB);
        }
    }

    /// <summary>How many words' <c>vpmaddubsw</c> results are added in int16 per <c>vpmaddwd</c>.</summary>
    private interface IWidening
    {
        static abstract int Words { get; }
    }

    private readonly struct FourWords : IWidening
    {
        public static int Words => 4;
    }

    private readonly struct TwoWords : IWidening
    {
        public static int Words => 2;
    }

    private readonly struct OneWord : IWidening
    {
        public static int Words => 1;
    }

    /// <summary>Four words of both groups' unpacked codes times the vector's four activation words, each broadcast once
    /// for both, added to <paramref name="sa"/> and <paramref name="sb"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void QuadPair<TWidening>(Vector256<byte>* wa, Vector256<byte>* wb, int* x, Vector256<short> ones,
        ref Vector256<int> sa, ref Vector256<int> sb) where TWidening : struct, IWidening
    {
        var x0 = Vector256.Create(x[0]).AsSByte();
        var x1 = Vector256.Create(x[1]).AsSByte();
        var x2 = Vector256.Create(x[2]).AsSByte();
        var x3 = Vector256.Create(x[3]).AsSByte();
        sa += Widen<TWidening>(Avx2.MultiplyAddAdjacent(wa[0], x0), Avx2.MultiplyAddAdjacent(wa[1], x1),
            Avx2.MultiplyAddAdjacent(wa[2], x2), Avx2.MultiplyAddAdjacent(wa[3], x3), ones);
        sb += Widen<TWidening>(Avx2.MultiplyAddAdjacent(wb[0], x0), Avx2.MultiplyAddAdjacent(wb[1], x1),
            Avx2.MultiplyAddAdjacent(wb[2], x2), Avx2.MultiplyAddAdjacent(wb[3], x3), ones);
    }

    /// <summary><see cref="QuadPair{TWidening}"/> for two vectors (<paramref name="x0"/>, <paramref name="x1"/>): each word
    /// of both groups loaded once for the two, the int16 sums kept per vector and group and widened every
    /// <see cref="IWidening.Words"/> words. The same integers (int16 sums cannot overflow within
    /// <see cref="WordsPerWidening"/>), so the same bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void QuadPairTwo<TWidening>(Vector256<byte>* wa, Vector256<byte>* wb, int* x0, int* x1, Vector256<short> ones,
        ref Vector256<int> sa0, ref Vector256<int> sb0, ref Vector256<int> sa1, ref Vector256<int> sb1) where TWidening : struct, IWidening
    {
        Vector256<short> ta0 = default, tb0 = default, ta1 = default, tb1 = default;
        WordTwo<TWidening>(0, wa, wb, x0, x1, ones, ref ta0, ref tb0, ref ta1, ref tb1, ref sa0, ref sb0, ref sa1, ref sb1);
        WordTwo<TWidening>(1, wa, wb, x0, x1, ones, ref ta0, ref tb0, ref ta1, ref tb1, ref sa0, ref sb0, ref sa1, ref sb1);
        WordTwo<TWidening>(2, wa, wb, x0, x1, ones, ref ta0, ref tb0, ref ta1, ref tb1, ref sa0, ref sb0, ref sa1, ref sb1);
        WordTwo<TWidening>(3, wa, wb, x0, x1, ones, ref ta0, ref tb0, ref ta1, ref tb1, ref sa0, ref sb0, ref sa1, ref sb1);
    }

    /// <summary>Word <paramref name="m"/> (a constant once inlined) of <see cref="QuadPairTwo{TWidening}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WordTwo<TWidening>(int m, Vector256<byte>* wa, Vector256<byte>* wb, int* x0, int* x1, Vector256<short> ones,
        ref Vector256<short> ta0, ref Vector256<short> tb0, ref Vector256<short> ta1, ref Vector256<short> tb1,
        ref Vector256<int> sa0, ref Vector256<int> sb0, ref Vector256<int> sa1, ref Vector256<int> sb1) where TWidening : struct, IWidening
    {
        var a = wa[m];
        var c = wb[m];
        var u = Vector256.Create(x0[m]).AsSByte();
        var w = Vector256.Create(x1[m]).AsSByte();
        if (m % TWidening.Words == 0)
        {
            ta0 = Avx2.MultiplyAddAdjacent(a, u);
            tb0 = Avx2.MultiplyAddAdjacent(c, u);
            ta1 = Avx2.MultiplyAddAdjacent(a, w);
            tb1 = Avx2.MultiplyAddAdjacent(c, w);
        }
        else
        {
            ta0 += Avx2.MultiplyAddAdjacent(a, u);
            tb0 += Avx2.MultiplyAddAdjacent(c, u);
            ta1 += Avx2.MultiplyAddAdjacent(a, w);
            tb1 += Avx2.MultiplyAddAdjacent(c, w);
        }
        if (m % TWidening.Words == TWidening.Words - 1)
        {
            sa0 += Avx2.MultiplyAddAdjacent(ta0, ones);
            sb0 += Avx2.MultiplyAddAdjacent(tb0, ones);
            sa1 += Avx2.MultiplyAddAdjacent(ta1, ones);
            sb1 += Avx2.MultiplyAddAdjacent(tb1, ones);
        }
    }

    /// <summary>One group's four words times the vector's four activation words (each broadcast), in its rows' int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Quad<TWidening>(Vector256<byte>* w, int* x, Vector256<short> ones) where TWidening : struct, IWidening =>
        Widen<TWidening>(Avx2.MultiplyAddAdjacent(w[0], Vector256.Create(x[0]).AsSByte()), Avx2.MultiplyAddAdjacent(w[1], Vector256.Create(x[1]).AsSByte()),
            Avx2.MultiplyAddAdjacent(w[2], Vector256.Create(x[2]).AsSByte()), Avx2.MultiplyAddAdjacent(w[3], Vector256.Create(x[3]).AsSByte()), ones);

    /// <summary>Four words' <c>vpmaddubsw</c> results in int32 lanes: <see cref="IWidening.Words"/> of them added in int16 per <c>vpmaddwd</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Widen<TWidening>(Vector256<short> p0, Vector256<short> p1, Vector256<short> p2, Vector256<short> p3,
        Vector256<short> ones) where TWidening : struct, IWidening
    {
        if (TWidening.Words == 4) return Avx2.MultiplyAddAdjacent((p0 + p1) + (p2 + p3), ones);
        if (TWidening.Words == 2) return Avx2.MultiplyAddAdjacent(p0 + p1, ones) + Avx2.MultiplyAddAdjacent(p2 + p3, ones);
        return (Avx2.MultiplyAddAdjacent(p0, ones) + Avx2.MultiplyAddAdjacent(p1, ones)) + (Avx2.MultiplyAddAdjacent(p2, ones) + Avx2.MultiplyAddAdjacent(p3, ones));
    }

    /// <summary><see cref="Four{TShape}"/> for two groups of eight rows at once (<paramref name="ua"/> and
    /// <paramref name="ub"/>, their factors at <paramref name="fa"/> and <paramref name="fb"/>; the second has
    /// <paramref name="rowsB"/> rows): each activation word is broadcast once for both, so a block takes 64
    /// <c>vpdpbusd</c> to 16 loads of codes and 32 broadcasts (32, 8 and 32 for one group). Eight integer accumulators
    /// (two groups × four vectors) are enough chains; a half block's total is converted before the next half starts, so
    /// each row gets the integers and float operations <see cref="Four{TShape}"/> gives it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void FourPair<TShape>(Vector256<byte>* ua, Vector256<byte>* ub, int blocks, float* fa, float* fb, int* q, float* s, int* b,
        int nb, int first, int count, int rowsB, float* results, int resultStride) where TShape : struct, IShape
    {
        int biases = TShape.Halves ? 2 : 1;
        int v1 = first + Math.Min(1, count - 1), v2 = first + Math.Min(2, count - 1), v3 = first + Math.Min(3, count - 1);
        int* q0 = q + (nint)first * nb * 8, q1 = q + (nint)v1 * nb * 8, q2 = q + (nint)v2 * nb * 8, q3 = q + (nint)v3 * nb * 8;
        float* s0 = s + (nint)first * nb, s1 = s + (nint)v1 * nb, s2 = s + (nint)v2 * nb, s3 = s + (nint)v3 * nb;
        int* b0 = b + (nint)first * nb * biases, b1 = b + (nint)v1 * nb * biases, b2 = b + (nint)v2 * nb * biases, b3 = b + (nint)v3 * nb * biases;
        Vector256<float> ya0 = default, ya1 = default, ya2 = default, ya3 = default;
        Vector256<float> yb0 = default, yb1 = default, yb2 = default, yb3 = default;
        for (int j = 0; j < blocks; j++)
        {
            Vector256<byte>* wa = ua + (nint)j * 8, wb = ub + (nint)j * 8;
            int k = j * 8, c = j * biases;
            var x0 = Vector256.Create(s0[j]);
            var x1 = Vector256.Create(s1[j]);
            var x2 = Vector256.Create(s2[j]);
            var x3 = Vector256.Create(s3[j]);
            // Whole blocks: one part of eight words; half blocks: two parts of four, each with its bias and factors.
            int words = TShape.Halves ? 4 : 8;
            for (int part = 0; part < biases; part++)
            {
                var a0 = Vector256.Create(b0[c + part]);
                var a1 = Vector256.Create(b1[c + part]);
                var a2 = Vector256.Create(b2[c + part]);
                var a3 = Vector256.Create(b3[c + part]);
                Vector256<int> e0 = a0, e1 = a1, e2 = a2, e3 = a3;
                int m0 = part * words;
                PairStep(wa[m0], wb[m0], q0, q1, q2, q3, k + m0, ref a0, ref a1, ref a2, ref a3, ref e0, ref e1, ref e2, ref e3);
                PairStep(wa[m0 + 1], wb[m0 + 1], q0, q1, q2, q3, k + m0 + 1, ref a0, ref a1, ref a2, ref a3, ref e0, ref e1, ref e2, ref e3);
                PairStep(wa[m0 + 2], wb[m0 + 2], q0, q1, q2, q3, k + m0 + 2, ref a0, ref a1, ref a2, ref a3, ref e0, ref e1, ref e2, ref e3);
                PairStep(wa[m0 + 3], wb[m0 + 3], q0, q1, q2, q3, k + m0 + 3, ref a0, ref a1, ref a2, ref a3, ref e0, ref e1, ref e2, ref e3);
                if (!TShape.Halves)
                {
                    PairStep(wa[4], wb[4], q0, q1, q2, q3, k + 4, ref a0, ref a1, ref a2, ref a3, ref e0, ref e1, ref e2, ref e3);
                    PairStep(wa[5], wb[5], q0, q1, q2, q3, k + 5, ref a0, ref a1, ref a2, ref a3, ref e0, ref e1, ref e2, ref e3);
                    PairStep(wa[6], wb[6], q0, q1, q2, q3, k + 6, ref a0, ref a1, ref a2, ref a3, ref e0, ref e1, ref e2, ref e3);
                    PairStep(wa[7], wb[7], q0, q1, q2, q3, k + 7, ref a0, ref a1, ref a2, ref a3, ref e0, ref e1, ref e2, ref e3);
                }
                // Each row's factor for this (half) block: [8j + i], or [16j + 8h + i] with half blocks.
                var fA = Vector256.Load(fa + biases * k + 8 * part);
                var fB = Vector256.Load(fb + biases * k + 8 * part);
                ya0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(a0), fA * x0, ya0);
                ya1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(a1), fA * x1, ya1);
                ya2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(a2), fA * x2, ya2);
                ya3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(a3), fA * x3, ya3);
                yb0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(e0), fB * x0, yb0);
                yb1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(e1), fB * x1, yb1);
                yb2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(e2), fB * x2, yb2);
                yb3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(e3), fB * x3, yb3);
            }
        }
        ya0.Store(results);
        Store(yb0, results + Lanes, rowsB);
        if (count > 1) { ya1.Store(results + resultStride); Store(yb1, results + resultStride + Lanes, rowsB); }
        if (count > 2) { ya2.Store(results + 2 * (nint)resultStride); Store(yb2, results + 2 * (nint)resultStride + Lanes, rowsB); }
        if (count > 3) { ya3.Store(results + 3 * (nint)resultStride); Store(yb3, results + 3 * (nint)resultStride + Lanes, rowsB); }
    }

    /// <summary>One word of both groups' unpacked codes times four activation bytes of each vector, each broadcast once.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PairStep(Vector256<byte> wa, Vector256<byte> wb, int* q0, int* q1, int* q2, int* q3, int k,
        ref Vector256<int> a0, ref Vector256<int> a1, ref Vector256<int> a2, ref Vector256<int> a3,
        ref Vector256<int> e0, ref Vector256<int> e1, ref Vector256<int> e2, ref Vector256<int> e3)
    {
        var x = Vector256.Create(q0[k]).AsSByte();
        a0 = AvxVnni.MultiplyWideningAndAdd(a0, wa, x);
        e0 = AvxVnni.MultiplyWideningAndAdd(e0, wb, x);
        x = Vector256.Create(q1[k]).AsSByte();
        a1 = AvxVnni.MultiplyWideningAndAdd(a1, wa, x);
        e1 = AvxVnni.MultiplyWideningAndAdd(e1, wb, x);
        x = Vector256.Create(q2[k]).AsSByte();
        a2 = AvxVnni.MultiplyWideningAndAdd(a2, wa, x);
        e2 = AvxVnni.MultiplyWideningAndAdd(e2, wb, x);
        x = Vector256.Create(q3[k]).AsSByte();
        a3 = AvxVnni.MultiplyWideningAndAdd(a3, wa, x);
        e3 = AvxVnni.MultiplyWideningAndAdd(e3, wb, x);
    }

    /// <summary>One unpacked vector (four codes of each of eight rows) times four activation bytes of each vector.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Step(Vector256<byte> w, int* q0, int* q1, int* q2, int* q3, int k,
        ref Vector256<int> i0, ref Vector256<int> i1, ref Vector256<int> i2, ref Vector256<int> i3)
    {
        i0 = AvxVnni.MultiplyWideningAndAdd(i0, w, Vector256.Create(q0[k]).AsSByte());
        i1 = AvxVnni.MultiplyWideningAndAdd(i1, w, Vector256.Create(q1[k]).AsSByte());
        i2 = AvxVnni.MultiplyWideningAndAdd(i2, w, Vector256.Create(q2[k]).AsSByte());
        i3 = AvxVnni.MultiplyWideningAndAdd(i3, w, Vector256.Create(q3[k]).AsSByte());
    }

    /// <summary>One unpacked word's four products for the reference: the row's codes of block j's word m (low or high
    /// nibbles) through the block's table, times the vector's activation bytes.</summary>
    private static int WordProduct(ReadOnlySpan<byte> rowCodes, ReadOnlySpan<sbyte> tables, int[]? rowTables, Vectors a, int vector, int j, int m)
    {
        int word = a.Q[(vector * a.Blocks + j) * 8 + m], sum = 0;
        for (int t = 0; t < 4; t++)
        {
            byte code = rowCodes[j * 16 + (m / 2) * 4 + t];
            int nibble = (m & 1) == 0 ? code & 0x0F : code >> 4;
            sum += (byte)tables[(rowTables is null ? 0 : 16 * rowTables[j]) + nibble] * (sbyte)(word >> (8 * t));
        }
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector256<float> y, float* destination, int rowCount)
    {
        if (rowCount == Lanes) y.Store(destination);
        else for (int i = 0; i < rowCount; i++) destination[i] = y.GetElement(i);
    }

    /// <summary>The scalar twin of the group kernel for one row and one vector (tests): the same integers per block,
    /// the same order of float operations per block, summed block after block.</summary>
    public static float RowReference(ReadOnlySpan<byte> rowCodes, ReadOnlySpan<float> rowFactors, ReadOnlySpan<sbyte> table16, Vectors a, int vector) =>
        RowReference(rowCodes, rowFactors, table16, null, a, vector);

    /// <summary><see cref="RowReference(ReadOnlySpan{byte}, ReadOnlySpan{float}, ReadOnlySpan{sbyte}, Vectors, int)"/> with
    /// a table per block: block j looks its codes up at <c>tables[16·rowTables[j] ..]</c>.</summary>
    public static float RowReference(ReadOnlySpan<byte> rowCodes, ReadOnlySpan<float> rowFactors, ReadOnlySpan<sbyte> tables, int[]? rowTables, Vectors a, int vector)
    {
        int nb = a.Blocks;
        float total = 0;
        for (int j = 0; j < nb; j++)
        {
            if (a.Halves)
            {
                // Per half: its bias, its four words, its factor (the kernel's order: first half, then second).
                float scale = a.Scales[vector * nb + j];
                for (int h = 0; h < 2; h++)
                {
                    int half = a.HalfBias[2 * (vector * nb + j) + h];
                    for (int m = 4 * h; m < 4 * h + 4; m++)
                        half += WordProduct(rowCodes, tables, rowTables, a, vector, j, m);
                    total = MathF.FusedMultiplyAdd(half, rowFactors[2 * j + h] * scale, total);
                }
                continue;
            }
            int sum = a.Bias[vector * nb + j];
            for (int m = 0; m < 8; m++) sum += WordProduct(rowCodes, tables, rowTables, a, vector, j, m);
            total = MathF.FusedMultiplyAdd(sum, rowFactors[j] * a.Scales[vector * nb + j], total);
        }
        return total;
    }
}
