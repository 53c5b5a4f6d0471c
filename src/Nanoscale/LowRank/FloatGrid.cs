using Nanoscale.Tensors;

namespace Nanoscale.LowRank;

/// <summary>A cast to float32, bfloat16 or IEEE half (round to nearest even), stored as one array, <c>data</c> [rows, cols].
/// <c>f32</c> makes the matrix full precision (LDLQ then changes nothing).</summary>
internal sealed class FloatGrid : QuantGrid
{
    public static readonly FloatGrid F32 = new("f32", DType.F32);
    public static readonly FloatGrid BF16 = new("bf16", DType.BF16);
    public static readonly FloatGrid F16 = new("f16", DType.F16);

    private FloatGrid(string spec, DType dtype)
    {
        Spec = spec;
        DType = dtype;
    }

    public override string Spec { get; }

    public DType DType { get; }

    public float Cast(double value) => DType switch
    {
        DType.BF16 => TensorData.BFloat16ToSingle(TensorData.SingleToBFloat16((float)value)),
        DType.F16 => (float)(Half)(float)value,
        _ => (float)value,
    };

    public override GridQuantizer Begin(int rows, int cols, ReadOnlySpan<float> initial) => new Quantizer(this, rows, cols);

    public override IGridReader Open(IGridStore store, int rows, int cols) =>
        new Reader(store.Open("data", (long)rows * cols * DType.ElementSize(), DType), DType, cols);

    private sealed class Quantizer(FloatGrid grid, int rows, int cols) : GridQuantizer(rows, cols)
    {
        private readonly float[] _values = new float[(long)rows * cols];

        public override int GroupSize => 1;

        public override void BeginGroup(int row, int firstColumn, ReadOnlySpan<float> values) { }

        public override float Round(int row, int column, double value) => _values[(long)row * Columns + column] = grid.Cast(value);

        public override IReadOnlyList<GridArray> Arrays()
        {
            var bytes = new byte[_values.LongLength * grid.DType.ElementSize()];
            TensorData.FromFloat(_values, grid.DType, bytes);
            return [new GridArray("data", grid.DType, [Rows, Columns], bytes)];
        }
    }

    private sealed class Reader(IByteView data, DType dtype, int cols) : IGridReader
    {
        private readonly IByteView _data = data;
        private readonly DType _dtype = dtype;
        private readonly int _cols = cols;

        public void ReadRows(long firstRow, int count, Span<float> destination)
        {
            int size = _dtype.ElementSize();
            TensorData.ToFloat(_data.Slice(firstRow * _cols * size, count * _cols * size), _dtype, destination[..(count * _cols)]);
        }

        public void Dispose() => _data.Dispose();
    }
}
