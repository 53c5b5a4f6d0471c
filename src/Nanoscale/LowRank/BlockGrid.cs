using System.Collections.Concurrent;
using Nanoscale.Formats;
using Nanoscale.Formats.E8;
using Nanoscale.Tensors;

namespace Nanoscale.LowRank;

/// <summary>
/// A block format as an LDLQ grid. When LDLQ reaches the first column of a block, the block's scale is chosen by the
/// format itself (<see cref="IBlockCodec.Quantize"/> on the row's current, error-fed values of that block, zero-padded
/// when short); each element is then rounded to the nearest value that this scale can represent, and the error of
/// that rounding is fed forward — also into the rest of the same block, whose scale is already fixed.
/// </summary>
/// <remarks>
/// <para>The values a scale can represent are found by decoding every element code under that scale with the codec's
/// own <see cref="IBlockCodec.Dequantize"/> (cached per distinct scale bytes), so any format whose elements decode
/// independently given the block's scale bytes works — MX, NVFP4, and NxFP alike — and the stored codes decode to
/// exactly the values LDLQ used. For MX formats only codes the format's encoder emits are used (MXINTn: the symmetric
/// range ±(2^(N−1)−1), SPEC §7), so with H = I the result is the codec's own round-to-nearest (ties aside).</para>
/// <para>Stored like a plain block tensor (<see cref="BlockLayout"/>); NVFP4's tensor scale is computed from the matrix
/// before error feedback.</para>
/// <para><b>E8</b> is a vector grid (<see cref="GridQuantizer.VectorSize"/> 8): the block's scale is chosen by the codec
/// as for the others, then each vector of 8 is rounded, when LDLQ reaches it, to the codebook point the codec's encoder
/// would pick for those values under that scale (<see cref="E8Lattice.Quantize"/>), so with H = I the stored indices are
/// the codec's own.</para>
/// </remarks>
internal sealed class BlockGrid : QuantGrid
{
    private static readonly CodecOptions SingleThread = new() { Parallelism = Parallelism.SingleThread };

    /// <summary>Whether <paramref name="codec"/> can be a grid: elements coded one by one in 1 to 8 bits, decoded
    /// independently given 1 to 4 scale bytes per block (MX, NVFP4, NxFP; not ggml's formats, whose scale is inside the
    /// block), or E8's vectors; <paramref name="why"/> says what is missing.</summary>
    public static bool Accepts(IBlockCodec codec, out string why)
    {
        why = codec is E8Codec ? ""
            : codec.BytesPerBlock * 8 % codec.BlockSize != 0 || codec.BytesPerBlock * 8 / codec.BlockSize is < 1 or > 8
                ? "an LDLQ grid needs whole element codes of 1 to 8 bits"
            : codec.ScaleBytesPerBlock is < 1 or > 4 ? "an LDLQ grid needs 1 to 4 scale bytes per block, stored apart from the codes"
            : "";
        return why.Length == 0;
    }

    public BlockGrid(IBlockCodec codec)
    {
        Codec = codec;
        if (!Accepts(codec, out string why)) throw new FormatSpecException(codec.Spec, why);
        ElementBits = codec.BytesPerBlock * 8 / codec.BlockSize;
        // SPEC §7: MX integer encoders emit only the symmetric range, although decoders accept the most negative code;
        // LDLQ rounds onto the levels the format's own encoder emits, so it never uses that extra level.
        _emits = codec is Formats.Mx.MxCodec mx
            ? code => mx.Element.IsSpecial(code) || mx.Element.Encode(mx.Element.Decode(code)) == code || mx.Element.Decode(code) == 0
            : _ => true;
    }

    private readonly Func<int, bool> _emits;

    public IBlockCodec Codec { get; }

    public int ElementBits { get; }

    public override string Spec => Codec.Spec;

    public override GridQuantizer Begin(int rows, int cols, ReadOnlySpan<float> initial)
    {
        var tensorData = new byte[Codec.TensorDataBytes];
        if (tensorData.Length > 0)
        {
            var accumulator = Codec.CreateTensorDataAccumulator(SingleThread);
            accumulator.Add(initial, 0);
            accumulator.WriteTensorData(tensorData);
        }
        return Codec is E8Codec ? new VectorQuantizer(this, rows, cols, tensorData) : new Quantizer(this, rows, cols, tensorData);
    }

    public override IGridReader Open(IGridStore store, int rows, int cols) => new Reader(this, store, rows, cols);

    /// <summary>The representable values under one block's scale bytes, ascending, with their codes (NaN codes left out;
    /// of equal values the lower code, so +0 beats −0).</summary>
    private sealed record Levels(float[] Values, byte[] Codes);

