using System.Buffers.Binary;
using Nanoscale.Formats;
using Nanoscale.Tensors;

namespace Nanoscale.LowRank;

/// <summary>
/// <c>intN</c> (N = 2..8): value = code · s with a symmetric code range ±(2^(N−1)−1) and one float32 scale s per row.
/// The scale is chosen when LDLQ starts the row, from the row's values: <c>s = f · absmax / (2^(N−1)−1)</c> with the
/// clipping factor f ∈ {1, 0.95, …, 0.5} that gives the lowest round-to-nearest squared error (clipping a few large
/// values is usually cheaper than coarsening all others, more so at 2–3 bits).
/// Stored: <c>codes</c> U8 [rows, ceil(cols·N/8)] (two's complement codes packed LSB-first per row, as block
/// codes are) and <c>scales</c> F32 [rows] (little-endian).
/// </summary>
internal sealed class UniformIntGrid : QuantGrid
{
    public UniformIntGrid(int bits)
    {
        if (bits is < 2 or > 8) throw new ArgumentOutOfRangeException(nameof(bits), bits, "2 to 8 bits");
        Bits = bits;
    }

    public int Bits { get; }

    /// <summary>Largest code magnitude, 2^(N−1)−1.</summary>
    public int MaxCode => (1 << (Bits - 1)) - 1;

    public override string Spec => $"int{Bits}";

    public int BytesPerRow(int cols) => BlockPacking.PackedBytes(cols, Bits);

    /// <summary>The scale the row would get (see the class remarks); 0 for an all-zero row.</summary>
    public float ChooseScale(ReadOnlySpan<float> values)
    {
        float absmax = 0;
        foreach (float v in values) absmax = Math.Max(absmax, Math.Abs(v));
        if (absmax == 0) return 0;
        float best = absmax / MaxCode;
        double bestError = double.PositiveInfinity;
        for (int step = 0; step <= 10; step++)
        {
            float s = (float)((1.0 - 0.05 * step) * absmax / MaxCode);
            if (s == 0) continue;
            double error = 0;
            foreach (float v in values)
            {
                double d = v - Quantize(v, s);
                error += d * d;
            }
            if (error < bestError)
            {
                bestError = error;
                best = s;
            }
        }
        return best;
    }

    private int Code(double value, float scale) => scale == 0 ? 0 : (int)Math.Clamp(Math.Round(value / scale, MidpointRounding.ToEven), -MaxCode, MaxCode);

    private float Quantize(double value, float scale) => Code(value, scale) * scale;

    public override GridQuantizer Begin(int rows, int cols, ReadOnlySpan<float> initial) => new Quantizer(this, rows, cols);

    public override IGridReader Open(IGridStore store, int rows, int cols) => new Reader(this, store, rows, cols);

    private sealed class Quantizer(UniformIntGrid grid, int rows, int cols) : GridQuantizer(rows, cols)
    {
        private readonly byte[] _codes = new byte[(long)rows * cols];
        private readonly float[] _scales = new float[rows];

        public override int GroupSize => Columns;

        public override void BeginGroup(int row, int firstColumn, ReadOnlySpan<float> values) => _scales[row] = grid.ChooseScale(values);

        public override float Round(int row, int column, double value)
        {
            int code = grid.Code(value, _scales[row]);
            _codes[(long)row * Columns + column] = (byte)(code & ((1 << grid.Bits) - 1));
            return code * _scales[row];
        }

        public override IReadOnlyList<GridArray> Arrays()
        {
            int bytesPerRow = grid.BytesPerRow(Columns);
            var packed = new byte[(long)Rows * bytesPerRow];
            for (int r = 0; r < Rows; r++)
                BlockPacking.Pack(_codes.AsSpan(r * Columns, Columns), grid.Bits, packed.AsSpan(r * bytesPerRow, bytesPerRow));
            var scales = new byte[Rows * 4];
            for (int r = 0; r < Rows; r++) BinaryPrimitives.WriteSingleLittleEndian(scales.AsSpan(4 * r), _scales[r]);
            return [new("codes", DType.U8, [Rows, bytesPerRow], packed), new("scales", DType.F32, [Rows], scales)];
        }
    }

    private sealed class Reader : IGridReader
    {
        private readonly UniformIntGrid _grid;
        private readonly IByteView _codes;
        private readonly float[] _scales;
        private readonly int _cols, _bytesPerRow;

        public Reader(UniformIntGrid grid, IGridStore store, int rows, int cols)
        {
            _grid = grid;
            _cols = cols;
            _bytesPerRow = grid.BytesPerRow(cols);
            _scales = new float[rows];
            using (var view = store.Open("scales", 4L * rows, DType.F32))
            {
                var bytes = view.Slice(0, checked(4 * rows));
                for (int r = 0; r < rows; r++) _scales[r] = BinaryPrimitives.ReadSingleLittleEndian(bytes[(4 * r)..]);
            }
            _codes = store.Open("codes", (long)rows * _bytesPerRow);
        }

        public void ReadRows(long firstRow, int count, Span<float> destination)
        {
            Span<byte> codes = _cols <= 4096 ? stackalloc byte[_cols] : new byte[_cols];
            int bits = _grid.Bits, shift = 32 - bits;
            for (int i = 0; i < count; i++)
            {
                long row = firstRow + i;
                BlockPacking.Unpack(_codes.Slice(row * _bytesPerRow, _bytesPerRow), bits, codes);
                float scale = _scales[row];
                var output = destination.Slice(i * _cols, _cols);
                for (int c = 0; c < _cols; c++) output[c] = ((codes[c] << shift) >> shift) * scale; // sign-extend N bits
            }
        }

        public void Dispose() => _codes.Dispose();
    }
}