    private Levels BuildLevels(ReadOnlySpan<byte> scaleBytes, ReadOnlySpan<byte> tensorData)
    {
        int codeCount = 1 << ElementBits, b = Codec.BlockSize;
        var codes = new byte[b];
        var packed = new byte[Codec.BytesPerBlock];
        var decoded = new float[b];
        var pairs = new List<(float Value, byte Code)>(codeCount);
        for (int first = 0; first < codeCount; first += b)
        {
            int n = Math.Min(b, codeCount - first);
            Array.Clear(codes);
            for (int i = 0; i < n; i++) codes[i] = (byte)(first + i);
            BlockPacking.Pack(codes, ElementBits, packed);
            Codec.Dequantize(packed, scaleBytes, tensorData, 1, b, SingleThread, decoded);
            for (int i = 0; i < n; i++)
                if (float.IsFinite(decoded[i]) && _emits(first + i)) pairs.Add((decoded[i], (byte)(first + i)));
        }
        pairs.Sort((x, y) => x.Value != y.Value ? x.Value.CompareTo(y.Value) : x.Code.CompareTo(y.Code));
        var values = new List<float>();
        var kept = new List<byte>();
        foreach (var (v, c) in pairs)
        {
            if (values.Count > 0 && values[^1] == v) continue;
            values.Add(v);
            kept.Add(c);
        }
        if (values.Count == 0) values.Add(0); // a NaN scale: nothing to round to (non-finite input is refused earlier)
        if (kept.Count == 0) kept.Add(0);
        return new Levels([.. values], [.. kept]);
    }

    private static int Key(ReadOnlySpan<byte> scaleBytes)
    {
        int key = 0;
        for (int i = 0; i < scaleBytes.Length; i++) key |= scaleBytes[i] << (8 * i);
        return key;
    }

    private sealed class Quantizer : GridQuantizer
    {
        private readonly BlockGrid _grid;
        private readonly byte[] _tensorData;
        private readonly int _blocksPerRow;
        private readonly byte[] _codes;       // [rows, cols] element codes
        private readonly byte[] _scales;      // [rows, nblocks, scaleBytes]
        private readonly Levels?[] _current;  // per row: the levels of the block being rounded
        private readonly ConcurrentDictionary<int, Levels> _cache = new();

        public Quantizer(BlockGrid grid, int rows, int cols, byte[] tensorData) : base(rows, cols)
        {
            _grid = grid;
            _tensorData = tensorData;
            _blocksPerRow = grid.Codec.BlocksPerRow(cols);
            _codes = new byte[(long)rows * _blocksPerRow * grid.Codec.BlockSize];
            _scales = new byte[(long)rows * _blocksPerRow * grid.Codec.ScaleBytesPerBlock];
            _current = new Levels?[rows];
        }

        public override int GroupSize => _grid.Codec.BlockSize;

        public override void BeginGroup(int row, int firstColumn, ReadOnlySpan<float> values)
        {
            var codec = _grid.Codec;
            int block = firstColumn / codec.BlockSize, sb = codec.ScaleBytesPerBlock;
            Span<byte> packed = stackalloc byte[codec.BytesPerBlock];
            var scale = _scales.AsSpan((row * _blocksPerRow + block) * sb, sb);
            codec.Quantize(values, 1, values.Length, _tensorData, SingleThread, (long)row * Columns + firstColumn, packed, scale);
            int key = Key(scale);
            if (!_cache.TryGetValue(key, out var levels))
                levels = _cache.GetOrAdd(key, _grid.BuildLevels(scale, _tensorData));
            _current[row] = levels;
        }

        public override float Round(int row, int column, double value)
        {
            var levels = _current[row] ?? throw new InvalidOperationException("BeginGroup was not called for this row");
            var v = levels.Values;
            // Nearest level; on an exact tie the one of smaller magnitude.
            int lo = 0, hi = v.Length - 1;
            while (lo < hi)
            {
                int mid = (lo + hi) >> 1;
                if (v[mid] < value) lo = mid + 1; else hi = mid;
            }
            int best = lo;
            if (lo > 0)
            {
                double below = value - v[lo - 1], above = v[lo] - value;
                if (below < above || (below == above && Math.Abs(v[lo - 1]) < Math.Abs(v[lo]))) best = lo - 1;
            }
            _codes[(long)row * _blocksPerRow * _grid.Codec.BlockSize + column] = levels.Codes[best];
            return v[best];
        }

        public override IReadOnlyList<GridArray> Arrays()
        {
            var codec = _grid.Codec;
            int b = codec.BlockSize, bpb = codec.BytesPerBlock;
            var blocks = new byte[(long)Rows * _blocksPerRow * bpb];
            for (long i = 0; i < (long)Rows * _blocksPerRow; i++)
                BlockPacking.Pack(_codes.AsSpan((int)(i * b), b), _grid.ElementBits, blocks.AsSpan((int)(i * bpb), bpb));
            var (scaleDType, scaleShape) = BlockLayout.ScalesArray(codec, Rows, Columns);
            var arrays = new List<GridArray>
            {
                new(BlockLayout.Blocks, DType.U8, BlockLayout.BlocksShape(codec, Rows, Columns), blocks),
                new(BlockLayout.Scales, scaleDType, scaleShape, _scales),
            };
            if (_tensorData.Length > 0) arrays.Add(new(BlockLayout.TensorData, DType.U8, [_tensorData.Length], _tensorData));
            return arrays;
        }
    }

    /// <summary>E8: a scale per block of 32 chosen by the codec, a codebook point (and its residual stage) per vector
    /// of 8, coded by the codec's own <see cref="E8Codec.QuantizeVector"/>.</summary>
    private sealed class VectorQuantizer : GridQuantizer
    {
        private const int Dimension = E8Lattice.Dimension;
        private readonly E8Codec _codec;
        private readonly byte[] _tensorData;
        private readonly int _blocksPerRow;
        private readonly byte[] _blocks;      // [rows, nblocks, bytes per block], as the codec stores them
        private readonly byte[] _scales;      // [rows, nblocks]
        private readonly float[] _points;     // per row: the point of the vector being rounded

        public VectorQuantizer(BlockGrid grid, int rows, int cols, byte[] tensorData) : base(rows, cols)
        {
            _codec = (E8Codec)grid.Codec;
            _tensorData = tensorData;
            _blocksPerRow = _codec.BlocksPerRow(cols);
            _blocks = new byte[(long)rows * _blocksPerRow * _codec.BytesPerBlock];
            _scales = new byte[(long)rows * _blocksPerRow];
            _points = new float[(long)rows * Dimension];
        }

        public override int GroupSize => _codec.BlockSize;

        public override int VectorSize => Dimension;

        public override void BeginGroup(int row, int firstColumn, ReadOnlySpan<float> values)
        {
            Span<byte> packed = stackalloc byte[_codec.BytesPerBlock];
            _codec.Quantize(values, 1, values.Length, _tensorData, SingleThread, (long)row * Columns + firstColumn, packed,
                _scales.AsSpan(row * _blocksPerRow + firstColumn / _codec.BlockSize, 1));
        }

        public override void BeginVector(int row, int firstColumn, ReadOnlySpan<float> values)
        {
            int block = row * _blocksPerRow + firstColumn / _codec.BlockSize;
            var (encode, decode) = E8Codec.BlockScale(_scales[block], _tensorData);
            int offset = block * _codec.BytesPerBlock + firstColumn % _codec.BlockSize / Dimension * _codec.VectorBytes;
            _codec.QuantizeVector(values, encode, decode, _blocks.AsSpan(offset, _codec.VectorBytes), _points.AsSpan(row * Dimension, Dimension));
        }

        public override float Round(int row, int column, double value) => _points[row * Dimension + column % Dimension];

        public override IReadOnlyList<GridArray> Arrays()
        {
            var (scaleDType, scaleShape) = BlockLayout.ScalesArray(_codec, Rows, Columns);
            return
            [
                new(BlockLayout.Blocks, DType.U8, BlockLayout.BlocksShape(_codec, Rows, Columns), _blocks),
                new(BlockLayout.Scales, scaleDType, scaleShape, _scales),
                new(BlockLayout.TensorData, DType.U8, [_tensorData.Length], _tensorData),
            ];
        }
    }

    private sealed class Reader : IGridReader
    {
        private readonly IBlockCodec _codec;
        private readonly IByteView _blocks, _scales;
        private readonly byte[] _tensorData;
        private readonly int _cols, _blocksPerRow;

        public Reader(BlockGrid grid, IGridStore store, int rows, int cols)
        {
            _codec = grid.Codec;
            _cols = cols;
            _blocksPerRow = _codec.BlocksPerRow(cols);
            _tensorData = new byte[_codec.TensorDataBytes];
            if (_tensorData.Length > 0)
            {
                using var view = store.Open(BlockLayout.TensorData, _tensorData.Length);
                view.Slice(0, _tensorData.Length).CopyTo(_tensorData);
            }
            _blocks = store.Open(BlockLayout.Blocks, BlockLayout.BlockBytes(_codec, rows, cols));
            _scales = store.Open(BlockLayout.Scales, BlockLayout.ScaleBytes(_codec, rows, cols));
        }

        public void ReadRows(long firstRow, int count, Span<float> destination)
        {
            long blockStride = (long)_blocksPerRow * _codec.BytesPerBlock, scaleStride = (long)_blocksPerRow * _codec.ScaleBytesPerBlock;
            _codec.Dequantize(
                _blocks.Slice(firstRow * blockStride, checked((int)(count * blockStride))),
                _scales.Slice(firstRow * scaleStride, checked((int)(count * scaleStride))),
                _tensorData, count, _cols, SingleThread, destination[..checked(count * _cols)]);
        }

        public bool TryDotRows(long firstRow, int count, ReadOnlySpan<float> x, Span<float> y)
        {
            long blockStride = (long)_blocksPerRow * _codec.BytesPerBlock, scaleStride = (long)_blocksPerRow * _codec.ScaleBytesPerBlock;
            return _codec.TryDotRows(
                _blocks.Slice(firstRow * blockStride, checked((int)(count * blockStride))),
                _scales.Slice(firstRow * scaleStride, checked((int)(count * scaleStride))),
                _tensorData, count, _cols, x, y);
        }

        public void Dispose()
        {
            _blocks.Dispose();
            _scales.Dispose();
        }
    }
}
